"""The interop matrix: which agents work with which way of running them.

One table, the single source of docs/interop.md's matrix: tests/interop/test_matrix.py
renders it and checks that the document holds exactly that table, that every
"works" cell names tests that exist, and that every test of tests/interop/test_go_agents.py
is named by some cell. So a cell says "works" only where a test of the suite runs
that combination (and the suite is red if it does not work).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The columns after the agent: the two transports and the two CLI commands.
COLUMNS = ("`udf.Process`", "`udf.Socket`", "`python -m udf run`", "`python -m udf info`")

#: Results a cell may state. Only WORKS needs tests; REPORTED is what is known
#: from elsewhere and not run by this suite; NA means the agent cannot be run that way.
WORKS = "works"
NA = "n/a"
REPORTED = "reported, not run here"
RESULTS = (WORKS, NA, REPORTED)

GO = "tests/interop/test_go_agents.py"
EXAMPLES = "tests/examples/test_transports.py"
CLI = "tests/cli/test_commands.py"


@dataclass(frozen=True)
class Cell:
    """One agent run one way: the result, what was checked or why not, and the tests."""

    result: str
    note: str = ""
    tests: tuple[str, ...] = ()  # "tests/file.py::test_function"

    def render(self) -> str:
        return f"{self.result}: {self.note}" if self.note else self.result


@dataclass(frozen=True)
class Row:
    agent: str
    cells: tuple[Cell, Cell, Cell, Cell]  # one per COLUMNS entry


STDIO_ONLY = Cell(NA, "serves stdin/stdout only")

ROWS: list[Row] = [
    Row(
        "Go `moving_avg` (Kapacitor's example)",
        (
            Cell(
                WORKS,
                "info; init refused without `size` with Go's text; averages equal the means; keepalives "
                "during a pause longer than the timeout; snapshot restored into a second process; "
                "garbage restore refused (`RestoreError`)",
                (
                    f"{GO}::test_moving_avg_info_and_averages",
                    f"{GO}::test_moving_avg_init_without_size_is_refused_with_gos_text",
                    f"{GO}::test_moving_avg_keepalives_during_a_pause",
                    f"{GO}::test_moving_avg_snapshot_restored_into_a_second_process",
                    f"{GO}::test_moving_avg_refuses_a_garbage_snapshot_and_goes_on",
                ),
            ),
            STDIO_ONLY,
            Cell(
                WORKS,
                "the sample data; `--snapshot-out` then `--restore` equals one run",
                (f"{GO}::test_cli_run_moving_avg", f"{GO}::test_cli_snapshot_then_restore_moving_avg"),
            ),
            Cell(WORKS, "", (f"{GO}::test_cli_info",)),
        ),
    ),
    Row(
        "Go `outliers` (Kapacitor's example)",
        (
            Cell(
                WORKS,
                "the planted outliers of each batch found; it panics (index out of range) on a batch "
                "of 1, 2, 5 or 6 points",
                (
                    f"{GO}::test_outliers_finds_the_planted_outliers",
                    f"{GO}::test_outliers_panics_on_small_batches",
                ),
            ),
            STDIO_ONLY,
            Cell(WORKS, "`--batch` on the sample data: its seven spikes and dips", (f"{GO}::test_cli_run_outliers",)),
            Cell(WORKS, "", (f"{GO}::test_cli_info",)),
        ),
    ),
    Row(
        "Go `mirror` (Kapacitor's example)",
        (
            Cell(NA, "serves a unix socket only"),
            Cell(
                WORKS,
                "two connections; every field echoed except bools (v1.3.0-rc4 has no `fieldsBool`); "
                "keepalives during a pause",
                (f"{GO}::test_mirror_through_socket",),
            ),
            Cell(
                WORKS,
                "`--socket`; the echoes of the last points can be lost: Go's agent closes the connection "
                "when its input ends (see below)",
                (f"{GO}::test_cli_run_mirror",),
            ),
            Cell(WORKS, "`--socket`", (f"{GO}::test_cli_info",)),
        ),
    ),
    Row(
        "`examples/mirror.py` (`udf.agent`)",
        (
            Cell(WORKS, "", (f"{EXAMPLES}::test_example_through_process",)),
            Cell(WORKS, "`--socket PATH`", (f"{EXAMPLES}::test_example_through_socket",)),
            Cell(WORKS, "", (f"{CLI}::test_e2e_socket_udf",)),
            Cell(WORKS, "", (f"{CLI}::test_e2e_socket_udf",)),
        ),
    ),
    Row(
        "`examples/moving_avg.py` (`udf.agent`)",
        (
            Cell(WORKS, "", (f"{EXAMPLES}::test_example_through_process",)),
            Cell(WORKS, "`--socket PATH`", (f"{EXAMPLES}::test_example_through_socket",)),
            Cell(
                WORKS,
                "",
                (
                    f"{CLI}::test_e2e_moving_average_on_the_sample_data",
                    f"{CLI}::test_e2e_snapshot_then_restore_equals_one_run",
                ),
            ),
            Cell(WORKS, "", (f"{CLI}::test_e2e_info_prints_edges_and_options",)),
        ),
    ),
    Row(
        "`examples/outliers.py` (`udf.agent`)",
        (
            Cell(WORKS, "", (f"{EXAMPLES}::test_example_through_process",)),
            Cell(WORKS, "`--socket PATH`", (f"{EXAMPLES}::test_example_through_socket",)),
            Cell(WORKS, "", (f"{CLI}::test_e2e_outliers_batches_on_the_sample_data",)),
            Cell(WORKS, "", (f"{CLI}::test_e2e_info_prints_edges_and_options",)),
        ),
    ),
    Row(
        "Kapacitor's own Python agents (`udf/agent/py`)",
        (
            Cell(
                REPORTED,
                "only as `python -u` (its agent does not flush its output); its `outliers` crashes on a "
                "batch of fewer than 3 points and on a snapshot request",
            ),
            Cell(REPORTED, "its socket server is unix only"),
            Cell(REPORTED, "as for `udf.Process`"),
            Cell(REPORTED, "as for `udf.Process`"),
        ),
    ),
]


def render() -> str:
    """The matrix as a markdown table, as docs/interop.md must hold it."""
    lines = ["| agent | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for row in ROWS:
        lines.append(f"| {row.agent} | " + " | ".join(cell.render() for cell in row.cells) + " |")
    return "\n".join(lines) + "\n"
