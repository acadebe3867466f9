"""Serve UDF agents on a unix socket or ``tcp://host:port``: :class:`AgentServer`.

Kapacitor's "socket" UDFs: the agent runs on its own and Kapacitor (or any
:class:`udf.Socket`) connects to it. Each connection gets its own
:class:`~udf.agent.conversation.Agent` and handler. What a peer may take
(connections, time before its first request, bytes of unfinished frames) is
decided by :mod:`udf.agent.connections`; this module acts on it.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import select
import socket
import ssl
import stat
import struct
import threading
import time
from typing import Any

import agent_pb2

from ..address import parse_address
from ..errors import UDFError
from ..lifecycle import Lifecycle
from ..streams import HalfCloseWriter, SocketReader
from ..tls import NotTLSError, TLSConnection
from ..wire import DEFAULT_MAX_FRAME_SIZE, encode_frame
from .connections import (
    DEFAULT_FIRST_REQUEST_TIMEOUT,
    DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    Connection,
    Connections,
    Limits,
)
from .conversation import READ_CHUNK, Agent
from .handler import HandlerFactory
from .reading import ReadWatch
from .states import SERVER_TABLE, ConnectionEvent, ConnectionState, ServerEvent, ServerState

__all__ = ["AgentServer"]

_LOG = logging.getLogger("udf.agent")
#: SO_LINGER on, 0 seconds: close() sends a reset.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def _bind_address(address: str) -> tuple[int, Any]:
    """``(family, sockaddr)`` to bind for an address of :mod:`udf.address`'s grammar."""
    kind, sockaddr, _ = parse_address(address)
    if kind == "unix":
        return socket.AF_UNIX, sockaddr
    host, port = sockaddr
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, resolved = infos[0]
    return family, resolved


class AgentServer:
    """Serve UDF agents on a unix socket path or ``tcp://host:port``, one per connection.

    For each connection, an :class:`Agent` is made and ``handler_factory(agent)``
    builds its handler (a :class:`Handler` subclass whose constructor takes the
    agent fits directly). The socket is bound when the server is created, so
    :attr:`address` is known at once (``tcp://127.0.0.1:0`` picks a free port).
    :meth:`start` accepts in a background thread; :meth:`stop` stops accepting,
    removes the unix socket file, ends the connections and joins every thread.
    Its life: table ``udf.agent.AgentServer``.

    A unix socket file is created with permissions ``mode`` (default 0o600:
    only its owner may connect); a path that exists and is not a socket is
    never removed. With ``ssl_context`` (TCP only) every connection is TLS:
    each handshake runs in its own thread and must finish within
    ``handshake_timeout`` seconds; a client that is not TLS, or whose
    certificate the context refuses, is logged and disconnected. Binding every
    interface (``0.0.0.0``, ``::``) without TLS logs a warning.

    What a peer may take (see docs/security.md): a connection beyond
    ``max_connections`` is closed at once; one without a complete first request
    ``first_request_timeout`` seconds after its accept (TLS handshake included)
    is closed; the bytes of unfinished frames held across connections never
    pass ``max_buffered_bytes`` (the connection whose frame would is closed).
    Each is logged as a WARNING naming the connection.
    """

    def __init__(
        self,
        address: str,
        handler_factory: HandlerFactory,
        *,
        logger: logging.Logger | None = None,
        backlog: int = 16,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        ssl_context: ssl.SSLContext | None = None,
        mode: int = 0o600,
        handshake_timeout: float = 10.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        first_request_timeout: float = DEFAULT_FIRST_REQUEST_TIMEOUT,
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
    ) -> None:
        self._factory = handler_factory
        self._logger = logger if logger is not None else _LOG
        self._max_frame_size = max_frame_size
        if handshake_timeout <= 0:
            raise ValueError(f"handshake_timeout must be positive, got {handshake_timeout}")
        self._connections = Connections(Limits(max_connections, first_request_timeout, max_buffered_bytes))
        family, sockaddr = _bind_address(address)
        self._path: str | None = sockaddr if family == socket.AF_UNIX else None
        if ssl_context is not None and self._path is not None:
            raise ValueError(f"ssl_context needs a tcp://host:port address, not unix socket {self._path}")
        self._ssl_context = ssl_context
        self._handshake_timeout = float(handshake_timeout)
        self._listener = _listen(family, sockaddr, self._path, backlog, mode)
        self._address: str
        self._inode: int | None = None
        if self._path is not None:
            self._address = self._path
            self._inode = os.stat(self._path).st_ino
        else:
            host, port = self._listener.getsockname()[:2]
            self._address = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
            if ssl_context is None and ipaddress.ip_address(host.split("%")[0]).is_unspecified:
                self._logger.warning(
                    "agent server on %s listens on every interface without TLS: anyone who can reach "
                    "this port can send it data and read its output (pass an ssl_context, or bind 127.0.0.1)",
                    self._address,
                )
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.Lock()  # guards the lifecycle
        self._changed = threading.Condition(self._lock)  # notified when stopped
        self._life = Lifecycle(SERVER_TABLE, ServerState.NEW)
        self._count = 0  # connections accepted so far (only the accept thread counts)
        self._accept_thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """The bound address: the socket path, or ``tcp://host:port`` with the real port."""
        return self._address

    @property
    def state(self) -> ServerState:
        """Where the server is (table ``udf.agent.AgentServer``)."""
        return self._life.state

    @property
    def limits(self) -> Limits:
        """``max_connections``, ``first_request_timeout`` and ``max_buffered_bytes``."""
        return self._connections.limits

    @property
    def connections(self) -> int:
        """How many connections are being served now."""
        return self._connections.served()

    def start(self) -> None:
        """Accept connections in a background thread (``udf-agent-server``)."""
        with self._lock:
            if self._life.state is ServerState.SERVING:
                raise UDFError("agent server already started")
            if self._life.state is not ServerState.NEW:
                raise UDFError("agent server stopped")
            self._life.fire(ServerEvent.START)
        self._accept_thread = threading.Thread(target=self._accept_loop, name="udf-agent-server", daemon=True)
        self._accept_thread.start()

    def serve_forever(self) -> None:
        """Start (if needed) and block until :meth:`stop` is called from elsewhere."""
        if self._life.state is ServerState.NEW:
            self.start()
        with self._lock:
            # Woken by stop() once everything has ended.
            self._changed.wait_for(lambda: self._life.state is ServerState.STOPPED)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, remove the socket file, end every connection, join the threads.

        Connections are asked to finish cleanly (their input is shut down, so
        each handler is stopped and its output flushed); any still running
        after ``timeout`` seconds are cut off. Called from a handler, it
        cannot wait for that handler's own agent: it stops the rest and
        returns, and the caller's agent finishes once its handler returns.
        """
        with self._lock:
            first = self._life.state in (ServerState.NEW, ServerState.SERVING)
            self._life.fire(ServerEvent.STOP)
        if first:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass
        me = threading.current_thread()
        if self._accept_thread is not None and self._accept_thread is not me:
            self._accept_thread.join()
        if first:
            self._listener.close()
            self._remove_socket_file()
            os.close(self._wake_r)
            os.close(self._wake_w)
        self._end_handshakes(me)
        self._end_connections(me, timeout)
        with self._lock:
            self._life.fire(ServerEvent.STOPPED)
            self._changed.notify_all()

    def _end_handshakes(self, me: threading.Thread) -> None:
        """Wake every handshake (it fails, its thread ends) and join their threads."""
        handshakes = [conn for conn in self._connections.live() if conn.thread is not None]
        for conn in handshakes:
            if conn.state is ConnectionState.HANDSHAKING:
                _shutdown(conn.sock, socket.SHUT_RDWR)
        for conn in handshakes:
            thread = conn.thread
            if thread is not None and thread is not me:
                thread.join()  # bounded: its socket is shut down, or its handshake is over

    def _end_connections(self, me: threading.Thread, timeout: float) -> None:
        """Shut down every agent's input, wait up to ``timeout`` for each, then cut off the rest."""
        served = [conn for conn in self._connections.live() if conn.agent is not None]
        for conn in served:
            if conn.tls is not None:
                conn.tls.stop_input()
            else:
                _shutdown(conn.sock, socket.SHUT_RD)
        for conn in served:
            agent = conn.agent
            assert agent is not None
            if me in agent.threads:
                continue  # the caller's own agent: it ends after this returns
            if not agent.wait(timeout):
                self._logger.warning("agent %s did not finish in %.1fs: closing its connection", agent.name, timeout)
                _shutdown(conn.sock, socket.SHUT_RDWR)
                agent.wait()

    def _remove_socket_file(self) -> None:
        if self._path is None:
            return
        try:
            st = os.stat(self._path)
            if st.st_ino == self._inode and stat.S_ISSOCK(st.st_mode):
                os.unlink(self._path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._logger.warning("could not remove %s: %s", self._path, exc)

    def __enter__(self) -> AgentServer:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # --- the accept thread ---------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        connections = self._connections
        while True:
            deadline = connections.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            # Woken by a connection, by stop() writing to the wake pipe, or at the next first-request deadline.
            ready, _, _ = select.select([listener.fileno(), self._wake_r], [], [], timeout)
            if self._wake_r in ready or self._life.state is not ServerState.SERVING:
                return
            for conn in connections.expired(time.monotonic()):
                limit = connections.limits.first_request_timeout
                self._cut_off(conn, f"no complete first request within {limit:g}s (first_request_timeout)")
            if ready:
                self._accept()

    def _accept(self) -> None:
        try:
            sock, peer = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:
            self._logger.error("accept failed: %s", exc)
            return
        self._count += 1
        number = self._count
        where = _peer_text(peer) if self._path is None else self._path
        conn = self._connections.admit(number, where, sock, time.monotonic(), self._ssl_context is not None)
        if conn is None:
            limit = self._connections.limits.max_connections
            if self._ssl_context is None:
                _tell_peer(sock, f"agent busy: it serves {limit} connections already (max_connections)")
            sock.close()
            self._logger.warning(
                "refused connection %d from %s: %d connections open already (max_connections)", number, where, limit
            )
            return
        if self._ssl_context is None:
            sock.setblocking(True)
            self._serve(conn, SocketReader(sock, READ_CHUNK), HalfCloseWriter(sock))
            return
        conn.thread = threading.Thread(
            target=self._handshake, args=(conn,), name=f"udf-agent-tls-{number}", daemon=True
        )
        conn.thread.start()

    def _cut_off(self, conn: Connection, why: str) -> None:
        """Close a connection the server refuses to go on serving (its state is CLOSING already)."""
        self._logger.warning("closed connection %d from %s: %s", conn.number, conn.peer, why)
        agent = conn.agent
        if agent is not None:
            try:
                agent.abort(UDFError(f"connection closed by the agent server: {why}"))
            except UDFError:
                pass  # not started yet: it starts on a closed input and ends at once
        try:
            # The close that follows is a reset: a peer still sending learns at once, instead of
            # waiting on a zero window (an orderly close leaves a blocked sender hanging).
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        except OSError:
            pass  # closed already
        _shutdown(conn.sock, socket.SHUT_RDWR)  # its reader sees the end; a handshake fails

    # --- one connection ------------------------------------------------------------------

    def _handshake(self, conn: Connection) -> None:
        """TLS: handshake in a thread of its own, so a silent client cannot hold up the others."""
        assert self._ssl_context is not None
        sock = conn.sock
        sock.setblocking(True)
        try:
            tls = TLSConnection(sock, self._ssl_context, server_side=True)
            tls.handshake(self._handshake_timeout, conn.peer)
        except (UDFError, OSError) as exc:
            if conn.state is not ConnectionState.CLOSING:  # else _cut_off said why
                self._logger.warning("refused connection %d: %s", conn.number, exc)
                if isinstance(exc, NotTLSError):
                    _tell_peer(sock, PLAIN_HOST_REFUSED)
            self._ended(conn)
            return
        _, state = self._connections.fire(conn, ConnectionEvent.HANDSHAKE_DONE)
        if state is ConnectionState.CLOSING or self._life.state is not ServerState.SERVING:
            self._ended(conn)
            return
        self._logger.debug("connection %d from %s: %s", conn.number, conn.peer, tls.version)
        self._serve(conn, tls.reader, tls.writer, tls)

    def _serve(self, conn: Connection, reader: Any, writer: Any, tls: TLSConnection | None = None) -> None:
        agent = Agent(
            _ConnectionInput(conn, reader),
            writer,
            logger=self._logger,
            max_frame_size=self._max_frame_size,
            name=f"udf-agent-{conn.number}",
            read_watch=self._watch(conn),
        )
        try:
            agent.handler = self._factory(agent)
        except Exception:
            self._logger.exception("handler factory failed; closing connection %d", conn.number)
            self._ended(conn)
            return
        self._connections.attach(conn, agent, tls)
        agent.add_done_callback(lambda _: self._ended(conn))
        self._logger.info("serving connection %d", conn.number)
        agent.start()

    def _watch(self, conn: Connection) -> ReadWatch:
        """What the connection's reader calls after each read: the first request, the buffer budget."""
        connections = self._connections
        reserved = connections.reserved
        awaiting = ConnectionState.AWAITING_REQUEST

        def watch(buffered: int, parsed: bool) -> None:
            if parsed and conn.life.state is awaiting:
                connections.fire(conn, ConnectionEvent.FIRST_REQUEST)
            if (buffered > reserved or conn.charged) and not connections.charge(conn, buffered):
                limit = connections.limits.max_buffered_bytes
                self._cut_off(
                    conn,
                    f"its unfinished frame ({buffered} bytes so far) would pass max_buffered_bytes "
                    f"({limit} bytes of unfinished frames across all connections)",
                )

        return watch

    def _ended(self, conn: Connection) -> None:
        """The connection's agent is done (or it never got one): forget it, close its socket."""
        self._connections.fire(conn, ConnectionEvent.END)
        conn.sock.close()
        if conn.agent is not None:
            self._logger.info("connection of %s finished", conn.agent.name)


class _ConnectionInput:
    """A connection's input as its agent reads it: it ends once the server has cut the connection off.

    A cut-off connection's socket is shut down, but a reader woken by that
    would still get what the kernel holds (megabytes a peer may have queued),
    uncharged to the budget: here its next read is the end of the input.
    """

    __slots__ = ("_conn", "_read")

    def __init__(self, conn: Connection, stream: Any) -> None:
        self._conn = conn
        self._read = stream.read

    def read(self, size: int = -1, /) -> bytes:
        if self._conn.life.state is ConnectionState.CLOSING:
            return b""
        data: bytes = self._read(size)
        return data

    read1 = read

    def close(self) -> None:
        pass  # the socket is closed by the server when the agent is done


def _listen(family: int, sockaddr: Any, path: str | None, backlog: int, mode: int) -> socket.socket:
    """A non-blocking listening socket; a unix socket file gets ``mode`` before anyone can connect."""
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        if path is not None:
            _remove_stale_socket(path)
        else:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(sockaddr)
        if path is not None:
            os.chmod(path, mode)  # before listen(): no one can connect yet
        listener.listen(backlog)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


#: What a plain host is told by a TLS agent: an ErrorResponse, the one thing it can read.
PLAIN_HOST_REFUSED = "this agent requires TLS: connect with an ssl_context (--tls-ca)"


def _tell_peer(conn: socket.socket, message: str) -> None:
    """Answer a refused plain host with a UDF error response, so its error says why (never blocks)."""
    response = agent_pb2.Response(error=agent_pb2.ErrorResponse(error=message))
    try:
        conn.setblocking(False)  # a fresh connection's send buffer takes this small frame whole
        conn.send(encode_frame(response.SerializeToString()))
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _peer_text(peer: Any) -> str:
    """``host:port`` of an accepted TCP peer, for messages."""
    try:
        host, port = peer[:2]
    except (TypeError, ValueError):
        return str(peer)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass  # already closed or disconnected


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a dead server; refuse to steal a live one."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise UDFError(f"cannot serve on {path}: it exists and is not a socket (it is left as it is)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another server is listening on {path}")
