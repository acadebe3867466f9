"""The CLI's exit codes and the error that carries one."""

from __future__ import annotations

__all__ = [
    "CLIError",
    "EXIT_OK",
    "EXIT_UDF_FAILED",
    "EXIT_USAGE",
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_BROKEN_PIPE",
    "EXIT_CODES",
]

EXIT_OK = 0
EXIT_UDF_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

#: Each exit code and what it means, for ``--help`` and docs/cli.md.
EXIT_CODES = (
    (EXIT_OK, "ok"),
    (EXIT_UDF_FAILED, "the UDF failed"),
    (EXIT_USAGE, "usage, option or configuration error"),
    (EXIT_BAD_INPUT, "a bad input line"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
    (EXIT_BROKEN_PIPE, "stdout closed (e.g. | head)"),
)


class CLIError(Exception):
    """An error the tool reports as ``udf: error: MESSAGE`` with exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code
