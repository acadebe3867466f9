"""The benchmark harness keeps working: its codec loops round-trip, its echo agent
answers a real Server correctly, and ``bench/run.py --quick`` runs to the end.

Nothing here measures or asserts speed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import agent_pb2
import udf
from udf import Batch, BatchPoint, Point

from ..helpers import ROOT, exchange

BENCH = ROOT / "bench"
#: Generous: the quick run takes a few seconds, more on a loaded machine or the pure-Python backend
#: (31 s seen under pytest -n 2 at load 5).
QUICK_RUN_LIMIT = 240
#: These tests run a whole quick benchmark: the suite's 60 s per-test timeout would trip on a loaded
#: machine before their own subprocess limit does.
benchmark_run_timeout = pytest.mark.timeout(QUICK_RUN_LIMIT + 60)


def load(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` (bench/ is scripts, not a package)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the bench modules import each other by name
    spec = importlib.util.spec_from_file_location(f"udf_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ceiling() -> ModuleType:
    return load("ceiling")


@pytest.fixture(scope="module")
def workload() -> ModuleType:
    return load("workload")


def test_workload_points_are_typical_and_distinct(workload: ModuleType) -> None:
    from udf.convert import encode_point

    points = workload.make_anchor_points(50)
    assert len({(p.time, p.fields["count"]) for p in points}) == 50
    assert {len(encode_point(p)) for p in points} == {172}  # anchorbench's 170-byte points, framed
    batches = workload.make_anchor_batches(3, 100)
    assert [len(b.points) for b in batches] == [100, 100, 100]
    assert batches[1].points[0].time == batches[0].tmax + workload.SECOND
    series = workload.make_series_points(4000, 2000)
    keys = {(p.name, p.group, tuple(sorted(p.tags.items()))) for p in series}
    assert len(keys) == 2000 and len({p.group for p in series}) == 2000
    assert len({(p.group, p.time) for p in series}) == 4000  # every point distinct


def test_anchor_points_are_what_anchorbench_sends(tmp_path: Path, workload: ModuleType) -> None:
    """The Python rows send the Go rows' points: anchorbench's frames decode to make_anchor_points."""
    anchorbench = ROOT.parent / "shared" / "anchors" / "anchorbench"
    if not anchorbench.exists():
        pytest.skip(f"{anchorbench} not found (the Go original is only on the project machine)")
    from udf.convert import point_from_message
    from udf.wire import FrameDecoder

    record = tmp_path / "requests.bin"
    for mode, args in (("stream", ["-n", "5"]), ("batch", ["-b", "2", "-bs", "3"])):
        agent = f"tee {record} | {sys.executable} {BENCH / 'echo_agent.py'}" + (" --batch" if mode == "batch" else "")
        subprocess.run(
            [str(anchorbench), "-mode", mode, *args, "--", "sh", "-c", agent],
            check=True,
            capture_output=True,
            timeout=QUICK_RUN_LIMIT,
        )
        requests = [agent_pb2.Request.FromString(f) for f in FrameDecoder().feed(record.read_bytes())]
        if mode == "stream":
            got = [point_from_message(r.point) for r in requests if r.WhichOneof("message") == "point"]
            assert got == workload.make_anchor_points(5)
        else:
            want = workload.make_anchor_batches(2, 3)
            begins = [r.begin for r in requests if r.WhichOneof("message") == "begin"]
            ends = [r.end for r in requests if r.WhichOneof("message") == "end"]
            points = [r.point for r in requests if r.WhichOneof("message") == "point"]
            assert [(b.name, b.group, dict(b.tags), b.size) for b in begins] == [
                (b.name, b.group, b.tags, len(b.points)) for b in want
            ]
            assert [(e.tmax, dict(e.tags)) for e in ends] == [(b.tmax, b.tags) for b in want]
            assert [(p.time, dict(p.tags), p.group, dict(p.fieldsDouble), dict(p.fieldsInt)) for p in points] == [
                (
                    bp.time,
                    bp.tags,
                    b.group,
                    {k: v for k, v in bp.fields.items() if type(v) is float},
                    {k: v for k, v in bp.fields.items() if type(v) is int},
                )
                for b in want
                for bp in b.points
            ]


def test_ceiling_loop_round_trips(ceiling: ModuleType, workload: ModuleType) -> None:
    for points in (workload.make_anchor_points(250), workload.make_series_points(2500, 2000)):  # > one block
        back = ceiling.ceiling_roundtrip(points)
        assert back == points
        assert all(type(p.fields["count"]) is int and type(p.fields["usage_user"]) is float for p in back)


def test_ceiling_batch_loop_round_trips(ceiling: ModuleType, workload: ModuleType) -> None:
    batches = workload.make_anchor_batches(25, 100)
    assert ceiling.ceiling_batch_roundtrip(batches) == batches


def _echo_server(batch: bool = False, **kwargs: object) -> tuple[subprocess.Popen[bytes], udf.Server]:
    argv = [sys.executable, str(BENCH / "echo_agent.py")] + (["--batch"] if batch else [])
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    server = udf.Server(proc.stdout, proc.stdin, **kwargs)  # type: ignore[arg-type]
    server.start()
    return proc, server


def _finish(proc: subprocess.Popen[bytes], server: udf.Server) -> None:
    server.stop()
    assert proc.wait(30) == 0
    assert proc.stdout is not None
    proc.stdout.close()


def test_echo_agent_answers_requests_and_echoes_points(workload: ModuleType) -> None:
    proc, server = _echo_server(timeout=2.0)  # keepalives flow while we work
    try:
        info = server.info()
        assert (info.wants, info.provides) == (agent_pb2.STREAM, agent_pb2.STREAM)
        server.init([agent_pb2.Option(name="x", values=[agent_pb2.OptionValue(type=agent_pb2.INT, intValue=1)])])
        assert server.snapshot() == b"echo"
        server.restore(b"state")
        points = workload.make_series_points(3000, 2000)
        odd = Point(name="ünïcode", group="g", tags={}, fields={"s": "str", "b": True, "i": -1}, time=-5)
        points.append(odd)
        assert exchange(server.point_in.put, server.point_out, points) == points
    finally:
        _finish(proc, server)


def test_echo_agent_echoes_batches(workload: ModuleType) -> None:
    proc, server = _echo_server(batch=True)
    try:
        assert server.info().wants == agent_pb2.BATCH
        batches = workload.make_anchor_batches(20, 100)
        batches.append(Batch(name="empty", tmax=7, group="g", by_name=True, tags={"a": "b"}, points=[]))
        batches.append(Batch(name="one", points=[BatchPoint(time=1, fields={"f": 1.5}, tags={"t": "v"})]))
        assert exchange(server.batch_in.put, server.batch_out, batches) == batches
    finally:
        _finish(proc, server)


@pytest.mark.slow
@benchmark_run_timeout
def test_quick_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=QUICK_RUN_LIMIT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "median pts/s" in result.stdout
    assert out.exists()
    if (ROOT.parent / "shared" / "anchors" / "anchorbench").exists():
        assert "Python Server / Go original, per round" in result.stdout
    else:
        assert "no Go rows and no Go figures" in result.stdout and "go-stream" not in result.stdout


@pytest.mark.slow
@benchmark_run_timeout
def test_cache_benchmark_runs() -> None:
    """``bench/caches.py --quick``: the codec with its own paths on and off (UDF_PUREPROTOBUF=1), every cache filled."""
    result = subprocess.run(
        [sys.executable, str(BENCH / "caches.py"), "--quick"], capture_output=True, text=True, timeout=QUICK_RUN_LIMIT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "codec ceiling, 2,000 series: hand-written paths off (UDF_PUREPROTOBUF=1)" in result.stdout
    assert "decode: 256 series spans (one stream, worst case" in result.stdout
    assert "decode: 128 layouts" in result.stdout
    assert "encode: 128 compiled writers" in result.stdout


def test_cache_benchmark_big_tags_runs() -> None:
    """``bench/caches.py --big-tags`` through examples/mirror.py, small: every point comes back, RSS reported."""
    result = subprocess.run(
        [sys.executable, str(BENCH / "caches.py"), "--big-tags", "--series", "50", "--tag-kib", "8"],
        capture_output=True,
        text=True,
        timeout=QUICK_RUN_LIMIT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "50 series with 8 KiB tags through mirror.py: max RSS" in result.stdout
