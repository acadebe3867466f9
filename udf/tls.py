"""TLS over a connected socket for both sides of a TCP UDF connection: :class:`TLSConnection`.

Why not ``ssl.SSLSocket``: a UDF connection is read by one thread and written
by another, and its input ends with a half-close while the agent still
answers. TLS has no half-close like TCP's ``SHUT_WR``: ``SSLSocket.unwrap()``
from the writer while the reader is in ``recv`` loses the peer's remaining
output, and ``SSLSocket.shutdown(SHUT_WR)`` drops TLS both ways. So each
connection runs an ``ssl.SSLObject`` over two ``ssl.MemoryBIO``\\ s: every
SSLObject call is made under one lock that is never held during socket I/O,
the end of input is a TLS close_notify followed by a TCP FIN (``SHUT_WR``),
and the reader decrypts on after it until the peer's own close_notify.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import UDFError

__all__ = [
    "TLSConnection",
    "TLSError",
    "NotTLSError",
    "describe_tls_error",
    "make_context",
    "add_tls_arguments",
    "context_from_arguments",
    "HANDSHAKE_RECORD",
]

#: The first byte of a TLS handshake record: anything else is not a TLS client.
HANDSHAKE_RECORD = 0x16
_CHUNK = 65536
#: How often a handshake's wait for the peer checks whether it was cancelled (seconds).
CANCEL_CHECK = 0.05
#: Largest plaintext written to the SSLObject at once (the out BIO stays small).
_WRITE_CHUNK = 16384


class TLSError(ConnectionError):
    """A TLS failure after the handshake, as an ``OSError`` whose text names it.

    Made with one argument (no ``strerror``), so its text is shown as it is.
    """


class NotTLSError(UDFError):
    """The agent's side: the client's first byte is not a TLS handshake record (a plain host)."""


def describe_tls_error(exc: BaseException) -> str:
    """The short text of a TLS failure: ``"certificate verify failed: certificate has expired"``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return f"certificate verify failed: {detail}"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").lower()
        explained = {
            "wrong_version_number": "the peer does not speak TLS (wrong version number)",
            "record_layer_failure": "the peer does not speak TLS (record layer failure)",
            "http_request": "the peer does not speak TLS",
            "unexpected_eof_while_reading": "the peer closed the connection during the TLS handshake",
            "tlsv13_alert_certificate_required": "the peer requires a client certificate and got none",
            "peer_did_not_return_a_certificate": "the peer sent no client certificate and one is required",
            "sslv3_alert_bad_certificate": "the peer rejected our certificate (bad certificate)",
            "tlsv1_alert_unknown_ca": "the peer rejected our certificate (unknown CA)",
            "sslv3_alert_certificate_expired": "the peer rejected our certificate (expired)",
            "sslv3_alert_handshake_failure": (
                "the peer refused the handshake (handshake failure: no client certificate, "
                "or no protocol or cipher in common)"
            ),
        }.get(reason)
        if explained is not None:
            return explained
        return reason.replace("_", " ") if reason else str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class _Reader:
    """The decrypted input as a stream (``read1``/``read``); ``close()`` leaves the socket to its owner."""

    def __init__(self, conn: TLSConnection) -> None:
        self._conn = conn

    def read(self, size: int = -1, /) -> bytes:
        return self._conn.recv(size if size > 0 else _CHUNK)

    read1 = read

    def close(self) -> None:
        pass


class _Writer:
    """The encrypted output as a stream: ``close()`` sends close_notify then a TCP FIN (end of input)."""

    def __init__(self, conn: TLSConnection) -> None:
        self._conn = conn
        self._closed = False

    def write(self, data: Any) -> int:
        if self._closed:
            raise ValueError("write to a closed stream")
        self._conn.send(data)
        return len(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._conn.end_output()


class TLSConnection:
    """One TLS connection over a connected ``socket``: :meth:`handshake`, then :attr:`reader` and :attr:`writer`.

    ``reader.read1(n)`` returns decrypted bytes, ``b""`` after the peer's
    close_notify (or a TCP EOF after it); ``writer.close()`` ends our output
    with close_notify and ``SHUT_WR`` while reading goes on. The socket
    itself stays the caller's to shut down and close.
    """

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._server_side = server_side
        self._lock = threading.Lock()  # every SSLObject call; never held during socket I/O
        self._send_lock = threading.Lock()  # one sender drains the out BIO, in order
        self._eof = False
        self._peer = "the peer"
        self._input_stopped = False
        #: end_output() found records not yet read in the incoming BIO: the
        #: reader sends the close_notify once it has taken them (see end_output).
        self._close_wanted = False
        self.reader = _Reader(self)
        self.writer = _Writer(self)

    @property
    def version(self) -> str | None:
        """The negotiated protocol (``"TLSv1.3"``), once the handshake is done."""
        with self._lock:
            return self._tls.version()

    def getpeercert(self) -> Any:
        """The peer's certificate as ``ssl.SSLObject.getpeercert()`` gives it."""
        with self._lock:
            return self._tls.getpeercert()

    def handshake(
        self,
        timeout: float,
        peer: str,
        limit: str | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        """Complete the handshake within ``timeout`` seconds, or raise a ``UDFError`` naming the failure.

        On the agent's side a first byte that is not a TLS handshake record is
        refused at once (a plain host would never complete a record header).
        A failed handshake's alert is sent before raising, so the peer learns why.
        ``limit`` names the time limit in the timeout's message (default: the seconds).
        With ``cancelled``, the wait for the peer is sliced (``CANCEL_CHECK``
        seconds) and a true ``cancelled()`` ends it with ``UDFError("... cancelled")``.
        """
        deadline = time.monotonic() + timeout
        self._peer = peer
        first = True
        try:
            while True:
                failure: ssl.SSLError | None = None
                with self._lock:
                    try:
                        self._tls.do_handshake()
                        done = True
                    except ssl.SSLWantReadError:
                        done = False
                    except ssl.SSLError as exc:
                        failure, done = exc, False
                self._flush(block=True)  # our flight, or the alert explaining the failure
                if failure is not None:
                    raise UDFError(f"TLS handshake with {peer} failed: {describe_tls_error(failure)}") from None
                if done:
                    return
                data = self._receive(deadline, peer, cancelled)
                if first and self._server_side and data and data[0] != HANDSHAKE_RECORD:
                    raise NotTLSError(
                        f"TLS handshake with {peer} failed: the peer does not speak TLS "
                        f"(first byte 0x{data[0]:02x}, not a handshake record)"
                    )
                first = False
                with self._lock:
                    if data:
                        self._incoming.write(data)
                    else:
                        self._incoming.write_eof()
        except TimeoutError:
            within = limit if limit is not None else f"{timeout:g}s"
            raise UDFError(f"TLS handshake with {peer} did not complete within {within}") from None
        except UDFError:
            raise
        except OSError as exc:
            raise UDFError(f"TLS handshake with {peer} failed: {describe_tls_error(exc)}") from None
        finally:
            try:
                self._sock.settimeout(None)
            except OSError:
                pass

    def _receive(self, deadline: float, peer: str, cancelled: Callable[[], bool] | None) -> bytes:
        """The handshake's next bytes from the socket, by the deadline (``socket.timeout``) unless cancelled."""
        while True:
            if cancelled is not None and cancelled():
                raise UDFError(f"TLS handshake with {peer} cancelled")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError()
            self._sock.settimeout(remaining if cancelled is None else min(remaining, CANCEL_CHECK))
            try:
                return self._sock.recv(_CHUNK)
            except TimeoutError:
                continue

    def recv(self, size: int) -> bytes:
        """Up to ``size`` decrypted bytes; ``b""`` at the end of the peer's output."""
        while True:
            with self._lock:
                try:
                    data: bytes | None = self._tls.read(size)
                except ssl.SSLWantReadError:
                    data = None
                except ssl.SSLZeroReturnError:
                    data = b""
                except ssl.SSLError as exc:
                    raise TLSError(f"TLS with {self._peer}: {describe_tls_error(exc)}") from None
                finish_output = self._close_wanted and not self._incoming.pending
                if finish_output:
                    self._close_wanted = False
                    self._unwrap_locked()
                pending = self._outgoing.pending
            if finish_output:
                self._finish_output()
            elif pending:
                self._flush(block=False)  # e.g. a key update's answer
            if data is not None:
                return data
            if self._eof:
                if self._input_stopped:
                    return b""  # our own stop_input(), not the peer's doing
                raise TLSError(f"TLS with {self._peer}: the peer closed the connection without close_notify")
            raw = self._sock.recv(_CHUNK)
            with self._lock:
                if raw:
                    self._incoming.write(raw)
                else:
                    self._eof = True
                    self._incoming.write_eof()

    def send(self, data: Any) -> None:
        """Encrypt and send all of ``data``."""
        view = memoryview(data).cast("B")
        for start in range(0, len(view), _WRITE_CHUNK):
            with self._lock:
                self._tls.write(view[start : start + _WRITE_CHUNK])
            self._flush(block=True)

    def stop_input(self) -> None:
        """Stop reading (``SHUT_RD``): the reader sees the end of its input, not a truncation."""
        self._input_stopped = True
        try:
            self._sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def end_output(self) -> None:
        """End our output: close_notify, then a TCP FIN; the peer's output is still read.

        ``unwrap()`` sends our close_notify and then reads the incoming BIO for
        the peer's: a whole application-data record found there is an
        unexpected record to OpenSSL's shutdown, a fatal error that loses the
        peer's remaining output. So it runs only on an empty incoming BIO:
        here if it is empty (the reader adds to it under the same lock), or
        else by the reader as soon as it has taken what is there.
        """
        with self._lock:
            if self._incoming.pending:
                self._close_wanted = True  # the reader finishes in recv()
                return
            self._unwrap_locked()
        self._finish_output()

    def _unwrap_locked(self) -> None:
        """Queue our close_notify (call with _lock held, the incoming BIO empty)."""
        try:
            self._tls.unwrap()
        except ssl.SSLWantReadError:
            pass  # the peer's close_notify comes later, through the reader
        except (ssl.SSLError, ValueError):
            pass  # the connection failed already: the FIN still ends the input

    def _finish_output(self) -> None:
        """Send the close_notify, then the FIN."""
        try:
            self._flush(block=True)
        except OSError:
            pass  # the peer is gone already
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _flush(self, *, block: bool) -> None:
        """Send what the SSLObject has produced, in order; without ``block``, leave it to a busy sender."""
        while self._send_lock.acquire(blocking=block):
            try:
                while True:
                    with self._lock:
                        out = self._outgoing.read()
                    if not out:
                        break
                    self._sock.sendall(out)
            finally:
                self._send_lock.release()
            with self._lock:  # produced after our last read but before the release?
                if not self._outgoing.pending:
                    return
            block = False


def make_context(
    *,
    server_side: bool,
    cert: str | None = None,
    key: str | None = None,
    ca: str | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` from certificate files, as the command lines' ``--tls-*`` flags give them.

    Host (``server_side=False``): trusts ``ca`` (else the system's CAs), checks
    the agent's host name, and presents ``cert``/``key`` if given. Agent
    (``server_side=True``): presents ``cert``/``key`` (required) and, with
    ``ca``, verifies client certificates: required with
    ``require_client_cert``, else checked when a client sends one. A file that
    cannot be loaded is a ``UDFError`` naming it.
    """
    if key is not None and cert is None:
        raise UDFError("--tls-key needs --tls-cert")
    if server_side and cert is None:
        raise UDFError("an agent's TLS needs its certificate: --tls-cert FILE (and --tls-key FILE)")
    if require_client_cert and ca is None:
        raise UDFError("--tls-require-client-cert needs --tls-ca FILE (the CA that signs client certificates)")
    purpose = ssl.Purpose.CLIENT_AUTH if server_side else ssl.Purpose.SERVER_AUTH
    ctx = ssl.create_default_context(purpose)
    if ca is not None:
        try:
            ctx.load_verify_locations(cafile=ca)
        except (OSError, ValueError) as exc:
            raise UDFError(f"cannot load TLS CA file {ca}: {describe_tls_error(exc)}") from None
    if cert is not None:
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ValueError) as exc:
            raise UDFError(
                f"cannot load TLS certificate {cert}"
                + (f" with key {key}" if key else "")
                + f": {describe_tls_error(exc)}"
            ) from None
    if server_side:
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
        elif ca is not None:
            ctx.verify_mode = ssl.CERT_OPTIONAL
        else:
            ctx.verify_mode = ssl.CERT_NONE
    return ctx


def add_tls_arguments(parser: Any, *, server_side: bool) -> None:
    """Add ``--tls-cert``, ``--tls-key``, ``--tls-ca`` (and the agent's ``--tls-require-client-cert``)."""
    who = "this agent's" if server_side else "the host's client"
    group = parser.add_argument_group("TLS (tcp:// addresses only)")
    if not server_side:
        group.add_argument("--tls", action="store_true", help="use TLS (implied by the other --tls-* flags)")
    group.add_argument("--tls-cert", metavar="FILE", help=f"PEM file with {who} certificate (and key)")
    group.add_argument("--tls-key", metavar="FILE", help="PEM file with its private key, if not in --tls-cert")
    group.add_argument(
        "--tls-ca",
        metavar="FILE",
        help=(
            "PEM file of the CA(s) that sign client certificates"
            if server_side
            else "PEM file of the CA(s) that sign the agent's certificate (default: the system's)"
        ),
    )
    if server_side:
        group.add_argument(
            "--tls-require-client-cert",
            action="store_true",
            help="refuse hosts without a client certificate signed by --tls-ca",
        )


def context_from_arguments(args: Any, *, server_side: bool) -> ssl.SSLContext | None:
    """The context the ``--tls-*`` flags of :func:`add_tls_arguments` ask for, or ``None`` without TLS."""
    require = bool(getattr(args, "tls_require_client_cert", False))
    wanted = args.tls_cert or args.tls_key or args.tls_ca or require or getattr(args, "tls", False)
    if not wanted:
        return None
    return make_context(
        server_side=server_side, cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca, require_client_cert=require
    )
