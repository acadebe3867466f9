"""Benchmark udf.Server side by side with Kapacitor's Go original and the codec ceiling.

    python bench/run.py            # the full run (a few minutes)
    python bench/run.py --quick    # a small run that only checks the harness works

Throughput configurations are measured in turns (A B C D A B C D ...), so that
whatever else the machine is doing falls on all of them alike. The first table
gives the median, min and max of the turns and the ratio of each median to its
ceiling's (``codec``, or ``codec-batch`` for batches); the second gives, for
every round, the Python Server against the Go original measured in the same
round, and the median of those per-round ratios. Then memory (RSS growth over
many points through one Server) and idle latency (one point at a time, round
trip) are measured. ``--json PATH`` saves the results for ``bench/plot.py``.

Configurations:
  go-stream    Kapacitor v1.3.0-rc4's Go udf.Server (../shared/anchors/anchorbench),
               stream points through the same echo agent program as the Python rows
  stream       the Python Server: the same points (anchorbench's), one put() and one get() each
  go-batch     the Go Server, batches of 100 points
  batch        the Python Server, the same batches of 100 points
  series       the Python Server, stream points of a realistic workload: 2000 series
               (host, cpu and group vary), every point distinct
  codec        the ceiling: one thread encodes points to Request frames and decodes
               the mirrored Response frames, with the library's codec (no threads, no pipes)
  codec-batch  the same for batches of 100 points (the ceiling of the batch row)
  supervised   the stream row through a udf.Supervisor around a udf.Process (bench/supervised.py)
  agent        the echo agent alone: pre-encoded frames through the pipes and back

Where ../shared/anchors/anchorbench does not exist (a fresh clone), the Go rows
are left out and no Go figure is printed.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import supervised  # noqa: E402
import workload  # noqa: E402

import agent_pb2  # noqa: E402
import udf  # noqa: E402
from udf.convert import encode_point, encode_request  # noqa: E402
from udf.wire import read_frame  # noqa: E402

ECHO_AGENT = os.path.join(HERE, "echo_agent.py")
#: Kapacitor v1.3.0-rc4's Go udf.Server, built unchanged (see ../shared/anchors/README.md).
ANCHORBENCH = os.path.join(ROOT, "..", "shared", "anchors", "anchorbench")

#: Distinct items cycled through by the throughput runs (anchorbench's ``-pool``).
POOL = 2000
#: Points per batch.
BATCH_SIZE = 100
#: Series of the realistic workload (the ``series`` row), and its pool: every series twice.
SERIES = 2000
#: The ceiling each configuration is compared with.
CEILING_OF = {"stream": "codec", "series": "codec", "batch": "codec-batch"}
#: Each Python row and the Go row it is compared with, round by round.
GO_PAIRS = (("stream", "go-stream"), ("batch", "go-batch"), ("series", "go-stream"))


# --- the agent ---------------------------------------------------------------------


def agent_argv(batch: bool = False) -> list[str]:
    """The echo agent's command line: the same program for the Python and the Go Server."""
    return [sys.executable, ECHO_AGENT] + (["--batch"] if batch else [])


class EchoAgent:
    """The echo agent as a child process, with its stdin/stdout as unbuffered pipes."""

    def __init__(self, batch: bool = False) -> None:
        self.proc = subprocess.Popen(agent_argv(batch), stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)

    def server(self, **kwargs: Any) -> udf.Server:
        return udf.Server(self.proc.stdout, self.proc.stdin, **kwargs)

    def wait(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        if self.proc.wait(30) != 0:
            raise RuntimeError(f"echo agent exited with {self.proc.returncode}")


def _started(batch: bool = False) -> tuple[EchoAgent, udf.Server]:
    agent = EchoAgent(batch)
    server = agent.server()
    server.start()
    info = server.info()
    assert info.wants == (agent_pb2.BATCH if batch else agent_pb2.STREAM), info
    server.init(None)
    return agent, server


def _finish(agent: EchoAgent, server: udf.Server) -> None:
    server.stop()
    agent.wait()


def _producer(put: Callable[[Any], None], items: Sequence[Any], n: int) -> threading.Thread:
    """A thread that puts ``n`` items, cycling through ``items``; the loop runs in C."""

    def produce() -> None:
        collections.deque(map(put, itertools.islice(itertools.cycle(items), n)), maxlen=0)

    return threading.Thread(target=produce, name="bench-producer", daemon=True)


def _consume(outlet: Any, n: int, sample: int) -> list[Any]:
    """Take ``n`` items from ``outlet`` (in C) and return every ``sample``-th one, for checking."""
    return list(itertools.islice(outlet, 0, n, sample))


def _check(sampled: list[Any], sent: Sequence[Any], sample: int, what: str) -> None:
    for i, got in enumerate(sampled):
        if got != sent[(i * sample) % len(sent)]:
            raise AssertionError(f"{what} {i * sample} came back different: {got!r:.200}")


# --- throughput configurations -------------------------------------------------------


def _time_roundtrips(roundtrip: Any, points: Sequence[Any], n: int) -> float:
    """Seconds for ``roundtrip`` (a list of points in, the list back) to carry ``n`` points."""
    chunk = list(points)
    done = 0
    t0 = time.perf_counter()
    while done < n:
        out = roundtrip(chunk[: n - done])
        done += len(out)
    return time.perf_counter() - t0


def run_codec(points: Sequence[Any], n: int) -> float:
    import ceiling  # here, not at the top: the Server runs also work against older udf trees (A/B)

    return _time_roundtrips(ceiling.ceiling_roundtrip, points, n)


def run_codec_batch(batches: Sequence[Any], n: int) -> float:
    import ceiling

    size = len(batches[0].points)
    chunk = list(batches)
    done = 0
    t0 = time.perf_counter()
    while done < n:
        out = ceiling.ceiling_batch_roundtrip(chunk[: max(1, (n - done) // size)])
        done += len(out) * size
    return time.perf_counter() - t0


def run_stream(points: Sequence[Any], n: int, check: bool = True) -> float:
    agent, server = _started()
    producer = _producer(server.point_in.put, points, n)
    t0 = time.perf_counter()
    producer.start()
    sampled = _consume(server.point_out, n, 997)
    elapsed = time.perf_counter() - t0
    producer.join()
    _finish(agent, server)
    if check:
        _check(sampled, points, 997, "point")
    return elapsed


def run_batch(batches: Sequence[Any], n: int, check: bool = True) -> float:
    size = len(batches[0].points)
    nb = max(1, n // size)
    agent, server = _started(batch=True)
    producer = _producer(server.batch_in.put, batches, nb)
    t0 = time.perf_counter()
    producer.start()
    sampled = _consume(server.batch_out, nb, 97)
    elapsed = time.perf_counter() - t0
    producer.join()
    _finish(agent, server)
    if check:
        _check(sampled, batches, 97, "batch")
    return elapsed


_GO_RATE = re.compile(r"points=(\d+) .*points_per_s=([0-9.]+)")


def run_go(mode: str, n: int, pool: int, anchorbench: str = ANCHORBENCH) -> float:
    """Seconds the Go original takes for ``n`` points (``mode`` stream or batch), as it times itself.

    Like the Python rows, it cycles ``pool`` distinct items (anchorbench's
    ``-pool``) and talks to the same echo agent program; its start-up and the
    info/init exchange are not timed.
    """
    if mode == "stream":
        args = ["-mode", "stream", "-n", str(n), "-pool", str(pool)]
        argv = agent_argv()
    else:
        nb = max(1, n // BATCH_SIZE)
        args = ["-mode", "batch", "-b", str(nb), "-bs", str(BATCH_SIZE), "-pool", str(pool)]
        argv = agent_argv(batch=True)
    out = subprocess.run([anchorbench, *args, "--", *argv], capture_output=True, text=True, timeout=600)
    found = _GO_RATE.search(out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "")
    if out.returncode != 0 or found is None:
        raise RuntimeError(f"anchorbench failed ({out.returncode}): {out.stdout[-300:]}{out.stderr[-300:]}")
    points, rate = int(found.group(1)), float(found.group(2))
    return points / rate * (n / points)


def run_agent(points: Sequence[Any], n: int) -> float:
    """Pre-encoded point frames through the echo agent and back, no Server."""
    block = b"".join(encode_point(p) for p in points[:1000])
    per_block = min(1000, len(points))
    blocks = max(1, n // per_block)
    total = len(block) * blocks
    agent = EchoAgent()
    stdin, stdout = agent.proc.stdin, agent.proc.stdout
    # Wait until the agent answers an info request: its start-up is not timed.
    stdin.write(encode_request(agent_pb2.Request(info=agent_pb2.InfoRequest())))
    if read_frame(stdout) is None:
        raise RuntimeError("echo agent did not answer")

    def feed() -> None:
        for _ in range(blocks):
            stdin.write(block)
        stdin.close()

    writer = threading.Thread(target=feed, name="bench-feeder", daemon=True)
    got = 0
    t0 = time.perf_counter()
    writer.start()
    read = stdout.read
    while got < total:
        data = read(1 << 20)
        if not data:
            raise RuntimeError("echo agent ended early")
        got += len(data)
    elapsed = time.perf_counter() - t0
    writer.join()
    agent.wait()
    return elapsed * n / (blocks * per_block)


# --- memory and latency -------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_memory(points: Sequence[Any], n: int, batches: Sequence[Any]) -> dict[str, float]:
    """RSS growth of this process over ``n`` stream points, then ``n`` batched points, through one Server each."""
    result: dict[str, float] = {}
    for label, items, batch in (("stream", points, False), ("batch", batches, True)):
        size = len(items[0].points) if batch else 1
        count = n // size
        warm = count // 10
        agent, server = _started(batch=batch)
        inlet = server.batch_in if batch else server.point_in
        outlet = server.batch_out if batch else server.point_out
        producer = _producer(inlet.put, items, count)
        producer.start()
        base = peak = 0
        for got, _ in enumerate(outlet, 1):
            if got == warm:
                base = peak = _rss()
            elif got % 1000 == 0 and got > warm:
                peak = max(peak, _rss())
            if got == count:
                break
        end = _rss()
        producer.join()
        _finish(agent, server)
        result[f"{label}_rss_growth_mb"] = (end - base) / 2**20
        result[f"{label}_rss_peak_growth_mb"] = (peak - base) / 2**20
        result[f"{label}_rss_end_mb"] = end / 2**20
    result["points"] = n
    return result


def run_latency(points: Sequence[Any], samples: int, gap: float) -> dict[str, float]:
    """One point at a time, ``gap`` seconds apart: round-trip percentiles in microseconds."""
    agent, server = _started()
    put, get = server.point_in.put, server.point_out.get
    lat: list[float] = []
    for i in range(samples + 10):
        p = points[i % len(points)]
        t0 = time.perf_counter()
        put(p)
        q = get()
        dt = time.perf_counter() - t0
        if q != p:
            raise AssertionError("latency point came back different")
        if i >= 10:  # the first few warm the threads up
            lat.append(dt * 1e6)
        time.sleep(gap)
    _finish(agent, server)
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))]

    return {"samples": samples, "p50_us": pct(0.5), "p90_us": pct(0.9), "p99_us": pct(0.99), "max_us": lat[-1]}


# --- the run ------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    from google.protobuf import __version__ as pb_version
    from google.protobuf.internal import api_implementation

    return {
        "python": platform.python_version(),
        "protobuf": f"{pb_version} {api_implementation.Type()}",
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
        "machine": platform.machine(),
    }


def _load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def go_ratios(rates: dict[str, list[float]]) -> dict[str, list[float]]:
    """Per round, each Python row over the Go row measured in the same round."""
    return {
        py: [a / b for a, b in zip(rates[py], rates[go], strict=True)]
        for py, go in GO_PAIRS
        if rates.get(py) and rates.get(go)
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small run that checks the harness (CI)")
    ap.add_argument("--rounds", type=int, help="turns per configuration (default 7, quick 2)")
    ap.add_argument("--points", type=int, help="points per turn (default 200000, quick 3000)")
    ap.add_argument("--memory-points", type=int, help="points for the RSS check (default 1000000, quick 20000)")
    ap.add_argument("--latency-samples", type=int, help="idle round trips (default 2000, quick 50)")
    ap.add_argument("--only", help="comma-separated configurations to run, memory and latency included (default: all)")
    ap.add_argument(
        "--anchorbench", default=ANCHORBENCH, help="the Go original's benchmark binary (default: %(default)s)"
    )
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args(argv)

    rounds = args.rounds or (2 if args.quick else 7)
    n = args.points or (3000 if args.quick else 200_000)
    mem_n = args.memory_points if args.memory_points is not None else (20_000 if args.quick else 1_000_000)
    lat_n = args.latency_samples if args.latency_samples is not None else (50 if args.quick else 2000)

    points = workload.make_anchor_points(POOL)
    batches = workload.make_anchor_batches(POOL // BATCH_SIZE or 1, BATCH_SIZE)
    series = workload.make_series_points(2 * SERIES, SERIES)
    frame = len(encode_point(points[0]))
    anchorbench = args.anchorbench
    have_go = os.access(anchorbench, os.X_OK)

    configs: dict[str, Callable[[], float]] = {
        "go-stream": lambda: run_go("stream", n, len(points), anchorbench),
        "stream": lambda: run_stream(points, n),
        "go-batch": lambda: run_go("batch", n, len(batches), anchorbench),
        "batch": lambda: run_batch(batches, n),
        "series": lambda: run_stream(series, n),
        "supervised": lambda: supervised.run_supervised(points, n),
        "codec": lambda: run_codec(points, n),
        "codec-batch": lambda: run_codec_batch(batches, n),
        "agent": lambda: run_agent(points, n * 10),
    }
    counts = {"agent": n * 10}
    wanted = set(args.only.split(",")) if args.only else set(configs) | {"memory", "latency"}
    unknown = wanted - set(configs) - {"memory", "latency"}
    if unknown:
        ap.error(f"unknown configuration(s): {', '.join(sorted(unknown))}")
    if not have_go:
        wanted -= {"go-stream", "go-batch"}
    configs = {k: v for k, v in configs.items() if k in wanted}
    env = environment()
    print(
        f"# udf bench: Python {env['python']}, protobuf {env['protobuf']}, {env['cpus']} CPUs, "
        f"{_load()} (1, 5, 15 min); {frame}-byte point frames; {rounds} rounds of {n} points"
    )
    if not have_go:
        print(f"# Go original: {os.path.relpath(anchorbench, os.getcwd())} not found, so no Go rows and no Go figures")

    rates: dict[str, list[float]] = {k: [] for k in configs}
    loads: list[float] = []
    for r in range(rounds):
        for name, fn in configs.items():
            seconds = fn()
            rates[name].append(counts.get(name, n) / seconds)
        loads.append(os.getloadavg()[0])
        print(
            f"  round {r + 1}/{rounds} ({_load()}): " + "  ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items()),
            flush=True,
        )

    rows = []
    for name, values in rates.items():
        med = statistics.median(values)
        ceiling_name = CEILING_OF.get(name)
        ceiling = statistics.median(rates[ceiling_name]) if ceiling_name and rates.get(ceiling_name) else None
        rows.append(
            {
                "config": name,
                "median": med,
                "min": min(values),
                "max": max(values),
                "ceiling": ceiling_name,
                "ratio_to_ceiling": med / ceiling if ceiling else None,
                "turns": values,
            }
        )

    if rows:
        print()
        print(f"{'config':<12} {'median pts/s':>13} {'min':>11} {'max':>11} {'x ceiling':>10}  ceiling")
    for row in rows:
        ratio = f"{row['ratio_to_ceiling']:.2f}" if row["ratio_to_ceiling"] is not None else "-"
        print(
            f"{row['config']:<12} {row['median']:>13,.0f} {row['min']:>11,.0f} {row['max']:>11,.0f} {ratio:>10}"
            f"  {row['ceiling'] or '-'}"
        )

    ratios = go_ratios(rates)
    if ratios:
        print("\nPython Server / Go original, per round (same agent program, same points, taking turns):")
        print(
            f"{'round':>5} {'load':>5}  " + "  ".join(f"{py + ' / ' + go:>22}" for py, go in GO_PAIRS if py in ratios)
        )
        for r in range(rounds):
            cells = [
                f"{rates[py][r]:>9,.0f}/{rates[go][r]:>7,.0f} {ratios[py][r]:>4.2f}x"
                for py, go in GO_PAIRS
                if py in ratios
            ]
            print(f"{r + 1:>5} {loads[r]:>5.2f}  " + "  ".join(f"{c:>22}" for c in cells))
        print(
            f"{'median':>11}  "
            + "  ".join(f"{statistics.median(ratios[py]):>21.2f}x" for py, _ in GO_PAIRS if py in ratios)
        )
    if "supervised" in rates and "stream" in rates:
        per_round = [sup / plain for sup, plain in zip(rates["supervised"], rates["stream"], strict=True)]
        print(f"supervised / stream, median of the per-round ratios: {statistics.median(per_round):.3f}")
    if "agent" in rates and "stream" in rates:
        print(
            f"echo agent alone is {statistics.median(rates['agent']) / statistics.median(rates['stream']):.0f}x"
            " faster than the stream row"
        )

    memory = latency = None
    if mem_n and "memory" in wanted:
        churn = workload.make_series_points(20_000, 20_000)  # more series than any cache holds
        memory = run_memory(churn, mem_n, batches)
        print(
            f"\nRSS growth over {mem_n:,} points ({len(churn):,} series cycled): stream "
            f"{memory['stream_rss_growth_mb']:+.1f} MB (peak {memory['stream_rss_peak_growth_mb']:+.1f}), batch "
            f"{memory['batch_rss_growth_mb']:+.1f} MB (peak {memory['batch_rss_peak_growth_mb']:+.1f}); "
            f"RSS at end {memory['batch_rss_end_mb']:.0f} MB ({_load()})"
        )
    if lat_n and "latency" in wanted:
        latency = run_latency(points, lat_n, 0.002)
        print(
            f"idle round trip over {lat_n} points, 2 ms apart: p50 {latency['p50_us']:.0f} us, "
            f"p90 {latency['p90_us']:.0f} us, p99 {latency['p99_us']:.0f} us,"
            f" max {latency['max_us']:.0f} us ({_load()})"
        )

    if args.json:
        env["loadavg_after"] = os.getloadavg()
        with open(args.json, "w") as f:
            json.dump(
                {
                    "env": env,
                    "frame_bytes": frame,
                    "points_per_turn": n,
                    "rounds": rounds,
                    "rows": rows,
                    "round_loadavg": loads,
                    "go": {"anchorbench": have_go, "ratios": ratios},
                    "memory": memory,
                    "latency": latency,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
