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
TESTS=(tests/test_lifecycle.py tests/test_agent_lifecycle.py tests/test_server.py tests/test_server_cases.py
       tests/test_process.py tests/test_socket.py tests/test_faults.py tests/test_faults_process.py
       tests/test_channel.py tests/test_stats.py tests/test_examples_transports.py tests/test_supervisor.py
       tests/test_tls.py tests/test_fast_decode.py tests/test_one_cause.py tests/test_close.py tests/test_ending.py
       tests/test_supervisor_contract.py)
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
