"""Benchmark udf.Server against a fast echo agent, side by side with the codec ceiling.

    python bench/run.py            # the full run (about a minute and a half)
    python bench/run.py --quick    # a small run that only checks the harness works

Throughput configurations are measured in turns (A B C D A B C D ...), so that
whatever else the machine is doing falls on all of them alike; the table gives
the median, min and max of the turns and the ratio of each median to its
ceiling's (``codec``, or ``codec-batch`` for batches). Then memory (RSS growth over many points through one Server) and
idle latency (one point at a time, round trip) are measured. ``--json PATH``
saves the results for ``bench/plot.py``.

Configurations:
  codec        the ceiling: one thread encodes points to Request frames and decodes
               the mirrored Response frames, with the library's codec (no threads, no pipes)
  codec-batch  the same for batches of 100 points (the ceiling of the batch row)
  tricks       the issue's reference single-thread loop (machine calibration only)
  stream       Server round trip of stream points through the echo agent
  supervised   the same through a udf.Supervisor around a udf.Process (bench/supervised.py)
  batch        Server round trip of batches of 100 points through the echo agent
  agent        the echo agent alone: pre-encoded frames through the pipes and back
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import supervised  # noqa: E402
import workload  # noqa: E402

import agent_pb2  # noqa: E402

import udf  # noqa: E402
from udf.convert import encode_point, encode_request  # noqa: E402
from udf.wire import read_frame  # noqa: E402

ECHO_AGENT = os.path.join(HERE, "echo_agent.py")

#: The issue's reference figures (2 shared cores, Python 3.11, protobuf 7.36 upb).
ISSUE_TRICKS = 77_000
ISSUE_GO_STREAM = 43_000
ISSUE_GO_BATCH = 57_000

#: Distinct points cycled through by the throughput runs.
POOL = 2000
#: The ceiling each configuration is compared with.
CEILING_OF = {"batch": "codec-batch", "codec-batch": "codec-batch"}


# --- the agent ---------------------------------------------------------------------


class EchoAgent:
    """The echo agent as a child process, with its stdin/stdout as unbuffered pipes."""

    def __init__(self, batch: bool = False) -> None:
        argv = [sys.executable, ECHO_AGENT] + (["--batch"] if batch else [])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)

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


def _started(batch: bool = False) -> Tuple[EchoAgent, udf.Server]:
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


def _consume(outlet: Any, n: int, sample: int) -> List[Any]:
    """Take ``n`` items from ``outlet`` (in C) and return every ``sample``-th one, for checking."""
    return list(itertools.islice(outlet, 0, n, sample))


def _check(sampled: List[Any], sent: Sequence[Any], sample: int, what: str) -> None:
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


def run_tricks(points: Sequence[Any], n: int) -> float:
    import ceiling

    return _time_roundtrips(ceiling.tricks_roundtrip, points, n)


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


def run_memory(points: Sequence[Any], n: int, batches: Sequence[Any]) -> Dict[str, float]:
    """RSS growth of this process over ``n`` stream points, then ``n`` batched points, through one Server each."""
    result: Dict[str, float] = {}
    for label, items, batch in (("stream", points, False), ("batch", batches, True)):
        size = len(items[0].points) if batch else 1
        count = n // size
        warm = count // 10
        agent, server = _started(batch=batch)
        inlet = server.batch_in if batch else server.point_in
        outlet = server.batch_out if batch else server.point_out
        producer = _producer(inlet.put, items, count)
        producer.start()
        got = 0
        base = peak = 0
        for _ in outlet:
            got += 1
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


def run_latency(points: Sequence[Any], samples: int, gap: float) -> Dict[str, float]:
    """One point at a time, ``gap`` seconds apart: round-trip percentiles in microseconds."""
    agent, server = _started()
    put, get = server.point_in.put, server.point_out.get
    lat: List[float] = []
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


def environment() -> Dict[str, Any]:
    from google.protobuf import __version__ as pb_version
    from google.protobuf.internal import api_implementation

    return {
        "python": platform.python_version(),
        "protobuf": f"{pb_version} {api_implementation.Type()}",
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
        "machine": platform.machine(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small run that checks the harness (CI)")
    ap.add_argument("--rounds", type=int, help="turns per configuration (default 7, quick 2)")
    ap.add_argument("--points", type=int, help="points per turn (default 200000, quick 3000)")
    ap.add_argument("--memory-points", type=int, help="points for the RSS check (default 1000000, quick 20000)")
    ap.add_argument("--latency-samples", type=int, help="idle round trips (default 2000, quick 50)")
    ap.add_argument("--only", help="comma-separated configurations to run, memory and latency included (default: all)")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args(argv)

    rounds = args.rounds or (2 if args.quick else 7)
    n = args.points or (3000 if args.quick else 200_000)
    mem_n = args.memory_points if args.memory_points is not None else (20_000 if args.quick else 1_000_000)
    lat_n = args.latency_samples if args.latency_samples is not None else (50 if args.quick else 2000)

    points = workload.make_points(POOL)
    batches = workload.make_batches(POOL // 100 or 1, 100)
    frame = len(encode_point(points[0]))

    configs: Dict[str, Callable[[], float]] = {
        "codec": lambda: run_codec(points, n),
        "codec-batch": lambda: run_codec_batch(batches, n),
        "tricks": lambda: run_tricks(points, n),
        "stream": lambda: run_stream(points, n),
        "supervised": lambda: supervised.run_supervised(points, n),
        "batch": lambda: run_batch(batches, n),
        "agent": lambda: run_agent(points, n * 10),
    }
    counts = {"agent": n * 10}
    wanted = set(args.only.split(",")) if args.only else set(configs) | {"memory", "latency"}
    unknown = wanted - set(configs) - {"memory", "latency"}
    if unknown:
        ap.error(f"unknown configuration(s): {', '.join(sorted(unknown))}")
    configs = {k: v for k, v in configs.items() if k in wanted}
    env = environment()
    print(f"# udf bench: Python {env['python']}, protobuf {env['protobuf']}, {env['cpus']} CPUs, "
          f"load {env['loadavg_before'][0]:.2f}; {frame}-byte point frames; {rounds} rounds of {n} points")

    rates: Dict[str, List[float]] = {k: [] for k in configs}
    for r in range(rounds):
        for name, fn in configs.items():
            seconds = fn()
            rates[name].append(counts.get(name, n) / seconds)
        print(f"  round {r + 1}/{rounds}: " + "  ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items()), flush=True)

    rows = []
    for name, values in rates.items():
        med = statistics.median(values)
        ceiling_name = CEILING_OF.get(name, "codec")
        ceiling = statistics.median(rates[ceiling_name]) if rates.get(ceiling_name) else None
        rows.append({"config": name, "median": med, "min": min(values), "max": max(values), "ceiling": ceiling_name,
                     "ratio_to_ceiling": med / ceiling if ceiling else None, "turns": values})

    if rows:
        print()
        print(f"{'config':<12} {'median pts/s':>13} {'min':>11} {'max':>11} {'x ceiling':>10}  ceiling")
    for row in rows:
        ratio = f"{row['ratio_to_ceiling']:.2f}" if row["ratio_to_ceiling"] is not None else "-"
        print(f"{row['config']:<12} {row['median']:>13,.0f} {row['min']:>11,.0f} {row['max']:>11,.0f} {ratio:>10}  {row['ceiling']}")

    med = {row["config"]: row["median"] for row in rows}
    calibration = None
    if "tricks" in med:
        scale = med["tricks"] / ISSUE_TRICKS
        calibration = {"scale": scale, "go_stream_here": ISSUE_GO_STREAM * scale, "go_batch_here": ISSUE_GO_BATCH * scale}
        print(f"\nmachine speed vs the issue's reference (tricks loop {med['tricks']:,.0f} vs {ISSUE_TRICKS:,}): x{scale:.2f};"
              f" Go v1.3.0-rc4 scaled to this machine: stream {calibration['go_stream_here']:,.0f}, batch {calibration['go_batch_here']:,.0f} pts/s")
        if "stream" in med:
            print(f"  stream / Go (scaled): {med['stream'] / calibration['go_stream_here']:.2f}x;"
                  f"  stream / Go (unscaled 43k): {med['stream'] / ISSUE_GO_STREAM:.2f}x")
        if "batch" in med:
            print(f"  batch / Go (scaled): {med['batch'] / calibration['go_batch_here']:.2f}x;"
                  f"  batch / Go (unscaled 57k): {med['batch'] / ISSUE_GO_BATCH:.2f}x")
    if "supervised" in med and "stream" in med:
        print(f"supervised / stream: {med['supervised'] / med['stream']:.2f}")
    if "agent" in med and "stream" in med:
        print(f"echo agent alone is {med['agent'] / max(med['stream'], med.get('batch', 0)):.0f}x faster than the Server")

    memory = latency = None
    if mem_n and "memory" in wanted:
        memory = run_memory(points, mem_n, batches)
        print(f"\nRSS growth over {mem_n:,} points: stream {memory['stream_rss_growth_mb']:+.1f} MB "
              f"(peak {memory['stream_rss_peak_growth_mb']:+.1f}), batch {memory['batch_rss_growth_mb']:+.1f} MB "
              f"(peak {memory['batch_rss_peak_growth_mb']:+.1f}); RSS at end {memory['batch_rss_end_mb']:.0f} MB")
    if lat_n and "latency" in wanted:
        latency = run_latency(points, lat_n, 0.002)
        print(f"idle round trip over {lat_n} points, 2 ms apart: p50 {latency['p50_us']:.0f} us, "
              f"p90 {latency['p90_us']:.0f} us, p99 {latency['p99_us']:.0f} us, max {latency['max_us']:.0f} us")

    if args.json:
        env["loadavg_after"] = os.getloadavg()
        with open(args.json, "w") as f:
            json.dump({"env": env, "frame_bytes": frame, "points_per_turn": n, "rounds": rounds, "rows": rows,
                       "calibration": calibration, "memory": memory, "latency": latency}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
