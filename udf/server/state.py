"""A :class:`~udf.server.Server`'s life as data: its states, the events that move it, and the table.

Pure: no threads, no I/O. The server fires these events under its lock, in one
place each (``start()``, ``stop()``, ``abort()``, and the end of its I/O); a pair
missing from the table raises :class:`udf.lifecycle.IllegalTransition`, and
``start()`` asks the table first to raise its own, Go-worded, refusals.
"""

from __future__ import annotations

import enum

from ..lifecycle import transition_table

__all__ = ["ServerState", "ServerEvent", "SERVER_TABLE"]


class ServerState(enum.Enum):
    """Where a :class:`udf.Server` is in its life (the table is in docs/api.md)."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ABORTED = "aborted"


class ServerEvent(enum.Enum):
    """What moves a server: its owner's three calls, and the end of its I/O."""

    START = "start"
    STOP = "stop"
    ABORT = "abort"
    #: The reader and the writer have ended and the end of the conversation is decided.
    IO_ENDED = "io ended"


_NEW, _RUNNING, _STOPPING, _STOPPED, _ABORTED = ServerState

SERVER_TABLE = transition_table(
    "udf.Server",
    ServerState,
    ServerEvent,
    {
        (_NEW, ServerEvent.START): _RUNNING,
        (_NEW, ServerEvent.STOP): _STOPPED,  # never started: nothing to wait for
        (_NEW, ServerEvent.ABORT): _ABORTED,
        (_RUNNING, ServerEvent.STOP): _STOPPING,
        (_RUNNING, ServerEvent.ABORT): _ABORTED,
        (_STOPPING, ServerEvent.STOP): _STOPPING,  # a second stop() waits for the same end
        (_STOPPING, ServerEvent.ABORT): _ABORTED,
        (_STOPPING, ServerEvent.IO_ENDED): _STOPPED,
        (_STOPPED, ServerEvent.STOP): _STOPPED,  # returns / raises the same
        (_STOPPED, ServerEvent.ABORT): _STOPPED,  # records the error if none; callbacks once
        (_ABORTED, ServerEvent.STOP): _ABORTED,  # waits for the I/O, raises the first error
        (_ABORTED, ServerEvent.ABORT): _ABORTED,  # the first error stays
        (_ABORTED, ServerEvent.IO_ENDED): _ABORTED,
    },
    doc="A server's life: its owner's start(), stop() and abort(err), and the end of its I/O.",
)
