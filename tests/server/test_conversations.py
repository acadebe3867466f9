"""udf.Server conversations beyond Go's tests (SPEC's cases): round trips, bad data, protocol errors, misuse."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

import agent_pb2
import udf
from udf import Batch, BatchPoint, Dimensions, Point
from udf.errors import ChannelClosed

from ..helpers import TIMEOUT, run_in_thread
from ..helpers.fake_agent import FakeAgent, answer_init


def started(agent: FakeAgent, **kwargs: Any) -> udf.Server:
    """A started server that has been initialized by the fake agent."""
    s = agent.server(**kwargs)
    s.start()
    join = run_in_thread(s.init, None)
    answer_init(agent)
    join()
    return s


def finish_cleanly(agent: FakeAgent, s: udf.Server) -> None:
    agent.close_output()
    s.stop()
    assert agent.finish() == []


def test_point_round_trip_keeps_bools_ints_and_nanoseconds(agent: FakeAgent) -> None:
    s = started(agent)
    pt = Point(
        name="cpu",
        database="telegraf",
        retention_policy="autogen",
        group="host=a",
        dimensions=Dimensions(by_name=True, tag_names=["host"]),
        tags={"host": "a"},
        fields={"up": True, "down": False, "count": 2**63 - 1, "neg": -(2**63), "ratio": 0.5, "note": "x y"},
        time=1_600_000_000_123_456_789,
    )
    s.point_in.put(pt)
    request = agent.next_request("point")
    assert dict(request.point.fieldsBool) == {"up": True, "down": False}
    assert dict(request.point.fieldsInt) == {"count": 2**63 - 1, "neg": -(2**63)}
    assert request.point.time == 1_600_000_000_123_456_789
    agent.respond(point=request.point)
    got = s.point_out.get(timeout=TIMEOUT)
    assert got == pt
    assert type(got.fields["up"]) is bool and type(got.fields["count"]) is int
    finish_cleanly(agent, s)


def test_batch_round_trip_nanoseconds(agent: FakeAgent) -> None:
    s = started(agent)
    b = Batch(
        name="cpu",
        tmax=1_600_000_000_000_000_001,
        group="g",
        by_name=True,
        tags={"host": "a"},
        points=[BatchPoint(time=1_600_000_000_000_000_000 + i, fields={"v": i, "ok": i % 2 == 0}) for i in range(3)],
    )
    s.batch_in.put(b)
    begin = agent.next_request("begin")
    assert (begin.begin.name, begin.begin.group, begin.begin.size, begin.begin.byName) == ("cpu", "g", 3, True)
    assert dict(begin.begin.tags) == {"host": "a"}
    agent.respond(begin=begin.begin)
    for _ in range(3):
        point = agent.next_request("point")
        assert point.point.group == "g"
        agent.respond(point=point.point)
    end = agent.next_request("end")
    assert end.end.tmax == 1_600_000_000_000_000_001
    agent.respond(end=end.end)
    assert s.batch_out.get(timeout=TIMEOUT) == b
    finish_cleanly(agent, s)


@pytest.mark.parametrize(
    "fields, exc, words",
    [
        ({"bad": [1, 2]}, TypeError, "'bad'"),
        ({"none": None}, TypeError, "'none'"),
        ({"huge": 2**63}, ValueError, "'huge'"),
        ({1: 1.0}, TypeError, "field names"),
    ],
)
def test_bad_field_value_is_refused_at_put(
    agent: FakeAgent, fields: dict[Any, Any], exc: type[Exception], words: str
) -> None:
    s = started(agent)
    with pytest.raises(exc, match=words):
        s.point_in.put(Point(name="m", fields=fields))
    with pytest.raises(TypeError, match="tag 'host'"):
        s.point_in.put(Point(name="m", tags={"host": 1}))  # type: ignore[dict-item]
    # Nothing was written and the server still works.
    s.point_in.put(Point(name="ok", fields={"v": 1.0}))
    assert agent.next_request("point").point.name == "ok"
    finish_cleanly(agent, s)


def test_wrong_type_on_a_channel_raises_type_error(agent: FakeAgent) -> None:
    s = started(agent)
    with pytest.raises(TypeError, match="expected udf.Point"):
        s.point_in.put(Batch(name="b"))
    with pytest.raises(TypeError, match="expected udf.Batch"):
        s.batch_in.put(Point(name="p"))
    with pytest.raises(TypeError, match=r"points\[1\]"):
        s.batch_in.put(Batch(name="b", points=[BatchPoint(), Point()]))  # type: ignore[list-item]
    s.batch_in.put(Batch(name="fine"))
    assert agent.next_request("begin").begin.name == "fine"
    finish_cleanly(agent, s)


def test_error_response_aborts_after_delivering_earlier_points(agent: FakeAgent) -> None:
    aborted = threading.Event()
    s = started(agent, abort_callback=aborted.set)
    agent.respond(point=agent_pb2.Point(name="before"))
    agent.respond(error=agent_pb2.ErrorResponse(error="agent is unhappy"))
    assert aborted.wait(TIMEOUT)
    # The point that came before the error is delivered, then the channel closes.
    assert [p.name for p in s.point_out] == ["before"]
    agent.respond(point=agent_pb2.Point(name="after"))  # discarded: the reader drains to EOF
    agent.close_output()
    with pytest.raises(udf.AgentError, match="^agent is unhappy$"):
        s.stop()
    with pytest.raises(ChannelClosed):
        s.point_in.put(Point())
    assert agent.finish() == []


def test_end_without_begin_is_a_protocol_error(agent: FakeAgent) -> None:
    s = started(agent)
    agent.respond(end=agent_pb2.EndBatch(name="x"))
    agent.close_output()
    with pytest.raises(udf.ProtocolError, match="EndBatch received without a BeginBatch"):
        s.stop()
    assert agent.finish() == []


@pytest.mark.parametrize("size", [2**63])  # 4 GiB: tests/server/test_malformed_streams.py
def test_huge_length_prefix_is_a_protocol_error(agent: FakeAgent, size: int) -> None:
    from udf.wire import encode_uvarint

    s = started(agent, max_frame_size=1024)
    agent.write_raw(encode_uvarint(size) + b"xx")
    agent.close_output()
    with pytest.raises(udf.ProtocolError, match=f"frame of {size} bytes exceeds the maximum frame size of 1024"):
        s.stop()
    assert agent.finish() == []


def test_truncated_stream_is_a_protocol_error(agent: FakeAgent) -> None:
    s = started(agent)
    agent.write_raw(b"\x05ab")
    agent.close_output()
    with pytest.raises(udf.ProtocolError, match="3 bytes missing"):
        s.stop()
    assert agent.finish() == []


def test_unsolicited_response_is_logged_and_ignored(agent: FakeAgent, caplog: pytest.LogCaptureFixture) -> None:
    s = started(agent)
    with caplog.at_level(logging.ERROR, logger="udf"):
        agent.respond(snapshot=agent_pb2.SnapshotResponse(snapshot=b"nobody asked"))
        agent.respond(point=agent_pb2.Point(name="still flowing"))
        assert s.point_out.get(timeout=TIMEOUT).name == "still flowing"
    assert "received snapshot response without requesting it" in caplog.text
    finish_cleanly(agent, s)


def test_put_after_abort_raises_channel_closed(agent: FakeAgent) -> None:
    callbacks = []
    s = started(agent, abort_callback=lambda: callbacks.append(1))
    err = udf.UDFError("first")
    s.abort(err)
    s.abort(udf.UDFError("second"))  # idempotent: first error wins, callback once
    with pytest.raises(ChannelClosed):
        s.point_in.put(Point(name="late"))
    with pytest.raises(ChannelClosed):
        s.point_out.get(timeout=TIMEOUT)
    with pytest.raises(udf.UDFError) as info:
        s.info()
    assert info.value is err
    agent.close_output()
    assert s.wait_io(TIMEOUT)
    assert callbacks == [1]
    with pytest.raises(udf.UDFError) as info:
        s.stop()
    assert info.value is err
    assert agent.drain_requests() == []
    assert agent.finish() == []


def test_request_after_stop_raises_server_stopped(agent: FakeAgent) -> None:
    s = started(agent)
    finish_cleanly(agent, s)
    with pytest.raises(udf.ServerStoppedError, match="^server already stopped$"):
        s.info()
    assert udf.ErrServerStopped is udf.ServerStoppedError
    s.stop()  # a second stop is no error
    with pytest.raises(ChannelClosed):
        s.point_in.put(Point())


def test_abort_after_stop_records_error_and_runs_callback_once(agent: FakeAgent) -> None:
    calls = []
    s = started(agent, abort_callback=lambda: calls.append("abort"))
    finish_cleanly(agent, s)
    err = udf.UDFError("late")
    s.abort(err)
    s.abort(udf.UDFError("later"))
    assert calls == ["abort"]
    with pytest.raises(udf.UDFError) as info:
        s.stop()
    assert info.value is err


def test_agent_eof_releases_pending_and_later_requests(agent: FakeAgent) -> None:
    s = agent.server()
    s.start()
    join = run_in_thread(s.info)
    agent.next_request("info")
    agent.close_output()  # the agent never answers
    with pytest.raises(udf.AgentClosedError, match="closed its output before answering"):
        join()
    with pytest.raises(udf.AgentClosedError):
        s.snapshot()
    s.stop()
    assert agent.finish() == []


def test_init_and_restore_failures_raise_with_go_wording(agent: FakeAgent) -> None:
    s = agent.server()
    s.start()
    join = run_in_thread(s.init, None)
    answer_init(agent, success=False, error="bad option")
    with pytest.raises(udf.InitError, match="^failed to initialize processes bad option$"):
        join()
    join = run_in_thread(s.restore, b"state")
    request = agent.next_request("restore")
    assert request.restore.snapshot == b"state"
    agent.respond(restore=agent_pb2.RestoreResponse(success=False, error="corrupt"))
    with pytest.raises(udf.RestoreError, match="^error restoring snapshot: corrupt$"):
        join()
    finish_cleanly(agent, s)


def test_init_sends_options(agent: FakeAgent) -> None:
    s = agent.server()
    s.start()
    options = [
        agent_pb2.Option(name="field", values=[agent_pb2.OptionValue(type=agent_pb2.STRING, stringValue="v")]),
        agent_pb2.Option(name="size", values=[agent_pb2.OptionValue(type=agent_pb2.INT, intValue=10)]),
    ]
    join = run_in_thread(s.init, options)
    request = answer_init(agent)
    join()
    assert list(request.init.options) == options
    with pytest.raises(TypeError, match="agent_pb2.Option"):
        s.init(["field=v"])
    finish_cleanly(agent, s)


def test_concurrent_requests_each_get_their_answer(agent: FakeAgent) -> None:
    s = agent.server()
    s.start()
    joins = [run_in_thread(s.snapshot) for _ in range(4)]
    for i in range(4):
        agent.next_request("snapshot")
        agent.respond(snapshot=agent_pb2.SnapshotResponse(snapshot=bytes([i])))
    assert sorted(join() for join in joins) == [bytes([i]) for i in range(4)]
    finish_cleanly(agent, s)


def test_abort_from_callback_and_from_many_threads(agent: FakeAgent) -> None:
    calls = []
    servers: list[udf.Server] = []

    def callback() -> None:
        calls.append(threading.current_thread().name)
        servers[0].abort(udf.UDFError("from the callback"))  # re-entrant: must not deadlock

    s = agent.server(abort_callback=callback)
    servers.append(s)
    s.start()
    errors = [udf.UDFError(f"abort {i}") for i in range(8)]
    joins = [run_in_thread(s.abort, e) for e in errors]
    for join in joins:
        join()
    assert len(calls) == 1
    agent.close_output()
    assert s.wait_io(TIMEOUT)
    with pytest.raises(udf.UDFError) as info:
        s.stop()
    assert info.value in errors
    assert agent.finish() == []


def test_abort_releases_a_reader_blocked_on_a_full_output_channel(agent: FakeAgent) -> None:
    from udf import server as server_module

    s = started(agent)
    # Fill point_out beyond its bound: the reader blocks delivering.
    for i in range(server_module.OUT_CHANNEL_SIZE + 10):
        agent.respond(point=agent_pb2.Point(name=str(i)))
    agent.respond(point=agent_pb2.Point(name="last"))
    first = s.point_out.get(timeout=TIMEOUT)
    assert first.name == "0"
    err = udf.UDFError("consumer gives up")
    s.abort(err)
    agent.close_output()  # the reader drains the rest and reaches EOF
    assert s.wait_io(TIMEOUT)
    with pytest.raises(udf.UDFError) as info:
        s.stop()
    assert info.value is err
    assert agent.finish() == []


def test_stop_writes_queued_data_before_closing(agent: FakeAgent) -> None:
    s = started(agent)
    for i in range(50):
        s.point_in.put(Point(name=str(i)))
    join = run_in_thread(s.stop)
    names = [r.point.name for r in agent.drain_requests()]
    assert names == [str(i) for i in range(50)]
    agent.close_output()
    assert join() is None
    assert agent.finish() == []


def test_agent_stops_reading_write_error_after_delivery() -> None:
    """An agent that closed its input: what it wrote is delivered, then a write error."""
    import os

    from udf.wire import encode_frame

    request_r, request_w = os.pipe()
    response_r, response_w = os.pipe()
    os.close(request_r)  # the agent stopped reading: every write fails with EPIPE
    os.write(
        response_w, encode_frame(agent_pb2.Response(point=agent_pb2.Point(name="produced before")).SerializeToString())
    )
    os.close(response_w)
    with open(response_r, "rb", buffering=0) as reader:
        s = udf.Server(reader, open(request_w, "wb", buffering=0))
        s.start()
        s.point_in.put(Point(name="x"))
        assert [p.name for p in s.point_out] == ["produced before"]
        with pytest.raises(udf.WriteError, match="^write error: broken pipe"):
            s.stop()
        with pytest.raises(ChannelClosed):
            s.point_in.put(Point(name="late"))


def test_timedelta_timeout_and_invalid_arguments(agent: FakeAgent) -> None:
    import datetime

    s = agent.server(timeout=datetime.timedelta(seconds=5))
    with pytest.raises(TypeError):
        udf.Server(agent.host_reader, agent.host_writer, timeout="5s")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        udf.Server(agent.host_reader, agent.host_writer, max_frame_size=0)
    s.start()
    assert "udf-keepalive" in [t.name for t in threading.enumerate()]  # 5 s: a keepalive thread
    finish_cleanly(agent, s)


def test_stop_from_abort_callback_on_the_reader_thread_does_not_deadlock(agent: FakeAgent) -> None:
    stopped = threading.Event()
    raised = []
    servers: list[udf.Server] = []

    def callback() -> None:
        try:
            servers[0].stop()  # runs on the reader thread (ErrorResponse): must not wait for itself
        except udf.UDFError as exc:
            raised.append(exc)
        stopped.set()

    s = started(agent, abort_callback=callback)
    servers.append(s)
    agent.respond(error=agent_pb2.ErrorResponse(error="boom"))
    assert stopped.wait(TIMEOUT)
    assert [str(e) for e in raised] == ["boom"]
    agent.close_output()
    assert s.wait_io(TIMEOUT)
    assert agent.finish() == []


def test_data_put_before_a_request_is_written_before_it(agent: FakeAgent) -> None:
    s = started(agent)
    for i in range(3):
        s.point_in.put(Point(name=str(i)))
    join = run_in_thread(s.snapshot)
    kinds = [agent.next_request().WhichOneof("message") for _ in range(4)]
    assert kinds == ["point", "point", "point", "snapshot"]
    agent.respond(snapshot=agent_pb2.SnapshotResponse(snapshot=b"after three"))
    assert join() == b"after three"
    finish_cleanly(agent, s)


def test_start_after_stop_is_refused(agent: FakeAgent) -> None:
    s = agent.server()
    s.stop()  # never started: closes the writer stream, nothing to wait for
    with pytest.raises(udf.ServerStoppedError):
        s.start()
    with pytest.raises(udf.ServerStoppedError):
        s.info()
    assert s.wait_io(TIMEOUT)
