"""docs/interop.md's matrix is the one in tests/interop/matrix.py, and its cells are tested.

Runs everywhere (it reads files only), also where the Go agents are absent and
tests/interop/test_go_agents.py skips.
"""

from __future__ import annotations

import ast
import re

from ..helpers import ROOT
from .matrix import COLUMNS, GO, RESULTS, ROWS, WORKS, render

DOC = ROOT / "docs" / "interop.md"
START, END = "<!-- matrix: generated from tests/interop/matrix.py -->\n", "<!-- end of matrix -->\n"


def defined_tests(path: str) -> set[str]:
    """The test functions a test file defines (read, not imported: a module may skip)."""
    tree = ast.parse((ROOT / path).read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_docs_hold_the_matrix() -> None:
    text = DOC.read_text()
    assert START in text and END in text, f"{DOC} lost its matrix markers"
    table = text.split(START, 1)[1].split(END, 1)[0]
    assert table == render(), (
        "docs/interop.md's matrix differs from tests/interop/matrix.py; paste this between its markers:\n" + render()
    )


def test_cells_are_well_formed_and_works_cells_name_existing_tests() -> None:
    defined: dict[str, set[str]] = {}
    for row in ROWS:
        assert len(row.cells) == len(COLUMNS), row.agent
        for cell in row.cells:
            assert cell.result in RESULTS, (row.agent, cell)
            assert "|" not in cell.note
            if cell.result != WORKS:
                assert not cell.tests, f"{row.agent}: only a 'works' cell names tests"
                continue
            assert cell.tests, f"{row.agent}: a 'works' cell must name the tests that check it"
            for test in cell.tests:
                path, name = test.split("::")
                functions = defined.setdefault(path, defined_tests(path))
                assert name in functions, f"{row.agent}: {test} does not exist"


def test_every_go_interop_test_is_in_the_matrix() -> None:
    named = {t.split("::")[1] for row in ROWS for cell in row.cells for t in cell.tests if t.startswith(GO)}
    assert named == defined_tests(GO)


def test_matrix_markdown_is_a_table() -> None:
    lines = render().splitlines()
    assert all(re.fullmatch(r"\|.*\|", line) for line in lines)
    assert {line.count("|") for line in lines} == {len(COLUMNS) + 2}
