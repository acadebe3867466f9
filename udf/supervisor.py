"""A UDF that survives its agent: restart, reconnect, restore, replay (an addition; Go has none).

:class:`Supervisor` is a :class:`udf.Interface` wrapping any transport built by a
factory (``udf.Process``, ``udf.Socket``, ...). Its channels are its own and stay
the same for its whole life; behind them the agent may be replaced::

    producers -> point_in/batch_in (stable) --+--> replay log (frames since the last snapshot)
                                              +--> current agent's point_in/batch_in (put_encoded)
    consumers <- point_out/batch_out (stable) <-- each agent's point_out/batch_out, in turn

A ``put()`` validates and encodes the item once, in the caller's thread, then
appends the frame to the replay log and puts it into the current agent under one
lock, so that the log's order is the agent's order. Every item gets a sequence
number (``seq``); the current agent's n-th item is ``seq = base + n``, so the
position :meth:`udf.Process.snapshot_with_position` returns maps to a sequence
number exactly, and the log is truncated by it, not by a guess. Reading
``point_out`` reads the agents' own channels one after the other (no thread in
between): what an agent sent before it failed comes first, then its successor's.

One ``udf-supervisor`` thread does everything else, in order: it takes the
snapshots (every ``snapshot_every`` items, every ``snapshot_interval`` seconds),
notices failures (the agent's abort callback, its output ending while we did
not ask for it, a put meeting a closed agent) and restarts the agent, and
closes it at :meth:`Supervisor.close`. A restart:

1. retires the old agent: abort, ``kill()`` (a hung agent is not waited for),
   ``close()`` to reap it;
2. applies the restart intensity (at most ``max_restarts`` restarts within any
   ``period``; the failure that would need one more gives up) and waits the
   backoff delay (jittered; reset after ``period`` healthy seconds);
3. opens a new agent from the factory, checks its edge types, ``init(options)``,
   ``restore(last snapshot)``, and replays the log in order (or counts it lost).

States (``stats().state``): "running", "restarting", "gave_up", "closed".
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import random
import threading
import time
from typing import Any, Callable, Deque, Iterator, List, Optional, Sequence, Tuple

from .channel import Channel
from .convert import BATCH, POINTS, Info, ResponseDecoder, encode_batch, encode_point
from .errors import AgentClosedError, ChannelClosed, InitError, RestoreError, SupervisorGaveUp, UDFError
from .interface import Interface, ServerBacked
from .models import Batch, Point
from .options import Options, build_options
from .socket import backoff_delays
from .stats import Stats
from .wire import FrameDecoder

__all__ = ["Supervisor", "RestartEvent", "SupervisorStats", "SupervisorGaveUp"]

#: Producers wait (for the next snapshot) when the replay log holds this many
#: items beyond ``snapshot_every``: a backstop, the transport's own bounded
#: queues normally keep the log far below it.
LOG_SLACK = 16_384
#: How long a retiring agent whose output ended cleanly may take to exit before it is killed.
RETIRE_GRACE = 2.0
#: Jitter of the backoff delays: each is the nominal delay times a factor in [1 - J, 1 + J].
JITTER = 0.25

_POINT, _BATCH = 0, 1
_KIND_NAMES = ("point", "batch")

RUNNING = "running"
RESTARTING = "restarting"
GAVE_UP = "gave_up"
CLOSED = "closed"
_NEW = "new"

RestartHook = Callable[["RestartEvent"], Any]


@dataclasses.dataclass(frozen=True)
class RestartEvent:
    """What :class:`Supervisor` passes to ``on_restart`` after each restart.

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


@dataclasses.dataclass(frozen=True)
class SupervisorStats(Stats):
    """:meth:`Supervisor.stats`: the current agent's :class:`udf.Stats` plus the supervisor's counters.

    ``state`` is the supervisor's ("running", "restarting", "gave_up",
    "closed"); ``agent_state`` the current agent's server state. ``restarts``
    counts restart attempts (agents asked of the factory after the first,
    whether or not they came up); ``generation`` is the current agent's
    (0 the first); ``replayed``/``lost`` items over all restarts;
    ``accepted`` items accepted by ``put()``; ``log`` items in the replay log.
    """

    restarts: int = 0
    generation: int = 0
    replayed: int = 0
    lost: int = 0
    accepted: int = 0
    log: int = 0
    agent_state: str = ""


class _ReplayFailed(Exception):
    """The new agent failed while the log was replayed into it."""

    def __init__(self, cause: BaseException, where: str) -> None:
        super().__init__(where)
        self.cause = cause
        self.where = where


class _Fatal(Exception):
    """A failure a restart cannot cure (InitError, RestoreError, other edge types): give up now."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Agent:
    """One generation: the transport and how to put frames into it."""

    def __init__(self, udf: Interface, gen: int) -> None:
        self.udf = udf
        self.gen = gen
        self.base = 0  # the seq of this agent's first item
        self.stopped = False  # aborted and killed (or left to exit) by the supervisor
        self.puts: Tuple[Callable[[bytes, bool, Optional[float]], None], ...] = ()
        self.exact_snapshots = callable(getattr(udf, "snapshot_with_position", None))

    def bind(self) -> None:
        """After open(): how frames go in (``put_encoded``, or decode and ``put`` for other transports)."""
        puts = []
        for kind, inlet in enumerate((self.udf.point_in, self.udf.batch_in)):
            put_encoded = getattr(inlet, "put_encoded", None)
            if callable(put_encoded):
                puts.append(put_encoded)
            else:
                puts.append(_decoding_put(inlet, kind))
        self.puts = tuple(puts)

    @property
    def error(self) -> Optional[BaseException]:
        return getattr(self.udf, "error", None)

    def kill(self) -> None:
        kill = getattr(self.udf, "kill", None)
        try:
            if callable(kill):
                kill()
        except UDFError:
            pass  # not opened: nothing to kill


def _decoding_put(inlet: Any, kind: int) -> Callable[[bytes, bool, Optional[float]], None]:
    """A put for an inlet without ``put_encoded``: decode the frame back into the item."""

    def put(frame: bytes, block: bool = True, timeout: Optional[float] = None) -> None:
        inlet.put(decode_item(frame), block, timeout)

    return put


def decode_item(frame: bytes) -> Any:
    """The ``udf.Point`` or ``udf.Batch`` that ``encode_point``/``encode_batch`` made ``frame`` from.

    Request and Response share the data messages' field numbers, so the
    response decoder reads them.
    """
    frames = FrameDecoder(max(len(frame), 1)).feed_frames(frame)
    events, error = ResponseDecoder().decode_frames(frames)
    if error is not None:
        raise error
    for kind, item in events:
        if kind is POINTS:
            return item[0]
        if kind is BATCH:
            return item
    raise ValueError("not an encoded point or batch")


def _describe_item(frame: bytes, kind: int) -> str:
    try:
        text = repr(decode_item(frame))
    except Exception as exc:  # a frame we encoded ourselves: should not happen
        text = f"<undecodable {_KIND_NAMES[kind]}: {exc}>"
    return text if len(text) <= 300 else text[:297] + "..."


def _frame_kind(frame: bytes) -> int:
    """Whether an encoded item is a point or a batch: the tag after the length prefix (Point 17, BeginBatch 16)."""
    i = 0
    while frame[i] & 0x80:
        i += 1
    return _BATCH if frame[i + 1] == 0x82 else _POINT


class _Outlet(Channel[Any]):
    """``Supervisor.point_out`` / ``batch_out``: the agents' own channels, read one after the other.

    A consumer reads the current agent's channel directly (no thread in
    between); once it is closed and drained, the next agent's. It ends (raises
    ``ChannelClosed``, naming why) once the supervisor has ended and the last
    channel is drained. It is the receive side only: ``put`` raises. A
    consumer reaching the end of the current agent's channel while the
    supervisor expected more reports that agent's end as a failure.
    """

    def __init__(self, supervisor: "Supervisor", name: str) -> None:
        super().__init__(0)
        self._supervisor = supervisor
        self._name = name
        self._switch = threading.Condition(threading.Lock())
        self._sources: Deque[Tuple[_Agent, Channel[Any]]] = collections.deque()  # the one read first
        self._finished = False  # no more sources will come
        self._consumer_closed = False

    def add(self, agent: _Agent, channel: Channel[Any]) -> None:
        """A new agent's channel, read after those before it."""
        with self._switch:
            if self._consumer_closed:
                channel.close()  # its server drops what the agent sends there
            self._sources.append((agent, channel))
            self._switch.notify_all()

    def finish(self, cause: Optional[BaseException]) -> None:
        """No more agents: end once the channels are drained, naming ``cause``."""
        super().close(cause)
        with self._switch:
            self._finished = True
            self._switch.notify_all()

    def close(self, cause: Optional[BaseException] = None) -> None:
        """The consumer wants no more: what is queued can still be read; the agents' further output is dropped."""
        super().close(cause)
        with self._switch:
            self._consumer_closed = True
            sources = [channel for _, channel in self._sources]
            self._switch.notify_all()
        for channel in sources:
            channel.close()

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        raise UDFError(f"{self._name} is the receive side of a supervisor: put into point_in/batch_in")

    def put_many(self, items: List[Any]) -> None:
        raise UDFError(f"{self._name} is the receive side of a supervisor: put into point_in/batch_in")

    def qsize(self) -> int:
        with self._switch:
            channels = [channel for _, channel in self._sources]
        return sum(channel.qsize() for channel in channels)

    def empty(self) -> bool:
        return self.qsize() == 0

    def _source(self, deadline: Optional[float]) -> Optional[Channel[Any]]:
        """The channel to read now, waiting for the next agent's if needed; ``None`` at the end.

        Raises ``queue.Empty`` at ``deadline``.
        """
        with self._switch:
            while True:
                sources = self._sources
                ended = self._finished or self._consumer_closed
                while sources:
                    agent, channel = sources[0]
                    if not channel.closed or channel.qsize():
                        return channel
                    if len(sources) == 1 and not ended:
                        self._supervisor._output_ended(agent, channel)
                        break
                    sources.popleft()
                if not sources and ended:
                    return None
                if deadline is None:
                    self._switch.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise queue.Empty
                    self._switch.wait(remaining)

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """The next item from the current agent (or its successor); ChannelClosed at the end."""
        if not block:
            deadline: Optional[float] = time.monotonic()
        elif timeout is not None:
            if timeout < 0:
                raise ValueError("'timeout' must be a non-negative number")
            deadline = time.monotonic() + timeout
        else:
            deadline = None
        while True:
            channel = self._source(deadline)
            if channel is None:
                raise self._closed_error("channel closed")
            try:
                if deadline is None:
                    return channel.get()
                return channel.get(block, max(0.0, deadline - time.monotonic()))
            except ChannelClosed:
                continue  # drained: the next agent's

    def __iter__(self) -> Iterator[Any]:
        while True:
            channel = self._source(None)
            if channel is None:
                return
            yield from channel


class _StableInlet:
    """``Supervisor.point_in`` / ``batch_in``: the same object whatever agent is behind it.

    ``put`` validates and encodes in the caller's thread (a bad item raises
    ``TypeError``/``ValueError`` naming the field, and nothing is accepted).
    While an agent is being replaced, ``put`` waits (``queue.Full`` if
    ``block=False`` or at ``timeout``).
    """

    __slots__ = ("_sup", "_kind", "_encode", "_encoded")

    def __init__(self, supervisor: "Supervisor", kind: int, encode: Optional[Callable[[Any], bytes]] = None) -> None:
        self._sup = supervisor
        self._kind = kind
        if encode is None:
            encode = encode_point if kind == _POINT else encode_batch
            # put_encoded: the same path with no encoding (bytes(frame) is frame itself).
            self._encoded: Optional[_StableInlet] = _StableInlet(supervisor, kind, bytes)
        else:
            self._encoded = None
        self._encode = encode

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Accept ``item``: log it for replay and send it to the current agent, in one order."""
        frame = self._encode(item)
        sup = self._sup
        with sup._lock:
            seq = sup._accepted
            if seq >= sup._slow_at:
                sup._put_slow(block, timeout)
                seq = sup._accepted
            sup._log_append(frame)
            sup._accepted = seq + 1
            try:
                sup._puts[self._kind](frame, block, timeout)
            except (queue.Full, ChannelClosed) as exc:
                sup._put_failed(seq, exc)

    def put_encoded(self, frame: bytes, block: bool = True, timeout: Optional[float] = None) -> None:
        """Accept an item already encoded by ``udf.convert.encode_point``/``encode_batch``."""
        encoded = self._encoded if self._encoded is not None else self
        encoded.put(frame, block, timeout)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)


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
        logger: Optional[logging.Logger] = None,
        restore: bool = True,
        replay: bool = True,
        snapshot_interval: float = 60.0,
        snapshot_every: int = 10_000,
        backoff: Tuple[float, float, float] = (0.5, 1.5, 30.0),
        max_restarts: int = 5,
        period: float = 60.0,
        on_restart: Optional[RestartHook] = None,
    ) -> None:
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
        self._factory = factory
        self._options: Optional[List[Any]] = build_options(options) if options is not None else None
        self._logger = logger if logger is not None else logging.getLogger("udf")
        self._restore = bool(restore)
        self._replay = bool(replay)
        self._snapshot_interval = float(snapshot_interval)
        self._snapshot_every = snapshot_every
        self._backoff = (initial, factor, cap)
        self._max_restarts = max_restarts
        self._period = float(period)
        self._on_restart = on_restart

        self._point_in = _StableInlet(self, _POINT)
        self._batch_in = _StableInlet(self, _BATCH)
        self._point_out = _Outlet(self, "point_out")
        self._batch_out = _Outlet(self, "batch_out")

        # Guarded by _lock: the state, the current agent, sequence numbers, the log.
        self._lock = threading.Lock()
        self._can_put = threading.Condition(self._lock)  # producers wait here
        self._state = _NEW
        self._agent: Optional[_Agent] = None
        self._info: Optional[Info] = None
        self._accepted = 0  # the next item's seq
        self._log: Deque[bytes] = collections.deque()  # encoded items, seq from _covered on
        # replay=False keeps no log: appending to a zero-length deque drops the item.
        dropped: Deque[bytes] = collections.deque(maxlen=0)
        self._log_append = (self._log if self._replay else dropped).append
        self._covered = 0  # items before this seq are in the last snapshot (or lost)
        self._snapshot: Optional[bytes] = None
        self._snapshot_due_at = snapshot_every  # seq at which a count snapshot is due
        self._log_cap = snapshot_every + LOG_SLACK
        #: put() takes its slow path from this seq on: a snapshot is due, the log is
        #: full, or (-1) no agent is running. See _refresh_slow_at.
        self._slow_at = -1
        self._puts: Tuple[Callable[[bytes, bool, Optional[float]], None], ...] = ()  # the current agent's
        self._final: Optional[BaseException] = None  # what close() raises
        self._closing = False  # close() or abort() was called: no more puts

        # The monitor's inbox, guarded by _inbox (never held while taking _lock).
        self._inbox = threading.Condition(threading.Lock())
        self._failure: Optional[Tuple[int, BaseException, bool]] = None  # (gen, cause, output ended cleanly)
        self._close_requested = False
        self._discard = False
        self._abort_err: Optional[BaseException] = None
        self._snapshot_due = False
        self._woken = threading.Event()  # wakes a backoff wait (abort)

        self._monitor: Optional[threading.Thread] = None
        self._stop_listeners: List[Callable[[BaseException], Any]] = []  # add_abort_callback, guarded by _lock
        #: The generation whose failure reports count (guarded by _inbox); -1 while none does.
        self._gen = 0
        self._gen_count = 0  # the last generation started
        self._starting: Optional[_Agent] = None  # an agent being started, not yet current
        self._restarts = 0
        self._replayed = 0
        self._lost = 0
        self._restart_times: Deque[float] = collections.deque()
        self._delays: Iterator[float] = self._new_delays()
        self._healthy_since = 0.0
        self._replay_failures = 0  # consecutive agents that died before their replay completed
        self._replay_high_water = -1  # last seq put during a failed replay: replay carefully up to it

    # --- channels -------------------------------------------------------------------

    @property
    def point_in(self) -> _StableInlet:
        """Send side for stream points; the same object for the supervisor's whole life."""
        return self._point_in

    @property
    def batch_in(self) -> _StableInlet:
        """Send side for batches."""
        return self._batch_in

    @property
    def point_out(self) -> Channel[Point]:
        """Points from each agent in turn; ends at close() or when the supervisor gives up."""
        return self._point_out

    @property
    def batch_out(self) -> Channel[Batch]:
        """Batches from each agent in turn."""
        return self._batch_out

    @property
    def state(self) -> str:
        """ "running", "restarting", "gave_up" or "closed" ("new" before open())."""
        return self._state

    # --- life cycle -----------------------------------------------------------------

    def open(self) -> None:
        """Open the first agent and run ``init(options)``; raise at once if that fails (never retried)."""
        with self._lock:
            if self._state is not _NEW:
                raise UDFError("supervisor already opened")
            self._state = RESTARTING
        try:
            agent = self._start_agent(0)
        except BaseException:
            with self._lock:
                self._state = CLOSED
            self._point_out.finish(None)
            self._batch_out.finish(None)
            raise
        with self._lock:
            self._activate(agent)
        self._healthy_since = time.monotonic()
        self._monitor = threading.Thread(target=self._run, name="udf-supervisor", daemon=True)
        self._monitor.start()

    def close(self, timeout: Optional[float] = None, *, discard_output: bool = False) -> None:
        """Stop cleanly: the current agent drains its input and output; raise the first unrecovered error.

        A failure met while closing is recovered (restart, restore, replay)
        and then the new agent is closed. Keep draining ``point_out``/
        ``batch_out`` meanwhile, or pass ``discard_output=True``. From the
        supervisor's own threads (``on_restart``) it does not wait.
        """
        if timeout is not None:  # Interface's signature; the Supervisor's redesign implements it
            raise NotImplementedError("Supervisor.close(timeout=...) is not implemented on this branch")
        with self._lock:
            state = self._state
            if state is _NEW:
                self._state = CLOSED
            self._closing = True
            self._refresh_slow_at()
            self._can_put.notify_all()
        if state is _NEW:
            self._point_out.finish(None)
            self._batch_out.finish(None)
            return
        with self._inbox:
            self._close_requested = True
            self._discard = self._discard or discard_output
            self._inbox.notify_all()
        if discard_output:
            self._point_out.close()
            self._batch_out.close()
        monitor = self._monitor
        if monitor is not None and threading.current_thread() is not monitor:
            monitor.join()
        err = self._final
        if err is not None:
            raise err

    @property
    def error(self) -> Optional[BaseException]:
        """The first unrecovered error (what ``close()`` raises: a give-up, an abort), or ``None``."""
        return self._final if self._final is not None else self._abort_err

    def kill(self) -> None:
        """Kill the current agent now: the supervisor recovers from it as from any failure (restart, restore, replay)."""
        agent = self._agent
        if agent is None:
            raise UDFError("supervisor not opened: call open() first")
        agent.kill()

    def add_abort_callback(self, callback: Callable[[BaseException], Any]) -> None:
        """Call ``callback(err)`` once when the supervisor stops for good (it gives up, or ``abort()``)."""
        with self._lock:
            err = self.error
            if err is None:
                self._stop_listeners.append(callback)
        if err is not None:
            self._call_stop_listener(callback, err)

    def _stopped_for_good(self, err: BaseException) -> None:
        """Run the abort callbacks once (a give-up or an abort)."""
        with self._lock:
            listeners, self._stop_listeners = self._stop_listeners, []
        for listener in listeners:
            self._call_stop_listener(listener, err)

    def _call_stop_listener(self, callback: Callable[[BaseException], Any], err: BaseException) -> None:
        try:
            callback(err)
        except Exception:
            self._logger.exception("abort listener failed")

    def snapshot_with_position(self) -> Tuple[bytes, int]:
        """A checkpoint and how many items ``put()`` had accepted before it (see :meth:`checkpoint`)."""
        data = self.checkpoint()
        with self._lock:
            return data, self._covered

    def abort(self, err: BaseException) -> None:
        """Stop now without restarting: the agent is aborted and killed; ``close()`` raises ``err``."""
        with self._lock:
            self._closing = True
            if self._state is _NEW:
                self._state = CLOSED
                self._final = err
            self._refresh_slow_at()
            self._can_put.notify_all()
            agents = [a for a in (self._agent, self._starting) if a is not None]
        with self._inbox:
            if self._abort_err is None:
                self._abort_err = err
            self._inbox.notify_all()
        self._woken.set()
        for agent in agents:  # wakes a replay, a snapshot or a producer blocked on it
            agent.udf.abort(err)
        self._stopped_for_good(err)

    # --- requests -------------------------------------------------------------------

    def info(self) -> Info:
        """The agent's edge types and options (as the current agent answered them)."""
        info = self._info
        if info is None:
            raise UDFError("supervisor not opened: call open() first")
        return info

    def init(self, options: Options = None) -> None:
        """Initialize the current agent; every later agent gets these options too.

        ``options``: ``agent_pb2.Option``s or a mapping (see :mod:`udf.options`).
        """
        built = build_options(options)
        with self._lock:
            self._wait_running(None)
            previous = self._options
            self._options = built
            agent = self._agent
            assert agent is not None
            try:
                agent.udf.init(built)
            except InitError:
                self._options = previous
                raise

    def restore(self, snapshot: bytes) -> None:
        """Restore the current agent's state; it replaces what was accepted before (nothing older is replayed)."""
        if not isinstance(snapshot, (bytes, bytearray, memoryview)):
            raise TypeError(f"snapshot must be bytes, got {type(snapshot).__name__}")
        with self._lock:  # producers wait for the round trip: the log is cut exactly here
            self._wait_running(None)
            agent = self._agent
            assert agent is not None
            agent.udf.restore(bytes(snapshot))
            self._set_snapshot(bytes(snapshot), self._accepted)

    def snapshot(self) -> bytes:
        """The agent's state now (the same as :meth:`checkpoint`)."""
        return self.checkpoint()

    def checkpoint(self) -> bytes:
        """Take a snapshot now, record it as the one a new agent is restored from, and return it.

        If the agent fails meanwhile, the snapshot is taken from its replacement.
        """
        while True:
            with self._lock:
                self._wait_running(None)
                agent = self._agent
            assert agent is not None
            try:
                data = self._take_snapshot(agent)
            except UDFError as exc:
                # The agent failed meanwhile: wait for its replacement (or the end) and ask that one.
                self._report_failure(agent.gen, agent.error or exc, agent.error is None)
                with self._lock:
                    self._wait_running(None, lambda: self._agent is not agent)
                continue
            if data is not None:
                return data

    def stats(self) -> SupervisorStats:
        """The current agent's stats plus restarts, generation, replayed, lost and state."""
        agent = self._agent
        if agent is None:
            raise UDFError("supervisor not opened: call open() first")
        try:
            base = agent.udf.stats()
        except NotImplementedError:
            base = Stats(state="", uptime=0.0, points_in=0, batches_in=0, points_out=0, batches_out=0, bytes_in=0, bytes_out=0)
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Stats)}
        fields["state"] = self._state
        return SupervisorStats(
            **fields,
            restarts=self._restarts,
            generation=agent.gen,
            replayed=self._replayed,
            lost=self._lost,
            accepted=self._accepted,
            log=len(self._log),
            agent_state=base.state,
        )

    def _wait_running(self, timeout: Optional[float], ready: Optional[Callable[[], bool]] = None) -> None:
        """Wait (with _lock held) until an agent is running (and ``ready()``); raise if that will not happen."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self._state
            if state is GAVE_UP:
                assert self._final is not None
                raise self._final
            if self._closing or state is CLOSED:
                raise self._closed_error()
            if state is RUNNING and (ready is None or ready()):
                return
            if state is _NEW:
                raise UDFError("supervisor not opened: call open() first")
            if deadline is None:
                self._can_put.wait()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise queue.Full
                self._can_put.wait(remaining)

    def _closed_error(self) -> BaseException:
        if self._state is GAVE_UP and self._final is not None:
            return self._final
        cause = self._abort_err
        if cause is None:
            return ChannelClosed("put on a closed channel: the supervisor is closed")
        error = ChannelClosed(f"put on a closed channel: the supervisor was aborted: {cause}")
        error.__cause__ = cause
        return error

    # --- the put path ---------------------------------------------------------------

    def _put_failed(self, seq: int, exc: Exception) -> None:
        """The current agent did not take item ``seq`` (with _lock held).

        ``queue.Full`` (not blocking, or the timeout): not accepted after all,
        raised. ``ChannelClosed``: the agent failed; the item is accepted (it is
        in the log: the restart replays it) and the next put waits for the new agent.
        """
        if isinstance(exc, queue.Full):
            self._accepted = seq
            if self._replay:
                self._log.pop()
            raise exc
        agent = self._agent
        assert agent is not None
        error = agent.error
        self._report_failure(agent.gen, error or exc.__cause__ or exc, error is None)
        self._state = RESTARTING
        self._slow_at = -1

    def _put_slow(self, block: bool, timeout: Optional[float]) -> None:
        """put()'s slow path (with _lock held): ask for a due snapshot; wait for a running agent and room in the log."""
        if self._state is RUNNING and not self._closing and self._accepted >= self._snapshot_due_at:
            self._snapshot_due_at = self._accepted + self._snapshot_every
            self._refresh_slow_at()
            with self._inbox:
                self._snapshot_due = True
                self._inbox.notify_all()
        if self._accepted >= self._slow_at:
            self._wait_running(0.0 if not block else timeout, lambda: len(self._log) < self._log_cap)

    def _refresh_slow_at(self) -> None:
        """Recompute where put()'s fast path ends (call with _lock held after changing what it depends on)."""
        if self._state is not RUNNING or self._closing:
            self._slow_at = -1
        elif self._replay:
            self._slow_at = min(self._snapshot_due_at, self._covered + self._log_cap)
        else:
            self._slow_at = self._snapshot_due_at

    def _activate(self, agent: _Agent) -> None:
        """Make ``agent`` the one puts go to (with _lock held)."""
        self._agent = agent
        self._puts = agent.puts
        self._starting = None
        self._state = RUNNING
        self._refresh_slow_at()
        self._can_put.notify_all()

    # --- failure reports (any thread) -----------------------------------------------

    def _report_failure(self, gen: int, cause: BaseException, soft: bool) -> None:
        """Tell the monitor that agent ``gen`` failed; the first report of a generation wins.

        ``soft``: ``cause`` is not the agent's own abort error (its output
        ended cleanly, or a put met it closing before it decided why), so the
        agent is given time to explain itself, and a later hard report replaces it.
        """
        with self._inbox:
            if gen != self._gen:
                return  # an agent already being replaced
            current = self._failure
            if current is None or (current[0] == gen and current[2] and not soft):
                self._failure = (gen, cause, soft)
            self._inbox.notify_all()

    def _listener(self, gen: int) -> Callable[[BaseException], None]:
        def on_abort(err: BaseException) -> None:
            self._report_failure(gen, err, False)

        return on_abort

    # --- output forwarding ----------------------------------------------------------

    def _publish(self, agent: _Agent) -> None:
        """Let consumers read ``agent``'s output once they have drained its predecessors'."""
        self._point_out.add(agent, agent.udf.point_out)
        self._batch_out.add(agent, agent.udf.batch_out)

    def _output_ended(self, agent: _Agent, channel: Channel[Any]) -> None:
        """A consumer drained ``agent``'s closed channel and no successor is there: a failure, unless expected."""
        cause = channel.cause or agent.error
        if cause is None:
            self._report_failure(agent.gen, AgentClosedError("agent closed its output while items were still expected"), True)
        else:
            self._report_failure(agent.gen, cause, False)

    # --- the monitor thread ---------------------------------------------------------

    def _run(self) -> None:
        """The ``udf-supervisor`` thread: snapshots, restarts, and the close."""
        try:
            self._serve()
        except BaseException as exc:  # a bug of ours: do not leave producers waiting forever
            self._logger.exception("udf supervisor failed")
            for agent in (self._agent, self._starting):
                if agent is not None and not agent.stopped:
                    self._discard_agent(agent, exc)
            self._give_up(exc, "")
        finally:
            self._finish()

    def _serve(self) -> None:
        interval = self._snapshot_interval
        next_snapshot = time.monotonic() + interval if interval > 0 else None
        last_snapshot_seq = 0
        while True:
            with self._inbox:
                while True:
                    if self._abort_err is not None:
                        break
                    failure = self._failure
                    if failure is not None and failure[0] != self._gen:
                        self._failure = failure = None
                    if failure is not None or self._close_requested or self._snapshot_due:
                        break
                    if next_snapshot is not None:
                        remaining = next_snapshot - time.monotonic()
                        if remaining <= 0:
                            break
                        self._inbox.wait(remaining)
                    else:
                        self._inbox.wait()
                abort_err = self._abort_err
                failure = self._failure
                self._failure = None
                closing = self._close_requested
                snapshot_due = self._snapshot_due
                self._snapshot_due = False
            if abort_err is not None:
                agent = self._agent
                assert agent is not None
                self._discard_agent(agent, abort_err)
                return
            if failure is not None:
                if not self._recover(failure[1], failure[2]):
                    return
                continue
            if closing:
                self._close_agents()
                return
            now = time.monotonic()
            if snapshot_due or (next_snapshot is not None and now >= next_snapshot):
                if next_snapshot is not None:
                    next_snapshot = now + interval
                if snapshot_due or self._accepted != last_snapshot_seq:
                    agent = self._agent
                    assert agent is not None
                    try:
                        self._take_snapshot(agent)
                    except UDFError as exc:
                        self._report_failure(agent.gen, agent.error or exc, agent.error is None)
                    last_snapshot_seq = self._covered

    def _take_snapshot(self, agent: _Agent) -> Optional[bytes]:
        """Snapshot ``agent``; record it and cut the log. ``None`` if the agent was replaced meanwhile."""
        data: bytes
        if agent.exact_snapshots:
            data, position = agent.udf.snapshot_with_position()
            seq = agent.base + int(position)
        else:
            with self._lock:  # no position from this transport: producers wait for the round trip
                if self._agent is not agent:
                    return None
                data = agent.udf.snapshot()
                seq = self._accepted
        with self._lock:
            if self._agent is not agent or self._state is not RUNNING:
                return None
            self._set_snapshot(data, seq)
        return data

    def _set_snapshot(self, data: bytes, seq: int) -> None:
        """Record the snapshot covering items before ``seq`` and drop them from the log (with _lock held)."""
        if seq < self._covered:
            return  # an older one than we have
        log = self._log
        for _ in range(min(seq - self._covered, len(log))):
            log.popleft()
        self._covered = seq
        self._snapshot = data
        self._snapshot_due_at = max(self._snapshot_due_at, seq + self._snapshot_every)
        self._refresh_slow_at()
        self._can_put.notify_all()  # producers waiting for room in the log

    # --- restarting -----------------------------------------------------------------

    def _new_delays(self) -> Iterator[float]:
        initial, factor, cap = self._backoff
        return backoff_delays(initial, factor, cap, JITTER)

    def _recover(self, cause: BaseException, soft: bool, retired: bool = False) -> bool:
        """Replace the failed current agent until a new one runs; False if the supervisor gave up or was aborted."""
        old = self._agent
        assert old is not None
        reaper = None if retired else self._stop_agent(old, cause, soft)  # releases a producer blocked on it
        with self._lock:
            if self._state is RUNNING:
                self._state = RESTARTING
                self._refresh_slow_at()
        if not retired:
            cause = self._reap_agent(old, cause, soft, reaper)
        if time.monotonic() - self._healthy_since >= self._period:
            self._delays = self._new_delays()  # healthy long enough: start from the initial delay again
        where = ""
        while True:
            if self._abort_err is not None:
                return False
            now = time.monotonic()
            times = self._restart_times
            while times and now - times[0] >= self._period:
                times.popleft()
            if len(times) >= self._max_restarts:
                self._give_up(cause, where, f"{len(times)} restarts within {self._period:g}s")
                return False
            if self._replay_failures > self._max_restarts:
                self._give_up(cause, where, f"{self._replay_failures} agents in a row failed while replaying")
                return False
            times.append(now)
            self._restarts += 1
            delay = next(self._delays)
            gen = self._gen_count + 1
            self._logger.warning(
                "udf agent failed: %s%s; restarting it (generation %d) in %.3fs",
                cause,
                f" ({where})" if where else "",
                gen,
                delay,
            )
            if self._woken.wait(delay) and self._abort_err is not None:
                return False
            try:
                agent = self._start_agent(gen)
            except _Fatal as exc:
                self._give_up(exc.cause, "")
                return False
            except Exception as exc:  # it did not start: try again (the intensity bounds this)
                cause, where = exc, "while starting the new agent"
                continue
            try:
                replayed, lost = self._replay_into(agent)
            except _ReplayFailed as exc:
                self._replay_failures += 1
                cause = self._discard_agent(agent, exc.cause)
                where = exc.where
                continue
            self._replay_failures = 0
            self._replayed += replayed
            self._lost += lost
            self._healthy_since = time.monotonic()
            with self._lock:
                self._activate(agent)
            if replayed:
                with self._inbox:  # a snapshot of the new agent soon keeps the log short
                    self._snapshot_due = True
            event = RestartEvent(generation=gen, cause=cause, delay=delay, replayed=replayed, lost=lost)
            if self._on_restart is not None:
                try:
                    self._on_restart(event)
                except Exception:
                    self._logger.exception("on_restart callback failed")
            return True

    def _start_agent(self, gen: int) -> _Agent:
        """A new agent from the factory: opened, its edge types checked, initialized, restored.

        For what a restart cannot cure (its init options or the snapshot
        refused, other edge types) raises :class:`_Fatal`; generation 0
        (``open()``) raises the error itself. The agent is discarded on failure.
        """
        udf = self._factory()
        if not isinstance(udf, Interface):
            raise TypeError(f"factory must return a udf.Interface, got {type(udf).__name__}")
        agent = _Agent(udf, gen)
        self._gen_count = gen
        with self._inbox:
            self._gen = gen  # failure reports of this agent count from now on
            self._failure = None
        with self._lock:
            self._starting = agent
        add_listener = getattr(udf, "add_abort_callback", None)
        if callable(add_listener):
            add_listener(self._listener(gen))
        try:
            udf.open()
            agent.bind()
            info = udf.info()
            if self._info is None:
                self._info = info
            elif (info.wants, info.provides) != (self._info.wants, self._info.provides):
                raise _Fatal(
                    UDFError(
                        f"the new agent wants {_edge(info.wants)} and provides {_edge(info.provides)}, "
                        f"the first one wanted {_edge(self._info.wants)} and provided {_edge(self._info.provides)}"
                    )
                )
            options = self._options
            if options is not None:
                try:
                    udf.init(options)
                except InitError as exc:
                    if gen == 0:
                        raise
                    raise _Fatal(exc) from None
            snapshot = self._snapshot
            if gen > 0 and self._restore and snapshot is not None:
                try:
                    udf.restore(snapshot)
                except RestoreError as exc:
                    raise _Fatal(exc) from None
            self._publish(agent)
        except BaseException as exc:
            self._discard_agent(agent, exc)
            raise
        return agent

    def _replay_into(self, agent: _Agent) -> Tuple[int, int]:
        """Re-send the log (the items since the last snapshot) in order, or count them lost: (replayed, lost).

        Then a round trip (``info()``) confirms the agent processed them. After
        an agent died while replaying, the next replay waits for each item up
        to where that one got, so that the item an agent dies on is known.
        """
        with self._lock:
            entries = list(self._log)
            first = self._covered
            if not self._replay:
                lost = self._accepted - first
                self._covered = self._accepted
                agent.base = self._accepted
                return 0, lost
            agent.base = first
        careful_until = self._replay_high_water
        count = len(entries)
        puts = agent.puts
        for i, frame in enumerate(entries):
            kind = _frame_kind(frame)
            seq = first + i
            careful = seq <= careful_until
            try:
                puts[kind](frame, True, None)
                if careful:
                    agent.udf.info()  # a round trip: the agent has processed this item
            except (UDFError, OSError) as exc:
                self._replay_high_water = max(self._replay_high_water, seq)
                what = "" if careful else "at or before "
                where = (
                    f"while replaying {what}{_KIND_NAMES[kind]} {i + 1} of {count} since the last snapshot "
                    f"(item #{seq} accepted): {_describe_item(frame, kind)}"
                )
                raise _ReplayFailed(_explain(agent, exc), where) from None
        if count:
            try:
                agent.udf.info()
            except (UDFError, OSError) as exc:
                self._replay_high_water = max(self._replay_high_water, first + count - 1)
                where = f"while replaying the {count} items accepted since the last snapshot"
                raise _ReplayFailed(_explain(agent, exc), where) from None
        self._replay_high_water = -1
        return count, 0

    def _discard_agent(self, agent: _Agent, cause: BaseException, soft: bool = False) -> BaseException:
        """End ``agent`` (abort, kill, close); return the best explanation of its end."""
        return self._reap_agent(agent, cause, soft, self._stop_agent(agent, cause, soft))

    def _stop_agent(self, agent: _Agent, cause: BaseException, soft: bool) -> Optional[threading.Timer]:
        """Abort and kill ``agent`` now, without waiting; its later failure reports are stale.

        An agent whose output ended cleanly is instead given RETIRE_GRACE
        seconds to exit and explain itself (its exit status): the returned
        timer kills it then.
        """
        with self._inbox:
            if self._gen == agent.gen:
                self._gen = -1  # its later reports are stale
        with self._lock:
            if self._starting is agent:
                self._starting = None
        agent.stopped = True
        if soft and agent.error is None:
            reaper = threading.Timer(RETIRE_GRACE, agent.kill)
            reaper.name = "udf-supervisor-reaper"
            reaper.daemon = True
            reaper.start()
            return reaper
        try:
            agent.udf.abort(cause)
        except Exception:
            pass
        agent.kill()
        return None

    def _reap_agent(
        self, agent: _Agent, cause: BaseException, soft: bool, reaper: Optional[threading.Timer]
    ) -> BaseException:
        """Close the stopped ``agent``; return the best explanation of its end."""
        udf = agent.udf
        close_error: Optional[BaseException] = None
        try:
            udf.close()
        except Exception as exc:
            close_error = exc
        if reaper is not None:
            reaper.cancel()
            reaper.join()
        best = agent.error or close_error or cause
        if best is cause and soft and isinstance(cause, AgentClosedError):
            returncode = getattr(udf, "returncode", None)
            if returncode is not None:
                best = AgentClosedError(f"{cause} (process exit status {returncode})")
        return best

    def _give_up(self, cause: BaseException, where: str, why: str = "") -> None:
        """Stop for good: the error names the last failure; producers and close() raise it."""
        reason = f" ({why})" if why else ""
        place = f" {where}" if where else ""
        error = SupervisorGaveUp(f"supervisor gave up{reason}: last failure{place}: {cause}")
        error.__cause__ = cause
        self._logger.error("%s", error)
        with self._lock:
            self._state = GAVE_UP
            self._final = error
            self._refresh_slow_at()
            self._can_put.notify_all()
        self._stopped_for_good(error)

    def _close_agents(self) -> None:
        """close(): close the current agent; a failure meanwhile is recovered, then the new agent closed."""
        while True:
            agent = self._agent
            assert agent is not None
            try:
                # A round trip first: the agent has processed every accepted item (an
                # agent that already ended, even with status 0, is a failure to recover).
                agent.udf.info()
            except (UDFError, OSError) as exc:
                error = agent.error
                if not self._recover(error or exc, error is None):
                    return
                continue
            with self._inbox:
                self._gen = -1  # its output ends now: expected
                discard = self._discard
            err: Optional[BaseException] = None
            try:
                if discard and isinstance(agent.udf, ServerBacked):
                    agent.udf.close(discard_output=True)
                else:
                    agent.udf.close()
            except Exception as exc:
                err = exc
            if err is None or self._abort_err is not None:
                return
            self._logger.warning("udf agent failed while closing: %s", err)
            if not self._recover(err, False, retired=True):
                return

    def _finish(self) -> None:
        """The monitor's end: set the final state, close the output channels, release every producer."""
        with self._lock:
            if self._state is not GAVE_UP:
                self._state = CLOSED
                if self._abort_err is not None and self._final is None:
                    self._final = self._abort_err
            final = self._final
            self._closing = True
            self._refresh_slow_at()
            self._can_put.notify_all()
        self._point_out.finish(final)
        self._batch_out.finish(final)


def _explain(agent: _Agent, exc: BaseException) -> BaseException:
    """Why a put or a request to ``agent`` failed: its abort error if it has one."""
    if agent.error is not None:
        return agent.error
    if isinstance(exc, ChannelClosed) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def _edge(edge: int) -> str:
    return {0: "stream", 1: "batch"}.get(edge, str(edge))
