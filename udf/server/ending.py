"""How a conversation ends: pieces recorded at once by whoever sees them, and one decision.

The agent's end is seen in pieces, by different threads, in any order: the
writer's write fails (the agent stopped reading), the reader meets EOF (maybe
inside a frame or a batch), and the owner learns why (``udf.Process``: the
child's exit status, given with :meth:`udf.Server.explain_end`). Each piece is
recorded at once, without waiting for the others, and :func:`decide` turns them
into one outcome. Until it is decided nothing is published -- ``put()`` blocks
as with a slow agent, request calls wait, ``error`` stays ``None`` -- so that
every caller then sees the same error (the first-error rule applies to what is
published, and only decided errors are):

============================================  ==========================================
pieces                                        outcome
============================================  ==========================================
a fatal cause (a child that died) and any     abort with the cause, once the output ended
failure, or while the server runs             (while stopping, a death that broke nothing
                                              is its owner's to report)
a cause, and a write failed or input was      abort with the cause ("exit status 0": the
still queued                                  agent ended while input was being sent)
no cause (none expected, or none in time)     abort with the first failure (a write or
                                              read error, EOF inside a frame or a batch)
a non-fatal cause and only an output failure  abort with the failure (EOF inside a frame
                                              is the agent's doing, not its exit's)
the output ended with input still queued or   wait for the writer: its failure is the
being written, and no cause                   cause (an agent gone while we were sending)
the output ended, nothing failed              a clean end: the channels close, requests
                                              raise ``AgentClosedError``
============================================  ==========================================

Waiting for a missing piece is bounded, and done by a ``udf-settle`` thread,
never by the I/O threads: the output must end within :data:`OUTPUT_GRACE` seconds
of the agent's last progress (a grandchild may hold the pipe), and the cause
must come within ``cause_grace`` seconds of that (an owner that expects none
passes 0). :func:`decide` is pure; :class:`Ending` holds the pieces under the
server's lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..channel import Channel
from ..errors import AgentClosedError
from ..lifecycle import Lifecycle
from .progress import Progress
from .requests import PendingRequests
from .state import ServerEvent, ServerState

__all__ = ["Ending", "EndPieces", "decide", "OUTPUT_GRACE", "NOTHING", "WAIT", "CLEAN", "ABORT"]

#: How long, after the agent's last progress, a failure or a fatal cause waits for
#: the agent's output to end, so that what it wrote before its end is delivered.
OUTPUT_GRACE = 5.0

#: The outcomes of :func:`decide`.
NOTHING = "nothing"  # nothing to decide: the conversation goes on
WAIT = "wait"  # a piece is missing: wait for it (bounded)
CLEAN = "clean"  # the output ended and nothing failed
ABORT = "abort"  # abort with the error that comes with it

Outcome = tuple[str, BaseException | None]


class EndPieces:
    """What is known of the agent's end (guarded by the server's lock)."""

    __slots__ = ("input_failure", "first_failure", "output_ended", "output_ended_at", "cause", "fatal")

    def __init__(self) -> None:
        #: Why a write to the agent failed.
        self.input_failure: BaseException | None = None
        #: The first failure of either side (the input's, or the output's: a read
        #: error, EOF inside a frame or a batch).
        self.first_failure: BaseException | None = None
        self.output_ended = False
        self.output_ended_at = 0.0
        #: The owner's word on the end (a child's exit), and whether it is an error in itself.
        self.cause: BaseException | None = None
        self.fatal = False


def decide(
    pieces: EndPieces,
    *,
    expects_cause: bool,
    stopping: bool,
    output_overdue: bool,
    cause_overdue: bool,
    unwritten: bool,
    input_overdue: bool = False,
) -> Outcome:
    """The outcome of what is known (the table in this module's docstring); pure.

    ``stopping``: the owner called ``stop()`` (it may be over). ``output_overdue``: the agent
    made no progress for OUTPUT_GRACE and its output did not end.
    ``cause_overdue``: the owner's cause did not come in time. ``unwritten``:
    input accepted for the agent is still queued or being written;
    ``input_overdue``: and its fate is still unknown OUTPUT_GRACE after the
    output ended.
    """
    cause = pieces.cause
    death = cause is not None and pieces.fatal
    if not pieces.output_ended:
        if pieces.input_failure is None and not (death and not stopping):
            return NOTHING, None
        if not output_overdue:
            return WAIT, None
    if expects_cause and cause is None and not cause_overdue:
        return WAIT, None
    if cause is not None:
        if death and (pieces.first_failure is not None or not stopping):
            return ABORT, cause
        if pieces.input_failure is not None or unwritten:
            return ABORT, cause
    if pieces.first_failure is not None:
        return ABORT, pieces.first_failure
    if unwritten and not input_overdue:
        return WAIT, None  # the write under way fails (the agent is gone) or completes
    return CLEAN, None


class Ending:
    """The end of one conversation: its pieces, the decision, the ``udf-settle`` wait, and the end of the I/O.

    The pieces are recorded under the server's lock (``changed``'s), decided
    there, and acted upon outside it: an abort (the server's, with the
    callbacks in their own thread), or the clean end (the channels close and
    request callers get :class:`~udf.errors.AgentClosedError`). Once both I/O
    threads ended and the end is decided, the server's ``IO_ENDED`` event is
    fired and ``io_done`` set, in one place (:meth:`check_io_over`).
    """

    def __init__(
        self,
        changed: threading.Condition,
        life: Lifecycle[Any, Any],
        progress: Progress,
        unwritten: Callable[[], bool],
        cause_grace: float,
        requests: PendingRequests,
        outputs: tuple[Channel[Any], Channel[Any]],
        abort: Callable[[BaseException], None],
    ) -> None:
        self._changed = changed  # notified on every new piece and at the abort; the settler waits on it
        self._life = life
        self._progress = progress
        self._unwritten = unwritten
        self._cause_grace = cause_grace
        self._requests = requests
        self._outputs = outputs
        self._abort = abort  # the server's abort from inside (callbacks in their own thread)
        self.pieces = EndPieces()
        #: The I/O threads still running (until each reports its end).
        self._reader_running = self._writer_running = True
        #: Whether the clean end was made (once).
        self._clean = False
        #: The udf-settle thread, while one waits for a missing piece (joined by the server).
        self.settler: threading.Thread | None = None
        #: Set once the I/O is over: the reader and the writer ended, the end decided.
        self.io_done = threading.Event()

    # --- the pieces, as they come -------------------------------------------------------

    def writer_ended(self, failure: BaseException | None) -> None:
        """The writer's last call: a write failure means the agent stopped reading."""

        def record(pieces: EndPieces) -> None:
            self._writer_running = False
            if failure is not None and self._life.state is not ServerState.ABORTED:
                if pieces.input_failure is None:
                    pieces.input_failure = failure
                if pieces.first_failure is None:
                    pieces.first_failure = failure

        self._record(record)

    def reader_ended(self, failure: BaseException | None) -> None:
        """The reader's last call: the agent's output ended (``failure``: cut short, or a read error)."""

        def record(pieces: EndPieces) -> None:
            self._reader_running = False
            self._requests.output_ended()  # nobody can answer any more
            pieces.output_ended = True
            pieces.output_ended_at = time.monotonic()
            if failure is not None and pieces.first_failure is None:
                pieces.first_failure = failure

        self._record(record)

    def explain(self, cause: BaseException, fatal: bool) -> None:
        """The owner's word on the agent's end (see :meth:`udf.Server.explain_end`)."""

        def record(pieces: EndPieces) -> None:
            if pieces.cause is None:
                pieces.cause, pieces.fatal = cause, fatal

        self._record(record)

    def aborted(self) -> None:
        """The server aborted (call with the lock held): nothing is left to decide; wake the settler."""
        self._changed.notify_all()

    def _record(self, record: Callable[[EndPieces], None]) -> None:
        """Record a piece under the lock, decide, and act on the decision outside the lock."""
        with self._changed:
            record(self.pieces)
            self._changed.notify_all()
            outcome = self._step()
        self._act(outcome)

    # --- deciding and acting -----------------------------------------------------------

    def _step(self) -> Outcome:
        """Decide with what is known now (lock held); a missing piece starts the settler, once."""
        if self._life.state is ServerState.ABORTED:
            return NOTHING, None
        now = time.monotonic()
        outcome = self._decide(now, now)
        if outcome[0] is WAIT:
            if self.settler is None:  # published started (the server joins it); it waits for this lock
                settler = threading.Thread(target=self._settle, name="udf-settle", daemon=True)
                settler.start()
                self.settler = settler
            return NOTHING, None
        return self._once(outcome)

    def _settle(self) -> None:
        """The ``udf-settle`` thread: wait until the pieces decide, or the graces expire; then act."""
        began = time.monotonic()
        with self._changed:
            outcome: Outcome = (NOTHING, None)
            while self._life.state is not ServerState.ABORTED:
                now = time.monotonic()
                outcome = self._decide(now, began)
                if outcome[0] is not WAIT:
                    outcome = self._once(outcome)
                    break
                # Woken by a new piece and by the abort; else at the next deadline.
                self._changed.wait(max(0.001, self._next_deadline(now, began) - now))
            else:
                outcome = (NOTHING, None)
        self._act(outcome)

    def _act(self, outcome: Outcome) -> None:
        action, err = outcome
        if action is ABORT:
            assert err is not None
            self._abort(err)
        elif action is CLEAN:
            self._end_cleanly()
        self.check_io_over()

    def _end_cleanly(self) -> None:
        """The agent's output ended and nothing failed: close the channels, release the request callers."""
        with self._changed:
            waiters = self._requests.close(AgentClosedError())
        for channel in self._outputs:
            channel.close()
        for waiter in waiters:
            waiter.fail(AgentClosedError())

    def check_io_over(self) -> None:
        """Once both I/O threads ended and the end is decided: the I/O is over (STOPPING -> STOPPED)."""
        with self._changed:
            if self.io_done.is_set() or self._reader_running or self._writer_running:
                return
            if not self._clean and self._life.state is not ServerState.ABORTED:
                return
            self._life.fire(ServerEvent.IO_ENDED)
            self.io_done.set()

    def _decide(self, now: float, began: float) -> Outcome:
        pieces = self.pieces
        output_since = self._output_since(now, began)
        return decide(
            pieces,
            expects_cause=self._cause_grace > 0,
            stopping=self._life.state is ServerState.STOPPING or self._life.state is ServerState.STOPPED,
            output_overdue=output_since is not None and not pieces.output_ended,
            cause_overdue=output_since is not None and now - output_since >= self._cause_grace,
            unwritten=pieces.output_ended and self._unwritten(),
            input_overdue=pieces.output_ended and now - pieces.output_ended_at >= OUTPUT_GRACE,
        )

    def _output_since(self, now: float, began: float) -> float | None:
        """Since when the output is over: its end, or when it became overdue; None while it may go on."""
        pieces = self.pieces
        if pieces.output_ended:
            return pieces.output_ended_at
        overdue_at = self._progress.active_at(now, began) + OUTPUT_GRACE
        return overdue_at if overdue_at <= now else None

    def _next_deadline(self, now: float, began: float) -> float:
        """When a wait for a missing piece runs out: the output's, the cause's, or the input's."""
        output_since = self._output_since(now, began)
        if output_since is None:
            return self._progress.active_at(now, began) + OUTPUT_GRACE
        deadlines = [output_since + self._cause_grace, output_since + OUTPUT_GRACE]
        return min((d for d in deadlines if d > now), default=now + OUTPUT_GRACE)

    def _once(self, outcome: Outcome) -> Outcome:
        if outcome[0] is CLEAN:
            if self._clean:
                return NOTHING, None
            self._clean = True
        return outcome
