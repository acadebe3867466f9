"""Server.stats(): counters, depths, keepalive round trip, state; and through Process."""

from __future__ import annotations

import logging
import sys

import pytest

import agent_pb2
import udf
from udf import Batch, BatchPoint, Point

from ..helpers import AGENTS, TIMEOUT, WaitForLog, run_in_thread
from ..helpers.fake_agent import FakeAgent


def test_stats_count_a_conversation(agent: FakeAgent) -> None:
    s = agent.server()
    assert s.stats().state == "new" and s.stats().uptime == 0.0
    s.start()
    join = run_in_thread(s.init, None)
    agent.next_request("init")
    agent.respond(init=agent_pb2.InitResponse(success=True))
    join()
    for i in range(3):
        s.point_in.put(Point(name=str(i)))
    s.batch_in.put(Batch(name="b", points=[BatchPoint(time=1), BatchPoint(time=2)]))
    for _ in range(3):
        agent.respond(point=agent.next_request("point").point)
    for kind in ("begin", "point", "point", "end"):
        agent.respond(**{kind: getattr(agent.next_request(kind), kind)})
    assert [p.name for p in (s.point_out.get(timeout=TIMEOUT) for _ in range(3))] == ["0", "1", "2"]
    assert len(s.batch_out.get(timeout=TIMEOUT).points) == 2
    agent.respond(snapshot=agent_pb2.SnapshotResponse(snapshot=b"x"))  # nobody asked: an error event
    agent.close_output()
    s.stop()
    stats = s.stats()
    assert stats.state == "stopped"
    assert (stats.points_in, stats.batches_in, stats.points_out, stats.batches_out) == (3, 1, 3, 1)
    assert stats.requests == {"init": 1}
    assert stats.errors == 1 and stats.error is None
    assert stats.bytes_out > 0 and stats.bytes_in > 0
    assert stats.in_queue == stats.point_out_queue == stats.batch_out_queue == 0
    assert stats.uptime > 0
    assert stats.keepalive_rtt is None
    assert agent.finish() == []


def test_stats_queue_depths_and_abort(agent: FakeAgent) -> None:
    s = agent.server()
    s.start()
    for i in range(5):
        agent.respond(point=agent_pb2.Point(name=str(i)))
    # Responses are handled in order: once the snapshot is answered, the five
    # points before it have been delivered (and nobody consumed them).
    join = run_in_thread(s.snapshot)
    agent.next_request("snapshot")
    agent.respond(snapshot=agent_pb2.SnapshotResponse(snapshot=b"s"))
    assert join() == b"s"
    stats = s.stats()
    assert stats.points_out == 5 and stats.point_out_queue == 5 and stats.state == "running"
    err = udf.UDFError("enough")
    s.abort(err)
    s.abort(udf.UDFError("again"))
    agent.close_output()
    assert s.wait_io(TIMEOUT)
    stats = s.stats()
    assert stats.state == "aborted" and stats.error == "enough" and stats.errors == 2
    with pytest.raises(udf.UDFError):
        s.stop()
    assert agent.finish() == []


def test_keepalive_round_trip_through_a_real_process() -> None:
    answered = WaitForLog("keepalive 1 answered")
    logger = logging.getLogger("udf.test.stats")
    logger.addHandler(answered)
    logger.setLevel(logging.DEBUG)
    p = udf.Process(sys.executable, [str(AGENTS / "slow_keepalive.py"), "0.0"], logger=logger, timeout=2.0)
    p.open()
    try:
        assert answered.event.wait(TIMEOUT)
        # The info answer follows the keepalive answer on the agent's stdout: once
        # info() returns, the reader has measured the keepalive round trip.
        p.info()
        stats = p.stats()
        assert stats.keepalive_rtt is not None and 0 <= stats.keepalive_rtt < TIMEOUT
        assert stats.requests["keepalive"] >= 1 and stats.requests["info"] == 1
        assert stats.state == "running"
    finally:
        logger.removeHandler(answered)
        p.close()
    with pytest.raises(udf.UDFError, match="not opened"):
        udf.Process(sys.executable, []).stats()
