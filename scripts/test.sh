#!/usr/bin/env bash
# Install the project and its test tools into a fresh virtual environment
# (.venv) and run the whole test suite. Works on a fresh machine with python3.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
"$VENV/bin/python" -m pytest -q "$@"
