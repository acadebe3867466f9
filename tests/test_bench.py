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

from .conftest import exchange

BENCH = Path(__file__).resolve().parent.parent / "bench"
#: Generous: the quick run takes a few seconds, more on a loaded machine or the pure-Python backend.
QUICK_RUN_LIMIT = 600


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

    points = workload.make_points(50)
    assert len({(p.time, p.tags["host"]) for p in points}) == 50
    assert all(170 <= len(encode_point(p)) <= 178 for p in points)  # the issue's ~174-byte frames
    batches = workload.make_batches(3, 100)
    assert [len(b.points) for b in batches] == [100, 100, 100]


def test_ceiling_loop_round_trips(ceiling: ModuleType, workload: ModuleType) -> None:
    points = workload.make_points(2500)  # more than one block
    back = ceiling.ceiling_roundtrip(points)
    assert back == points
    assert all(type(p.fields["count"]) is int and type(p.fields["usage_user"]) is float for p in back)


def test_ceiling_batch_loop_round_trips(ceiling: ModuleType, workload: ModuleType) -> None:
    batches = workload.make_batches(25, 100)
    assert ceiling.ceiling_batch_roundtrip(batches) == batches


def test_tricks_loop_round_trips(ceiling: ModuleType, workload: ModuleType) -> None:
    points = workload.make_points(1200)
    assert ceiling.tricks_roundtrip(points) == points


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
        points = workload.make_points(3000)
        odd = Point(name="ünïcode", group="g", tags={}, fields={"s": "str", "b": True, "i": -1}, time=-5)
        points.append(odd)
        assert exchange(server.point_in.put, server.point_out, points) == points
    finally:
        _finish(proc, server)


def test_echo_agent_echoes_batches(workload: ModuleType) -> None:
    proc, server = _echo_server(batch=True)
    try:
        assert server.info().wants == agent_pb2.BATCH
        batches = workload.make_batches(20, 100)
        batches.append(Batch(name="empty", tmax=7, group="g", by_name=True, tags={"a": "b"}, points=[]))
        batches.append(Batch(name="one", points=[BatchPoint(time=1, fields={"f": 1.5}, tags={"t": "v"})]))
        assert exchange(server.batch_in.put, server.batch_out, batches) == batches
    finally:
        _finish(proc, server)


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
