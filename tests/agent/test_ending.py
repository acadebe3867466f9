"""How agents built on udf.agent end: Ctrl-C, and AgentServer.stop() from a handler (issue 8, 14 and 9).

Real child processes and real sockets. A child agent counts as running once it
has answered an info request; only then is it interrupted.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, cast

import pytest

import agent_pb2
from udf.agent import Agent, AgentServer, Handler
from udf.wire import read_message, write_message

from ..helpers import ROOT, TIMEOUT

MIRROR = ROOT / "examples" / "mirror.py"
#: Runs per mode: the crash this guards against showed in about 4 runs of 10.
RUNS = 10

INFO = agent_pb2.Request(info=agent_pb2.InfoRequest())


def ask_info(writer: IO[bytes], reader: IO[bytes]) -> Any:
    """Send an info request and return the answer: the agent is demonstrably running."""
    write_message(writer, INFO)
    writer.flush()
    response = read_message(reader, agent_pb2.Response.FromString)
    assert response is not None and response.WhichOneof("message") == "info", response
    return response


def interrupt(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """SIGINT the child; its exit status and the rest of its stderr."""
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(TIMEOUT)
    finally:
        proc.kill()  # no-op once it exited; ends it if the wait timed out
    assert proc.stderr is not None
    return code, proc.stderr.read().decode(errors="replace")


def sigint_default() -> None:
    """In the child, before exec: SIGINT back to its default disposition.

    A test run started in the background by a non-interactive shell inherits
    SIGINT ignored, and an ignored signal stays ignored across exec: the agent
    would never see the Ctrl-C these tests send.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_stdio_agent() -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, str(MIRROR)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=sigint_default,
    )
    assert proc.stdin is not None and proc.stdout is not None
    ask_info(proc.stdin, proc.stdout)
    return proc


def start_socket_agent(path: Path) -> tuple[subprocess.Popen[bytes], socket.socket]:
    proc = subprocess.Popen(
        [sys.executable, str(MIRROR), "--socket", str(path)],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=sigint_default,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()  # the agent logs where it listens before it accepts
    assert f"listening on {path}" in line, line
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(TIMEOUT)
    conn.connect(str(path))
    stream = cast(IO[bytes], conn.makefile("rwb", buffering=0))
    ask_info(stream, stream)
    return proc, conn


def close_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait(TIMEOUT)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def check_outcomes(outcomes: list[tuple[int, str]]) -> None:
    bad = [(code, err) for code, err in outcomes if code != 130 or "Fatal Python error" in err or "Traceback" in err]
    assert not bad, f"{len(bad)} of {len(outcomes)} runs: {bad[0]}"


@pytest.mark.slow
def test_ctrl_c_on_a_stdio_agent_exits_130_without_a_fatal_error() -> None:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # Started together (fast); each is interrupted only once it answered info,
        # i.e. while its reader thread is blocked reading stdin.
        procs = [start_stdio_agent() for _ in range(RUNS)]
        outcomes = [interrupt(proc) for proc in procs]
    finally:
        close_all(procs)
    check_outcomes(outcomes)


@pytest.mark.slow
def test_ctrl_c_on_a_socket_agent_exits_130_and_ends_its_connections(tmp_path: Path) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    conns: list[socket.socket] = []
    try:
        for i in range(RUNS):
            proc, conn = start_socket_agent(tmp_path / f"mirror{i}.sock")
            procs.append(proc)
            conns.append(conn)
        outcomes = [interrupt(proc) for proc in procs]
        for conn in conns:
            assert conn.recv(1) == b""  # the agent closed the open connection cleanly
    finally:
        for conn in conns:
            conn.close()
        close_all(procs)
    check_outcomes(outcomes)
    assert not list(tmp_path.glob("*.sock"))  # each removed its socket file


# --- AgentServer.stop() from a handler -----------------------------------------------------


class StoppingHandler(Handler):
    """init() with an option named "stop" calls server.stop() and records that it returned."""

    server: AgentServer | None = None
    agents: list[Agent] = []
    stop_returned = threading.Event()

    def __init__(self, agent: Agent) -> None:
        super().__init__(agent)
        self.agents.append(agent)

    def info(self) -> Any:
        return agent_pb2.InfoResponse(wants=agent_pb2.STREAM, provides=agent_pb2.STREAM)

    def init(self, init_req: Any) -> Any:
        if any(opt.name == "stop" for opt in init_req.options):
            assert self.server is not None
            self.server.stop(timeout=TIMEOUT)
            self.stop_returned.set()
        return agent_pb2.InitResponse(success=True)


def test_agent_server_stop_from_a_handler_returns_and_stops_the_others(tmp_path: Path) -> None:
    path = tmp_path / "stop.sock"
    StoppingHandler.agents = []
    StoppingHandler.stop_returned = threading.Event()
    server = AgentServer(str(path), StoppingHandler)
    StoppingHandler.server = server
    conns: list[socket.socket] = []
    try:
        server.start()
        for _ in range(2):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.settimeout(TIMEOUT)
            conn.connect(str(path))
            conns.append(conn)
        caller, other = (cast(IO[bytes], c.makefile("rwb", buffering=0)) for c in conns)
        ask_info(caller, caller)
        ask_info(other, other)
        assert server.connections == 2
        calling_agent = StoppingHandler.agents[0]

        write_message(caller, agent_pb2.Request(init=agent_pb2.InitRequest(options=[agent_pb2.Option(name="stop")])))
        assert StoppingHandler.stop_returned.wait(TIMEOUT), "stop() from a handler did not return"
        assert read_message(other, agent_pb2.Response.FromString) is None  # the other agent was stopped
        assert StoppingHandler.agents[1].done
        # The caller's agent finishes after its handler returns: its answer, then the end.
        answer = read_message(caller, agent_pb2.Response.FromString)
        assert answer is not None and answer.init.success
        assert read_message(caller, agent_pb2.Response.FromString) is None
        assert calling_agent.wait(TIMEOUT) and calling_agent.error is None
        assert not path.exists()
    finally:
        for conn in conns:
            conn.close()
        if StoppingHandler.stop_returned.is_set():  # else stop() would wait forever for the stuck handler
            server.stop(timeout=TIMEOUT)  # from the test thread: waits for every agent
    assert server.connections == 0
