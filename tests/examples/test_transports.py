"""Each example UDF through the full transports: udf.Process and udf.Socket (unix socket)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import agent_pb2
import udf
from udf import Batch, BatchPoint, Point

from ..helpers import EXAMPLES, TIMEOUT


def option(name: str, **value: Any) -> Any:
    kind = {"stringValue": agent_pb2.STRING, "intValue": agent_pb2.INT, "doubleValue": agent_pb2.DOUBLE}
    ((key, v),) = value.items()
    return agent_pb2.Option(name=name, values=[agent_pb2.OptionValue(type=kind[key], **{key: v})])


def mirror(u: udf.Interface) -> None:
    u.init(None)
    points = [
        Point(name="cpu", tags={"host": "a"}, fields={"v": float(i), "ok": True, "n": i}, time=i) for i in range(3)
    ]
    for p in points:
        u.point_in.put(p)
    assert [u.point_out.get(timeout=TIMEOUT) for _ in points] == points


def moving_avg(u: udf.Interface) -> None:
    u.init([option("field", stringValue="v"), option("size", intValue=2)])
    for i, v in enumerate([1.0, 3.0, 5.0]):
        u.point_in.put(Point(name="cpu", group="g", fields={"v": v}, time=i))
    got = [u.point_out.get(timeout=TIMEOUT) for _ in range(2)]
    assert [(p.time, p.fields) for p in got] == [(1, {"avg": 2.0}), (2, {"avg": 4.0})]


def outliers(u: udf.Interface) -> None:
    u.init([option("field", stringValue="v")])
    values = [10.0, 11.0, 10.5, 9.5, 10.2, 95.0, 10.1, 9.9]
    u.batch_in.put(
        Batch(name="cpu", tmax=len(values), points=[BatchPoint(time=i, fields={"v": v}) for i, v in enumerate(values)])
    )
    batch = u.batch_out.get(timeout=TIMEOUT)
    assert batch.name == "cpu" and [bp.fields["v"] for bp in batch.points] == [95.0]


CASES: list[tuple[str, Callable[[udf.Interface], None]]] = [
    ("mirror.py", mirror),
    ("moving_avg.py", moving_avg),
    ("outliers.py", outliers),
]


@pytest.mark.parametrize("script, conversation", CASES, ids=[c[0] for c in CASES])
def test_example_through_process(script: str, conversation: Callable[[udf.Interface], None]) -> None:
    p = udf.Process(sys.executable, [str(EXAMPLES / script)], timeout=TIMEOUT)
    with p:
        conversation(p)
    assert p.returncode == 0
    assert p.stats().state == "stopped"


@pytest.fixture
def socket_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="udf-") as tmp:  # short: unix socket paths are limited
        yield tmp


@pytest.mark.parametrize("script, conversation", CASES, ids=[c[0] for c in CASES])
def test_example_through_socket(script: str, conversation: Callable[[udf.Interface], None], socket_dir: str) -> None:
    path = os.path.join(socket_dir, "udf.sock")
    agent = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), "--socket", path],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The agent may not be listening yet: Socket retries until connect_timeout.
        s = udf.Socket(path, timeout=TIMEOUT, connect_timeout=TIMEOUT, initial_backoff=0.01)
        with s:
            conversation(s)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(TIMEOUT) == 0
        assert not os.path.exists(path)  # the agent server removed its socket file
    finally:
        if agent.poll() is None:
            agent.kill()
        agent.wait(TIMEOUT)
