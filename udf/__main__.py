"""``python -m udf``: the command-line tool (see :mod:`udf.cli`)."""

from __future__ import annotations

import os
import sys

from .cli import EXIT_BROKEN_PIPE, main


def _run() -> int:
    code = main()
    if code == EXIT_BROKEN_PIPE:
        # stdout's reader went away: stop Python's final flush from complaining.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return code


if __name__ == "__main__":
    sys.exit(_run())
