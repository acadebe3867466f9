"""Run a UDF over shards of series: the engine-neutral core of ``udf.beam`` and ``udf.flink``.

An engine adapter keys every item by its shard (:class:`ShardOf`), keeps each
shard's pending items and its :class:`ShardState` (a generation token and the
agent's snapshot) in the engine's keyed state, and hands a shard's pending
items to :meth:`ShardAgents.hand_over`, which

1. takes the shard's live agent if it holds the state's generation, else
   starts a new one, initializes it and restores the state's snapshot (the
   generation check: a retried bundle, a restored checkpoint, a moved shard);
2. sends the items and asks for a snapshot -- the **barrier**: the agent answers
   requests in order, so every output of those items comes before it;
3. on a failure (the agent died, timed out, reported an error) discards the
   agent and replays the items on a new one restored from the same state,
   :data:`MAX_ATTEMPTS` tries in all, then raises;
4. returns the outputs and the new state, with a fresh generation token.

The adapter writes that state, and only then emits the outputs: so an output is
never emitted by an attempt whose state the engine did not keep. Pure of any
engine: no Beam, no Flink imported here.
"""

from __future__ import annotations

import collections
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import agent_pb2

from .channel import Channel
from .convert import encode_batch, encode_point
from .errors import ChannelClosed, UDFError
from .models import Batch, Point
from .options import Options, build_options
from .process import Process

__all__ = [
    "EDGES",
    "MAX_AGENTS",
    "MAX_ATTEMPTS",
    "ShardAgents",
    "ShardOf",
    "ShardState",
    "check_arguments",
    "default_key",
    "pending_entry",
    "pending_frames",
    "shard_of",
]

#: Agents one :class:`ShardAgents` keeps alive at most (least recently used first out).
MAX_AGENTS = 64
#: Tries of one hand-over, each on a fresh agent restored from the shard's state,
#: before it fails (and the engine retries as its own policy says).
MAX_ATTEMPTS = 3
#: The edge types an adapter accepts, by name.
EDGES = {"stream": agent_pb2.STREAM, "batch": agent_pb2.BATCH}
#: The counters :class:`ShardAgents` reports through its ``count`` callback.
COUNTERS = ("agents_started", "agent_failures", "restores")

Item = Point | Batch


# --- keys and shards -------------------------------------------------------------------


def default_key(item: Item) -> str:
    """The series of an item: its ``group``, else its name and sorted tags."""
    if item.group:
        return item.group
    tags = ",".join(f"{k}={v}" for k, v in sorted(item.tags.items()))
    return f"{item.name}\n{tags}"


def shard_of(key: str, shards: int) -> int:
    """The shard of series ``key``: ``crc32(key) % shards`` (stable across processes and runs)."""
    return zlib.crc32(key.encode("utf-8")) % shards


class ShardOf:
    """``item -> shard``: a picklable callable (an engine ships it to its workers)."""

    def __init__(self, key: Callable[[Any], str], shards: int) -> None:
        self._key = key
        self._shards = shards

    def __call__(self, item: Item) -> int:
        key = self._key(item)
        if not isinstance(key, str):
            raise TypeError(f"key() must return a str, got {type(key).__name__} for {item!r:.120}")
        return shard_of(key, self._shards)


def check_arguments(
    command: Sequence[Any],
    options: Options,
    edge: str,
    key: Callable[[Any], str] | None,
    timeout: float,
    **counts: int,
) -> tuple[list[str], list[bytes], Callable[[Any], str]]:
    """Validate an adapter's arguments, naming what is wrong; return argv, serialized options and key.

    ``counts`` are the positive ints (``shards``, ``batch_size``, ``flush_every``...).
    Options are serialized ``agent_pb2.Option`` messages: they pickle anywhere.
    """
    if isinstance(command, (str, bytes)) or not isinstance(command, Sequence):
        raise TypeError("command must be the agent's argv as a list of str, e.g. [sys.executable, '-u', 'udf.py']")
    if not command or not all(isinstance(arg, (str, os.PathLike)) for arg in command):
        raise ValueError(f"command must be a non-empty list of str, got {command!r}")
    if edge not in EDGES:
        raise ValueError(f"edge must be 'stream' or 'batch', got {edge!r}")
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be seconds (a number), got {type(timeout).__name__}")
    if key is not None and not callable(key):
        raise TypeError(f"key must be a callable item -> str, got {type(key).__name__}")
    argv = [os.fspath(arg) for arg in command]
    serialized = [option.SerializeToString() for option in build_options(options)]
    return argv, serialized, key if key is not None else default_key


# --- pending items ---------------------------------------------------------------------------

#: A pending entry's time prefix: the item's time + 2**63, big-endian, so that
#: entries sort by time as bytes.
_TIME = struct.Struct(">Q")


def pending_entry(item: Item, edge: int) -> bytes:
    """An item as kept in keyed state until its hand-over: its time, then its request frame(s).

    Encoding validates: a bad item raises ``TypeError``/``ValueError`` naming
    what is wrong, when it arrives.
    """
    if edge == agent_pb2.STREAM:
        if not isinstance(item, Point):
            raise TypeError(f"a stream UDF takes udf.Point items, got {type(item).__name__}")
        return _TIME.pack(item.time + 2**63) + encode_point(item)
    if not isinstance(item, Batch):
        raise TypeError(f"a batch UDF takes udf.Batch items, got {type(item).__name__}")
    return _TIME.pack(item.tmax + 2**63) + encode_batch(item)


def pending_frames(entries: Sequence[bytes]) -> list[bytes]:
    """The frames of ``entries`` in time order (items of equal time in the order they came)."""
    return [entry[8:] for entry in sorted(entries, key=lambda entry: entry[:8])]


# --- one agent ---------------------------------------------------------------------------------


class ShardState(NamedTuple):
    """What an engine keeps for a shard besides its pending items."""

    #: The generation: a fresh random token after every hand-over (``b""`` before any).
    token: bytes
    #: The agent's snapshot after that hand-over (``b""``: start from nothing).
    snapshot: bytes


#: Put into the output channel after the snapshot answer: everything before it
#: belongs to the items just sent.
_BARRIER = object()


class _Agent:
    """One live agent for one shard: a :class:`udf.Process` and the generation it holds."""

    def __init__(self, command: Sequence[str], timeout: float, edge: int, logger: logging.Logger) -> None:
        self.process = Process(command[0], command[1:], timeout=timeout, logger=logger)
        self.edge = edge
        self.provides = edge
        #: The generation token of the state this agent holds.
        self.token = b""
        self.broken = False

    def start(self, who: str, options: list[Any], snapshot: bytes) -> None:
        """Open, check the edge, init and (with a snapshot) restore; InitError/RestoreError as raised."""
        process = self.process
        process.open()
        info = process.info()
        if info.wants != self.edge:
            wants = "stream" if info.wants == agent_pb2.STREAM else "batch"
            given = "stream" if self.edge == agent_pb2.STREAM else "batch"
            raise UDFError(f"agent {process.args!r} wants {wants} data, but {who} was given edge={given!r}")
        self.provides = info.provides
        process.init(options)
        if snapshot:
            process.restore(snapshot)

    def run(self, frames: Sequence[bytes]) -> tuple[list[Item], bytes]:
        """Send ``frames``, take the snapshot barrier; return every output and the snapshot.

        A helper thread drains the output while this one puts (never relying on
        queue sizes). On any failure the agent is aborted, so the drain ends.
        """
        process = self.process
        inlet = process.point_in if self.edge == agent_pb2.STREAM else process.batch_in
        out: Channel[Any] = process.point_out if self.provides == agent_pb2.STREAM else process.batch_out
        outputs: list[Item] = []

        def drain() -> None:
            # Ends at the barrier, or when the abort below (or the agent's end) closes `out`.
            for item in out:
                if item is _BARRIER:
                    return
                outputs.append(item)

        drainer = threading.Thread(target=drain, name="udf-shard-drain", daemon=True)
        drainer.start()
        try:
            put = inlet.put_encoded
            for frame in frames:
                put(frame)
            snapshot = process.snapshot()
            try:
                out.put(_BARRIER)
            except ChannelClosed:
                self.broken = True  # died after answering: the outputs are all queued already
        except BaseException as exc:
            self.broken = True
            process.abort(exc if isinstance(exc, Exception) else UDFError(f"interrupted: {exc!r}"))
            raise
        finally:
            drainer.join()
        return outputs, snapshot

    def close(self, why: str) -> None:
        """End the agent now; its state is in the engine's state already, its late output is dropped."""
        process = self.process
        try:
            if process.pid is not None:
                process.abort(UDFError(why))
            process.close()
        except Exception:
            pass  # the abort's own error, or how the agent died: nothing to act on


# --- the agents of one worker --------------------------------------------------------------------


class ShardAgents:
    """The live agents of one engine worker (a Beam DoFn instance, a Flink task), one per shard.

    ``who`` names the adapter in messages; ``options`` are serialized
    ``agent_pb2.Option`` messages; ``count(name)`` is called for each event
    named in :data:`COUNTERS`. Not thread-safe: an engine calls a worker's
    functions from one thread at a time.
    """

    def __init__(
        self,
        who: str,
        command: Sequence[str],
        options: Sequence[bytes],
        edge: int,
        timeout: float,
        *,
        logger: logging.Logger,
        max_agents: int = MAX_AGENTS,
        count: Callable[[str], None] = lambda name: None,
    ) -> None:
        self._who = who
        self._command = list(command)
        self._options = [agent_pb2.Option.FromString(option) for option in options]
        self._edge = edge
        self._timeout = timeout
        self._log = logger
        self._max_agents = max_agents
        self._count = count
        self._agents: collections.OrderedDict[int, _Agent] = collections.OrderedDict()

    def hand_over(self, shard: int, frames: Sequence[bytes], saved: ShardState) -> tuple[list[Item], ShardState]:
        """Run ``frames`` (in order) through the shard's agent; return the outputs and the new state.

        Write the returned state to the engine's state before emitting the
        outputs. A failed attempt is replayed on a new agent restored from
        ``saved`` (:data:`MAX_ATTEMPTS` tries); then the last error is raised as a
        ``UDFError`` naming the shard. An agent that fails to start (an
        ``InitError``, a program that does not run) raises at once.
        """
        attempt = 0
        while True:
            attempt += 1
            agent = self._agent_for(shard, saved)
            try:
                outputs, snapshot = agent.run(frames)
            except UDFError as exc:
                self._drop(shard)
                self._count("agent_failures")
                if attempt >= MAX_ATTEMPTS:
                    raise UDFError(f"shard {shard}: agent failed {attempt} times on one hand-over: {exc}") from exc
                self._log.warning("shard %d: agent failed (%s); replaying its items on a restored agent", shard, exc)
                continue
            except BaseException:
                self._drop(shard)
                raise
            agent.token = os.urandom(16)
            if agent.broken:
                self._drop(shard)
            return outputs, ShardState(agent.token, snapshot)

    def _agent_for(self, shard: int, saved: ShardState) -> _Agent:
        """The shard's live agent if it holds ``saved``'s generation, else a new one restored from it."""
        agents = self._agents
        agent = agents.get(shard)
        if agent is not None:
            if agent.token == saved.token and not agent.broken:
                agents.move_to_end(shard)
                return agent
            self._drop(shard)
        while len(agents) >= self._max_agents:
            _, oldest = agents.popitem(last=False)
            oldest.close(f"agent released by {self._who}")
        agent = _Agent(self._command, self._timeout, self._edge, self._log)
        agents[shard] = agent
        self._count("agents_started")
        try:
            agent.start(self._who, self._options, saved.snapshot)
        except BaseException:
            self._drop(shard)
            raise
        if saved.snapshot:
            self._count("restores")
        agent.token = saved.token
        return agent

    def _drop(self, shard: int) -> None:
        agent = self._agents.pop(shard, None)
        if agent is not None:
            agent.close(f"agent released by {self._who}")

    def close(self) -> None:
        """End every live agent (their state is in the engine's state)."""
        for shard in list(self._agents):
            self._drop(shard)

    def __len__(self) -> int:
        return len(self._agents)
