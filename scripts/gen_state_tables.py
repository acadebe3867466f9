"""Write (or check) the state tables in the docs from the code's transition tables.

Every table registered with ``udf.lifecycle.transition_table`` is rendered
between its markers in any Markdown file under ``docs/``::

    <!-- BEGIN state table: udf.Server -->
    ...generated...
    <!-- END state table: udf.Server -->

    python scripts/gen_state_tables.py          # rewrite the docs
    python scripts/gen_state_tables.py --check  # exit 1 if a doc differs or a table is in no doc
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import pkgutil
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import udf  # noqa: E402
from udf.lifecycle import TABLES, render_markdown  # noqa: E402

_BLOCK = re.compile(
    r"(<!-- BEGIN state table: (?P<name>[\w.]+) -->\n)(?P<body>.*?)(<!-- END state table: (?P=name) -->)", re.S
)


def load_tables() -> None:
    """Import every module of the package, so that each registers its table (optional extras may be missing)."""
    for module in pkgutil.walk_packages(udf.__path__, "udf."):
        try:
            importlib.import_module(module.name)
        except ImportError:
            pass  # an optional extra (beam, flink, ...) that is not installed: it holds no table


def generate(text: str, seen: dict[str, int]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in TABLES:
            raise SystemExit(f"docs name an unknown state table {name!r}; known: {', '.join(sorted(TABLES))}")
        seen[name] = seen.get(name, 0) + 1
        return match.group(1) + render_markdown(TABLES[name]) + match.group(4)

    return _BLOCK.sub(replace, text)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if any doc is out of date")
    args = parser.parse_args(argv)
    load_tables()
    seen: dict[str, int] = {}
    stale = []
    for path in sorted((ROOT / "docs").rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        new = generate(text, seen)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new, encoding="utf-8")
    missing = sorted(set(TABLES) - set(seen))
    for name in missing:
        print(f"state table {name} appears in no doc: add its markers to one", file=sys.stderr)
    if args.check:
        for path in stale:
            print(f"{path}: state tables differ from the code: run python scripts/gen_state_tables.py", file=sys.stderr)
        return 1 if stale or missing else 0
    for path in stale:
        print(f"rewrote {path}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
