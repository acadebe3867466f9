"""Byte streams over sockets and the text of I/O errors, shared by host and agent.

The host's transport (:mod:`udf.socket`) and the agent's server
(:mod:`udf.agent.server`) both talk over a connected socket through a
file-like reader and writer; both report failed reads, writes and connects
with :func:`describe_error`.
"""

from __future__ import annotations

import socket
from typing import Any

__all__ = ["HalfCloseWriter", "SocketReader", "describe_error"]


class HalfCloseWriter:
    """A socket's writing side as a stream: ``close()`` only shuts down writing (SHUT_WR).

    The peer sees EOF and can still answer. Used for the host's side
    (``udf.Socket``) and the agent's side (``udf.agent.AgentServer``).
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._closed = False

    def write(self, data: Any) -> int:
        if self._closed:
            raise ValueError("write to a closed stream")
        self._sock.sendall(data)
        return len(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer is gone already


class SocketReader:
    """A socket's reading side as a stream; ``close()`` leaves the socket to its owner."""

    def __init__(self, sock: socket.socket, chunk: int) -> None:
        self._sock = sock
        self._chunk = chunk

    def read(self, size: int = -1, /) -> bytes:
        return self._sock.recv(size if size > 0 else self._chunk)

    read1 = read

    def close(self) -> None:
        pass  # the connection is closed by whoever accepted or opened it


def describe_error(exc: BaseException) -> str:
    """The short text of an I/O error: ``"broken pipe"``, ``"connection refused"``.

    An ``OSError``'s strerror in lower case (as Go words its errors), else the
    exception's message, else its type name.
    """
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
