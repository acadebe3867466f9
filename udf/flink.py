"""Run any Kapacitor UDF on Apache Flink, exactly once: ``udf.flink.run_udf`` (an addition; extra ``flink``).

``run_udf(stream, command, options)`` takes a PyFlink ``DataStream`` of
:class:`udf.Point` (or :class:`udf.Batch` with ``edge="batch"``), typed
``Types.PICKLED_BYTE_ARRAY()``, and returns the ``DataStream`` of what the
agent returns, typed the same. How it works:

1. the stream is keyed by shard, ``crc32(key(item)) % shards``: one series
   always lands on one shard, and Flink spreads the shards over its tasks;
2. a ``KeyedProcessFunction`` keeps each shard's pending items in Flink keyed
   state (a list of encoded request frames) and hands them, in time order, to
   the shard's agent every ``flush_every`` items, when a processing-time timer
   ``flush_interval`` seconds after the first pending item fires, and at the end
   of a bounded input (an event-time timer at the last watermark);
3. the hand-over is :class:`udf.shards.ShardAgents`' (shared with ``udf.beam``):
   the items, then a snapshot -- the barrier -- whose result goes into keyed
   state with a fresh generation token before the outputs are emitted; a live
   agent whose generation is not the state's (a restored checkpoint, a rescaled
   or moved key group) is replaced by one restored from the state; an agent that
   fails mid-hand-over is replaced the same way and the items replayed (3
   tries); then the task fails and Flink restarts it from its last checkpoint.

Every pending item and every agent snapshot is in keyed state, so a checkpoint
holds all a shard needs; with a transactional sink (``FileSink``) the committed
output holds each result exactly once. See ``docs/flink.md``. ``import udf``
never imports this module or PyFlink.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

try:
    from pyflink.common import Types
    from pyflink.datastream import DataStream, KeyedProcessFunction, RuntimeContext, TimeDomain
    from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor
except ImportError as exc:  # pragma: no cover - exercised by tests/adapters/test_flink_extra.py
    raise ImportError(f"udf.flink needs PyFlink: pip install 'kapacitor-udf[flink]' (and Java 11+) ({exc})") from exc

from .options import Options
from .shards import (
    COUNTERS,
    EDGES,
    MAX_AGENTS,
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

__all__ = ["run_udf", "default_key", "shard_of", "MAX_AGENTS", "MAX_ATTEMPTS", "END_OF_INPUT", "METRICS_GROUP"]

#: The event-time timer that hands over what is pending at the end of a bounded
#: input: Flink's last watermark (Long.MAX_VALUE) fires every timer before it.
END_OF_INPUT = 2**63 - 2
#: Flink metric group of run_udf's counters (agents_started, agent_failures, restores).
METRICS_GROUP = "udf"

_BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())

_log = logging.getLogger("udf.flink")


class _RunUDFFunction(KeyedProcessFunction):  # type: ignore[misc]
    """Per shard (the key): keep pending items in keyed state; hand them to the shard's agent."""

    def __init__(
        self, command: list[str], options: list[bytes], edge: int, timeout: float, flush_every: int, interval_ms: int
    ) -> None:
        self._command = command
        self._options = options  # serialized agent_pb2.Option: pickles anywhere
        self._edge = edge
        self._timeout = timeout
        self._flush_every = flush_every
        self._interval_ms = interval_ms
        self._agents: ShardAgents | None = None

    def open(self, runtime_context: RuntimeContext) -> None:
        #: The shard's items not handed over yet (time, then request frames: see pending_entry).
        self._pending = runtime_context.get_list_state(ListStateDescriptor("udf_pending", _BYTES))
        self._pending_count = runtime_context.get_state(ValueStateDescriptor("udf_pending_count", Types.INT()))
        #: When the processing-time timer of the pending items fires (ms since the epoch).
        self._deadline = runtime_context.get_state(ValueStateDescriptor("udf_flush_deadline", Types.LONG()))
        #: The ShardState after the last hand-over: (generation token, agent snapshot).
        self._agent_state = runtime_context.get_state(
            ValueStateDescriptor("udf_agent_state", Types.TUPLE([_BYTES, _BYTES]))
        )
        group = runtime_context.get_metrics_group().add_group(METRICS_GROUP)
        counters = {name: group.counter(name) for name in COUNTERS}
        self._agents = ShardAgents(
            "run_udf",
            self._command,
            self._options,
            self._edge,
            self._timeout,
            logger=_log,
            max_agents=MAX_AGENTS,
            count=lambda name: counters[name].inc(),
        )

    def process_element(self, item: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        self._pending.add(pending_entry(item, self._edge))
        count = (self._pending_count.value() or 0) + 1
        if count >= self._flush_every:
            yield from self._hand_over(ctx)
            return
        self._pending_count.update(count)
        if count == 1:
            timers = ctx.timer_service()
            deadline = timers.current_processing_time() + self._interval_ms
            timers.register_processing_time_timer(deadline)
            self._deadline.update(deadline)
            timers.register_event_time_timer(END_OF_INPUT)  # one per key: Flink keeps timers unique

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME and timestamp != self._deadline.value():
            return  # the timer of items handed over already
        yield from self._hand_over(ctx)

    def _hand_over(self, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        """Hand the pending items to the shard's agent; state first, then the outputs."""
        entries = list(self._pending.get() or ())
        deadline = self._deadline.value()
        if deadline is not None:
            ctx.timer_service().delete_processing_time_timer(deadline)
            self._deadline.clear()
        self._pending.clear()
        self._pending_count.clear()
        if not entries:
            return
        saved = self._agent_state.value()
        assert self._agents is not None, "open() runs first"
        outputs, state = self._agents.hand_over(
            ctx.get_current_key(), pending_frames(entries), ShardState(*saved) if saved else ShardState(b"", b"")
        )
        self._agent_state.update(tuple(state))
        yield from outputs

    def close(self) -> None:
        if self._agents is not None:
            self._agents.close()


def run_udf(
    stream: DataStream,
    command: Sequence[str],
    options: Options = None,
    *,
    edge: str = "stream",
    key: Callable[[Any], str] | None = None,
    shards: int = 64,
    flush_every: int = 500,
    flush_interval: float = 1.0,
    timeout: float = 10.0,
) -> DataStream:
    """Run the UDF agent ``command`` over ``stream``; return the stream of what it returns.

    ``stream`` holds :class:`udf.Point` (``edge="stream"``) or :class:`udf.Batch`
    (``edge="batch"``) typed ``Types.PICKLED_BYTE_ARRAY()``; ``command`` is the
    agent's argv as each TaskManager runs it; ``options`` its init options (a
    list of ``agent_pb2.Option`` or a mapping ``{name: value or [values]}``);
    ``key(item)`` the series of an item (default :func:`default_key`); ``shards``
    how many agents the series are spread over; pending items are handed to an
    agent every ``flush_every`` items, ``flush_interval`` seconds after the first
    of them (processing time) and at the end of a bounded input; ``timeout`` is
    each agent's keepalive timeout in seconds (``<= 0``: none).
    """
    if not isinstance(stream, DataStream):
        raise TypeError(f"stream must be a pyflink DataStream, got {type(stream).__name__}")
    argv, serialized, key_of = check_arguments(
        command, options, edge, key, timeout, shards=shards, flush_every=flush_every
    )
    if isinstance(flush_interval, bool) or not isinstance(flush_interval, (int, float)) or not flush_interval > 0:
        raise ValueError(f"flush_interval must be a positive number of seconds, got {flush_interval!r}")
    function = _RunUDFFunction(
        argv, serialized, EDGES[edge], float(timeout), flush_every, max(1, round(flush_interval * 1000))
    )
    name = f"udf {' '.join(argv[-1:])}"
    return (
        stream.key_by(ShardOf(key_of, shards), key_type=Types.INT())
        .process(function, output_type=Types.PICKLED_BYTE_ARRAY())
        .name(name)
    )
