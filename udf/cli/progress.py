"""``run``'s progress on stderr: lines read, their rate, points sent and written, through tqdm.

Shown when stderr is a terminal and every input is a file (not with ``-q``);
``--progress`` / ``--no-progress`` force it. tqdm (the ``cli`` extra) is
imported only when progress is shown. The feed loop calls :meth:`Progress.update`
every :data:`UPDATE_EVERY` lines; the line is redrawn at most every
``interval`` seconds, so the per-point cost is a bit test.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

from ..extras import install_hint
from .exits import EXIT_USAGE, CLIError

__all__ = ["Progress", "UPDATE_EVERY", "is_regular_file", "input_size"]

#: The feed loop updates the progress every this many lines (a power of two: ``lines & (N - 1)``).
UPDATE_EVERY = 256


def is_regular_file(stream: Any) -> bool:
    """Whether ``stream`` reads a regular file (an input path, or stdin redirected from a file)."""
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):
        return False


def input_size(streams: Iterable[Any]) -> int | None:
    """The size in bytes of ``streams`` if all are regular files, else ``None``."""
    total = 0
    for stream in streams:
        if not is_regular_file(stream):
            return None
        total += os.fstat(stream.fileno()).st_size
    return total


#: The line's width on a terminal that reports none (a bare pseudo-terminal).
DEFAULT_WIDTH = 120


def _width(stream: Any) -> int:
    """The terminal's width; tqdm would cut the line to nothing on one that reports 0 (so would its row count)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    return columns if columns > 0 else DEFAULT_WIDTH


def _tqdm_class() -> Any:
    """tqdm without its monitor thread (a refresh thread we would have to stop), or ImportError."""
    from tqdm import tqdm

    class Bar(tqdm):  # type: ignore[misc]
        monitor_interval = 0

    return Bar


class Progress:
    """One progress line, kept up to date on ``stream`` while ``run`` feeds the UDF.

    ``total_bytes`` (the inputs' size, when known) adds how much of the input
    was read, from ``position()`` (bytes read so far). ``forced``: the user
    asked for it (``--progress``): without tqdm that is a usage error, not a
    silent no.
    """

    def __init__(
        self,
        stream: IO[str],
        enabled: bool,
        *,
        total_bytes: int | None = None,
        position: Callable[[], int | None] = lambda: None,
        forced: bool = False,
        interval: float = 0.5,
    ) -> None:
        self.enabled = enabled
        self._total = total_bytes
        self._position = position
        self._interval = interval
        self._next = time.monotonic() + interval
        self._bar: Any = None
        if not enabled:
            return
        try:
            bar_class = _tqdm_class()
        except ImportError:
            if forced:
                raise CLIError(f"--progress needs the tqdm package: {install_hint('cli')}", EXIT_USAGE) from None
            self.enabled = False
            return
        self._bar = bar_class(
            file=stream,
            ncols=_width(stream),
            nrows=24,  # tqdm hides a bar below the terminal's last row; ours is the only one
            desc="udf: 0 lines read",
            unit=" lines",
            unit_scale=True,
            smoothing=0,  # the rate since the start
            bar_format="{desc}, {rate_fmt}{postfix} [{elapsed}]",
            mininterval=0,  # we decide when to redraw: at most every interval
            leave=True,
        )

    def update(self, lines: int, sent: int, written: int) -> None:
        """Called every :data:`UPDATE_EVERY` lines by the feed loop; redraws at most every ``interval`` s."""
        if self._bar is None:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        self._draw(lines, sent, written, self._percent())

    def finish(self, lines: int, sent: int, written: int) -> None:
        """The final line (the input is all read, the UDF closed), then a line break."""
        if self._bar is None:
            return
        self._draw(lines, sent, written, 100 if self._total is not None else None, refresh=False)
        self._close()  # draws the last state

    def _percent(self) -> int | None:
        if not self._total:
            return None
        try:
            read = self._position()
        except (OSError, ValueError):
            return None
        return None if read is None else min(100, read * 100 // self._total)

    def _draw(self, lines: int, sent: int, written: int, percent: int | None, refresh: bool = True) -> None:
        of_input = "" if percent is None else f" ({percent}%)"
        bar = self._bar
        try:
            bar.set_description_str(f"udf: {lines:,} lines read{of_input}", refresh=False)
            bar.set_postfix_str(f"{sent:,} sent, {written:,} points written", refresh=False)
            bar.n = lines
            if refresh:
                bar.refresh()
        except (OSError, ValueError):  # stderr went away: no more progress
            self._close()

    def _close(self) -> None:
        bar, self._bar = self._bar, None
        try:
            bar.close()
        except (OSError, ValueError):
            pass
