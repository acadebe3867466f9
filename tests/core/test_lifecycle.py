"""udf.lifecycle: tables fire transitions, refuse illegal ones, and the docs are generated from them."""

from __future__ import annotations

import enum
import subprocess
import sys

import pytest

from udf.lifecycle import IllegalTransition, Lifecycle, StateTable, render_markdown

from ..helpers import ROOT, TIMEOUT


class Door(enum.Enum):
    OPEN = "open"
    SHUT = "shut"


class Push(enum.Enum):
    CLOSE = "close"
    OPEN = "open"


DOOR = StateTable(
    "test.Door",
    Door,
    Push,
    {(Door.OPEN, Push.CLOSE): Door.SHUT, (Door.SHUT, Push.OPEN): Door.OPEN, (Door.SHUT, Push.CLOSE): Door.SHUT},
)


def test_fire_follows_the_table_and_refuses_what_it_lacks() -> None:
    life = Lifecycle(DOOR, Door.OPEN)
    assert life.fire(Push.CLOSE) is Door.SHUT
    assert life.fire(Push.CLOSE) is Door.SHUT  # listed as staying
    assert life.allows(Push.OPEN)
    assert life.fire(Push.OPEN) is Door.OPEN
    assert not life.allows(Push.OPEN)
    with pytest.raises(IllegalTransition, match="test.Door: no transition for event 'open' in state 'open'"):
        life.fire(Push.OPEN)
    assert life.state is Door.OPEN  # an illegal event changes nothing


def test_a_table_refuses_members_of_other_enums() -> None:
    with pytest.raises(TypeError, match="bad transition"):
        StateTable("test.Bad", Door, Push, {(Door.OPEN, Door.SHUT): Door.OPEN})  # type: ignore[misc]


def test_render_markdown_marks_illegal_and_staying_cells() -> None:
    text = render_markdown(DOOR)
    assert text.splitlines() == [
        "| state | `close` | `open` |",
        "|---|---|---|",
        "| **open** | shut | — |",
        "| **shut** | same | open |",
    ]


def test_the_docs_state_tables_are_the_codes() -> None:
    """Fails when a transition table changes and the docs were not regenerated (or a table is in no doc)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_state_tables.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 6,
    )
    assert result.returncode == 0, result.stderr
