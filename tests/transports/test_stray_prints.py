"""A UDF that prints to its stdout is told so at once, through a real child process.

The agent writes "hello" to its stdout (a stray ``print`` in a UDF whose stdout
is the protocol), then behaves: it runs ``examples/mirror.py``. The host's frame
decoder sees text where the first frame should start and says so, instead of
failing after a keepalive timeout with a corrupt frame.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import udf

from ..helpers import ROOT, TIMEOUT

MIRROR = ROOT / "examples" / "mirror.py"
PRINTS_HELLO = (
    "import os, runpy, sys\n"
    "os.write(1, b'hello\\n')\n"
    f"sys.argv = [{str(MIRROR)!r}]\n"
    f"runpy.run_path({str(MIRROR)!r}, run_name='__main__')\n"
)
MESSAGE = "the agent wrote text to its stdout (a print?): 'hello'"


def test_process_says_the_agent_printed_text() -> None:
    p = udf.Process(sys.executable, ["-c", PRINTS_HELLO], timeout=TIMEOUT)
    with pytest.raises(udf.ProtocolError) as info:
        with p:
            p.info()
    assert str(info.value) == MESSAGE
    assert p.stats().error == MESSAGE
    assert "keepalive" not in str(info.value)


def test_cli_says_the_agent_printed_text() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "udf", "info", "--", sys.executable, "-c", PRINTS_HELLO],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
    )
    assert done.returncode == 1, done.stderr
    assert MESSAGE in done.stderr
