"""The hand-written point decoder (``udf._fastdecode``) and the compiled field writers (``udf._fastcodec``).

Every test decodes the same bytes through ``ResponseDecoder.decode_frames``
(learning, then the hand path) and through protobuf's own parse
(``point_from_message``), and checks both that they agree and that the hand
path was really taken (or really refused).
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any, Iterator, List

import pytest

import agent_pb2
from udf import Batch, BatchPoint, Dimensions, Point, _fastcodec, _fastdecode
from udf.convert import (
    BATCH,
    POINTS,
    ResponseDecoder,
    batch_point_from_message,
    encode_batch,
    encode_point,
    point_body_general,
    point_from_message,
)
from udf.errors import ProtocolError
from udf.wire import FrameDecoder, encode_frame, encode_uvarint

T0 = 1_500_000_000_000_000_000


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    _fastdecode.clear()
    yield
    _fastdecode.clear()


def response_frame(body: bytes) -> bytes:
    """A Response{point} frame around a serialized Point."""
    return encode_frame(b"\x8a\x01" + encode_uvarint(len(body)) + body)


def decode(frames: List[bytes]) -> List[Any]:
    """The points ``decode_frames`` makes of ``frames`` (no error allowed)."""
    events, error = ResponseDecoder().decode_frames(frames)
    if error is not None:
        raise error
    return [p for kind, items in events if kind is POINTS for p in items]


def reference(body: bytes) -> Point:
    return point_from_message(agent_pb2.Point.FromString(body))


def canonical(i: int, **extra: Any) -> agent_pb2.Point:
    """A point as Go and the Python agents write it: protobuf's field order, the time first."""
    args: Any = dict(
        time=T0 + i, name="cpu", database="telegraf", retentionPolicy="autogen", group="cpu\nhost=a",
        dimensions=["host"], tags={"host": "a", "dc": "x"}, fieldsDouble={"usage": i / 7}, fieldsInt={"count": i * 1000},
    )
    for key, value in extra.items():
        args[key] = {**args[key], **value} if isinstance(value, dict) and key in args else value
    return agent_pb2.Point(**args)


def test_canonical_points_are_learned_once_then_decoded_by_hand() -> None:
    bodies = [canonical(i).SerializeToString() for i in range(50)]
    frames = [response_frame(b) for b in bodies]
    assert _fastdecode.decode_point_frame(frames[0], False) is None  # nothing learned yet
    assert decode(frames) == [reference(b) for b in bodies]
    hand = [_fastdecode.decode_point_frame(f, False) for f in frames[1:]]
    assert None not in hand
    assert hand == [reference(b) for b in bodies[1:]]


def test_encode_point_frames_series_first_are_decoded_by_hand() -> None:
    points = [
        Point("cpu", "db", "rp", "g", Dimensions(True, ["host"]), {"host": "a"}, {"v": i * 0.5, "n": i, "b": i % 2 == 0}, T0 + i)
        for i in range(300)
    ]
    frames = [encode_point(p) for p in points]  # Request.point and Response.point are both field 17
    assert decode(frames) == points
    assert [_fastdecode.decode_point_frame(f, False) for f in frames] == points


def test_decoded_points_are_fresh_objects() -> None:
    frames = [response_frame(canonical(1).SerializeToString())] * 3
    first, second, third = decode(frames)
    assert first == second == third
    second.tags["host"] = "changed"
    second.dimensions.tag_names.append("more")
    second.fields["usage"] = -1.0
    assert third == first
    assert decode(frames[:1]) == [first]


@pytest.mark.parametrize(
    "extra",
    [
        {"byName": True},
        {"fieldsBool": {"ok": True, "bad": False}},
        {"fieldsString": {"status": "fine", "empty": "", "utf8": "日本"}},
        {"fieldsInt": {"neg": -5}},  # ten bytes: never learned, protobuf's path
        {"fieldsInt": {"big": 2**62}},
        {"fieldsDouble": {"nan": math.nan, "inf": -math.inf}},
    ],
)
def test_every_value_kind_agrees_with_protobuf(extra: Any) -> None:
    bodies = [canonical(i, **extra).SerializeToString() for i in range(5)]
    got = decode([response_frame(b) for b in bodies] * 2)
    want = [reference(b) for b in bodies] * 2
    assert [_normal(p) for p in got] == [_normal(p) for p in want]


def _normal(p: Point) -> Any:
    """NaN equal to NaN."""
    return (p.name, p.tags, p.dimensions, p.time, {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in p.fields.items()})


def test_a_field_after_the_series_or_twice_takes_protobufs_path() -> None:
    body = canonical(3).SerializeToString()
    frames = [response_frame(body)] * 2
    decode(frames)  # learned
    later = agent_pb2.Point(time=T0 + 99, byName=True).SerializeToString()  # time twice, byName after the fields
    tag_again = agent_pb2.Point(tags={"host": "z"}).SerializeToString()  # a series field in the tail
    name_again = agent_pb2.Point(name="mem").SerializeToString()
    for odd in (body + later, body + tag_again, body + name_again, tag_again + body):
        got = decode([response_frame(odd)])
        assert got == [reference(odd)], odd
    assert reference(body + later).time == T0 + 99 and reference(body + tag_again).tags["host"] == "z"


def test_a_changed_key_or_length_byte_is_refused_by_the_mask() -> None:
    body = canonical(3).SerializeToString()
    decode([response_frame(body)])
    assert _fastdecode.decode_point_frame(response_frame(body), False) == reference(body)
    key_at = body.index(b"usage")
    renamed = body[:key_at] + b"usagf" + body[key_at + 5 :]
    got = _fastdecode.decode_point_frame(response_frame(renamed), False)
    assert got is None  # same length, one byte of a key differs: not this layout
    assert decode([response_frame(renamed)])[0].fields["usagf"] == 3 / 7


def test_a_string_value_that_is_not_utf8_is_protobufs_error() -> None:
    good = canonical(1, fieldsString={"s": "ab"}).SerializeToString()
    decode([response_frame(good)])
    bad = good.replace(b"\x12\x02ab", b"\x12\x02\xff\xfe")
    assert bad != good
    assert _fastdecode.decode_point_frame(response_frame(bad), False) is None
    events, error = ResponseDecoder().decode_frames([response_frame(bad)])
    try:  # protobuf 7 refuses it; 4.22's upb reads it (as what it reads)
        want: Any = [(POINTS, [reference(bad)])]
    except Exception:
        want = ProtocolError
    if want is ProtocolError:
        assert isinstance(error, ProtocolError) and events == []
    else:
        assert error is None and events == want


def test_a_time_that_is_not_nine_bytes_is_decoded_by_protobuf() -> None:
    for t in (0, 1, -1, 127, 1 << 40):
        body = agent_pb2.Point(time=t, name="cpu", fieldsDouble={"v": 1.0}).SerializeToString()
        assert decode([response_frame(body)] * 2) == [reference(body)] * 2


def test_batch_points_are_decoded_by_hand_inside_a_batch() -> None:
    batch = Batch(
        name="cpu", tmax=T0 + 9, group="g", tags={"host": "a"},
        points=[BatchPoint(T0 + i, {"v": i / 3, "n": i}, {"host": "a", "dc": "x"}) for i in range(10)],
    )
    data = encode_batch(batch)  # Request frames read as Response frames: begin, point and end are 16, 17, 18 in both
    frames = FrameDecoder().feed_frames(data)
    for _ in range(2):  # learned, then by hand
        events, error = ResponseDecoder().decode_frames(frames)
        assert error is None
        [(kind, got)] = events
        assert kind is BATCH and got == batch
    point_frame = frames[1]
    hand = _fastdecode.decode_point_frame(point_frame, True)
    assert type(hand) is BatchPoint and hand == batch.points[0]
    [payload] = FrameDecoder().feed(point_frame)
    assert hand == batch_point_from_message(agent_pb2.Response.FromString(payload).point)


def test_caches_are_bounded() -> None:
    frames = [
        response_frame(agent_pb2.Point(time=T0, name="m", tags={"host": f"h{i}"}, fieldsDouble={f"f{i % 2000}": 1.0}).SerializeToString())
        for i in range(_fastdecode.SERIES_CACHE_SIZE + 100)
    ]
    _fastdecode.PROBE, probe = 1 << 30, _fastdecode.PROBE  # learn everything, however often it misses
    try:
        decode(frames)
    finally:
        _fastdecode.PROBE = probe
    assert len(_fastdecode._SERIES) <= _fastdecode.SERIES_CACHE_SIZE
    assert sum(len(v) for v in _fastdecode._LAYOUTS.values()) <= _fastdecode.LAYOUT_CACHE_SIZE
    assert len(_fastdecode._HEADS) <= _fastdecode.HEAD_CACHE_SIZE
    assert len(_fastdecode._SPAN_LENGTHS) <= _fastdecode.SPAN_LENGTHS


def test_traffic_that_never_repeats_turns_the_hand_path_off_and_regular_traffic_back_on(monkeypatch: Any) -> None:
    rng = random.Random(4)
    window, read = _fastdecode.WINDOW, 64
    tried = {"points": 0, "hits": 0}
    hand = _fastdecode.decode_point_frame

    def counted(frame: bytes, batch: bool) -> Any:
        point = hand(frame, batch)
        tried["points"] += 1
        tried["hits"] += point is not None
        return point

    monkeypatch.setattr(_fastdecode, "decode_point_frame", counted)

    def unique() -> List[bytes]:  # a new series every point
        return [
            response_frame(agent_pb2.Point(time=T0, name=f"m{rng.random()}", fieldsDouble={"v": 1.0}).SerializeToString())
            for _ in range(read)
        ]

    regular = [response_frame(canonical(i).SerializeToString()) for i in range(read)]
    expected = [reference(canonical(i).SerializeToString()) for i in range(read)]

    for _ in range(2 * window // read):
        decode(unique())
    tried["points"] = 0
    for _ in range(window // read):
        decode(unique())
    assert 1 <= tried["points"] <= _fastdecode.PROBE + read  # only the probe reads at the start of a window
    for _ in range(2 * window // read):  # the probes learn the regular traffic and hit
        assert decode(regular) == expected
    tried["points"] = tried["hits"] = 0
    for _ in range(window // read):
        assert decode(regular) == expected
    assert tried["points"] == tried["hits"] == window  # the hand path for every point again


# --- varints ---------------------------------------------------------------------------


def test_nine_byte_varints_and_times_round_trip() -> None:
    rng = random.Random(7)
    for t in [1 << 56, (1 << 63) - 1, T0] + [rng.randrange(1 << 56, 1 << 63) for _ in range(20_000)]:
        field = _fastcodec.time_field(t)
        assert field == b"\x08" + encode_uvarint(t)
        assert _fastdecode.nine_byte_varint(*struct.unpack("<QB", field[1:])) == t
        assert _fastdecode.varint_value(field[1:]) == t
    for t in (0, 1, -1, 127, 128, -(1 << 63), (1 << 56) - 1):
        assert _fastcodec.time_field(t) == (b"" if t == 0 else b"\x08" + encode_uvarint(t & ((1 << 64) - 1)))
    assert _fastcodec.time_field(1 << 63) is None and _fastcodec.time_field(-(1 << 63) - 1) is None


# --- the compiled writers (encode) -------------------------------------------------------


def _sent(p: Point) -> Any:
    [payload] = FrameDecoder().feed(encode_point(p))
    return agent_pb2.Request.FromString(payload).point


def test_a_writer_is_compiled_per_key_set_and_falls_back_when_types_change() -> None:
    base = dict(name="cpu", tags={"host": "a"}, time=T0)
    first = Point(fields={"v": 1.5, "n": 7, "s": "x", "b": True}, **base)  # type: ignore[arg-type]
    assert _sent(first) == agent_pb2.Point.FromString(point_body_general(first))
    assert _fastcodec._WRITERS[("v", "n", "s", "b")] is not None
    for fields in (
        {"v": 2, "n": 7.5, "s": "y", "b": False},  # the same keys, other types: the general path
        {"v": 1.0, "n": 2**63 - 1, "s": "日本", "b": True},
        {"v": -0.0, "n": -(2**63), "s": "", "b": False},
        {"n": 1, "v": 1.0, "s": "x", "b": True},  # another order: another writer
    ):
        p = Point(fields=fields, **base)  # type: ignore[arg-type]
        assert _sent(p) == agent_pb2.Point.FromString(point_body_general(p)), fields


@pytest.mark.parametrize(
    "fields, error",
    [
        ({"v": 1.5, "n": 2**63}, ValueError),
        ({"v": 1.5, "s": "\ud800"}, ValueError),
        ({"v": 1.5, "x": None}, TypeError),
    ],
)
def test_a_writer_refuses_what_protobuf_refuses(fields: Any, error: type) -> None:
    ok = Point(name="cpu", fields={"v": 1.5, "n": 1, "s": "a", "x": 1.0}, time=T0)
    encode_point(ok)  # compile writers for nearby key sets first
    with pytest.raises(error):
        encode_point(Point(name="cpu", fields=fields, time=T0))
    with pytest.raises(error):
        point_body_general(Point(name="cpu", fields=fields, time=T0))


def test_readers_in_many_threads_share_the_caches_safely() -> None:
    """Servers decode in their own reader threads: learning and evicting at once never gives a wrong point."""
    import threading

    errors: List[BaseException] = []
    start = threading.Barrier(4)

    def reader(k: int) -> None:
        try:
            bodies = [
                canonical(i, name=f"m{k}", tags={"host": f"h{i % (50 * (k + 1))}"}, fieldsInt={f"n{k}": i}).SerializeToString()
                for i in range(600)
            ]
            frames = [response_frame(b) for b in bodies]
            want = [reference(b) for b in bodies]
            start.wait(timeout=10)
            for _ in range(5):
                for i in range(0, len(frames), 60):
                    assert decode(frames[i : i + 60]) == want[i : i + 60]
                    if k == 0 and i % 180 == 0:
                        _fastdecode.clear()  # evictions while the others read
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(k,), name=f"fake-agent-reader-{k}") for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not [t.name for t in threads if t.is_alive()]
    assert not errors, errors[0]


def test_a_series_span_that_is_a_prefix_of_another_does_not_hide_it() -> None:
    """Points with and without an optional tag: the shorter span is a prefix of the longer one."""
    head = agent_pb2.Point(time=T0, name="cpu").SerializeToString()
    host = agent_pb2.Point(tags={"host": "a"}).SerializeToString()
    region = agent_pb2.Point(tags={"region": "eu"}).SerializeToString()
    fields = agent_pb2.Point(fieldsDouble={"v": 1.5}).SerializeToString()
    short, long = head + host + fields, head + host + region + fields
    decode([response_frame(long), response_frame(short)])  # both learned, the shorter length tried first
    for body in (short, long):
        assert _fastdecode.decode_point_frame(response_frame(body), False) == reference(body)
    assert reference(long).tags == {"host": "a", "region": "eu"}
