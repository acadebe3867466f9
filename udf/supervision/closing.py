"""close()'s clock: its deadline, and the WARNING it logs while the close makes no progress.

The constants are read at each call, so a test can patch them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable

__all__ = ["CLOSE_WARN_AFTER", "CLOSE_WARN_EVERY", "KILL_GRACE", "CloseWatch"]

#: A close that has made no progress for this many seconds logs a WARNING naming what it waits for...
CLOSE_WARN_AFTER = 5.0
#: ...and again every this many seconds while it still makes none.
CLOSE_WARN_EVERY = 30.0
#: Once ``close(timeout)`` has killed what still ran: how long it waits for the supervisor to end.
KILL_GRACE = 2.0


class CloseWatch:
    """Runs a close's waits against its deadline (``timeout`` seconds, or none), warning while nothing moves.

    ``progress()`` returns anything that changes when the close gets further
    (items consumed, bytes exchanged with the agent, the step it is at);
    ``describe()`` says what it waits for, for the WARNING.
    """

    def __init__(
        self,
        timeout: float | None,
        logger: logging.Logger,
        progress: Callable[[], Hashable],
        describe: Callable[[], str],
    ) -> None:
        now = time.monotonic()
        self.timeout = timeout
        self._deadline = None if timeout is None else now + timeout
        self._logger = logger
        self._progress = progress
        self._describe = describe
        self._last = progress()
        self._moved_at = now  # when progress() last changed
        self._warned_at: float | None = None  # the last WARNING since then

    def wait(self, step: Callable[[float], bool]) -> bool:
        """Call ``step(seconds)`` until it returns True (then True), or until the deadline (then False).

        ``step`` waits at most ``seconds`` for what the close needs and says
        whether it happened; between calls the progress is checked.
        """
        while True:
            now = time.monotonic()
            wait = CLOSE_WARN_AFTER / 5
            if self._deadline is not None:
                if now >= self._deadline:
                    return False
                wait = min(wait, self._deadline - now)
            if step(wait):
                return True
            self._check_progress()

    def _check_progress(self) -> None:
        now = time.monotonic()
        current = self._progress()
        if current != self._last:
            self._last, self._moved_at, self._warned_at = current, now, None
            return
        if self._warned_at is None:
            if now - self._moved_at < CLOSE_WARN_AFTER:
                return
        elif now - self._warned_at < CLOSE_WARN_EVERY:
            return
        self._warned_at = now
        self._logger.warning(
            "udf supervisor: close() has made no progress for %.0fs: waiting for %s",
            now - self._moved_at,
            self._describe(),
        )
