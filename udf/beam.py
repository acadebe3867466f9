"""Run any Kapacitor UDF on Apache Beam: ``udf.beam.RunUDF`` (an addition; extra ``beam``).

``RunUDF(command, options)`` is a ``PTransform`` from a ``PCollection`` of
:class:`udf.Point` (or :class:`udf.Batch` with ``edge="batch"``) to the
``PCollection`` of what the agent returns. The same pipeline runs on the
in-process runner (tests), Flink, Spark or Dataflow. How it works:

1. every item gets a shard: ``crc32(key(item)) % shards`` (an int, so Beam's
   key coder is deterministic); one series always lands on one shard;
2. ``GroupIntoBatches(batch_size)`` per shard;
3. a stateful ``DoFn`` keeps one :class:`udf.Process` per shard (a bounded LRU
   per DoFn instance, i.e. per worker thread) and, per group of items: sorts
   them by time, puts them all while a helper thread drains the agent's output,
   asks for a ``snapshot()`` -- the flush barrier: the agent answers it after
   every output of the items before it -- and writes the snapshot with a fresh
   random generation token to Beam state, then emits the outputs.
4. A live agent whose token differs from the state's (a retried bundle, a shard
   that moved between workers, an evicted agent) is discarded and a new one is
   restored from the state's snapshot. An agent that dies mid-group is replaced
   the same way and the group is replayed: its outputs are emitted only after
   the barrier, so nothing is emitted twice.

Items and outputs cross Beam with :class:`UDFItemCoder`, built on the
project's own codec (the protobuf messages of the UDF protocol), not pickle.
See ``docs/beam.md``. Importing this module registers the coder for
:class:`udf.Point` and :class:`udf.Batch`; ``import udf`` never imports Beam.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import zlib
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import agent_pb2

try:
    import apache_beam as beam
    from apache_beam.coders import BytesCoder, Coder, TupleCoder, registry
    from apache_beam.metrics import Metrics
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
except ImportError as exc:  # pragma: no cover - exercised by tests/test_beam_extra.py
    raise ImportError(f"udf.beam needs Apache Beam: pip install 'kapacitor-udf[beam]' ({exc})") from exc

from .channel import Channel
from .convert import BATCH, ResponseDecoder, encode_batch, point_from_message, point_to_message
from .errors import ChannelClosed, UDFError
from .models import Batch, Point
from .options import Options, build_options
from .process import Process
from .wire import FrameDecoder

__all__ = ["RunUDF", "UDFItemCoder", "default_key", "shard_of", "build_options", "MAX_AGENTS", "MAX_ATTEMPTS"]

#: Agents one DoFn instance keeps alive at most (least recently used first out).
MAX_AGENTS = 64
#: Tries of one group of items, each on a fresh agent restored from Beam state,
#: before the bundle fails (and the runner retries it, as its policy says).
MAX_ATTEMPTS = 3
#: In a streaming pipeline, how long a shard's partial group may wait for more
#: items before it is handed to the agent anyway (GroupIntoBatches'
#: ``max_buffering_duration_secs``; a global window never ends by itself).
STREAMING_FLUSH_SECS = 1.0
#: Beam metrics namespace of RunUDF's counters (agents_started, agent_failures, restores).
METRICS_NAMESPACE = "udf.beam"

_EDGES = {"stream": agent_pb2.STREAM, "batch": agent_pb2.BATCH}
_POINT_TAG = b"P"
_BATCH_TAG = b"B"

Item = Union[Point, Batch]
OptionsArg = Options

_log = logging.getLogger("udf.beam")


# --- the coder -------------------------------------------------------------------------


class UDFItemCoder(Coder):  # type: ignore[misc]
    """A Beam coder for :class:`udf.Point` and :class:`udf.Batch` on the UDF protocol's codec.

    A point is a tag byte and a serialized ``agent_pb2.Point``; a batch is a tag
    byte and its BeginBatch, Point..., EndBatch request frames (what the host
    writes to an agent), decoded as an agent's responses are. Every value type
    (double, int, string, bool) and nanosecond time round-trips exactly.
    """

    def encode(self, value: Item) -> bytes:
        if isinstance(value, Point):
            body: bytes = point_to_message(value).SerializeToString()
            return _POINT_TAG + body
        if isinstance(value, Batch):
            return _BATCH_TAG + encode_batch(value)
        raise TypeError(f"UDFItemCoder encodes udf.Point or udf.Batch, got {type(value).__name__}")

    def decode(self, encoded: bytes) -> Item:
        tag, body = encoded[:1], encoded[1:]
        if tag == _POINT_TAG:
            return point_from_message(agent_pb2.Point.FromString(body))
        if tag == _BATCH_TAG:
            frames = FrameDecoder().feed_frames(body)
            events, error = ResponseDecoder().decode_frames(frames)
            if error is not None:
                raise error
            batches = [item for kind, item in events if kind is BATCH]
            if len(batches) != 1:
                raise ValueError(f"encoded batch holds {len(batches)} batches, expected 1")
            batch: Batch = batches[0]
            return batch
        raise ValueError(f"not a UDFItemCoder encoding: tag {tag!r}")

    def is_deterministic(self) -> bool:
        return False  # protobuf maps (tags, fields) have no fixed order

    def to_type_hint(self) -> Any:
        return Any

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


registry.register_coder(Point, UDFItemCoder)
registry.register_coder(Batch, UDFItemCoder)


# --- keys and shards ---------------------------------------------------------------------


def default_key(item: Item) -> str:
    """The series of an item: its ``group``, else its name and sorted tags."""
    if item.group:
        return item.group
    tags = ",".join(f"{k}={v}" for k, v in sorted(item.tags.items()))
    return f"{item.name}\n{tags}"


def shard_of(key: str, shards: int) -> int:
    """The shard of series ``key``: ``crc32(key) % shards`` (stable across processes and runs)."""
    return zlib.crc32(key.encode("utf-8")) % shards


# --- one agent -----------------------------------------------------------------------------

#: Put into the output channel after the snapshot answer: everything before it
#: belongs to the group of items just sent.
_BARRIER = object()


class _Agent:
    """One live agent for one shard: a :class:`udf.Process` and the generation it holds."""

    def __init__(self, command: Sequence[str], timeout: float, edge: int) -> None:
        self.process = Process(command[0], command[1:], timeout=timeout, logger=_log)
        self.edge = edge
        self.provides = edge
        #: The generation token of the state this agent holds (b"" before any group).
        self.token = b""
        self.broken = False

    def start(self, options: List[Any], snapshot: bytes) -> None:
        """Open, check the edge, init and (with a snapshot) restore; InitError/RestoreError as raised."""
        process = self.process
        process.open()
        info = process.info()
        if info.wants != self.edge:
            wants = "stream" if info.wants == agent_pb2.STREAM else "batch"
            raise UDFError(
                f"agent {self.process.args!r} wants {wants} data, but RunUDF was given "
                f"edge={'stream' if self.edge == agent_pb2.STREAM else 'batch'!r}"
            )
        self.provides = info.provides
        process.init(options)
        if snapshot:
            process.restore(snapshot)

    def run(self, items: Sequence[Item]) -> Tuple[List[Item], bytes]:
        """Send ``items``, take the snapshot barrier; return every output and the snapshot.

        A helper thread drains the output while this one puts (never relying on
        queue sizes). On any failure the agent is aborted, so the drain ends.
        """
        process = self.process
        inlet = process.point_in if self.edge == agent_pb2.STREAM else process.batch_in
        out: Channel[Any] = process.point_out if self.provides == agent_pb2.STREAM else process.batch_out
        outputs: List[Item] = []

        def drain() -> None:
            for item in out:
                if item is _BARRIER:
                    return
                outputs.append(item)

        drainer = threading.Thread(target=drain, name="udf-beam-drain", daemon=True)
        drainer.start()
        try:
            put = inlet.put
            for item in items:
                put(item)
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

    def close(self) -> None:
        """End the agent now; its state is in Beam state already, its late output is dropped."""
        process = self.process
        try:
            if process.pid is not None:
                process.abort(UDFError("agent released by udf.beam"))
            process.close()
        except Exception:
            pass  # the abort's own error, or how the agent died: nothing to act on


# --- the stateful DoFn --------------------------------------------------------------------------


def _sort_key(item: Item) -> int:
    return item.time if isinstance(item, Point) else item.tmax


class _RunUDFFn(beam.DoFn):  # type: ignore[misc]
    """Per shard: run each group of items through the shard's agent; keep its snapshot in state."""

    AGENT_STATE = ReadModifyWriteStateSpec("udf_agent_state", TupleCoder([BytesCoder(), BytesCoder()]))

    def __init__(self, command: List[str], options: List[bytes], edge: int, timeout: float) -> None:
        self._command = command
        self._options_bytes = options  # serialized agent_pb2.Option: pickles anywhere
        self._edge = edge
        self._timeout = timeout
        self._agents: "collections.OrderedDict[int, _Agent]" = collections.OrderedDict()
        self._options: List[Any] = []

    def setup(self) -> None:
        self._agents = collections.OrderedDict()
        self._options = [agent_pb2.Option.FromString(b) for b in self._options_bytes]
        self._started = Metrics.counter(METRICS_NAMESPACE, "agents_started")
        self._failures = Metrics.counter(METRICS_NAMESPACE, "agent_failures")
        self._restores = Metrics.counter(METRICS_NAMESPACE, "restores")

    def process(
        self,
        element: Tuple[int, Iterable[Item]],
        agent_state: Any = beam.DoFn.StateParam(AGENT_STATE),
    ) -> Iterator[Item]:
        shard, group = element
        items = sorted(group, key=_sort_key)
        saved = agent_state.read()
        token, snapshot = saved if saved is not None else (b"", b"")
        attempt = 0
        while True:
            attempt += 1
            agent = self._agent_for(shard, token, snapshot)
            try:
                outputs, new_snapshot = agent.run(items)
            except UDFError as exc:
                self._drop(shard)
                self._failures.inc()
                if attempt >= MAX_ATTEMPTS:
                    raise UDFError(f"shard {shard}: agent failed {attempt} times on one group of items: {exc}") from exc
                _log.warning("shard %d: agent failed (%s); replaying its group on a restored agent", shard, exc)
                continue
            except Exception:
                self._drop(shard)
                raise
            agent.token = os.urandom(16)
            agent_state.write((agent.token, new_snapshot))
            if agent.broken:
                self._drop(shard)
            yield from outputs
            return

    def _agent_for(self, shard: int, token: bytes, snapshot: bytes) -> _Agent:
        """The shard's live agent if it holds generation ``token``, else a new one restored from ``snapshot``."""
        agents = self._agents
        agent = agents.get(shard)
        if agent is not None:
            if agent.token == token and not agent.broken:
                agents.move_to_end(shard)
                return agent
            self._drop(shard)
        while len(agents) >= MAX_AGENTS:
            _, oldest = agents.popitem(last=False)
            oldest.close()
        agent = _Agent(self._command, self._timeout, self._edge)
        agents[shard] = agent
        self._started.inc()
        try:
            agent.start(self._options, snapshot)
        except BaseException:
            self._drop(shard)
            raise
        if snapshot:
            self._restores.inc()
        agent.token = token
        return agent

    def _drop(self, shard: int) -> None:
        agent = self._agents.pop(shard, None)
        if agent is not None:
            agent.close()

    def teardown(self) -> None:
        for shard in list(self._agents):
            self._drop(shard)


# --- the transform ---------------------------------------------------------------------------


class _ShardBy:
    """``item -> (shard, item)``: a picklable callable for ``beam.Map``."""

    def __init__(self, key: Callable[[Any], str], shards: int) -> None:
        self._key = key
        self._shards = shards

    def __call__(self, item: Item) -> Tuple[int, Item]:
        key = self._key(item)
        if not isinstance(key, str):
            raise TypeError(f"RunUDF key() must return a str, got {type(key).__name__} for {item!r:.120}")
        return shard_of(key, self._shards), item


class RunUDF(beam.PTransform):  # type: ignore[misc]
    """Run the UDF agent ``command`` over a ``PCollection`` of points (or batches).

    ``command`` is the agent's argv (e.g. ``[sys.executable, "-u", "moving_avg.py"]``);
    ``options`` its init options, a list of ``agent_pb2.Option`` or a mapping
    ``{name: value or [values]}``; ``edge`` ``"stream"`` (items are
    :class:`udf.Point`) or ``"batch"`` (:class:`udf.Batch`); ``key(item)`` the
    series of an item (default: :func:`default_key`); ``shards`` how many
    agents the series are spread over; ``batch_size`` items per snapshot barrier;
    ``timeout`` the keepalive timeout in seconds (``<= 0`` disables it).
    The output is what the agent returns: points for a stream agent, batches for
    a batch agent (typed as the input is; :class:`UDFItemCoder` carries both).
    """

    def __init__(
        self,
        command: Sequence[str],
        options: OptionsArg = None,
        *,
        edge: str = "stream",
        key: Optional[Callable[[Any], str]] = None,
        shards: int = 64,
        batch_size: int = 500,
        timeout: float = 10.0,
    ) -> None:
        super().__init__()
        if isinstance(command, (str, bytes)) or not isinstance(command, Sequence):
            raise TypeError("command must be the agent's argv as a list of str, e.g. [sys.executable, '-u', 'udf.py']")
        if not command or not all(isinstance(arg, (str, os.PathLike)) for arg in command):
            raise ValueError(f"command must be a non-empty list of str, got {command!r}")
        if edge not in _EDGES:
            raise ValueError(f"edge must be 'stream' or 'batch', got {edge!r}")
        for name, value in (("shards", shards), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be seconds (a number), got {type(timeout).__name__}")
        if key is not None and not callable(key):
            raise TypeError(f"key must be a callable item -> str, got {type(key).__name__}")
        self._command = [os.fspath(arg) for arg in command]
        self._options = [option.SerializeToString() for option in build_options(options)]
        self._edge = edge
        self._key = key if key is not None else default_key
        self._shards = shards
        self._batch_size = batch_size
        self._timeout = float(timeout)

    def expand(self, items: Any) -> Any:
        item_type = Point if self._edge == "stream" else Batch
        streaming = items.pipeline.options.view_as(StandardOptions).streaming
        flush = {"max_buffering_duration_secs": STREAMING_FLUSH_SECS} if streaming else {}
        return (
            items
            | "Shard" >> beam.Map(_ShardBy(self._key, self._shards)).with_output_types(Tuple[int, item_type])
            | "GroupIntoBatches" >> beam.GroupIntoBatches(self._batch_size, **flush)
            | "RunAgent"
            >> beam.ParDo(_RunUDFFn(self._command, self._options, _EDGES[self._edge], self._timeout)).with_output_types(
                item_type
            )
        )

