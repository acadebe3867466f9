"""udf.Server against Go's ``udf/server_test.go``: one test per Go test (SPEC's own cases: test_conversations.py).

Each test is a conversation with the fake agent: read a request, check it,
answer it. Keepalive tests use Go's 100 ms timeout; every wait is bounded by
TIMEOUT, which only trips on a real hang.
"""

from __future__ import annotations

import logging
import threading

import pytest

import agent_pb2
import udf
from udf import Batch, BatchPoint, Point

from ..helpers import TIMEOUT, run_in_thread
from ..helpers.fake_agent import FakeAgent, answer_init

KEEPALIVE = 0.1  # Go's tests use 100 ms
T1971 = 31_536_000_000_000_000  # 1971-01-01T00:00:00Z in ns


def test_start_stop(agent: FakeAgent) -> None:
    s = agent.server()
    s.start()
    agent.close_output()
    s.stop()
    assert agent.drain_requests() == []
    assert agent.finish() == []


def test_start_init_stop(agent: FakeAgent) -> None:
    s = agent.server()
    s.start()
    join = run_in_thread(s.init, None)
    request = answer_init(agent)
    assert list(request.init.options) == []
    assert join() is None
    agent.close_output()
    s.stop()
    assert agent.drain_requests() == []
    assert agent.finish() == []


def test_start_init_abort(agent: FakeAgent) -> None:
    s = agent.server()
    s.start()
    exp_err = RuntimeError("explicit abort")
    join = run_in_thread(s.init, None)
    agent.next_request("init")
    s.abort(exp_err)
    agent.close_output()
    with pytest.raises(RuntimeError) as info:
        join()
    assert info.value is exp_err
    assert s.wait_io(TIMEOUT)
    assert agent.finish() == []


def test_start_info_stop(agent: FakeAgent) -> None:
    s = agent.server()
    s.start()
    join = run_in_thread(s.info)
    agent.next_request("info")
    agent.respond(info=agent_pb2.InfoResponse(wants=agent_pb2.STREAM, provides=agent_pb2.BATCH))
    info = join()
    assert info.wants == agent_pb2.STREAM
    assert info.provides == agent_pb2.BATCH
    agent.close_output()
    s.stop()
    assert agent.drain_requests() == []
    assert agent.finish() == []


def test_start_info_abort(agent: FakeAgent) -> None:
    s = agent.server()
    s.start()
    exp_err = udf.UDFError("explicit abort")
    join = run_in_thread(s.info)
    agent.next_request("info")
    s.abort(exp_err)
    agent.close_output()
    with pytest.raises(udf.UDFError) as info:
        join()
    assert info.value is exp_err
    assert s.wait_io(TIMEOUT)


def test_keepalive(agent: FakeAgent) -> None:
    # A generous timeout: this test is about the ping, not about missing it.
    s = agent.server(timeout=1.0)
    s.start()
    join = run_in_thread(s.init, None)
    agent.next_request("init")
    request = agent.next_request("keepalive")
    assert request.keepalive.time > 0
    agent.respond(keepalive=agent_pb2.KeepaliveResponse(time=request.keepalive.time))
    agent.respond(init=agent_pb2.InitResponse(success=True))
    join()
    agent.close_output()
    s.stop()
    assert all(r.WhichOneof("message") == "keepalive" for r in agent.drain_requests())
    assert agent.finish() == []


def test_missed_keepalive(agent: FakeAgent) -> None:
    abort_called = threading.Event()
    s = agent.server(timeout=KEEPALIVE, abort_callback=abort_called.set)
    s.start()
    # Since the keepalive is missed, the server aborts on its own.
    requests = agent.drain_requests()
    assert requests and all(r.WhichOneof("message") == "keepalive" for r in requests)
    assert abort_called.wait(TIMEOUT), "expected abort callback to be called"
    agent.close_output()
    with pytest.raises(udf.KeepaliveTimeoutError, match="keepalive timedout, last keepalive received was: "):
        s.stop()
    assert agent.finish() == []


def test_kill_call_back(agent: FakeAgent, caplog: pytest.LogCaptureFixture) -> None:
    kill_called = threading.Event()
    abort_released = threading.Event()

    def aborted() -> None:
        # A slow abort: it only returns once the kill callback has run.
        abort_released.set()
        kill_called.wait(TIMEOUT)

    s = agent.server(timeout=KEEPALIVE, abort_callback=aborted, kill_callback=kill_called.set)
    with caplog.at_level(logging.ERROR, logger="udf"):
        s.start()
        agent.drain_requests()
        # The I/O cannot end (the agent never closes its output), so kill is called.
        assert kill_called.wait(TIMEOUT), "expected kill callback to be called"
        assert abort_released.is_set()
        agent.close_output()
        assert s.wait_io(TIMEOUT)
    assert "process not responding! killing" in caplog.text
    assert agent.finish() == []


def test_missed_keepalive_init(agent: FakeAgent) -> None:
    abort_called = threading.Event()
    s = agent.server(timeout=KEEPALIVE, abort_callback=abort_called.set)
    s.start()
    with pytest.raises(udf.KeepaliveTimeoutError):
        s.init(None)
    agent.drain_requests()
    assert abort_called.wait(TIMEOUT), "expected abort callback to be called"
    agent.close_output()
    assert s.wait_io(TIMEOUT)
    assert agent.finish() == []


def test_missed_keepalive_info(agent: FakeAgent) -> None:
    abort_called = threading.Event()
    s = agent.server(timeout=KEEPALIVE, abort_callback=abort_called.set)
    s.start()
    with pytest.raises(udf.KeepaliveTimeoutError):
        s.info()
    agent.drain_requests()
    assert abort_called.wait(TIMEOUT), "expected abort callback to be called"
    agent.close_output()
    assert s.wait_io(TIMEOUT)
    assert agent.finish() == []


def test_snapshot_restore(agent: FakeAgent) -> None:
    s = agent.server()
    s.start()

    def conversation() -> None:
        answer_init(agent)
        agent.next_request("snapshot")
        agent.respond(snapshot=agent_pb2.SnapshotResponse(snapshot=bytes([42])))
        request = agent.next_request("restore")
        assert request.restore.snapshot == bytes([42])
        agent.respond(restore=agent_pb2.RestoreResponse(success=True))
        agent.close_output()

    join = run_in_thread(conversation)
    s.init(None)
    snapshot = s.snapshot()
    assert snapshot == bytes([42])
    s.restore(snapshot)
    join()
    s.stop()
    assert agent.drain_requests() == []
    assert agent.finish() == []


def test_start_init_point_stop(agent: FakeAgent) -> None:
    s = agent.server()
    s.start()

    def conversation() -> None:
        answer_init(agent)
        request = agent.next_request("point")
        agent.respond(point=request.point)
        agent.close_output()

    join = run_in_thread(conversation)
    s.init(None)
    pt = Point(
        name="test",
        database="db",
        retention_policy="rp",
        tags={"t1": "v1", "t2": "v2"},
        fields={"f1": 1.0, "f2": 2.0},
        time=T1971,
    )
    s.point_in.put(pt)
    rpt = s.point_out.get(timeout=TIMEOUT)
    assert rpt == pt
    join()
    s.stop()
    assert agent.drain_requests() == []
    assert agent.finish() == []


def test_start_init_batch_stop(agent: FakeAgent) -> None:
    s = agent.server()
    s.start()

    def conversation() -> None:
        answer_init(agent)
        begin = agent.next_request("begin")
        agent.respond(begin=begin.begin)
        point = agent.next_request("point")
        agent.respond(point=point.point)
        end = agent.next_request("end")
        agent.respond(end=end.end)
        agent.close_output()

    join = run_in_thread(conversation)
    s.init(None)
    b = Batch(
        name="test",
        tags={"t1": "v1"},
        tmax=T1971,
        points=[
            BatchPoint(
                fields={"f1": 1.0, "f2": 2.0, "f3": 1, "f4": "str"},
                time=T1971,
                tags={"t1": "v1", "t2": "v2"},
            )
        ],
    )
    s.batch_in.put(b)
    rb = s.batch_out.get(timeout=TIMEOUT)
    assert rb == b
    assert type(rb.points[0].fields["f3"]) is int
    join()
    s.stop()
    assert agent.drain_requests() == []
    assert agent.finish() == []
