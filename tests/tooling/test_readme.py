"""The README's usage example and quick-start commands stay true."""

from __future__ import annotations

import re
import subprocess
import sys

from ..helpers import ROOT

README = (ROOT / "README.md").read_text()


def test_usage_example_runs_and_prints_moving_averages() -> None:
    code = re.search(r"## Usage\n\n```python\n(.*?)```", README, re.S)
    assert code is not None
    out = subprocess.run(
        [sys.executable, "-c", code.group(1)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "wants=STREAM, provides=STREAM" in out
    assert [float(v) for v in re.findall(r"'avg': ([0-9.]+)", out)] == [1.0, 2.0, 3.0]


def test_ci_runs_the_readme_test_command() -> None:
    quick = README.split("## Quick start", 1)[1]
    blocks = re.findall(r"```(?:sh)?\n(.*?)\n```", quick, re.S)
    assert blocks[:2] == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
