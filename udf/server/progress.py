"""What the agent is doing, as the server's threads see it: the facts behind keepalives and patience.

Each fact has one writer: the reader stamps ``last_seen`` on every read and
marks ``delivering`` while it waits on a slow consumer (not the agent's fault);
the writer stamps ``last_write`` after every write and sets ``input_closed`` when
it has closed the agent's input. Readers of the facts (the keepalive, the end
of the conversation, ``close()``'s watcher) only read them: no lock, plain
attributes (one store each, atomic under the GIL). No state is decided here.
"""

from __future__ import annotations

import threading
import time

__all__ = ["Progress"]


class Progress:
    """The agent's latest signs of life, stamped by the reader and the writer."""

    __slots__ = ("last_seen", "last_write", "delivering", "input_closed")

    def __init__(self) -> None:
        #: When the agent last sent bytes (reset by ``start()``).
        self.last_seen = time.monotonic()
        #: When a write to the agent last completed, or its input was closed.
        self.last_write = 0.0
        #: Whether the reader is blocked handing output to a slow consumer.
        self.delivering = False
        #: Whether the writer has ended and closed the agent's input.
        self.input_closed = False

    def heard_at(self, now: float, since: float) -> float:
        """When the agent last sent bytes, not before ``since``; ``now`` while we wait on our consumer (liveness)."""
        if self.delivering:
            return now
        return max(since, self.last_seen)

    def active_at(self, now: float, since: float) -> float:
        """When the agent last made progress, not before ``since``; ``now`` while we wait on our consumer."""
        if self.delivering:
            return now
        return max(since, self.last_seen, self.last_write)

    def wait_while_busy(self, event: threading.Event, idle: float, timeout: float | None = None) -> bool:
        """Wait for ``event`` while the agent makes progress: False once idle for ``idle`` s (or at ``timeout``)."""
        begin = time.monotonic()
        deadline = None if timeout is None else begin + timeout
        while True:
            now = time.monotonic()
            wake = self.active_at(now, begin) + idle
            if deadline is not None:
                wake = min(wake, deadline)
            if wake <= now:
                return event.is_set()
            # Set by whoever owns ``event`` (the end of the server's I/O).
            if event.wait(wake - now):
                return True
