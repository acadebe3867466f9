#!/usr/bin/env bash
# Loop the concurrency-sensitive tests and report failures and hangs.
#   bash scripts/stress.sh [RUNS] [PARALLEL]
# RUNS loops (default 20) in each of PARALLEL concurrent loops (default 2, to
# load both cores). A hang is a test stopped by its per-test timeout (60 s,
# pytest-timeout, which prints every thread's stack) or a run stopped by the
# outer limit. Needs the .venv that scripts/test.sh makes (or UDF_PYTHON, the
# interpreter of another environment with the test extra: nox -s stress sets
# it). Exits 1 on any failure or hang.
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
PARALLEL=${2:-2}
PYTHON=${UDF_PYTHON:-.venv/bin/python}
TESTS=(tests/core/test_channel.py tests/codec/test_fast_decode.py
       tests/server/test_go_parity.py tests/server/test_conversations.py tests/server/test_malformed_streams.py
       tests/server/test_ending.py tests/server/test_stats.py
       tests/interface/test_no_wedge.py tests/interface/test_one_cause.py tests/interface/test_close.py
       tests/transports/test_process.py tests/transports/test_process_faults.py tests/transports/test_socket.py
       tests/transports/test_tls.py tests/agent/test_ending.py tests/examples/test_transports.py
       tests/supervisor/test_recovery.py tests/supervisor/test_contract.py)
out=$(mktemp -d)

loop() {  # loop number
    for run in $(seq 1 "$RUNS"); do
        log="$out/loop$1-run$run.log"
        timeout 900 "$PYTHON" -m pytest -q -p no:cacheprovider -x "${TESTS[@]}" >"$log" 2>&1
        status=$?
        hangs=$(grep -c "Timeout (>60" "$log")
        [ "$status" = 124 ] && hangs=$((hangs + 1))
        echo "loop $1 run $run: exit $status, hangs $hangs, $(tail -n 1 "$log")"
    done
}

started=$(date +%s)
for i in $(seq 1 "$PARALLEL"); do loop "$i" & done
wait
runs=$((RUNS * PARALLEL))
failed=$(grep -L -E "^[0-9]+ passed(, [0-9]+ skipped)? in " "$out"/*.log | wc -l)
hangs=$(cat "$out"/*.log | grep -c "Timeout (>60")
echo "== $runs runs of ${#TESTS[@]} test files in $(( $(date +%s) - started )) s: $failed failed, $hangs hangs (logs in $out)"
[ "$failed" = 0 ] && [ "$hangs" = 0 ]
