"""What the CLI writes: the UDF's output as line protocol, info, and its error lines."""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import IO, Any, BinaryIO

import agent_pb2

from ..channel import Channel
from ..convert import Info
from ..errors import ChannelClosed
from ..lineprotocol import format_line
from ..models import Batch, Point
from .options import type_name

__all__ = ["Output", "drain", "print_info", "report", "isatty", "EDGE_NAMES"]

EDGE_NAMES = {agent_pb2.STREAM: "stream", agent_pb2.BATCH: "batch"}


class Output:
    """Line protocol to stdout from the drain threads: serialized, counted, failure-aware."""

    MAX_WARNINGS = 5

    def __init__(self, stream: IO[Any], logger: logging.Logger) -> None:
        binary = getattr(stream, "buffer", None)
        self._binary: BinaryIO | None = binary if binary is not None else None
        self._text = stream
        self._logger = logger
        self._lock = threading.Lock()
        self.written = 0
        self.skipped = 0
        self.error: BaseException | None = None

    def write_lines(self, lines: list[str]) -> None:
        if not lines or self.error is not None:
            return
        data = "\n".join(lines) + "\n"
        with self._lock:
            if self.error is not None:
                return
            try:
                if self._binary is not None:
                    self._binary.write(data.encode("utf-8"))
                else:
                    self._text.write(data)
                self.written += len(lines)
            except (OSError, ValueError) as exc:
                self.error = exc

    def flush(self) -> None:
        with self._lock:
            if self.error is not None:
                return
            try:
                if self._binary is not None:
                    self._binary.flush()
                self._text.flush()
            except (OSError, ValueError) as exc:
                self.error = exc

    def skip(self, reason: str) -> None:
        with self._lock:
            self.skipped += 1
            n = self.skipped
        if n <= self.MAX_WARNINGS:
            self._logger.warning("skipping an output point: %s", reason)

    def format_point(self, p: Point) -> str | None:
        try:
            return format_line(p.name, p.tags, p.fields, p.time)
        except (TypeError, ValueError) as exc:
            self.skip(str(exc))
            return None

    def format_batch(self, b: Batch) -> list[str]:
        lines = []
        for bp in b.points:
            tags = {**b.tags, **bp.tags} if b.tags else bp.tags
            try:
                lines.append(format_line(b.name, tags, bp.fields, bp.time))
            except (TypeError, ValueError) as exc:
                self.skip(str(exc))
        return lines


#: Seconds without a new item after which what was written is flushed to stdout.
IDLE_FLUSH = 0.05


def drain(channel: Channel[Any], output: Output, is_batch: bool, on_error: Any) -> None:
    """Write everything a UDF output channel delivers until it closes.

    Output is flushed whenever the UDF has been quiet for :data:`IDLE_FLUSH`
    seconds after writing (and at the end), so a reader at the other end of a
    pipe sees each answer soon after it came, not only when a buffer fills.
    With nothing unflushed, the wait has no timeout.
    """
    unflushed = False
    while True:
        try:
            item = channel.get(timeout=IDLE_FLUSH if unflushed else None)
        except queue.Empty:  # woken by the timeout: quiet since the last write
            output.flush()
            unflushed = False
            continue
        except ChannelClosed:
            break
        unflushed = True
        if is_batch:
            output.write_lines(output.format_batch(item))
        else:
            line = output.format_point(item)
            if line is not None:
                output.write_lines([line])
        if output.error is not None:
            on_error(output.error)
            # Keep draining (and discarding) so the UDF can always finish.
    output.flush()


def print_info(info: Info, as_json: bool, out: IO[str]) -> None:
    if as_json:
        doc = {
            "wants": EDGE_NAMES.get(info.wants, str(info.wants)),
            "provides": EDGE_NAMES.get(info.provides, str(info.provides)),
            "options": {name: [type_name(t) for t in info.options[name].valueTypes] for name in sorted(info.options)},
        }
        out.write(json.dumps(doc, indent=2) + "\n")
        return
    lines = [
        f"wants: {EDGE_NAMES.get(info.wants, info.wants)}",
        f"provides: {EDGE_NAMES.get(info.provides, info.provides)}",
    ]
    if info.options:
        lines.append("options:")
        width = max(len(name) for name in info.options)
        for name in sorted(info.options):
            types = ", ".join(type_name(t) for t in info.options[name].valueTypes) or "(no value)"
            lines.append(f"  {name:<{width}}  {types}")
    else:
        lines.append("options: none")
    out.write("\n".join(lines) + "\n")
    out.flush()


def report(stderr: IO[str], message: str) -> None:
    try:
        stderr.write(f"udf: error: {message}\n")
        stderr.flush()
    except (OSError, ValueError):
        pass


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
