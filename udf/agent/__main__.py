"""``python -m udf.agent MODULE:FACTORY [--socket ADDR] [--log-level LEVEL] [--max-* ...] [--tls-* ...]``.

Runs :func:`udf.agent.main` for a handler named by import path, e.g.
``python -m udf.agent mymodule:MyHandler`` (the current directory is on the
path): a ``Handler`` subclass, or any callable taking the agent and returning
a handler.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from .command import main
from .handler import HandlerFactory

USAGE = (
    "usage: python -m udf.agent MODULE:FACTORY [--socket ADDR] [--log-level LEVEL]\n"
    "       [--max-connections N] [--first-request-timeout SECONDS] [--max-buffered-bytes N]\n"
    "       [--tls-cert FILE [--tls-key FILE]] [--tls-ca FILE] [--tls-require-client-cert]\n"
    "(MODULE:FACTORY --help describes every option)"
)


def load_factory(spec: str) -> HandlerFactory:
    """The handler factory ``MODULE:NAME`` names; ``ValueError`` saying what is wrong."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"expected MODULE:FACTORY, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ValueError(f"{module_name!r} has no callable {name!r}")
    result: HandlerFactory = factory
    return result


def run(argv: Sequence[str] | None = None) -> int:
    """The entry point; returns the exit status (2 for a usage error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    try:
        factory = load_factory(args[0])
    except ValueError as exc:
        print(f"{USAGE}\nerror: {exc}", file=sys.stderr)
        return 2
    return main(factory, args[1:])


if __name__ == "__main__":
    sys.exit(run())
