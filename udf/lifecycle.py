"""Lifecycle as data: one state enum and one ``(state, event) -> state`` table per object.

Each object with a life (the Server, the transports, the Supervisor, the agent
side) declares its states and events as enums and its transitions as a dict,
registered here by name with :func:`transition_table`. The object keeps one
:class:`Lifecycle` and changes state only through :meth:`Lifecycle.fire`, under
its own lock; a pair missing from the table is an illegal transition and raises
:class:`IllegalTransition`. Facts that are not states (the first error, the
queues) stay facts beside it, but nothing else decides the state.

The tables in the docs are generated from :data:`TABLES` by
``scripts/gen_state_tables.py`` and checked by a test (h11's ``_state.py`` and
its state-diagram script are the model). Pure: no threads, no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from .errors import UDFError

__all__ = ["IllegalTransition", "Lifecycle", "StateTable", "TABLES", "transition_table", "render_markdown"]

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)


class IllegalTransition(UDFError):
    """An event the object's table has no transition for in its current state (a bug, or a misuse)."""

    def __init__(self, name: str, state: enum.Enum, event: enum.Enum) -> None:
        super().__init__(f"{name}: no transition for event {event.value!r} in state {state.value!r}")
        self.state = state
        self.event = event


class StateTable(Generic[S, E]):
    """One object's registered transition table: its name, enums and ``(state, event) -> state`` dict."""

    def __init__(
        self, name: str, states: type[S], events: type[E], transitions: Mapping[tuple[S, E], S], doc: str = ""
    ) -> None:
        for (state, event), target in transitions.items():
            if not isinstance(state, states) or not isinstance(target, states) or not isinstance(event, events):
                raise TypeError(f"{name}: bad transition {(state, event)!r} -> {target!r}")
        self.name = name
        self.states = states
        self.events = events
        self.transitions: dict[tuple[S, E], S] = dict(transitions)
        self.doc = doc

    def target(self, state: S, event: E) -> S:
        """The state after ``event`` in ``state``; raises :class:`IllegalTransition` if there is none."""
        try:
            return self.transitions[(state, event)]
        except KeyError:
            raise IllegalTransition(self.name, state, event) from None

    def allows(self, state: S, event: E) -> bool:
        return (state, event) in self.transitions


#: Every registered table by name ("udf.Server", ...): what the docs are generated from.
TABLES: dict[str, StateTable[Any, Any]] = {}


def transition_table(
    name: str, states: type[S], events: type[E], transitions: Mapping[tuple[S, E], S], doc: str = ""
) -> StateTable[S, E]:
    """Declare and register an object's transition table (at import time, once per name)."""
    table = StateTable(name, states, events, transitions, doc)
    TABLES[name] = table
    return table


class Lifecycle(Generic[S, E]):
    """One object's current state, changed only by :meth:`fire` through its table.

    Not locked by itself: the owning object calls :meth:`fire` under its own
    lock, together with whatever else it decides there.
    """

    __slots__ = ("table", "state")

    def __init__(self, table: StateTable[S, E], initial: S) -> None:
        self.table = table
        self.state = initial

    def fire(self, event: E) -> S:
        """Move to the state the table gives for ``(state, event)`` and return it; raise if illegal."""
        self.state = self.table.target(self.state, event)
        return self.state

    def allows(self, event: E) -> bool:
        """Whether ``event`` is legal in the current state."""
        return self.table.allows(self.state, event)


def render_markdown(table: StateTable[Any, Any]) -> str:
    """The table as a Markdown grid: a row per state, a column per event, the next state in each cell.

    A cell with "—" is an illegal transition (the object raises, or refuses the call).
    """
    events: list[Any] = list(table.events.__members__.values())
    lines = [
        "| state | " + " | ".join(f"`{e.value}`" for e in events) + " |",
        "|---" * (len(events) + 1) + "|",
    ]
    states: list[Any] = list(table.states.__members__.values())
    for state in states:
        cells = []
        for event in events:
            target = table.transitions.get((state, event))
            cells.append("—" if target is None else ("same" if target is state else f"{target.value}"))
        lines.append(f"| **{state.value}** | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
