"""Interop with Kapacitor's own Go example agents (built from v1.3.0-rc4, unchanged).

The agents ship in ``../shared/anchors/`` beside the repository (see its README):
``moving_avg`` and ``outliers`` talk over stdin/stdout, ``mirror`` serves a unix
socket. Each is driven through ``udf.Process`` or ``udf.Socket`` and through
``python -m udf run`` / ``info`` as a real subprocess. Every test here is named
by a cell of the matrix in tests/interop/matrix.py (docs/interop.md).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import agent_pb2
import udf
from udf import Batch, BatchPoint, Point

from ..helpers import ROOT, TIMEOUT, buffered_stdout_env, end_process, run_in_thread

ANCHORS = ROOT.parent / "shared" / "anchors"
CPU_LP = ROOT / "examples" / "data" / "cpu.lp"

if not ANCHORS.is_dir():
    pytest.skip(
        f"Kapacitor's Go agents are not here: {ANCHORS} is absent (it sits beside the repository, "
        "not in a fresh clone)",
        allow_module_level=True,
    )

MOVING_AVG = str(ANCHORS / "moving_avg")
OUTLIERS = str(ANCHORS / "outliers")
MIRROR = str(ANCHORS / "mirror")

#: Keepalive timeout of the pause tests: requests go every KEEPALIVE / 2 s, and
#: the pause is longer than the timeout itself, so only answered keepalives keep
#: the conversation alive.
KEEPALIVE = 2.0
PAUSE = KEEPALIVE * 1.25


def option(name: str, **value: Any) -> Any:
    kind = {"stringValue": agent_pb2.STRING, "intValue": agent_pb2.INT, "doubleValue": agent_pb2.DOUBLE}
    ((key, v),) = value.items()
    return agent_pb2.Option(name=name, values=[agent_pb2.OptionValue(type=kind[key], **{key: v})])


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Wait, at most TIMEOUT, for a condition another thread or process makes true."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        threading.Event().wait(0.01)


def pause_for_keepalives(u: udf.Interface) -> None:
    """Send nothing for longer than the keepalive timeout; keepalives must have gone round."""
    threading.Event().wait(PAUSE)
    wait_until(lambda: u.stats().keepalive_rtt is not None, "a keepalive round trip")
    stats = u.stats()
    assert stats.requests.get("keepalive", 0) >= 1
    assert stats.keepalive_rtt is not None and 0 <= stats.keepalive_rtt < KEEPALIVE
    assert (stats.errors, stats.error) == (0, None)


def cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """``python -m udf`` as a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "udf", *args], input=stdin, capture_output=True, timeout=TIMEOUT * 3, cwd=ROOT
    )


# --- moving_avg ---------------------------------------------------------------------


def moving_means(values: list[float], size: int) -> list[float]:
    """What Go's moving_avg emits for each value: the mean of the last ``size`` (fewer while filling)."""
    return [
        sum(values[max(0, i + 1 - size) : i + 1]) / len(values[max(0, i + 1 - size) : i + 1])
        for i in range(len(values))
    ]


def feed_moving_avg(u: udf.Interface, values: dict[str, list[float]], start: int = 0) -> dict[str, list[float]]:
    """Send each group's values interleaved, one point at a time; return the averages per group."""
    got: dict[str, list[float]] = {group: [] for group in values}
    for i in range(max(len(v) for v in values.values())):
        for group, vs in values.items():
            if i < len(vs):
                u.point_in.put(Point(name="cpu", group=group, tags={"g": group}, fields={"v": vs[i]}, time=start + i))
                out = u.point_out.get(timeout=TIMEOUT)
                assert (out.name, out.group, out.tags, out.time) == ("cpu", group, {"g": group}, start + i)
                got[group].append(float(out.fields["avg"]))
    return got


def assert_means(got: list[float], expected: list[float]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, rel=1e-14, abs=1e-14)  # Go keeps a running mean


AVG_OPTIONS = [option("field", stringValue="v"), option("size", intValue=3)]
VALUES = {"a": [1.0, 2.0, 4.0, 8.0, 16.0, 3.5, -2.0], "b": [0.1, 0.2, 0.3, 10.0]}


def test_moving_avg_info_and_averages() -> None:
    p = udf.Process(MOVING_AVG, timeout=TIMEOUT)
    with p:
        info = p.info()
        assert (info.wants, info.provides) == (agent_pb2.STREAM, agent_pb2.STREAM)
        assert {name: list(o.valueTypes) for name, o in info.options.items()} == {
            "field": [agent_pb2.STRING],
            "size": [agent_pb2.INT],
            "as": [agent_pb2.STRING],
        }
        p.init(AVG_OPTIONS)
        got = feed_moving_avg(p, VALUES)
    for group, values in VALUES.items():
        assert_means(got[group], moving_means(values, 3))
    assert p.returncode == 0


def test_moving_avg_init_without_size_is_refused_with_gos_text() -> None:
    p = udf.Process(MOVING_AVG, timeout=TIMEOUT)
    with p:
        with pytest.raises(udf.InitError) as info:
            p.init([option("field", stringValue="v")])
    assert info.value.agent_error == " must supply window size"  # Go's text, its leading space included
    assert str(info.value) == "failed to initialize processes  must supply window size"


def test_moving_avg_keepalives_during_a_pause() -> None:
    p = udf.Process(MOVING_AVG, timeout=KEEPALIVE)
    with p:
        p.init(AVG_OPTIONS)
        first = feed_moving_avg(p, {"a": [1.0, 2.0]})
        pause_for_keepalives(p)
        then = feed_moving_avg(p, {"a": [3.0, 4.0]}, start=2)
    assert_means(first["a"] + then["a"], moving_means([1.0, 2.0, 3.0, 4.0], 3))
    assert p.stats().errors == 0 and p.returncode == 0


def test_moving_avg_snapshot_restored_into_a_second_process() -> None:
    cut = {group: values[:3] for group, values in VALUES.items()}
    rest = {group: values[3:] for group, values in VALUES.items()}
    with udf.Process(MOVING_AVG, timeout=TIMEOUT) as first:
        first.init(AVG_OPTIONS)
        before = feed_moving_avg(first, cut)
        snapshot = first.snapshot()
    assert snapshot  # Go's gob encoding of its windows
    with udf.Process(MOVING_AVG, timeout=TIMEOUT) as second:
        second.init(AVG_OPTIONS)
        second.restore(snapshot)
        after = feed_moving_avg(second, rest, start=3)
    for group, values in VALUES.items():
        assert_means(before[group] + after[group], moving_means(values, 3))


def test_moving_avg_refuses_a_garbage_snapshot_and_goes_on() -> None:
    p = udf.Process(MOVING_AVG, timeout=TIMEOUT)
    with p:
        p.init(AVG_OPTIONS)
        with pytest.raises(udf.RestoreError) as info:
            p.restore(b"not a gob stream")
        assert str(info.value).startswith("error restoring snapshot: ") and info.value.agent_error
        assert_means(feed_moving_avg(p, {"a": [2.0, 4.0]})["a"], [2.0, 3.0])
    assert p.returncode == 0


# --- outliers -----------------------------------------------------------------------


def planted_batch(n: int, seed: int, planted: dict[int, float]) -> Batch:
    """``n`` values near 10 (a fixed pattern), with ``planted`` positions set far off."""
    values = [10.0 + ((i * 7 + seed) % 11 - 5) / 10 for i in range(n)]
    for i, v in planted.items():
        values[i] = v
    return Batch(
        name="cpu",
        group=f"cpu\nhost=h{seed}",
        tags={"host": f"h{seed}"},
        tmax=n - 1,
        points=[BatchPoint(time=i, fields={"v": v}, tags={"host": f"h{seed}"}) for i, v in enumerate(values)],
    )


def test_outliers_finds_the_planted_outliers() -> None:
    plants = [(20, {3: 95.0}), (31, {0: -40.0, 17: 60.0, 30: 99.5}), (12, {}), (40, {5: 0.0, 6: 30.0})]
    p = udf.Process(OUTLIERS, timeout=TIMEOUT)
    with p:
        p.init([option("field", stringValue="v"), option("scale", doubleValue=1.5)])
        for seed, (n, planted) in enumerate(plants):
            sent = planted_batch(n, seed, planted)
            p.batch_in.put(sent)
            got = p.batch_out.get(timeout=TIMEOUT)
            assert (got.name, got.group, got.tags) == (sent.name, sent.group, sent.tags)
            assert sorted(bp.time for bp in got.points) == sorted(planted)
            assert all(bp.fields == {"v": planted[bp.time]} for bp in got.points)
    assert p.returncode == 0


@pytest.mark.parametrize("n", [1, 2, 5, 6])
def test_outliers_panics_on_small_batches(n: int) -> None:
    """Go's example indexes past the end of a half of 2 values: a known bug of the original."""
    p = udf.Process(OUTLIERS, timeout=TIMEOUT)
    with pytest.raises(udf.ProcessExitedError) as info:
        with p:
            p.init([option("field", stringValue="v")])
            p.batch_in.put(planted_batch(n, 0, {}))
            with pytest.raises(udf.ChannelClosed):
                p.batch_out.get(timeout=TIMEOUT)
    assert "exit status 2" in str(info.value) and "index out of range" in str(info.value)


# --- mirror, on its unix socket -------------------------------------------------------


@pytest.fixture
def mirror_socket() -> Iterator[str]:
    """Start ``mirror -socket PATH``; yield PATH once the socket exists; SIGTERM it at the end."""
    with tempfile.TemporaryDirectory(prefix="udf-") as tmp:  # short: unix socket paths are limited
        path = os.path.join(tmp, "mirror.sock")
        server = subprocess.Popen(
            [MIRROR, "-socket", path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            wait_until(lambda: os.path.exists(path) or server.poll() is not None, "the mirror's socket file")
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            yield path
            server.send_signal(signal.SIGTERM)
            assert server.wait(TIMEOUT) == 0, server.stderr.read().decode(errors="replace") if server.stderr else ""
            assert not os.path.exists(path)  # it removed its socket file
        finally:
            if server.poll() is None:
                server.kill()
            server.wait(TIMEOUT)
            if server.stderr:
                server.stderr.close()


EVERY_TYPE = [
    Point(
        name="cpu",
        database="telegraf",
        retention_policy="autogen",
        group="cpu\nhost=a",
        dimensions=udf.Dimensions(by_name=True, tag_names=["host"]),
        tags={"host": "a", "dc": "x"},
        fields={"f": 1.5 + i, "i": -(2**62) + i, "s": f"text {i}", "b": i % 2 == 0},
        time=1_500_000_000_000_000_000 + i,
    )
    for i in range(3)
]


def without_bools(point: Point) -> Point:
    """What v1.3.0-rc4's agents send back: its Point has no ``fieldsBool`` (a later
    addition to udf.proto), so the Go code drops bool fields as unknown."""
    fields = {k: v for k, v in point.fields.items() if not isinstance(v, bool)}
    return dataclasses.replace(point, fields=fields)


def echo_through(s: udf.Interface) -> None:
    for point in EVERY_TYPE:
        s.point_in.put(point)
    assert [s.point_out.get(timeout=TIMEOUT) for _ in EVERY_TYPE] == [without_bools(p) for p in EVERY_TYPE]


def test_mirror_through_socket(mirror_socket: str) -> None:
    first = udf.Socket(mirror_socket, timeout=KEEPALIVE, connect_timeout=TIMEOUT)
    second = udf.Socket(mirror_socket, timeout=TIMEOUT, connect_timeout=TIMEOUT)
    with first, second:  # two connections at once: one agent each
        for s in (first, second):
            info = s.info()
            assert (info.wants, info.provides, dict(info.options)) == (agent_pb2.STREAM, agent_pb2.STREAM, {})
            s.init(None)
        echo_through(first)
        echo_through(second)
        pause_for_keepalives(first)
        echo_through(first)
    assert first.stats().state == second.stats().state == "stopped"


# --- python -m udf run / info -----------------------------------------------------------


def test_cli_info(mirror_socket: str) -> None:
    expected: list[tuple[list[str], str]] = [
        (
            ["--", MOVING_AVG],
            "wants: stream\nprovides: stream\noptions:\n  as     STRING\n  field  STRING\n  size   INT\n",
        ),
        (["--", OUTLIERS], "wants: batch\nprovides: batch\noptions:\n  field  STRING\n  scale  DOUBLE\n"),
        (["--socket", mirror_socket], "wants: stream\nprovides: stream\noptions: none\n"),
    ]
    for udf_args, text in expected:
        done = cli("info", *udf_args)
        assert (done.returncode, done.stdout.decode()) == (0, text), done.stderr


def sample_series() -> dict[str, list[tuple[int, float]]]:
    """examples/data/cpu.lp's usage_user per series (its tags), in order: (time, value)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for line in CPU_LP.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        head, fields, t = line.split(" ")
        values = dict(f.split("=") for f in fields.split(","))
        series.setdefault(head, []).append((int(t), float(values["usage_user"])))
    return series


def run_lines(out: bytes) -> dict[str, list[tuple[int, float]]]:
    """``head avg=V T`` output lines, per series."""
    got: dict[str, list[tuple[int, float]]] = {}
    for line in out.decode().splitlines():
        head, field, t = line.split(" ")
        name, value = field.split("=")
        assert name == "avg"
        got.setdefault(head, []).append((int(t), float(value)))
    return got


def test_cli_run_moving_avg() -> None:
    done = cli("run", "-o", "field=usage_user", "-o", "size=10", str(CPU_LP), "--", MOVING_AVG)
    assert done.returncode == 0, done.stderr
    got = run_lines(done.stdout)
    series = sample_series()
    assert sorted(got) == sorted(series) and len(series) == 3
    for head, points in series.items():
        assert [t for t, _ in got[head]] == [t for t, _ in points]
        assert_means([v for _, v in got[head]], moving_means([v for _, v in points], 10))


def test_cli_snapshot_then_restore_moving_avg(tmp_path: Path) -> None:
    lines = CPU_LP.read_bytes().splitlines(keepends=True)
    first, second, snapshot = tmp_path / "first.lp", tmp_path / "second.lp", tmp_path / "avg.snapshot"
    first.write_bytes(b"".join(lines[:100]))
    second.write_bytes(b"".join(lines[100:]))
    opts = ["-o", "field=usage_user", "-o", "size=10"]
    whole = cli("run", *opts, str(CPU_LP), "--", MOVING_AVG)
    part1 = cli("run", *opts, "--snapshot-out", str(snapshot), str(first), "--", MOVING_AVG)
    part2 = cli("run", *opts, "--restore", str(snapshot), str(second), "--", MOVING_AVG)
    assert (whole.returncode, part1.returncode, part2.returncode) == (0, 0, 0), part2.stderr
    assert snapshot.stat().st_size > 0
    assert part1.stdout + part2.stdout == whole.stdout  # Go's running means continue bit for bit


def test_cli_run_outliers() -> None:
    done = cli("run", "--batch", "-o", "field=usage_user", str(CPU_LP), "--", OUTLIERS)
    assert done.returncode == 0, done.stderr
    spikes = {(head, t) for head, points in sample_series().items() for t, v in points if not 8.0 <= v <= 12.0}
    got = {(line.split(" ")[0], int(line.split(" ")[2])) for line in done.stdout.decode().splitlines()}
    assert len(spikes) == 7 and got == spikes


def test_cli_run_mirror(mirror_socket: str) -> None:
    """``run --socket`` with Go's mirror: every echo comes back, exact and in order.

    Kapacitor rc4's Go agent library closes the whole connection when its
    input ends (readLoop's ``defer a.in.Close()`` on the conn it also writes
    to), so echoes it has not written when our half-close arrives are lost on
    its side (docs/interop.md). So the CLI's input stays open until the echoes
    are on its stdout (it flushes when the UDF goes quiet), and only then ends.
    """
    data = b'cpu,host=a f=1.5,i=-3i,s="x \\"y\\"",b=true 10\ncpu,host=b f=2.0 20\n'
    # The bool field is dropped: see without_bools.
    expected = [b'cpu,host=a f=1.5,i=-3i,s="x \\"y\\"" 10\n', b"cpu,host=b f=2.0 20\n"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "udf", "run", "--socket", mirror_socket, "--connect-timeout", "10s"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=buffered_stdout_env(),
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(data)
        proc.stdin.flush()
        echoes = run_in_thread(lambda: [proc.stdout.readline() for _ in expected])()  # type: ignore[union-attr]
        assert echoes == expected
        proc.stdin.close()  # now the CLI half-closes; nothing is in flight
        assert proc.wait(TIMEOUT) == 0, proc.stderr.read()
        assert proc.stdout.read() == b""
    finally:
        end_process(proc)
