"""Every shell command in README.md, docs/*.md and examples/README.md works as written.

A command block is a fenced block marked ``sh`` or ``console``; other fences
(``python``, ``toml``, ``js``, or none: usage synopses, messages) are not
commands. Each command block runs from the repository root with bash, after the
README's set-up command (which makes ``.venv``; the test skips without it):

- an ``sh`` block runs as one script (``bash -e``) and must exit 0;
- a ``console`` block's ``$ `` lines are commands; the lines after each, up to
  the next ``$ ``, are its output, which must be exactly what it prints.

An HTML comment on the line before the fence changes that:

- ``<!-- not run: REASON -->``: not run (a server, the whole suite, an install);
- ``<!-- check: ARGS (REASON) -->``: each line is run with ARGS appended (say
  ``--help``), a cheaper but honest check of a long command;
- ``<!-- needs: PATH -->``: skipped where PATH (from the repository root) is absent;
- ``<!-- flink: REASON -->``: needs ``.venv-flink`` and Java and runs for minutes (a
  Flink job, a cluster): run only when ``UDF_FLINK_DOCS=1``, as scripts/test-flink.sh
  does once it has made ``.venv-flink``, with a timeout of ``FLINK_TIMEOUT``;
  skipped otherwise, saying so.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import pytest

from ..helpers import ROOT, TIMEOUT

FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "README.md"]
FENCE = re.compile(r"^(?:<!-- (?P<marker>[^\n]*?) -->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$", re.S | re.M)
MARKER = re.compile(r"(?P<kind>not run|check|needs|flink): (?P<arg>.+)")
COMMAND_LANGS = ("sh", "console")
#: Seconds a ``flink:`` block may take (a cluster starts in a minute on a loaded machine).
FLINK_TIMEOUT = 600


@dataclass(frozen=True)
class Block:
    where: str  # "docs/cli.md:6"
    lang: str
    body: str
    marker: tuple[str, str] | None


def blocks() -> list[Block]:
    found = []
    for path in FILES:
        text = path.read_text()
        for m in FENCE.finditer(text):
            marker = None
            if m.group("marker") is not None:
                parsed = MARKER.fullmatch(m.group("marker"))
                marker = (parsed.group("kind"), parsed.group("arg")) if parsed else ("?", m.group("marker"))
            line = text.count("\n", 0, m.start("lang")) + 1
            found.append(Block(f"{path.relative_to(ROOT)}:{line}", m.group("lang"), m.group("body"), marker))
    return found


COMMAND_BLOCKS = [b for b in blocks() if b.lang in COMMAND_LANGS]


def _param(block: Block) -> object:
    slow = block.marker is not None and block.marker[0] == "flink"
    return pytest.param(block, id=block.where, marks=[pytest.mark.timeout(FLINK_TIMEOUT + 60)] if slow else [])


def bash(script: str, timeout: float = TIMEOUT * 3) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def console_commands(body: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` pairs of a console block."""
    pairs: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        else:
            assert pairs, f"output before any command: {line!r}"
            pairs[-1][1].append(line)
    # A blank line separates one command's output from the next command.
    return [(cmd, "".join(f"{line}\n" for line in out).rstrip("\n") + "\n" if out else "") for cmd, out in pairs]


@pytest.mark.parametrize("block", [_param(b) for b in COMMAND_BLOCKS])
def test_command_block_works_as_written(block: Block) -> None:
    kind, arg = block.marker or ("", "")
    if kind == "not run":
        pytest.skip(f"{block.where} is marked not run: {arg}")
    if kind == "needs" and not (ROOT / arg).exists():
        pytest.skip(f"{block.where} needs {arg}, which is absent")
    if kind == "flink":
        if os.environ.get("UDF_FLINK_DOCS") != "1":
            pytest.skip(
                f"{block.where} needs .venv-flink and Java ({arg}): scripts/test-flink.sh runs it (UDF_FLINK_DOCS=1)"
            )
        assert (ROOT / ".venv-flink" / "bin" / "python").exists(), (
            "UDF_FLINK_DOCS=1 but no .venv-flink: run scripts/test-flink.sh"
        )
        done = bash(block.body, timeout=FLINK_TIMEOUT)
        assert done.returncode == 0, f"{block.where}:\n{block.body}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv: the README's set-up command has not been run here")
    if kind == "check":
        args = arg.split(" (", 1)[0]
        for line in block.body.splitlines():
            done = bash(f"{line} {args}")
            assert done.returncode == 0, f"{block.where}: {line} {args}\n{done.stderr}"
            assert done.stdout, f"{block.where}: {line} {args} printed nothing"
        return
    if block.lang == "sh":
        done = bash(block.body)
        assert done.returncode == 0, f"{block.where}:\n{block.body}\n{done.stderr}"
        return
    for command, expected in console_commands(block.body):
        done = bash(command)
        assert done.returncode == 0, f"{block.where}: {command}\n{done.stderr}"
        assert done.stdout == expected, f"{block.where}: {command}"


def test_markers_are_known_and_give_their_reason() -> None:
    for block in blocks():
        if block.marker is None:
            continue
        kind, arg = block.marker
        assert kind in ("not run", "check", "needs", "flink"), f"{block.where}: unknown marker {arg!r}"
        assert block.lang in COMMAND_LANGS, f"{block.where}: a marker on a block that is not a command block"
        if kind == "check":
            assert re.fullmatch(r"\S.* \(.+\)", arg), f"{block.where}: say why it is only checked: ARGS (REASON)"


def test_commands_use_the_venvs_python() -> None:
    """A bare python in a fresh shell has no protobuf: the UDF would die with "No module named 'google'"."""
    bare = re.compile(r"(^|[\s;|&(])(python3?)(\s|$)")
    for block in COMMAND_BLOCKS:
        for line in block.body.splitlines():
            if block.lang == "console" and not line.startswith("$ "):
                continue
            assert not bare.search(line), f"{block.where}: {line!r} runs a bare python; use .venv/bin/python"


def test_there_are_commands_to_run() -> None:
    runnable = [b for b in COMMAND_BLOCKS if b.marker is None or b.marker[0] == "needs"]
    assert len(runnable) >= 3, [b.where for b in COMMAND_BLOCKS]
