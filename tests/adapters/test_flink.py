"""udf.flink.run_udf on PyFlink's local environment (a mini cluster in this process), with real agents.

Needs PyFlink and Java (extra ``flink``): scripts/test-flink.sh runs this file
in its own virtual environment, ``.venv-flink``; elsewhere it is skipped.
Locally PyFlink runs the Python workers in this process ("loopback" mode), so
the agents are children of pytest and their threads pytest's (the suite's
thread-leak check covers them); every process a job starts carries
``UDF_FLINK_CLUSTER=<marker>`` in its environment, and after each test none
may be left but PyFlink's gateway JVM.

The functions a job runs are built by the ``*_fn`` factories below: a nested
function is pickled by value, so the Python workers need only ``udf``, not this
test module, on their path.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from pyflink.common import Configuration, Duration, Types, WatermarkStrategy
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

    import udf.flink as udf_flink
    from udf.flink import run_udf
except ImportError:  # the main environment: every test here is collected, and skipped
    udf_flink = None  # type: ignore[assignment]  # the module or nothing: the tests skip

import udf
from udf.lineprotocol import format_line

from ..helpers import ROOT, TIMEOUT
from .flink_cluster import MARKER, clean_environ, cmdline, marked_pids
from .reference import (
    AVG_OPTIONS,
    KILL_ONCE,
    MOVING_AVG,
    OUTLIERS,
    OUTLIERS_OPTIONS,
    interleaved,
    normalize,
    reference_run,
    sample_batches,
    sample_series,
)

#: The main class of the JVM PyFlink starts for a local environment.
GATEWAY = "org.apache.flink.client.python.PythonGatewayServer"

pytestmark = [
    pytest.mark.skipif(
        udf_flink is None,
        reason="PyFlink is not installed (extra 'flink'; scripts/test-flink.sh runs this in .venv-flink)",
    ),
    # A local job starts a mini cluster and Python workers: 10-30 s on a loaded 2-core machine.
    pytest.mark.timeout(300),
]


# --- the local environment and its processes ----------------------------------------------------


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Mark every process the local JVM starts (set before PyFlink launches it); end them all at the end."""
    value = str(tmp_path_factory.mktemp("flink-local"))
    old = os.environ.get(MARKER)
    os.environ[MARKER] = value
    yield value
    if old is None:
        del os.environ[MARKER]
    else:
        os.environ[MARKER] = old


def job_processes(marker: str) -> list[int]:
    """The marked processes but PyFlink's gateway JVM (the mini cluster, kept for the next test).

    Locally, PyFlink runs the Python workers in this process ("loopback"):
    the agents are this process's children, the JVM's Python runner scripts its
    grandchildren.
    """
    return [pid for pid in marked_pids(marker) if GATEWAY not in cmdline(pid)]


@pytest.fixture
def env(marker: str) -> Iterator[Any]:
    """A local environment of parallelism 2, no restarts; after the test, no worker or agent may be left."""
    config = Configuration()
    config.set_string("restart-strategy.type", "none")  # a failed task fails the job: replays are run_udf's own
    environment = StreamExecutionEnvironment.get_execution_environment(config)
    environment.set_python_executable(sys.executable)
    environment.set_parallelism(2)
    yield environment
    assert_no_job_processes(marker)


def assert_no_job_processes(marker: str) -> None:
    """Every Python worker and agent of the jobs run so far ends (the ones left are killed, and fail the test)."""
    deadline = time.monotonic() + 3 * TIMEOUT
    while job_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.2)  # Python workers end after their job, asynchronously: nothing to wait on
    left = {pid: cmdline(pid)[:200] for pid in job_processes(marker)}
    for pid in left:
        os.kill(pid, 9)
    assert not left, f"processes left by the job: {list(left.values())}"


def point_parser_fn() -> Callable[[str], udf.Point]:
    """``line -> udf.Point`` grouped by host (Java cannot unpickle Python objects: jobs start from strings)."""
    from udf.cli import to_stream_point
    from udf.lineprotocol import parse_line

    def parse(line: str) -> udf.Point:
        parsed = parse_line(line)
        assert parsed is not None
        return to_stream_point(parsed, ["host"])

    return parse


def lookup_fn(items: list[Any]) -> Callable[[int], Any]:
    """``index -> items[index]``: the items travel inside the function."""

    def lookup(index: int) -> Any:
        return items[index]

    return lookup


def points_stream(env: Any, series: dict[str, list[udf.Point]]) -> Any:
    """The series' points as line protocol, interleaved, parsed back into points inside the job."""
    lines = [format_line(p.name, p.tags, p.fields, p.time) for p in interleaved(series)]
    return env.from_collection(lines, type_info=Types.STRING()).map(
        point_parser_fn(), output_type=Types.PICKLED_BYTE_ARRAY()
    )


def collect(stream: Any) -> Counter[Hashable]:
    with stream.execute_and_collect() as results:
        return collections.Counter(normalize(item) for item in results)


def describe_difference(got: Counter[Hashable], expected: Counter[Hashable]) -> str:
    missing, extra = expected - got, got - expected
    return (
        f"{sum(missing.values())} missing (e.g. {list(missing)[:2]}),"
        f" {sum(extra.values())} unexpected (e.g. {list(extra)[:2]})"
    )


# --- equivalence with per-series udf.Process runs ---------------------------------------------------


def test_stream_moving_avg_equals_per_series_process_runs(env: Any) -> None:
    series = sample_series()
    assert len(series) >= 100
    expected = reference_run(MOVING_AVG, AVG_OPTIONS, list(series.values()), "stream")
    assert sum(expected.values()) == len(series) * (10 - 4 + 1)
    got = collect(run_udf(points_stream(env, series), MOVING_AVG, AVG_OPTIONS, shards=4, flush_every=64))
    assert got == expected, describe_difference(got, expected)


def test_batch_outliers_equals_per_series_process_runs(env: Any) -> None:
    batches = sample_batches()
    assert len(batches) >= 100
    expected = reference_run(OUTLIERS, OUTLIERS_OPTIONS, [[b] for b in batches], "batch")
    assert sum(len(b[-1]) for b in expected.elements()) >= 30  # the sample's spikes and dips are found
    stream = env.from_collection(list(range(len(batches))), type_info=Types.INT()).map(
        lookup_fn(batches), output_type=Types.PICKLED_BYTE_ARRAY()
    )
    got = collect(run_udf(stream, OUTLIERS, OUTLIERS_OPTIONS, edge="batch", shards=3, flush_every=16))
    assert got == expected, describe_difference(got, expected)


# --- failures -------------------------------------------------------------------------------------------


def test_an_agent_killed_mid_job_changes_nothing(env: Any, tmp_path: Path) -> None:
    """An agent SIGKILLs itself mid-hand-over: replayed on a restored agent; the job never restarts."""
    series = sample_series()
    expected = reference_run(MOVING_AVG, AVG_OPTIONS, list(series.values()), "stream")
    marker = tmp_path / "killed"
    command = [sys.executable, "-u", KILL_ONCE, str(marker), "70"]
    got = collect(run_udf(points_stream(env, series), command, AVG_OPTIONS, shards=4, flush_every=50))
    assert marker.exists(), "no agent reached its 70th point: the test injected nothing"
    assert got == expected, describe_difference(got, expected)


def test_a_udf_failing_init_fails_the_job_with_its_error(env: Any) -> None:
    stream = points_stream(env, {"g": [udf.Point(name="cpu", tags={"host": "a"}, fields={"v": 1.0}, time=1)]})
    with pytest.raises(Exception) as failure:
        collect(run_udf(stream, MOVING_AVG, {"size": 3}, shards=2))
    assert "InitError: failed to initialize processes missing required option 'field'" in str(failure.value)


# --- the processing-time flush ----------------------------------------------------------------------------


def test_pending_items_are_handed_over_every_flush_interval(env: Any, tmp_path: Path) -> None:
    """An unbounded source and flush_every out of reach: only the flush_interval timer hands items over."""
    series = sample_series()
    expected = reference_run(MOVING_AVG, AVG_OPTIONS, list(series.values()), "stream")
    folder = tmp_path / "in"
    folder.mkdir()
    lines = [format_line(p.name, p.tags, p.fields, p.time) for p in interleaved(series)]
    (folder / "points.lp").write_text("".join(f"{line}\n" for line in lines))
    source = (
        FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(folder))
        .monitor_continuously(Duration.of_millis(200))
        .build()
    )
    lines_stream = env.from_source(source, WatermarkStrategy.no_watermarks(), "watched folder")
    points = lines_stream.map(point_parser_fn(), output_type=Types.PICKLED_BYTE_ARRAY())
    outputs = run_udf(points, MOVING_AVG, AVG_OPTIONS, shards=4, flush_every=10**9, flush_interval=0.5)
    got: Counter[Hashable] = collections.Counter()
    total = sum(expected.values())
    # The job never ends by itself: take what the timers hand over, then cancel it by closing.
    with outputs.execute_and_collect() as results:
        for item in results:
            got[normalize(item)] += 1
            if sum(got.values()) == total:
                break
    assert got == expected, describe_difference(got, expected)


# --- arguments ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"command": "python agent.py"}, TypeError, "argv as a list"),
        ({"command": []}, ValueError, "non-empty list"),
        ({"edge": "table"}, ValueError, "edge must be 'stream' or 'batch'"),
        ({"shards": 0}, ValueError, "shards must be a positive int"),
        ({"flush_every": 1.5}, ValueError, "flush_every must be a positive int"),
        ({"flush_interval": 0}, ValueError, "flush_interval must be a positive number of seconds"),
        ({"timeout": "10s"}, TypeError, "timeout must be seconds"),
        ({"key": "host"}, TypeError, "key must be a callable"),
        ({"options": {"size": [object()]}}, TypeError, "option 'size': values must be"),
        ({"stream": [udf.Point()]}, TypeError, "stream must be a pyflink DataStream, got list"),
    ],
)
def test_bad_arguments_are_refused_naming_what(env: Any, kwargs: dict[str, Any], error: type, message: str) -> None:
    arguments: dict[str, Any] = {"command": MOVING_AVG, **kwargs}
    stream = arguments.pop("stream", None)
    if stream is None:
        stream = env.from_collection(["x"], type_info=Types.STRING())
    with pytest.raises(error, match=message):
        run_udf(stream, arguments.pop("command"), **arguments)


def test_import_udf_flink_does_not_start_java() -> None:
    """Importing udf.flink only imports PyFlink: no JVM until a job is built."""
    code = "import sys, udf.flink, pyflink.java_gateway as g; print(g._gateway is None)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=3 * TIMEOUT, env=clean_environ()
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


# --- the docs -------------------------------------------------------------------------------------------


def test_docs_usage_example_runs(
    marker: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    with open(os.path.join(ROOT, "docs", "flink.md"), encoding="utf-8") as f:
        code = re.search(r"## Usage \(local environment\)\n\n```python\n(.*?)```", f.read(), re.S)
    assert code is not None
    monkeypatch.chdir(ROOT)  # the example names examples/moving_avg.py relative to the checkout
    exec(compile(code.group(1), "docs/flink.md", "exec"), {"__name__": "docs_flink"})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 100 * (20 - 5 + 1)
    assert all(line.startswith("Point(name='cpu'") and "'avg':" in line for line in lines)
    assert_no_job_processes(marker)
