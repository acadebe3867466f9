"""Fuzz the hand-written codec paths against protobuf's own parse and serialize.

Two targets, both run on whichever protobuf backend is active (upb, or
``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``):

* ``encode_target``: a random point (odd strings, huge and negative ints,
  NaN, bools, empty maps, long keys, lone surrogates, wrong types) goes through
  ``encode_point`` (cached series bytes, hand-written time and fields) and
  through protobuf's general path (``point_body_general``: ``point_to_message``
  and ``SerializeToString``); both must raise the same error (type and
  message) or give frames that parse to the same message.
  The same for batch points. Each point is encoded again after its tags were
  changed in place, so a stale cache entry would be caught. Then the point
  *dressed*: its strings as str subclasses (a user's own, ``numpy.str_``,
  ``(str, Enum)`` members), its numbers as ``IntEnum`` members and numpy
  scalars; it must give what protobuf itself writes of those values (or the
  same error type), whatever the encoder's caches hold (they are emptied now
  and then).
* ``decode_target``: bytes, usually valid point frames (fields in protobuf's
  order, in ``encode_point``'s, or reordered and duplicated), go through
  ``ResponseDecoder.decode_frames`` (the reader's path: the hand-written
  decoder of ``udf._fastdecode`` with its learned series and layouts, and
  protobuf with the private view schema), each stream followed by itself
  (learned, then decoded from what was learned) or by a mutated copy, and
  through a reference built on ``agent_pb2.Response.FromString`` and
  ``point_from_message``; outcome and events must agree. The second copy
  must decode exactly as the first did (the bits of every double, the key
  order), and every decoded point's tags and fields must be in key order.
  Now and then a stream starts with a frame of 16 KiB to 2 MiB whose length
  prefix reads as text, fed in random chunks: it must be decoded, never
  called text.

With atheris installed, ``decode_target`` runs coverage-guided::

    python fuzz/fuzz_codec.py -atheris_runs=1000000

Otherwise (and in CI) seeded loops run::

    python fuzz/fuzz_codec.py --iterations 20000 --seed 1
"""

from __future__ import annotations

import enum
import math
import os
import random
import struct
import sys
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

try:
    from ._big import big_frame
    from ._entry import fuzz_main
except ImportError:  # run as a script: fuzz/ is sys.path[0]
    from _big import big_frame  # type: ignore[no-redef]
    from _entry import fuzz_main  # type: ignore[no-redef]

from google.protobuf.internal import api_implementation  # noqa: E402

import agent_pb2  # noqa: E402
from udf import _fastcodec, _fastdecode  # noqa: E402
from udf.convert import (  # noqa: E402
    BATCH,
    POINTS,
    BatchAssembler,
    ResponseDecoder,
    batch_point_to_message,
    encode_batch,
    encode_point,
    point_body_general,
    point_from_message,
)
from udf.errors import AgentError, ProtocolError, UDFError  # noqa: E402
from udf.models import Batch, BatchPoint, Dimensions, Point  # noqa: E402
from udf.wire import FrameDecoder, decode_uvarint, encode_frame, encode_uvarint  # noqa: E402

try:
    import numpy
except ImportError:  # the dressed points then use the other subclasses only
    numpy = None

# --- encoding ------------------------------------------------------------------------

_STRINGS = ["", "a", "host", "cpu", "ü", "日本", "x" * 130, "k" * 0x3100, "\ud800", "a=b,c", "\n", "\x00"]
_INTS = [0, 1, -1, 127, 128, 0x3FFF, 0x4000, 2**31, 2**62, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 10**30]
_FLOATS = [0.0, -0.0, 1.5, -2.25, math.inf, -math.inf, math.nan, 1e308, 5e-324]


def _string(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.6:
        return rng.choice(_STRINGS[:6])
    if r < 0.9:
        return rng.choice(_STRINGS)
    return rng.choice([1, None, b"bytes", 1.5, True])


def _value(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.3:
        return rng.choice(_FLOATS) if rng.random() < 0.5 else rng.uniform(-1e6, 1e6)
    if r < 0.6:
        return rng.choice(_INTS) if rng.random() < 0.5 else rng.randrange(-(10**6), 10**6)
    if r < 0.75:
        return _string(rng)
    if r < 0.9:
        return rng.random() < 0.5
    return rng.choice([None, [1], b"x", 3 + 0j])


def _tags(rng: random.Random) -> Any:
    n = rng.choice([0, 0, 1, 3, 5])
    tags = {
        _string(rng) if rng.random() < 0.1 else rng.choice(_STRINGS[:6]): _string(rng)
        if rng.random() < 0.1
        else rng.choice(_STRINGS[:8])
        for _ in range(n)
    }
    return tags if rng.random() < 0.97 else list(tags.items())


def _fields(rng: random.Random) -> Any:
    n = rng.choice([0, 1, 3, 6])
    return {(_string(rng) if rng.random() < 0.1 else rng.choice(_STRINGS[:7])): _value(rng) for _ in range(n)}


def _time(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.7:
        return 1_500_000_000_000_000_000 + rng.randrange(10**15)
    if r < 0.95:
        return rng.choice(_INTS)
    return rng.choice([None, 1.0, True, "1"])


def random_point(rng: random.Random) -> Point:
    names = [rng.choice(_STRINGS[:8]) for _ in range(rng.choice([0, 1, 2]))]
    dims = Dimensions(rng.random() < 0.3 if rng.random() < 0.97 else 1, names if rng.random() < 0.97 else "host")
    return Point(
        name=_string(rng),
        database=rng.choice(["", "telegraf"]),
        retention_policy=rng.choice(["", "autogen"]),
        group=_string(rng),
        dimensions=dims,
        tags=_tags(rng),
        fields=_fields(rng),
        time=_time(rng),
    )


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except Exception as exc:
        return type(exc).__name__, str(exc)


def _canonical(msg: Any) -> bytes:
    return msg.SerializeToString(deterministic=True)  # equal for equal messages, NaN included


def _frame_point(frame: bytes) -> bytes:
    size, start = decode_uvarint(frame)  # type: ignore[misc]
    assert start + size == len(frame), "one whole frame"
    return _canonical(agent_pb2.Request.FromString(frame[start:]).point)


def check_point(p: Point) -> None:
    """encode_point agrees with protobuf's general path on ``p`` (same error, or the same message)."""
    fast = _outcome(lambda: _frame_point(encode_point(p)))
    general = _outcome(lambda: _canonical(agent_pb2.Point.FromString(point_body_general(p))))
    if fast != general:
        raise AssertionError(f"encode_point disagrees with protobuf on {p!r:.300}: {fast!r:.300} vs {general!r:.300}")


def check_batch(b: Batch) -> None:
    """encode_batch's point frames agree with protobuf's general path."""
    fast = _outcome(lambda: [agent_pb2.Request.FromString(f).point for f in FrameDecoder().feed(encode_batch(b))][1:-1])
    if fast[0] != "ok":
        general = _outcome(
            lambda: (
                [agent_pb2.BeginBatch(name=b.name, group=b.group).SerializeToString()]
                + [batch_point_to_message(bp, b.group).SerializeToString() for bp in b.points]
            )
        )
        if general[0] == "ok":
            raise AssertionError(f"encode_batch failed ({fast}) where protobuf gave {general}: {b!r:.300}")
        return
    want = [_canonical(batch_point_to_message(bp, b.group)) for bp in b.points]
    if [_canonical(m) for m in fast[1]] != want:
        raise AssertionError(f"encode_batch disagrees with protobuf on {b!r:.300}")


def encode_target(rng: random.Random) -> None:
    p = random_point(rng)
    check_point(p)
    check_point(p)  # again: now from the caches
    if isinstance(p.tags, dict) and p.tags and rng.random() < 0.5:
        key = next(iter(p.tags))
        p.tags[key] = "changed"  # mutate in place: a stale cache entry must not be used
        p.tags["added"] = "v"
        check_point(p)
    if isinstance(p.dimensions.tag_names, list) and rng.random() < 0.3:
        p.dimensions.tag_names.append("more")
        check_point(p)
    check_dressed(rng, p)
    bps = [BatchPoint(time=_time(rng), fields=_fields(rng), tags=_tags(rng)) for _ in range(rng.choice([0, 1, 3]))]
    group = rng.choice(["", "g", "cpu\nhost=a"]) if rng.random() < 0.95 else "\ud800"
    check_batch(Batch(name="b", group=group, tmax=1, points=bps))


# --- dressed values: str subclasses, enums, numpy scalars ----------------------------------


class _Name(str):
    """A user's own str subclass."""


class _Color(str, enum.Enum):
    HOST = "host"
    CPU = "cpu"
    A = "a"


class _Level(enum.IntEnum):
    ONE = 1
    BIG = 2**62


def _dress(rng: random.Random, value: Any) -> Any:
    """``value`` as a subclass instance or numpy scalar holding the same plain value, now and then."""
    kind = type(value)
    if rng.random() < 0.5:
        return value
    if kind is str:
        choices: list[Callable[[str], Any]] = [_Name]
        if numpy is not None:
            choices.append(numpy.str_)
        if value in _Color._value2member_map_:
            choices.append(_Color)
        return rng.choice(choices)(value)
    if kind is int and numpy is not None and -(2**63) <= value < 2**63:
        return rng.choice([numpy.int64, lambda v: _Level(v) if v in (1, 2**62) else numpy.int64(v)])(value)
    if kind is float and numpy is not None:
        return numpy.float64(value)
    if kind is bool and numpy is not None:
        return numpy.bool_(value)
    return value


def dressed(rng: random.Random, p: Point) -> Point:
    """``p`` with some of its values dressed (:func:`_dress`); its containers as they were."""
    dims = p.dimensions
    tags = {_dress(rng, k): _dress(rng, v) for k, v in p.tags.items()} if isinstance(p.tags, dict) else p.tags
    fields = {_dress(rng, k): _dress(rng, v) for k, v in p.fields.items()} if isinstance(p.fields, dict) else p.fields
    names = [_dress(rng, n) for n in dims.tag_names] if isinstance(dims.tag_names, list) else dims.tag_names
    return Point(
        _dress(rng, p.name),
        p.database,
        p.retention_policy,
        _dress(rng, p.group),
        Dimensions(_dress(rng, dims.by_name), names),
        tags,
        fields,
        _dress(rng, p.time),
    )


def _protobuf_of(p: Point) -> Any:
    """What protobuf itself makes of a dressed point: every value assigned as it is (numpy ones as ``.item()``)."""

    def own(v: Any) -> Any:  # numpy.bool_ is refused by protobuf 4.22's bool fields: hand it its plain value
        return v.item() if numpy is not None and isinstance(v, numpy.generic) and not isinstance(v, str) else v

    msg = agent_pb2.Point()
    msg.name, msg.database, msg.retentionPolicy, msg.group = p.name, p.database, p.retention_policy, p.group
    if type(own(p.time)) is bool:
        raise TypeError("time is a bool")  # protobuf would take it as 1: encode_point refuses it (by design)
    msg.time = own(p.time)
    msg.byName = own(p.dimensions.by_name)
    if isinstance(p.dimensions.tag_names, (str, bytes)):
        raise TypeError("tag_names")
    msg.dimensions.extend(p.dimensions.tag_names)
    for k, v in p.tags.items():
        if not (isinstance(k, str) and isinstance(v, str)):
            raise TypeError("tag")
        msg.tags[k] = v
    for k, v in p.fields.items():
        v = own(v)
        if isinstance(v, bool):
            target = msg.fieldsBool
        elif isinstance(v, str):
            target = msg.fieldsString
        elif isinstance(v, float):
            target = msg.fieldsDouble
        elif isinstance(v, int):
            target = msg.fieldsInt
        else:
            raise TypeError("field value")
        if not isinstance(k, str):
            raise TypeError("field key")
        target[k] = v
    return msg


def check_dressed(rng: random.Random, p: Point) -> None:
    """A dressed ``p`` gives what protobuf writes of it (or an error where protobuf gives one), whatever is cached."""
    if not (isinstance(p.tags, dict) and isinstance(p.fields, dict)):
        return
    d = dressed(rng, p)
    if rng.random() < 0.1:
        for cache in (
            _fastcodec._SERIES,
            _fastcodec._WRITERS,
            _fastcodec._DOUBLE_HEADS,
            _fastcodec._BOOL_HEADS,
            _fastcodec._INT_KEYS,
            _fastcodec._STR_KEYS,
        ):
            cache.clear()  # as eviction would
    ours = _outcome(lambda: _frame_point(encode_point(d)))
    theirs = _outcome(lambda: _canonical(agent_pb2.Point.FromString(_protobuf_of(d).SerializeToString())))
    if (ours[0] == "ok") != (theirs[0] == "ok") or (ours[0] == "ok" and ours != theirs):
        raise AssertionError(f"encode_point and protobuf disagree on {d!r:.300}: {ours!r:.300} vs {theirs!r:.300}")
    if ours != _outcome(lambda: _frame_point(encode_point(d))):  # again: now from whatever it cached
        raise AssertionError(f"encode_point changed its mind on {d!r:.300}")


# --- decoding ------------------------------------------------------------------------


def _fields_of(data: bytes) -> list[bytes] | None:
    """Split a message's bytes into its field records (tag + value), or None if malformed."""
    out, pos = [], 0
    while pos < len(data):
        try:
            got = decode_uvarint(data, pos)
        except ProtocolError:
            return None
        if got is None:
            return None
        tag, p = got
        wire = tag & 7
        if wire == 0:
            got = decode_uvarint(data, p)
            if got is None:
                return None
            p = got[1]
        elif wire == 1:
            p += 8
        elif wire == 2:
            got = decode_uvarint(data, p)
            if got is None:
                return None
            p = got[1] + got[0]
        elif wire == 5:
            p += 4
        else:
            return None
        if p > len(data):
            return None
        out.append(data[pos:p])
        pos = p
    return out


def _shuffled_point_frame(rng: random.Random, msg: Any) -> bytes:
    """A Response{point} frame whose point fields come in a random order, some twice."""
    records = _fields_of(msg.SerializeToString()) or []
    rng.shuffle(records)
    if records and rng.random() < 0.5:
        records.append(rng.choice(records))  # a field (a scalar, a map entry, a dimension) twice
    body = b"".join(records)
    return encode_frame(b"\x8a\x01" + encode_uvarint(len(body)) + body)


def _pb_point(rng: random.Random) -> Any:
    tags = {
        rng.choice(["host", "dc", "", "ü"]): rng.choice(["a", "b", "", "日本"]) for _ in range(rng.choice([0, 1, 3]))
    }
    return agent_pb2.Point(
        time=rng.choice([0, 1, -5, 1_500_000_000_000_000_000, rng.randrange(1 << 56, 1 << 63)]),
        name=rng.choice(["", "cpu"]),
        group=rng.choice(["", "g"]),
        dimensions=rng.choice([[], ["host"], ["a", "b"]]),
        byName=rng.random() < 0.3,
        tags=tags,
        fieldsDouble={"v": rng.choice(_FLOATS[:7])} if rng.random() < 0.7 else {},
        fieldsInt={"n": rng.choice(_INTS[:11] + [rng.randrange(-(1 << 63), 1 << 63)])} if rng.random() < 0.5 else {},
        fieldsString={"s": "x"} if rng.random() < 0.2 else {},
        fieldsBool={"b": True} if rng.random() < 0.2 else {},
    )


def _point_frame_of(rng: random.Random, msg: Any) -> bytes:
    """A Response{point} frame of ``msg``: fields shuffled, in protobuf's order, or in encode_point's (series first)."""
    r = rng.random()
    if r < 0.5:
        return _shuffled_point_frame(rng, msg)
    if r < 0.75:
        body = msg.SerializeToString()
        return encode_frame(b"\x8a\x01" + encode_uvarint(len(body)) + body)
    return encode_point(point_from_message(msg))  # Request.point and Response.point are both field 17


def seed_stream(rng: random.Random) -> bytes:
    """Valid agent output: point frames, sometimes a batch around them or an answer."""
    frames = [_point_frame_of(rng, _pb_point(rng)) for _ in range(rng.randrange(1, 6))]
    if rng.random() < 0.3:
        R = agent_pb2.Response
        frames.insert(0, encode_frame(R(begin=agent_pb2.BeginBatch(name="b", tags={"t": "v"})).SerializeToString()))
        frames.append(encode_frame(R(end=agent_pb2.EndBatch(name="b", tmax=3)).SerializeToString()))
    if rng.random() < 0.2:
        frames.insert(
            rng.randrange(len(frames) + 1),
            encode_frame(agent_pb2.Response(keepalive=agent_pb2.KeepaliveResponse(time=7)).SerializeToString()),
        )
    return b"".join(frames)


_PURE_PYTHON = api_implementation.Type() == "python"


def _normal(item: Any, exact: bool = False) -> Any:
    """Events made comparable: floats by their bits, messages by their bytes; ``exact``: dicts in their order too.

    Not ``exact`` (against the reference), a NaN's payload bits are not
    compared: protobuf's pure-Python backend turns every NaN into ``math.nan``
    where upb, Go and this library keep them; nor is the sign of a zero there,
    which the pure-Python backend of protobuf 4.x loses (-0.0 reads as 0.0).
    """
    if isinstance(item, float):
        if not exact and math.isnan(item):
            return b"NaN"
        if not exact and item == 0.0 and _PURE_PYTHON:
            return b"0"
        return struct.pack("<d", item)
    if isinstance(item, dict):
        if exact:
            return [(k, _normal(v, exact)) for k, v in item.items()]
        return {k: _normal(v) for k, v in item.items()}
    if isinstance(item, (list, tuple)):
        return [_normal(v, exact) for v in item]
    if isinstance(item, (Point, BatchPoint, Batch, Dimensions)):
        return (type(item).__name__, [_normal(getattr(item, f), exact) for f in item.__slots__])  # type: ignore[attr-defined]
    if hasattr(item, "SerializeToString"):
        return _canonical(item)
    return item


def _reference(payloads: list[bytes]) -> tuple[list[Any], str | None]:
    """Events by protobuf's own parse, frame by frame, and the public conversions."""
    events: list[Any] = []
    assembler = BatchAssembler()
    for payload in payloads:
        try:
            response = agent_pb2.Response.FromString(payload)
            kind = response.WhichOneof("message")
            if kind == "point":
                if assembler.in_batch:
                    assembler.point(response.point)
                else:
                    events.append((POINTS, point_from_message(response.point)))
            elif kind == "begin":
                assembler.begin(response.begin)
            elif kind == "end":
                events.append((BATCH, assembler.end(response.end)))
            elif kind == "error":
                raise AgentError(response.error.error)
            elif kind is None:
                raise ProtocolError("no message")
            else:
                events.append((kind, response))
        except (UDFError, ValueError):
            return events, "error"
        except Exception:  # protobuf's DecodeError
            return events, "error"
    return events, None


def _in_key_order(item: Any) -> bool:
    """Whether every tags and fields dict of a decoded item is in key order."""
    if isinstance(item, Batch):
        return list(item.tags) == sorted(item.tags) and all(_in_key_order(p) for p in item.points)
    if isinstance(item, (Point, BatchPoint)):
        return list(item.tags) == sorted(item.tags) and list(item.fields) == sorted(item.fields)
    return True


def _learning_at_once() -> ResponseDecoder:
    """A ResponseDecoder whose hand path learns from its first frame (a new stream waits for LEARN_AFTER frames)."""
    decoder = ResponseDecoder()
    if decoder._hand is not None:
        decoder._hand = _fastdecode.HandDecoder(learn_after=0)
    return decoder


def _decoded(data: bytes, chunk: int) -> tuple[list[Any], UDFError | None, list[bytes]]:
    """The reader's path on ``data`` read ``chunk`` bytes at a time: (events, error, the frames)."""
    splitter = FrameDecoder()
    decoder = _learning_at_once()
    events: list[Any] = []
    frames: list[bytes] = []
    try:
        # The first 64 reads ``chunk`` bytes each (the frame layer's start); later ones at least 64 KiB.
        cuts = list(range(0, min(len(data), 64 * chunk), chunk)) + list(range(64 * chunk, len(data), max(chunk, 65536)))
        for i, j in zip(cuts, cuts[1:] + [len(data)], strict=True):
            got = splitter.feed_frames(data[i:j])
            frames += got
            more, error = decoder.decode_frames(got)
            events += [(kind, p) for kind, items in more for p in (items if kind is POINTS else [items])]
            if error is not None:
                return events, error, frames
            splitter.check()
    except ProtocolError as exc:
        return events, exc, frames
    return events, None, frames


def decode_target(data: bytes) -> int:
    """The reader's decode path and the reference agree on ``data``. Returns the event count."""
    chunk = 1 + data[0] * 7 if data else 1  # how the reads cut the stream: derived from the data
    return len(_checked(data, chunk)[0])


def _checked(data: bytes, chunk: int) -> tuple[list[Any], UDFError | None]:
    """:func:`decode_target`'s check, ``data`` read ``chunk`` bytes at a time; the events and the error."""
    fast, error, frames = _decoded(data, chunk)
    if isinstance(error, ProtocolError) and "wrote text" in str(error):
        first = FrameDecoder(text_hint=None).feed(data)
        if first and _reference(first[:1])[1] is None:
            raise AssertionError(f"a stream that starts with a valid frame was called text: {data!r:.200}")
    payloads = [f[decode_uvarint(f)[1] :] for f in frames]  # type: ignore[index]
    ref, ref_error = _reference(payloads)
    if error is not None and not frames:  # refused before any frame: the frame layer's business (a bad prefix, text)
        return fast, error
    # Keepalive answers do not split a run of points (by design), so they are compared apart.
    fast_data, ref_data = ([e for e in x if e[0] != "keepalive"] for x in (fast, ref))
    fast_ka, ref_ka = ([e for e in x if e[0] == "keepalive"] for x in (fast, ref))
    framing_error = isinstance(error, ProtocolError) and ref_error is None and len(fast) == len(ref)
    if (
        ((error is None) != (ref_error is None) and not framing_error)
        or _normal(fast_data) != _normal(ref_data)
        or (_normal(fast_ka) != _normal(ref_ka))
    ):
        raise AssertionError(f"decode paths disagree on {data!r:.400}: {error!r} vs {ref_error!r}")
    if not all(_in_key_order(item) for _, item in fast):
        raise AssertionError(f"a decoded point's tags or fields are not in key order: {data!r:.400}")
    return fast, error


def check_repeated(data: bytes) -> None:
    """``data`` then ``data`` again in one stream: the second copy decodes exactly as the first (bits, key order)."""
    events, error = _checked(data + data, len(data))
    if error is None:
        half = len(events) // 2
        if _normal(events[:half], exact=True) != _normal(events[half:], exact=True):
            raise AssertionError(f"a stream's second copy decoded otherwise: {data!r:.400}")


def big_first_frame(rng: random.Random) -> bytes:
    """A stream whose first frame is 16 KiB to 2 MiB (its length prefix reads as text, mostly), then a few points."""
    return big_frame(rng) + b"".join(_point_frame_of(rng, _pb_point(rng)) for _ in range(rng.randrange(3)))


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        if not buf:
            break
        i = rng.randrange(len(buf))
        op = rng.randrange(3)
        if op == 0:
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[i] = rng.choice([0x00, 0x80, 0xFF, 0xC0, 0x3A])
        else:
            buf[i:i] = buf[i : i + rng.randrange(1, 16)]
    return bytes(buf)


def run_loop(iterations: int, seed: int) -> int:
    """Seeded loops: ``iterations`` random points, and as many agent outputs (half mutated); 1% start big."""
    rng = random.Random(seed)
    for _ in range(iterations):
        encode_target(rng)
        data = seed_stream(rng)
        # One stream each: the first copy is learned by its hand decoder (udf._fastdecode) where it
        # missed, the second read from what it learned, or (mutated) refused by it or read as protobuf does.
        check_repeated(data)
        decode_target(data + _mutate(rng, data))
        if rng.random() < 0.01:
            big = big_first_frame(rng)
            chunk = rng.choice([3, 4096, 65536, len(big)])
            events, error, _ = _decoded(big, chunk)
            if error is not None or not events:
                raise AssertionError(f"a stream that starts with a frame of {len(big)} bytes was refused: {error!r}")
            decode_target(big)
    return iterations


def main(argv: list[str]) -> int:
    return fuzz_main(
        argv,
        (__doc__ or "").splitlines()[0],
        decode_target,
        run_loop,
        lambda n: f"fuzz codec: {n} points and {n} agent outputs, both paths agree",
        20_000,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
