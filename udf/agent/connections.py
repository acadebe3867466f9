"""What each peer of an :class:`~udf.agent.server.AgentServer` may take: :class:`Connections`.

The registry of a server's connections decides, under its own lock and with
no threads and no I/O, the three limits of :class:`Limits`; the server acts
on what it decides (closes sockets, logs):

- **max_connections**: :meth:`Connections.admit` refuses a connection beyond it.
- **first_request_timeout**: a connection that has not delivered a complete
  first request by its deadline (counted from its accept, so a TLS handshake
  is included) is returned by :meth:`Connections.expired`. The deadlines are
  kept in accept order, so the earliest is the first (one timeout for all).
- **max_buffered_bytes**: the bytes of unfinished frames held across the
  connections, charged by each connection's reader once per read
  (:meth:`Connections.charge`, never per byte or per frame). Each connection
  has a reserved share (``RESERVED_PER_CONNECTION``, or less if the budget is
  small) that no other peer can take, so a host whose frames fit in it is
  never refused because of another peer; what a connection holds beyond its
  share comes from the pool the connections share, first come, first served,
  and the connection whose frame would pass it is refused.

Each connection's state is in table ``udf.agent.Connection``
(:mod:`udf.agent.states`), fired only by this registry under its lock.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..lifecycle import Lifecycle
from .states import CONNECTION_TABLE, ConnectionEvent, ConnectionState

if TYPE_CHECKING:
    from ..tls import TLSConnection
    from .conversation import Agent

__all__ = [
    "Connection",
    "Connections",
    "Limits",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_FIRST_REQUEST_TIMEOUT",
    "DEFAULT_MAX_BUFFERED_BYTES",
    "RESERVED_PER_CONNECTION",
]

DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_FIRST_REQUEST_TIMEOUT = 30.0
DEFAULT_MAX_BUFFERED_BYTES = 256 * 2**20
#: Bytes of an unfinished frame each connection may hold from its own share of
#: the budget (a point, a batch point, an init request fit many times over).
RESERVED_PER_CONNECTION = 64 * 1024

_C, _CE = ConnectionState, ConnectionEvent
#: States in which the first-request deadline applies.
_AWAITING = frozenset({_C.HANDSHAKING, _C.AWAITING_REQUEST})


@dataclass(frozen=True)
class Limits:
    """What peers may take from an AgentServer; checked when made (``ValueError`` naming the bad one)."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    first_request_timeout: float = DEFAULT_FIRST_REQUEST_TIMEOUT
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_buffered_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        timeout = self.first_request_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"first_request_timeout must be a positive number of seconds, got {timeout!r}")

    @property
    def reserved(self) -> int:
        """Each connection's own share of the budget."""
        return min(RESERVED_PER_CONNECTION, self.max_buffered_bytes // self.max_connections)

    @property
    def shared(self) -> int:
        """The part of the budget the connections share beyond their own shares."""
        return self.max_buffered_bytes - self.reserved * self.max_connections


class Connection:
    """One accepted connection: its socket, its peer, and (once served) its agent; state under the registry's lock."""

    __slots__ = ("number", "peer", "sock", "deadline", "life", "agent", "tls", "thread", "charged")

    def __init__(self, number: int, peer: str, sock: socket.socket, deadline: float, state: ConnectionState) -> None:
        self.number = number
        #: ``host:port`` of a TCP peer, or the socket path: for messages.
        self.peer = peer
        self.sock = sock
        self.deadline = deadline
        self.life = Lifecycle(CONNECTION_TABLE, state)
        self.agent: Agent | None = None
        self.tls: TLSConnection | None = None
        #: The TLS handshake's thread (the server joins it at stop()).
        self.thread: threading.Thread | None = None
        #: Bytes charged to the shared pool (held beyond the reserved share).
        self.charged = 0

    @property
    def state(self) -> ConnectionState:
        return self.life.state

    def __repr__(self) -> str:
        return f"<Connection {self.number} from {self.peer}: {self.life.state.value}>"


class Connections:
    """The live connections of one server and the limits they share (see the module's docstring)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        #: Bytes of an unfinished frame a connection holds free of charge.
        self.reserved = limits.reserved
        self._shared = limits.shared
        self._lock = threading.Lock()
        self._live: dict[int, Connection] = {}
        self._awaiting: dict[int, Connection] = {}  # in accept order: the first has the earliest deadline
        self._charged = 0

    # --- decisions ------------------------------------------------------------------------

    def admit(self, number: int, peer: str, sock: socket.socket, now: float, handshake: bool) -> Connection | None:
        """Register a new connection, or ``None`` if ``max_connections`` are open already."""
        state = _C.HANDSHAKING if handshake else _C.AWAITING_REQUEST
        conn = Connection(number, peer, sock, now + self.limits.first_request_timeout, state)
        with self._lock:
            if len(self._live) >= self.limits.max_connections:
                return None
            self._live[number] = conn
            self._awaiting[number] = conn
        return conn

    def fire(self, conn: Connection, event: ConnectionEvent) -> tuple[ConnectionState, ConnectionState]:
        """The one place a connection's state changes: ``(before, after)``."""
        with self._lock:
            return self._fire_locked(conn, event)

    def _fire_locked(self, conn: Connection, event: ConnectionEvent) -> tuple[ConnectionState, ConnectionState]:
        before = conn.life.state
        after = conn.life.fire(event)
        if after not in _AWAITING:
            self._awaiting.pop(conn.number, None)
        if after is _C.CLOSING or after is _C.ENDED:
            self._charged -= conn.charged  # its bytes are dropped with its reader
            conn.charged = 0
        if after is _C.ENDED:
            self._live.pop(conn.number, None)
        return before, after

    def expired(self, now: float) -> list[Connection]:
        """Connections past their first-request deadline, now CLOSING: the caller closes them."""
        out = []
        with self._lock:
            while self._awaiting:
                conn = next(iter(self._awaiting.values()))
                if conn.deadline > now:
                    break
                self._fire_locked(conn, _CE.EXPIRE)  # drops it from _awaiting
                out.append(conn)
        return out

    def next_deadline(self) -> float | None:
        """The earliest first-request deadline still pending (monotonic seconds), or ``None``."""
        with self._lock:
            for conn in self._awaiting.values():
                return conn.deadline
        return None

    def charge(self, conn: Connection, buffered: int) -> bool:
        """Account ``buffered`` bytes of unfinished frames held by ``conn``'s reader after a read.

        False if the part beyond its reserved share would pass the shared pool:
        the connection is then CLOSING (its charge released) and must be closed.
        """
        wanted = buffered - self.reserved if buffered > self.reserved else 0
        with self._lock:
            if conn.life.state is _C.CLOSING or conn.life.state is _C.ENDED:
                return True  # being closed already: its reader ends at its next read
            grow = wanted - conn.charged
            if grow > 0 and self._charged + grow > self._shared:
                self._fire_locked(conn, _CE.OVER_BUDGET)
                return False
            self._charged += grow
            conn.charged = wanted
        return True

    # --- facts ----------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes charged to the shared pool now (beyond the connections' reserved shares)."""
        return self._charged

    def live(self) -> list[Connection]:
        """Every connection not yet ended, in accept order."""
        with self._lock:
            return list(self._live.values())

    def served(self) -> int:
        """How many connections have an agent."""
        with self._lock:
            return sum(1 for conn in self._live.values() if conn.agent is not None)

    def attach(self, conn: Connection, agent: Agent, tls: TLSConnection | None) -> None:
        with self._lock:
            conn.agent = agent
            conn.tls = tls
