"""Issue 18's seven cases, each a regression test, each a differential against protobuf where one applies.

Every frame protobuf accepts is accepted and decoded the same way every time;
every value protobuf encodes is encoded the same way whatever is cached; the
caches are bounded in bytes. The suite runs on one protobuf backend (upb, or
pure Python with ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``);
:func:`test_every_case_holds_on_the_other_protobuf_backend` runs this file again
on the other one, so that every run covers both.
"""

from __future__ import annotations

import enum
import gc
import os
import random
import struct
import subprocess
import sys
import threading
import tracemalloc
from typing import Any

import google.protobuf
import numpy
import pytest
from google.protobuf.internal import api_implementation

import agent_pb2
import udf
from udf import Batch, BatchPoint, Dimensions, Point, _cache, _fastcodec, wire
from udf.convert import POINTS, PURE_PROTOBUF, ResponseDecoder, encode_batch, encode_point, point_from_message
from udf.errors import ProtocolError
from udf.wire import FrameDecoder, encode_frame, encode_uvarint

from ..helpers import ROOT, TIMEOUT

T0 = 1_500_000_000_000_000_000
BACKEND = api_implementation.Type()
hand_paths = pytest.mark.skipif(PURE_PROTOBUF, reason="UDF_PUREPROTOBUF=1: the hand-written paths are off")


def events_of(frames: list[bytes], decoder: ResponseDecoder | None = None) -> tuple[list[Any], Exception | None]:
    """The reader's path: whole frames through ``decode_frames``."""
    return (decoder or ResponseDecoder()).decode_frames(frames)


def response_frame(body: bytes) -> bytes:
    """A Response{point} frame around a serialized Point."""
    return encode_frame(b"\x8a\x01" + encode_uvarint(len(body)) + body)


def cold_encoder() -> None:
    """Empty every cache of the hand-written encoder, as eviction would."""
    for cache in (
        _fastcodec._SERIES,
        _fastcodec._BATCH_SERIES,
        _fastcodec._WRITERS,
        _fastcodec._DOUBLE_HEADS,
        _fastcodec._BOOL_HEADS,
        _fastcodec._INT_KEYS,
        _fastcodec._STR_KEYS,
    ):
        cache.clear()


def sent_point(frame: bytes) -> Any:
    """The ``agent_pb2.Point`` a ``Request{point}`` frame carries, parsed by protobuf."""
    [payload] = FrameDecoder().feed(frame)
    return agent_pb2.Request.FromString(payload).point


# --- case 1: a stream that starts with a valid frame is never called text ------------------


def snapshot_payload(size: int) -> bytes:
    """A serialized ``Response{snapshot}`` of exactly ``size`` bytes."""
    for k in range(size - 12, size):
        payload = agent_pb2.Response(snapshot=agent_pb2.SnapshotResponse(snapshot=b"s" * k)).SerializeToString()
        if len(payload) == size:
            return bytes(payload)
    raise AssertionError(f"no snapshot answer of {size} bytes")


def suspect_sizes(count: int) -> list[int]:
    """Frame sizes in [16 KiB, 2 MiB) whose three-byte length prefix reads as text, and one past 2 MiB."""
    rng = random.Random(18)
    sizes = [163_945, 532_419]  # the issue's: e9 80 0a and c3 bf 20
    while len(sizes) < count:
        size = rng.randrange(16_384, 1 << 21)
        if wire._looks_like_text(encode_uvarint(size)):
            sizes.append(size)
    size = 1 << 21
    while not wire._looks_like_text(encode_uvarint(size)):  # a four-byte prefix that reads as text
        size += 1
    return sorted(sizes) + [size]


@pytest.mark.parametrize("size", suspect_sizes(24))
def test_case1_a_first_frame_whose_length_reads_as_text_is_a_frame(size: int) -> None:
    payload = snapshot_payload(size)
    frame = encode_frame(payload)
    assert wire._looks_like_text(frame[:3])  # what the old check refused
    for chunks in ([frame], [frame[:3], frame[3:]], [frame[i : i + 65536] for i in range(0, len(frame), 65536)]):
        decoder = FrameDecoder()
        got = [p for chunk in chunks for p in decoder.feed(chunk)]
        decoder.eof()
        assert got == [payload]
    events, error = events_of(FrameDecoder().feed_frames(frame))
    assert error is None
    assert events == [("snapshot", agent_pb2.Response.FromString(payload))]  # the differential


def test_case1_a_point_holding_a_591913_character_string_decodes_as_the_supervisor_does() -> None:
    point = Point("m", fields={"s": "x" * 591_913}, time=T0)
    frame = encode_point(point)
    events, error = ResponseDecoder().decode_frames(FrameDecoder(len(frame)).feed_frames(frame))
    assert error is None and events == [(POINTS, [point])]


@pytest.mark.parametrize("size", [163_945, 532_419])
def test_case1_a_real_agent_whose_first_answer_is_that_big_is_heard(size: int) -> None:
    """A real agent (examples-style, udf.agent) answers info with a frame of exactly ``size`` bytes."""

    def payload_size(n: int) -> int:
        info = agent_pb2.InfoResponse(options={"o" * n: agent_pb2.OptionInfo(valueTypes=[agent_pb2.STRING])})
        return len(agent_pb2.Response(info=info).SerializeToString())

    n = next(n for n in range(size - 20, size) if payload_size(n) == size)
    program = (
        "import sys, agent_pb2\n"
        "from udf.agent import Handler, main\n"
        "class Big(Handler):\n"
        "    def info(self):\n"
        "        return agent_pb2.InfoResponse(\n"
        f"            options={{'o' * {n}: agent_pb2.OptionInfo(valueTypes=[agent_pb2.STRING])}}\n"
        "        )\n"
        "    def init(self, request):\n"
        "        return agent_pb2.InitResponse(success=True)\n"
        "sys.exit(main(Big))\n"
    )
    with udf.Process(sys.executable, ["-c", program], timeout=TIMEOUT) as agent:
        info = agent.info()
    assert list(info.options) == ["o" * n]


def field_records(rng: random.Random, count: int) -> list[bytes]:
    """Random protobuf field records (tag and value), mostly well formed, of any field number and wire type."""
    out = []
    for _ in range(count):
        number = rng.choice([1, 2, 3, 4, 5, 6, 7, 9, 12, 14, 15, 16, 17, 18, 19, 40, 1000])
        wire_type = rng.choice([0, 0, 1, 2, 2, 2, 3, 5, 4, 6, 7]) if rng.random() < 0.9 else rng.randrange(8)
        tag = encode_uvarint(number << 3 | wire_type)
        if wire_type == 0:
            out.append(tag + encode_uvarint(rng.choice([0, 1, 127, 300, 1 << 40, (1 << 64) - 1])))
        elif wire_type == 1:
            out.append(tag + bytes(rng.randrange(256) for _ in range(8)))
        elif wire_type == 5:
            out.append(tag + bytes(rng.randrange(256) for _ in range(4)))
        elif wire_type == 2:
            body = rng.choice([b"", b"hello world", bytes(rng.randrange(256) for _ in range(rng.randrange(40)))])
            out.append(tag + encode_uvarint(len(body)) + body)
        elif wire_type == 3:
            inner = b"".join(field_records(rng, rng.randrange(3))) if rng.random() < 0.5 else b""
            out.append(tag + inner + encode_uvarint(number << 3 | 4))
        else:
            out.append(tag)
    return out


def protobuf_parses(payload: bytes) -> bool:
    for message in (agent_pb2.Response, agent_pb2.Request):
        try:
            message.FromString(payload)
            return True
        except Exception:
            pass
    return False


def test_case1_text_is_said_only_of_bytes_protobuf_refuses() -> None:
    """The text check's differential: what it calls text, protobuf refuses; no prefix of a parsed frame is text."""
    rng = random.Random(1)
    texts = parsed = 0
    for _ in range(6000):
        records = field_records(rng, rng.randrange(1, 6))
        if rng.random() < 0.5:  # a printable start, as text would have
            records.insert(0, rng.choice([b"ello", b"tarting", b"ok\n", b"\xc3\xa9t\xc3\xa9", b"2*", b'"x']))
        payload = b"".join(records)
        frame = encode_frame(payload)
        if rng.random() < 0.3:  # a printable length byte
            frame = bytes([rng.randrange(0x20, 0x7F)]) + payload
        verdict = wire._first_frame(frame, 1 << 26)
        whole = wire.decode_uvarint(frame)
        assert whole is not None
        exact = whole[1] + whole[0] == len(frame)
        if verdict == wire._TEXT:
            texts += 1
            if exact:
                assert not protobuf_parses(frame[whole[1] :]), frame
        if exact and protobuf_parses(frame[whole[1] :]):
            parsed += 1
            for cut in range(1, len(frame) + 1):  # however the stream was chunked
                assert wire._first_frame(frame[:cut], 1 << 26) != wire._TEXT, (frame, cut)
    assert texts > 500 and parsed > 500  # both sides of the differential were exercised


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x00\x01", id="field-0"),
        pytest.param(b"\x0e", id="wire-type-6"),
        pytest.param(b"\x0f", id="wire-type-7"),
        pytest.param(b"\x0c", id="end-group-outside-a-group"),
        pytest.param(b"\x7b", id="group-never-ended"),
        pytest.param(b"\x7b\x0f\x7c", id="bad-field-inside-a-group"),
        pytest.param(b"\x7a\x05ab", id="length-past-the-end"),
        pytest.param(b"\x79ab", id="fixed64-past-the-end"),
        pytest.param(b"\x7dab", id="fixed32-past-the-end"),
        pytest.param(b"\x78\x80", id="varint-past-the-end"),
        pytest.param(b"\x78" + b"\x80" * 10 + b"\x00", id="varint-of-eleven-bytes"),
    ],
)
def test_case1_each_rule_of_the_text_check_is_one_protobuf_enforces(payload: bytes) -> None:
    frame = encode_frame(payload)
    assert wire._first_frame(frame, 1 << 26) == wire._TEXT
    for message in (agent_pb2.Response, agent_pb2.Request):
        with pytest.raises(Exception):
            message.FromString(payload)


# --- case 2: str subclasses are encoded as protobuf encodes them, whatever is cached ------------


class Name(str):
    """A user's own str subclass."""


def subclass_points(make: Any) -> list[Point]:
    """Points with ``make(s)`` (a str subclass) as each string of the point in turn."""
    base: dict[str, Any] = dict(
        name="cpu",
        database="db",
        retention_policy="rp",
        group="g",
        dimensions=Dimensions(False, ["host"]),
        tags={"host": "a"},
        fields={"v": 1.5, "s": "x"},
        time=T0,
    )
    variants: list[dict[str, Any]] = [
        dict(tags={make("host"): "a"}),
        dict(tags={"host": make("a")}),
        dict(fields={make("v"): 1.5, "s": "x"}),
        dict(fields={"v": 1.5, "s": make("x")}),
        dict(dimensions=Dimensions(False, [make("host")])),
        dict(name=make("cpu")),
        dict(group=make("g"), tags={make("host"): make("a")}, fields={make("v"): 1.5, make("s"): make("x")}),
    ]
    return [Point(**{**base, **v}) for v in variants]


def protobuf_point(p: Point) -> Any:
    """``p`` built by protobuf itself, every string handed over as it is (protobuf accepts str subclasses)."""
    msg = agent_pb2.Point(
        time=p.time,
        name=p.name,
        database=p.database,
        retentionPolicy=p.retention_policy,
        group=p.group,
        byName=p.dimensions.by_name,
    )
    msg.dimensions.extend(p.dimensions.tag_names)
    for k, tag in p.tags.items():
        msg.tags[k] = tag
    for k, v in p.fields.items():
        target = msg.fieldsString if isinstance(v, str) else msg.fieldsDouble if isinstance(v, float) else msg.fieldsInt
        target[k] = v
    return msg


def encoded_cold_warm_cold(p: Point, twin: Point) -> list[bytes]:
    """``p`` encoded with cold caches, after its plain twin warmed them, and after they were emptied."""
    cold_encoder()
    first = encode_point(p)
    encode_point(twin)
    warm = encode_point(p)
    cold_encoder()
    return [first, warm, encode_point(p)]


def plain_twin(p: Point) -> Point:
    def plain(v: Any) -> Any:
        return str.__str__(v) if isinstance(v, str) else v

    return Point(
        plain(p.name),
        plain(p.database),
        plain(p.retention_policy),
        plain(p.group),
        Dimensions(p.dimensions.by_name, [plain(t) for t in p.dimensions.tag_names]),
        {plain(k): plain(v) for k, v in p.tags.items()},
        {plain(k): plain(v) for k, v in p.fields.items()},
        p.time,
    )


@hand_paths
@pytest.mark.parametrize("make", [Name, numpy.str_], ids=["user-subclass", "numpy.str_"])
def test_case2_str_subclasses_are_accepted_whatever_is_cached(make: Any) -> None:
    for p in subclass_points(make):
        frames = encoded_cold_warm_cold(p, plain_twin(p))
        assert frames[0] == frames[1] == frames[2], p
        assert sent_point(frames[0]) == protobuf_point(p)  # the differential: what protobuf writes of them
        assert sent_point(frames[0]) == sent_point(encode_point(plain_twin(p)))


@hand_paths
def test_case2_str_subclasses_in_a_batch_are_accepted_whatever_is_cached() -> None:
    def batch(make: Any) -> Batch:
        return Batch(
            "b",
            T0,
            make("g"),
            False,
            {make("t"): make("v")},
            [BatchPoint(T0, {make("f"): 1.0, "s": make("x")}, {make("host"): make("a")})],
        )

    cold_encoder()
    first = encode_batch(batch(Name))
    encode_batch(batch(str))
    warm = encode_batch(batch(Name))
    assert first == warm
    [_, point, _] = FrameDecoder().feed(first)
    assert agent_pb2.Request.FromString(point).point == agent_pb2.Point(
        time=T0, group="g", tags={"host": "a"}, fieldsDouble={"f": 1.0}, fieldsString={"s": "x"}
    )


# --- case 3: (str, Enum) members and numpy scalars ----------------------------------------------


class Color(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@hand_paths
def test_case3_str_enum_members_are_sent_as_protobuf_sends_them() -> None:
    p = Point(
        "cpu", tags={Color.RED: Color.RED}, fields={"color": Color.RED, Color.RED: 1.0, "level": Level.HIGH}, time=T0
    )
    twin = Point("cpu", tags={"red": "red"}, fields={"color": "red", "red": 1.0, "level": 3}, time=T0)
    frames = encoded_cold_warm_cold(p, twin)
    assert frames[0] == frames[1] == frames[2]
    msg = sent_point(frames[0])
    assert msg == protobuf_point(p)  # the differential
    assert msg.fieldsString["color"] == "red" and dict(msg.tags) == {"red": "red"} and msg.fieldsInt["level"] == 3


NUMPY_VALUES = [
    (numpy.bool_(True), "fieldsBool", True),
    (numpy.bool_(False), "fieldsBool", False),
    (numpy.float64(1.5), "fieldsDouble", 1.5),
    (numpy.float32(0.25), "fieldsDouble", 0.25),
    (numpy.int64(-7), "fieldsInt", -7),
    (numpy.int32(300), "fieldsInt", 300),
    (numpy.uint64(2**63 - 1), "fieldsInt", 2**63 - 1),
    (numpy.str_("x"), "fieldsString", "x"),
]


@hand_paths
@pytest.mark.parametrize(
    "value, target, plain", NUMPY_VALUES, ids=[type(v).__name__ + "-" + str(v) for v, _, _ in NUMPY_VALUES]
)
def test_case3_numpy_scalars_are_encoded_as_their_plain_values_every_time(value: Any, target: str, plain: Any) -> None:
    p = Point("cpu", fields={"v": value, "w": 2.0}, time=numpy.int64(T0), dimensions=Dimensions(numpy.bool_(True), []))  # type: ignore[arg-type]
    twin = Point("cpu", fields={"v": plain, "w": 2.0}, time=T0, dimensions=Dimensions(True, []))
    frames = encoded_cold_warm_cold(p, twin)
    assert frames[0] == frames[1] == frames[2] == encode_point(twin)
    msg = sent_point(frames[0])
    assert getattr(msg, target)["v"] == plain and type(getattr(msg, target)["v"]) is type(plain)
    assert msg.time == T0 and msg.byName is True
    batch = Batch("b", T0, "g", False, {}, [BatchPoint(numpy.int64(T0), {"v": value}, {"h": numpy.str_("a")})])
    assert encode_batch(batch) == encode_batch(
        Batch("b", T0, "g", False, {}, [BatchPoint(T0, {"v": plain}, {"h": "a"})])
    )


@pytest.mark.parametrize(
    "fields, error, said",
    [
        ({"v": numpy.uint64(2**63)}, ValueError, "does not fit in int64"),
        ({"v": numpy.complex128(1j)}, TypeError, "unsupported field value type"),
        ({"v": numpy.bytes_(b"x")}, TypeError, "unsupported field value type"),
        ({"v": numpy.datetime64("2020-01-01")}, TypeError, "unsupported field value type"),
    ],
)
def test_case3_numpy_scalars_protobuf_cannot_take_are_refused_clearly_every_time(
    fields: Any, error: type, said: str
) -> None:
    for _ in range(2):  # cold, then after a plain point with the same key warmed every cache
        with pytest.raises(error, match=said):
            encode_point(Point("cpu", fields=fields, time=T0))
        encode_point(Point("cpu", fields={"v": 1.0}, time=T0))
    with pytest.raises(TypeError, match="tag names and values must be str"):
        encode_point(Point("cpu", tags={"h": numpy.int64(1)}, time=T0))


# --- case 4: refused what protobuf refuses -------------------------------------------------------


def invalid_utf8_point() -> bytes:
    """A ``Response{point}`` payload whose tag value is not UTF-8."""
    good = agent_pb2.Response(point=agent_pb2.Point(name="cpu", tags={"host": "ab"}, time=T0)).SerializeToString()
    bad = good.replace(b"\x02ab", b"\x02\xff\xfe")
    assert bad != good
    return bytes(bad)


LATER_MEMBERS = {
    "keepalive": agent_pb2.Response(keepalive=agent_pb2.KeepaliveResponse(time=7)),
    "info": agent_pb2.Response(info=agent_pb2.InfoResponse(wants=agent_pb2.BATCH)),
    "snapshot": agent_pb2.Response(snapshot=agent_pb2.SnapshotResponse(snapshot=b"s")),
    "error": agent_pb2.Response(error=agent_pb2.ErrorResponse(error="boom")),
    "begin": agent_pb2.Response(begin=agent_pb2.BeginBatch(name="b")),
    "point": agent_pb2.Response(point=agent_pb2.Point(name="mem")),
}


def protobuf_events(payload: bytes) -> tuple[list[Any], type | None]:
    """What protobuf's own parse and the public conversions make of one Response payload: (events, error type)."""
    try:
        response = agent_pb2.Response.FromString(payload)
    except Exception:
        return [], ProtocolError
    kind = response.WhichOneof("message")
    if kind == "error":
        return [], udf.AgentError
    if kind == "begin":
        return [], None  # a batch opened
    if kind == "point":
        return [(POINTS, [point_from_message(response.point)])], None
    return [(kind, response)], None


@pytest.mark.parametrize("later", sorted(LATER_MEMBERS))
def test_case4_a_replaced_point_member_that_is_not_utf8_is_refused_as_protobuf_refuses_it(later: str) -> None:
    """The differential: protobuf refuses the frame (7.x, 6.x, pure Python), or reads it (4.22-4.24's upb, which
    does not check UTF-8 in maps): the reader's path and the payload path do the same."""
    payload = invalid_utf8_point() + LATER_MEMBERS[later].SerializeToString()
    want_events, want_error = protobuf_events(payload)
    for events, error in (events_of([encode_frame(payload)]), ResponseDecoder().decode([payload])):
        assert events == want_events
        assert type(error) is want_error if want_error is not None else error is None, error
    if BACKEND == "python" or int(google.protobuf.__version__.split(".")[0]) >= 5:
        assert want_error is ProtocolError  # where protobuf checks UTF-8, the frame is refused


@pytest.mark.parametrize("later", sorted(LATER_MEMBERS))
def test_case4_a_replaced_valid_point_member_gives_what_protobuf_gives(later: str) -> None:
    first = agent_pb2.Response(point=agent_pb2.Point(name="cpu", tags={"host": "ab"}, time=T0)).SerializeToString()
    payload = first + LATER_MEMBERS[later].SerializeToString()
    want = agent_pb2.Response.FromString(payload)
    events, error = events_of([encode_frame(payload)])
    if later == "error":
        assert events == [] and isinstance(error, udf.AgentError) and str(error) == "boom"
    elif later == "begin":
        assert events == [] and error is None  # a batch opened
    elif later == "point":
        assert error is None and events == [(POINTS, [point_from_message(want.point)])]
    else:
        assert error is None and events == [(later, want)]
        assert type(events[0][1]) is agent_pb2.Response


# --- case 5: one frame, one value, every time (NaN payloads and the sign of zero kept) ----------

DOUBLE_BITS = [0x7FF8000000000123, 0xFFF8000000000001, 0x7FF0000000000001, 0x8000000000000000, 0x7FF8000000000000]


def doubles_frame(i: int) -> bytes:
    """A point frame whose double fields hold exactly DOUBLE_BITS (NaNs with payloads, a signalling NaN, -0.0)."""
    point = agent_pb2.Point(time=T0 + i, name="cpu", tags={"host": "a"})
    body = point.SerializeToString() + b"".join(
        b"\x42\x0c\x0a\x01" + bytes([0x61 + k]) + b"\x11" + struct.pack("<Q", bits)
        for k, bits in enumerate(DOUBLE_BITS)
    )
    return response_frame(body)


def bits_of(point: Any) -> list[int]:
    return [struct.unpack("<Q", struct.pack("<d", point.fields[chr(0x61 + k)]))[0] for k in range(len(DOUBLE_BITS))]


def test_case5_the_same_frame_gives_the_same_bits_on_its_first_and_later_decodes() -> None:
    decoder = ResponseDecoder()
    frames = [doubles_frame(0)] * 40
    seen = []
    for _ in range(2):  # the first copy through protobuf, the later ones (where it runs) by hand
        events, error = events_of(frames, decoder)
        assert error is None
        seen += [bits_of(p) for _, points in events for p in points]
    assert PURE_PROTOBUF or decoder._hand.sizes()["series"][0] == 1  # type: ignore[union-attr]  # the hand path ran
    batch = encode_frame(agent_pb2.Response(begin=agent_pb2.BeginBatch(name="b")).SerializeToString())
    end = encode_frame(agent_pb2.Response(end=agent_pb2.EndBatch(name="b")).SerializeToString())
    for _ in range(2):
        events, error = events_of([batch] + frames + [end], decoder)
        assert error is None
        seen += [bits_of(p) for _, b in events for p in b.points]
    events, error = ResponseDecoder().decode([FrameDecoder().feed(doubles_frame(0))[0]])  # the payload path
    seen += [bits_of(p) for _, points in events for p in points]
    assert seen == [DOUBLE_BITS] * len(seen) and len(seen) == 161  # the bits of the frame, as upb and Go keep them


def test_case5_encoding_keeps_the_bits_whatever_is_cached() -> None:
    values = [struct.unpack("<d", struct.pack("<Q", bits))[0] for bits in DOUBLE_BITS]
    p = Point("cpu", fields={chr(0x61 + k): v for k, v in enumerate(values)}, time=T0)
    for _ in range(2):
        cold_encoder()
        frame = encode_point(p)
        events, error = events_of([frame])
        assert error is None
        assert [bits_of(q) for _, points in events for q in points] == [DOUBLE_BITS]


# --- case 6: one frame, one order: tags and fields in key order --------------------------------


def mixed_frame(i: int, rng: random.Random) -> bytes:
    """A point frame whose map entries come in a random order (as Go writes them), every value kind."""
    msg = agent_pb2.Point(
        time=T0 + i,
        name="cpu",
        tags={"zone": "z", "host": "a", "dc": "d", "app": "x"},
        fieldsString={"status": "ok", "b_str": "s"},
        fieldsInt={"count": i, "a_int": 7},
        fieldsDouble={"usage": 0.5, "c_dbl": 1.5},
        fieldsBool={"up": True, "d_bool": False},
    )
    head = agent_pb2.Point(time=msg.time, name=msg.name).SerializeToString()
    entries: list[bytes] = []
    for key in msg.tags:
        entries.append(agent_pb2.Point(tags={key: msg.tags[key]}).SerializeToString())
    rng.shuffle(entries)
    fields: list[bytes] = []
    for name in ("fieldsString", "fieldsInt", "fieldsDouble", "fieldsBool"):
        m = getattr(msg, name)
        fields += [agent_pb2.Point(**{name: {key: m[key]}}).SerializeToString() for key in m]
    rng.shuffle(fields)
    return response_frame(head + b"".join(entries) + b"".join(fields))


def test_case6_the_same_frame_gives_one_key_order_on_every_decode() -> None:
    rng = random.Random(6)
    frames = [mixed_frame(i % 3, rng) for i in range(40)]
    decoder = ResponseDecoder()
    orders: dict[bytes, list[tuple[list[str], list[str]]]] = {}
    for _ in range(3):  # learned, then by hand (where it runs)
        events, error = events_of(frames, decoder)
        assert error is None
        for frame, p in zip(frames, [p for _, points in events for p in points], strict=True):
            orders.setdefault(frame, []).append((list(p.tags), list(p.fields)))
    assert PURE_PROTOBUF or decoder._hand.sizes()["layouts"][0] > 0  # type: ignore[union-attr]  # the hand path ran
    for frame, seen in orders.items():
        tags, fields = seen[0]
        assert tags == sorted(tags) and fields == sorted(fields)
        assert seen == [seen[0]] * len(seen)
        [payload] = FrameDecoder().feed(frame)
        reference = point_from_message(agent_pb2.Response.FromString(payload).point)  # the public conversion
        assert (list(reference.tags), list(reference.fields)) == seen[0]


# --- case 7: caches bounded in bytes ----------------------------------------------------------


def test_case7_a_cache_keeps_no_entry_over_the_cap_and_empties_at_its_budget() -> None:
    cache = _cache.BoundedCache("test", entries=4, budget=1000)
    assert cache.keep("big", "v", _cache.MAX_ENTRY_BYTES + 1) == "v" and "big" not in cache
    for i in range(3):
        cache.keep(i, i, 300)
    assert len(cache) == 3 and cache.used == 900
    cache.keep("next", 1, 300)  # past the budget: emptied first
    assert list(cache) == ["next"] and cache.used == 300
    cache.clear()
    assert cache.used == 0
    for i in range(4):
        cache.keep(("n", i), i, 1)
    assert len(cache) == 4  # past the entries: emptied first
    cache.keep("fifth", 5, 1)
    assert list(cache) == ["fifth"]


def test_case7_threads_keeping_entries_at_once_keep_the_count_exact() -> None:
    cache = _cache.BoundedCache("threads", entries=10**6, budget=10**9)
    start = threading.Barrier(4)

    def keep(k: int) -> None:
        start.wait(TIMEOUT)
        for i in range(5000):
            cache.keep((k, i), i, 7)

    threads = [threading.Thread(target=keep, args=(k,), name=f"fake-agent-cache-{k}") for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert len(cache) == 20000 and cache.used == 7 * 20000


@hand_paths
def test_case7_points_with_128_kib_tags_round_trip_and_are_never_cached() -> None:
    decoder = ResponseDecoder()
    hand = decoder._hand
    assert hand is not None
    before = (_fastcodec._SERIES.used, hand.sizes(), decoder._parser._tag_sets.used)
    for i in range(40):
        p = Point("m", tags={"big": f"{i:04d}" + "x" * (128 * 1024 - 4)}, fields={"v": float(i)}, time=T0 + i)
        events, error = events_of([encode_point(p)] * 2, decoder)
        assert error is None and events == [(POINTS, [p, p])]
    assert (_fastcodec._SERIES.used, hand.sizes(), decoder._parser._tag_sets.used) == before


def test_case7_memory_held_after_many_big_series_is_bounded() -> None:
    """300 series of 128 KiB tags encoded and decoded: what the codec still holds afterwards is a few MB, not 150."""
    decoder = ResponseDecoder()
    gc.collect()
    tracemalloc.start()
    try:
        for i in range(300):
            p = Point("m", tags={"big": f"{i:04d}" + "x" * (128 * 1024 - 4)}, fields={"v": float(i)}, time=T0 + i)
            events, error = events_of([encode_point(p)], decoder)
            assert error is None
            del p, events
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 8 * 2**20, f"{held / 2**20:.1f} MiB still held"


# --- the off switch ------------------------------------------------------------------------


OFF_SWITCH_PROGRAM = """
import sys, json, struct
sys.path.insert(0, {root!r})
import udf.convert as c
from udf import Point, Dimensions
from udf.wire import FrameDecoder
points = [Point("cpu", "db", "rp", "g", Dimensions(True, ["host"]), {{"host": "a"}},
                {{"v": i / 3, "n": i, "s": "x"}}, 10**18 + i)
          for i in range(50)]
frames = b"".join(c.encode_point(p) for p in points)
decoder = c.ResponseDecoder()
events, error = decoder.decode_frames(FrameDecoder().feed_frames(frames))
back = [p for _, ps in events for p in ps]
print(json.dumps({{"pure": c.PURE_PROTOBUF, "hand": decoder._hand is not None, "same": back == points,
                   "frames": frames.hex()}}))
"""


def test_the_off_switch_turns_the_hand_written_paths_off_and_changes_no_result() -> None:
    import json

    results = {}
    for value in ("1", "0"):
        env = {**os.environ, "UDF_PUREPROTOBUF": value}
        out = subprocess.run(
            [sys.executable, "-c", OFF_SWITCH_PROGRAM.format(root=str(ROOT))],
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 6,
            check=True,
        )
        results[value] = json.loads(out.stdout)
    assert results["1"]["pure"] is True and results["1"]["hand"] is False
    assert results["0"]["pure"] is False and results["0"]["hand"] is True
    assert results["1"]["same"] and results["0"]["same"]
    requests = {}
    for value, result in results.items():
        payloads = FrameDecoder().feed(bytes.fromhex(result["frames"]))
        requests[value] = [agent_pb2.Request.FromString(p) for p in payloads]
    assert requests["1"] == requests["0"]  # protobuf's bytes and the hand-written ones parse the same


# --- both backends -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get("UDF_CASES_OTHER_BACKEND")), reason="this is the other backend's run")
def test_every_case_holds_on_the_other_protobuf_backend() -> None:
    other = "upb" if BACKEND == "python" else "python"
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": other, "UDF_CASES_OTHER_BACKEND": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", __file__],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " passed" in out.stdout
    which = subprocess.run(
        [sys.executable, "-c", "from google.protobuf.internal import api_implementation as a; print(a.Type())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
        check=True,
    )
    assert which.stdout.strip() == other
