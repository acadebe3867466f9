"""udf.Socket against real unix sockets and TCP on 127.0.0.1.

The agent is either tests/agents/echo.py run as a listening child process, or an
in-test listener thread ("udf-test-listener") when the test must see or steer
what the agent does. Every wait is bounded by TIMEOUT; nothing sleeps.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any, cast

import pytest

import agent_pb2
import udf
from udf import Batch, BatchPoint, Point
from udf.socket import backoff_delays
from udf.wire import FrameDecoder

from ..agents._common import Echo, requests, send
from ..helpers import AGENTS, TIMEOUT

ECHO = AGENTS / "echo.py"


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="udf")


@pytest.fixture
def sock_path() -> Iterator[str]:
    """A path for a unix socket, short enough for sun_path."""
    folder = tempfile.mkdtemp(prefix="udf-")
    yield os.path.join(folder, "agent.sock")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Child agents, killed and reaped at teardown should a test fail half-way."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for child in procs:
        if child.poll() is None:
            child.kill()
        child.wait(TIMEOUT)
        if child.stdout is not None:
            child.stdout.close()


@pytest.fixture
def sockets() -> Iterator[list[udf.Socket]]:
    made: list[udf.Socket] = []
    yield made
    for s in made:
        try:
            s.close()
        except udf.UDFError:
            pass


class Listener:
    """An agent on a unix socket, served by ``serve(conn)`` in a thread named udf-test-listener.

    Binds at once, or (``start``) only once that event is set.
    """

    def __init__(self, path: str, serve: Callable[[socket.socket], None], start: threading.Event | None = None):
        self.path = path
        self.serve = serve
        self.errors: list[BaseException] = []
        self.sock: socket.socket | None = None
        if start is None:
            self._bind()
        self._start = start
        self.thread = threading.Thread(target=self._run, name="udf-test-listener", daemon=True)
        self.thread.start()

    def _bind(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        sock.listen(1)
        sock.settimeout(TIMEOUT)
        self.sock = sock

    def _run(self) -> None:
        try:
            if self._start is not None:
                assert self._start.wait(TIMEOUT), "never told to start"
                self._bind()
            assert self.sock is not None
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                self.serve(conn)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            if self.sock is not None:
                self.sock.close()

    def join(self) -> None:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "listener did not end"
        assert self.errors == []


def serve_echo(conn: socket.socket) -> None:
    with conn.makefile("rb") as inp, conn.makefile("wb", buffering=0) as out:
        Echo().serve(inp, cast(IO[bytes], out))


def point(n: int) -> Point:
    return Point(name="cpu", tags={"host": "a"}, fields={"n": n}, time=n)


def converse(s: udf.Socket) -> None:
    """The same conversation over any transport: every request kind, points and a batch."""
    info = s.info()
    assert (info.wants, info.provides) == (agent_pb2.STREAM, agent_pb2.STREAM)
    s.init([])
    with pytest.raises(udf.InitError, match="told to fail"):
        s.init([agent_pb2.Option(name="fail")])
    for n in range(3):
        s.point_in.put(point(n))
    assert [s.point_out.get(timeout=TIMEOUT) for _ in range(3)] == [point(n) for n in range(3)]
    s.batch_in.put(Batch(name="b", tmax=5, points=[BatchPoint(time=5, fields={"v": 1})]))
    got = s.batch_out.get(timeout=TIMEOUT)
    assert (got.name, got.tmax, [bp.fields for bp in got.points]) == ("b", 5, [{"v": 1}])
    assert s.snapshot() == b"points=4"
    s.restore(b"points=0")
    assert s.snapshot() == b"points=0"


# --- agents in child processes -----------------------------------------------------


def test_unix_socket_agent(sock_path: str, children: list[subprocess.Popen[bytes]], sockets: list[udf.Socket]) -> None:
    child = subprocess.Popen([sys.executable, str(ECHO), "--unix", sock_path])
    children.append(child)
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    # The child may not listen yet: open() retries until it does.
    s = udf.Socket(sock_path, connect_timeout=TIMEOUT, initial_backoff=0.005)
    sockets.append(s)
    s.open()
    converse(s)
    s.close()
    assert child.wait(TIMEOUT) == 0  # it saw EOF and ended the connection
    if fds is not None:
        assert len(os.listdir("/proc/self/fd")) == fds  # the connection is closed
    with pytest.raises(udf.ServerStoppedError):
        s.info()


def test_tcp_agent(children: list[subprocess.Popen[bytes]], sockets: list[udf.Socket]) -> None:
    child = subprocess.Popen([sys.executable, str(ECHO), "--tcp"], stdout=subprocess.PIPE)
    children.append(child)
    assert child.stdout is not None
    port = int(child.stdout.readline())
    with udf.Socket(f"tcp://127.0.0.1:{port}", connect_timeout=TIMEOUT) as s:
        sockets.append(s)
        converse(s)
    assert child.wait(TIMEOUT) == 0


# --- in-test agents -----------------------------------------------------------------


def test_half_close_lets_the_agent_answer_after_eof(sock_path: str, sockets: list[udf.Socket]) -> None:
    seen: dict[str, Any] = {}

    def serve(conn: socket.socket) -> None:
        with conn.makefile("rb") as inp, conn.makefile("wb", buffering=0) as out:
            got = list(requests(inp))  # ends at the host's half-close
            seen["requests"] = got
            echoes = [agent_pb2.Response(point=r.point) for r in got]
            send(cast(IO[bytes], out), echoes + [agent_pb2.Response(point=agent_pb2.Point(name="after-eof"))])

    listener = Listener(sock_path, serve)
    s = udf.Socket(sock_path, connect_timeout=TIMEOUT)
    sockets.append(s)
    s.open()
    for n in range(3):
        s.point_in.put(point(n))
    s.close()  # half-closes, then reads until the agent ends the connection
    listener.join()
    assert [r.WhichOneof("message") for r in seen["requests"]] == ["point"] * 3
    assert list(s.point_out) == [point(0), point(1), point(2), Point(name="after-eof")]


def test_connect_retries_until_the_socket_appears(
    sock_path: str, sockets: list[udf.Socket], caplog: pytest.LogCaptureFixture
) -> None:
    failed_once = threading.Event()
    retries: list[tuple[int, type, float]] = []

    def on_retry(attempt: int, error: BaseException, delay: float) -> None:
        retries.append((attempt, type(error), delay))
        failed_once.set()

    listener = Listener(sock_path, serve_echo, start=failed_once)
    s = udf.Socket(sock_path, connect_timeout=TIMEOUT, initial_backoff=0.002, jitter=0, on_retry=on_retry)
    sockets.append(s)
    s.open()
    assert retries[0][:2] == (1, FileNotFoundError)
    assert [attempt for attempt, _, _ in retries] == list(range(1, len(retries) + 1))
    assert [delay for _, _, delay in retries] == pytest.approx([0.002 * 1.5**i for i in range(len(retries))])
    assert any(
        r.getMessage().startswith(f"connecting to unix socket {sock_path} failed (attempt 1): ") for r in caplog.records
    )
    assert s.info().wants == agent_pb2.STREAM
    s.close()
    listener.join()


def test_connect_timeout_unix(sock_path: str) -> None:
    retries: list[int] = []
    s = udf.Socket(
        sock_path, connect_timeout=0.2, initial_backoff=0.01, jitter=0, on_retry=lambda n, *_: retries.append(n)
    )
    with pytest.raises(udf.UDFError) as excinfo:
        s.open()
    attempts = len(retries) + 1  # the last failure is not retried
    plural = "attempt" if attempts == 1 else "attempts"
    assert str(excinfo.value) == (
        f"failed to connect to unix socket {sock_path}: {attempts} {plural} in 0.2s, "
        "last error: no such file or directory"
    )


def test_connect_timeout_tcp_refused() -> None:
    with socket.socket() as bound:  # bound but not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        s = udf.Socket(f"tcp://127.0.0.1:{port}", connect_timeout=0, initial_backoff=0.01)
        with pytest.raises(
            udf.UDFError,
            match=rf"^failed to connect to tcp://127.0.0.1:{port}: 1 attempt in 0s, last error: connection refused$",
        ):
            s.open()


def test_abort_cancels_a_pending_open(sock_path: str) -> None:
    err = udf.UDFError("shutting down")
    made: list[udf.Socket] = []
    # Abort from the retry hook: the backoff wait (TIMEOUT long) ends at once.
    s = udf.Socket(
        sock_path, connect_timeout=TIMEOUT, initial_backoff=TIMEOUT, jitter=0, on_retry=lambda *_: made[0].abort(err)
    )
    made.append(s)
    with pytest.raises(udf.UDFError) as excinfo:
        s.open()
    assert excinfo.value is err


def test_keepalive_timeout_kill_closes_the_connection(
    sock_path: str, sockets: list[udf.Socket], caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    seen: dict[str, bytes] = {}

    def serve(conn: socket.socket) -> None:
        assert release.wait(TIMEOUT)  # neither reads, answers nor closes until released
        chunks = []
        while True:
            data = conn.recv(65536)
            if not data:
                break
            chunks.append(data)
        seen["rest"] = b"".join(chunks)

    listener = Listener(sock_path, serve)
    s = udf.Socket(sock_path, timeout=0.2, connect_timeout=TIMEOUT)
    sockets.append(s)
    s.open()
    with pytest.raises(udf.KeepaliveTimeoutError):
        s.info()
    with pytest.raises(udf.KeepaliveTimeoutError):
        s.close()  # returns although the agent still holds the connection open
    assert any(r.getMessage() == "process not responding! killing" for r in caplog.records)
    release.set()
    listener.join()
    # The agent got the info request (and maybe keepalives), then EOF.
    kinds = [agent_pb2.Request.FromString(f).WhichOneof("message") for f in FrameDecoder().feed(seen["rest"])]
    assert "info" in kinds and set(kinds) <= {"info", "keepalive"}


def test_close_grace_ends_a_connection_the_agent_keeps_open(sock_path: str, sockets: list[udf.Socket]) -> None:
    release = threading.Event()
    seen: dict[str, int] = {}

    def serve(conn: socket.socket) -> None:
        with conn.makefile("rb") as inp:
            seen["requests"] = len(list(requests(inp)))  # sees the half-close ...
        assert release.wait(TIMEOUT)  # ... but keeps the connection open

    listener = Listener(sock_path, serve)
    s = udf.Socket(sock_path, connect_timeout=TIMEOUT, close_grace=0.1)
    sockets.append(s)
    s.open()
    s.point_in.put(point(1))
    with pytest.raises(
        udf.UDFError,
        match=(
            rf"^agent at unix socket {sock_path} did not close its connection:"
            r" no progress for 0.1s after its input was closed$"
        ),
    ):
        s.close()
    release.set()
    listener.join()
    assert seen["requests"] == 1


# --- pure parts ---------------------------------------------------------------------


def test_backoff_schedule() -> None:
    delays = backoff_delays(0.5, 1.5, 10.0, jitter=0)
    got = [next(delays) for _ in range(11)]
    assert got == pytest.approx([0.5, 0.75, 1.125, 1.6875, 2.53125, 3.796875, 5.6953125, 8.54296875, 10, 10, 10])
    low = backoff_delays(0.5, 1.5, 10.0, jitter=0.5, rand=lambda: 0.0)
    high = backoff_delays(0.5, 1.5, 10.0, jitter=0.5, rand=lambda: 0.999999)
    assert [next(low) for _ in range(3)] == pytest.approx([0.25, 0.375, 0.5625])
    assert [next(high) for _ in range(3)] == pytest.approx([0.75, 1.125, 1.6875], rel=1e-5)
    capped = backoff_delays(8.0, 1.5, 10.0, jitter=0.5, rand=lambda: 0.999999)
    assert next(capped) == 10.0  # jitter never exceeds the cap


@pytest.mark.parametrize("bad", ["tcp://127.0.0.1", "tcp://:9000", "tcp://host:port", ""])
def test_invalid_addresses(bad: str) -> None:
    with pytest.raises(ValueError):
        udf.Socket(bad)


def test_not_opened() -> None:
    s = udf.Socket("/nonexistent.sock")
    with pytest.raises(udf.UDFError, match="socket not opened"):
        s.info()
    s.close()
    with pytest.raises(udf.UDFError, match="already opened"):
        s.open()
