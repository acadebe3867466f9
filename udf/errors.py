"""The exceptions this package raises.

Every error is a :class:`UDFError`; invalid arguments raise ``TypeError`` or
``ValueError``. Messages keep the Go original's wording where it had one.
"""

from __future__ import annotations

import datetime
import queue
import sys

__all__ = [
    "UDFError",
    "ServerStoppedError",
    "ErrServerStopped",
    "KeepaliveTimeoutError",
    "AgentError",
    "AgentClosedError",
    "InitError",
    "RestoreError",
    "ProtocolError",
    "ReadError",
    "WriteError",
    "ChannelClosed",
    "ProcessExitedError",
    "CloseTimeoutError",
    "SupervisorGaveUp",
]


class UDFError(Exception):
    """Base class of every error raised by this package."""


class ServerStoppedError(UDFError):
    """A request was made after the server stopped (Go: ``ErrServerStopped``)."""

    def __init__(self, message: str = "server already stopped") -> None:
        super().__init__(message)


#: Go's ``ErrServerStopped``, kept as an alias for porting.
ErrServerStopped = ServerStoppedError


class KeepaliveTimeoutError(UDFError):
    """The agent sent nothing for longer than the keepalive timeout."""

    def __init__(self, last_ns: int) -> None:
        when = datetime.datetime.fromtimestamp(last_ns / 1e9, tz=datetime.timezone.utc)
        super().__init__(f"keepalive timedout, last keepalive received was: {when.isoformat()}")
        self.last_ns = last_ns


class AgentError(UDFError):
    """The agent sent an ``ErrorResponse``; the message is the agent's text."""


class AgentClosedError(UDFError):
    """The agent's output ended before it answered a request."""

    def __init__(self, message: str = "agent closed its output before answering") -> None:
        super().__init__(message)


class InitError(UDFError):
    """The agent refused the init options (``InitResponse.success`` false)."""

    def __init__(self, agent_error: str) -> None:
        super().__init__(f"failed to initialize processes {agent_error}")
        self.agent_error = agent_error


class RestoreError(UDFError):
    """The agent could not restore a snapshot."""

    def __init__(self, agent_error: str) -> None:
        super().__init__(f"error restoring snapshot: {agent_error}")
        self.agent_error = agent_error


class ProtocolError(UDFError):
    """The agent's stream is malformed or breaks the protocol."""


class ReadError(UDFError):
    """Reading the agent's output failed; the message starts "read error: "."""

    def __init__(self, cause: object) -> None:
        super().__init__(f"read error: {cause}")


class WriteError(UDFError):
    """Writing to the agent failed; the message starts "write error: "."""

    def __init__(self, cause: object) -> None:
        super().__init__(f"write error: {cause}")


class ProcessExitedError(UDFError):
    """A UDF child process exited while the server was still running."""


class CloseTimeoutError(UDFError):
    """``close(timeout=...)`` ran out: what still ran was killed; the message names what the close waited for."""


class SupervisorGaveUp(UDFError):
    """A ``udf.Supervisor`` stopped restarting its agent; ``__cause__`` is the last failure."""


if sys.version_info >= (3, 13):

    class ChannelClosed(UDFError, queue.ShutDown):
        """The channel is closed (and, for ``get``, drained)."""

else:

    class ChannelClosed(UDFError):
        """The channel is closed (and, for ``get``, drained)."""
