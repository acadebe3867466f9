"""Hand-written fast paths of the point codec (private to :mod:`udf.convert`).

A protobuf message may be written as the concatenation of its fields'
encodings, in any order. A point's per-series part (name, database, retention
policy, group, dimensions, byName, tags) repeats from point to point, so it is
serialized once by protobuf itself and its bytes are reused; the per-point part
(time and fields) is written here by hand. Only the common types take this
path: anything else (subclasses, numeric types to coerce, out-of-range values,
strings that do not encode) makes these functions return ``None`` and the
caller takes protobuf's general path, which raises the usual errors.

The per-series caches are keyed on an immutable snapshot of the content (a
tuple of the strings, never the mutable dicts and lists themselves), so a point
changed after an earlier put can never get stale bytes. Every cache here is a
:class:`udf._cache.BoundedCache`: bounded in entries and in bytes, an entry over
a few KiB never kept. A miss costs time, never a different result: whether a
series or field name is cached or not, the same point gives the same bytes.

``tests/codec/test_fast_paths.py`` and ``fuzz/fuzz_codec.py`` check these paths
against protobuf's own parse and serialize, on both protobuf backends.
"""

from __future__ import annotations

import struct
from typing import Any

import agent_pb2

from ._cache import BoundedCache
from .models import BatchPoint, Dimensions, Point
from .wire import encode_uvarint

#: Series kept by each per-series cache (stream points, batch points) before it is emptied.
SERIES_CACHE_SIZE = 4096
#: Estimated bytes each per-series cache holds before it is emptied.
SERIES_CACHE_BYTES = 8 << 20
#: Field names kept by each per-name cache (one per value type) before it is emptied.
FIELD_CACHE_SIZE = 4096
#: Estimated bytes each per-name cache holds before it is emptied.
FIELD_CACHE_BYTES = 1 << 20

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_M64 = (1 << 64) - 1
#: Map keys (field names) longer than this take protobuf's path (keeps entry sizes two-byte varints).
_MAX_KEY_BYTES = 0x3000

_PbPoint = agent_pb2.Point
_pack_double = struct.Struct("<d").pack

# Varints below 2**14 (one or two bytes) indexed straight from encode_uvarint's table.
_SMALL = [encode_uvarint(n) for n in range(0x4000)]


_pack_time = struct.Struct("<BQB").pack


def time_field(t: int) -> bytes | None:
    """Field 1 (``time``, int64) of a Point for an int ``t``: b"" for 0, None outside int64.

    A time from 1972 to 2262 is a nine-byte varint: its seven-bit groups are
    spread over eight bytes in three steps on the whole integer (the
    continuation bits or-ed in), the ninth byte is the rest.
    """
    if 0x100000000000000 <= t <= _INT64_MAX:
        x = t & 0xFFFFFFFFFFFFFF
        x = (x & 0x0FFFFFFF) | (x & 0x00FFFFFFF0000000) << 4
        x = (x & 0x00003FFF00003FFF) | (x & 0x0FFFC0000FFFC000) << 2
        x = (x & 0x007F007F007F007F) | (x & 0x3F803F803F803F80) << 1
        return _pack_time(0x08, x | 0x8080808080808080, t >> 56)
    if t == 0:
        return b""
    if _INT64_MIN <= t <= _INT64_MAX:
        return b"\x08" + encode_uvarint(t & _M64)
    return None


# --- field maps ------------------------------------------------------------------
# A map entry is a nested message { key = 1; value = 2 }. Per field name the
# bytes before the value are cached: for doubles and bools the whole head
# (map tag, entry length, key, value tag), their entries having a fixed size;
# for ints and strings the key part (key and value tag), their length varying.

_DOUBLE_HEADS = BoundedCache("encode: double entry heads", FIELD_CACHE_SIZE, FIELD_CACHE_BYTES)
_BOOL_HEADS = BoundedCache("encode: bool entry heads", FIELD_CACHE_SIZE, FIELD_CACHE_BYTES)
_INT_KEYS = BoundedCache("encode: int entry keys", FIELD_CACHE_SIZE, FIELD_CACHE_BYTES)
_STR_KEYS = BoundedCache("encode: string entry keys", FIELD_CACHE_SIZE, FIELD_CACHE_BYTES)
# The hot path's lookups: the caches' dicts' own get.
_double_heads_get, _bool_heads_get = _DOUBLE_HEADS.data.get, _BOOL_HEADS.data.get
_int_keys_get, _str_keys_get = _INT_KEYS.data.get, _STR_KEYS.data.get


def _key_part(key: Any, value_tag: bytes) -> bytes | None:
    """``key`` as an entry's field 1 followed by ``value_tag``; None if it is not a plain, encodable str."""
    if type(key) is not str:
        return None
    try:
        kb = key.encode("utf-8")
    except UnicodeEncodeError:
        return None
    if len(kb) > _MAX_KEY_BYTES:
        return None
    return b"\x0a" + _SMALL[len(kb)] + kb + value_tag


def _remember(cache: BoundedCache, key: str, value: bytes) -> bytes:
    return cache.keep(key, value, 2 * len(value) + 160)  # the key's str and the entry's bytes


def _double_head(key: Any) -> bytes | None:
    part = _key_part(key, b"\x11")  # value: field 2, fixed64
    if part is None:
        return None
    return _remember(_DOUBLE_HEADS, key, b"\x42" + _SMALL[len(part) + 8] + part)  # fieldsDouble = 8


def _bool_head(key: Any) -> bytes | None:
    part = _key_part(key, b"\x10")  # value: field 2, varint
    if part is None:
        return None
    return _remember(_BOOL_HEADS, key, b"\x62" + _SMALL[len(part) + 1] + part)  # fieldsBool = 12


def _int_key(key: Any) -> bytes | None:
    part = _key_part(key, b"\x10")
    return None if part is None else _remember(_INT_KEYS, key, part)


def _str_key(key: Any) -> bytes | None:
    part = _key_part(key, b"\x12")  # value: field 2, length-delimited
    return None if part is None else _remember(_STR_KEYS, key, part)


def _append_fields(parts: list[bytes], fields: dict[Any, Any]) -> bool:
    """Append the encodings of ``fields`` to ``parts``; False if one needs protobuf's path."""
    append = parts.append
    small = _SMALL
    for key, value in fields.items():
        kind = type(value)
        if kind is float:
            head = _double_heads_get(key) or _double_head(key)
            if head is None:
                return False
            append(head)
            append(_pack_double(value))
        elif kind is int:
            if not _INT64_MIN <= value <= _INT64_MAX:
                return False
            part = _int_keys_get(key) or _int_key(key)
            if part is None:
                return False
            vb = small[value] if 0 <= value < 0x4000 else encode_uvarint(value & _M64)
            append(b"\x4a")  # fieldsInt = 9
            append(small[len(part) + len(vb)])
            append(part)
            append(vb)
        elif kind is str:
            part = _str_keys_get(key) or _str_key(key)
            entry = None if part is None else _string_entry(part, value)
            if entry is None:
                return False
            append(entry)
        elif kind is bool:
            head = _bool_heads_get(key) or _bool_head(key)
            if head is None:
                return False
            append(head)
            append(b"\x01" if value else b"\x00")
        else:
            return False
    return True


# --- the per-series part -----------------------------------------------------------

#: Serialized name, database, retentionPolicy, group, dimensions, byName and tags
#: of a stream point, by (name, database, retention_policy, group, by_name,
#: tuple(tag_names), tuple(tags.items())).
_SERIES = BoundedCache("encode: stream series bytes", SERIES_CACHE_SIZE, SERIES_CACHE_BYTES)
#: Serialized group and tags of a batch point, by (group, tuple(tags.items())).
_BATCH_SERIES = BoundedCache("encode: batch point series bytes", SERIES_CACHE_SIZE, SERIES_CACHE_BYTES)
_series_get, _batch_series_get = _SERIES.data.get, _BATCH_SERIES.data.get


def _series_cost(data: bytes) -> int:
    """The estimated bytes of a series entry: its key's strings (about as long as their encoding) and its bytes."""
    return 2 * len(data) + 1200


def _plain_tags(tags: dict[Any, Any]) -> bool:
    for key, value in tags.items():  # noqa: SIM110 - per point: a loop is faster than all() over a generator
        if type(key) is not str or type(value) is not str:
            return False
    return True


def _series_bytes(key: tuple[Any, ...]) -> bytes | None:
    """Serialize a stream point's series ``key`` with protobuf; None unless every part is a plain str/bool."""
    name, database, rp, group, by_name, tag_names, tag_items = key
    if not (type(name) is str and type(database) is str and type(rp) is str and type(group) is str):
        return None
    if any(type(t) is not str for t in tag_names) or any(
        type(k) is not str or type(v) is not str for k, v in tag_items
    ):
        return None
    try:
        msg = _PbPoint(name=name, database=database, retentionPolicy=rp, group=group, byName=by_name)
        msg.dimensions.extend(tag_names)
        tags = msg.tags
        for k, v in tag_items:
            tags[k] = v
        data: bytes = msg.SerializeToString()
    except ValueError:  # strings that do not encode (lone surrogates): protobuf's path reports it
        return None
    return _SERIES.keep(key, data, _series_cost(data))


def point_frame_body(p: Point) -> bytes | None:
    """The serialized ``agent_pb2.Point`` of ``p``, or None if it needs protobuf's general path."""
    dims = p.dimensions
    tags = p.tags
    fields = p.fields
    t = p.time
    if type(dims) is not Dimensions or type(tags) is not dict or type(fields) is not dict or type(t) is not int:
        return None
    tag_names = dims.tag_names
    by_name = dims.by_name
    if type(tag_names) is not list or (by_name is not False and by_name is not True):
        return None
    key = (p.name, p.database, p.retention_policy, p.group, by_name, tuple(tag_names), tuple(tags.items()))
    try:
        series = _series_get(key)
    except TypeError:  # something unhashable where a str belongs
        return None
    if series is None:
        series = _series_bytes(key)
        if series is None:
            return None
    return _with_time_and_fields(series, t, fields)


def batch_point_body(bp: BatchPoint, group: str) -> bytes | None:
    """The serialized ``agent_pb2.Point`` of batch point ``bp`` (with ``group``), or None (general path)."""
    tags = bp.tags
    fields = bp.fields
    t = bp.time
    if type(tags) is not dict or type(fields) is not dict or type(t) is not int or type(group) is not str:
        return None
    key = (group, tuple(tags.items()))
    try:
        series = _batch_series_get(key)
    except TypeError:
        return None
    if series is None:
        if not _plain_tags(tags):
            return None
        try:
            msg = _PbPoint(group=group)
            target = msg.tags
            for k, v in key[1]:
                target[k] = v
            series = msg.SerializeToString()
        except ValueError:
            return None
        _BATCH_SERIES.keep(key, series, _series_cost(series))
    return _with_time_and_fields(series, t, fields)


def _with_time_and_fields(series: bytes, t: int, fields: dict[Any, Any]) -> bytes | None:
    """A point's body: its series bytes, then its time and fields by hand; None if they need the general path."""
    keys = tuple(fields)
    writer = _writers_get(keys, _UNKNOWN)
    if writer is _UNKNOWN:
        writer = _writer_for(keys, fields)
    if writer is not None:
        body: bytes | None = writer(series, t, fields)
        if body is not None:
            return body
    time = time_field(t)  # the field types differ from the writer's: one field at a time
    if time is None:
        return None
    parts: list[bytes] = [series, time]
    if fields and not _append_fields(parts, fields):
        return None
    return b"".join(parts)


# --- writers compiled per field set -------------------------------------------------

#: Compiled writers of a point's time and fields by the tuple of its field keys
#: (None: that key set takes :func:`_append_fields`). A writer is code: its
#: entries may be larger than other caches' (``WRITER_MAX_BYTES``).
WRITER_CACHE_SIZE = 1024
WRITER_CACHE_BYTES = 4 << 20
WRITER_MAX_BYTES = 16 << 10
_WRITERS = BoundedCache("encode: compiled writers", WRITER_CACHE_SIZE, WRITER_CACHE_BYTES, WRITER_MAX_BYTES)
_writers_get = _WRITERS.data.get
_UNKNOWN = object()


def _string_entry(part: bytes, value: str) -> bytes | None:
    """A fieldsString (10) entry with key ``part`` (see :func:`_str_key`); None for a str that does not encode."""
    try:
        vb = value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    n = len(vb)
    vlen = _SMALL[n] if n < 0x4000 else encode_uvarint(n)
    return b"".join((b"\x52", encode_uvarint(len(part) + len(vlen) + n), part, vlen, vb))


def _writer_for(keys: tuple[Any, ...], fields: dict[Any, Any]) -> Any:
    """Compile (and cache) a writer for points whose fields have ``keys`` and the value types ``fields`` has.

    The writer is straight-line code: it checks each value's type (returning
    None, the general path, on any other), packs the doubles and bools with
    their cached entry heads in one ``struct`` call, and appends the ints'
    and strings' entries. Map entries may come in any order (protobuf merges
    them), so doubles and bools come first.
    """
    if any(type(key) is not str for key in keys):
        return None  # not cached: only a point's plain twin's keys are (encode_point makes it)
    cost = 2500 + 3 * sum(len(key) for key in keys)  # code, names, key tuple
    if cost > WRITER_MAX_BYTES:
        return None  # never cached: such points' fields are written one at a time
    writer = None
    names: dict[str, Any] = {
        "SMALL": _SMALL,
        "uvarint": encode_uvarint,
        "time_field": time_field,
        "string_entry": _string_entry,
    }
    checks: list[str] = []
    packed: list[str] = []
    fmt = ["<"]
    body: list[str] = []
    parts: list[str] = []
    for i, (key, value) in enumerate(fields.items()):
        kind = type(value)
        if kind is float or kind is bool:
            head = _double_head(key) if kind is float else _bool_head(key)
            if head is None:
                break
            names[f"H{i}"] = head
            fmt.append(f"{len(head)}s{'d' if kind is float else '?'}")
            packed.append(f"H{i}, v{i}")
        elif kind is int or kind is str:
            part = _int_key(key) if kind is int else _str_key(key)
            if part is None:
                break
            names[f"P{i}"] = part
            part_size = len(part)
        else:
            break
        if kind is int:
            body += [
                f"    if 0 <= v{i} < 0x4000:",
                f"        b{i} = SMALL[v{i}]",
                f"    elif -0x8000000000000000 <= v{i} <= 0x7FFFFFFFFFFFFFFF:",
                f"        b{i} = uvarint(v{i} & 0xFFFFFFFFFFFFFFFF)",
                "    else:",
                "        return None",
            ]
            parts.append(f'b"\\x4a", SMALL[{part_size} + len(b{i})], P{i}, b{i}')
        elif kind is str:
            body += [f"    s{i} = string_entry(P{i}, v{i})", f"    if s{i} is None:", "        return None"]
            parts.append(f"s{i}")
        checks.append(f"type(v{i}) is not {kind.__name__}")
    else:
        if packed:
            names["pack"] = struct.Struct("".join(fmt)).pack
            parts.insert(0, f"pack({', '.join(packed)})")
        values = "".join(f"v{i}, " for i in range(len(keys)))
        lines = ["def write(series, t, f):"]
        if keys:
            lines += [f"    {values}= f.values()", f"    if {' or '.join(checks)}:", "        return None"]
        lines += ["    time = time_field(t)", "    if time is None:", "        return None"]
        lines += body
        lines.append(
            f'    return b"".join((series, time, {", ".join(parts)}))' if parts else "    return series + time"
        )
        exec(compile("\n".join(lines) + "\n", "<udf._fastcodec writer>", "exec"), names)
        writer = names["write"]
    return _WRITERS.keep(keys, writer, cost)
