"""Serve UDF agents on a unix socket or ``tcp://host:port``: :class:`AgentServer`.

Kapacitor's "socket" UDFs: the agent runs on its own and Kapacitor (or any
:class:`udf.Socket`) connects to it. Each connection gets its own
:class:`~udf.agent.conversation.Agent` and handler.
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
import threading
from typing import Any, Dict, Optional, Tuple

import agent_pb2

from ..address import parse_address
from ..errors import UDFError
from ..streams import HalfCloseWriter, SocketReader
from ..tls import NotTLSError, TLSConnection
from ..wire import encode_frame
from ..wire import DEFAULT_MAX_FRAME_SIZE
from .conversation import READ_CHUNK, Agent
from .handler import HandlerFactory

__all__ = ["AgentServer"]

_LOG = logging.getLogger("udf.agent")


def _bind_address(address: str) -> Tuple[int, Any]:
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

    A unix socket file is created with permissions ``mode`` (default 0o600:
    only its owner may connect); a path that exists and is not a socket is
    never removed. With ``ssl_context`` (TCP only) every connection is TLS:
    each handshake runs in its own thread and must finish within
    ``handshake_timeout`` seconds; a client that is not TLS, or whose
    certificate the context refuses, is logged and disconnected. Binding every
    interface (``0.0.0.0``, ``::``) without TLS logs a warning.
    """

    def __init__(
        self,
        address: str,
        handler_factory: HandlerFactory,
        *,
        logger: Optional[logging.Logger] = None,
        backlog: int = 16,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        ssl_context: Optional[ssl.SSLContext] = None,
        mode: int = 0o600,
        handshake_timeout: float = 10.0,
    ) -> None:
        self._factory = handler_factory
        self._logger = logger if logger is not None else _LOG
        self._max_frame_size = max_frame_size
        family, sockaddr = _bind_address(address)
        self._path: Optional[str] = sockaddr if family == socket.AF_UNIX else None
        if ssl_context is not None and self._path is not None:
            raise ValueError(f"ssl_context needs a tcp://host:port address, not unix socket {self._path}")
        if handshake_timeout <= 0:
            raise ValueError(f"handshake_timeout must be positive, got {handshake_timeout}")
        self._ssl_context = ssl_context
        self._handshake_timeout = float(handshake_timeout)
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            if self._path is not None:
                _remove_stale_socket(self._path)
            else:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(sockaddr)
            if self._path is not None:
                os.chmod(self._path, mode)  # before listen(): no one can connect yet
            listener.listen(backlog)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._address: str
        if self._path is not None:
            self._address = self._path
            self._inode: Optional[int] = os.stat(self._path).st_ino
        else:
            host, port = listener.getsockname()[:2]
            self._address = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
            self._inode = None
            if ssl_context is None and ipaddress.ip_address(host.split("%")[0]).is_unspecified:
                self._logger.warning(
                    "agent server on %s listens on every interface without TLS: anyone who can reach "
                    "this port can send it data and read its output (pass an ssl_context, or bind 127.0.0.1)",
                    self._address,
                )
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._stopped = threading.Event()
        self._count = 0
        self._conns: Dict[Agent, socket.socket] = {}
        self._handshakes: Dict[threading.Thread, socket.socket] = {}
        self._tls: Dict[Agent, TLSConnection] = {}
        self._accept_thread: Optional[threading.Thread] = None

    @property
    def address(self) -> str:
        """The bound address: the socket path, or ``tcp://host:port`` with the real port."""
        return self._address

    @property
    def connections(self) -> int:
        """How many connections are being served now."""
        with self._lock:
            return len(self._conns)

    def start(self) -> None:
        """Accept connections in a background thread (``udf-agent-server``)."""
        with self._lock:
            if self._started:
                raise UDFError("agent server already started")
            if self._stopping:
                raise UDFError("agent server stopped")
            self._started = True
        self._accept_thread = threading.Thread(target=self._accept_loop, name="udf-agent-server", daemon=True)
        self._accept_thread.start()

    def serve_forever(self) -> None:
        """Start (if needed) and block until :meth:`stop` is called from elsewhere."""
        if not self._started:
            self.start()
        self._stopped.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, remove the socket file, end every connection, join the threads.

        Connections are asked to finish cleanly (their input is shut down, so
        each handler is stopped and its output flushed); any still running
        after ``timeout`` seconds are cut off. Called from a handler, it
        cannot wait for that handler's own agent: it stops the rest and
        returns, and the caller's agent finishes once its handler returns.
        """
        with self._lock:
            first = not self._stopping
            self._stopping = True
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
        with self._lock:
            handshakes = list(self._handshakes.items())
        for thread, sock in handshakes:
            _shutdown(sock, socket.SHUT_RDWR)  # wakes the handshake: it fails, the thread ends
        for thread, _ in handshakes:
            if thread is not me:
                thread.join()
        with self._lock:
            conns = list(self._conns.items())
            tls_conns = dict(self._tls)
        for agent, sock in conns:
            if agent in tls_conns:
                tls_conns[agent].stop_input()
            else:
                _shutdown(sock, socket.SHUT_RD)
        for agent, sock in conns:
            if me in agent.threads:
                continue  # the caller's own agent: it ends after this returns
            if not agent.wait(timeout):
                self._logger.warning("agent %s did not finish in %.1fs: closing its connection", agent.name, timeout)
                _shutdown(sock, socket.SHUT_RDWR)
                agent.wait()
        self._stopped.set()

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

    def __enter__(self) -> "AgentServer":
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        listener = self._listener
        while not self._stopping:
            # Woken by a connection or by stop() writing to the wake pipe.
            ready, _, _ = select.select([listener.fileno(), self._wake_r], [], [])
            if self._wake_r in ready or self._stopping:
                return
            try:
                conn, peer = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            except OSError as exc:
                self._logger.error("accept failed: %s", exc)
                continue
            if self._ssl_context is None:
                self._serve(conn, self._next_number(), SocketReader(conn, READ_CHUNK), HalfCloseWriter(conn))
            else:
                self._start_handshake(conn, peer)

    def _next_number(self) -> int:
        with self._lock:
            self._count += 1
            return self._count

    def _start_handshake(self, conn: socket.socket, peer: Any) -> None:
        """TLS: handshake in a thread of its own, so a silent client cannot hold up the others."""
        number = self._next_number()
        thread = threading.Thread(
            target=self._handshake, args=(conn, number, peer), name=f"udf-agent-tls-{number}", daemon=True
        )
        with self._lock:
            if self._stopping:
                conn.close()
                return
            self._handshakes[thread] = conn
        thread.start()

    def _handshake(self, conn: socket.socket, number: int, peer: Any) -> None:
        assert self._ssl_context is not None
        conn.setblocking(True)
        where = _peer_text(peer)
        try:
            try:
                tls = TLSConnection(conn, self._ssl_context, server_side=True)
                tls.handshake(self._handshake_timeout, where)
            except (UDFError, OSError) as exc:
                self._logger.warning("refused connection %d: %s", number, exc)
                if isinstance(exc, NotTLSError):
                    _tell_plain_host(conn)
                conn.close()
                return
            with self._lock:
                stopping = self._stopping
            if stopping:
                conn.close()
                return
            self._logger.debug("connection %d from %s: %s", number, where, tls.version)
            self._serve(conn, number, tls.reader, tls.writer, tls)
        finally:
            # Only now: stop() joins this thread before it ends the served connections.
            with self._lock:
                self._handshakes.pop(threading.current_thread(), None)

    def _serve(
        self, conn: socket.socket, number: int, reader: Any, writer: Any, tls: Optional[TLSConnection] = None
    ) -> None:
        conn.setblocking(True)
        agent = Agent(
            reader,
            writer,
            logger=self._logger,
            max_frame_size=self._max_frame_size,
            name=f"udf-agent-{number}",
        )
        try:
            agent.handler = self._factory(agent)
        except Exception:
            self._logger.exception("handler factory failed; closing connection %d", number)
            conn.close()
            return
        with self._lock:
            self._conns[agent] = conn
            if tls is not None:
                self._tls[agent] = tls
        agent.add_done_callback(self._connection_done)
        self._logger.info("serving connection %d", number)
        agent.start()

    def _connection_done(self, agent: Agent) -> None:
        with self._lock:
            conn = self._conns.pop(agent, None)
            self._tls.pop(agent, None)
        if conn is not None:
            conn.close()
        self._logger.info("connection of %s finished", agent.name)


#: What a plain host is told by a TLS agent: an ErrorResponse, the one thing it can read.
PLAIN_HOST_REFUSED = "this agent requires TLS: connect with an ssl_context (--tls-ca)"


def _tell_plain_host(conn: socket.socket) -> None:
    """Answer a plain host with a UDF error response, so its error says why it was refused."""
    response = agent_pb2.Response(error=agent_pb2.ErrorResponse(error=PLAIN_HOST_REFUSED))
    try:
        conn.settimeout(1.0)
        conn.sendall(encode_frame(response.SerializeToString()))
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

