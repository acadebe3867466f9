"""The command line both fuzzers share: atheris when installed, else a seeded loop."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def fuzz_main(
    argv: list[str],
    description: str,
    target: Callable[[bytes], object],
    run_loop: Callable[[int, int], int],
    done: Callable[[int], str],
    default_iterations: int,
) -> int:
    """Run ``target`` under atheris (coverage-guided), or ``run_loop(iterations, seed)`` with ``--loop``
    or without atheris, printing ``done(iterations)``."""
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        atheris = None
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--iterations", type=int, default=default_iterations)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loop", action="store_true", help="use the seeded loop even if atheris is installed")
    args, rest = parser.parse_known_args(argv)
    if atheris is not None and not args.loop:
        atheris.Setup([sys.argv[0], *rest], lambda data: target(bytes(data)))
        atheris.Fuzz()
        return 0
    print(done(run_loop(args.iterations, args.seed)))
    return 0
