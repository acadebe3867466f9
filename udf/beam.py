"""Run any Kapacitor UDF on Apache Beam: ``udf.beam.RunUDF`` (an addition; extra ``beam``).

``RunUDF(command, options)`` is a ``PTransform`` from a ``PCollection`` of
:class:`udf.Point` (or :class:`udf.Batch` with ``edge="batch"``) to the
``PCollection`` of what the agent returns. The same pipeline runs on the
in-process runner (tests), Flink, Spark or Dataflow. How it works:

1. every item gets a shard: ``crc32(key(item)) % shards`` (an int, so Beam's
   key coder is deterministic); one series always lands on one shard;
2. ``GroupIntoBatches(batch_size)`` per shard;
3. a stateful ``DoFn`` hands each group, sorted by time, to the shard's agent
   (:class:`udf.shards.ShardAgents`, one per DoFn instance, i.e. per worker
   thread): the items, then a ``snapshot()`` -- the barrier -- whose result is
   written with a fresh generation token to Beam state before the group's
   outputs are emitted. A live agent whose token differs from the state's (a
   retried bundle, a shard that moved between workers, an evicted agent) is
   replaced by one restored from the state; an agent that dies mid-group is
   replaced the same way and the group replayed (``MAX_ATTEMPTS`` tries).

The sharding, the hand-over and the replay are :mod:`udf.shards`, shared with
``udf.flink``; this module binds them to Beam.

Items and outputs cross Beam with :class:`UDFItemCoder`, built on the
project's own codec (the protobuf messages of the UDF protocol), not pickle.
See ``docs/beam.md``. Importing this module registers the coder for
:class:`udf.Point` and :class:`udf.Batch`; ``import udf`` never imports Beam.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Iterator, List, Sequence, Tuple, Union

import agent_pb2

try:
    import apache_beam as beam
    from apache_beam.coders import BytesCoder, Coder, TupleCoder, registry
    from apache_beam.metrics import Metrics
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
except ImportError as exc:  # pragma: no cover - exercised by tests/adapters/test_beam_extra.py
    raise ImportError(f"udf.beam needs Apache Beam: pip install 'kapacitor-udf[beam]' ({exc})") from exc

from .convert import BATCH, ResponseDecoder, encode_batch, point_from_message, point_to_message
from .models import Batch, Point
from .options import Options, build_options
from .shards import (
    COUNTERS,
    EDGES,
    MAX_ATTEMPTS,
    ShardAgents,
    ShardOf,
    ShardState,
    check_arguments,
    default_key,
    pending_entry,
    pending_frames,
    shard_of,
)
from .wire import FrameDecoder

__all__ = ["RunUDF", "UDFItemCoder", "default_key", "shard_of", "build_options", "MAX_AGENTS", "MAX_ATTEMPTS"]

#: Agents one DoFn instance keeps alive at most (least recently used first out).
MAX_AGENTS = 64
#: In a streaming pipeline, how long a shard's partial group may wait for more
#: items before it is handed to the agent anyway (GroupIntoBatches'
#: ``max_buffering_duration_secs``; a global window never ends by itself).
STREAMING_FLUSH_SECS = 1.0
#: Beam metrics namespace of RunUDF's counters (agents_started, agent_failures, restores).
METRICS_NAMESPACE = "udf.beam"

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


# --- the stateful DoFn --------------------------------------------------------------------------


class _RunUDFFn(beam.DoFn):  # type: ignore[misc]
    """Per shard: hand each group of items to the shard's agent; keep its state in Beam state."""

    AGENT_STATE = ReadModifyWriteStateSpec("udf_agent_state", TupleCoder([BytesCoder(), BytesCoder()]))

    def __init__(self, command: List[str], options: List[bytes], edge: int, timeout: float) -> None:
        self._command = command
        self._options = options  # serialized agent_pb2.Option: pickles anywhere
        self._edge = edge
        self._timeout = timeout
        self._agents: ShardAgents | None = None

    def setup(self) -> None:
        counters = {name: Metrics.counter(METRICS_NAMESPACE, name) for name in COUNTERS}
        self._agents = ShardAgents(
            "RunUDF",
            self._command,
            self._options,
            self._edge,
            self._timeout,
            logger=_log,
            max_agents=MAX_AGENTS,
            count=lambda name: counters[name].inc(),
        )

    def process(
        self,
        element: Tuple[int, Iterable[Item]],
        agent_state: Any = beam.DoFn.StateParam(AGENT_STATE),  # noqa: B008 - Beam's way to ask for state
    ) -> Iterator[Item]:
        shard, group = element
        edge = self._edge
        frames = pending_frames([pending_entry(item, edge) for item in group])
        saved = agent_state.read()
        assert self._agents is not None, "setup() runs first"
        outputs, state = self._agents.hand_over(shard, frames, ShardState(*saved) if saved else ShardState(b"", b""))
        agent_state.write(tuple(state))  # the barrier: state first, then the outputs
        yield from outputs

    def teardown(self) -> None:
        if self._agents is not None:
            self._agents.close()


# --- the transform ---------------------------------------------------------------------------


class _ShardBy(ShardOf):
    """``item -> (shard, item)``: a picklable callable for ``beam.Map``."""

    def __call__(self, item: Item) -> Tuple[int, Item]:  # type: ignore[override]
        return super().__call__(item), item


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
        key: Callable[[Any], str] | None = None,
        shards: int = 64,
        batch_size: int = 500,
        timeout: float = 10.0,
    ) -> None:
        super().__init__()
        self._command, self._options, self._key = check_arguments(
            command, options, edge, key, timeout, shards=shards, batch_size=batch_size
        )
        self._edge = edge
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
            >> beam.ParDo(_RunUDFFn(self._command, self._options, EDGES[self._edge], self._timeout)).with_output_types(
                item_type
            )
        )
