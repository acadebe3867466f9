"""The Supervisor's lifecycle as data: its states, its events and the ``(state, event) -> state`` table.

Only :class:`udf.supervision.core.Core` fires these events, under its lock; a
pair missing from the table raises :class:`udf.lifecycle.IllegalTransition`.
The table in docs/supervision.md is generated from :data:`TABLE` by
``scripts/gen_state_tables.py``. Pure: no threads, no I/O.
"""

from __future__ import annotations

import enum

from ..lifecycle import transition_table

__all__ = ["SupervisorState", "SupervisorEvent", "TABLE", "STOPPED"]


class SupervisorState(str, enum.Enum):
    """Where a :class:`udf.Supervisor` is in its life (``state``, ``stats().state``).

    A ``str``: ``SupervisorState.RUNNING == "running"`` holds.
    """

    NEW = "new"
    RUNNING = "running"
    RESTARTING = "restarting"
    GAVE_UP = "gave_up"
    CLOSED = "closed"

    def __str__(self) -> str:
        return self.value


class SupervisorEvent(enum.Enum):
    """What moves a Supervisor from one state to another."""

    OPEN = "open()"
    AGENT_RUNNING = "agent running"
    AGENT_FAILED = "agent failed"
    GIVE_UP = "give up"
    CLOSE = "close()"
    ABORT = "abort()"
    LAST_CLOSED = "last agent closed"
    OPEN_FAILED = "open failed"


NEW, RUNNING, RESTARTING, GAVE_UP, CLOSED = SupervisorState
_E = SupervisorEvent

#: The states it never leaves: it stopped for good.
STOPPED = frozenset((GAVE_UP, CLOSED))

TABLE = transition_table(
    "udf.Supervisor",
    SupervisorState,
    SupervisorEvent,
    {
        # open() starts the first agent: "restarting" until it runs (put() waits).
        (NEW, _E.OPEN): RESTARTING,
        (RESTARTING, _E.AGENT_RUNNING): RUNNING,
        (RESTARTING, _E.OPEN_FAILED): CLOSED,
        # A failure (of the running agent, or of one being started) restarts; a late report changes nothing.
        (RUNNING, _E.AGENT_FAILED): RESTARTING,
        (RESTARTING, _E.AGENT_FAILED): RESTARTING,
        (GAVE_UP, _E.AGENT_FAILED): GAVE_UP,
        (CLOSED, _E.AGENT_FAILED): CLOSED,
        # The restart intensity is exceeded, or a failure a restart cannot cure.
        (RUNNING, _E.GIVE_UP): GAVE_UP,
        (RESTARTING, _E.GIVE_UP): GAVE_UP,
        (CLOSED, _E.GIVE_UP): CLOSED,  # abort() came first: its error stays the cause
        # close() closes the input at once; the state follows the last agent's close.
        (NEW, _E.CLOSE): CLOSED,
        (RUNNING, _E.CLOSE): RUNNING,
        (RESTARTING, _E.CLOSE): RESTARTING,
        (GAVE_UP, _E.CLOSE): GAVE_UP,
        (CLOSED, _E.CLOSE): CLOSED,
        (RUNNING, _E.LAST_CLOSED): CLOSED,
        (CLOSED, _E.LAST_CLOSED): CLOSED,
        # abort() (or a close() that timed out) stops for good at once, whatever runs.
        (NEW, _E.ABORT): CLOSED,
        (RUNNING, _E.ABORT): CLOSED,
        (RESTARTING, _E.ABORT): CLOSED,
        (GAVE_UP, _E.ABORT): GAVE_UP,
        (CLOSED, _E.ABORT): CLOSED,
        # An agent that came up after abort() is discarded: the supervisor stays closed.
        (CLOSED, _E.AGENT_RUNNING): CLOSED,
        (CLOSED, _E.OPEN_FAILED): CLOSED,
    },
    doc="udf.Supervisor: state by event (docs/supervision.md)",
)
