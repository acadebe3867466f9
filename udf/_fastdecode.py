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
varint, a malformed frame) makes :meth:`HandDecoder.decode` return ``None``:
the caller takes protobuf's own parse and then calls :meth:`HandDecoder.learn`, which
walks that frame and records its head, series span and tail layout.

Correctness does not depend on a hit: a span is recorded only as a run of
whole series fields (so the bytes after it start a field), a tail must equal a
layout byte for byte outside its values, and the values a layout accepts (any
eight bytes of a double, varints of the recorded length with their
continuation bits, strings that decode as UTF-8) are exactly those protobuf
accepts there. ``tests/codec/test_fast_decode.py`` and ``fuzz/fuzz_codec.py``
compare this path with protobuf's parse on both backends.

What a stream learned lives in that stream's :class:`HandDecoder` (one per
``ResponseDecoder``, so per reader thread): its heads, series spans, the
layouts it met and its hit-rate window. Traffic that never repeats (every
series new, map entries in random order) would pay for learning on every
point, so the hand path is tried per window of :data:`WINDOW` frames only
while it hits (:meth:`HandDecoder.use`); one stream's irregular traffic puts
only that stream on protobuf's path. The compiled builders are shared
between streams (:data:`_COMPILED`, keyed by the layout itself): compiling
one costs about as much as decoding forty points, and a new stream (a
restarted agent, a decoder made per call) meets the layouts others met.

Every cache is a :class:`udf._cache.BoundedCache`, bounded in entries and in
bytes, emptied when full; a series span or tail over a few KiB (a point with
big tags or string fields) is never learned: such points take protobuf's path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import agent_pb2

from ._cache import MAX_ENTRY_BYTES, BoundedCache
from ._views import key_order
from .models import BatchPoint, Dimensions, Point

#: Series spans a stream keeps (each with its decoded strings, dimensions and tags) before it empties its cache.
SERIES_CACHE_SIZE = 4096
#: Estimated bytes of series a stream keeps before it empties its cache.
SERIES_CACHE_BYTES = 8 << 20
#: Distinct series span lengths tried per point, most recently learned first.
SPAN_LENGTHS = 8
#: Tail layouts a stream knows before it forgets them all.
LAYOUT_CACHE_SIZE = 1024
#: Estimated bytes of the layouts a stream knows before it forgets them all.
LAYOUT_CACHE_BYTES = 4 << 20
#: Compiled layouts shared by all streams, and their estimated bytes.
COMPILED_CACHE_SIZE = 1024
COMPILED_CACHE_BYTES = 4 << 20
#: Tails longer than this (big string fields) are never learned.
MAX_TAIL_BYTES = 2048
#: Frame heads a stream keeps before it empties its cache.
HEAD_CACHE_SIZE = 4096
#: Frames per window: the hand path is kept for the next window while at most
#: a quarter of a window's frames missed it, else only :data:`PROBE` frames of
#: each window try it (and learn).
WINDOW = 4096
PROBE = 128
#: Frames a stream reads (counting the read at hand) before its hand path starts: a decoder made for
#: one short read (a batch decoded on its own) never pays for learning what it will not see again.
LEARN_AFTER = 32

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
Builder = Callable[[tuple[Any, ...], "Series", bytes, int, bool, bool], Any]

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

    __slots__ = ("mask", "expected", "unpack", "build", "source", "cost")

    def __init__(self, mask: int, expected: int, fmt: str, source: str, size: int) -> None:
        self.mask = mask
        self.expected = expected
        self.unpack = struct.Struct(fmt).unpack
        self.source = source  # kept for debugging: repr() shows it
        namespace: dict[str, Any] = dict(_BUILDER_GLOBALS)
        exec(compile(source, "<udf._fastdecode layout>", "exec"), namespace)
        self.build: Builder = namespace["build"]
        #: Estimated bytes: the mask and expected ints, the source, the code object.
        self.cost = 2 * size + 2 * len(source) + 2500

    def __repr__(self) -> str:
        return f"<layout\n{self.source}>"


def _builder_source(fields: list[tuple[str, str]], time: str | None, by_name: str | None) -> str:
    """The source of a layout's builder: a dict display of the fields and one constructor call.

    ``fields`` are (key, expression) in wire order; the display lists them in
    key order, as protobuf's path does. Keys are written with ``repr``, so any
    string is a safe literal.
    """
    lines = [
        "def build(v, series, frame, body, leading, batch):",
        "    name, database, rp, group, by_name, dims, tags = series",
        "    fields = {" + ", ".join(f"{key!r}: {expr}" for key, expr in sorted(fields)) + "}",
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


class _Shape:
    """A tail's shape as it is walked: which bytes are fixed (mask, expected), how to unpack the rest, their meaning."""

    def __init__(self, tail: bytes) -> None:
        self.tail = tail
        self.mask = bytearray(len(tail))
        self.expected = bytearray(len(tail))
        self.fmt = ["<"]
        self.done = 0  # tail bytes already described by fmt
        self.slots = 0  # values unpacked so far
        self.fields: list[tuple[str, str]] = []
        self.time: str | None = None
        self.by_name: str | None = None

    def literal(self, start: int, end: int) -> None:
        """Bytes [start, end) are fixed: a tag, a length, a key."""
        self.mask[start:end] = b"\xff" * (end - start)
        self.expected[start:end] = self.tail[start:end]

    def value(self, start: int, end: int, code: str, varint: bool) -> str:
        """Describe the value bytes [start, end) with struct ``code``; return the builder's name for it."""
        if varint:  # the continuation bits are checked by the mask
            for i in range(start, end):
                self.mask[i] = 0x80
                self.expected[i] = 0x80 if i < end - 1 else 0
        if start > self.done:
            self.fmt.append(f"{start - self.done}x")
        self.fmt.append(code)
        self.done = end
        self.slots += 2 if code == "QB" else 1
        if code == "QB":
            return f"nine_byte_varint(v[{self.slots - 2}], v[{self.slots - 1}])"
        return f"v[{self.slots - 1}]"

    def varint(self, start: int, end: int) -> str:
        """Describe the varint [start, end); return the builder's expression of its value."""
        n = end - start
        if n == 1:
            return self.value(start, end, "B", True)
        if n == 2:
            v = self.value(start, end, "H", True)
            return f"({v} & 0x7F | {v} >> 8 << 7)"
        if n == 9:
            return self.value(start, end, "QB", True)
        return f"varint_value({self.value(start, end, f'{n}s', True)})"

    def entry(self, pos: int) -> int:
        """Describe the field map entry at ``pos`` (its tag is one of _MAPS); return where it ends, or -1."""
        tail = self.tail
        tag = tail[pos]
        size = _one_byte_length(tail, pos + 1)
        key_size = _one_byte_length(tail, pos + 3)
        end = pos + 2 + size
        value_at = pos + 4 + key_size  # the value's tag byte
        if size < 0 or key_size < 0 or end > len(tail) or tail[pos + 2] != 0x0A or value_at >= end:
            return -1
        try:
            key = tail[pos + 4 : value_at].decode("utf-8")
        except UnicodeDecodeError:
            return -1
        value_tag = tail[value_at]
        if tag == _DOUBLES:
            if value_tag != 0x11 or end - value_at != 9:
                return -1
            self.literal(pos, value_at + 1)
            expr = self.value(value_at + 1, end, "d", False)
        elif tag == _BOOLS:
            if value_tag != 0x10 or end - value_at != 2:
                return -1
            self.literal(pos, value_at + 1)
            expr = self.value(value_at + 1, end, "?", True)
        elif tag == _INTS:
            if value_tag != 0x10 or _varint_end(tail, value_at + 1, 9) != end:
                return -1
            self.literal(pos, value_at + 1)
            expr = self.varint(value_at + 1, end)
        else:  # strings; a value that is not UTF-8 raises UnicodeDecodeError in the builder
            if value_tag != 0x12 or _one_byte_length(tail, value_at + 1) != end - value_at - 2:
                return -1
            self.literal(pos, value_at + 2)
            expr = self.value(value_at + 2, end, f"{end - value_at - 2}s", False) + ".decode()"
        self.fields.append((key, expr))
        return end


def _layout_of(tail: bytes) -> _Layout | None:
    """The layout of ``tail`` (time, field map entries, byName, canonical encodings), or None if it has another shape.

    A layout another stream met is taken from :data:`_COMPILED`, else compiled and kept there.
    """
    shape = _Shape(tail)
    pos = 0
    while pos < len(tail):
        tag = tail[pos]
        if tag == _TIME or tag == _BY_NAME:  # noqa: SIM109 - per point: no tuple built
            end = _varint_end(tail, pos + 1, 9 if tag == _TIME else 1)
            if end < 0:
                return None
            shape.literal(pos, pos + 1)
            if tag == _TIME:
                shape.time = shape.varint(pos + 1, end)
            else:
                shape.by_name = shape.value(pos + 1, end, "?", True)
            pos = end
        elif tag in _MAPS:
            pos = shape.entry(pos)
            if pos < 0:
                return None
        else:
            return None
    fields = shape.fields
    if len({key for key, _ in fields}) != len(fields):
        return None  # a key twice: which one wins is protobuf's business
    if shape.done < len(tail):
        shape.fmt.append(f"{len(tail) - shape.done}x")
    mask, expected = int.from_bytes(shape.mask, "little"), int.from_bytes(shape.expected, "little")
    known = (len(tail), mask, expected)
    layout: _Layout | None = _COMPILED.data.get(known)
    if layout is None:
        source = _builder_source(fields, shape.time, shape.by_name)
        layout = _Layout(mask, expected, "".join(shape.fmt), source, len(tail))
        _COMPILED.keep(known, layout, layout.cost)
    return layout


#: Compiled layouts by (tail length, mask, expected bytes), shared by every stream's HandDecoder.
_COMPILED = BoundedCache("decode: compiled layouts", COMPILED_CACHE_SIZE, COMPILED_CACHE_BYTES, 4 * MAX_ENTRY_BYTES)


# --- one stream's hand decoder ------------------------------------------------------------

#: A series: name, database, retention policy, group, byName, dimensions, tags.
Series = tuple[str, str, str, str, bool, tuple[str, ...], dict[str, str]]


class HandDecoder:
    """One stream's hand-written point decoder: what it learned from that stream, and its hit-rate window.

    Made by each ``ResponseDecoder``, so used by one reader thread; nothing in
    it is shared but the compiled builders of :data:`_COMPILED`.
    """

    __slots__ = (
        "_heads",
        "_series",
        "_heads_get",
        "_series_get",
        "_span_lengths",
        "_layouts",
        "_layout_count",
        "_layout_bytes",
        "_learn_after",
        "_fast",
        "_seen",
        "_tried",
        "_missed",
    )

    def __init__(self, learn_after: int = LEARN_AFTER) -> None:
        #: Frame heads (the first :data:`_HEAD_KEY` bytes) -> (where the body starts, whether it starts with a time).
        self._heads = BoundedCache("decode: frame heads", HEAD_CACHE_SIZE, HEAD_CACHE_SIZE * 200, shared=False)
        #: Series span bytes -> the series they encode.
        self._series = BoundedCache("decode: series spans", SERIES_CACHE_SIZE, SERIES_CACHE_BYTES, shared=False)
        self._heads_get, self._series_get = self._heads.data.get, self._series.data.get  # the hot path's lookups
        self._span_lengths: list[int] = []
        #: Tail length -> the layouts of that length this stream met, most recent first.
        self._layouts: dict[int, list[_Layout]] = {}
        self._layout_count = 0
        self._layout_bytes = 0
        # The window (see use()): frames until the hand path starts, whether reads try it, this window's counts.
        self._learn_after = learn_after
        self._fast = True
        self._seen = self._tried = self._missed = 0

    def decode(self, frame: bytes, batch: bool) -> Any:
        """The :class:`Point` (or, inside a batch, :class:`BatchPoint`) of a ``Response{point}`` frame, or None.

        None means: take protobuf's path (then :meth:`learn`). The hot path of
        every point read.
        """
        head = self._heads_get(frame[:_HEAD_KEY])
        if head is None:
            return None
        at, leading = head
        if leading:  # a nine-byte time: eight bytes with the continuation bit, then one without
            if frame[at + 9] >= 0x80 or min(frame[at + 1 : at + 9]) < 0x80:
                return None
            start = at + 10
        else:
            start = at
        get = self._series_get
        for length in self._span_lengths:  # a span may be a prefix of another (fewer tags): try each known length
            series = get(frame[start : start + length])
            if series is None:
                continue
            tail = frame[start + length :]
            layouts = self._layouts.get(len(tail))
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

    def use(self, frames: int) -> bool:
        """Whether a read of ``frames`` frames should try the hand path (else protobuf's, in one parse).

        Not before the stream has read :data:`LEARN_AFTER` frames, this read
        included. Then the hand path is tried while at most a quarter of the
        frames that tried it in the previous window of :data:`WINDOW` frames
        missed; otherwise only the first :data:`PROBE` frames of a window try
        it (and learn), to notice when traffic turns regular.
        """
        if self._learn_after > 0:
            self._learn_after -= frames
            if self._learn_after > 0:
                return False
        if self._seen >= WINDOW:
            self._fast = self._tried > 0 and self._missed * 4 <= self._tried
            self._seen = self._tried = self._missed = 0
        self._seen += frames
        if self._fast or self._tried < PROBE:
            self._tried += frames
            return True
        return False

    def missed(self, count: int) -> None:
        """Count frames of a hand-path read that took protobuf's path."""
        self._missed += count

    def learn(self, frame: bytes, decoded: Any) -> None:
        """Record the head, series span and tail layout of a point frame that protobuf decoded as ``decoded``.

        ``decoded`` is the :class:`Point` or :class:`BatchPoint` that protobuf's
        path made of ``frame``. A Point's series is taken from it (its tail holds
        no series field, or nothing is recorded); a BatchPoint's by parsing the span.
        """
        head = _head_of(frame)
        if head is None:
            return
        at, leading = head
        start = at + 10 if leading else at
        span_end, span_by_name = _span_end(frame, start)
        if span_end < 0:
            return
        span = frame[start:span_end]
        tail = frame[span_end:]
        if len(span) > MAX_ENTRY_BYTES or len(tail) > MAX_TAIL_BYTES:
            return  # big tags or strings: not worth the memory
        layouts = self._layouts.get(len(tail))
        if layouts is None or not any(int.from_bytes(tail, "little") & lay.mask == lay.expected for lay in layouts):
            layout = _layout_of(tail)
            if layout is None:
                return
            self._add_layout(len(tail), layout)
        if span not in self._series:
            series = _series_of(span, span_by_name, decoded)
            if series is None:
                return
            tag_bytes = sum(len(k) + len(v) for k, v in series[6].items())
            self._series.keep(span, series, 2 * len(span) + 2 * tag_bytes + 1000)
        if len(span) not in self._span_lengths:
            self._span_lengths.insert(0, len(span))
            del self._span_lengths[SPAN_LENGTHS:]
        self._heads.keep(frame[:_HEAD_KEY], head, 200)

    def _add_layout(self, size: int, layout: _Layout) -> None:
        if self._layout_count >= LAYOUT_CACHE_SIZE or self._layout_bytes + layout.cost > LAYOUT_CACHE_BYTES:
            self._layouts.clear()
            self._layout_count = self._layout_bytes = 0
        self._layouts.setdefault(size, []).insert(0, layout)
        self._layout_count += 1
        self._layout_bytes += layout.cost

    def sizes(self) -> dict[str, tuple[int, int]]:
        """(entries, estimated bytes) of each of this stream's caches (for bench/caches.py and the tests)."""
        return {
            "heads": (len(self._heads), self._heads.used),
            "series": (len(self._series), self._series.used),
            "layouts": (self._layout_count, self._layout_bytes),
            "span lengths": (len(self._span_lengths), 0),
        }


def _head_of(frame: bytes) -> tuple[int, bool] | None:
    """Where the body of a frame that is one ``Response{point}`` and nothing else starts, and if it starts with a time.

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


def _span_end(frame: bytes, start: int) -> tuple[int, bool]:
    """Where the series span starting at ``start`` ends (a run of whole fields 2..7 and byName), and its byName.

    -1 if a field of it is malformed.
    """
    pos = start
    n = len(frame)
    by_name = False
    while pos < n:
        tag = frame[pos]
        if tag == _BY_NAME:
            if pos + 1 >= n or frame[pos + 1] >= 0x80:
                return -1, False
            by_name = frame[pos + 1] != 0
            pos += 2
            continue
        if tag not in _SERIES_TAGS:
            break
        end = _varint_end(frame, pos + 1, 3)
        if end < 0:
            return -1, False
        pos = end + varint_value(frame[pos + 1 : end])
        if pos > n:
            return -1, False
    return pos, by_name


def _series_of(span: bytes, span_by_name: bool, decoded: Any) -> Series | None:
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
            {key: tags[key] for key in key_order(tags)},
        )
    except Exception:  # protobuf's DecodeError, or ValueError for a string that is not UTF-8
        return None
