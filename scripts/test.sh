#!/usr/bin/env bash
# The README's test command: the whole suite, once, on this machine's python3
# and the newest protobuf (upb backend), in parallel (pytest-xdist, -n auto).
# It makes .venv (or reuses it), installs the project with its test tools
# there, and runs pytest. Extra arguments go to pytest, e.g.
#   bash scripts/test.sh -m "not slow"     # the quick loop
#   bash scripts/test.sh -x tests/cli      # one area, stop at the first failure
# The rest of the matrix (the protobuf range, Beam, Flink, other Pythons, a
# stress smoke, lint and mypy) is nox's: docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' --upgrade protobuf
.venv/bin/python -m pytest -n auto "$@"
