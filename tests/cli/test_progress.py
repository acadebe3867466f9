"""udf.cli.progress: the progress line's text, its pacing, a missing tqdm (the pty test: cli/test_commands.py)."""

from __future__ import annotations

import io
import sys

import pytest

from udf.cli import CLIError
from udf.cli.progress import Progress, input_size, is_regular_file

from ..helpers import EXAMPLES

DATA = EXAMPLES / "data"


def lines_drawn(text: str) -> list[str]:
    return [line for line in text.replace("\r\n", "\n").split("\r") if line]


def test_the_line_says_lines_read_rate_sent_written_and_how_far() -> None:
    err = io.StringIO()
    read = [0]
    progress = Progress(err, True, total_bytes=1000, position=lambda: read[0], interval=0)
    read[0] = 250
    progress.update(256, 250, 7)
    read[0] = 1000
    progress.finish(1024, 1024, 1000)
    drawn = lines_drawn(err.getvalue())
    assert drawn[0].startswith("udf: 0 lines read, ")
    assert drawn[1].startswith("udf: 256 lines read (25%), ") and ", 250 sent, 7 points written [" in drawn[1]
    assert " lines/s, " in drawn[1]
    assert drawn[-1].startswith("udf: 1,024 lines read (100%), ") and drawn[-1].endswith("]\n")
    assert ", 1,024 sent, 1,000 points written [" in drawn[-1]


def test_redrawn_at_most_every_interval() -> None:
    err = io.StringIO()
    progress = Progress(err, True, interval=3600)
    for n in range(1, 100):
        progress.update(n * 256, n * 256, 0)
    assert len(lines_drawn(err.getvalue())) == 1, "only the first line: the interval has not passed"
    progress.finish(99 * 256, 99 * 256, 0)
    assert lines_drawn(err.getvalue())[-1].startswith("udf: 25,344 lines read, ")


def test_disabled_writes_nothing() -> None:
    err = io.StringIO()
    progress = Progress(err, False, interval=0)
    progress.update(256, 256, 0)
    progress.finish(256, 256, 0)
    assert err.getvalue() == ""


def test_without_tqdm_progress_is_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import now fails
    err = io.StringIO()
    assert not Progress(err, True).enabled
    with pytest.raises(
        CLIError, match=r"--progress needs the tqdm package: install the 'cli' extra: pip install '\.\[cli\]'"
    ):
        Progress(err, True, forced=True)
    assert err.getvalue() == ""


def test_inputs_that_are_files_and_their_size() -> None:
    with open(DATA / "cpu.lp", "rb") as a, open(DATA / "hosts.lp", "rb") as b:
        assert (
            is_regular_file(a)
            and input_size([a, b]) == (DATA / "cpu.lp").stat().st_size + (DATA / "hosts.lp").stat().st_size
        )
    assert not is_regular_file(io.BytesIO(b"m v=1 1\n"))
    assert input_size([io.BytesIO(b"")]) is None
