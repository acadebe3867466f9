"""udf.flink on a real standalone Flink cluster, started here from PyFlink's own ``bin/``.

A JobManager and two TaskManagers of two slots each (separate JVMs, with their
Python workers), checkpoints every second, a fixed-delay restart strategy:
the configuration docs/flink.md shows (tests/adapters/flink_cluster.py). Jobs are
``examples/flink_moving_avg.py`` submitted with ``bin/flink run -py``: points
read from a file by a ``FileSource``, averages written by a ``FileSink`` that
commits its files on checkpoints. Whatever happens, the cluster is stopped
and every process it started -- the JVMs, their Python workers, the agents,
and the orphans of a killed TaskManager -- is gone at the end; the logs stay
in the pytest temporary folder, named in every failure.

Needs PyFlink and Java (``.venv-flink``, made by scripts/test-flink.sh).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

try:
    import pyflink  # noqa: F401
except ImportError:
    pyflink = None

import udf
from udf.lineprotocol import format_line

from ..helpers import ROOT
from .flink_cluster import FlinkCluster, ancestors, cmdline, marked_pids, parent_of
from .reference import EXAMPLES, MOVING_AVG, reference_run, sample_series

pytestmark = [
    pytest.mark.skipif(
        pyflink is None,
        reason="PyFlink is not installed (extra 'flink'; scripts/test-flink.sh runs this in .venv-flink)",
    ),
    pytest.mark.skipif(shutil.which("java") is None, reason="no java on PATH (Flink needs Java 11+)"),
    pytest.mark.timeout(600),  # a cluster starts in 20-60 s and a job runs for a minute on this loaded machine
]

EXAMPLE = os.path.join(EXAMPLES, "flink_moving_avg.py")
SLOW_AGENT = os.path.join(ROOT, "tests", "agents", "slow_moving_avg.py")
#: The kill test's input: long enough that checkpoints complete and commit output well before its end.
KILL_SERIES, KILL_POINTS, KILL_DELAY = 100, 300, 0.001
JOB_TIMEOUT = 400.0


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[FlinkCluster]:
    """The cluster of this module's tests; stopped, with every process it started ended, whatever happens.

    Its folder is outside pytest's temporary folders (which other pytest runs
    of the same user rotate away): removed after a pass, kept after a failure.
    """
    workdir = Path(tempfile.mkdtemp(prefix="udf-flink-cluster-"))
    flink = FlinkCluster(workdir, taskmanagers=2, slots=2)
    failed_before = request.session.testsfailed
    passed = False
    try:
        flink.start()
        yield flink
        passed = request.session.testsfailed == failed_before
    finally:
        flink.stop()
        left = marked_pids(str(flink.workdir))
        if passed and not left:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"\nFlink logs kept in {flink.log_dir}", file=sys.stderr)
        assert not left, f"processes of the cluster still running after stop(): {left}"


# --- helpers ---------------------------------------------------------------------------------------------


def expected_lines(series: Sequence[Sequence[udf.Point]], size: int) -> Counter[str]:
    """What a plain udf.Process run of moving_avg gives for each series, as line protocol."""
    expected = reference_run(MOVING_AVG, {"field": "usage_user", "size": size, "as": "avg"}, series, "stream")
    return collections.Counter(format_line(p[1], dict(p[7]), dict(p[8]), p[9]) for p in expected.elements())


def committed_lines(folder: Path) -> list[str]:
    """The lines of the FileSink's committed files (in-progress and pending files are hidden: '.part-...')."""
    lines: list[str] = []
    for path in sorted(folder.rglob("part-*")):
        if path.is_file() and not path.name.startswith("."):
            lines += path.read_text().splitlines()
    return lines


def submitted_job_id(output: str) -> str:
    found = re.search(r"Job has been submitted with JobID ([0-9a-f]{32})", output)
    assert found, f"no job id in flink run's output:\n{output}"
    return found.group(1)


def write_points(path: Path, series: int, points: int) -> list[list[udf.Point]]:
    """``series`` hosts x ``points`` points, in time order across hosts, as line protocol; return them by host."""
    by_host: list[list[udf.Point]] = [[] for _ in range(series)]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(points):
            for h in range(series):
                tags = {"host": f"h{h:04d}", "region": "eu"}
                fields: dict[str, udf.models.FieldValue] = {"usage_user": 10.0 + ((i * 7 + h * 13) % 17) / 10.0}
                time_ns = 1495152000 * 10**9 + i * 10**10
                f.write(format_line("cpu", tags, fields, time_ns) + "\n")
                by_host[h].append(
                    udf.Point(
                        name="cpu",
                        group=f"cpu\nhost=h{h:04d}",
                        dimensions=udf.Dimensions(True, ["host"]),
                        tags=tags,
                        fields=fields,
                        time=time_ns,
                    )
                )
    return by_host


# --- the tests ----------------------------------------------------------------------------------------------


def test_committed_output_equals_the_plain_run(cluster: FlinkCluster, tmp_path: Path) -> None:
    """docs/flink.md's job, as docs/flink.md submits it: the committed files hold every average once."""
    series = list(sample_series().values())
    expected = expected_lines(series, 5)
    out = tmp_path / "avg"
    done = cluster.flink("run", "-py", "examples/flink_moving_avg.py", "--output", str(out), timeout=JOB_TIMEOUT)
    job = cluster.job(submitted_job_id(done.stdout))
    assert job["state"] == "FINISHED", f"{job['state']} (logs: {cluster.log_dir})"
    got = collections.Counter(committed_lines(out))
    assert got == expected, f"{sum((expected - got).values())} missing, {sum((got - expected).values())} unexpected"
    assert sum(got.values()) == 120 * 6 and max(got.values()) == 1


def test_a_taskmanager_killed_mid_job_recovers_and_each_result_is_committed_once(
    cluster: FlinkCluster, tmp_path: Path
) -> None:
    """SIGKILL the TaskManager running agents mid-job: Flink restarts the job from its last checkpoint
    on the other TaskManager; the committed output still equals the plain run, each line once."""
    cluster.wait_for_slots(4)
    points = tmp_path / "points.lp"
    series = write_points(points, KILL_SERIES, KILL_POINTS)
    expected = expected_lines(series, 5)
    total = sum(expected.values())
    out = tmp_path / "avg"
    agent = f"{sys.executable} -u {SLOW_AGENT} {KILL_DELAY}"
    done = cluster.flink("run", "-d", "-py", EXAMPLE, "--input", str(points), "--output", str(out), "--agent", agent)
    job_id = submitted_job_id(done.stdout)

    # Wait until a checkpoint has committed some output, then kill a TaskManager that runs agents right now.
    committed_before = len(cluster.wait_for("committed output", lambda: committed_lines(out), timeout=JOB_TIMEOUT))
    taskmanagers = set(cluster.taskmanager_pids())
    agents = [pid for pid in marked_pids(str(cluster.workdir)) if SLOW_AGENT in cmdline(pid)]
    victim = next(tm for pid in agents for tm in ancestors(pid) if tm in taskmanagers)
    workers_and_agents = [pid for pid in marked_pids(str(cluster.workdir)) if victim in ancestors(pid)]
    assert cluster.job(job_id)["state"] == "RUNNING"
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    assert 0 < committed_before < total, "the kill must come mid-job, after a checkpoint committed output"

    state = cluster.wait_for(
        "the job's end",
        lambda: (s := cluster.job(job_id)["state"]) in ("FINISHED", "FAILED", "CANCELED") and s,
        timeout=JOB_TIMEOUT,
        poll=0.5,
    )
    recovered_in = time.monotonic() - killed_at
    failovers = cluster.rest(f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]
    assert state == "FINISHED", f"job {state}: {[e.get('exceptionName') for e in failovers]} (logs: {cluster.log_dir})"
    assert failovers, "the job never failed over: the kill changed nothing to test"
    restored = cluster.rest(f"/jobs/{job_id}/checkpoints")["latest"]["restored"]
    assert restored and restored["id"] >= 1, "the job did not restart from a checkpoint"
    got = collections.Counter(committed_lines(out))
    missing, extra = expected - got, got - expected
    assert not missing and not extra, f"{sum(missing.values())} missing, {sum(extra.values())} unexpected"
    assert sum(got.values()) == total and max(got.values()) == 1  # exactly once
    orphans = [pid for pid in workers_and_agents if parent_of(pid) not in (-1, victim) and cmdline(pid)]
    print(
        f"\nkill test: {total} averages; {committed_before} committed before the TaskManager (pid {victim}) "
        f"was killed; the job failed over {len(failovers)} time(s), restarted from checkpoint {restored['id']} "
        f"and finished {recovered_in:.1f} s later; "
        f"committed: {sum(got.values())} lines, {len(got)} distinct, none missing, none twice; "
        f"{len(orphans)} of the killed TaskManager's Python workers and agents were left running "
        f"(ended by the cluster's stop())"
    )
