"""The command line of an agent: :func:`main` (stdin/stdout or ``--socket``) and its logging.

Ctrl-C (SIGINT) ends ``main`` with exit status 130 in both modes. With
stdin/stdout the reader thread may be blocked reading stdin when the
interpreter exits; it reads the raw file (:func:`~udf.agent.conversation.unbuffered`),
so no buffered-stream lock is held then, and the handler thread is given
``INTERRUPT_GRACE`` seconds to run ``handler.stop()`` and close the output.
"""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import sys
import threading
from collections.abc import Sequence
from typing import Any

from ..address import TCP_PREFIX
from ..errors import UDFError
from ..tls import add_tls_arguments, context_from_arguments
from .connections import DEFAULT_FIRST_REQUEST_TIMEOUT, DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_CONNECTIONS, Limits
from .conversation import Agent, unbuffered
from .handler import HandlerFactory
from .server import AgentServer

__all__ = ["main", "EXIT_OK", "EXIT_FAILED", "EXIT_INTERRUPTED", "INTERRUPT_GRACE"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
#: Seconds the handler thread gets to stop after Ctrl-C (stdin/stdout mode).
INTERRUPT_GRACE = 2.0

_LOG = logging.getLogger("udf.agent")


class _KapacitorFormatter(logging.Formatter):
    """Prefix log lines with Kapacitor's level marks (E!, W!, I!, D!)."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.ERROR:
            mark = "E!"
        elif record.levelno >= logging.WARNING:
            mark = "W!"
        elif record.levelno >= logging.INFO:
            mark = "I!"
        else:
            mark = "D!"
        text: str = super().format(record)
        return f"{mark} {text}"


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KapacitorFormatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class _Terminate(BaseException):
    """Raised in the main thread by the SIGTERM handler."""


def _raise_terminate(signum: int, frame: Any) -> None:
    raise _Terminate()


def main(
    handler_factory: HandlerFactory,
    argv: Sequence[str] | None = None,
    *,
    description: str | None = None,
) -> int:
    """Run a UDF from the command line; returns the exit status.

    Without options the agent talks over stdin/stdout (Kapacitor's ``prog``
    UDFs); ``--socket PATH`` (or ``--socket tcp://HOST:PORT``) serves every
    connection instead, until SIGINT or SIGTERM, within ``--max-connections``,
    ``--first-request-timeout`` and ``--max-buffered-bytes`` (see
    :class:`AgentServer`). With ``--tls-cert`` (and
    ``--tls-key``, ``--tls-ca``, ``--tls-require-client-cert``) a TCP socket
    is served over TLS. Logs go to stderr with
    Kapacitor's level marks; ``sys.stdout`` is redirected to stderr so that a
    stray ``print`` cannot corrupt the protocol. Exit status: 0 after a clean
    end (or SIGTERM in socket mode), 1 after a fatal error, 130 on SIGINT.
    Typical use::

        if __name__ == "__main__":
            sys.exit(main(MyHandler))
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="serve agents on a unix socket PATH or tcp://HOST:PORT instead of stdin/stdout",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="stderr log level (default: info)",
    )
    _add_limit_arguments(parser)
    add_tls_arguments(parser, server_side=True)
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        ssl_context = context_from_arguments(args, server_side=True)
    except UDFError as exc:
        parser.error(str(exc))
    if ssl_context is not None and (args.socket is None or not args.socket.startswith(TCP_PREFIX)):
        parser.error("the --tls-* flags need --socket tcp://HOST:PORT")
    limits = _limits_from_arguments(parser, args)
    if args.socket is None:
        return _serve_stdio(handler_factory)
    return _serve_socket(handler_factory, args.socket, ssl_context, limits)


_LIMIT_FLAGS = {
    "max_connections": "--max-connections",
    "first_request_timeout": "--first-request-timeout",
    "max_buffered_bytes": "--max-buffered-bytes",
}


def _add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The limits on what a peer can take from an AgentServer (``--socket`` only)."""
    group = parser.add_argument_group("limits on what a peer can take (with --socket)")
    group.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help=f"close a connection beyond N at once (default: {DEFAULT_MAX_CONNECTIONS})",
    )
    group.add_argument(
        "--first-request-timeout",
        type=float,
        metavar="SECONDS",
        help="close a connection without a complete first request after SECONDS, TLS handshake included "
        f"(default: {DEFAULT_FIRST_REQUEST_TIMEOUT:g})",
    )
    group.add_argument(
        "--max-buffered-bytes",
        type=int,
        metavar="N",
        help="bytes of unfinished frames held across all connections; the connection whose frame would "
        f"pass N is closed (default: {DEFAULT_MAX_BUFFERED_BYTES}, 256 MiB)",
    )


def _limits_from_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Limits:
    given = {name: getattr(args, name) for name in _LIMIT_FLAGS if getattr(args, name) is not None}
    if given and args.socket is None:
        parser.error(f"{_LIMIT_FLAGS[next(iter(given))]} needs --socket")
    try:
        return Limits(**given)
    except ValueError as exc:
        name = str(exc).split(" ", 1)[0]
        parser.error(str(exc).replace(name, _LIMIT_FLAGS.get(name, name), 1))


def _serve_stdio(handler_factory: HandlerFactory) -> int:
    """One agent on stdin/stdout until the input ends, a fatal error, or SIGINT."""
    reader, writer = unbuffered(sys.stdin), unbuffered(sys.stdout)
    sys.stdout = sys.stderr  # print() must not write into the protocol stream
    agent = Agent(reader, writer)
    agent.handler = handler_factory(agent)
    agent.start()
    try:
        agent.wait()
    except KeyboardInterrupt:
        agent.abort(UDFError("interrupted"))
        handler_thread = agent.threads[-1]
        handler_thread.join(INTERRUPT_GRACE)  # the reader may stay blocked on stdin: not waited for
        return EXIT_INTERRUPTED
    return EXIT_OK if agent.error is None else EXIT_FAILED


def _serve_socket(
    handler_factory: HandlerFactory, address: str, ssl_context: ssl.SSLContext | None, limits: Limits
) -> int:
    """Serve connections until SIGINT (exit 130) or SIGTERM (exit 0)."""
    server = AgentServer(
        address,
        handler_factory,
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        first_request_timeout=limits.first_request_timeout,
        max_buffered_bytes=limits.max_buffered_bytes,
    )
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminate)
    _LOG.info("listening on %s", server.address)
    code = EXIT_OK
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except _Terminate:
        pass
    finally:
        server.stop()
    return code
