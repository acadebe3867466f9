"""Limits on what a peer can take from an AgentServer (issue 21), against a real agent process.

Each limit is played against ``examples/moving_avg.py --socket tcp://127.0.0.1:0``
by hostile peers on real sockets; the agent's threads, descriptors and RSS are
read from ``/proc/PID`` (never assumed). Every wait is on something the agent
does (a log line, a socket's end), bounded by TIMEOUT. The pure decisions
(:mod:`udf.agent.connections`) and the state tables get unit tests of their own.
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import agent_pb2
import udf
from udf.agent import AgentState
from udf.agent.connections import RESERVED_PER_CONNECTION, Connections, Limits
from udf.agent.states import ConnectionEvent, ConnectionState
from udf.lifecycle import IllegalTransition
from udf.wire import FrameDecoder, encode_frame, encode_uvarint

from ..helpers import TIMEOUT
from ..helpers.agent_process import AgentProcess, MiB

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to measure")


class Agents:
    """Starts agent processes (``agents(*flags)``) and keeps them and the peers' sockets, to end them after the test."""

    def __init__(self) -> None:
        self.started: list[AgentProcess] = []
        self.sockets: list[socket.socket] = []

    def __call__(self, *flags: str) -> AgentProcess:
        agent = AgentProcess(*flags)
        self.started.append(agent)
        return agent


@pytest.fixture
def agent_process() -> Iterator[Agents]:
    agents = Agents()
    yield agents
    for sock in agents.sockets:
        sock.close()
    for agent in agents.started:
        if agent.proc.returncode is None:
            agent.stop()


def peer(agent: AgentProcess, opened: list[socket.socket]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", agent.port), timeout=TIMEOUT)
    opened.append(sock)
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    """What the agent sent until it closed the connection (waits at most TIMEOUT each read)."""
    sock.settimeout(TIMEOUT)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data


def still_open(sock: socket.socket) -> bool:
    """True if the agent has neither closed nor reset the connection (what it sent is read and dropped)."""
    sock.setblocking(False)
    try:
        while True:
            if not sock.recv(65536):
                return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(TIMEOUT)


def errors_in(data: bytes) -> list[str]:
    return [agent_pb2.Response.FromString(f).error.error for f in FrameDecoder().feed(data)]


def averages(address: str, values: list[float]) -> list[float]:
    """A good host (udf.Socket): info, init(size=2), the points; the moving averages it gets back."""
    with udf.Socket(address, connect_timeout=TIMEOUT, timeout=TIMEOUT) as host:
        assert host.info().wants == agent_pb2.STREAM
        host.init({"field": "v", "size": 2})
        for i, v in enumerate(values):
            host.point_in.put(udf.Point(name="m", group="g", fields={"v": v}, time=i + 1))
        return [float(host.point_out.get(timeout=TIMEOUT).fields["avg"]) for _ in values[1:]]


INFO = encode_frame(agent_pb2.Request(info=agent_pb2.InfoRequest()).SerializeToString())


# --- max_connections ---------------------------------------------------------------------------------


def test_connections_beyond_the_cap_are_closed_at_once_and_named(agent_process: Agents) -> None:
    agent = agent_process("--max-connections", "4")
    opened = agent_process.sockets
    idle = [peer(agent, opened) for _ in range(4)]
    agent.wait_for(r"I! udf.agent: serving connection \d+", 4)
    extra = [peer(agent, opened) for _ in range(12)]
    for sock in extra:  # closed at once, told why: no wait for any timeout
        assert errors_in(read_to_end(sock)) == ["agent busy: it serves 4 connections already (max_connections)"]
    refused = agent.wait_for(r"W! udf.agent: refused connection", 12)
    ports = {str(sock.getsockname()[1]) for sock in extra}
    cap = re.compile(r"from 127\.0\.0\.1:(\d+): 4 connections open already \(max_connections\)")
    matches = [cap.search(line) for line in refused]
    assert all(matches), refused
    named = {match.group(1) for match in matches if match}
    assert named == ports
    # Measured, not assumed: each served connection holds a reader and a handler thread and one descriptor.
    agent.holding(4)
    assert all(still_open(sock) for sock in idle)
    # A good host is refused while the cap is full, and served once a slot is free.
    with pytest.raises(udf.AgentError, match="agent busy"):
        averages(agent.address, [1.0, 2.0])
    idle[0].close()
    agent.wait_for(r"connection of udf-agent-1 finished")
    assert averages(agent.address, [1.0, 3.0, 5.0]) == [2.0, 4.0]
    assert all(still_open(sock) for sock in idle[1:])
    agent.stop()


# --- first_request_timeout ---------------------------------------------------------------------------


def test_a_connection_without_a_complete_first_request_is_closed_in_time(agent_process: Agents) -> None:
    timeout = 1.0
    agent = agent_process("--first-request-timeout", str(timeout))
    opened = agent_process.sockets
    begin = time.monotonic()
    hostile = [peer(agent, opened) for _ in range(3)]  # say nothing
    partial = peer(agent, opened)
    partial.sendall(encode_uvarint(1000) + bytes(100))  # a frame never finished
    garbage = peer(agent, opened)
    garbage.sendall(bytes(random.Random(21).getrandbits(8) for _ in range(4096)))
    served = peer(agent, opened)
    served.sendall(INFO)  # a complete first request: served from now on, however long it idles
    assert response_of(served).WhichOneof("message") == "info"
    agent.wait_for(r"serving connection", 6)
    during = agent.figures()
    # Two threads each; the garbage's handler thread ends at once (its reader discards until the deadline).
    assert agent.base["threads"] + 2 * 5 + 1 <= during["threads"] <= agent.base["threads"] + 2 * 6, during
    ends = []
    for sock in [*hostile, partial]:
        assert read_to_end(sock) == b""
        ends.append(time.monotonic() - begin)
    assert min(ends) >= timeout, ends  # not before the deadline
    [error] = errors_in(read_to_end(garbage))  # told at once; its input is cut at the deadline
    assert error.startswith("the input is text, not UDF frames"), error
    closed = agent.wait_for(
        r"W! udf.agent: closed connection \d+ from 127\.0\.0\.1:\d+: "
        r"no complete first request within 1s \(first_request_timeout\)",
        5,
    )
    assert len(closed) == 5
    agent.wait_for(r"connection of udf-agent-\d+ finished", 5)
    agent.holding(1)  # only the served connection's pair of threads and its socket
    # The served connection was not touched: it still answers.
    assert still_open(served)
    served.sendall(encode_frame(agent_pb2.Request(init=agent_pb2.InitRequest()).SerializeToString()))
    init = response_of(served)
    assert init.init.error == "missing required option 'field'; missing required option 'size'"
    agent.stop()


def response_of(sock: socket.socket) -> agent_pb2.Response:
    return agent_pb2.Response.FromString(FrameDecoder().feed(read_to_end_of_frame(sock))[0])


def read_to_end_of_frame(sock: socket.socket) -> bytes:
    """One whole response frame from ``sock`` (waits at most TIMEOUT)."""
    decoder = FrameDecoder()
    sock.settimeout(TIMEOUT)
    data = b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, "the agent closed the connection; expected a response"
        data += chunk
        if decoder.feed(chunk):
            return data


# --- max_buffered_bytes --------------------------------------------------------------------------------


def test_unfinished_frames_never_pass_the_buffer_budget(agent_process: Agents) -> None:
    budget, peers = 32 * MiB, 12
    agent = agent_process("--max-connections", "16", "--max-buffered-bytes", str(budget))
    # A 12 MiB restore request, sent whole but for its last byte: the agent holds it unfinished.
    restore = agent_pb2.Request(restore=agent_pb2.RestoreRequest(snapshot=bytes(12 * MiB)))
    frame = encode_frame(restore.SerializeToString())
    body, last = frame[:-1], frame[-1:]
    limits = Limits(16, 30.0, budget)
    # However the reads interleave, exactly this many peers keep their frame (see Connections.charge).
    keep = limits.shared // (len(body) - limits.reserved)
    assert keep == 2
    opened = agent_process.sockets
    socks = [peer(agent, opened) for _ in range(peers)]
    agent.wait_for(r"serving connection", peers)

    def send(sock: socket.socket) -> None:
        try:
            sock.sendall(body)
        except OSError:
            pass  # closed by the agent while sending

    senders = [threading.Thread(target=send, args=(sock,), name="fake-agent-sender") for sock in socks]
    for thread in senders:
        thread.start()
    refused = agent.wait_for(
        r"W! udf.agent: closed connection \d+ from 127\.0\.0\.1:\d+: its unfinished frame "
        rf"\(\d+ bytes so far\) would pass max_buffered_bytes \({budget} bytes",
        peers - keep,
    )
    for thread in senders:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "a sender is stuck: a closed connection must reset the peer"
    agent.wait_for(r"connection of udf-agent-\d+ finished", peers - keep)  # logged once its socket is closed
    kept = [sock for sock in socks if still_open(sock)]
    assert len(kept) == keep and len(refused) == peers - keep
    held = agent.holding(keep)
    # RSS, measured: bounded by the budget (plus what the allocator keeps), never the 144 MiB the peers sent.
    grown = held["rss"] - agent.base["rss"]
    assert grown < budget + 32 * MiB, grown / MiB
    # The kept frames were held whole: their last byte completes them, and the agent answers.
    for sock in kept:
        sock.sendall(last)
        assert response_of(sock).restore.error == "restore before init: size is unknown"
    # A good host is not disturbed by the budget the others took: its frames fit its own share.
    assert averages(agent.address, [2.0, 4.0, 6.0]) == [3.0, 5.0]
    agent.stop()


# --- all of them at once -------------------------------------------------------------------------------


def test_a_good_host_is_served_while_hostile_peers_are_connected(agent_process: Agents) -> None:
    agent = agent_process()  # the defaults: 64 connections, 30 s, 256 MiB
    opened = agent_process.sockets
    rng = random.Random(17)
    idle = [peer(agent, opened) for _ in range(20)]
    garbage = [peer(agent, opened) for _ in range(5)]
    for sock in garbage:
        sock.sendall(bytes(rng.getrandbits(8) for _ in range(8192)))
    huge = peer(agent, opened)
    huge.sendall(b"\x80\x80\x80\x80\x10")  # a 4 GiB length prefix
    big = peer(agent, opened)
    big.sendall(encode_uvarint(40 * MiB) + bytes(40 * MiB - 1))  # a 40 MiB frame, never finished
    agent.wait_for(r"serving connection", 27)
    assert errors_in(read_to_end_of_frame(huge)) == [
        "frame of 4294967296 bytes exceeds the maximum frame size of 67108864 bytes"
    ]
    values = [float(v) for v in range(1, 201)]
    assert averages(agent.address, values) == [v + 0.5 for v in values[:-1]]
    # Served while every hostile peer is still connected: none was closed to make room.
    assert all(still_open(sock) for sock in idle + [big])
    assert not agent.matching(r"closed connection|refused connection")
    agent.stop()


# --- the pure parts: decisions and state tables -------------------------------------------------------


class FakeSocket:
    pass


def registry(**limits: float) -> Connections:
    return Connections(Limits(**limits))  # type: ignore[arg-type]


def test_limits_are_checked_by_name() -> None:
    for bad in ({"max_connections": 0}, {"max_buffered_bytes": -1}, {"max_connections": 1.5}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be a positive integer"):
            Limits(**bad)
    with pytest.raises(ValueError, match="first_request_timeout must be a positive number"):
        Limits(first_request_timeout=0)
    assert Limits().reserved == RESERVED_PER_CONNECTION
    assert Limits().shared == 256 * MiB - 64 * RESERVED_PER_CONNECTION
    assert Limits(max_connections=4, max_buffered_bytes=100).reserved == 25  # a small budget: split evenly


def test_admission_stops_at_the_cap_and_frees_a_slot_at_the_end() -> None:
    conns = registry(max_connections=2)
    a = conns.admit(1, "a", FakeSocket(), 0.0, handshake=False)  # type: ignore[arg-type]
    b = conns.admit(2, "b", FakeSocket(), 0.0, handshake=True)  # type: ignore[arg-type]
    assert a and b and b.state is ConnectionState.HANDSHAKING
    assert conns.admit(3, "c", FakeSocket(), 0.0, handshake=False) is None  # type: ignore[arg-type]
    conns.fire(a, ConnectionEvent.END)
    assert conns.admit(4, "d", FakeSocket(), 0.0, handshake=False) is not None  # type: ignore[arg-type]


def test_deadlines_expire_in_accept_order_and_spare_served_connections() -> None:
    conns = registry(first_request_timeout=10.0)
    a, b, c = (conns.admit(n, str(n), FakeSocket(), float(n), handshake=n == 2) for n in (1, 2, 3))  # type: ignore[arg-type]
    assert a and b and c
    assert conns.next_deadline() == 11.0
    conns.fire(a, ConnectionEvent.FIRST_REQUEST)
    assert conns.next_deadline() == 12.0  # a is served: no deadline
    assert conns.expired(12.5) == [b]  # the handshake counts against the deadline
    assert b.state is ConnectionState.CLOSING and c.state is ConnectionState.AWAITING_REQUEST
    assert conns.expired(100.0) == [c] and conns.next_deadline() is None
    assert a.state is ConnectionState.SERVED


def test_the_budget_charges_beyond_each_share_and_refuses_the_frame_that_would_pass_it() -> None:
    assert registry(max_connections=2, max_buffered_bytes=1000).reserved == 500  # a small budget: all shares
    assert Limits(2, 30.0, 1000).shared == 0
    conns = registry(max_connections=4, max_buffered_bytes=4 * RESERVED_PER_CONNECTION + 1000)
    assert conns.reserved == RESERVED_PER_CONNECTION
    a, b = (conns.admit(n, str(n), FakeSocket(), 0.0, handshake=False) for n in (1, 2))  # type: ignore[arg-type]
    assert a and b
    share = RESERVED_PER_CONNECTION
    assert conns.charge(a, share) and a.charged == 0  # within its own share: free
    assert conns.charge(a, share + 600) and conns.buffered == 600
    assert conns.charge(b, share + 400) and conns.buffered == 1000  # exactly the pool
    assert not conns.charge(b, share + 401)  # one byte more: b is refused, its charge released
    assert b.state is ConnectionState.CLOSING and conns.buffered == 600
    assert conns.charge(b, 10**9)  # a closing connection is not charged again
    assert conns.charge(a, 10) and conns.buffered == 0  # a's frame completed: released
    conns.fire(a, ConnectionEvent.END)
    assert conns.buffered == 0


def test_connection_table_refuses_what_it_lacks() -> None:
    conns = registry()
    a = conns.admit(1, "a", FakeSocket(), 0.0, handshake=False)  # type: ignore[arg-type]
    assert a is not None
    with pytest.raises(IllegalTransition, match="udf.agent.Connection: no transition for event 'handshake_done'"):
        conns.fire(a, ConnectionEvent.HANDSHAKE_DONE)
    conns.fire(a, ConnectionEvent.END)
    with pytest.raises(IllegalTransition):
        conns.fire(a, ConnectionEvent.FIRST_REQUEST)


def test_agent_states_through_a_run_and_an_abort() -> None:
    from udf.agent import Agent, Handler

    class Quiet(Handler):
        pass

    for how in ("eof", "abort"):
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        agent = Agent(open(req_r, "rb"), open(resp_w, "wb"), Quiet(), name="udf-agent-states")
        assert agent.state is AgentState.NEW
        agent.start()
        assert agent.state is AgentState.RUNNING
        with pytest.raises(udf.UDFError, match="already started"):
            agent.start()
        if how == "abort":
            agent.abort(udf.UDFError("stop now"))
            assert agent.state in (AgentState.FAILING, AgentState.DISCARDING)
        os.close(req_w)  # EOF
        assert agent.wait(TIMEOUT)
        assert agent.state is AgentState.DONE
        assert (agent.error is None) == (how == "eof")
        agent.abort(udf.UDFError("after the end"))  # changes nothing
        assert agent.state is AgentState.DONE and (agent.error is None) == (how == "eof")
        with open(resp_r, "rb") as out:
            assert out.read() == b""  # nothing was asked, nothing was said
