"""``python -m udf``: the command-line tool (see :mod:`udf.cli` and docs/cli.md)."""

import sys

from .cli import console_main

if __name__ == "__main__":
    sys.exit(console_main())
