#!/usr/bin/env bash
# The whole test suite, from a fresh machine with python3:
#   1. install the project and its test tools into .venv (newest protobuf) and
#      run pytest there (including the fuzz loop and the benchmark's --quick
#      run), then mypy --strict on udf/;
#   2. the 'beam' extra (udf.beam): Apache Beam needs protobuf < 7 (and not
#      4.22-4.24), so its tests run in their own virtual environment,
#      .venv-beam (about 30 s to install with a warm pip cache, 15 s to test);
#      the codec's tests run there too, on that protobuf 6.x (both backends);
#   3. the 'flink' extra (udf.flink): scripts/test-flink.sh makes .venv-flink
#      (PyFlink pins apache-beam <= 2.61) and runs the Flink tests there, on the
#      local environment and on a standalone cluster they start, then
#      docs/flink.md's commands (needs Java 11+; 6-12 minutes);
#   4. prove both ends of the supported protobuf range: run the suite again on
#      the newest protobuf's pure-Python backend, and in a fresh virtual
#      environment with the lowest supported protobuf on both backends.
# Set UDF_SKIP_BEAM=1 to skip step 2, UDF_SKIP_FLINK=1 to skip step 3,
# UDF_SKIP_PROTOBUF_RANGE=1 to skip step 4.
# Extra arguments go to pytest (steps 1 and 4).
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOBUF_LOWEST=4.22.0

pip_install() {  # venv, then pip arguments
    "$1/bin/python" -m pip install -q --disable-pip-version-check "${@:2}"
}

python3 -m venv .venv
pip_install .venv -e '.[test]'
.venv/bin/python -m pytest -q "$@"
echo "== mypy (strict) on udf/"
.venv/bin/python -m mypy

if [ "${UDF_SKIP_BEAM:-}" != "1" ]; then
    echo "== udf.beam on Apache Beam's in-process runner (.venv-beam)"
    python3 -m venv .venv-beam
    pip_install .venv-beam -e '.[beam,test]'
    # Beam must import here: otherwise tests/adapters/test_beam.py would only skip.
    .venv-beam/bin/python -c 'import udf.beam'
    # Skips are per test and test_beam_extra.py always runs, so pytest never
    # ends with status 5 ("no tests collected") here, nor in step 1.
    .venv-beam/bin/python -m pytest -q -p no:cacheprovider tests/adapters/test_beam.py tests/adapters/test_beam_extra.py
    # Beam pins protobuf 6.x: the middle of the supported range, for the codec.
    echo "== the codec on Beam's protobuf $(.venv-beam/bin/python -c 'import google.protobuf as p; print(p.__version__)'), upb and pure-Python backends"
    for backend in upb python; do
        PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=$backend .venv-beam/bin/python -m pytest -q -p no:cacheprovider \
            -W ignore::DeprecationWarning tests/codec/test_fast_decode.py tests/codec/test_fast_paths.py tests/codec/test_convert.py \
            tests/codec/test_wire.py tests/codec/test_fuzz.py tests/codec/test_protobuf_agreement.py
    done
fi

if [ "${UDF_SKIP_FLINK:-}" != "1" ]; then
    bash scripts/test-flink.sh
fi

if [ "${UDF_SKIP_PROTOBUF_RANGE:-}" != "1" ]; then
    # The run above was the newest protobuf on its default (upb) backend.
    echo "== newest protobuf, pure-Python backend"
    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
    venv=".venv-protobuf-$PROTOBUF_LOWEST"
    python3 -m venv "$venv"
    pip_install "$venv" -e '.[test]' "protobuf==$PROTOBUF_LOWEST"
    for backend in upb python; do
        echo "== protobuf $PROTOBUF_LOWEST, $backend backend"
        PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=$backend "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
    done
fi
echo "== scripts/test.sh: every step passed in ${SECONDS} s"
