#!/usr/bin/env bash
# udf.flink (the 'flink' extra) in its own virtual environment, .venv-flink:
# PyFlink 2.3 (apache-flink) pins apache-beam <= 2.61 and with it protobuf < 6,
# which neither .venv nor .venv-beam has; it needs Java 11+ on PATH.
#   1. make .venv-flink with the project, its test tools and the 'flink' extra
#      (about 2 minutes with a warm pip cache, 950 MB);
#   2. run the Flink tests there: tests/adapters/test_flink.py on the local environment,
#      tests/adapters/test_flink_cluster.py on a standalone cluster (a JobManager and two
#      TaskManagers) the tests start and stop, tests/adapters/test_flink_extra.py;
#   3. run docs/flink.md's command blocks (tests/tooling/test_docs_commands.py with
#      UDF_FLINK_DOCS=1): the local example and the cluster recipe.
# About 6-12 minutes in all on a 2-core machine, depending on its load.
# Extra arguments go to pytest (step 2).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! java -version >/dev/null 2>&1; then
    echo "scripts/test-flink.sh: PyFlink needs Java 11 or later on PATH (e.g. apt-get install openjdk-17-jre-headless)" >&2
    exit 1
fi

echo "== udf.flink on PyFlink (.venv-flink)"
python3 -m venv .venv-flink
.venv-flink/bin/python -m pip install -q --disable-pip-version-check -e '.[flink,test,cli]'
# PyFlink must import here: otherwise the Flink tests would only skip.
.venv-flink/bin/python -c 'import udf.flink'

# PyFlink's own modules warn about their deprecated APIs on import: not ours to fix.
.venv-flink/bin/python -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning \
    tests/adapters/test_flink.py tests/adapters/test_flink_cluster.py tests/adapters/test_flink_extra.py tests/adapters/test_shards.py "$@"

echo "== docs/flink.md's commands"
UDF_FLINK_DOCS=1 .venv-flink/bin/python -m pytest -q -p no:cacheprovider -rs tests/tooling/test_docs_commands.py -k flink.md
