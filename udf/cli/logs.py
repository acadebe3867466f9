"""The CLI's log lines on stderr, each error said once.

Three parties may report the same failure: an agent built on ``udf.agent`` (or
Kapacitor's Python agent) logs ``error processing request of type K: ...``
before it sends that text as an ``ErrorResponse``; the host's server logs the
``AgentError`` (or keepalive timeout) that it also raises; and the CLI's last
line ``udf: error: the UDF failed: ...`` says it again. The handler holds back
the first two kinds of record and, when the final line is written, drops those
whose text it carries and shows the others.
"""

from __future__ import annotations

import logging
from typing import IO

from ..errors import UDFError

__all__ = ["ConsoleHandler", "make_logger"]

#: How an agent (ours or Kapacitor's) words the error it reports to the host.
AGENT_ERROR_MARK = "error processing request of type "


class ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stderr handler that holds back records repeating the error the CLI reports last."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self._held: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if _reported_error(record) is not None:
            self._held.append(record)  # handle() holds the handler's lock
            return
        super().emit(record)

    def show_held(self, final_line: str | None = None) -> None:
        """Show the held records, except those whose error ``final_line`` carries."""
        self.acquire()
        try:
            held, self._held = self._held, []
            for record in held:
                text = _reported_error(record)
                if final_line is None or text is None or text not in final_line:
                    super().emit(record)
        finally:
            self.release()


def _reported_error(record: logging.LogRecord) -> str | None:
    """The error text of a record that repeats an error the host raises, else None."""
    if record.levelno < logging.ERROR or not isinstance(record.args, tuple) or len(record.args) != 1:
        return None
    arg = record.args[0]
    if isinstance(arg, UDFError):  # the server logs the error it raises
        return str(arg)
    if isinstance(arg, str):  # a line of the agent's stderr, e.g. "udf.agent: error processing ..."
        start = arg.find(AGENT_ERROR_MARK)
        if start >= 0:
            return arg[start:]
    return None


def make_logger(stderr: IO[str], verbose: bool, quiet: bool) -> tuple[logging.Logger, ConsoleHandler]:
    """The ``udf.cli`` logger (given to the UDF's transport too) and its stderr handler."""
    logger = logging.getLogger("udf.cli")
    logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    handler = ConsoleHandler(stderr)
    handler.setFormatter(logging.Formatter("%(levelname).1s! %(message)s"))
    logger.addHandler(handler)
    return logger, handler
