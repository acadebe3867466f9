"""A UDF that survives its agent: restart, reconnect, restore, replay (an addition; Go has none).

:class:`Supervisor` is a :class:`udf.Interface` wrapping any transport built by a
factory (``udf.Process``, ``udf.Socket``, ...). Its channels are its own and stay
the same for its whole life; behind them the agent may be replaced::

    producers -> point_in/batch_in (stable) --+--> replay log (frames since the last snapshot)
                                              +--> current agent's point_in/batch_in (put_encoded)
    consumers <- point_out/batch_out (stable) <-- each agent's point_out/batch_out, in turn

Its parts, in :mod:`udf.supervision`: the lifecycle table (``state``), the
replay log (``replay_log``) and the restart policy (``restart_policy``), both
pure; one agent's life (``incarnation``); the shared state and the put path
under one lock (``core``, ``inlet``); the output channels (``outlet``); the
``udf-supervisor`` thread that snapshots, restarts and closes, fed by a queue
of typed commands (``monitor``, ``commands``); close()'s clock (``closing``).
This module is the front: the public API. See docs/supervision.md.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
from collections.abc import Callable
from typing import Any

from .channel import Channel
from .convert import Info
from .errors import InitError, SupervisorGaveUp, UDFError
from .interface import Interface
from .models import Batch, Point
from .options import Options, build_options
from .stats import Stats
from .supervision import closing
from .supervision.commands import Abort, AgentFailed, CloseAgents, Command
from .supervision.core import Core, Listener
from .supervision.inlet import StableInlet
from .supervision.monitor import Monitor, RestartEvent
from .supervision.replay_log import BATCH, POINT, ReplayLog
from .supervision.restart_policy import RestartPolicy
from .supervision.state import SupervisorState

__all__ = ["Supervisor", "SupervisorState", "RestartEvent", "SupervisorStats", "SupervisorGaveUp"]

RestartHook = Callable[[RestartEvent], Any]


@dataclasses.dataclass(frozen=True)
class SupervisorStats(Stats):
    """:meth:`Supervisor.stats`: the current agent's :class:`udf.Stats` plus the supervisor's counters.

    ``state`` is the supervisor's (a :class:`SupervisorState`); ``agent_state``
    the current agent's server state. ``restarts`` counts restart attempts
    (agents asked of the factory after the first, whether or not they came
    up); ``generation`` is the current agent's (0 the first);
    ``replayed``/``lost`` items over all restarts; ``accepted`` items accepted
    by ``put()``; ``log`` items in the replay log.
    """

    restarts: int = 0
    generation: int = 0
    replayed: int = 0
    lost: int = 0
    accepted: int = 0
    log: int = 0
    agent_state: str = ""


class Supervisor(Interface):
    """A UDF that survives its agent (see the module docstring and docs/supervision.md).

    ``factory()`` returns a new, unopened :class:`udf.Interface`; ``options``
    are the init options sent to every agent (``None``: :meth:`open` does not
    init, and the options of a later :meth:`init` call are the ones re-sent).
    ``restore``: restore the last snapshot into a new agent; ``replay``:
    re-send the items accepted since that snapshot (at-least-once), else count
    them lost. Snapshots are taken every ``snapshot_interval`` seconds (``<= 0``:
    never by time) and every ``snapshot_every`` accepted items. ``backoff`` is
    ``(initial, factor, cap)`` in seconds, jittered by +-25%; at most
    ``max_restarts`` restarts within any ``period`` seconds, after which the
    supervisor gives up (:class:`udf.SupervisorGaveUp`). ``on_restart(event)``
    is called with a :class:`RestartEvent` after each restart.
    """

    def __init__(
        self,
        factory: Callable[[], Interface],
        options: Options = None,
        *,
        logger: logging.Logger | None = None,
        restore: bool = True,
        replay: bool = True,
        snapshot_interval: float = 60.0,
        snapshot_every: int = 10_000,
        backoff: tuple[float, float, float] = (0.5, 1.5, 30.0),
        max_restarts: int = 5,
        period: float = 60.0,
        on_restart: RestartHook | None = None,
    ) -> None:
        backoff = _checked(factory, snapshot_every, backoff, max_restarts, period)
        self._logger = logger if logger is not None else logging.getLogger("udf")
        commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._core = Core(ReplayLog(snapshot_every, keep=bool(replay)), commands.put)
        self._monitor = Monitor(
            self._core,
            commands,
            factory,
            RestartPolicy(max_restarts, float(period), backoff),
            logger=self._logger,
            options=build_options(options) if options is not None else None,
            restore=bool(restore),
            replay=bool(replay),
            snapshot_interval=float(snapshot_interval),
            on_restart=on_restart,
        )
        self._point_in = StableInlet(self._core, POINT)
        self._batch_in = StableInlet(self._core, BATCH)

    # --- channels -------------------------------------------------------------------

    @property
    def point_in(self) -> StableInlet:
        """Send side for stream points; the same object for the supervisor's whole life."""
        return self._point_in

    @property
    def batch_in(self) -> StableInlet:
        """Send side for batches."""
        return self._batch_in

    @property
    def point_out(self) -> Channel[Point]:
        """Points from each agent in turn; ends at close() or when the supervisor stops for good."""
        return self._monitor.outlets[0]

    @property
    def batch_out(self) -> Channel[Batch]:
        """Batches from each agent in turn."""
        return self._monitor.outlets[1]

    @property
    def state(self) -> SupervisorState:
        """Where the supervisor is in its life (see the table in docs/supervision.md)."""
        return self._core.state

    # --- life cycle -----------------------------------------------------------------

    def open(self) -> None:
        """Open the first agent and run ``init(options)``; raise at once if that fails (never retried)."""
        self._core.open()
        self._monitor.open_first()

    def close(self, timeout: float | None = None, *, discard_output: bool = False) -> None:
        """Stop cleanly: the current agent drains its input and output; raise the first unrecovered error.

        A failure met while closing is recovered (restart, restore, replay)
        and then the new agent is closed. Keep draining ``point_out``/
        ``batch_out`` meanwhile, or pass ``discard_output=True``. With a
        ``timeout`` it returns or raises within about that many seconds: what
        still runs is killed, and a UDFError names what it waited for.
        Without one, a close that makes no progress logs a WARNING naming what
        it waits for (after CLOSE_WARN_AFTER seconds, then every
        CLOSE_WARN_EVERY). From the supervisor's own thread (``on_restart``,
        an abort callback) it does not wait.
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must not be negative, got {timeout!r}")
        monitor = self._monitor
        found: list[SupervisorState] = []  # the state close() found, once it closed the input
        watch = closing.CloseWatch(
            timeout, self._logger, self._close_progress, lambda: self._waiting_for(input_closed=bool(found))
        )

        def close_input(seconds: float) -> bool:
            state = self._core.close_input(seconds)  # waits for a producer blocked in put()
            if state is not None:
                found.append(state)
            return state is not None

        if not watch.wait(close_input):
            self._close_timed_out(watch)
        if found[0] is SupervisorState.NEW:
            monitor.end(False)
            return
        if discard_output:
            for outlet in monitor.outlets:
                outlet.close()
        monitor.send(CloseAgents(discard_output))
        if monitor.started and not monitor.in_thread() and not watch.wait(monitor.finished.wait):
            self._close_timed_out(watch)
        error = self._core.final
        if error is not None:
            raise error

    def _close_timed_out(self, watch: closing.CloseWatch) -> None:
        """close(timeout) ran out: stop for good, kill what still runs, and raise what it waited for."""
        what = self._waiting_for(input_closed=self._core.input_closed)
        assert watch.timeout is not None
        error = UDFError(f"close() timed out after {watch.timeout:g}s waiting for {what}; killed the agent")
        self._stop(error, kill=True)
        self._monitor.finished.wait(closing.KILL_GRACE)  # the monitor reaps what it killed
        raise self._core.final or error

    def _waiting_for(self, input_closed: bool) -> str:
        """What close() is waiting for, for its WARNING and its timeout error."""
        if not input_closed:
            return "a producer blocked in put() (the agent takes no more input)"
        parts = [self._monitor.doing]
        for outlet, what in zip(self._monitor.outlets, ("points", "batches"), strict=True):
            backlog = outlet.qsize()
            if backlog:
                parts.append(f"{outlet.name}: {backlog:,} {what} not consumed")
        return "; ".join(parts)

    def _close_progress(self) -> Any:
        """Anything that changes while a close gets further: its step, the outputs consumed, the agent's I/O."""
        agent = self._core.agent
        io: tuple[int, ...] = ()
        if agent is not None:
            try:
                stats = agent.stats()
            except UDFError:
                pass
            else:
                io = (stats.bytes_in, stats.bytes_out, stats.points_out, stats.batches_out)
        backlog = tuple(outlet.qsize() for outlet in self._monitor.outlets)
        return (self._monitor.doing, agent.gen if agent is not None else -1, backlog, io)

    @property
    def error(self) -> BaseException | None:
        """Why it stopped for good (what every call raises from then on: a give-up, an abort), or ``None``."""
        return self._core.final

    def kill(self) -> None:
        """Kill the current agent now: the supervisor recovers as from any failure (restart, restore, replay)."""
        agent = self._core.agent
        if agent is None:
            raise UDFError("supervisor not opened: call open() first")
        agent.kill()

    def add_abort_callback(self, callback: Listener) -> None:
        """Call ``callback(err)`` once when the supervisor stops for good (it gives up, or ``abort()``).

        It runs in the thread that stopped it (``abort()``'s caller, or the
        ``udf-supervisor`` thread once everything else has ended, so it may
        wait for a ``close()`` in another thread); added afterwards, at once.
        """
        error = self._core.add_listener(callback)
        if error is not None:
            self._call_listener(callback, error)

    def _call_listener(self, callback: Listener, error: BaseException) -> None:
        try:
            callback(error)
        except Exception:
            self._logger.exception("abort listener failed")

    def abort(self, err: BaseException) -> None:
        """Stop now without restarting: the agent is aborted and killed; every call then raises ``err``."""
        self._stop(err, kill=False)

    def _stop(self, err: BaseException, kill: bool) -> None:
        """Stop for good with ``err`` (the first cause wins): abort (and kill) the agents, tell the monitor."""
        state, agents, listeners = self._core.abort(err)
        for agent in agents:  # wakes a replay, a snapshot or a producer blocked on it
            agent.abort(err)
            if kill:
                agent.kill()
        self._monitor.send(Abort(err))
        if state is SupervisorState.NEW:
            self._monitor.end(False)  # no monitor thread: end the outputs here
        for listener in listeners:
            self._call_listener(listener, err)

    # --- requests -------------------------------------------------------------------

    def info(self) -> Info:
        """The agent's edge types and options (as the first agent answered them)."""
        info = self._monitor.info
        if info is None:
            raise UDFError("supervisor not opened: call open() first")
        return info

    def init(self, options: Options = None) -> None:
        """Initialize the current agent; every later agent gets these options too.

        ``options``: ``agent_pb2.Option``s or a mapping (see :mod:`udf.options`).
        """
        built = build_options(options)
        core, monitor = self._core, self._monitor
        with core.lock:  # no restart in between: the options and the agent's init agree
            core.wait_running(None)
            previous, monitor.options = monitor.options, built
            assert core.agent is not None
            try:
                core.agent.udf.init(built)
            except InitError:
                monitor.options = previous
                raise

    def restore(self, snapshot: bytes) -> None:
        """Restore the current agent's state; it replaces what was accepted before (nothing older is replayed)."""
        if not isinstance(snapshot, (bytes, bytearray, memoryview)):
            raise TypeError(f"snapshot must be bytes, got {type(snapshot).__name__}")
        self._core.restore(bytes(snapshot))

    def snapshot(self) -> bytes:
        """The agent's state now (the same as :meth:`checkpoint`)."""
        return self.checkpoint()

    def checkpoint(self) -> bytes:
        """Take a snapshot now, record it as the one a new agent is restored from, and return it.

        If the agent fails meanwhile, the snapshot is taken from its replacement.
        """
        return self.snapshot_with_position()[0]

    def snapshot_with_position(self) -> tuple[bytes, int]:
        """A checkpoint, and how many items ``put()`` had accepted before it (the items it covers)."""
        core = self._core
        while True:
            with core.lock:
                core.wait_running(None)
                agent = core.agent
            assert agent is not None
            try:
                data, seq = agent.snapshot()
            except UDFError as exc:
                # The agent failed meanwhile: wait for its replacement (or the end) and ask that one.
                error = agent.error
                self._monitor.send(AgentFailed(agent.gen, error or exc, error is None))
                with core.lock:
                    core.wait_running(None, lambda: core.agent is not agent)  # noqa: B023 - called before the loop goes on
                continue
            if core.cut(agent, data, seq):
                return data, seq

    def stats(self) -> SupervisorStats:
        """The current agent's stats plus restarts, generation, replayed, lost and state."""
        core = self._core
        agent = core.agent
        if agent is None:
            raise UDFError("supervisor not opened: call open() first")
        base = agent.stats()
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Stats)}
        fields["state"] = core.state
        return SupervisorStats(
            **fields,
            restarts=self._monitor.restarts,
            generation=agent.gen,
            replayed=self._monitor.replayed,
            lost=self._monitor.lost,
            accepted=core.log.accepted,
            log=len(core.log),
            agent_state=base.state,
        )


def _checked(
    factory: Any, snapshot_every: Any, backoff: Any, max_restarts: Any, period: Any
) -> tuple[float, float, float]:
    """Check the constructor's arguments (TypeError/ValueError naming the bad one); return the backoff as floats."""
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int) or snapshot_every < 1:
        raise ValueError(f"snapshot_every must be a positive int, got {snapshot_every!r}")
    try:
        initial, factor, cap = (float(x) for x in backoff)
    except (TypeError, ValueError):
        raise TypeError(f"backoff must be (initial, factor, cap) in seconds, got {backoff!r}") from None
    if initial <= 0 or factor < 1 or cap < initial:
        raise ValueError(f"backoff must have initial > 0, factor >= 1 and cap >= initial, got {backoff!r}")
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
    if period <= 0:
        raise ValueError(f"period must be positive, got {period!r}")
    return initial, factor, cap
