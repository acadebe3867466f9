"""Instructions per point of the host process for bench/run.py's rows, counted by valgrind: an A/B load cannot blur.

Wall-clock turns on a shared 2-core machine swing by up to 2x; callgrind counts
the instructions this process executes (its threads; not the echo agent, a
child valgrind does not follow), which repeat within a fraction of a percent
whatever else runs. Each row is run twice under callgrind, with SMALL and
LARGE points; the difference divided by LARGE - SMALL is the steady cost per
point (start-up, the agent's start and the warm-up cancel out). The cyclic GC
runs as in the real rows.

    python bench/instructions.py                          # this tree
    python bench/instructions.py --tree A=/path/a --tree B=/path/b   # trees side by side (PYTHONPATH)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = ("stream", "batch", "series", "supervised")


def _run_row(row: str, n: int) -> None:
    """Run one row of bench/run.py with ``n`` points (in the process valgrind counts)."""
    sys.path.insert(0, HERE)
    import run  # noqa: PLC0415 (the tree on PYTHONPATH decides which udf it imports)
    import supervised
    import workload

    if row == "stream":
        run.run_stream(workload.make_anchor_points(run.POOL), n)
    elif row == "batch":
        run.run_batch(workload.make_anchor_batches(run.POOL // run.BATCH_SIZE, run.BATCH_SIZE), n)
    elif row == "series":
        run.run_stream(workload.make_series_points(2 * run.SERIES, run.SERIES), n)
    elif row == "supervised":
        supervised.run_supervised(workload.make_anchor_points(run.POOL), n)
    else:
        raise SystemExit(f"unknown row {row!r}")


def count(tree: str, row: str, n: int) -> int:
    """Instructions of one run of ``row`` with ``n`` points, with ``tree`` first on sys.path."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": tree}
    script = os.path.join(tree, "bench", "instructions.py")
    if not os.path.exists(script):
        script = os.path.abspath(__file__)
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         script, "--run", row, str(n)],
        env=env, capture_output=True, text=True, check=True, timeout=3600,
    )  # fmt: skip
    match = re.search(r"Collected : (\d+)", out.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count from valgrind:\n{out.stderr[-2000:]}")
    return int(match.group(1))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH", help="a tree to measure (repeatable)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows (default {','.join(ROWS)})")
    ap.add_argument("--small", type=int, default=5_000, help="points of the short run (default 5000)")
    ap.add_argument("--large", type=int, default=25_000, help="points of the long run (default 25000)")
    ap.add_argument("--run", nargs=2, metavar=("ROW", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run:
        _run_row(args.run[0], int(args.run[1]))
        return 0
    trees: list[tuple[str, str]] = [tuple(t.split("=", 1)) for t in args.tree] or [("this", os.path.dirname(HERE))]  # type: ignore[misc]
    rows = args.rows.split(",")
    per_point: dict[tuple[str, str], float] = {}
    for row in rows:
        for name, tree in trees:
            small, large = count(tree, row, args.small), count(tree, row, args.large)
            per_point[(name, row)] = (large - small) / (args.large - args.small)
            print(
                f"# {name} {row}: {small:,} / {large:,} instructions -> {per_point[(name, row)]:,.0f} per point",
                flush=True,
            )
    print()
    print("| row | " + " | ".join(f"{name} instructions/point" for name, _ in trees)
          + (" | B/A" if len(trees) == 2 else "") + " |")  # fmt: skip
    print("|---" * (len(trees) + 1 + (len(trees) == 2)) + "|")
    for row in rows:
        cells = [f"{per_point[(name, row)]:,.0f}" for name, _ in trees]
        if len(trees) == 2:
            cells.append(f"{per_point[(trees[1][0], row)] / per_point[(trees[0][0], row)]:.3f}")
        print(f"| {row} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
