"""The ``udf-supervisor`` thread: snapshots, restarts and the close, one at a time, in the order asked.

It owns the agents' lives (it starts every :class:`Incarnation`, the first one
in ``open()``'s thread) and the output channels, and takes its commands
(:mod:`udf.supervision.commands`) from one queue. The shared state it changes
goes through :class:`udf.supervision.core.Core`.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..channel import Channel
from ..convert import Info
from ..errors import AgentClosedError, SupervisorGaveUp, UDFError
from ..interface import Interface
from .commands import Abort, AgentFailed, CloseAgents, Command, SnapshotDue
from .core import Core
from .incarnation import Fatal, Incarnation, ReplayFailed
from .outlet import Outlet
from .restart_policy import RestartLimit, RestartPolicy

__all__ = ["Monitor", "RestartEvent"]


@dataclasses.dataclass(frozen=True)
class RestartEvent:
    """What :class:`udf.Supervisor` passes to ``on_restart`` after each restart.

    ``generation`` counts agents (1 for the first replacement); ``cause`` is the
    failure that ended the previous one; ``delay`` the seconds waited before
    starting this one; ``replayed`` the items re-sent to it, ``lost`` the items
    accepted since the last snapshot that were not (``replay=False``).
    """

    generation: int
    cause: BaseException
    delay: float
    replayed: int
    lost: int


class Monitor:
    """Starts, snapshots, replaces and closes the agents; ``send()`` asks it to, from any thread."""

    def __init__(
        self,
        core: Core,
        commands: queue.SimpleQueue[Command],
        factory: Callable[[], Interface],
        policy: RestartPolicy,
        *,
        logger: logging.Logger,
        options: list[Any] | None,
        restore: bool,
        replay: bool,
        snapshot_interval: float,
        on_restart: Callable[[RestartEvent], Any] | None,
    ) -> None:
        self._core = core
        self._commands = commands
        self._factory = factory
        self._policy = policy
        self._logger = logger
        #: The init options of every agent (``init()`` replaces them); ``None``: none sent.
        self.options = options
        #: The first agent's answer to ``info()``: later agents must want and provide the same.
        self.info: Info | None = None
        self._restore = restore
        self._replay = replay
        self._interval = snapshot_interval
        self._on_restart = on_restart
        #: ``point_out`` and ``batch_out``: each agent's channels in turn.
        self.outlets = (Outlet("point_out", self.output_ended), Outlet("batch_out", self.output_ended))
        self._thread: threading.Thread | None = None
        #: Set once it ended (the outputs finished): close() waits for this.
        self.finished = threading.Event()
        #: What it is doing, for close()'s messages.
        self.doing = "nothing"
        self._gen = 0  # the last generation started
        #: Items replayed and lost over all restarts.
        self.replayed = 0
        self.lost = 0
        #: An agent died while replayed into, at or before this seq: replay carefully up to it.
        self._suspect_until: int | None = None

    @property
    def restarts(self) -> int:
        return self._policy.restarts

    @property
    def started(self) -> bool:
        return self._thread is not None

    def in_thread(self) -> bool:
        """Whether the caller is the monitor thread (on_restart, an abort callback): it cannot wait for itself."""
        return threading.current_thread() is self._thread

    def send(self, command: Command) -> None:
        self._commands.put(command)

    def report(self, gen: int, cause: BaseException) -> None:
        """Agent ``gen``'s abort callback."""
        self.send(AgentFailed(gen, cause, False))

    def output_ended(self, agent: Incarnation, channel: Channel[Any]) -> None:
        """A consumer drained ``agent``'s closed channel and no successor is there: a failure, unless expected."""
        cause = channel.cause or agent.error
        if cause is None:
            self.send(
                AgentFailed(
                    agent.gen, AgentClosedError("agent closed its output while items were still expected"), True
                )
            )
        else:
            self.send(AgentFailed(agent.gen, cause, False))

    # --- the first agent, in open()'s thread --------------------------------------------

    def open_first(self) -> None:
        """open(): start the first agent here (its errors raised as they are), then the thread."""
        try:
            agent = self.start_agent(0)
        except BaseException:
            self._core.open_failed()
            self.end(False)
            raise
        if not self._core.activate(agent):  # abort() during open()
            error = self._core.final
            assert error is not None
            agent.discard(error)
            self.end(False)
            raise error
        self._policy.agent_running(time.monotonic())
        self._thread = threading.Thread(target=self._run, name="udf-supervisor", daemon=True)
        self._thread.start()

    def start_agent(self, gen: int) -> Incarnation:
        """A new agent from the factory: opened, its edge types checked, initialized, restored; its output published.

        Raises :class:`Fatal` for what a restart cannot cure; the agent is discarded on failure.
        """
        udf = self._factory()
        if not isinstance(udf, Interface):
            raise TypeError(f"factory must return a udf.Interface, got {type(udf).__name__}")
        agent = Incarnation(udf, gen)
        self._gen = gen
        if not self._core.starting_agent(agent):  # abort() came first
            raise self._core.final or UDFError("the supervisor stopped")
        self.doing = f"the agent (generation {gen}) to start"
        snapshot = self._core.log.snapshot if gen > 0 and self._restore else None
        try:
            info = agent.start(self.report, self.info, self.options, snapshot)
            if self.info is None:
                self.info = info
            self.outlets[0].add(agent, udf.point_out)
            self.outlets[1].add(agent, udf.batch_out)
        except BaseException as exc:
            agent.discard(exc)
            raise
        return agent

    # --- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        closed_cleanly = False
        try:
            closed_cleanly = self._serve()
        except BaseException as exc:  # a bug of ours: do not leave producers waiting forever
            self._logger.exception("udf supervisor failed")
            for agent in (self._core.agent, self._core.starting):
                if agent is not None:
                    agent.discard(exc)  # (again, if it was: ending an agent twice is harmless)
            if not self._core.stopped:
                self._give_up(exc, "")
        finally:
            self.end(closed_cleanly)

    def end(self, closed_cleanly: bool) -> None:
        """The end: the final state, the outputs finished, close() released; then the abort callbacks."""
        final, listeners = self._core.finish(closed_cleanly)
        for outlet in self.outlets:
            outlet.finish(final)
        self.doing = "nothing (it ended)"
        self.finished.set()
        for listener in listeners:  # after finished: a callback may wait for a close() elsewhere
            assert final is not None
            try:
                listener(final)
            except Exception:
                self._logger.exception("abort listener failed")

    def _serve(self) -> bool:
        """The loop, until the close or the end; True if the last agent was closed cleanly."""
        core, interval = self._core, self._interval
        next_timed = time.monotonic() + interval if interval > 0 else None
        last_seq = 0  # items accepted at the last snapshot
        while True:
            self.doing = "nothing"
            wait = None if next_timed is None else max(0.0, next_timed - time.monotonic())
            try:
                # Woken by send(): the agents' abort callbacks, producers, requests, the outputs, close(), abort().
                command: Command | None = self._commands.get(timeout=wait)
            except queue.Empty:
                command = None  # a timed snapshot
            agent = core.agent
            assert agent is not None
            if isinstance(command, Abort) or core.stopped:
                agent.discard(core.final or UDFError("aborted"))
                return False
            if isinstance(command, AgentFailed):
                if command.gen == agent.gen and not self._recover(command.cause, command.soft):
                    return False
                continue  # (or a report about an agent already replaced)
            if isinstance(command, CloseAgents):
                return self._close_agents(command.discard_output)
            if command is None:
                assert next_timed is not None
                next_timed = time.monotonic() + interval
                if core.log.accepted == last_seq:
                    continue  # nothing new since the last one
            self._snapshot(agent)
            last_seq = core.log.covered

    def _snapshot(self, agent: Incarnation) -> None:
        """Snapshot the current agent; record it and cut the log. A failure is reported like any other."""
        self.doing = f"the agent (generation {agent.gen}) to answer a snapshot"
        try:
            data, seq = agent.snapshot()
        except UDFError as exc:
            error = agent.error
            self.send(AgentFailed(agent.gen, error or exc, error is None))
            return
        self._core.cut(agent, data, seq)

    # --- restarting ---------------------------------------------------------------------

    def _recover(self, cause: BaseException, soft: bool, retired: bool = False) -> bool:
        """Replace the failed current agent until a new one runs; False if the supervisor gave up or stopped."""
        core, policy = self._core, self._policy
        old = core.agent
        assert old is not None
        reaper = None if retired else old.stop(cause, soft)  # releases a producer blocked on it
        core.agent_failed()
        if not retired:
            self.doing = f"the failed agent (generation {old.gen}) to exit"
            cause = old.reap(cause, reaper)
        policy.agent_failed(time.monotonic())
        where = ""
        while not core.stopped:
            try:
                delay = policy.next_delay(time.monotonic())
            except RestartLimit as limit:
                self._give_up(cause, where, limit.why)
                return False
            gen = self._gen + 1
            place = f" ({where})" if where else ""
            self._logger.warning(
                "udf agent failed: %s%s; restarting it (generation %d) in %.3fs", cause, place, gen, delay
            )
            self.doing = f"the backoff delay before restarting the agent (generation {gen})"
            if core.wait_stopped(delay):
                return False
            try:
                agent = self.start_agent(gen)
            except Fatal as exc:
                self._give_up(exc.cause, "")
                return False
            except Exception as exc:  # it did not start: try again (the intensity bounds this)
                cause, where = exc, "while starting the new agent"
                continue
            try:
                replayed, lost = self._replay_into(agent)
            except ReplayFailed as exc:
                policy.replay_failed()
                self._suspect_until = max(exc.seq, self._suspect_until or 0)
                cause, where = agent.discard(exc.cause), exc.where
                continue
            if not core.activate(agent):  # abort() came meanwhile
                agent.discard(core.final or cause)
                return False
            self._restarted(RestartEvent(generation=gen, cause=cause, delay=delay, replayed=replayed, lost=lost))
            return True
        return False

    def _replay_into(self, agent: Incarnation) -> tuple[int, int]:
        """Re-send the log (the items since the last snapshot) in order, or count them lost: (replayed, lost)."""
        first, entries, lost = self._core.replay_plan(agent, self._replay)
        if not self._replay:
            return 0, lost
        self.doing = f"the new agent (generation {agent.gen}) to take the {len(entries)} items replayed"
        return agent.replay(first, entries, self._suspect_until), 0

    def _restarted(self, event: RestartEvent) -> None:
        """A new agent runs: count it, ask for a snapshot if it was replayed into, call on_restart."""
        self._policy.agent_running(time.monotonic())
        self._suspect_until = None
        self.replayed += event.replayed
        self.lost += event.lost
        if event.replayed:
            self.send(SnapshotDue())  # a snapshot of the new agent soon keeps the log short
        if self._on_restart is not None:
            try:
                self._on_restart(event)
            except Exception:
                self._logger.exception("on_restart callback failed")

    def _give_up(self, cause: BaseException, where: str, why: str = "") -> None:
        """Stop for good: the error names the last failure; producers, requests and close() raise it."""
        reason = f" ({why})" if why else ""
        place = f" {where}" if where else ""
        error = SupervisorGaveUp(f"supervisor gave up{reason}: last failure{place}: {cause}")
        error.__cause__ = cause
        if self._core.give_up(error):
            self._logger.error("%s", error)

    # --- closing ------------------------------------------------------------------------

    def _close_agents(self, discard_output: bool) -> bool:
        """close(): close the current agent; a failure meanwhile is recovered, then the new agent closed.

        True once an agent was closed cleanly; False if the supervisor gave up or was stopped.
        """
        core = self._core
        while True:
            agent = core.agent
            assert agent is not None
            self.doing = f"the agent (generation {agent.gen}) to process the items accepted"
            try:
                # A round trip first: the agent has processed every accepted item (an
                # agent that already ended, even with status 0, is a failure to recover).
                agent.udf.info()
            except (UDFError, OSError) as exc:
                error = agent.error
                if core.stopped:  # abort(), or a close(timeout) that ran out
                    agent.discard(core.final or exc)
                    return False
                if not self._recover(error or exc, error is None):
                    return False
                continue
            self.doing = f"the agent (generation {agent.gen}) to close: its output read to the end"
            try:
                agent.close(discard_output)
            except Exception as exc:
                if core.stopped:
                    return False
                self._logger.warning("udf agent failed while closing: %s", exc)
                if not self._recover(exc, False, retired=True):
                    return False
                continue
            return True
