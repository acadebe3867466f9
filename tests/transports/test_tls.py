"""TLS for TCP agents, private unix sockets, and the warning on open TCP binds (issue 13).

Certificates are made at test time with ``trustme`` (a CA, an agent and a host
certificate); nothing is committed. Every connection is real TLS over loopback
between a ``udf.Socket`` and an ``AgentServer`` in this process.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

trustme = pytest.importorskip("trustme")

import agent_pb2  # noqa: E402
import udf  # noqa: E402
from udf import Batch, BatchPoint, Point  # noqa: E402
from udf.agent import AgentServer, Handler  # noqa: E402

from ..helpers import ROOT, TIMEOUT, exchange  # noqa: E402

LOCAL = "127.0.0.1"


class Mirror(Handler):
    """Echoes points and batches; records that its input ended (stop())."""

    stopped: threading.Event

    def info(self) -> Any:
        return agent_pb2.InfoResponse(wants=agent_pb2.STREAM, provides=agent_pb2.STREAM)

    def init(self, init_req: Any) -> Any:
        return agent_pb2.InitResponse(success=True)

    def point(self, point: Any) -> None:
        assert self.agent is not None
        self.agent.write_response(agent_pb2.Response(point=point), flush=False)

    def stop(self) -> None:
        Mirror.stopped.set()
        super().stop()


class BatchMirror(Mirror):
    def info(self) -> Any:
        return agent_pb2.InfoResponse(wants=agent_pb2.BATCH, provides=agent_pb2.BATCH)

    def begin_batch(self, begin_req: Any) -> None:
        assert self.agent is not None
        self.agent.write_response(agent_pb2.Response(begin=begin_req), flush=False)

    def end_batch(self, end_req: Any) -> None:
        assert self.agent is not None
        self.agent.write_response(agent_pb2.Response(end=end_req))


class Certs:
    """A CA with an agent certificate (for 127.0.0.1 and localhost) and a host certificate."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.agent = self.ca.issue_cert(LOCAL, "localhost")
        self.host = self.ca.issue_cert("udf-host")

    def agent_context(self, require_client_cert: bool = True, cert: Any = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        (cert or self.agent).configure_cert(ctx)
        self.ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
        return ctx

    def host_context(self, with_cert: bool = True, ca: Any = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        (ca or self.ca).configure_trust(ctx)
        if with_cert:
            self.host.configure_cert(ctx)
        return ctx


@pytest.fixture(scope="module")
def certs() -> Certs:
    return Certs()


@pytest.fixture(autouse=True)
def fresh_stopped() -> None:
    Mirror.stopped = threading.Event()


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[AgentServer] = []

    def start(handler: Any = Mirror, ctx: ssl.SSLContext | None = None, **kwargs: Any) -> AgentServer:
        server = AgentServer(f"tcp://{LOCAL}:0", handler, ssl_context=ctx, **kwargs)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def tls_socket(address: str, ctx: ssl.SSLContext | None, **kwargs: Any) -> udf.Socket:
    kwargs.setdefault("connect_timeout", TIMEOUT)
    return udf.Socket(address, ssl_context=ctx, **kwargs)


# --- round trips ------------------------------------------------------------------------------


def test_mutual_tls_round_trip_points_and_batches_with_keepalives(certs: Certs, serve: Any) -> None:
    agent = serve(Mirror, certs.agent_context())
    with tls_socket(agent.address, certs.host_context(), timeout=0.2) as u:
        u.init(None)
        points = [Point(name="cpu", tags={"h": "a"}, fields={"v": float(i), "n": i}, time=i) for i in range(50)]
        assert exchange(u.point_in.put, u.point_out, points) == points
        # Keepalives go out every 0.1 s; wait (polling, bounded) for one answered over TLS.
        deadline = time.monotonic() + TIMEOUT
        while u.stats().keepalive_rtt is None and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        assert u.stats().keepalive_rtt is not None
        assert u.info().wants == agent_pb2.STREAM
    assert Mirror.stopped.wait(TIMEOUT), "the agent never saw the end of its input"

    batcher = serve(BatchMirror, certs.agent_context())
    with tls_socket(batcher.address, certs.host_context(), timeout=0.2) as u:
        u.init(None)
        batches = [
            Batch(name="cpu", tmax=10 + k, points=[BatchPoint(time=i, fields={"v": float(i + k)}) for i in range(5)])
            for k in range(10)
        ]
        got = exchange(u.batch_in.put, u.batch_out, batches)
        assert [(b.tmax, [p.fields for p in b.points]) for b in got] == [
            (b.tmax, [p.fields for p in b.points]) for b in batches
        ]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_thousands_of_points_in_flight_end_cleanly_on_both_sides(certs: Certs, serve: Any, version: Any) -> None:
    agent = serve(Mirror, certs.agent_context())
    ctx = certs.host_context()
    ctx.minimum_version = ctx.maximum_version = version
    u = tls_socket(agent.address, ctx)
    u.open()
    u.init(None)
    points = [Point(name="load", fields={"v": float(i), "pad": "x" * 64}, time=i) for i in range(6000)]
    assert exchange(u.point_in.put, u.point_out, points) == points
    # More in flight at the close: the agent must see the end of its input and
    # the host must still read every answer before the connection ends.
    tail = [Point(name="tail", fields={"v": float(i)}, time=i) for i in range(2000)]
    for p in tail[:100]:
        u.point_in.put(p)
    got: list[Point] = []
    reader = threading.Thread(target=lambda: got.extend(u.point_out), name="test-drain", daemon=True)
    reader.start()
    for p in tail[100:]:
        u.point_in.put(p)
    u.close()  # close_notify + FIN; the agent answers all, then closes its side
    reader.join(TIMEOUT)
    assert not reader.is_alive()
    assert got == tail
    assert u.stats().points_out == len(points) + len(tail)
    assert Mirror.stopped.wait(TIMEOUT), "the agent never saw the end of its input"


# --- refusals ---------------------------------------------------------------------------------


def _open_refused(address: str, ctx: ssl.SSLContext | None, **kwargs: Any) -> str:
    u = tls_socket(address, ctx, **kwargs)
    with pytest.raises(udf.UDFError) as info:
        u.open()
        u.info()  # TLS 1.3: a refused client certificate shows at the first read
    try:
        u.close()
    except udf.UDFError:
        pass
    return str(info.value)


def test_plain_host_against_tls_agent_is_refused(certs: Certs, serve: Any, caplog: Any) -> None:
    agent = serve(Mirror, certs.agent_context())
    with caplog.at_level(logging.WARNING, logger="udf.agent"):
        message = _open_refused(agent.address, None)
        agent.stop()
    assert message == "this agent requires TLS: connect with an ssl_context (--tls-ca)"
    assert "does not speak TLS (first byte 0x" in caplog.text


def test_tls_host_against_plain_agent_is_refused(certs: Certs, serve: Any) -> None:
    agent = serve(Mirror, None)
    message = _open_refused(agent.address, certs.host_context())
    prefix = f"TLS handshake with {agent.address} failed: "
    assert message.startswith(prefix), message
    # The plain agent answers the ClientHello with an error frame and closes; the
    # close may reach us first as a reset.
    assert message[len(prefix) :] in (
        "the peer does not speak TLS (wrong version number)",
        "the peer closed the connection during the TLS handshake",
        "connection reset by peer",
    ), message


def test_expired_agent_certificate_is_refused(certs: Certs, serve: Any) -> None:
    expired = certs.ca.issue_cert(LOCAL, not_after=datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc))
    agent = serve(Mirror, certs.agent_context(cert=expired))
    message = _open_refused(agent.address, certs.host_context())
    assert message == (f"TLS handshake with {agent.address} failed: certificate verify failed: certificate has expired")


def test_agent_certificate_from_another_ca_is_refused(certs: Certs, serve: Any) -> None:
    agent = serve(Mirror, certs.agent_context())
    message = _open_refused(agent.address, certs.host_context(ca=trustme.CA()))
    assert message == (
        f"TLS handshake with {agent.address} failed: certificate verify failed: "
        "self-signed certificate in certificate chain"
    )


def test_wrong_host_name_is_refused(certs: Certs, serve: Any) -> None:
    elsewhere = certs.ca.issue_cert("agent.example")
    agent = serve(Mirror, certs.agent_context(cert=elsewhere))
    message = _open_refused(agent.address, certs.host_context())
    assert message == (
        f"TLS handshake with {agent.address} failed: certificate verify failed: "
        f"IP address mismatch, certificate is not valid for '{LOCAL}'."
    )
    by_name = agent.address.replace(LOCAL, "localhost")
    message = _open_refused(by_name, certs.host_context())
    assert message == (
        f"TLS handshake with {by_name} failed: certificate verify failed: "
        "Hostname mismatch, certificate is not valid for 'localhost'."
    )


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_host_without_client_certificate_is_refused(certs: Certs, serve: Any, version: Any, caplog: Any) -> None:
    agent = serve(Mirror, certs.agent_context(require_client_cert=True))
    ctx = certs.host_context(with_cert=False)
    ctx.maximum_version = version
    with caplog.at_level(logging.WARNING, logger="udf.agent"):
        message = _open_refused(agent.address, ctx)
        agent.stop()  # joins the handshake thread: its log line is written by now
    if version == ssl.TLSVersion.TLSv1_2:  # refused during the handshake: open() fails
        assert message == (
            f"TLS handshake with {agent.address} failed: the peer refused the handshake (handshake "
            "failure: no client certificate, or no protocol or cipher in common)"
        )
    else:  # TLS 1.3: the client's handshake completes first; the first read fails
        assert message == (f"read error: TLS with {agent.address}: the peer requires a client certificate and got none")
    assert "the peer sent no client certificate and one is required" in caplog.text


def test_host_certificate_from_another_ca_is_refused(certs: Certs, serve: Any) -> None:
    agent = serve(Mirror, certs.agent_context(require_client_cert=True))
    ctx = certs.host_context(with_cert=False)
    trustme.CA().issue_cert("udf-host").configure_cert(ctx)
    message = _open_refused(agent.address, ctx)
    assert message == f"read error: TLS with {agent.address}: the peer rejected our certificate (unknown CA)"


def test_silent_peer_is_bounded_by_connect_timeout(certs: Certs) -> None:
    listener = socket.socket()
    listener.bind((LOCAL, 0))
    listener.listen(1)  # the kernel accepts; nobody ever answers
    try:
        address = f"tcp://{LOCAL}:{listener.getsockname()[1]}"
        message = _open_refused(address, certs.host_context(), connect_timeout=0.5)
    finally:
        listener.close()
    assert message == f"TLS handshake with {address} did not complete within connect_timeout (0.5s)"


def test_silent_client_does_not_hold_up_others(certs: Certs, serve: Any) -> None:
    agent = serve(Mirror, certs.agent_context(), handshake_timeout=TIMEOUT)
    port = int(agent.address.rsplit(":", 1)[1])
    with socket.create_connection((LOCAL, port)):  # connects and says nothing
        with tls_socket(agent.address, certs.host_context()) as u:
            assert u.info() is not None


def test_ssl_context_needs_tcp(certs: Certs) -> None:
    with pytest.raises(ValueError, match="ssl_context needs a tcp://host:port address"):
        udf.Socket("/tmp/x.sock", ssl_context=certs.host_context())
    with tempfile.TemporaryDirectory() as tmp:
        with pytest.raises(ValueError, match="ssl_context needs a tcp://host:port address"):
            AgentServer(os.path.join(tmp, "a.sock"), Mirror, ssl_context=certs.agent_context())


# --- unix sockets and open binds --------------------------------------------------------------


@pytest.fixture
def short_tmp() -> Iterator[str]:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        yield tmp


def test_unix_socket_is_private_unless_asked(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "a.sock")
    server = AgentServer(path, Mirror)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        server.stop()
    server = AgentServer(path, Mirror, mode=0o660)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    finally:
        server.stop()
    assert not os.path.exists(path)


def test_a_path_that_is_not_a_socket_is_never_removed(short_tmp: str) -> None:
    path = os.path.join(short_tmp, "precious")
    with open(path, "w") as f:
        f.write("keep me")
    with pytest.raises(udf.UDFError, match=f"cannot serve on {path}: it exists and is not a socket"):
        AgentServer(path, Mirror)
    with open(path) as f:
        assert f.read() == "keep me"


def test_every_interface_without_tls_is_a_warning(certs: Certs, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, logger="udf.agent"):
        AgentServer("tcp://0.0.0.0:0", Mirror).stop()
    assert "listens on every interface without TLS" in caplog.text
    assert "tcp://0.0.0.0:" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="udf.agent"):
        AgentServer("tcp://0.0.0.0:0", Mirror, ssl_context=certs.agent_context()).stop()
        AgentServer(f"tcp://{LOCAL}:0", Mirror).stop()
    assert "every interface" not in caplog.text


# --- the command lines ------------------------------------------------------------------------

PY = sys.executable


@pytest.fixture(scope="module")
def cert_files(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    where = tmp_path_factory.mktemp("certs")
    files = {"ca": where / "ca.pem", "agent": where / "agent.pem", "host": where / "host.pem"}
    certs.ca.cert_pem.write_to_path(str(files["ca"]))
    certs.agent.private_key_and_cert_chain_pem.write_to_path(str(files["agent"]))
    certs.host.private_key_and_cert_chain_pem.write_to_path(str(files["host"]))
    return {name: str(path) for name, path in files.items()}


def cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([PY, "-m", "udf", *args], input=stdin, capture_output=True, timeout=TIMEOUT, cwd=ROOT)


def test_cli_and_agent_main_with_tls_flags(cert_files: dict[str, str]) -> None:
    agent = subprocess.Popen(
        [
            PY,
            str(ROOT / "examples" / "mirror.py"),
            "--socket",
            f"tcp://{LOCAL}:0",
            "--tls-cert",
            cert_files["agent"],
            "--tls-ca",
            cert_files["ca"],
            "--tls-require-client-cert",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
    )
    try:
        assert agent.stderr is not None
        line = agent.stderr.readline().decode()
        match = re.search(r"listening on (tcp://\S+)", line)
        assert match, line
        address = match.group(1)
        data = b'm,t=a v=1i 1\nm,t=b s="x y" 2\n'
        tls = ["--tls-ca", cert_files["ca"], "--tls-cert", cert_files["host"]]
        result = cli("run", "--socket", address, *tls, stdin=data)
        assert result.returncode == 0, result.stderr
        assert result.stdout == data
        # No client certificate: refused (TLS 1.3 learns it at the first read), no traceback.
        refused = cli("info", "--socket", address, "--tls-ca", cert_files["ca"])
        assert refused.returncode != 0
        assert refused.stderr.decode().startswith("udf: "), refused.stderr
        assert "the peer requires a client certificate and got none" in refused.stderr.decode()
        assert b"Traceback" not in refused.stderr
        # A plain host is told the agent wants TLS.
        plain = cli("info", "--socket", address, "--connect-timeout", "2s")
        assert plain.returncode != 0 and b"Traceback" not in plain.stderr
        assert "this agent requires TLS" in plain.stderr.decode(), plain.stderr
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=TIMEOUT)
    assert agent.returncode == 0, err
    assert b"refused connection" in err


def test_tls_flags_are_checked() -> None:
    result = cli("info", "--socket", "/tmp/x.sock", "--tls")
    assert result.returncode == 2
    assert result.stderr.decode().startswith("udf: error: the --tls-* flags need --socket tcp://HOST:PORT")
    result = cli("info", "--socket", f"tcp://{LOCAL}:1", "--tls-ca", "/nonexistent/ca.pem")
    assert result.returncode == 2
    assert result.stderr.decode().startswith("udf: error: cannot load TLS CA file /nonexistent/ca.pem: ")
    agent = subprocess.run(
        [
            PY,
            "-m",
            "udf.agent",
            "examples.mirror:MirrorHandler",
            "--socket",
            f"tcp://{LOCAL}:0",
            "--tls-require-client-cert",
        ],
        capture_output=True,
        timeout=TIMEOUT,
        cwd=ROOT,
    )
    assert agent.returncode == 2
    assert b"an agent's TLS needs its certificate: --tls-cert FILE" in agent.stderr


def test_close_during_a_silent_handshake_returns_at_once(certs: Certs) -> None:
    listener = socket.socket()
    listener.bind((LOCAL, 0))
    listener.listen(1)
    address = f"tcp://{LOCAL}:{listener.getsockname()[1]}"
    u = tls_socket(address, certs.host_context(), connect_timeout=600)
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            u.open()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=opener, name="test-opener", daemon=True)
    thread.start()
    try:
        conn, _ = listener.accept()  # the host is connected: its handshake waits for us
        with conn:
            u.close()
            thread.join(TIMEOUT)  # far less than connect_timeout
            assert not thread.is_alive(), "close() did not end the TLS handshake"
    finally:
        listener.close()
    assert [str(e) for e in errors] == ["socket closed while opening"]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_end_of_input_with_unread_records_loses_nothing(certs: Certs, version: Any) -> None:
    """The race behind a rare lost tail: our end of input while the reader has put the
    peer's records into the TLS object's input but not read them yet. unwrap() would
    meet them as unexpected records (fatal); the close_notify must wait for the reader."""
    from udf.tls import TLSConnection

    host_sock, agent_sock = socket.socketpair()
    host_ctx = certs.host_context()
    host_ctx.minimum_version = host_ctx.maximum_version = version
    host = TLSConnection(host_sock, host_ctx, server_side=False, server_hostname="localhost")
    agent = TLSConnection(agent_sock, certs.agent_context(), server_side=True)
    shake = threading.Thread(target=agent.handshake, args=(TIMEOUT, "host"), name="fake-agent-handshake")
    shake.start()
    host.handshake(TIMEOUT, "agent")
    shake.join(TIMEOUT)
    try:
        agent.writer.write(b"a" * 100)
        agent.writer.write(b"b" * 100)
        # The host's reader took the records off the socket and into the TLS input ...
        raw = b""
        while len(raw) < 200:
            raw += host_sock.recv(65536)
        with host._lock:
            host._incoming.write(raw)
        host.writer.close()  # ... when the writer ends our output.
        # The agent sees the end of its input (our close_notify, after its records were read).
        assert host.reader.read(65536) + host.reader.read(65536) == b"a" * 100 + b"b" * 100
        assert agent.reader.read(65536) == b""
        agent.writer.close()
        assert host.reader.read(65536) == b""  # and we see its end: nothing lost either way
    finally:
        host_sock.close()
        agent_sock.close()


def test_the_first_request_deadline_includes_the_tls_handshake(certs: Certs, cert_files: dict[str, str]) -> None:
    """A real TLS agent process, first_request_timeout 1 s, handshake_timeout its default 10 s."""
    from ..helpers.agent_process import AgentProcess

    agent = AgentProcess(
        "--tls-cert", cert_files["agent"], "--tls-ca", cert_files["ca"], "--first-request-timeout", "1"
    )
    begin = time.monotonic()
    silent = socket.create_connection((LOCAL, agent.port), timeout=TIMEOUT)  # never starts the handshake
    raw = socket.create_connection((LOCAL, agent.port), timeout=TIMEOUT)
    shaken = certs.host_context().wrap_socket(raw, server_hostname=LOCAL)  # handshakes, then says nothing
    try:
        with tls_socket(agent.address, certs.host_context()) as u:  # a good host meanwhile
            assert u.info() is not None
        for sock in (silent, shaken):
            try:
                assert sock.recv(1024) == b""
            except (ConnectionResetError, ssl.SSLError):
                pass  # the agent reset it
        assert time.monotonic() - begin >= 1.0
        closed = agent.wait_for(
            r"W! udf.agent: closed connection \d+ from 127\.0\.0\.1:\d+: no complete first "
            r"request within 1s \(first_request_timeout\)",
            2,
        )
        assert len(closed) == 2
    finally:
        for sock in (silent, shaken):
            sock.close()
        log = agent.stop()
    assert "did not complete within" not in log  # not the handshake's own timeout
    assert "refused connection" not in log  # one warning per connection, naming the deadline
