#!/usr/bin/env bash
# The main job on bundled data: install the project (with its CLI) into .venv,
# then run the bundled outliers UDF as a child process over the bundled sample
# data, printing the outlier points as line protocol.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[cli]'
set -x
.venv/bin/python -m udf run --batch -o field=usage_user examples/data/cpu.lp -- .venv/bin/python examples/outliers.py
