"""The agent side's lifecycles as data: a state enum, an event enum and a table per object.

Four objects have a life: the :class:`~udf.agent.conversation.Agent` (one
conversation), its output (:class:`~udf.agent.output.FrameWriter`), the
:class:`~udf.agent.server.AgentServer`, and each connection the server holds
(:mod:`udf.agent.connections`). Each changes state only through
:meth:`udf.lifecycle.Lifecycle.fire` under its owner's lock; a pair missing
from a table raises :class:`udf.lifecycle.IllegalTransition`. The tables are
rendered into docs/agent.md by ``scripts/gen_state_tables.py``. Pure: no
threads, no I/O.
"""

from __future__ import annotations

import enum

from ..lifecycle import transition_table

__all__ = [
    "AgentState",
    "AgentEvent",
    "AGENT_TABLE",
    "OutputState",
    "OutputEvent",
    "OUTPUT_TABLE",
    "ServerState",
    "ServerEvent",
    "SERVER_TABLE",
    "ConnectionState",
    "ConnectionEvent",
    "CONNECTION_TABLE",
]


class AgentState(enum.Enum):
    """Where one conversation is: which of its two threads still run, and whether it failed."""

    NEW = "new"  # built; the handler may still be set
    RUNNING = "running"  # reader and handler threads run, requests are taken
    DRAINING = "draining"  # the input ended cleanly: the handler finishes what is queued
    FAILING = "failing"  # a fatal error: requests dropped, handler stopping, reader discarding
    STOPPING = "stopping"  # failed and the reader has ended: the handler is stopping
    DISCARDING = "discarding"  # failed, handler stopped, output closed: the reader discards to EOF
    DONE = "done"  # both threads ended, output closed


class AgentEvent(enum.Enum):
    START = "start"  # start()
    INPUT_ENDED = "input_ended"  # the reader thread ends (EOF, or the end of discarding)
    FAIL = "fail"  # a fatal error, or abort()
    HANDLER_ENDED = "handler_ended"  # the handler thread ends (handler stopped, output closed)


_A, _AE = AgentState, AgentEvent

AGENT_TABLE = transition_table(
    "udf.agent.Agent",
    AgentState,
    AgentEvent,
    {
        (_A.NEW, _AE.START): _A.RUNNING,
        (_A.RUNNING, _AE.INPUT_ENDED): _A.DRAINING,
        (_A.RUNNING, _AE.FAIL): _A.FAILING,
        (_A.DRAINING, _AE.FAIL): _A.STOPPING,
        (_A.DRAINING, _AE.HANDLER_ENDED): _A.DONE,
        (_A.FAILING, _AE.FAIL): _A.FAILING,  # a later error: the first one stays the error
        (_A.FAILING, _AE.INPUT_ENDED): _A.STOPPING,
        (_A.FAILING, _AE.HANDLER_ENDED): _A.DISCARDING,
        (_A.STOPPING, _AE.FAIL): _A.STOPPING,
        (_A.STOPPING, _AE.HANDLER_ENDED): _A.DONE,
        (_A.DISCARDING, _AE.FAIL): _A.DISCARDING,
        (_A.DISCARDING, _AE.INPUT_ENDED): _A.DONE,
        (_A.DONE, _AE.FAIL): _A.DONE,  # abort() after the end changes nothing
    },
    doc="One conversation (udf.agent.Agent): the reader and handler threads, and the first fatal error.",
)

#: States in which a fatal error has been recorded and requests are no longer taken.
AGENT_FAILED = frozenset({_A.FAILING, _A.STOPPING, _A.DISCARDING})


class OutputState(enum.Enum):
    """The agent's output stream."""

    OPEN = "open"  # frames are buffered and written
    BROKEN = "broken"  # a write failed (the host stopped reading): nothing more is written
    CLOSED = "closed"  # flushed and closed at the end of the conversation


class OutputEvent(enum.Enum):
    WRITE_FAILED = "write_failed"
    CLOSE = "close"


_O, _OE = OutputState, OutputEvent

OUTPUT_TABLE = transition_table(
    "udf.agent.Output",
    OutputState,
    OutputEvent,
    {
        (_O.OPEN, _OE.WRITE_FAILED): _O.BROKEN,
        (_O.OPEN, _OE.CLOSE): _O.CLOSED,
        (_O.BROKEN, _OE.CLOSE): _O.CLOSED,
        (_O.CLOSED, _OE.CLOSE): _O.CLOSED,
    },
    doc="An agent's output (udf.agent.output.FrameWriter).",
)


class ServerState(enum.Enum):
    """An AgentServer: bound at construction, accepting between start() and stop()."""

    NEW = "new"  # bound and listening; nothing accepted yet
    SERVING = "serving"  # the accept thread runs
    STOPPING = "stopping"  # stop() runs: no more accepts, connections are ended
    STOPPED = "stopped"  # every thread joined, the socket file removed


class ServerEvent(enum.Enum):
    START = "start"
    STOP = "stop"
    STOPPED = "stopped"


_S, _SE = ServerState, ServerEvent

SERVER_TABLE = transition_table(
    "udf.agent.AgentServer",
    ServerState,
    ServerEvent,
    {
        (_S.NEW, _SE.START): _S.SERVING,
        (_S.NEW, _SE.STOP): _S.STOPPING,
        (_S.SERVING, _SE.STOP): _S.STOPPING,
        (_S.STOPPING, _SE.STOP): _S.STOPPING,  # a second stop() waits for the same end
        (_S.STOPPING, _SE.STOPPED): _S.STOPPED,
        (_S.STOPPED, _SE.STOP): _S.STOPPED,
        (_S.STOPPED, _SE.STOPPED): _S.STOPPED,  # a concurrent stop() finishing second
    },
    doc="A server of agents on a socket (udf.agent.AgentServer).",
)


class ConnectionState(enum.Enum):
    """One accepted connection of an AgentServer, under the server's lock."""

    HANDSHAKING = "handshaking"  # TLS: the handshake runs in a thread of its own
    AWAITING_REQUEST = "awaiting_request"  # an agent serves it; no complete request yet
    SERVED = "served"  # a first request arrived: only the host's own doing ends it now
    CLOSING = "closing"  # the server cut it off (first-request deadline, buffer budget)
    ENDED = "ended"  # its agent is done (or its handshake failed): forgotten


class ConnectionEvent(enum.Enum):
    HANDSHAKE_DONE = "handshake_done"
    FIRST_REQUEST = "first_request"
    EXPIRE = "expire"  # first_request_timeout passed
    OVER_BUDGET = "over_budget"  # its unfinished frame would pass max_buffered_bytes
    END = "end"


_C, _CE = ConnectionState, ConnectionEvent

CONNECTION_TABLE = transition_table(
    "udf.agent.Connection",
    ConnectionState,
    ConnectionEvent,
    {
        (_C.HANDSHAKING, _CE.HANDSHAKE_DONE): _C.AWAITING_REQUEST,
        (_C.HANDSHAKING, _CE.EXPIRE): _C.CLOSING,
        (_C.HANDSHAKING, _CE.END): _C.ENDED,
        (_C.AWAITING_REQUEST, _CE.FIRST_REQUEST): _C.SERVED,
        (_C.AWAITING_REQUEST, _CE.EXPIRE): _C.CLOSING,
        (_C.AWAITING_REQUEST, _CE.OVER_BUDGET): _C.CLOSING,
        (_C.AWAITING_REQUEST, _CE.END): _C.ENDED,
        (_C.SERVED, _CE.OVER_BUDGET): _C.CLOSING,
        (_C.SERVED, _CE.END): _C.ENDED,
        # The reader may finish a read already under way when the server cuts it off.
        (_C.CLOSING, _CE.HANDSHAKE_DONE): _C.CLOSING,
        (_C.CLOSING, _CE.FIRST_REQUEST): _C.CLOSING,
        (_C.CLOSING, _CE.OVER_BUDGET): _C.CLOSING,
        (_C.CLOSING, _CE.END): _C.ENDED,
    },
    doc="One connection of an AgentServer (udf.agent.connections.Connection).",
)
