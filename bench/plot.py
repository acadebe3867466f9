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
import sys
import textwrap
from typing import Any, Dict, List, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(os.path.dirname(HERE), "docs")

#: Bars in this order, with these labels; the echo agent alone is far off this
#: scale and is given in the caption instead.
LABELS = {
    "codec": "codec ceiling\n(stream points)",
    "codec-batch": "codec ceiling\n(batches of 100)",
    "tricks": "issue's tricks loop\n(reference)",
    "stream": "Server round trip\nstream points",
    "batch": "Server round trip\nbatches of 100",
}
COLORS = {"codec": "#9aa5b1", "codec-batch": "#9aa5b1", "tricks": "#d8c29d", "stream": "#2f6fb0", "batch": "#2f6fb0"}


def plot(results: Dict[str, Any], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {row["config"]: row for row in results["rows"]}
    names: List[str] = [name for name in LABELS if name in rows]
    medians = [rows[n]["median"] for n in names]
    lower = [rows[n]["median"] - rows[n]["min"] for n in names]
    upper = [rows[n]["max"] - rows[n]["median"] for n in names]

    fig, ax = plt.subplots(figsize=(9, 5.2), dpi=110)
    xs = range(len(names))
    ax.bar(xs, medians, color=[COLORS[n] for n in names], yerr=[lower, upper], capsize=4, width=0.62)
    for x, n in zip(xs, names):
        row = rows[n]
        note = f"{row['median'] / 1000:,.0f}k"
        if n in ("stream", "batch") and row.get("ratio_to_ceiling"):
            note += f"\n{row['ratio_to_ceiling']:.2f}x ceiling"
        ax.text(x, row["max"] * 1.02, note, ha="center", va="bottom", fontsize=9)

    calibration = results.get("calibration")
    if calibration:
        for key, label, name in (("go_stream_here", "Go original", "stream"), ("go_batch_here", "Go original", "batch")):
            if name in names:
                x = names.index(name)
                y = calibration[key]
                ax.hlines(y, x - 0.31, x + 0.31, colors="#f4d03f", linestyles="dashed", linewidth=2)
                ax.text(x, y * 1.03, f"{label}\n{y / 1000:,.0f}k", color="white", fontsize=8,
                        ha="center", va="bottom")

    ax.set_xticks(list(xs))
    ax.set_xticklabels([LABELS[n] for n in names], fontsize=9)
    ax.set_ylabel("points per second (median of turns; bars: min-max)")
    ax.set_ylim(0, max(rows[n]["max"] for n in names) * 1.25)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:,.0f}k"))
    env = results.get("env", {})
    title = (f"udf.Server vs the single-thread codec ceiling: {results.get('frame_bytes', '?')}-byte point frames, "
             f"{results.get('rounds', '?')} turns")
    ax.set_title(title, fontsize=10)
    caption = f"Python {env.get('python', '?')}, protobuf {env.get('protobuf', '?')}, {env.get('cpus', '?')} CPUs."
    if "agent" in rows:
        caption += f" The echo agent alone (no Server): {rows['agent']['median'] / 1e6:.1f}M points/s."
    if calibration:
        caption += (f" Dashed: Kapacitor v1.3.0-rc4's Go Server, the issue's figures scaled by this"
                    f" machine's speed (x{calibration['scale']:.2f}).")
    fig.text(0.01, 0.01, textwrap.fill(caption, 150), fontsize=8, color="#444444")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(out)
    plt.close(fig)


def markdown(results: Dict[str, Any]) -> str:
    """The results as the Markdown tables of docs/performance.md."""
    lines = ["| configuration | median points/s | min | max | x ceiling |", "|---|---:|---:|---:|---:|"]
    for row in results["rows"]:
        ratio = f"{row['ratio_to_ceiling']:.2f} ({row['ceiling']})" if row.get("ratio_to_ceiling") else "-"
        lines.append(f"| {row['config']} | {row['median']:,.0f} | {row['min']:,.0f} | {row['max']:,.0f} | {ratio} |")
    memory, latency = results.get("memory"), results.get("latency")
    if memory:
        lines += ["", f"RSS growth over {memory['points']:,} points through one Server: stream "
                  f"{memory['stream_rss_growth_mb']:+.1f} MB (peak {memory['stream_rss_peak_growth_mb']:+.1f} MB), "
                  f"batches {memory['batch_rss_growth_mb']:+.1f} MB (peak {memory['batch_rss_peak_growth_mb']:+.1f} MB)."]
    if latency:
        lines += ["", f"Idle round trip, one point at a time ({latency['samples']} points, 2 ms apart): "
                  f"p50 {latency['p50_us']:.0f} us, p90 {latency['p90_us']:.0f} us, p99 {latency['p99_us']:.0f} us, "
                  f"max {latency['max_us']:.0f} us."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", default=os.path.join(DOCS, "performance.json"), help="bench/run.py --json output")
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
