"""The hand-written point decoder (``udf._fastdecode``) and the compiled field writers (``udf._fastcodec``).

Every test decodes the same bytes through ``ResponseDecoder.decode_frames``
(learning, then the hand path) and through protobuf's own parse
(``point_from_message``), and checks both that they agree and that the hand
path was really taken (or really refused): ``Stream.hand`` asks the stream's
own hand decoder alone.
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import pytest

import agent_pb2
from udf import Batch, BatchPoint, Dimensions, Point, _fastcodec, _fastdecode
from udf.convert import (
    BATCH,
    POINTS,
    PURE_PROTOBUF,
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

pytestmark = pytest.mark.skipif(PURE_PROTOBUF, reason="UDF_PUREPROTOBUF=1: the hand-written paths are off")


class Stream:
    """One stream's decoder: ``decode`` is the reader's path, ``hand`` asks its hand decoder alone."""

    def __init__(self) -> None:
        self.decoder = ResponseDecoder()
        assert self.decoder._hand is not None
        # Learning from the first frame on (a new stream waits for LEARN_AFTER frames).
        self.hand_decoder = self.decoder._hand = _fastdecode.HandDecoder(learn_after=0)

    def decode(self, frames: list[bytes]) -> list[Any]:
        """The points ``decode_frames`` makes of ``frames`` (no error allowed)."""
        events, error = self.decoder.decode_frames(frames)
        if error is not None:
            raise error
        return [p for kind, items in events if kind is POINTS for p in items]

    def hand(self, frame: bytes, batch: bool = False) -> Any:
        return self.hand_decoder.decode(frame, batch)


@pytest.fixture
def stream() -> Stream:
    return Stream()


def response_frame(body: bytes) -> bytes:
    """A Response{point} frame around a serialized Point."""
    return encode_frame(b"\x8a\x01" + encode_uvarint(len(body)) + body)


def decode(frames: list[bytes]) -> list[Any]:
    """The points a new stream's ``decode_frames`` makes of ``frames``."""
    return Stream().decode(frames)


def reference(body: bytes) -> Point:
    return point_from_message(agent_pb2.Point.FromString(body))


def canonical(i: int, **extra: Any) -> agent_pb2.Point:
    """A point as Go and the Python agents write it: protobuf's field order, the time first."""
    args: Any = dict(
        time=T0 + i,
        name="cpu",
        database="telegraf",
        retentionPolicy="autogen",
        group="cpu\nhost=a",
        dimensions=["host"],
        tags={"host": "a", "dc": "x"},
        fieldsDouble={"usage": i / 7},
        fieldsInt={"count": i * 1000},
    )
    for key, value in extra.items():
        args[key] = {**args[key], **value} if isinstance(value, dict) and key in args else value
    return agent_pb2.Point(**args)


def test_canonical_points_are_learned_once_then_decoded_by_hand(stream: Stream) -> None:
    bodies = [canonical(i).SerializeToString() for i in range(50)]
    frames = [response_frame(b) for b in bodies]
    assert stream.hand(frames[0]) is None  # nothing learned yet
    assert stream.decode(frames) == [reference(b) for b in bodies]
    hand = [stream.hand(f) for f in frames[1:]]
    assert None not in hand
    assert hand == [reference(b) for b in bodies[1:]]


def test_encode_point_frames_series_first_are_decoded_by_hand(stream: Stream) -> None:
    points = [
        Point(
            "cpu",
            "db",
            "rp",
            "g",
            Dimensions(True, ["host"]),
            {"host": "a"},
            {"v": i * 0.5, "n": i, "b": i % 2 == 0},
            T0 + i,
        )
        for i in range(300)
    ]
    frames = [encode_point(p) for p in points]  # Request.point and Response.point are both field 17
    assert stream.decode(frames) == points
    assert [stream.hand(f) for f in frames] == points


def test_decoded_points_are_fresh_objects(stream: Stream) -> None:
    frames = [response_frame(canonical(1).SerializeToString())] * 3
    first, second, third = stream.decode(frames)
    assert first == second == third
    second.tags["host"] = "changed"
    second.dimensions.tag_names.append("more")
    second.fields["usage"] = -1.0
    assert third == first
    assert stream.decode(frames[:1]) == [first]


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
    return (
        p.name,
        p.tags,
        p.dimensions,
        p.time,
        {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in p.fields.items()},
    )


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


def test_a_changed_key_or_length_byte_is_refused_by_the_mask(stream: Stream) -> None:
    body = canonical(3).SerializeToString()
    stream.decode([response_frame(body)])
    assert stream.hand(response_frame(body)) == reference(body)
    key_at = body.index(b"usage")
    renamed = body[:key_at] + b"usagf" + body[key_at + 5 :]
    got = stream.hand(response_frame(renamed))
    assert got is None  # same length, one byte of a key differs: not this layout
    assert stream.decode([response_frame(renamed)])[0].fields["usagf"] == 3 / 7


def test_a_string_value_that_is_not_utf8_is_protobufs_error(stream: Stream) -> None:
    good = canonical(1, fieldsString={"s": "ab"}).SerializeToString()
    stream.decode([response_frame(good)])
    bad = good.replace(b"\x12\x02ab", b"\x12\x02\xff\xfe")
    assert bad != good
    assert stream.hand(response_frame(bad)) is None
    events, error = stream.decoder.decode_frames([response_frame(bad)])
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


def test_batch_points_are_decoded_by_hand_inside_a_batch(stream: Stream) -> None:
    batch = Batch(
        name="cpu",
        tmax=T0 + 9,
        group="g",
        tags={"host": "a"},
        points=[BatchPoint(T0 + i, {"v": i / 3, "n": i}, {"host": "a", "dc": "x"}) for i in range(10)],
    )
    data = encode_batch(batch)  # Request frames read as Response frames: begin, point and end are 16, 17, 18 in both
    frames = FrameDecoder().feed_frames(data)
    for _ in range(2):  # learned, then by hand
        events, error = stream.decoder.decode_frames(frames)
        assert error is None
        [(kind, got)] = events
        assert kind is BATCH and got == batch
    point_frame = frames[1]
    hand = stream.hand(point_frame, True)
    assert type(hand) is BatchPoint and hand == batch.points[0]
    [payload] = FrameDecoder().feed(point_frame)
    assert hand == batch_point_from_message(agent_pb2.Response.FromString(payload).point)


def test_caches_are_bounded_in_entries_and_bytes(stream: Stream) -> None:
    frames = [
        response_frame(
            agent_pb2.Point(
                time=T0, name="m", tags={"host": f"h{i}"}, fieldsDouble={f"f{i % 2000}": 1.0}
            ).SerializeToString()
        )
        for i in range(_fastdecode.SERIES_CACHE_SIZE + 100)
    ]
    for frame in frames:  # learn everything
        [payload] = FrameDecoder().feed(frame)
        stream.hand_decoder.learn(frame, point_from_message(agent_pb2.Response.FromString(payload).point))
    sizes = stream.hand_decoder.sizes()
    assert (
        0 < sizes["series"][0] <= _fastdecode.SERIES_CACHE_SIZE and sizes["series"][1] <= _fastdecode.SERIES_CACHE_BYTES
    )
    assert (
        0 < sizes["layouts"][0] <= _fastdecode.LAYOUT_CACHE_SIZE
        and sizes["layouts"][1] <= _fastdecode.LAYOUT_CACHE_BYTES
    )
    assert 0 < sizes["heads"][0] <= _fastdecode.HEAD_CACHE_SIZE
    assert sizes["span lengths"][0] <= _fastdecode.SPAN_LENGTHS
    assert len(_fastdecode._COMPILED) <= _fastdecode.COMPILED_CACHE_SIZE
    assert _fastdecode._COMPILED.used <= _fastdecode.COMPILED_CACHE_BYTES


def test_big_series_and_tails_are_decoded_but_never_learned(stream: Stream) -> None:
    big_tag = canonical(0, tags={"big": "t" * 5000}).SerializeToString()
    big_field = canonical(0, fieldsString={"s": "f" * 3000}).SerializeToString()
    for body in (big_tag, big_field):
        frames = [response_frame(body)] * 3
        assert stream.decode(frames) == [reference(body)] * 3
        assert stream.hand(frames[0]) is None
    assert stream.hand_decoder.sizes()["series"] == (0, 0)


def unique_frames(rng: random.Random, count: int) -> list[bytes]:
    """Frames of a new series each."""
    return [
        response_frame(agent_pb2.Point(time=T0, name=f"m{rng.random()}", fieldsDouble={"v": 1.0}).SerializeToString())
        for _ in range(count)
    ]


def test_traffic_that_never_repeats_turns_the_hand_path_off_and_regular_traffic_back_on() -> None:
    rng = random.Random(4)
    window, read = _fastdecode.WINDOW, 64
    stream = CountedStream()
    regular = [response_frame(canonical(i).SerializeToString()) for i in range(read)]
    expected = [reference(canonical(i).SerializeToString()) for i in range(read)]

    for _ in range(2 * window // read):
        stream.decode(unique_frames(rng, read))
    stream.tried = stream.hits = 0
    for _ in range(window // read):
        stream.decode(unique_frames(rng, read))
    assert 1 <= stream.tried <= _fastdecode.PROBE + read  # only the probe reads at the start of a window
    for _ in range(2 * window // read):  # the probes learn the regular traffic and hit
        assert stream.decode(regular) == expected
    stream.tried = stream.hits = 0
    for _ in range(window // read):
        assert stream.decode(regular) == expected
    assert stream.tried == stream.hits == window  # the hand path for every point again


def test_one_streams_irregular_traffic_leaves_another_on_the_hand_path() -> None:
    """Each ResponseDecoder has its own window: a noisy agent does not slow a regular one."""
    rng = random.Random(5)
    read = 64
    noisy, regular = CountedStream(), CountedStream()
    frames = [response_frame(canonical(i).SerializeToString()) for i in range(read)]
    expected = [reference(canonical(i).SerializeToString()) for i in range(read)]
    for _ in range(3 * _fastdecode.WINDOW // read):  # interleaved, as two readers in one process
        noisy.decode(unique_frames(rng, read))
        assert regular.decode(frames) == expected
    noisy.tried = regular.tried = regular.hits = 0
    for _ in range(_fastdecode.WINDOW // read):
        noisy.decode(unique_frames(rng, read))
        assert regular.decode(frames) == expected
    assert noisy.tried <= _fastdecode.PROBE + read  # the noisy stream is on protobuf's path
    assert regular.tried == regular.hits == _fastdecode.WINDOW  # the regular one on the hand path


class CountedStream(Stream):
    """A Stream that counts the frames that try its hand path, and the hits."""

    def __init__(self) -> None:
        super().__init__()
        self.tried = self.hits = 0
        self.decoder._hand = _Counting(self.hand_decoder, self)  # type: ignore[assignment]


class _Counting:
    """A HandDecoder's stand-in that counts for a CountedStream."""

    def __init__(self, real: _fastdecode.HandDecoder, counts: CountedStream) -> None:
        self.real, self.counts = real, counts
        self.use, self.missed, self.learn = real.use, real.missed, real.learn

    def decode(self, frame: bytes, batch: bool) -> Any:
        point = self.real.decode(frame, batch)
        self.counts.tried += 1
        self.counts.hits += point is not None
        return point


def test_a_new_stream_learns_only_once_it_has_read_enough_frames() -> None:
    """A decoder made for one short read (a batch decoded on its own) takes protobuf's path and learns nothing."""
    frames = [response_frame(canonical(i).SerializeToString()) for i in range(_fastdecode.LEARN_AFTER)]
    want = [reference(canonical(i).SerializeToString()) for i in range(_fastdecode.LEARN_AFTER)]
    short = ResponseDecoder()
    hand = short._hand
    assert hand is not None
    for i in range(0, _fastdecode.LEARN_AFTER - 1, 3):
        events, error = short.decode_frames(frames[i : i + 3][: _fastdecode.LEARN_AFTER - 1 - i])
        assert error is None and events[0][1] == want[i : i + 3][: _fastdecode.LEARN_AFTER - 1 - i]
    assert hand.sizes()["series"] == (0, 0) and hand.sizes()["heads"] == (0, 0)
    events, error = short.decode_frames(frames)  # the stream's 63rd frame on: learned, then by hand
    assert error is None and events == [(POINTS, want)]
    assert hand.sizes()["series"][0] == 1 and hand.decode(frames[1], False) == want[1]
    long = ResponseDecoder()  # one long read: learned at once
    assert long.decode_frames(frames)[0] == [(POINTS, want)] and long._hand is not None
    assert long._hand.decode(frames[1], False) == want[1]


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
    assert _fastcodec._WRITERS.data[("v", "n", "s", "b")] is not None
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


def test_readers_in_many_threads_share_the_compiled_layouts_safely() -> None:
    """Servers decode in their own reader threads, each with its own decoder, sharing the compiled layouts:
    learning and emptying that shared cache at once never gives a wrong point."""
    import threading

    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def reader(k: int) -> None:
        try:
            bodies = [
                canonical(
                    i, name=f"m{k}", tags={"host": f"h{i % (50 * (k + 1))}"}, fieldsInt={f"n{k}": i}
                ).SerializeToString()
                for i in range(600)
            ]
            frames = [response_frame(b) for b in bodies]
            want = [reference(b) for b in bodies]
            stream = Stream()
            start.wait(timeout=10)
            for _ in range(5):
                for i in range(0, len(frames), 60):
                    assert stream.decode(frames[i : i + 60]) == want[i : i + 60]
                    if k == 0 and i % 180 == 0:
                        _fastdecode._COMPILED.clear()  # the shared layouts emptied while the others read
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(k,), name=f"fake-agent-reader-{k}") for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not [t.name for t in threads if t.is_alive()]
    assert not errors, errors[0]


def test_a_series_span_that_is_a_prefix_of_another_does_not_hide_it(stream: Stream) -> None:
    """Points with and without an optional tag: the shorter span is a prefix of the longer one."""
    head = agent_pb2.Point(time=T0, name="cpu").SerializeToString()
    host = agent_pb2.Point(tags={"host": "a"}).SerializeToString()
    region = agent_pb2.Point(tags={"region": "eu"}).SerializeToString()
    fields = agent_pb2.Point(fieldsDouble={"v": 1.5}).SerializeToString()
    short, long = head + host + fields, head + host + region + fields
    stream.decode([response_frame(long), response_frame(short)])  # both learned, the shorter length tried first
    for body in (short, long):
        assert stream.hand(response_frame(body)) == reference(body)
    assert reference(long).tags == {"host": "a", "region": "eu"}
