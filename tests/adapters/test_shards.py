"""udf.shards, the engine-neutral core of udf.beam and udf.flink, with real agents and no engine.

The engine's part is played by the test: it keeps the :class:`ShardState` a
hand-over returns (or an older one, as a restored checkpoint would) and passes
it to the next hand-over.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
from collections import Counter
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import pytest

import agent_pb2
import udf
from udf.shards import (
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

from ..helpers import ROOT
from .reference import AVG_OPTIONS, KILL_ONCE, MOVING_AVG, normalize, reference_run, sample_series

CRASH = os.path.join(ROOT, "tests", "agents", "crash.py")
EMPTY = ShardState(b"", b"")


class Counts:
    """The ``count`` callback of ShardAgents: how often each event happened."""

    def __init__(self) -> None:
        self.seen: Counter[str] = collections.Counter()

    def __call__(self, name: str) -> None:
        self.seen[name] += 1


def agents_for(command: Sequence[str], counts: Counts, options: Any = AVG_OPTIONS, **kwargs: Any) -> ShardAgents:
    argv, serialized, _ = check_arguments(command, options, "stream", None, 10.0)
    return ShardAgents(
        "test", argv, serialized, agent_pb2.STREAM, 10.0, logger=logging.getLogger("test"), count=counts, **kwargs
    )


def frames_of(points: Sequence[udf.Point]) -> list[bytes]:
    return pending_frames([pending_entry(p, agent_pb2.STREAM) for p in points])


def as_counter(items: Sequence[Any]) -> Counter[Hashable]:
    return collections.Counter(normalize(item) for item in items)


@pytest.fixture
def series() -> list[udf.Point]:
    """Twelve hosts' points in time order: one shard's worth."""
    return [p for points in zip(*list(sample_series().values())[:12], strict=True) for p in points]


# --- keys, shards, pending items ---------------------------------------------------------------


def test_keys_and_shards_are_stable() -> None:
    assert default_key(udf.Point(name="cpu", group="cpu\nhost=a", tags={"host": "b"})) == "cpu\nhost=a"
    assert default_key(udf.Batch(name="cpu", tags={"host": "a"})) == "cpu\nhost=a"
    assert shard_of("cpu\nhost=a", 64) == 3973279567 % 64  # crc32, the same in every process
    assert ShardOf(default_key, 64)(udf.Point(group="cpu\nhost=a")) == shard_of("cpu\nhost=a", 64)
    with pytest.raises(TypeError, match="key\\(\\) must return a str, got int"):
        ShardOf(lambda item: 3, 4)(udf.Point())  # type: ignore[arg-type, return-value]


def test_pending_items_sort_by_time_and_keep_arrival_order_on_ties() -> None:
    times = [5, -(2**62), 0, 2**62, -1, 5]
    points = [udf.Point(name=f"p{i}", time=t) for i, t in enumerate(times)]
    entries = [pending_entry(p, agent_pb2.STREAM) for p in points]
    frames = pending_frames(entries)
    names = [agent_pb2.Request.FromString(f[1:]).point.name for f in frames]  # one-byte length prefix here
    assert names == ["p1", "p4", "p2", "p0", "p5", "p3"]
    batch = udf.Batch(name="b", tmax=-7, points=[udf.BatchPoint(1, {"v": 1.0})])
    assert pending_frames([pending_entry(batch, agent_pb2.BATCH)])[0] == udf.convert.encode_batch(batch)


def test_a_wrong_item_is_refused_when_it_arrives_naming_it() -> None:
    with pytest.raises(TypeError, match="a stream UDF takes udf.Point items, got Batch"):
        pending_entry(udf.Batch(), agent_pb2.STREAM)
    with pytest.raises(TypeError, match="a batch UDF takes udf.Batch items, got Point"):
        pending_entry(udf.Point(), agent_pb2.BATCH)
    with pytest.raises(TypeError, match="field 'v'"):
        pending_entry(udf.Point(fields={"v": object()}), agent_pb2.STREAM)  # type: ignore[dict-item]


# --- hand-overs and generations ----------------------------------------------------------------------


def test_hand_overs_of_the_current_generation_reuse_the_live_agent(series: list[udf.Point]) -> None:
    expected = reference_run(MOVING_AVG, AVG_OPTIONS, [series], "stream")
    counts = Counts()
    agents = agents_for(MOVING_AVG, counts)
    try:
        half = len(series) // 2
        first, state1 = agents.hand_over(7, frames_of(series[:half]), EMPTY)
        second, state2 = agents.hand_over(7, frames_of(series[half:]), state1)
    finally:
        agents.close()
    assert as_counter(first + second) == expected
    assert counts.seen == {"agents_started": 1}
    assert state1.token != state2.token and len(state2.token) == 16
    assert b'"windows"' in state2.snapshot  # moving_avg's own snapshot


def test_a_state_the_live_agent_does_not_hold_gets_a_restored_agent(series: list[udf.Point]) -> None:
    """A restored checkpoint hands over from an older state: the live agent, ahead of it, is replaced."""
    counts = Counts()
    agents = agents_for(MOVING_AVG, counts)
    half = len(series) // 2
    try:
        _, state1 = agents.hand_over(0, frames_of(series[:half]), EMPTY)
        outputs, state2 = agents.hand_over(0, frames_of(series[half:]), state1)
        assert counts.seen == {"agents_started": 1}
        again, state3 = agents.hand_over(0, frames_of(series[half:]), state1)  # back to the checkpoint
    finally:
        agents.close()
    assert as_counter(again) == as_counter(outputs) and len(outputs) > 0
    assert state3.snapshot == state2.snapshot and state3.token not in (state1.token, state2.token)
    assert counts.seen == {"agents_started": 2, "restores": 1}


def test_at_most_max_agents_live_and_an_evicted_shard_is_restored(series: list[udf.Point]) -> None:
    expected = reference_run(MOVING_AVG, AVG_OPTIONS, [series], "stream")
    counts = Counts()
    agents = agents_for(MOVING_AVG, counts, max_agents=1)
    states = {0: EMPTY, 1: EMPTY}
    outputs: list[Any] = []
    try:
        for i in range(0, len(series), 20):  # the first 6 hosts on shard 0, the others on shard 1
            for shard in (0, 1):
                chunk = [p for p in series[i : i + 20] if (int(p.tags["host"][1:]) % 12 >= 6) == shard]
                out, states[shard] = agents.hand_over(shard, frames_of(chunk), states[shard])
                outputs += out
                assert len(agents) == 1
    finally:
        agents.close()
    assert as_counter(outputs) == expected
    assert counts.seen["agents_started"] == counts.seen["restores"] + 2  # each shard's first starts empty


# --- failures ------------------------------------------------------------------------------------------


def test_an_agent_killed_mid_hand_over_is_replaced_and_its_items_replayed(
    series: list[udf.Point], tmp_path: Path
) -> None:
    expected = reference_run(MOVING_AVG, AVG_OPTIONS, [series], "stream")
    marker = tmp_path / "killed"
    counts = Counts()
    agents = agents_for([sys.executable, "-u", KILL_ONCE, str(marker), "70"], counts)
    state, outputs = EMPTY, []
    try:
        for i in range(0, len(series), 50):
            out, state = agents.hand_over(3, frames_of(series[i : i + 50]), state)
            outputs += out
    finally:
        agents.close()
    assert marker.exists(), "no agent reached its 70th point: the test injected nothing"
    assert as_counter(outputs) == expected  # nothing lost, nothing twice
    assert counts.seen == {"agents_started": 2, "agent_failures": 1, "restores": 1}


def test_a_hand_over_failing_max_attempts_times_raises_naming_the_shard(series: list[udf.Point]) -> None:
    counts = Counts()
    agents = agents_for([sys.executable, "-u", CRASH, "2", "3"], counts, options={"field": "x"})
    try:
        with pytest.raises(
            udf.UDFError, match=f"shard 5: agent failed {MAX_ATTEMPTS} times on one hand-over: .*exit status 3"
        ):
            agents.hand_over(5, frames_of(series[:5]), EMPTY)
    finally:
        agents.close()
    assert counts.seen == {"agents_started": MAX_ATTEMPTS, "agent_failures": MAX_ATTEMPTS}
    assert len(agents) == 0


def test_an_agent_failing_init_is_not_retried() -> None:
    counts = Counts()
    agents = agents_for(MOVING_AVG, counts, options={"size": 3})
    try:
        with pytest.raises(udf.InitError, match="missing required option 'field'"):
            agents.hand_over(0, frames_of([udf.Point(group="g", fields={"v": 1.0})]), EMPTY)
    finally:
        agents.close()
    assert counts.seen == {"agents_started": 1}


def test_an_agent_of_the_other_edge_type_is_refused() -> None:
    argv, serialized, _ = check_arguments(MOVING_AVG, AVG_OPTIONS, "batch", None, 10.0)
    agents = ShardAgents("run_udf", argv, serialized, agent_pb2.BATCH, 10.0, logger=logging.getLogger("test"))
    try:
        with pytest.raises(udf.UDFError, match="wants stream data, but run_udf was given edge='batch'"):
            agents.hand_over(0, [], EMPTY)
    finally:
        agents.close()


def test_close_ends_every_agent(series: list[udf.Point]) -> None:
    agents = agents_for(MOVING_AVG, Counts())
    for shard in range(3):
        agents.hand_over(shard, frames_of(series[:4]), EMPTY)
    processes = [agent.process for agent in agents._agents.values()]
    agents.close()
    assert len(agents) == 0
    assert all(process.returncode is not None for process in processes)
