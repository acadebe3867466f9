"""The hand-written fast path of the Response decoder (private to :mod:`udf.convert`).

A point frame that comes back from an agent is mostly bytes seen before: its
*series* (name, database, retention policy, group, dimensions, tags, byName)
repeats from point to point, and so does the *layout* of the rest (which field
keys, in which order, with which value types and sizes); only the time and the
values change. So a point is decoded with three lookups and one unpack:

1. the frame head (sizes and the ``Response.point`` tag) is looked up in a
   cache of heads seen before, giving where the body starts;
2. the series: the span after an optional leading time is looked up in a
   cache of spans seen before (one slice and one dict lookup per known span
   length), giving its decoded strings, dimensions and tags;
3. the layout: the rest of the body (the *tail*: time, field map entries,
   byName) is compared with the known layouts of its length as one integer
   under a mask, which checks every byte that is not a value (tags, lengths,
   keys, the continuation bits of varints) at once; ``struct`` unpacks every
   value in one call, and a small function compiled for the layout builds the
   point from them.

Anything else (a field elsewhere, a key twice, a long entry, a negative
varint, a malformed frame) makes :func:`decode_point_frame` return ``None``:
the caller takes protobuf's own parse and then calls :func:`learn`, which
walks that frame and records its head, series span and tail layout.

Correctness does not depend on a hit: a span is recorded only as a run of
whole series fields (so the bytes after it start a field), a tail must equal a
layout byte for byte outside its values, and the values a layout accepts (any
eight bytes of a double, varints of the recorded length with their
continuation bits, strings that decode as UTF-8) are exactly those protobuf
accepts there. ``tests/test_fast_decode.py`` and ``fuzz/fuzz_codec.py``
compare this path with protobuf's parse on both backends.

Every cache is bounded (emptied when full): :data:`SERIES_CACHE_SIZE`
spans, :data:`LAYOUT_CACHE_SIZE` layouts, :data:`HEAD_CACHE_SIZE` heads.
Traffic that never repeats (every series new, map entries in random order)
would pay for learning on every point, so the hand path is tried per window
of :data:`WINDOW` frames only while it hits (:func:`fast_read`).
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Dict, List, Optional, Tuple

import agent_pb2

from .models import BatchPoint, Dimensions, Point

#: Series spans kept (each with its decoded strings, dimensions and tags) before the cache is emptied.
SERIES_CACHE_SIZE = 4096
#: Distinct series span lengths tried per point, most recently learned first.
SPAN_LENGTHS = 8
#: Tail layouts kept before the cache is emptied.
LAYOUT_CACHE_SIZE = 1024
#: Frame heads kept before the cache is emptied.
HEAD_CACHE_SIZE = 4096
#: Frames per window: the hand path is kept for the next window while at most
#: a quarter of a window's frames missed it, else only :data:`PROBE` frames of
#: each window try it (and learn).
WINDOW = 4096
PROBE = 128

_PbPoint = agent_pb2.Point

# Tags (field number << 3 | wire type) of agent.Point.
_TIME = 0x08  # 1, varint
_SERIES_TAGS = frozenset((0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A))  # 2..7, length-delimited
_DOUBLES = 0x42  # 8, map<string, double>
_INTS = 0x4A  # 9, map<string, int64>
_STRINGS = 0x52  # 10, map<string, string>
_BY_NAME = 0x58  # 11, bool
_BOOLS = 0x62  # 12, map<string, bool>
_MAPS = frozenset((_DOUBLES, _INTS, _STRINGS, _BOOLS))

#: Bytes of a frame that its head cache key covers: a two-byte size, the
#: ``Response.point`` tag, a two-byte body size and the body's first byte.
_HEAD_KEY = 7


# --- varints ---------------------------------------------------------------------------

_NINE = struct.Struct("<QB")  # a nine-byte varint as its first eight bytes and its last


def nine_byte_varint(first8: int, last: int) -> int:
    """The value of a nine-byte varint given as ``struct`` ``<QB`` (continuation bits already checked).

    The seven-bit groups are squeezed together in three steps on the whole
    integer. A time (ns from 1972 to 2262) is always nine bytes.
    """
    x = first8 & 0x7F7F7F7F7F7F7F7F
    x = (x & 0x007F007F007F007F) | (x >> 1 & 0x3F803F803F803F80)
    x = (x & 0x00003FFF00003FFF) | (x >> 2 & 0x0FFFC0000FFFC000)
    return (x & 0x0FFFFFFF) | (x >> 4 & 0x00FFFFFFF0000000) | last << 56


def varint_value(data: bytes) -> int:
    """The value of ``data``, one whole varint of at most nine bytes (so below 2**63)."""
    if len(data) == 9:
        return nine_byte_varint(*_NINE.unpack(data))
    value = 0
    for i, byte in enumerate(data):
        value |= (byte & 0x7F) << (7 * i)
    return value


def _varint_end(data: bytes, pos: int, limit: int) -> int:
    """The end of the varint at ``pos`` if it ends within ``limit`` bytes and before the data does, else -1."""
    for end in range(pos, min(pos + limit, len(data))):
        if data[end] < 0x80:
            return end + 1
    return -1


def _one_byte_length(data: bytes, pos: int) -> int:
    """The byte at ``pos`` if it is a one-byte varint, else -1."""
    return data[pos] if pos < len(data) and data[pos] < 0x80 else -1


# --- tail layouts ----------------------------------------------------------------------

#: The generated builder's signature: (values, series, frame, body start, leading time?, batch?) -> point.
Builder = Callable[[Tuple[Any, ...], "Series", bytes, int, bool, bool], Any]

_BUILDER_GLOBALS = {
    "Point": Point,
    "BatchPoint": BatchPoint,
    "Dimensions": Dimensions,
    "varint_value": varint_value,
    "nine_byte_varint": nine_byte_varint,
    "unpack_nine": _NINE.unpack_from,
}


class _Layout:
    """One known tail shape: which bits of it are fixed, how to unpack its values, and how to build the point."""

    __slots__ = ("mask", "expected", "unpack", "build", "source")

    def __init__(self, mask: int, expected: int, fmt: str, source: str) -> None:
        self.mask = mask
        self.expected = expected
        self.unpack = struct.Struct(fmt).unpack
        self.source = source  # kept for debugging: repr() shows it
        namespace: Dict[str, Any] = dict(_BUILDER_GLOBALS)
        exec(compile(source, "<udf._fastdecode layout>", "exec"), namespace)
        self.build: Builder = namespace["build"]

    def __repr__(self) -> str:
        return f"<layout\n{self.source}>"


def _builder_source(fields: List[Tuple[str, str]], time: Optional[str], by_name: Optional[str]) -> str:
    """The source of a layout's builder: a dict display of the fields and one constructor call.

    ``fields`` are (key, expression) in wire order; keys are written with
    ``repr``, so any string is a safe literal.
    """
    lines = [
        "def build(v, series, frame, body, leading, batch):",
        "    name, database, rp, group, by_name, dims, tags = series",
        "    fields = {" + ", ".join(f"{key!r}: {expr}" for key, expr in fields) + "}",
    ]
    if time is not None:  # a time in the tail is the later one: it wins
        lines.append(f"    t = {time}")
    else:
        lines.append("    t = nine_byte_varint(*unpack_nine(frame, body + 1)) if leading else 0")
    lines.append("    if batch:")
    lines.append("        return BatchPoint(t, fields, tags.copy())")
    if by_name is not None:
        lines.append(f"    by_name = {by_name}")
    lines.append("    return Point(name, database, rp, group, Dimensions(by_name, list(dims)), tags.copy(), fields, t)")
    return "\n".join(lines) + "\n"


def _layout_of(tail: bytes) -> Optional[_Layout]:
    """The layout of ``tail`` (time, field map entries, byName, canonical encodings), or None if it has another shape."""
    mask = bytearray(len(tail))
    expected = bytearray(len(tail))
    fmt = ["<"]
    done = 0  # tail bytes already described by fmt
    slots = 0  # values unpacked so far
    fields: List[Tuple[str, str]] = []
    time = by_name = None

    def literal(start: int, end: int) -> None:
        mask[start:end] = b"\xff" * (end - start)
        expected[start:end] = tail[start:end]

    def value(start: int, end: int, code: str, varint: bool) -> str:
        """Describe the value bytes [start, end) with struct ``code``; return the builder's name for it."""
        nonlocal done, slots
        if varint:  # the continuation bits are checked by the mask
            for i in range(start, end):
                mask[i] = 0x80
                expected[i] = 0x80 if i < end - 1 else 0
        if start > done:
            fmt.append(f"{start - done}x")
        fmt.append(code)
        done = end
        slots += 2 if code == "QB" else 1
        if code == "QB":
            return f"nine_byte_varint(v[{slots - 2}], v[{slots - 1}])"
        return f"v[{slots - 1}]"

    def varint(start: int, end: int) -> str:
        n = end - start
        if n == 1:
            return value(start, end, "B", True)
        if n == 2:
            v = value(start, end, "H", True)
            return f"({v} & 0x7F | {v} >> 8 << 7)"
        if n == 9:
            return value(start, end, "QB", True)
        return f"varint_value({value(start, end, f'{n}s', True)})"

    pos = 0
    while pos < len(tail):
        tag = tail[pos]
        if tag == _TIME or tag == _BY_NAME:
            end = _varint_end(tail, pos + 1, 9 if tag == _TIME else 1)
            if end < 0:
                return None
            literal(pos, pos + 1)
            if tag == _TIME:
                time = varint(pos + 1, end)
            else:
                by_name = value(pos + 1, end, "?", True)
            pos = end
            continue
        if tag not in _MAPS:
            return None
        size = _one_byte_length(tail, pos + 1)
        key_size = _one_byte_length(tail, pos + 3)
        end = pos + 2 + size
        value_at = pos + 4 + key_size  # the value's tag byte
        if size < 0 or key_size < 0 or end > len(tail) or tail[pos + 2] != 0x0A or value_at >= end:
            return None
        try:
            key = tail[pos + 4 : value_at].decode("utf-8")
        except UnicodeDecodeError:
            return None
        value_tag = tail[value_at]
        if tag == _DOUBLES:
            if value_tag != 0x11 or end - value_at != 9:
                return None
            literal(pos, value_at + 1)
            expr = value(value_at + 1, end, "d", False)
        elif tag == _BOOLS:
            if value_tag != 0x10 or end - value_at != 2:
                return None
            literal(pos, value_at + 1)
            expr = value(value_at + 1, end, "?", True)
        elif tag == _INTS:
            if value_tag != 0x10 or _varint_end(tail, value_at + 1, 9) != end:
                return None
            literal(pos, value_at + 1)
            expr = varint(value_at + 1, end)
        else:  # strings; a value that is not UTF-8 raises UnicodeDecodeError in the builder
            if value_tag != 0x12 or _one_byte_length(tail, value_at + 1) != end - value_at - 2:
                return None
            literal(pos, value_at + 2)
            expr = value(value_at + 2, end, f"{end - value_at - 2}s", False) + ".decode()"
        fields.append((key, expr))
        pos = end
    if len({key for key, _ in fields}) != len(fields):
        return None  # a key twice: which one wins is protobuf's business
    if done < len(tail):
        fmt.append(f"{len(tail) - done}x")
    return _Layout(
        int.from_bytes(mask, "little"),
        int.from_bytes(expected, "little"),
        "".join(fmt),
        _builder_source(fields, time, by_name),
    )


# --- the caches ------------------------------------------------------------------------

#: A series: name, database, retention policy, group, byName, dimensions, tags.
Series = Tuple[str, str, str, str, bool, Tuple[str, ...], Dict[str, str]]

#: Frame heads (the first :data:`_HEAD_KEY` bytes) -> (where the body starts, whether it starts with a time).
_HEADS: Dict[bytes, Tuple[int, bool]] = {}
_SERIES: Dict[bytes, Series] = {}
_SPAN_LENGTHS: List[int] = []
_LAYOUTS: Dict[int, List[_Layout]] = {}
_layout_count = 0


def decode_point_frame(frame: bytes, batch: bool) -> Any:
    """The :class:`Point` (or, inside a batch, :class:`BatchPoint`) of a ``Response{point}`` frame, or None.

    None means: take protobuf's path (then :func:`learn`). The hot path of
    every point read.
    """
    head = _HEADS.get(frame[:_HEAD_KEY])
    if head is None:
        return None
    at, leading = head
    if leading:  # a nine-byte time: eight bytes with the continuation bit, then one without
        if frame[at + 9] >= 0x80 or min(frame[at + 1 : at + 9]) < 0x80:
            return None
        start = at + 10
    else:
        start = at
    get = _SERIES.get
    for length in _SPAN_LENGTHS:  # a span may be a prefix of another (fewer tags): try each known length
        series = get(frame[start : start + length])
        if series is None:
            continue
        tail = frame[start + length :]
        layouts = _LAYOUTS.get(len(tail))
        if layouts is None:
            continue
        bits = int.from_bytes(tail, "little")
        for layout in layouts:
            if bits & layout.mask == layout.expected:
                try:
                    return layout.build(layout.unpack(tail), series, frame, at, leading, batch)
                except ValueError:  # a string that is not UTF-8: protobuf's path names it
                    return None
    return None


def _head_of(frame: bytes) -> Optional[Tuple[int, bool]]:
    """Where the body of a frame that is one ``Response{point}`` and nothing else starts, and whether it starts with a time.

    None for any other frame, and for sizes of three bytes or more (16 KiB).
    """
    # varint(size) 0x8a 0x01 varint(body size) body
    size = frame[0]
    if size < 0x80:
        at = 1
    elif len(frame) > 1 and frame[1] < 0x80:
        at = 2
        size = (size & 0x7F) | frame[1] << 7
    else:
        return None
    if size < 3 or frame[at] != 0x8A or frame[at + 1] != 0x01:
        return None
    body_size = frame[at + 2]
    if body_size < 0x80:
        head = 3
    elif size > 3 and frame[at + 3] < 0x80:
        head = 4
        body_size = (body_size & 0x7F) | frame[at + 3] << 7
    else:
        return None
    if body_size != size - head or not body_size:
        return None
    at += head
    leading = frame[at] == _TIME
    if leading and (len(frame) < at + 10 or frame[at + 9] >= 0x80 or min(frame[at + 1 : at + 9]) < 0x80):
        return None  # a time that is not nine bytes
    if at >= _HEAD_KEY:
        return None  # the cache key would not cover the body's first byte
    return at, leading


class _Window:
    """Whether reads try the hand path: decided per window of :data:`WINDOW` frames by the last one's misses."""

    __slots__ = ("fast", "seen", "tried", "missed")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.fast = True
        self.seen = self.tried = self.missed = 0


_WINDOW = _Window()


def fast_read(frames: int) -> bool:
    """Whether a read of ``frames`` frames should try the hand path (else protobuf's, in one parse).

    The hand path is tried while at most a quarter of the frames that tried it
    in the previous window missed; otherwise only the first :data:`PROBE`
    frames of a window try it (and learn), to notice when traffic turns regular.
    """
    window = _WINDOW
    if window.seen >= WINDOW:
        window.fast = window.tried > 0 and window.missed * 4 <= window.tried
        window.seen = window.tried = window.missed = 0
    window.seen += frames
    if window.fast or window.tried < PROBE:
        window.tried += frames
        return True
    return False


def missed(count: int) -> None:
    """Count frames of a hand-path read that took protobuf's path."""
    _WINDOW.missed += count


def learn(frame: bytes, decoded: Any) -> None:
    """Record the head, series span and tail layout of a point frame that protobuf decoded as ``decoded``.

    ``decoded`` is the :class:`Point` or :class:`BatchPoint` that protobuf's
    path made of ``frame``. A Point's series is taken from it (its tail holds
    no series field, or nothing is recorded); a BatchPoint's by parsing the span.
    """
    global _layout_count
    head = _head_of(frame)
    if head is None:
        return
    at, leading = head
    start = at + 10 if leading else at
    pos = start
    n = len(frame)
    span_by_name = False
    while pos < n:  # the series: a run of whole fields 2..7 (and byName)
        tag = frame[pos]
        if tag == _BY_NAME:
            if pos + 1 >= n or frame[pos + 1] >= 0x80:
                return
            span_by_name = frame[pos + 1] != 0
            pos += 2
            continue
        if tag not in _SERIES_TAGS:
            break
        end = _varint_end(frame, pos + 1, 3)
        if end < 0:
            return
        pos = end + varint_value(frame[pos + 1 : end])
        if pos > n:
            return
    span = frame[start:pos]
    tail = frame[pos:]
    layouts = _LAYOUTS.get(len(tail))
    if layouts is None or not any(int.from_bytes(tail, "little") & lay.mask == lay.expected for lay in layouts):
        layout = _layout_of(tail)
        if layout is None:
            return
        if _layout_count >= LAYOUT_CACHE_SIZE:
            _LAYOUTS.clear()
            _layout_count = 0
        _LAYOUTS.setdefault(len(tail), []).insert(0, layout)
        _layout_count += 1
    if span not in _SERIES:
        series = _series_of(span, span_by_name, decoded)
        if series is None:
            return
        if len(_SERIES) >= SERIES_CACHE_SIZE:
            _SERIES.clear()
        _SERIES[span] = series
    if len(span) not in _SPAN_LENGTHS:
        _SPAN_LENGTHS.insert(0, len(span))
        del _SPAN_LENGTHS[SPAN_LENGTHS:]
    if len(_HEADS) >= HEAD_CACHE_SIZE:
        _HEADS.clear()
    _HEADS[frame[:_HEAD_KEY]] = head


def _series_of(span: bytes, span_by_name: bool, decoded: Any) -> Optional[Series]:
    """The series of ``span`` (copies: the decoded point belongs to its consumer)."""
    if type(decoded) is Point:
        return (
            decoded.name,
            decoded.database,
            decoded.retention_policy,
            decoded.group,
            span_by_name,
            tuple(decoded.dimensions.tag_names),
            dict(decoded.tags),
        )
    try:
        msg = _PbPoint.FromString(span)
        tags = msg.tags
        return (
            msg.name,
            msg.database,
            msg.retentionPolicy,
            msg.group,
            msg.byName,
            tuple(msg.dimensions),
            {key: tags[key] for key in tags},
        )
    except Exception:  # protobuf's DecodeError, or ValueError for a string that is not UTF-8
        return None


def clear() -> None:
    """Forget every head, series and layout, and start a new window on the hand path (for tests)."""
    global _layout_count
    _HEADS.clear()
    _SERIES.clear()
    del _SPAN_LENGTHS[:]
    _LAYOUTS.clear()
    _layout_count = 0
    _WINDOW.reset()
