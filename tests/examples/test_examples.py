"""The example UDFs (examples/*.py), each run as a real child process driven by udf.Server.

The children run without ``-u``: the agent library must flush on its own.
Expected outputs are exact (small inputs, averages and fences chosen to be
exactly representable).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import agent_pb2
import udf
from udf import Batch, BatchPoint, Dimensions, Point
from udf.socket import HalfCloseWriter

from ..helpers import ROOT, TIMEOUT, exchange, put_all, run_in_thread

EXAMPLES = os.path.join(ROOT, "examples")
T0 = 1_495_152_000_000_000_000  # 2017-05-19T00:00:00Z in ns
SEC = 1_000_000_000


# --- helpers ---------------------------------------------------------------------------


def opt(name: str, value: Any, value_type: int | None = None) -> Any:
    """An agent_pb2.Option with one value, typed from the Python value unless given."""
    if value_type is None:
        value_type = {bool: agent_pb2.BOOL, int: agent_pb2.INT, float: agent_pb2.DOUBLE, str: agent_pb2.STRING}[
            type(value)
        ]
    field = {
        agent_pb2.BOOL: "boolValue",
        agent_pb2.INT: "intValue",
        agent_pb2.DOUBLE: "doubleValue",
        agent_pb2.STRING: "stringValue",
        agent_pb2.DURATION: "durationValue",
    }[value_type]
    return agent_pb2.Option(name=name, values=[agent_pb2.OptionValue(type=value_type, **{field: value})])


class Example:
    """One example UDF in a child process, with a started udf.Server on its pipes."""

    def __init__(self, script: str, *args: str, keepalive: float = 0.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(EXAMPLES, script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.server = udf.Server(self.proc.stdout, self.proc.stdin, timeout=keepalive)
        self.server.start()

    def finish(self) -> int:
        """Stop the server cleanly and return the child's exit status."""
        self.server.stop()
        return self.proc.wait(TIMEOUT)

    def cleanup(self) -> None:
        # Harmless after a clean stop(); ends the server's threads after a failed test.
        self.server.abort(udf.UDFError("test teardown"))
        if self.proc.poll() is None:
            self.proc.kill()
        self.server.wait_io(TIMEOUT)
        self.proc.wait(TIMEOUT)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


@pytest.fixture
def example() -> Iterator[Callable[..., Example]]:
    made: list[Example] = []

    def start(script: str, *args: str, keepalive: float = 0.0) -> Example:
        ex = Example(script, *args, keepalive=keepalive)
        made.append(ex)
        return ex

    yield start
    for ex in made:
        ex.cleanup()


def stream_point(group: str, value: Any, i: int, field: str = "v", **extra: Any) -> Point:
    host = group.split("=", 1)[1]
    return Point(
        name="cpu",
        database="telegraf",
        retention_policy="autogen",
        group=group,
        dimensions=Dimensions(by_name=False, tag_names=["host"]),
        tags={"host": host, "cpu": "cpu-total"},
        fields={field: value, **extra},
        time=T0 + i * SEC + 123,
    )


def read_cpu_lp() -> list[tuple[dict[str, str], dict[str, Any], int]]:
    """examples/data/cpu.lp as (tags, fields, time); the file has no escapes."""
    rows = []
    with open(os.path.join(EXAMPLES, "data", "cpu.lp")) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            series, fields, ts = line.split(" ")
            measurement, *tags = series.split(",")
            assert measurement == "cpu"
            rows.append(
                (
                    dict(t.split("=", 1) for t in tags),
                    {k: float(v) for k, v in (f.split("=", 1) for f in fields.split(","))},
                    int(ts),
                )
            )
    return rows


# --- mirror -----------------------------------------------------------------------------


def test_mirror_echoes_points_exactly(example: Callable[..., Example]) -> None:
    ex = example("mirror.py", keepalive=TIMEOUT)  # keepalives are answered along the way
    info = ex.server.info()
    assert (info.wants, info.provides, info.options) == (agent_pb2.STREAM, agent_pb2.STREAM, {})
    ex.server.init(None)
    points = [
        Point(
            name="m",
            database="db",
            retention_policy="rp",
            group="host=a,cpu=1",
            dimensions=Dimensions(by_name=True, tag_names=["cpu", "host"]),
            tags={"host": "a", "cpu": "1"},
            fields={"up": True, "down": False, "n": -(2**63), "big": 2**63 - 1, "x": 0.1, "s": "a b,c=d"},
            time=T0 + 999_999_999,
        ),
        Point(name="empty", time=1),
        Point(name="neg", fields={"zero": 0, "f": -0.0}, time=-5),
    ]
    points += [stream_point("host=b", i, i, extra=float(i)) for i in range(500)]
    got = exchange(ex.server.point_in.put, ex.server.point_out, points)
    assert got == points
    assert type(got[0].fields["up"]) is bool and type(got[0].fields["n"]) is int
    assert got[0].time == T0 + 999_999_999
    assert ex.finish() == 0


def test_mirror_rejects_options_and_batches(example: Callable[..., Example]) -> None:
    ex = example("mirror.py")
    with pytest.raises(udf.InitError, match="mirror takes no options, got: size"):
        ex.server.init([opt("size", 3)])
    ex.server.batch_in.put(Batch(name="b", points=[BatchPoint(time=1, fields={"v": 1.0})]))
    with pytest.raises(udf.AgentError, match="does not support batches"):
        ex.finish()
    assert ex.proc.wait(TIMEOUT) == 1


# --- moving_avg ---------------------------------------------------------------------------


def test_moving_avg_info(example: Callable[..., Example]) -> None:
    ex = example("moving_avg.py")
    info = ex.server.info()
    assert (info.wants, info.provides) == (agent_pb2.STREAM, agent_pb2.STREAM)
    assert {k: list(v.valueTypes) for k, v in info.options.items()} == {
        "field": [agent_pb2.STRING],
        "size": [agent_pb2.INT],
        "as": [agent_pb2.STRING],
    }
    assert ex.finish() == 0


def test_moving_avg_per_group_values(example: Callable[..., Example]) -> None:
    ex = example("moving_avg.py")
    ex.server.init([opt("field", "v"), opt("size", 3), opt("as", "mean")])
    inputs = [
        stream_point("host=a", 1.0, 0),
        stream_point("host=b", 10, 1),  # an int field counts
        stream_point("host=a", 2.0, 2),
        stream_point("host=b", 20, 3),
        stream_point("host=a", 3.0, 4),  # a: window full -> 2.0
        stream_point("host=a", "text", 5),  # not a number: skipped
        stream_point("host=a", 4.0, 6, field="other"),  # no 'v': skipped
        stream_point("host=b", 33, 7),  # b: -> 21.0
        stream_point("host=a", 4.0, 8),  # a: (2+3+4)/3 -> 3.0
        stream_point("host=a", 11.0, 9),  # a: (3+4+11)/3 -> 6.0
    ]
    for p in inputs:
        ex.server.point_in.put(p)
    expected = []
    for src, avg in ((inputs[4], 2.0), (inputs[7], 21.0), (inputs[8], 3.0), (inputs[9], 6.0)):
        expected.append(
            Point(
                name=src.name,
                database=src.database,
                retention_policy=src.retention_policy,
                group=src.group,
                dimensions=src.dimensions,
                tags=src.tags,
                fields={"mean": avg},
                time=src.time,
            )
        )
    got = [ex.server.point_out.get(timeout=TIMEOUT) for _ in expected]
    assert got == expected
    assert all(type(p.fields["mean"]) is float for p in got)
    assert ex.finish() == 0
    assert list(ex.server.point_out) == []  # nothing else was emitted


def test_moving_avg_snapshot_restore_continues_windows(example: Callable[..., Example]) -> None:
    options = [opt("field", "v"), opt("size", 3)]
    first = example("moving_avg.py")
    first.server.init(options)
    sent = [("host=a", 1.0), ("host=a", 2.0), ("host=b", 5.0), ("host=z", 0.0), ("host=z", 0.0), ("host=z", 3.0)]
    for i, (group, v) in enumerate(sent):
        first.server.point_in.put(stream_point(group, v, i))
    # Requests may overtake queued data: wait until the last point was handled.
    assert first.server.point_out.get(timeout=TIMEOUT).fields == {"avg": 1.0}
    snapshot = first.server.snapshot()
    assert json.loads(snapshot) == {
        "size": 3,
        "windows": {"host=a": [1.0, 2.0], "host=b": [5.0], "host=z": [0.0, 0.0, 3.0]},
    }
    assert first.finish() == 0
    assert list(first.server.point_out) == []  # no other window was full

    second = example("moving_avg.py")
    second.server.init(options)
    second.server.restore(snapshot)
    second.server.point_in.put(stream_point("host=a", 6.0, 10))
    second.server.point_in.put(stream_point("host=b", 7.0, 11))
    got = second.server.point_out.get(timeout=TIMEOUT)
    assert (got.group, got.fields, got.time) == ("host=a", {"avg": 3.0}, T0 + 10 * SEC + 123)
    second.server.point_in.put(stream_point("host=b", 9.0, 12))
    got = second.server.point_out.get(timeout=TIMEOUT)
    assert (got.group, got.fields) == ("host=b", {"avg": 7.0})
    assert second.finish() == 0


def test_moving_avg_restore_rejects_garbage(example: Callable[..., Example]) -> None:
    ex = example("moving_avg.py")
    ex.server.init([opt("field", "v"), opt("size", 2)])
    with pytest.raises(udf.RestoreError, match="error restoring snapshot: invalid moving_avg snapshot"):
        ex.server.restore(b"not json")
    with pytest.raises(udf.RestoreError, match="must be a list of numbers"):
        ex.server.restore(b'{"windows": {"g": ["x"]}}')
    # A snapshot taken with a larger size keeps the latest values.
    ex.server.restore(b'{"size": 4, "windows": {"host=a": [1, 2, 3, 4]}}')
    ex.server.point_in.put(stream_point("host=a", 10.0, 0))
    assert ex.server.point_out.get(timeout=TIMEOUT).fields == {"avg": 7.0}
    assert ex.finish() == 0


@pytest.mark.parametrize(
    "options, message",
    [
        ([], "missing required option 'field'; missing required option 'size'"),
        ([opt("field", "v")], "missing required option 'size'"),
        ([opt("field", "v"), opt("size", 0)], "option 'size' must be > 0, got 0"),
        ([opt("field", "v"), opt("size", -2)], "option 'size' must be > 0, got -2"),
        ([opt("field", "v"), opt("size", "3")], "option 'size' must be INT, got STRING"),
        ([opt("field", ""), opt("size", 3)], "option 'field' must not be empty"),
        ([opt("field", "v"), opt("size", 3), opt("as", "")], "option 'as' must not be empty"),
        ([opt("field", "v"), opt("size", 3), opt("window", 3)], "unknown option 'window'"),
    ],
)
def test_moving_avg_bad_options(example: Callable[..., Example], options: list[Any], message: str) -> None:
    ex = example("moving_avg.py")
    with pytest.raises(udf.InitError) as info:
        ex.server.init(options)
    assert str(info.value) == f"failed to initialize processes {message}"
    assert ex.finish() == 0


def test_moving_avg_over_sample_data(example: Callable[..., Example]) -> None:
    rows = read_cpu_lp()
    ex = example("moving_avg.py")
    ex.server.init([opt("field", "usage_user"), opt("size", 5), opt("as", "avg_user")])
    points = [
        Point(
            name="cpu",
            group=f"host={tags['host']}",
            tags=tags,
            fields=fields,
            time=ts,
            dimensions=Dimensions(tag_names=["host"]),
        )
        for tags, fields, ts in rows
    ]
    produced = run_in_thread(put_all, ex.server.point_in, points)
    hosts = sorted({tags["host"] for tags, _, _ in rows})
    per_host = len(rows) // len(hosts)
    got = [ex.server.point_out.get(timeout=TIMEOUT) for _ in range(len(hosts) * (per_host - 4))]
    produced()
    assert ex.finish() == 0
    for host in hosts:
        values = [f["usage_user"] for t, f, _ in rows if t["host"] == host]
        mine = [p.fields["avg_user"] for p in got if p.tags["host"] == host]
        expected = [sum(values[i - 4 : i + 1]) / 5 for i in range(4, len(values))]
        assert mine == pytest.approx(expected, rel=1e-12)


# --- outliers ---------------------------------------------------------------------------


def values_batch(values: list[Any], field: str = "v", **kwargs: Any) -> Batch:
    kwargs.setdefault("name", "cpu")
    kwargs.setdefault("group", "host=a")
    kwargs.setdefault("tags", {"host": "a"})
    kwargs.setdefault("tmax", T0 + len(values) * SEC)
    return Batch(
        points=[
            BatchPoint(time=T0 + i * SEC, fields={field: v, "i": i}, tags={"host": "a"}) for i, v in enumerate(values)
        ],
        **kwargs,
    )


def test_outliers_info(example: Callable[..., Example]) -> None:
    ex = example("outliers.py")
    info = ex.server.info()
    assert (info.wants, info.provides) == (agent_pb2.BATCH, agent_pb2.BATCH)
    assert {k: list(v.valueTypes) for k, v in info.options.items()} == {
        "field": [agent_pb2.STRING],
        "scale": [agent_pb2.DOUBLE],
    }
    assert ex.finish() == 0


def test_outliers_tukey_fences(example: Callable[..., Example]) -> None:
    ex = example("outliers.py")
    ex.server.init([opt("field", "v")])
    # sorted: -50 10 11 12 | 13 14 15 100 -> Q1 10.5, Q3 14.5, IQR 4, fences 4.5 and 20.5.
    even = values_batch([10, 100.0, 11, 12, 13, -50, 14, 15], by_name=True)
    ex.server.batch_in.put(even)
    got = ex.server.batch_out.get(timeout=TIMEOUT)
    assert got.points == [even.points[1], even.points[5]]  # unchanged, in arrival order
    assert [p.fields["v"] for p in got.points] == [100.0, -50]
    assert type(got.points[1].fields["v"]) is int
    assert (got.name, got.group, got.tags, got.tmax, got.by_name) == (even.name, even.group, even.tags, even.tmax, True)
    assert ex.finish() == 0


def test_outliers_quartiles_exclude_the_median_and_fences_are_strict(example: Callable[..., Example]) -> None:
    ex = example("outliers.py")
    ex.server.init([opt("field", "v"), opt("scale", 1.0)])
    # 1..8 + x (odd count): the median 5 is in neither half, so Q1 = 2.5 and
    # Q3 = 7.5 (IQR 5, upper fence 12.5). Methods that keep the median in the
    # halves (or interpolate) give Q1 3 and Q3 7, and would flag 12.
    ex.server.batch_in.put(values_batch([1, 2, 3, 4, 5, 6, 7, 8, 12]))
    assert ex.server.batch_out.get(timeout=TIMEOUT).points == []
    ex.server.batch_in.put(values_batch([1, 2, 3, 4, 5, 6, 7, 8, 12.75]))
    assert [p.fields["v"] for p in ex.server.batch_out.get(timeout=TIMEOUT).points] == [12.75]
    # 1..9 + x (even): Q1 3, Q3 8, fences -2 and 13; a value on a fence is not an outlier.
    ex.server.batch_in.put(values_batch([1, 2, 3, 4, 5, 6, 7, 8, 9, 13]))
    assert ex.server.batch_out.get(timeout=TIMEOUT).points == []
    ex.server.batch_in.put(values_batch([1, 2, 3, 4, 5, 6, 7, 8, 9, 13.5]))
    assert [p.fields["v"] for p in ex.server.batch_out.get(timeout=TIMEOUT).points] == [13.5]
    assert ex.finish() == 0


def test_outliers_scale_small_batches_and_missing_fields(example: Callable[..., Example]) -> None:
    ex = example("outliers.py")
    ex.server.init([opt("field", "v"), opt("scale", 10.0)])
    # Q1 2.5 Q3 7.5 IQR 5: with scale 10 the fences are -47.5 and 57.5.
    ex.server.batch_in.put(values_batch([1, 2, 3, 4, 5, 6, 7, 8, 50]))
    assert ex.server.batch_out.get(timeout=TIMEOUT).points == []
    ex.server.batch_in.put(values_batch([1, 2, 3, 4, 5, 6, 7, 8, 60]))
    assert [p.fields["v"] for p in ex.server.batch_out.get(timeout=TIMEOUT).points] == [60]
    # Empty and one-value batches have no outliers, but are still answered.
    empty = values_batch([], name="empty", tmax=T0)
    ex.server.batch_in.put(empty)
    assert ex.server.batch_out.get(timeout=TIMEOUT) == empty
    ex.server.batch_in.put(values_batch([1e9]))
    assert ex.server.batch_out.get(timeout=TIMEOUT).points == []
    # Points without the field (or with a string) neither count nor come out.
    mixed = values_batch([1, 2, 3, 4, 5, 6, 7, 8, 60])
    mixed.points.append(BatchPoint(time=T0, fields={"other": 1e12}))
    mixed.points.append(BatchPoint(time=T0, fields={"v": "1e12"}))
    ex.server.batch_in.put(mixed)
    assert [p.fields["v"] for p in ex.server.batch_out.get(timeout=TIMEOUT).points] == [60]
    assert ex.finish() == 0


def test_outliers_int_scale_accepted(example: Callable[..., Example]) -> None:
    ex = example("outliers.py")
    ex.server.init([opt("field", "v"), opt("scale", 0)])
    # scale 0: everything outside [Q1, Q3] = [2.5, 7.5] is an outlier.
    ex.server.batch_in.put(values_batch([1, 2, 3, 4, 5, 6, 7, 8, 9]))
    assert [p.fields["v"] for p in ex.server.batch_out.get(timeout=TIMEOUT).points] == [1, 2, 8, 9]
    assert ex.finish() == 0


@pytest.mark.parametrize(
    "options, message",
    [
        ([], "missing required option 'field'"),
        ([opt("field", "v"), opt("scale", -1.0)], "option 'scale' must be a finite number >= 0, got -1.0"),
        ([opt("field", "v"), opt("scale", float("inf"))], "option 'scale' must be a finite number >= 0, got inf"),
        ([opt("field", "v"), opt("scale", "big")], "option 'scale' must be DOUBLE or INT, got STRING"),
        ([opt("field", 3)], "option 'field' must be STRING, got INT"),
    ],
)
def test_outliers_bad_options(example: Callable[..., Example], options: list[Any], message: str) -> None:
    ex = example("outliers.py")
    with pytest.raises(udf.InitError) as info:
        ex.server.init(options)
    assert str(info.value) == f"failed to initialize processes {message}"
    assert ex.finish() == 0


def test_outliers_rejects_stream_points(example: Callable[..., Example]) -> None:
    ex = example("outliers.py")
    ex.server.init([opt("field", "v")])
    ex.server.point_in.put(Point(name="p", fields={"v": 1.0}))
    with pytest.raises(udf.AgentError, match="point received outside a batch"):
        ex.finish()


def test_outliers_find_the_spikes_in_sample_data(example: Callable[..., Example]) -> None:
    rows = read_cpu_lp()
    assert len(rows) >= 200
    hosts = sorted({tags["host"] for tags, _, _ in rows})
    assert len(hosts) == 3
    ex = example("outliers.py")
    ex.server.init([opt("field", "usage_user")])
    found = {}
    for host in hosts:
        mine = [(tags, fields, ts) for tags, fields, ts in rows if tags["host"] == host]
        batch = Batch(
            name="cpu",
            group=f"host={host}",
            tags={"host": host},
            tmax=mine[-1][2],
            points=[BatchPoint(time=ts, fields=fields, tags=tags) for tags, fields, ts in mine],
        )
        ex.server.batch_in.put(batch)
        got = ex.server.batch_out.get(timeout=TIMEOUT)
        assert got.group == f"host={host}"
        found[host] = [(p.time, p.fields["usage_user"]) for p in got.points]
    assert ex.finish() == 0
    # The data's usage_user is 8..12 except for the injected spikes and dips.
    spikes = {
        host: [(ts, f["usage_user"]) for t, f, ts in rows if t["host"] == host and not 8 <= f["usage_user"] <= 12]
        for host in hosts
    }
    assert found == spikes
    assert sum(len(v) for v in found.values()) >= 5


# --- socket mode ------------------------------------------------------------------------------


def read_stderr_line(proc: subprocess.Popen[bytes], needle: str) -> str:
    """Read the child's stderr until a line containing ``needle`` (bounded by TIMEOUT)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + TIMEOUT
    seen: list[str] = []
    while True:
        ready, _, _ = select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {needle!r} on stderr in time; got {seen}"
        line = proc.stderr.readline().decode()
        assert line, f"stderr ended before {needle!r}; got {seen}"
        seen.append(line)
        if needle in line:
            return line


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_example_as_socket_server(kind: str) -> None:
    with tempfile.TemporaryDirectory(prefix="udf-") as tmp:
        path = os.path.join(tmp, "mirror.sock")
        address = path if kind == "unix" else "tcp://127.0.0.1:0"
        proc = subprocess.Popen(
            [sys.executable, os.path.join(EXAMPLES, "mirror.py"), "--socket", address],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            line = read_stderr_line(proc, "listening on ")
            assert line.startswith("I! ")
            bound = line.rsplit("listening on ", 1)[1].strip()
            if kind == "unix":
                assert bound == path
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(TIMEOUT)
                sock.connect(path)
            else:
                host, _, port = bound[len("tcp://") :].rpartition(":")
                sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
            with sock:
                s = udf.Server(sock.makefile("rb", buffering=0), HalfCloseWriter(sock))
                s.start()
                try:
                    assert s.info().wants == agent_pb2.STREAM
                    s.init(None)
                    p = stream_point("host=a", True, 1, n=7)
                    s.point_in.put(p)
                    assert s.point_out.get(timeout=TIMEOUT) == p
                    s.stop()
                finally:
                    s.abort(udf.UDFError("test teardown"))  # harmless after a clean stop()
                    s.wait_io(TIMEOUT)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(TIMEOUT) == 0
            assert not os.path.exists(path)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(TIMEOUT)
            assert proc.stderr is not None
            proc.stderr.close()
