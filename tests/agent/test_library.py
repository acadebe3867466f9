"""Tests of udf.agent: the agent library driven by udf.Server, raw frames and child processes.

In-process agents run on real os.pipe() pairs; the child-process tests run a
small agent script with ``sys.executable -c``; AgentServer tests use a real
unix socket in a temporary directory and TCP on 127.0.0.1. Every wait is
bounded by TIMEOUT; blocking handlers are gated by Events, never by sleeps.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import agent_pb2
import udf
import udf.agent as agent_mod
from udf import Batch, BatchPoint, Dimensions, Point
from udf.agent import (
    Agent,
    AgentServer,
    Handler,
    field_value,
    init_options,
    option_value,
    parse_options,
)
from udf.socket import HalfCloseWriter
from udf.wire import FrameDecoder, encode_frame

from ..helpers import TIMEOUT

T0 = 1_495_152_000_123_456_789  # ns, with sub-microsecond digits

#: Teardown steps registered by the test being run (run in reverse, even if it failed).
_CLEANUP: list[Callable[[], Any]] = []


@pytest.fixture(autouse=True)
def run_cleanup() -> Iterator[None]:
    yield
    while _CLEANUP:
        try:
            _CLEANUP.pop()()
        except Exception:
            pass


def tracked(server: udf.Server) -> udf.Server:
    """Make sure ``server``'s threads end with the test, even a failed one."""

    def end() -> None:
        server.abort(udf.UDFError("test teardown"))  # harmless after a clean stop()
        server.wait_io(TIMEOUT)

    _CLEANUP.append(end)
    return server


# --- helpers -------------------------------------------------------------------------


class EchoHandler(Handler):
    """Records what it is asked and echoes data; configurable through attributes."""

    def __init__(self, agent: Agent | None = None) -> None:
        super().__init__(agent)
        self.calls: list[str] = []
        self.state = b""
        self.stopped = threading.Event()
        self.fail_on: str | None = None
        self.gate: threading.Event | None = None  # point() blocks on it when set
        self.entered = threading.Event()

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.fail_on == name:
            raise ValueError(f"boom in {name}")

    def info(self) -> Any:
        self._call("info")
        response = agent_pb2.InfoResponse(wants=agent_pb2.STREAM, provides=agent_pb2.BATCH)
        response.options["field"].valueTypes.append(agent_pb2.STRING)
        response.options["size"].valueTypes.extend([agent_pb2.INT, agent_pb2.DURATION])
        return response

    def init(self, init_req: Any) -> Any:
        self._call("init")
        options = init_options(init_req)
        if "bad" in options:
            return agent_pb2.InitResponse(success=False, error=f"bad option: {options['bad'][0]}")
        return agent_pb2.InitResponse(success=True)

    def snapshot(self) -> Any:
        self._call("snapshot")
        return agent_pb2.SnapshotResponse(snapshot=self.state)

    def restore(self, restore_req: Any) -> Any:
        self._call("restore")
        if restore_req.snapshot == b"corrupt":
            return agent_pb2.RestoreResponse(success=False, error="corrupt snapshot")
        self.state = restore_req.snapshot
        return agent_pb2.RestoreResponse(success=True)

    def begin_batch(self, begin_req: Any) -> None:
        self._call("begin")
        assert self.agent is not None
        self.agent.write_response(agent_pb2.Response(begin=begin_req), flush=False)

    def point(self, point: Any) -> None:
        self._call("point")
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(TIMEOUT), "the test never released the handler"
        assert self.agent is not None
        self.state = point.name.encode()
        self.agent.write_response(agent_pb2.Response(point=point), flush=False)

    def end_batch(self, end_req: Any) -> None:
        self._call("end")
        assert self.agent is not None
        self.agent.write_response(agent_pb2.Response(end=end_req))

    def stop(self) -> None:
        self.calls.append("stop")
        self.stopped.set()


class Pipes:
    """An in-process agent on two real OS pipes; the host side is for a Server or raw frames."""

    def __init__(self, handler: Handler, **kwargs: Any) -> None:
        req_r, req_w = os.pipe()  # host -> agent
        resp_r, resp_w = os.pipe()  # agent -> host
        self.host_reader = open(resp_r, "rb", buffering=0)
        self.host_writer = open(req_w, "wb", buffering=0)
        kwargs.setdefault("name", "udf-agent-test")
        self.agent = Agent(open(req_r, "rb"), open(resp_w, "wb"), handler, **kwargs)
        self.handler: Any = handler  # the test's own Handler subclass, its records read as they are
        self.decoder = FrameDecoder()
        self.pending: list[Any] = []
        self.servers: list[udf.Server] = []

    def server(self, **kwargs: Any) -> udf.Server:
        server = udf.Server(self.host_reader, self.host_writer, **kwargs)
        self.servers.append(server)
        return server

    def send(self, **fields: Any) -> None:
        """Write one Request frame straight into the agent's input."""
        self.host_writer.write(encode_frame(agent_pb2.Request(**fields).SerializeToString()))

    def next_response(self) -> Any:
        """The next Response from the agent's output, waiting at most TIMEOUT."""
        deadline = time.monotonic() + TIMEOUT
        while not self.pending:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.host_reader], [], [], max(0.0, remaining))
            assert ready, "no response from the agent in time"
            data = self.host_reader.read(65536)
            assert data, "the agent closed its output; expected a response"
            self.pending.extend(agent_pb2.Response.FromString(f) for f in self.decoder.feed(data))
        return self.pending.pop(0)

    def read_to_eof(self) -> list[Any]:
        """Every remaining Response until the agent closes its output."""
        out = list(self.pending)
        self.pending = []
        deadline = time.monotonic() + TIMEOUT
        while True:
            ready, _, _ = select.select([self.host_reader], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "the agent did not close its output in time"
            data = self.host_reader.read(65536)
            if not data:
                self.decoder.eof()
                return out
            out.extend(agent_pb2.Response.FromString(f) for f in self.decoder.feed(data))

    def close(self) -> None:
        for f in (self.host_reader, self.host_writer):
            try:
                f.close()
            except OSError:
                pass


@pytest.fixture
def pipes_factory() -> Iterator[Callable[..., Pipes]]:
    made: list[Pipes] = []

    def make(handler: Handler | None = None, **kwargs: Any) -> Pipes:
        p = Pipes(handler if handler is not None else EchoHandler(), **kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        for server in p.servers:
            server.abort(udf.UDFError("test teardown"))  # harmless after a clean stop()
        if isinstance(p.handler, EchoHandler) and p.handler.gate is not None:
            p.handler.gate.set()
        try:
            p.host_writer.close()  # EOF for the agent
        except OSError:
            pass
        if p.agent.state is not agent_mod.AgentState.NEW and not p.host_reader.closed:
            # Drain so an agent blocked writing can finish.
            while True:
                ready, _, _ = select.select([p.host_reader], [], [], TIMEOUT)
                if not ready or not p.host_reader.read(65536):
                    break
            p.agent.wait(TIMEOUT)
        for server in p.servers:
            server.wait_io(TIMEOUT)
        p.close()


def sample_point(**overrides: Any) -> Point:
    values: dict[str, Any] = dict(
        name="cpu",
        database="telegraf",
        retention_policy="autogen",
        group="host=a",
        dimensions=Dimensions(by_name=False, tag_names=["host"]),
        tags={"host": "a"},
        fields={"f": 1.5, "i": -3, "b": True, "s": "x"},
        time=T0,
    )
    values.update(overrides)
    return Point(**values)


# --- the Handler base class and helpers ----------------------------------------------------


def test_handler_defaults() -> None:
    h = Handler()
    assert h.agent is None
    with pytest.raises(NotImplementedError):
        h.info()
    assert h.init(agent_pb2.InitRequest()).success
    assert h.snapshot().snapshot == b""
    assert h.restore(agent_pb2.RestoreRequest()).success
    refused = h.restore(agent_pb2.RestoreRequest(snapshot=b"x"))
    assert not refused.success and "cannot restore" in refused.error
    calls: tuple[Callable[[], object], ...] = (
        lambda: h.point(agent_pb2.Point()),
        lambda: h.begin_batch(agent_pb2.BeginBatch()),
    )
    for call in calls:
        with pytest.raises(udf.UDFError, match="does not support"):
            call()
    h.stop()  # a no-op by default


def test_option_helpers() -> None:
    req = agent_pb2.InitRequest(
        options=[
            agent_pb2.Option(name="field", values=[agent_pb2.OptionValue(type=agent_pb2.STRING, stringValue="v")]),
            agent_pb2.Option(name="size", values=[agent_pb2.OptionValue(type=agent_pb2.INT, intValue=0)]),
            agent_pb2.Option(
                name="every", values=[agent_pb2.OptionValue(type=agent_pb2.DURATION, durationValue=10**9)]
            ),
            agent_pb2.Option(name="on", values=[agent_pb2.OptionValue(type=agent_pb2.BOOL, boolValue=True)]),
            agent_pb2.Option(name="scale", values=[agent_pb2.OptionValue(type=agent_pb2.DOUBLE)]),  # no value set
        ]
    )
    assert init_options(req) == {"field": ["v"], "size": [0], "every": [10**9], "on": [True], "scale": [0.0]}
    assert option_value(agent_pb2.OptionValue(type=agent_pb2.STRING)) == ""
    values, errors = parse_options(
        req,
        {
            "field": agent_pb2.STRING,
            "size": agent_pb2.STRING,
            "every": agent_pb2.DURATION,
            "scale": (agent_pb2.DOUBLE, agent_pb2.INT),
            "as": agent_pb2.STRING,
        },
        required=("field", "as"),
    )
    assert values == {"field": "v", "every": 10**9, "scale": 0.0}
    assert errors == {
        "size": "option 'size' must be STRING, got INT",
        "on": "unknown option 'on'",
        "as": "missing required option 'as'",
    }


def test_field_value_follows_go_precedence() -> None:
    p = agent_pb2.Point(fieldsString={"k": "s", "s": "x"}, fieldsInt={"k": 2, "i": 3}, fieldsDouble={"k": 1.5})
    assert field_value(p, "k") == 1.5
    assert field_value(p, "i") == 3 and type(field_value(p, "i")) is int
    assert field_value(p, "s") == "x"
    assert field_value(p, "missing") is None
    p.fieldsBool["k"] = False
    assert field_value(p, "k") is False


# --- in-process agents driven by udf.Server -------------------------------------------------


def test_info_init_point_snapshot_restore_through_server(pipes_factory: Callable[..., Pipes]) -> None:
    p = pipes_factory()
    p.agent.start()
    s = p.server()
    s.start()
    info = s.info()
    assert info.wants == agent_pb2.STREAM and info.provides == agent_pb2.BATCH
    assert list(info.options["size"].valueTypes) == [agent_pb2.INT, agent_pb2.DURATION]
    s.init([agent_pb2.Option(name="field", values=[agent_pb2.OptionValue(type=agent_pb2.STRING, stringValue="f")])])
    pt = sample_point()
    s.point_in.put(pt)
    got = s.point_out.get(timeout=TIMEOUT)
    assert got == pt
    assert type(got.fields["b"]) is bool and type(got.fields["i"]) is int
    assert s.snapshot() == b"cpu"
    s.restore(b"saved state")
    assert s.snapshot() == b"saved state"
    s.stop()
    assert p.agent.wait(TIMEOUT)
    assert p.agent.error is None
    assert p.handler.calls == ["info", "init", "point", "snapshot", "restore", "snapshot", "stop"]


def test_init_and_restore_failures_are_not_fatal(pipes_factory: Callable[..., Pipes]) -> None:
    p = pipes_factory()
    p.agent.start()
    s = p.server()
    s.start()
    bad = agent_pb2.Option(name="bad", values=[agent_pb2.OptionValue(type=agent_pb2.INT, intValue=7)])
    with pytest.raises(udf.InitError, match="failed to initialize processes bad option: 7"):
        s.init([bad])
    with pytest.raises(udf.RestoreError, match="error restoring snapshot: corrupt snapshot"):
        s.restore(b"corrupt")
    s.init(None)  # the agent is still serving
    s.stop()
    assert p.agent.wait(TIMEOUT) and p.agent.error is None


def test_batches_through_server(pipes_factory: Callable[..., Pipes]) -> None:
    p = pipes_factory()
    p.agent.start()
    s = p.server()
    s.start()
    s.init(None)
    batches = [
        Batch(
            name="cpu",
            tmax=T0 + i,
            group="host=a",
            by_name=True,
            tags={"host": "a"},
            points=[
                BatchPoint(time=T0 + j, fields={"v": float(j), "n": j, "ok": j % 2 == 0}, tags={"host": "a"})
                for j in range(i)
            ],
        )
        for i in range(4)
    ]
    for b in batches:
        s.batch_in.put(b)
    assert [s.batch_out.get(timeout=TIMEOUT) for _ in batches] == batches
    s.stop()
    assert p.agent.wait(TIMEOUT)
    assert p.handler.calls.count("begin") == 4 and p.handler.calls.count("end") == 4


def test_emit_helpers_accept_models_and_messages(pipes_factory: Callable[..., Pipes]) -> None:
    class Emitter(Handler):
        def info(self) -> Any:
            return agent_pb2.InfoResponse()

        def point(self, point: Any) -> None:
            assert self.agent is not None
            model = agent_mod.point_from_message(point)
            self.agent.emit_point(model, flush=False)  # a udf.Point
            self.agent.emit_point(point)  # an agent_pb2.Point
            self.agent.emit_batch(
                Batch(
                    name=model.name,
                    tmax=model.time,
                    group=model.group,
                    tags=dict(model.tags),
                    points=[BatchPoint(time=model.time, fields=dict(model.fields), tags=dict(model.tags))],
                )
            )

    p = pipes_factory(Emitter())
    p.agent.start()
    s = p.server()
    s.start()
    pt = sample_point()
    s.point_in.put(pt)
    assert s.point_out.get(timeout=TIMEOUT) == pt
    assert s.point_out.get(timeout=TIMEOUT) == pt
    batch = s.batch_out.get(timeout=TIMEOUT)
    assert batch == Batch(
        name="cpu",
        tmax=T0,
        group="host=a",
        tags={"host": "a"},
        points=[BatchPoint(time=T0, fields=pt.fields, tags=pt.tags)],
    )
    s.stop()
    assert p.agent.wait(TIMEOUT) and p.agent.error is None


def test_kapacitor_style_handler_returning_responses(pipes_factory: Callable[..., Pipes]) -> None:
    """A handler ported from Kapacitor's agent: returns whole Responses, sets agent itself."""

    class Ported(Handler):
        def __init__(self, agent: Agent) -> None:
            self._agent = agent  # no super().__init__(), as in Kapacitor's examples

        def info(self) -> Any:
            response = agent_pb2.Response()
            response.info.wants = agent_pb2.BATCH
            response.info.provides = agent_pb2.STREAM
            return response

        def init(self, init_req: Any) -> Any:
            response = agent_pb2.Response()
            response.init.success = True
            return response

        def point(self, point: Any) -> None:
            response = agent_pb2.Response()
            response.point.CopyFrom(point)
            self._agent.write_response(response)

    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    a = Agent(open(req_r, "rb"), open(resp_w, "wb"), name="udf-agent-ported")
    a.handler = Ported(a)
    assert a.handler is not None and a.handler.agent is a  # set by the agent, as none was set
    s = tracked(udf.Server(open(resp_r, "rb", buffering=0), open(req_w, "wb", buffering=0)))
    a.start()
    s.start()
    info = s.info()
    assert (info.wants, info.provides) == (agent_pb2.BATCH, agent_pb2.STREAM)
    s.init(None)
    s.point_in.put(sample_point())
    assert s.point_out.get(timeout=TIMEOUT) == sample_point()
    s.stop()
    assert a.wait(TIMEOUT) and a.error is None


def test_concurrent_writers_never_interleave_frames(pipes_factory: Callable[..., Pipes]) -> None:
    """write_response from many threads at once: every frame arrives whole."""
    writers_done = threading.Event()

    class Spray(Handler):
        def info(self) -> Any:
            return agent_pb2.InfoResponse()

        def point(self, point: Any) -> None:
            assert self.agent is not None
            agent = self.agent

            def spray(k: int) -> None:
                for i in range(300):
                    out = agent_pb2.Point(name=f"w{k}", time=i, fieldsString={"pad": "x" * (i % 50)})
                    agent.write_response(agent_pb2.Response(point=out), flush=i % 7 == 0)
                agent.flush()

            threads = [threading.Thread(target=spray, args=(k,), name=f"udf-agent-spray-{k}") for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(TIMEOUT)
            writers_done.set()

    p = pipes_factory(Spray())
    p.agent.start()
    s = p.server()
    s.start()
    s.point_in.put(sample_point())
    got = [s.point_out.get(timeout=TIMEOUT) for _ in range(1200)]
    assert writers_done.wait(TIMEOUT)
    for k in range(4):
        times = [pt.time for pt in got if pt.name == f"w{k}"]
        assert times == list(range(300))  # whole, and in order per writer
    s.stop()
    assert p.agent.wait(TIMEOUT)


# --- keepalives while the handler is busy ------------------------------------------------------


def test_keepalive_answered_while_handler_blocked_raw_frames(pipes_factory: Callable[..., Pipes]) -> None:
    h = EchoHandler()
    h.gate = threading.Event()
    p = pipes_factory(h)
    p.agent.start()
    p.send(point=agent_pb2.Point(name="slow", time=1))
    assert h.entered.wait(TIMEOUT)
    # The handler is stuck in point(); the reader still answers keepalives.
    for t in (111, 222):
        p.send(keepalive=agent_pb2.KeepaliveRequest(time=t))
        response = p.next_response()
        assert response.WhichOneof("message") == "keepalive"
        assert response.keepalive.time == t
    assert not h.gate.is_set() and h.calls == ["point"]
    assert p.agent.keepalives == 2
    h.gate.set()
    response = p.next_response()
    assert response.WhichOneof("message") == "point" and response.point.name == "slow"
    p.host_writer.close()
    assert p.read_to_eof() == []
    assert p.agent.wait(TIMEOUT) and h.stopped.is_set()


class KeepaliveCounter:
    """Wraps the host's reader: sets ``seen`` once ``n`` KeepaliveResponses went by."""

    def __init__(self, raw: Any, n: int) -> None:
        self._raw = raw
        self._decoder = FrameDecoder()
        self._n = n
        self.count = 0
        self.seen = threading.Event()

    def read1(self, size: int) -> bytes:
        data = self._raw.read(size)
        for frame in self._decoder.feed(data):
            if agent_pb2.Response.FromString(frame).WhichOneof("message") == "keepalive":
                self.count += 1
                if self.count >= self._n:
                    self.seen.set()
        return bytes(data)

    def close(self) -> None:
        self._raw.close()


def test_server_keepalive_does_not_time_out_while_handler_blocked(pipes_factory: Callable[..., Pipes]) -> None:
    keepalive = 1.0  # the server pings every 0.5 s and gives up after 1 s of silence
    h = EchoHandler()
    h.gate = threading.Event()
    p = pipes_factory(h)
    p.agent.start()
    counter = KeepaliveCounter(p.host_reader, n=3)
    aborted = threading.Event()
    s = udf.Server(counter, p.host_writer, timeout=keepalive, abort_callback=aborted.set)
    p.servers.append(s)
    s.start()
    s.point_in.put(sample_point(name="slow"))
    assert h.entered.wait(TIMEOUT)
    # Three answered pings span more than the timeout while point() is blocked.
    assert counter.seen.wait(TIMEOUT)
    assert not aborted.is_set()
    h.gate.set()
    assert s.point_out.get(timeout=TIMEOUT).name == "slow"
    s.stop()
    assert not aborted.is_set()
    assert p.agent.wait(TIMEOUT) and p.agent.error is None


# --- errors ------------------------------------------------------------------------------------


def test_handler_exception_becomes_agent_error(pipes_factory: Callable[..., Pipes]) -> None:
    h = EchoHandler()
    h.fail_on = "point"
    p = pipes_factory(h)
    p.agent.start()
    aborted = threading.Event()
    s = p.server(abort_callback=aborted.set)
    s.start()
    s.init(None)
    s.point_in.put(sample_point())
    assert aborted.wait(TIMEOUT)
    with pytest.raises(udf.AgentError, match="^error processing request of type point: boom in point$"):
        s.stop()
    assert p.agent.wait(TIMEOUT)
    assert h.stopped.is_set()
    assert str(p.agent.error) == "error processing request of type point: boom in point"


def test_request_handler_exception_fails_the_request(pipes_factory: Callable[..., Pipes]) -> None:
    h = EchoHandler()
    h.fail_on = "info"
    p = pipes_factory(h)
    p.agent.start()
    s = p.server()
    s.start()
    with pytest.raises(udf.AgentError, match="error processing request of type info: boom in info"):
        s.info()
    with pytest.raises(udf.AgentError):
        s.stop()
    assert p.agent.wait(TIMEOUT) and h.calls == ["info", "stop"]


def test_wrong_return_type_is_reported(pipes_factory: Callable[..., Pipes]) -> None:
    class Wrong(Handler):
        def info(self) -> Any:
            return agent_pb2.InitResponse(success=True)

    p = pipes_factory(Wrong())
    p.agent.start()
    p.send(info=agent_pb2.InfoRequest())
    response = p.next_response()
    assert response.WhichOneof("message") == "error"
    assert "returned InitResponse, expected agent_pb2.InfoResponse" in response.error.error
    assert p.read_to_eof() == []  # the agent stopped and closed its output


def test_after_error_requests_are_dropped_and_input_drained(pipes_factory: Callable[..., Pipes]) -> None:
    h = EchoHandler()
    h.fail_on = "point"
    p = pipes_factory(h)
    p.agent.start()
    p.send(point=agent_pb2.Point(name="a"))
    response = p.next_response()
    assert response.error.error == "error processing request of type point: boom in point"
    assert p.read_to_eof() == []
    # The agent keeps reading (and discarding) its input: far more than a pipe holds.
    payload = encode_frame(agent_pb2.Request(point=agent_pb2.Point(name="x" * 1000)).SerializeToString())
    done = threading.Event()

    def flood() -> None:
        for _ in range(1000):
            p.host_writer.write(payload)
        p.host_writer.close()
        done.set()

    flooder = threading.Thread(target=flood, name="fake-agent-flood", daemon=True)
    flooder.start()
    assert done.wait(TIMEOUT), "the agent stopped reading its input after the error"
    flooder.join(TIMEOUT)
    assert p.agent.wait(TIMEOUT)
    assert h.calls == ["point", "stop"]


def test_malformed_request_stream_is_reported(pipes_factory: Callable[..., Pipes]) -> None:
    p = pipes_factory()
    p.agent.start()
    p.host_writer.write(b"\x03\xff\xff\xff")  # a frame that is not a Request
    response = p.next_response()
    assert response.WhichOneof("message") == "error"
    assert "undecodable message" in response.error.error
    p.host_writer.close()
    assert p.read_to_eof() == []
    assert p.agent.wait(TIMEOUT)
    assert isinstance(p.agent.error, udf.ProtocolError)
    assert p.handler.stopped.is_set()


def test_truncated_input_is_a_protocol_error(pipes_factory: Callable[..., Pipes]) -> None:
    p = pipes_factory()
    p.agent.start()
    p.host_writer.write(b"\x10\x01\x02")  # 16 bytes announced, 2 sent, then EOF
    p.host_writer.close()
    responses = p.read_to_eof()
    assert [r.WhichOneof("message") for r in responses] == ["error"]
    assert "unexpected EOF inside a frame" in responses[0].error.error
    assert p.agent.wait(TIMEOUT)


def test_unknown_request_type_is_ignored(pipes_factory: Callable[..., Pipes]) -> None:
    p = pipes_factory()
    p.agent.start()
    p.host_writer.write(encode_frame(b""))  # an empty Request: no oneof member set
    p.send(info=agent_pb2.InfoRequest())
    assert p.next_response().WhichOneof("message") == "info"
    p.host_writer.close()
    assert p.read_to_eof() == []
    assert p.agent.wait(TIMEOUT) and p.agent.error is None


def test_eof_stops_handler_then_closes_output(pipes_factory: Callable[..., Pipes]) -> None:
    """stop() runs at EOF with the output still open: what it writes is delivered."""

    class Flusher(EchoHandler):
        def stop(self) -> None:
            super().stop()
            assert self.agent is not None
            self.agent.write_response(agent_pb2.Response(point=agent_pb2.Point(name="final")), flush=False)

    p = pipes_factory(Flusher())
    p.agent.start()
    s = p.server()
    s.start()
    s.init(None)
    s.stop()  # closes the agent's input
    assert p.agent.wait(TIMEOUT)
    assert p.handler.calls == ["init", "stop"]
    assert [pt.name for pt in s.point_out] == ["final"]
    with pytest.raises(udf.UDFError, match="output is closed"):
        p.agent.write_response(agent_pb2.Response(point=agent_pb2.Point()))


def test_host_gone_stops_the_agent(pipes_factory: Callable[..., Pipes]) -> None:
    p = pipes_factory()
    p.agent.start()
    p.host_reader.close()  # nobody reads the agent's output any more
    p.send(point=agent_pb2.Point(name="a"))
    p.host_writer.close()
    assert p.agent.wait(TIMEOUT)
    assert isinstance(p.agent.error, udf.WriteError)
    assert p.handler.stopped.is_set()


def test_agent_misuse() -> None:
    r, w = os.pipe()
    reader, writer = open(r, "rb"), open(w, "wb")
    a = Agent(reader, writer, name="udf-agent-misuse")
    with pytest.raises(udf.UDFError, match="no handler"):
        a.start()
    with pytest.raises(udf.UDFError, match="not started"):
        a.wait(0)
    with pytest.raises(TypeError, match="agent_pb2.Response"):
        a.write_response(agent_pb2.InfoResponse())  # not a Response (agent_pb2 is untyped: mypy cannot tell)
    with pytest.raises(ValueError):
        Agent(open(os.devnull, "rb"), open(os.devnull, "wb"), queue_size=0)
    with pytest.raises(udf.UDFError, match="not started"):
        a.abort(udf.UDFError("too early"))
    reader.close()
    writer.close()


# --- child processes -----------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys
    import agent_pb2
    from udf.agent import Handler, main, init_options

    class Child(Handler):
        state = b""

        def info(self):
            r = agent_pb2.InfoResponse(wants=agent_pb2.STREAM, provides=agent_pb2.STREAM)
            r.options["mode"].valueTypes.append(agent_pb2.STRING)
            return r

        def init(self, init_req):
            mode = init_options(init_req).get("mode", ["ok"])[0]
            if mode != "ok":
                return agent_pb2.InitResponse(success=False, error="unknown mode " + mode)
            return agent_pb2.InitResponse(success=True)

        def snapshot(self):
            return agent_pb2.SnapshotResponse(snapshot=self.state)

        def restore(self, req):
            self.state = req.snapshot
            return agent_pb2.RestoreResponse(success=True)

        def begin_batch(self, begin):
            self.agent.write_response(agent_pb2.Response(begin=begin), flush=False)

        def point(self, point):
            if point.name == "crash":
                raise RuntimeError("asked to crash")
            print("a stray print must not corrupt the protocol")
            self.state += point.name.encode()
            self.agent.write_response(agent_pb2.Response(point=point), flush=False)

        def end_batch(self, end):
            self.agent.write_response(agent_pb2.Response(end=end), flush=False)

        def stop(self):
            # Sent after the input ended: proves stop() ran with the output open.
            self.agent.write_response(agent_pb2.Response(point=agent_pb2.Point(name="stopped")))

    sys.exit(main(Child))
    """
)


@pytest.fixture
def child() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        # No -u: the agent must flush on its own.
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


def test_child_process_conversation(child: Callable[[], subprocess.Popen[bytes]]) -> None:
    proc = child()
    s = tracked(udf.Server(proc.stdout, proc.stdin, timeout=TIMEOUT))
    s.start()
    info = s.info()
    assert info.wants == agent_pb2.STREAM and list(info.options) == ["mode"]
    with pytest.raises(udf.InitError, match="unknown mode fast"):
        fast = agent_pb2.OptionValue(type=agent_pb2.STRING, stringValue="fast")
        s.init([agent_pb2.Option(name="mode", values=[fast])])
    s.init(None)
    s.restore(b"ab")
    pts = [sample_point(name=n, time=T0 + i) for i, n in enumerate("cde")]
    for pt in pts:
        s.point_in.put(pt)
    assert [s.point_out.get(timeout=TIMEOUT) for _ in pts] == pts
    b = Batch(
        name="cpu",
        tmax=T0,
        group="g",
        tags={"t": "v"},
        points=[BatchPoint(time=T0, fields={"v": 1, "ok": False}, tags={"t": "v"})],
    )
    s.batch_in.put(b)
    assert s.batch_out.get(timeout=TIMEOUT) == b
    assert s.snapshot() == b"abcde"
    s.stop()
    assert [pt.name for pt in s.point_out] == ["stopped"]
    assert proc.wait(TIMEOUT) == 0
    assert proc.stderr is not None
    assert b"a stray print must not corrupt the protocol" in proc.stderr.read()


def test_child_process_handler_error(child: Callable[[], subprocess.Popen[bytes]]) -> None:
    proc = child()
    s = tracked(udf.Server(proc.stdout, proc.stdin))
    s.start()
    s.init(None)
    s.point_in.put(sample_point(name="crash"))
    with pytest.raises(udf.AgentError, match="error processing request of type point: asked to crash"):
        s.stop()
    assert proc.wait(TIMEOUT) == 1
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode()
    assert "E! udf.agent: error processing request of type point: asked to crash" in stderr


def test_child_process_eof_stops_cleanly(child: Callable[[], subprocess.Popen[bytes]]) -> None:
    proc = child()
    s = tracked(udf.Server(proc.stdout, proc.stdin))
    s.start()
    s.stop()
    assert [pt.name for pt in s.point_out] == ["stopped"]
    assert proc.wait(TIMEOUT) == 0


# --- AgentServer -------------------------------------------------------------------------------


def connect(address: str) -> socket.socket:
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://") :].rpartition(":")
        return socket.create_connection((host, int(port)), timeout=TIMEOUT)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.connect(address)
    return sock


def host_server(sock: socket.socket) -> udf.Server:
    return tracked(udf.Server(sock.makefile("rb", buffering=0), HalfCloseWriter(sock)))


@pytest.fixture
def short_tmp() -> Iterator[str]:
    """A short temporary directory: unix socket paths are limited to ~100 bytes."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="udf-") as d:
        yield d


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_agent_server_serves_each_connection(kind: str, short_tmp: str) -> None:
    handlers: list[EchoHandler] = []

    def factory(agent: Agent) -> Handler:
        h = EchoHandler(agent)
        handlers.append(h)
        return h

    path = os.path.join(short_tmp, "echo.sock")
    address = path if kind == "unix" else "tcp://127.0.0.1:0"
    server = AgentServer(address, factory)
    _CLEANUP.append(server.stop)
    if kind == "unix":
        assert server.address == path and os.path.exists(path)
    else:
        assert server.address.startswith("tcp://127.0.0.1:") and not server.address.endswith(":0")
    with server:
        socks = [connect(server.address) for _ in range(2)]
        hosts = [host_server(sock) for sock in socks]
        for i, s in enumerate(hosts):
            s.start()
            s.init(None)
            s.point_in.put(sample_point(name=f"conn{i}"))
        for i, s in enumerate(hosts):
            assert s.point_out.get(timeout=TIMEOUT).name == f"conn{i}"
            s.stop()
        for sock in socks:
            sock.close()
    # stop() joined every agent: both handlers were stopped.
    assert len(handlers) == 2 and all(h.stopped.is_set() for h in handlers)
    assert server.connections == 0
    if kind == "unix":
        assert not os.path.exists(path)


def test_agent_server_stop_ends_open_connections(short_tmp: str) -> None:
    handlers: list[EchoHandler] = []

    def factory(agent: Agent) -> Handler:
        handlers.append(EchoHandler(agent))
        return handlers[-1]

    server = AgentServer(os.path.join(short_tmp, "a.sock"), factory)
    _CLEANUP.append(server.stop)
    server.start()
    sock = connect(server.address)
    s = host_server(sock)
    s.start()
    s.init(None)
    assert server.connections == 1
    stopper = threading.Thread(target=server.stop, name="udf-agent-test-stopper")
    stopper.start()
    # The agent's input is shut down: its handler stops and its output ends.
    assert handlers[0].stopped.wait(TIMEOUT)
    assert list(s.point_out) == []
    stopper.join(TIMEOUT)
    assert not stopper.is_alive()
    s.stop()
    sock.close()
    assert not os.path.exists(server.address)


def test_agent_server_replaces_stale_socket_refuses_live_one(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # leaves the file behind, nobody listening
    server = AgentServer(path, EchoHandler)
    try:
        with pytest.raises(OSError, match="another server is listening"):
            AgentServer(path, EchoHandler)
    finally:
        server.stop()
    assert not os.path.exists(path)
    with pytest.raises(ValueError, match="tcp://host:port"):
        AgentServer("tcp://localhost", EchoHandler)


def test_agent_server_states_follow_its_table(short_tmp: str) -> None:
    server = AgentServer(os.path.join(short_tmp, "s.sock"), EchoHandler)
    assert server.state is agent_mod.ServerState.NEW
    server.start()
    assert server.state is agent_mod.ServerState.SERVING
    with pytest.raises(udf.UDFError, match="already started"):
        server.start()
    server.stop()
    assert server.state is agent_mod.ServerState.STOPPED
    server.stop()  # again: nothing to do
    server.serve_forever()  # stopped already: returns at once
    with pytest.raises(udf.UDFError, match="agent server stopped"):
        server.start()
    never = AgentServer(os.path.join(short_tmp, "n.sock"), EchoHandler)
    never.stop()  # stop() before start() closes the socket
    assert never.state is agent_mod.ServerState.STOPPED and not os.path.exists(never.address)
