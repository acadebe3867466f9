"""Throughput of udf.flink.run_udf on a standalone Flink cluster with 1 and 2 TaskManagers, on this machine.

For each row: a standalone cluster from PyFlink's own ``bin/`` (configured as
docs/flink.md shows, on free ports), with N TaskManagers of one slot each; the
job is ``examples/flink_moving_avg.py`` (moving_avg, size 5) with parallelism
N over one file of SERIES series x POINTS points (in time order across series),
written by a ``FileSink`` with checkpoints every second, as in the tests. It
prints the job's duration as Flink reports it (scheduling and the Python
workers' start included), the wall time of the whole ``bin/flink run -py``
(the client building and submitting the job too), points per second of each,
and the speed-up over one TaskManager. The committed output is counted and
must be complete. Needs PyFlink and Java (``.venv-flink``)::

    .venv-flink/bin/python bench/flink_scale.py [--series 200] [--points 250] [--shards 8]

The figures are as measured on the machine it runs on: the load average is
printed before and after, and a loaded machine says so.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.adapters.flink_cluster import FlinkCluster  # noqa: E402

EXAMPLE = os.path.join(ROOT, "examples", "flink_moving_avg.py")
START_NS = 1495152000 * 10**9
SIZE = 5


def write_points(path: Path, series: int, points: int) -> int:
    """The workload as line protocol, in time order across series; return the number of points."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(points):
            t = START_NS + i * 10**10
            for h in range(series):
                f.write(f"cpu,host=h{h:04d},region=eu usage_user={10.0 + ((i * 7 + h * 13) % 17) / 10.0} {t}\n")
    return series * points


def committed(folder: Path) -> int:
    return sum(
        len(p.read_text().splitlines()) for p in folder.rglob("part-*") if p.is_file() and not p.name.startswith(".")
    )


def load() -> str:
    with open("/proc/loadavg", encoding="utf-8") as f:
        return " ".join(f.read().split()[:3])


def measure(taskmanagers: int, data: Path, points: int, expected: int, shards: int, tmp: Path) -> dict[str, Any]:
    """One row: start a cluster of ``taskmanagers`` one-slot TaskManagers, run the job, stop the cluster."""
    cluster = FlinkCluster(tmp / f"cluster-{taskmanagers}", taskmanagers=taskmanagers, slots=1)
    out = tmp / f"out-{taskmanagers}"
    try:
        cluster.start()
        started = time.monotonic()
        done = cluster.flink(
            "run",
            "-py",
            EXAMPLE,
            "--input",
            str(data),
            "--output",
            str(out),
            "--parallelism",
            str(taskmanagers),
            "--shards",
            str(shards),
            "--flush-every",
            "500",
            timeout=1800,
        )
        wall = time.monotonic() - started
        found = re.search(r"JobID ([0-9a-f]{32})", done.stdout)
        assert found, done.stdout
        job = cluster.job(found.group(1))
    finally:
        cluster.stop()
    lines = committed(out)
    if job["state"] != "FINISHED" or lines != expected:
        raise SystemExit(f"{taskmanagers} TaskManager(s): job {job['state']}, {lines} of {expected} averages committed")
    duration = job["duration"] / 1000.0
    return {
        "taskmanagers": taskmanagers,
        "job": duration,
        "wall": wall,
        "rate": points / duration,
        "wall_rate": points / wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--points", type=int, default=250, help="points per series")
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    total = args.series * args.points
    expected = args.series * (args.points - SIZE + 1)
    print(
        f"moving_avg (size {SIZE}) over {args.series} series x {args.points} points = {total} points, "
        f"{args.shards} shards, checkpoints every 1 s, FileSink"
    )
    before = load()
    print(f"load average before: {before}; cpus: {os.cpu_count()}")
    header = (
        f"{'TaskManagers':>12} {'slots':>5} {'job s':>7} {'points/s':>9} {'speed-up':>8} {'run s':>7} {'points/s':>9}"
    )
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="flink-scale-") as folder:
        tmp = Path(folder)
        data = tmp / "points.lp"
        write_points(data, args.series, args.points)
        for taskmanagers in (1, 2):
            row = measure(taskmanagers, data, total, expected, args.shards, tmp)
            rows.append(row)
            print(
                f"{row['taskmanagers']:>12} {row['taskmanagers']:>5} {row['job']:>7.1f} {row['rate']:>9.0f} "
                f"{row['rate'] / rows[0]['rate']:>7.2f}x {row['wall']:>7.1f} {row['wall_rate']:>9.0f}",
                flush=True,
            )
    after = load()
    print(f"load average after: {after}")
    if max(float(x) for x in (before + " " + after).split()) > (os.cpu_count() or 1):
        print("note: the machine was loaded (load average above its core count): a sanity check, not a result")
    return 0


if __name__ == "__main__":
    sys.exit(main())
