"""InfluxDB line protocol for the command-line tool: read with a maintained parser, write by hand.

Reading uses the ``line-protocol-parser`` package (a C parser that follows
InfluxDB 1.x line protocol; the ``cli`` extra), wrapped here to skip blank
and ``#`` comment lines, apply a timestamp precision, fill in a missing
timestamp, check int64 ranges and report the line number of a bad line.
Writing escapes as InfluxDB 1.x reads it: measurement ``,`` and space; tag keys,
tag values and field keys ``,``, ``=`` and space; string fields ``"`` and ``\\``;
integers get an ``i`` suffix, booleans are ``true``/``false``, times are ns.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .extras import install_hint
from .models import INT64_MAX, INT64_MIN, Fields, FieldValue, Tags
from .wire import excerpt

__all__ = [
    "ParsedLine",
    "LineProtocolError",
    "MIN_TIME",
    "MAX_TIME",
    "PRECISIONS",
    "parse_line",
    "read_lines",
    "format_line",
    "escape_measurement",
    "escape_key",
    "escape_string_field",
    "format_field_value",
]

#: InfluxDB's valid timestamps (models.MinNanoTime, MaxNanoTime): int64 less two
#: reserved values at each end; the parser refuses the others too.
MIN_TIME = INT64_MIN + 2
MAX_TIME = INT64_MAX - 1

#: Timestamp precisions (InfluxDB's names and Go-style aliases) to nanoseconds.
PRECISIONS: dict[str, int] = {
    "ns": 1,
    "n": 1,
    "us": 1_000,
    "u": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}

_parser: Callable[[str], Any] | None = None
_parser_error: type[Exception] = ValueError


class MissingExtraError(ImportError):
    """An optional dependency (the ``cli`` extra) is not installed."""


def _load_parser() -> Callable[[str], Any]:
    """Import ``line_protocol_parser`` on first use, with an install hint if it is missing."""
    global _parser, _parser_error
    if _parser is None:
        try:
            import line_protocol_parser  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError:
            raise MissingExtraError(
                f"reading line protocol needs the line-protocol-parser package: {install_hint('cli')}"
            ) from None
        _parser_error = line_protocol_parser.LineFormatError
        _parser = line_protocol_parser.parse_line
    return _parser


@dataclass(slots=True)
class ParsedLine:
    """One point of line protocol; ``time`` is ns, or None when the line had no timestamp."""

    measurement: str
    tags: Tags = field(default_factory=dict)
    fields: Fields = field(default_factory=dict)
    time: int | None = None


class LineProtocolError(ValueError):
    """A line of input is not valid line protocol; says where and why."""

    def __init__(self, source: str, lineno: int, reason: str, line: str) -> None:
        shown = line if len(line) <= 120 else line[:117] + "..."
        if not shown.isprintable():  # binary input: a short escaped excerpt, never echoed raw
            shown = excerpt(line.encode("utf-8", "surrogateescape"))
        super().__init__(f"{source}:{lineno}: bad line protocol: {reason}: {shown}")
        self.source = source
        self.lineno = lineno
        self.reason = reason
        self.line = line


def parse_line(line: str, precision: str = "ns") -> ParsedLine | None:
    """Parse one line; None for a blank or ``#`` comment line; ``ValueError`` saying why if invalid.

    ``precision`` scales the timestamp to nanoseconds.
    """
    text = line.rstrip("\r\n")
    lead = text.lstrip(" \t")  # the only whitespace line protocol skips
    if not lead.rstrip(" \t") or lead.startswith("#"):
        return None
    parse = _load_parser()
    try:
        data = parse(text)
    except _parser_error as exc:
        raise ValueError(str(exc).rstrip(".").lower() or "invalid line") from None
    if data is None:  # the parser's own comment handling
        return None
    fields: Fields = data["fields"]
    for key, value in fields.items():
        if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"field {key!r}: integer {value} does not fit in int64")
    ts: int | None = data["time"]
    if ts is not None:
        try:
            scale = PRECISIONS[precision]
        except KeyError:
            raise ValueError(f"unknown precision {precision!r}") from None
        ts *= scale
        if not INT64_MIN <= ts <= INT64_MAX:
            raise ValueError(f"timestamp {data['time']} ({precision}) does not fit in int64 nanoseconds")
    return ParsedLine(data["measurement"], data["tags"], fields, ts)


def read_lines(
    lines: Iterable[str | bytes],
    source: str = "<stdin>",
    precision: str = "ns",
    now: Callable[[], int] = time.time_ns,
    start: int = 1,
) -> Iterator[tuple[int, ParsedLine]]:
    """Yield ``(line number, point)`` for every point in ``lines``; time always set.

    A line without a timestamp gets ``now()`` (the time it was read, as InfluxDB
    stamps such points with the server's clock). The first bad line raises
    :class:`LineProtocolError` with ``source`` and its line number. Lines may be
    ``bytes`` (decoded as UTF-8, a decoding error being a bad line) or ``str``.
    """
    lineno = start - 1
    for item in lines:
        lineno += 1
        if isinstance(item, bytes):
            try:
                raw = item.decode("utf-8")
            except UnicodeDecodeError as exc:
                shown = item.rstrip(b"\r\n").decode("utf-8", "replace")
                reason = f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
                raise LineProtocolError(source, lineno, reason, shown) from None
        else:
            raw = item
        try:
            point = parse_line(raw, precision)
        except ValueError as exc:
            raise LineProtocolError(source, lineno, str(exc), raw.rstrip("\r\n")) from None
        if point is None:
            continue
        if point.time is None:
            point.time = now()
        yield lineno, point


# --- writing ---------------------------------------------------------------------

_MEASUREMENT_ESCAPES = str.maketrans({",": "\\,", " ": "\\ "})
_KEY_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})
_BACKSLASH_SPECIAL = re.compile(r"\\[,= ]")


def _check_identifier(kind: str, text: str) -> None:
    if not text:
        raise ValueError(f"{kind} is empty: line protocol cannot write it")
    if "\n" in text or "\r" in text:
        raise ValueError(f"{kind} {text!r} contains a line break: line protocol cannot write it")
    if "\0" in text:
        raise ValueError(f"{kind} {text!r} contains a NUL character: line protocol cannot write it")
    if text.endswith("\\"):
        raise ValueError(f"{kind} {text!r} ends with a backslash: line protocol cannot write it")


@functools.lru_cache(maxsize=4096)
def escape_measurement(name: str) -> str:
    """A measurement name with ``,`` and spaces escaped; ``ValueError`` if unrepresentable."""
    _check_identifier("measurement", name)
    if name.startswith("#"):
        raise ValueError(f"measurement {name!r} starts with '#': line protocol would read a comment")
    if name.startswith("\t"):
        raise ValueError(f"measurement {name!r} starts with a tab: line protocol would skip it")
    return name.translate(_MEASUREMENT_ESCAPES)


@functools.lru_cache(maxsize=16384)
def escape_key(text: str, kind: str = "tag") -> str:
    """A tag key, tag value or field key with ``,``, ``=`` and spaces escaped."""
    _check_identifier(kind, text)
    if kind == "field key" and _BACKSLASH_SPECIAL.search(text):
        # In a field key InfluxDB 1.x scans "\\" as an escaped backslash but does
        # not unescape it, so a backslash before , = or space cannot be written.
        raise ValueError(f"field key {text!r} has a backslash before ',', '=' or ' ': line protocol cannot write it")
    return text.translate(_KEY_ESCAPES)


def escape_string_field(value: str) -> str:
    """A string field value, quoted, with ``\\`` and ``"`` escaped."""
    if "\0" in value:
        raise ValueError("a string field with a NUL character cannot be written in line protocol")
    return '"' + value.translate(_STRING_ESCAPES) + '"'


def format_field_value(key: str, value: FieldValue) -> str:
    """One field value in line protocol: ``1.5``, ``3i``, ``true``, ``"text"``."""
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise ValueError(f"field {key!r}: {value!r} cannot be written in line protocol")
        return repr(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return f"{value}i"
    if kind is str:
        return escape_string_field(value)  # type: ignore[arg-type]
    raise TypeError(f"field {key!r}: unsupported value type {kind.__name__}")


def format_line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], time_ns: int) -> str:
    """One point as a line of line protocol (no newline); tags and fields sorted by key, as InfluxDB does.

    Tags with an empty value are left out (InfluxDB treats them as absent).
    Raises ``ValueError`` for what line protocol cannot carry: no fields, an empty
    name, a line break or a trailing backslash in a name, a NaN or infinite float,
    a time outside InfluxDB's range (:data:`MIN_TIME`..:data:`MAX_TIME`).
    """
    if not fields:
        raise ValueError("a point without fields cannot be written in line protocol")
    if not MIN_TIME <= time_ns <= MAX_TIME:
        raise ValueError(f"time {time_ns} is outside InfluxDB's range of timestamps")
    parts = [escape_measurement(measurement)]
    for key in sorted(tags):
        if tags[key] == "":
            continue  # InfluxDB: a tag with an empty value is no tag
        parts.append(f"{escape_key(key, 'tag key')}={escape_key(tags[key], 'tag value')}")
    head = ",".join(parts)
    keys = sorted(fields)
    if keys[0].startswith("\t"):  # sorted: a tab sorts first; one leading the fields is skipped
        raise ValueError(f"field key {keys[0]!r} starts with a tab: line protocol would skip it")
    body = ",".join(f"{escape_key(k, 'field key')}={format_field_value(k, fields[k])}" for k in keys)
    return f"{head} {body} {time_ns}"
