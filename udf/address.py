"""The address of a UDF socket: a unix socket path or ``tcp://host:port``.

One grammar for both sides: :class:`udf.Socket` connects to it, and
:class:`udf.agent.AgentServer` listens on it. A unix path is any non-empty
string not starting with ``tcp://``. A TCP address needs a host (a name, an
IPv4 address, or an IPv6 address in brackets: ``tcp://[::1]:9000``) and a
decimal port 0-65535; port 0 lets a server pick a free one. Kapacitor 1.3
itself only does unix sockets; TCP is this port's extension.
"""

from __future__ import annotations

import os
import socket
from typing import Any, NamedTuple

__all__ = ["Address", "parse_address", "TCP_PREFIX"]

TCP_PREFIX = "tcp://"


class Address(NamedTuple):
    """A parsed address: ``kind`` is ``"unix"`` or ``"tcp"``."""

    kind: str
    #: The socket path (str), or ``(host, port)`` for TCP: what connect/bind take.
    sockaddr: Any
    #: How messages name it: ``unix socket PATH`` or the ``tcp://`` text.
    display: str


def parse_address(address: str | os.PathLike[str]) -> Address:
    """Parse a unix socket path or ``tcp://host:port``; ``ValueError`` saying what is wrong."""
    text = os.fspath(address)
    if not isinstance(text, str):
        raise TypeError(f"socket address must be a str, got {type(text).__name__}")
    if text.startswith(TCP_PREFIX):
        host, sep, port = text[len(TCP_PREFIX) :].rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            host = ""  # an IPv6 address needs brackets
        valid = sep and host and port.isascii() and port.isdigit() and int(port) <= 65535
        if not valid or "/" in host or "[" in host or "]" in host:
            raise ValueError(f"invalid TCP address {text!r}: want tcp://host:port (tcp://[::1]:port for IPv6)")
        return Address("tcp", (host, int(port)), text)
    if not text:
        raise ValueError("socket path must not be empty")
    if not hasattr(socket, "AF_UNIX"):  # pragma: no cover - Windows without AF_UNIX
        raise ValueError("unix sockets are not supported here; use tcp://host:port")
    return Address("unix", text, f"unix socket {text}")
