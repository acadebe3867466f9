"""Throughput of udf.beam.RunUDF with 1, 2 and 4 shards (workers), on this machine.

Runs examples/moving_avg.py (size 10) over SERIES series of POINTS points each
(deterministic data) and prints one table, two ways of using N workers:

``pipeline``
    one pipeline on Beam's in-process runner (FnApiRunner) with ``shards=N``.
    This runner processes a stateful stage (RunUDF's is) on one worker at a
    time even with ``direct_num_workers=N`` (its ``_get_bundle_manager``), so
    N shards here are N agents taking turns. (With
    ``direct_running_mode=multi_threading`` it also failed 1 run in 3 here with
    a MemoryError decoding GroupIntoBatches' timers, so it is not used.)
``processes``
    N worker processes, each the same pipeline over the series of its shard
    (``shard_of(key, N) == i``): how a distributed runner (Flink with
    parallelism N, N Dataflow workers) spreads RunUDF's shards.

Columns: wall time (from launching the workers to the last one's end,
pipeline start-up included), points per second, the speed-up over 1 worker,
the agent processes started (Beam counter ``udf.beam/agents_started``), and
the CPU seconds of the host side (Beam and RunUDF) and of the agents. Needs the
``beam`` extra (``.venv-beam``, see docs/beam.md)::

    .venv-beam/bin/python bench/beam_scale.py [--series 256] [--points 200]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import udf  # noqa: E402

MOVING_AVG = [sys.executable, "-u", os.path.join(ROOT, "examples", "moving_avg.py")]
OPTIONS = {"field": "usage_user", "size": 10}
START_NS = 1495152000 * 10**9


def make_points(series: int, points: int, worker: int, workers: int) -> list[udf.Point]:
    """The workload's points of the series in shard ``worker`` of ``workers``, interleaved by time."""
    from udf.beam import shard_of

    hosts = [f"h{h:04d}" for h in range(series)]
    mine = [h for h in hosts if shard_of(f"cpu\nhost={h}", workers) == worker]
    return [
        udf.Point(
            name="cpu",
            group=f"cpu\nhost={h}",
            dimensions=udf.Dimensions(True, ["host"]),
            tags={"host": h, "region": "us-east"},
            fields={"usage_user": 10.0 + ((i * 7 + n * 13) % 17) / 10.0},
            time=START_NS + i * 10**10,
        )
        for i in range(points)
        for n, h in enumerate(mine)
    ]


def run_worker(args: argparse.Namespace) -> None:
    """One worker: run the pipeline, print {"points", "agents", "host_cpu", "agent_cpu"} as JSON."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from udf.beam import METRICS_NAMESPACE, RunUDF

    if args.mode == "pipeline":
        items = make_points(args.series, args.points, 0, 1)
    else:
        items = make_points(args.series, args.points, args.worker, args.workers)
    options = PipelineOptions([])
    pipeline = beam.Pipeline(runner=FnApiRunner(), options=options)
    (
        pipeline
        | beam.Create(items)
        | RunUDF(MOVING_AVG, OPTIONS, shards=args.workers, batch_size=500)
        | beam.combiners.Count.Globally()
    )
    result = pipeline.run()
    result.wait_until_finish()
    agents = sum(
        c.committed
        for c in result.metrics().query()["counters"]
        if c.key.metric.namespace == METRICS_NAMESPACE and c.key.metric.name == "agents_started"
    )
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "points": len(items),
                "agents": agents,
                "host_cpu": me.ru_utime + me.ru_stime,
                "agent_cpu": children.ru_utime + children.ru_stime,
            }
        )
    )


def measure(mode: str, workers: int, series: int, points: int, tmp: str) -> dict[str, Any]:
    """Launch the workers of one row and time them until the last one ends."""
    count = 1 if mode == "pipeline" else workers
    base = [sys.executable, os.path.abspath(__file__), "--series", str(series), "--points", str(points)]
    env = {**os.environ, "TMPDIR": tmp}
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [*base, "--worker", str(i), "--workers", str(workers), "--mode", mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        for i in range(count)
    ]
    reports = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a {mode} worker failed with status {proc.returncode}")
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    wall = time.monotonic() - started
    total = sum(r["points"] for r in reports)
    return {
        "mode": mode,
        "workers": workers,
        "wall": wall,
        "rate": total / wall,
        "points": total,
        "agents": sum(r["agents"] for r in reports),
        "host_cpu": sum(r["host_cpu"] for r in reports),
        "agent_cpu": sum(r["agent_cpu"] for r in reports),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=256)
    parser.add_argument("--points", type=int, default=200, help="points per series")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["pipeline", "processes"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        run_worker(args)
        return 0
    print(f"moving_avg over {args.series} series x {args.points} points = {args.series * args.points} points")
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}; cpus: {os.cpu_count()}")
    header = (
        f"{'mode':<10} {'workers':>7} {'wall s':>7} {'points/s':>9} {'speed-up':>8} {'agents':>6}"
        f" {'host cpu s':>10} {'agent cpu s':>11}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="beam-scale-") as tmp:
        for mode in ("pipeline", "processes"):
            base_rate = None
            for workers in (1, 2, 4):
                row = measure(mode, workers, args.series, args.points, tmp)
                base_rate = base_rate or row["rate"]
                print(
                    f"{mode:<10} {workers:>7} {row['wall']:>7.2f} {row['rate']:>9.0f} {row['rate'] / base_rate:>7.2f}x "
                    f"{row['agents']:>6} {row['host_cpu']:>10.2f} {row['agent_cpu']:>11.2f}",
                    flush=True,
                )
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
