"""Talk to a UDF agent that listens on a socket (Go: ``udf.Socket``).

The agent runs on its own (Kapacitor's "socket" UDFs) and listens on a unix
socket, or here also on TCP (``tcp://host:port``). :meth:`Socket.open` connects,
retrying with exponential backoff and jitter until ``connect_timeout``; the
server then reads the agent's responses from the connection and writes requests
to it. Closing the server's writer is a half-close (``shutdown(SHUT_WR)``): the
agent sees EOF on its input and can still send what it has left.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

from .address import parse_address as _parse_address
from .closing import Stall
from .errors import UDFError
from .server import OUT_CHANNEL_SIZE, OUTBOX_SIZE, Server
from .streams import HalfCloseWriter
from .streams import describe_error as _describe
from .tls import TLSConnection
from .transport import ServerBacked
from .wire import DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_FRAME_SIZE

__all__ = ["Socket", "HalfCloseWriter", "backoff_delays"]

#: Kapacitor's backoff: start at 500 ms, grow by half each attempt, capped.
DEFAULT_INITIAL_BACKOFF = 0.5
DEFAULT_BACKOFF_FACTOR = 1.5
DEFAULT_MAX_BACKOFF = 10.0
#: Each delay is drawn uniformly within +-50% of the nominal one.
DEFAULT_JITTER = 0.5
#: Default ``close_grace``: how long close() waits for the agent to end the
#: connection after the half-close before closing it from our side.
DEFAULT_CLOSE_GRACE = 5.0

RetryHook = Callable[[int, BaseException, float], Any]


def backoff_delays(
    initial: float = DEFAULT_INITIAL_BACKOFF,
    factor: float = DEFAULT_BACKOFF_FACTOR,
    maximum: float = DEFAULT_MAX_BACKOFF,
    jitter: float = DEFAULT_JITTER,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Yield the waits between connection attempts, forever.

    The nominal wait starts at ``initial`` and is multiplied by ``factor`` after
    each attempt up to ``maximum``; each yielded wait is the nominal one times a
    uniform factor in ``[1 - jitter, 1 + jitter]`` (``rand()`` in ``[0, 1)``),
    never above ``maximum``.
    """
    nominal = initial
    while True:
        yield min(maximum, nominal * (1.0 + jitter * (2.0 * rand() - 1.0)))
        nominal = min(maximum, nominal * factor)


class Socket(ServerBacked):
    """A UDF agent listening on a unix socket (or ``tcp://host:port``).

    ``timeout`` is the keepalive timeout; ``abort_callback`` runs once if the
    server aborts. ``open()`` retries for up to ``connect_timeout`` seconds,
    waiting ``initial_backoff`` seconds first and ``backoff_factor`` times longer
    each time (at most ``max_backoff``, each wait jittered by ``+-jitter``);
    ``on_retry(attempt, error, delay)`` is called after each failed attempt that
    will be retried. ``close()`` half-closes, waits up to ``close_grace`` seconds
    for the agent to end the connection, then closes it.

    With ``ssl_context`` (TCP only) the connection is TLS: the agent's
    certificate and host name are checked as the context says, and every TLS
    failure is a ``UDFError`` naming it, raised by ``open()`` within
    ``connect_timeout`` (not retried: a certificate does not get better). The
    end of input is then a TLS close_notify followed by a TCP half-close.
    """

    _what = "socket"

    def __init__(
        self,
        path: str | os.PathLike[str],
        logger: logging.Logger | None = None,
        timeout: float | datetime.timedelta = 0.0,
        abort_callback: Callable[[], Any] | None = None,
        connect_timeout: float = 300.0,
        *,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        jitter: float = DEFAULT_JITTER,
        on_retry: RetryHook | None = None,
        close_grace: float = DEFAULT_CLOSE_GRACE,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        in_queue_size: int = OUTBOX_SIZE,
        out_queue_size: int = OUT_CHANNEL_SIZE,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._kind, self._address, self._display = _parse_address(path)
        if ssl_context is not None and self._kind != "tcp":
            raise ValueError(f"ssl_context needs a tcp://host:port address, not {self._display}")
        self._ssl_context = ssl_context
        if initial_backoff <= 0 or max_backoff <= 0:
            raise ValueError("initial_backoff and max_backoff must be positive")
        if backoff_factor < 1:
            raise ValueError(f"backoff_factor must be at least 1, got {backoff_factor}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        if close_grace < 0:
            raise ValueError(f"close_grace must not be negative, got {close_grace}")
        self._connect_timeout = float(connect_timeout)
        self._backoff = (initial_backoff, backoff_factor, max_backoff, jitter)
        self._on_retry = on_retry
        self._close_grace = float(close_grace)

        super().__init__(
            logger, timeout, abort_callback, max_frame_size, in_queue_size, out_queue_size, max_batch_bytes
        )
        self._sock: socket.socket | None = None
        self._reader: Any = None

    @property
    def address(self) -> str:
        """What this socket connects to, for messages."""
        return self._display

    # --- lifecycle ----------------------------------------------------------------

    def _start_agent(self) -> Server:
        """open(): connect (retrying with backoff, cancelled by abort() or close()) and build the server."""
        deadline = time.monotonic() + self._connect_timeout
        sock = self._connect()
        reader: Any
        writer: Any
        try:
            if self._ssl_context is not None:
                tls = TLSConnection(sock, self._ssl_context, server_side=False, server_hostname=self._address[0])
                self._sock = sock  # close() and abort() during the handshake shut it down
                tls.handshake(
                    max(0.001, deadline - time.monotonic()),
                    self._display,
                    f"connect_timeout ({self._connect_timeout:g}s)",
                    cancelled=self._cancel.is_set,  # close() or abort() during the handshake ends it
                )
                reader, writer = tls.reader, tls.writer
            else:
                reader, writer = sock.makefile("rb", buffering=0), HalfCloseWriter(sock)
        except BaseException:
            self._sock = None
            sock.close()
            if self._cancel.is_set():
                raise self._cancelled_error() from None
            raise
        try:
            server = self._new_server(reader, writer)
        except BaseException:
            reader.close()
            sock.close()
            raise
        self._sock, self._reader = sock, reader
        return server

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + self._connect_timeout
        delays = backoff_delays(*self._backoff)
        attempts = 0
        while True:
            attempts += 1
            try:
                return self._connect_once(max(0.001, deadline - time.monotonic()))
            except OSError as exc:
                last: BaseException = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            delay = min(next(delays), remaining)
            self._logger.debug(
                "connecting to %s failed (attempt %d): %s; retrying in %.3fs", self._display, attempts, last, delay
            )
            if self._on_retry is not None:
                self._on_retry(attempts, last, delay)
            # Woken early by abort() or close().
            if self._cancel.wait(delay):
                break
        if self._cancel.is_set():
            raise self._cancelled_error()
        plural = "attempt" if attempts == 1 else "attempts"
        raise UDFError(
            f"failed to connect to {self._display}: {attempts} {plural} in {self._connect_timeout:g}s, "
            f"last error: {_describe(last)}"
        )

    def _connect_once(self, timeout: float) -> socket.socket:
        if self._kind == "tcp":
            sock = socket.create_connection(self._address, timeout=timeout)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(self._address)
            except BaseException:
                sock.close()
                raise
        sock.settimeout(None)
        return sock

    def _grace(self) -> float:
        return self._close_grace

    def _escalate(self, step: int, grace: float, stall: Stall) -> bool:
        """close()'s one step against an agent that stops making progress: end the connection from our side."""
        if step > 0:
            return False
        if stall.aborted:  # what it still writes is discarded
            reason = f"did not end its output within {grace:g}s after the server aborted"
        else:
            reason = f"no progress for {grace:g}s after its input was closed"
        self._logger.warning("agent at %s %s: closing the connection", self._display, reason)
        self._escalation.record("closing the connection", reason)
        self._kill()
        return False

    def _release(self, err: BaseException | None) -> BaseException | None:
        """After the server stopped: close the connection; the error close() raises."""
        for stream in (self._reader, self._sock):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        steps, reason = self._escalation.taken()
        if err is None and steps:
            err = UDFError(f"agent at {self._display} did not close its connection: {reason}")
        return err

    def _kill(self) -> None:
        """The server's kill callback: end the connection both ways (wakes blocked I/O)."""
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- the server's API (the rest comes from ServerBacked) -----------------------

    def __enter__(self) -> Socket:
        self.open()
        return self

    def __repr__(self) -> str:
        return f"<udf.Socket {self._display}>"
