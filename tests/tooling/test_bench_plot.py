"""bench/plot.py without matplotlib says which extra to install, with no traceback."""

from __future__ import annotations

import subprocess
import sys

from ..helpers import ROOT, TIMEOUT

# matplotlib made unimportable whether or not it is installed here.
WITHOUT_MATPLOTLIB = (
    "import runpy, sys\n"
    "sys.modules['matplotlib'] = None\n"
    "sys.argv = ['bench/plot.py']\n"
    "runpy.run_path('bench/plot.py', run_name='__main__')\n"
)


def test_plot_without_matplotlib_names_the_extra() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_MATPLOTLIB], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 2
    assert "matplotlib is not installed" in done.stderr and "pip install -e '.[bench]'" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
