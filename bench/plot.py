"""Plot a benchmark run: points/s by configuration, as a PNG.

    .venv/bin/python bench/run.py --json docs/performance.json
    .venv/bin/python bench/plot.py docs/performance.json docs/performance.png

Needs matplotlib, the ``bench`` extra (``.venv/bin/python -m pip install -e '.[bench]'``;
not a dependency of the library). Without it: a message saying so, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(os.path.dirname(HERE), "docs")

#: Bars in this order, with these labels; the echo agent alone is far off this
#: scale and is given in the caption instead.
LABELS = {
    "go-stream": "Go original\nstream points",
    "stream": "Python Server\nstream points",
    "series": "Python Server\n2000 series",
    "go-batch": "Go original\nbatches of 100",
    "batch": "Python Server\nbatches of 100",
    "codec": "codec ceiling\n(stream points)",
    "codec-batch": "codec ceiling\n(batches of 100)",
}
COLORS = {
    "go-stream": "#e0a43a",
    "go-batch": "#e0a43a",
    "stream": "#2f6fb0",
    "series": "#2f6fb0",
    "batch": "#2f6fb0",
    "codec": "#9aa5b1",
    "codec-batch": "#9aa5b1",
}
#: Each Python row and the Go row it is compared with (bench/run.py's GO_PAIRS).
GO_OF = {"stream": "go-stream", "batch": "go-batch", "series": "go-stream"}


def plot(results: dict[str, Any], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {row["config"]: row for row in results["rows"]}
    names: list[str] = [name for name in LABELS if name in rows]
    medians = [rows[n]["median"] for n in names]
    lower = [rows[n]["median"] - rows[n]["min"] for n in names]
    upper = [rows[n]["max"] - rows[n]["median"] for n in names]

    fig, ax = plt.subplots(figsize=(9, 5.2), dpi=110)
    xs = range(len(names))
    ax.bar(xs, medians, color=[COLORS[n] for n in names], yerr=[lower, upper], capsize=4, width=0.62)
    for x, n in zip(xs, names, strict=True):
        row = rows[n]
        note = f"{row['median'] / 1000:,.0f}k"
        ratios = results.get("go", {}).get("ratios", {}).get(n)
        if ratios:
            note += f"\n{statistics.median(ratios):.2f}x Go"
        ax.text(x, row["max"] * 1.02, note, ha="center", va="bottom", fontsize=9)

    ax.set_xticks(list(xs))
    ax.set_xticklabels([LABELS[n] for n in names], fontsize=9)
    ax.set_ylabel("points per second (median of turns; bars: min-max)")
    ax.set_ylim(0, max(rows[n]["max"] for n in names) * 1.25)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:,.0f}k"))
    env = results.get("env", {})
    title = (
        f"udf.Server and Kapacitor's Go udf.Server, side by side: {results.get('frame_bytes', '?')}-byte point "
        f"frames, {results.get('rounds', '?')} turns"
    )
    ax.set_title(title, fontsize=10)
    caption = f"Python {env.get('python', '?')}, protobuf {env.get('protobuf', '?')}, {env.get('cpus', '?')} CPUs."
    if "agent" in rows:
        caption += f" The echo agent alone (no Server): {rows['agent']['median'] / 1e6:.1f}M points/s."
    load = env.get("loadavg_before")
    if load:
        caption += f" Load average {load[0]:.2f} before the run. 'x Go': median of the per-round ratios."
    fig.text(0.01, 0.01, textwrap.fill(caption, 150), fontsize=8, color="#444444")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(out)
    plt.close(fig)


def markdown(results: dict[str, Any]) -> str:
    """The results as the Markdown tables of docs/performance.md."""
    lines = ["| configuration | median points/s | min | max | x ceiling |", "|---|---:|---:|---:|---:|"]
    turns = {row["config"]: row["turns"] for row in results["rows"]}
    for row in results["rows"]:
        ratio = f"{row['ratio_to_ceiling']:.2f} ({row['ceiling']})" if row.get("ratio_to_ceiling") else "-"
        lines.append(f"| {row['config']} | {row['median']:,.0f} | {row['min']:,.0f} | {row['max']:,.0f} | {ratio} |")
    ratios = results.get("go", {}).get("ratios", {})
    if ratios:
        pairs = [(py, GO_OF[py]) for py in GO_OF if py in ratios]
        lines += [
            "",
            "| round | load | " + " | ".join(f"{py} / {go}" for py, go in pairs) + " |",
            "|---:|---:|" + "---:|" * len(pairs),
        ]
        loads = results.get("round_loadavg", [])
        for r in range(len(next(iter(ratios.values())))):
            cells = [f"{turns[py][r]:,.0f} / {turns[go][r]:,.0f} = **{ratios[py][r]:.2f}x**" for py, go in pairs]
            load = f"{loads[r]:.2f}" if r < len(loads) else "?"
            lines.append(f"| {r + 1} | {load} | " + " | ".join(cells) + " |")
        lines.append(
            "| median | | " + " | ".join(f"**{statistics.median(ratios[py]):.2f}x**" for py, _ in pairs) + " |"
        )
    memory, latency = results.get("memory"), results.get("latency")
    if memory:
        lines += [
            "",
            f"RSS growth over {memory['points']:,} points through one Server: stream "
            f"{memory['stream_rss_growth_mb']:+.1f} MB (peak {memory['stream_rss_peak_growth_mb']:+.1f} MB), "
            f"batches {memory['batch_rss_growth_mb']:+.1f} MB (peak {memory['batch_rss_peak_growth_mb']:+.1f} MB).",
        ]
    if latency:
        lines += [
            "",
            f"Idle round trip, one point at a time ({latency['samples']} points, 2 ms apart): "
            f"p50 {latency['p50_us']:.0f} us, p90 {latency['p90_us']:.0f} us, p99 {latency['p99_us']:.0f} us, "
            f"max {latency['max_us']:.0f} us.",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "results", nargs="?", default=os.path.join(DOCS, "performance.json"), help="bench/run.py --json output"
    )
    ap.add_argument("png", nargs="?", default=os.path.join(DOCS, "performance.png"), help="where to write the plot")
    ap.add_argument("--markdown", action="store_true", help="also print the results as Markdown tables")
    args = ap.parse_args(argv)
    try:
        import matplotlib  # noqa: F401  (checked first: nothing is half done without it)
    except ImportError:
        print(
            "plot.py: error: matplotlib is not installed; install the bench extra: "
            "pip install -e '.[bench]' (from the checkout, with the venv's pip)",
            file=sys.stderr,
        )
        return 2
    with open(args.results) as f:
        results = json.load(f)
    if args.markdown:
        print(markdown(results))
    plot(results, args.png)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
