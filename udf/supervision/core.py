"""What a Supervisor's threads share, under one lock: the lifecycle, the replay log, the current agent, the first error.

Producers (:class:`udf.supervision.inlet.StableInlet`), request callers,
``close()``/``abort()`` and the monitor thread decide here, under
:attr:`Core.lock`, and act (I/O, callbacks, joins) outside it. The state
changes only through :meth:`Core._fire`, by the table in
:mod:`udf.supervision.state`. Facts that are not states stay facts: the
first error (:attr:`Core.final`), whether the input is closed, the agents.

Producers hold the lock while their item goes into the agent (the log's
order must be the agent's order), so a put blocked on backpressure holds it;
``abort()`` never waits for such a producer (:meth:`Core._lock_aborting`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import ChannelClosed, ServerStoppedError, UDFError
from ..lifecycle import Lifecycle
from .commands import AgentFailed, Command, SnapshotDue
from .incarnation import Incarnation, PutEncoded
from .replay_log import Entry, ReplayLog
from .state import STOPPED, TABLE, SupervisorEvent, SupervisorState

__all__ = ["Core", "Listener"]

NEW, RUNNING, RESTARTING, GAVE_UP, CLOSED = SupervisorState
_E = SupervisorEvent

#: How long abort() waits for the lock before it aborts the agent a producer may be blocked on.
ABORT_POLL = 0.05

#: An ``add_abort_callback`` callback.
Listener = Callable[[BaseException], Any]


class Core:
    """The lifecycle and what is decided with it; ``send`` hands a command to the monitor thread."""

    def __init__(self, log: ReplayLog, send: Callable[[Command], None]) -> None:
        self.lock = threading.Lock()
        self._changed = threading.Condition(self.lock)  # producers and requests wait here for a running agent
        self._life = Lifecycle(TABLE, NEW)
        self._send = send
        self.log = log
        # The put path, read by StableInlet.put under the lock: from seq slow_at on a put
        # calls wait_for_room (-1: every put does); puts are the current agent's put_encoded.
        self.slow_at = -1
        self.puts: tuple[PutEncoded, ...] = ()
        #: The agent requests go to (the last one that ran); one being started.
        self.agent: Incarnation | None = None
        self.starting: Incarnation | None = None
        #: Why it stopped for good (a give-up, an abort): the one error every call raises from then on.
        self.final: BaseException | None = None
        #: close() or abort() was called: no more items are accepted.
        self.input_closed = False
        self._listeners: list[Listener] = []  # called once final is set (by whoever set it)

    @property
    def state(self) -> SupervisorState:
        return self._life.state

    @property
    def stopped(self) -> bool:
        """Whether it stopped for good (gave up, or closed)."""
        return self._life.state in STOPPED

    def _fire(self, event: SupervisorEvent) -> SupervisorState:
        """The one place the state changes (with the lock held): then the put path and the waiters follow it."""
        state = self._life.fire(event)
        self._refresh()
        self._changed.notify_all()
        return state

    def _refresh(self) -> None:
        """Recompute where put()'s fast path ends (with the lock held), after the state or the log changed."""
        if self._life.state is RUNNING and not self.input_closed:
            self.slow_at = self.log.limit()
        else:
            self.slow_at = -1

    # --- the put path (StableInlet.put, with the lock held) ---------------------------

    def wait_for_room(self, block: bool, timeout: float | None) -> int:
        """put()'s slow path: ask for a due snapshot; wait for a running agent and room in the log; the seq to use."""
        log = self.log
        if self._life.state is RUNNING and not self.input_closed and log.snapshot_due():
            log.snapshot_asked()
            self._refresh()
            self._send(SnapshotDue())
        if log.accepted >= self.slow_at:
            self.wait_running(0.0 if not block else timeout, log.has_room, put=True)
        return log.accepted

    def refused(self, seq: int, exc: Exception) -> None:
        """The current agent did not take item ``seq``.

        ``queue.Full`` (not blocking, or the timeout): not accepted after all,
        raised. ``ChannelClosed``: the agent failed; the item is accepted (it
        is in the log: the restart replays it) and the next put waits for the
        new agent.
        """
        if isinstance(exc, queue.Full):
            self.log.rollback(seq)
            raise exc
        agent = self.agent
        assert agent is not None
        error = agent.error
        self._send(AgentFailed(agent.gen, error or exc.__cause__ or exc, error is None))
        self._fire(_E.AGENT_FAILED)

    def wait_running(self, timeout: float | None, ready: Callable[[], bool] | None = None, put: bool = False) -> None:
        """Wait (with the lock held) until an agent runs (and ``ready()``); raise if that will not happen.

        ``queue.Full`` at ``timeout``; once stopped for good, or closing, the
        error a put (``put=True``) or a request raises.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self._life.state
            if state is NEW:
                raise UDFError("supervisor not opened: call open() first")
            if state in STOPPED or self.input_closed:
                raise self.put_error() if put else self.request_error()
            if state is RUNNING and (ready is None or ready()):
                return
            # Woken by _fire (an agent runs, the end) and cut() (room in the log).
            if deadline is None:
                self._changed.wait()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise queue.Full
                self._changed.wait(remaining)

    def put_error(self) -> BaseException:
        """What put() raises once no more items are accepted: the give-up itself, else ChannelClosed naming why."""
        final = self.final
        if self._life.state is GAVE_UP and final is not None:
            return final
        if final is None:
            return ChannelClosed("put on a closed channel: the supervisor is closed")
        error = ChannelClosed(f"put on a closed channel: the supervisor was aborted: {final}")
        error.__cause__ = final
        return error

    def request_error(self) -> BaseException:
        """What a request raises once closing or stopped: the first error, else ServerStoppedError (as Go's Server)."""
        return self.final if self.final is not None else ServerStoppedError("supervisor already closed")

    # --- the life cycle -----------------------------------------------------------------

    def open(self) -> None:
        """open(): the first agent is being started."""
        with self.lock:
            if not self._life.allows(_E.OPEN):
                raise self.final if self.final is not None else UDFError("supervisor already opened")
            self._fire(_E.OPEN)

    def open_failed(self) -> None:
        with self.lock:
            self.starting = None
            self._fire(_E.OPEN_FAILED)

    def starting_agent(self, agent: Incarnation) -> bool:
        """``agent`` is being started (abort() reaches it); False if the supervisor stopped meanwhile."""
        with self.lock:
            if self.stopped:
                return False
            self.starting = agent
            return True

    def activate(self, agent: Incarnation) -> bool:
        """``agent`` runs: puts go to it. False if abort() came first (the caller discards it)."""
        with self.lock:
            self.starting = None
            if self._fire(_E.AGENT_RUNNING) is not RUNNING:
                return False
            self.agent = agent
            self.puts = agent.puts
            return True

    def agent_failed(self) -> None:
        """The monitor is replacing the current agent."""
        with self.lock:
            self._fire(_E.AGENT_FAILED)

    def give_up(self, error: BaseException) -> bool:
        """Stop for good with ``error``; False if abort() came first (its error stays the cause)."""
        with self.lock:
            if self._fire(_E.GIVE_UP) is not GAVE_UP:
                return False
            self.final = error
            return True

    def close_input(self, timeout: float) -> SupervisorState | None:
        """close(): no more items are accepted; the state it was called in, or ``None`` if the lock was busy.

        A producer blocked in a put holds the lock: close() waits ``timeout``
        seconds at a time (and warns, or gives up at its deadline).
        """
        if not self.lock.acquire(timeout=timeout):
            return None
        try:
            state = self._life.state
            self.input_closed = True
            self._fire(_E.CLOSE)
            return state
        finally:
            self.lock.release()

    def abort(self, error: BaseException) -> tuple[SupervisorState, list[Incarnation], list[Listener]]:
        """Stop for good now with ``error`` (the first cause wins).

        Returns the state it was called in, the agents to abort and the callbacks to call.
        """
        self._lock_aborting(error)
        try:
            state = self._life.state
            first = self.final is None  # (also after a clean close: recorded, the callbacks called, as in Go)
            self.input_closed = True
            self._fire(_E.ABORT)
            if first:
                self.final = error
            agents = [agent for agent in (self.agent, self.starting) if agent is not None]
            listeners = self._take_listeners() if first else []
        finally:
            self.lock.release()
        return state, agents, listeners

    def _lock_aborting(self, error: BaseException) -> None:
        """Take the lock; while a producer (or init()/restore()) holds it blocked on an agent, abort that agent."""
        while not self.lock.acquire(timeout=ABORT_POLL):
            for agent in (self.agent, self.starting):  # read without the lock: aborting twice is harmless
                if agent is not None:
                    agent.abort(error)

    def finish(self, closed_cleanly: bool) -> tuple[BaseException | None, list[Listener]]:
        """The monitor ends: the last agent was closed (or not); the first error, the callbacks still to call."""
        with self.lock:
            self.input_closed = True
            if closed_cleanly:
                self._fire(_E.LAST_CLOSED)
            else:
                self._refresh()
                self._changed.notify_all()
            return self.final, self._take_listeners()

    def wait_stopped(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds (a backoff delay); True if it stopped for good meanwhile (abort())."""
        with self.lock:
            return self._changed.wait_for(lambda: self.stopped, timeout)  # woken by _fire

    # --- the log --------------------------------------------------------------------

    def cut(self, agent: Incarnation, snapshot: bytes, seq: int) -> bool:
        """``agent``'s snapshot covers the items before ``seq``: record it, cut the log. False if it was replaced."""
        with self.lock:
            if self.agent is not agent or self._life.state is not RUNNING:
                return False
            self._cut(snapshot, seq)
            return True

    def _cut(self, snapshot: bytes, seq: int) -> None:
        if self.log.cut(seq, snapshot):
            self._refresh()
            self._changed.notify_all()  # producers waiting for room in the log

    def restore(self, snapshot: bytes) -> None:
        """restore(): the current agent restores ``snapshot``; it replaces everything accepted so far."""
        with self.lock:  # producers wait for the round trip: the log is cut exactly here
            self.wait_running(None)
            agent = self.agent
            assert agent is not None
            agent.udf.restore(snapshot)
            self._cut(snapshot, self.log.accepted)

    def replay_plan(self, agent: Incarnation, replay: bool) -> tuple[int, list[Entry], int]:
        """What to replay into the new ``agent``: (first seq, entries, lost); it counts its items from there."""
        with self.lock:
            log = self.log
            if not replay:
                lost = log.forget()
                agent.base = log.accepted
                return log.accepted, [], lost
            first, entries = log.since_cut()
            agent.base = first
            return first, entries, 0

    # --- abort callbacks ----------------------------------------------------------------

    def add_listener(self, callback: Listener) -> BaseException | None:
        """Keep ``callback`` for the stop; return the error to call it with now if that already happened."""
        with self.lock:
            if self.final is None:
                self._listeners.append(callback)
            return self.final

    def _take_listeners(self) -> list[Listener]:
        """The callbacks kept so far (to call with ``final``, outside the lock); later ones are called at once."""
        if self.final is None:
            return []
        listeners, self._listeners = self._listeners, []
        return listeners
