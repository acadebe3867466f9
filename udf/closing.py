"""close()'s watcher: patience with a working agent, escalation against a stuck one, and a word when stuck.

While a transport's ``close()`` waits for its agent to finish (the server's I/O
to end, then, for a process, its exit), a ``udf-close-watch`` thread:

* escalates against an agent that makes no progress for ``grace`` seconds (no
  bytes from it, no input taken, and our reader not waiting on a slow consumer,
  which is never the agent's fault): the transport's next step (``udf.Process``:
  SIGTERM, then SIGKILL, to its process group; ``udf.Socket``: closing the
  connection), again after as long without progress. Once the server has
  aborted, what the agent still writes is discarded, so it is no progress: an
  agent that keeps writing after an abort gets ``grace`` seconds to end (Go's
  Kapacitor kills the process on an abort);
* logs a WARNING naming what the close waits for (e.g. "point_out: 1,024 points
  not consumed") once the close has made no progress of any kind -- the
  consumer's included -- for :data:`WARN_AFTER` seconds, and again every
  :data:`WARN_EVERY` seconds while it makes none.

``close(timeout=...)`` itself is enforced by the ``close()`` callers, who raise a
:class:`~udf.errors.CloseTimeoutError` built by :func:`describe_wait`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .server import Server
from .stats import Stats

__all__ = ["CloseWatch", "Escalation", "Stall", "describe_wait", "WARN_AFTER", "WARN_EVERY"]

#: Seconds without progress after which a close() logs a WARNING naming what it waits for.
WARN_AFTER = 5.0
#: Seconds between the next WARNINGs, while the close still makes no progress.
WARN_EVERY = 30.0
#: At most this long between two looks at the close's progress (the consumer's pace wakes nobody).
SAMPLE_EVERY = 1.0


def describe_wait(server: Server, finished: bool, exit_wait: str) -> str:
    """What a close waits for, in a user's words: its consumer, its agent, or (``finished``) ``exit_wait``."""
    if finished:
        return exit_wait
    stats = server.stats()
    progress = server.progress
    unconsumed = _unconsumed(stats)
    if progress.delivering and unconsumed:
        return unconsumed
    if not progress.input_closed:
        return f"the agent to read its input ({stats.in_queue:,} items not yet written)"
    if unconsumed:
        return f"the agent to end its output ({unconsumed})"
    return "the agent to end its output"


def _unconsumed(stats: Stats) -> str:
    parts = []
    if stats.point_out_queue:
        parts.append(f"point_out: {stats.point_out_queue:,} points not consumed")
    if stats.batch_out_queue:
        parts.append(f"batch_out: {stats.batch_out_queue:,} batches not consumed")
    return "; ".join(parts)


class Escalation:
    """What close() had to do to an agent that stopped making progress: the steps, and why the first was needed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._steps: list[str] = []
        self._reason: str | None = None

    def record(self, step: str, reason: str) -> None:
        with self._lock:
            self._steps.append(step)
            if self._reason is None:
                self._reason = reason

    def taken(self) -> tuple[list[str], str | None]:
        """The steps taken so far, and the reason of the first."""
        with self._lock:
            return list(self._steps), self._reason


@dataclass(frozen=True)
class Stall:
    """Where a close is stuck, for the transport's words: I/O over, input closed, the server aborted."""

    io_over: bool
    input_closed: bool
    aborted: bool = False


#: One escalation step: ``escalate(step, grace, stall)``; returns False when no step is left.
Step = Callable[[int, float, Stall], bool]


class CloseWatch:
    """The ``udf-close-watch`` thread of one close (see the module docstring).

    ``finished``: the events that mark the agent's end, in order (the server's
    I/O is awaited first, then e.g. the process's exit); only the first counts
    the agent's I/O as progress. ``escalate(step, grace, stall)`` takes the next step.
    ``exit_wait`` words the wait once the I/O has ended.
    """

    def __init__(
        self,
        server: Server,
        finished: Sequence[threading.Event],
        grace: float,
        escalate: Step,
        exit_wait: str,
        logger: logging.Logger,
    ) -> None:
        self._server = server
        self._finished = list(finished)
        self._grace = grace
        self._escalate = escalate
        self._exit_wait = exit_wait
        self._logger = logger
        self._thread = threading.Thread(target=self._run, name="udf-close-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        """Wait until the agent finished (its events are set); escalation bounds it."""
        self._thread.join()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def _run(self) -> None:
        server, progress = self._server, self._server.progress
        began = time.monotonic()
        idle_since = began  # moved on by each escalation step
        step = 0
        escalating = True
        seen, last_change = self._fingerprint(), began
        next_warning = began + WARN_AFTER
        # First the server's I/O (its progress counts), then each of the transport's events.
        waits: list[tuple[Callable[[float], bool], bool]] = [(server.wait_io, True)]
        waits += [(event.wait, False) for event in self._finished]
        for phase, (wait, counts_io) in enumerate(waits):
            phase_began = time.monotonic()
            while not wait(0):
                now = time.monotonic()
                since = max(idle_since, phase_began)
                aborted = server.error is not None  # its output is discarded: no progress
                active = progress.active_at(now, since) if counts_io and not aborted else since
                escalate_at = active + self._grace if escalating else float("inf")
                fingerprint = self._fingerprint()
                if fingerprint != seen:
                    seen, last_change, next_warning = fingerprint, now, now + WARN_AFTER
                if now >= next_warning:
                    self._warn(now - last_change, phase > 0)
                    next_warning = now + WARN_EVERY
                if now >= escalate_at:
                    escalating = self._escalate(step, self._grace, Stall(phase > 0, progress.input_closed, aborted))
                    step += 1
                    idle_since = time.monotonic()
                    continue
                # Woken by the end awaited (the server's I/O, or the transport's event), else to look again.
                wait(max(0.001, min(escalate_at, next_warning, now + min(SAMPLE_EVERY, WARN_AFTER / 4)) - now))

    def _fingerprint(self) -> tuple[object, ...]:
        """Everything that moves while a close makes progress, the consumer's pace included."""
        stats = self._server.stats()
        done = tuple(event.is_set() for event in self._finished)
        return (
            stats.bytes_in, stats.bytes_out, stats.points_out, stats.batches_out, stats.dropped,
            stats.in_queue, stats.point_out_queue, stats.batch_out_queue, done,
        )  # fmt: skip

    def _warn(self, stalled: float, io_over: bool) -> None:
        what = describe_wait(self._server, io_over, self._exit_wait)
        self._logger.warning(
            "close() has made no progress for %.1fs: waiting for %s "
            "(drain point_out/batch_out, or close(discard_output=True), or close(timeout=...))",
            stalled,
            what,
        )
