"""The optional 'flink' extra seen from the main environment, and docs/flink.md's cluster recipe.

These run everywhere (tests/adapters/test_flink.py and tests/adapters/test_flink_cluster.py need
PyFlink and run in .venv-flink).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

from ..helpers import ROOT, TIMEOUT
from .flink_cluster import config_yaml

FLINK_MD = ROOT / "docs" / "flink.md"


def test_import_udf_does_not_import_pyflink() -> None:
    code = (
        "import sys, udf, udf.agent, udf.cli, udf.shards; "
        "print(sorted(m for m in sys.modules if m.startswith(('pyflink', 'py4j', 'apache_beam'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(importlib.util.find_spec("pyflink") is not None, reason="PyFlink is installed here")
def test_udf_flink_without_pyflink_says_which_extra_to_install() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import udf.flink"], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT
    )
    assert done.returncode == 1
    assert "ImportError: udf.flink needs PyFlink: pip install 'kapacitor-udf[flink]' (and Java 11+)" in done.stderr


def cluster_block() -> str:
    blocks = re.findall(r"<!-- flink: [^\n]*-->\n```sh\n(.*?)^```$", FLINK_MD.read_text(), re.S | re.M)
    found = [b for b in blocks if "jobmanager.sh start" in b]
    assert len(found) == 1, "docs/flink.md has one cluster block"
    return str(found[0])


def test_the_docs_cluster_configuration_is_the_tests_own() -> None:
    """docs/flink.md's config.yaml is tests/adapters/flink_cluster.py's, but for the ports and paths tests choose."""
    heredoc = re.search(r"cat <<EOF\n(.*?)^EOF$", cluster_block(), re.S | re.M)
    assert heredoc is not None
    assert heredoc.group(1) == config_yaml("$FLINK_WORK", "$PWD/.venv-flink/bin/python", slots=2)


def test_the_docs_cluster_commands_are_the_tests_own() -> None:
    """The docs start, submit and stop as tests/adapters/flink_cluster.py and test_flink_cluster.py do."""
    lines = [line.strip() for line in cluster_block().splitlines()]
    commands = [re.sub(r'^"\$FLINK_HOME"/bin/', "", line) for line in lines if line.startswith('"$FLINK_HOME"/bin/')]
    assert commands == [
        "jobmanager.sh start",
        "taskmanager.sh start",
        "taskmanager.sh start",
        'flink run -py examples/flink_moving_avg.py --output "$FLINK_WORK/avg"',
    ]
    stop = 'trap \'"$FLINK_HOME"/bin/taskmanager.sh stop-all; "$FLINK_HOME"/bin/jobmanager.sh stop\' EXIT'
    assert stop in lines
