#!/usr/bin/env bash
# A/B two revisions of the library in alternating turns (A B A B ...): the stream,
# batch, series and supervised rows, each turn printed, then the medians and their ratio.
#   bench/ab.sh REV_A REV_B [TURNS] [POINTS]
# ROWS=stream,batch picks the rows.
# Each revision is checked out in a temporary git worktree; the benchmark runs
# with that worktree first on sys.path, in the current Python (protobuf installed).
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1 b=$2 turns=${3:-6} points=${4:-200000} rows=${ROWS:-stream,batch,series,supervised}
py=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'git worktree remove --force "$tmp/A" >/dev/null 2>&1; git worktree remove --force "$tmp/B" >/dev/null 2>&1; rm -rf "$tmp"' EXIT
git worktree add -q "$tmp/A" "$a"
git worktree add -q "$tmp/B" "$b"
for i in $(seq "$turns"); do
    for t in A B; do
        (cd "$tmp/$t" && PYTHONPATH="$tmp/$t" "$py" bench/run.py --only "$rows" --rounds 1 --points "$points") |
            awk -v t="$t" '/^(stream|batch|series|supervised) +[0-9]/{gsub(",", "", $2); print t, $1, $2}'
    done
done | tee "$tmp/turns"
"$py" - "$tmp/turns" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for config in sorted({c for _, c, _ in rows}):
    med = {t: statistics.median(float(v) for tt, c, v in rows if tt == t and c == config) for t in "AB"}
    print(f"{config}: A median {med['A']:,.0f}  B median {med['B']:,.0f}  B/A {med['B'] / med['A']:.3f}")
PY
