"""The supervisor's cost and its memory over a long run with restarts.

    python bench/supervised.py                 # overhead: plain Process vs Supervisor, in turns
    python bench/supervised.py --memory 1000000 --kills 5   # RSS over 1M points with 5 kills

``run_supervised(points, n)`` is the ``supervised`` row of ``bench/run.py``:
the same round trip as its ``stream`` row (the fast echo agent, a producer
thread, the consumer in the main thread), through a :class:`udf.Supervisor`
around a :class:`udf.Process` (replay log, snapshots every 10,000 items and
output forwarding included, no failures). ``run_process`` is the same through
a bare ``udf.Process``: the overhead is the ratio of the two.

The memory run puts ``N`` distinct points through a Supervisor of the echo
agent, SIGKILLs the agent ``--kills`` times at evenly spaced points, and
samples this process's RSS; it prints the RSS after warm-up, its peak, at the
end, and the replay log's largest size (bounded by ``snapshot_every`` plus
what is in flight).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import workload  # noqa: E402

import udf  # noqa: E402

ECHO_AGENT = os.path.join(HERE, "echo_agent.py")


def _echo_process() -> udf.Process:
    return udf.Process(sys.executable, [ECHO_AGENT])


def _round_trip(uf: udf.Interface, points: Sequence[Any], n: int) -> float:
    """Seconds for ``n`` points (cycling ``points``) through the opened ``uf`` and back, checked by sampling."""
    put = uf.point_in.put

    def produce() -> None:
        collections.deque(map(put, itertools.islice(itertools.cycle(points), n)), maxlen=0)

    producer = threading.Thread(target=produce, name="bench-producer", daemon=True)
    t0 = time.perf_counter()
    producer.start()
    sampled = list(itertools.islice(uf.point_out, 0, n, 997))
    elapsed = time.perf_counter() - t0
    producer.join()
    for i, got in enumerate(sampled):
        if got != points[(i * 997) % len(points)]:
            raise AssertionError(f"point {i * 997} came back different: {got!r:.200}")
    return elapsed


def run_process(points: Sequence[Any], n: int) -> float:
    """Seconds for ``n`` points through a bare udf.Process of the echo agent."""
    proc = _echo_process()
    proc.open()
    proc.init(None)
    try:
        return _round_trip(proc, points, n)
    finally:
        proc.close()


def run_supervised(points: Sequence[Any], n: int) -> float:
    """Seconds for ``n`` points through a udf.Supervisor of the echo agent (no failures)."""
    sup = udf.Supervisor(_echo_process, options=[])
    sup.open()
    try:
        elapsed = _round_trip(sup, points, n)
        stats = sup.stats()
        if stats.restarts:
            raise AssertionError(f"the agent was restarted during the overhead run: {stats}")
        return elapsed
    finally:
        sup.close()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_memory(n: int, kills: int, snapshot_every: int = 10_000) -> dict[str, Any]:
    """RSS of this process over ``n`` points through a Supervisor whose agent is SIGKILLed ``kills`` times."""
    points = workload.make_points(2000)
    procs: list[udf.Process] = []
    restarted = threading.Semaphore(0)

    def factory() -> udf.Process:
        proc = _echo_process()
        procs.append(proc)
        return proc

    sup = udf.Supervisor(
        factory,
        options=[],
        snapshot_every=snapshot_every,
        backoff=(0.01, 2.0, 0.1),
        max_restarts=kills + 1,
        period=1.0,
        on_restart=lambda event: restarted.release(),
    )
    sup.open()
    kill_at = {n * (k + 1) // (kills + 1) for k in range(kills)}
    warm = n // 10
    samples: dict[str, int] = {}
    max_log = 0
    got = 0

    errors: list[BaseException] = []

    def produce() -> None:
        try:
            put = sup.point_in.put
            for i, p in enumerate(itertools.islice(itertools.cycle(points), n)):
                put(p)
                if i in kill_at:
                    os.kill(procs[-1].pid or 0, signal.SIGKILL)
                    if not restarted.acquire(timeout=60):
                        raise RuntimeError("the supervisor did not restart the agent")
        except BaseException as exc:
            errors.append(exc)
        finally:
            sup.close()  # point_out ends once the last agent is closed

    producer = threading.Thread(target=produce, name="bench-producer", daemon=True)
    producer.start()
    t0 = time.perf_counter()
    peak = 0
    for _ in sup.point_out:
        got += 1
        if got == warm:
            samples["warm"] = peak = _rss()
        elif got > warm and got % 5000 == 0:
            peak = max(peak, _rss())
            max_log = max(max_log, sup.stats().log)
    producer.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    stats = sup.stats()
    return {
        "points": n,
        "outputs": got,
        "kills": kills,
        "restarts": stats.restarts,
        "replayed": stats.replayed,
        "seconds": elapsed,
        "rss_warm_mb": samples.get("warm", 0) / 2**20,
        "rss_peak_mb": peak / 2**20,
        "rss_end_mb": _rss() / 2**20,
        "max_log": max_log,
        "snapshot_every": snapshot_every,
    }


def _memory_main(n: int, kills: int) -> None:
    result = run_memory(n, kills)
    print(
        f"load {os.getloadavg()[0]:.2f}; {result['points']:,} points, {result['kills']} kills, "
        f"{result['restarts']} restarts, {result['replayed']:,} replayed, {result['outputs']:,} outputs "
        f"in {result['seconds']:.1f}s"
    )
    print(
        f"RSS after warm-up {result['rss_warm_mb']:.1f} MB, peak {result['rss_peak_mb']:.1f} MB, "
        f"end {result['rss_end_mb']:.1f} MB (growth {result['rss_end_mb'] - result['rss_warm_mb']:+.1f} MB); "
        f"largest replay log sampled {result['max_log']:,} items (snapshot_every {result['snapshot_every']:,})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7, help="turns of each configuration (default 7)")
    ap.add_argument("--points", type=int, default=200_000, help="points per turn (default 200000)")
    ap.add_argument("--memory", type=int, default=0, metavar="N", help="run the memory check over N points instead")
    ap.add_argument("--kills", type=int, default=5, help="agent kills during the memory run (default 5)")
    args = ap.parse_args(argv)
    if args.memory:
        _memory_main(args.memory, args.kills)
        return 0
    points = workload.make_points(2000)
    configs: dict[str, Callable[[], float]] = {
        "process": lambda: run_process(points, args.points),
        "supervised": lambda: run_supervised(points, args.points),
    }
    print(f"# load {os.getloadavg()[0]:.2f}; {args.rounds} rounds of {args.points:,} points, in turns")
    rates: dict[str, list[float]] = {k: [] for k in configs}
    ratios: list[float] = []
    for r in range(args.rounds):
        for name, fn in configs.items():
            rates[name].append(args.points / fn())
        ratios.append(rates["supervised"][-1] / rates["process"][-1])
        print(
            f"  round {r + 1}/{args.rounds}: "
            + "  ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items())
            + f"  ratio {ratios[-1]:.3f}",
            flush=True,
        )
    print(f"\n{'config':<12} {'median pts/s':>13} {'min':>11} {'max':>11}")
    for name, values in rates.items():
        print(f"{name:<12} {statistics.median(values):>13,.0f} {min(values):>11,.0f} {max(values):>11,.0f}")
    med = statistics.median(ratios)
    print(
        f"\nsupervised / process, median of per-round ratios: {med:.3f} (overhead {100 * (1 - med):.1f}%); "
        f"load {os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
