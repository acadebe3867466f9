"""The hot paths give the same results as the plain ones they speed up.

* ``FrameDecoder.feed_frames`` returns the frames ``feed`` returns, prefix included;
* ``parse_responses`` (one parse for a run of frames) equals parsing each payload,
  also when a frame in the run is bad;
* ``ResponseDecoder.decode_frames`` equals ``decode``;
* ``Channel`` notifies only counted waiters: no wake-up is lost.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import agent_pb2
from udf.channel import Channel
from udf.convert import ResponseDecoder, parse_responses
from udf.errors import ProtocolError
from udf.wire import FrameDecoder, encode_frame

TIMEOUT = 10.0


def frame(response: Any) -> bytes:
    return encode_frame(response.SerializeToString())


def pb_point(i: int, **extra: Any) -> Any:
    return agent_pb2.Point(
        name="cpu",
        time=i,
        tags={"host": f"h{i}"},
        fieldsDouble={"v": i / 3},
        fieldsInt={"n": i},
        **extra,
    )


RESPONSES = [
    agent_pb2.Response(point=pb_point(1)),
    agent_pb2.Response(keepalive=agent_pb2.KeepaliveResponse(time=5)),
    agent_pb2.Response(begin=agent_pb2.BeginBatch(name="b", size=2)),
    agent_pb2.Response(point=pb_point(2, fieldsString={"s": "x" * 200})),  # a 2-byte prefix
    agent_pb2.Response(point=pb_point(3, fieldsBool={"b": True}, dimensions=["host"], byName=True)),
    agent_pb2.Response(end=agent_pb2.EndBatch(name="b", tmax=9, tags={"t": "v"})),
    agent_pb2.Response(info=agent_pb2.InfoResponse(wants=agent_pb2.BATCH)),
    agent_pb2.Response(point=pb_point(4, fieldsString={"big": "y" * 70_000})),  # a 3-byte prefix, many reads
    agent_pb2.Response(snapshot=agent_pb2.SnapshotResponse(snapshot=b"\x00\xff" * 10_000)),
    agent_pb2.Response(point=pb_point(5)),
]
STREAM = b"".join(frame(r) for r in RESPONSES)


@pytest.mark.parametrize("chunk", [1, 7, 128, 4096, len(STREAM)])
def test_feed_frames_is_feed_with_prefixes(chunk: int) -> None:
    plain, whole = FrameDecoder(), FrameDecoder()
    payloads: list[bytes] = []
    frames: list[bytes] = []
    for i in range(0, len(STREAM), chunk):
        payloads += plain.feed(STREAM[i : i + chunk])
        frames += whole.feed_frames(STREAM[i : i + chunk])
    plain.eof()
    whole.eof()
    assert frames == [frame(r) for r in RESPONSES]
    assert [encode_frame(p) for p in payloads] == frames


def test_feed_frames_keeps_a_partial_frame_for_later() -> None:
    decoder = FrameDecoder()
    first = frame(RESPONSES[0])
    assert decoder.feed_frames(first + first[:5]) == [first]
    assert decoder.feed_frames(first[5:]) == [first]
    decoder.eof()


def test_parse_responses_equals_parsing_each_payload() -> None:
    frames = FrameDecoder().feed_frames(STREAM)
    responses, error = parse_responses(frames)
    assert error is None
    assert list(responses) == RESPONSES
    assert all(type(r) is agent_pb2.Response for r in responses)
    assert parse_responses([]) == ([], None)


@pytest.mark.parametrize("bad_at", [0, 3, len(RESPONSES)])
def test_parse_responses_stops_at_a_bad_frame(bad_at: int) -> None:
    frames = FrameDecoder().feed_frames(STREAM)
    bad = encode_frame(b"\x0a\x05ab")  # field 1 says 5 bytes, 2 follow
    frames.insert(bad_at, bad)
    responses, error = parse_responses(frames)
    assert list(responses) == RESPONSES[:bad_at]
    assert isinstance(error, ProtocolError)
    assert "undecodable Response (4 bytes)" in str(error)


def _decode_both(stream: bytes) -> tuple[Any, Any]:
    plain = ResponseDecoder().decode(FrameDecoder().feed(stream))
    fast = ResponseDecoder().decode_frames(FrameDecoder().feed_frames(stream))
    return plain, fast


def test_decode_frames_equals_decode() -> None:
    plain, fast = _decode_both(STREAM)
    assert fast[0] == plain[0]
    assert fast[1] is None and plain[1] is None
    kinds = [kind for kind, _ in fast[0]]
    assert kinds == ["points", "keepalive", "batch", "info", "points", "snapshot", "points"]


@pytest.mark.parametrize(
    "tail, message",
    [
        (frame(agent_pb2.Response(error=agent_pb2.ErrorResponse(error="boom"))), "boom"),
        (encode_frame(b""), "no known message set (0 bytes)"),
        (encode_frame(b"\x0a\x05ab"), "undecodable Response"),
        (frame(agent_pb2.Response(end=agent_pb2.EndBatch())) * 2, "EndBatch received without a BeginBatch"),
    ],
    ids=["agent-error", "empty", "undecodable", "end-without-begin"],
)
def test_decode_frames_equals_decode_up_to_an_error(tail: bytes, message: str) -> None:
    stream = STREAM + tail + frame(RESPONSES[0])
    plain, fast = _decode_both(stream)
    assert fast[0] == plain[0]
    assert type(fast[1]) is type(plain[1])
    assert str(fast[1]) == str(plain[1])
    assert message in str(fast[1])


# --- Channel: notify only counted waiters ------------------------------------------------


def _threads(n: int, target: Any) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, name=f"fake-agent-fast-{i}", daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def _wait_until(predicate: Any) -> None:
    done = threading.Event()
    for _ in range(int(TIMEOUT / 0.001)):
        if predicate():
            return
        done.wait(0.001)
    raise AssertionError("condition not reached")


def test_every_blocked_getter_is_woken_by_puts() -> None:
    ch: Channel[int] = Channel(4)
    got: list[int] = []
    threads = _threads(3, lambda: got.append(ch.get(timeout=TIMEOUT)))
    _wait_until(lambda: ch._getters == 3)
    ch.put(1)
    ch.put_many([2, 3])
    for t in threads:
        t.join(TIMEOUT)
    assert sorted(got) == [1, 2, 3]
    assert ch._getters == 0


def test_every_blocked_putter_is_woken_by_gets() -> None:
    ch: Channel[int] = Channel(1)
    ch.put(0)
    threads = _threads(3, lambda: ch.put(1, timeout=TIMEOUT))
    _wait_until(lambda: ch._putters == 3)
    got = [ch.get(timeout=TIMEOUT) for _ in range(4)]
    for t in threads:
        t.join(TIMEOUT)
    assert got == [0, 1, 1, 1]
    assert ch._putters == 0


def test_a_timed_out_waiter_is_no_longer_counted() -> None:
    import queue

    ch: Channel[int] = Channel(1)
    with pytest.raises(queue.Empty):
        ch.get(timeout=0.01)
    ch.put(1)
    with pytest.raises(queue.Full):
        ch.put(2, timeout=0.01)
    assert (ch._getters, ch._putters) == (0, 0)


# --- the hand-written codec paths (udf._fastcodec, the view schema) ---------------------

from udf import (  # noqa: E402
    Dimensions,
    Point,
    _fastcodec,  # noqa: E402
)
from udf.convert import POINTS, encode_point, point_body_general  # noqa: E402


def _point_of(frame_bytes: bytes) -> Any:
    [payload] = FrameDecoder().feed(frame_bytes)
    return agent_pb2.Request.FromString(payload).point


def test_series_cache_never_returns_stale_bytes_after_in_place_changes() -> None:
    p = Point(
        name="cpu",
        group="g",
        dimensions=Dimensions(False, ["host"]),
        tags={"host": "a"},
        fields={"v": 1.5, "n": -3, "s": "x", "b": True},
        time=1_500_000_000_000_000_000,
    )
    first = _point_of(encode_point(p))
    assert first == agent_pb2.Point.FromString(point_body_general(p))
    p.tags["host"] = "b"
    p.dimensions.tag_names.append("dc")
    p.fields["v"] = 2.5
    again = _point_of(encode_point(p))
    assert again == agent_pb2.Point.FromString(point_body_general(p))
    assert dict(again.tags) == {"host": "b"} and list(again.dimensions) == ["host", "dc"]


def test_caches_are_bounded() -> None:
    for i in range(_fastcodec.SERIES_CACHE_SIZE + 10):
        encode_point(Point(name="m", tags={"host": f"h{i}"}, fields={f"f{i}": 1.0}, time=i))
    assert len(_fastcodec._SERIES) <= _fastcodec.SERIES_CACHE_SIZE
    assert _fastcodec._SERIES.used <= _fastcodec.SERIES_CACHE_BYTES
    assert len(_fastcodec._DOUBLE_HEADS) <= _fastcodec.FIELD_CACHE_SIZE
    assert _fastcodec._DOUBLE_HEADS.used <= _fastcodec.FIELD_CACHE_BYTES
    assert len(_fastcodec._WRITERS) <= _fastcodec.WRITER_CACHE_SIZE
    assert _fastcodec._WRITERS.used <= _fastcodec.WRITER_CACHE_BYTES


def test_decoded_tags_are_fresh_dicts_and_fields_may_come_in_any_order_or_twice() -> None:
    point = agent_pb2.Point(name="cpu", time=5, tags={"host": "a", "dc": "x"}, fieldsDouble={"v": 1.0})
    body = point.SerializeToString()
    # time again at the end (the last wins), a tag entry repeated with a new value (the last wins)
    entry = agent_pb2.Point(tags={"host": "z"}).SerializeToString()
    odd = entry + body + agent_pb2.Point(time=9).SerializeToString() + entry
    frames = [frame(agent_pb2.Response(point=point))] * 2 + [encode_frame(b"\x8a\x01" + bytes([len(odd)]) + odd)]
    events, error = ResponseDecoder().decode_frames(FrameDecoder().feed_frames(b"".join(frames)))
    assert error is None
    [(kind, points)] = events
    assert kind is POINTS
    assert points[0].tags == {"host": "a", "dc": "x"} and points[0].tags is not points[1].tags
    points[0].tags["host"] = "changed"  # a consumer changing its point changes no other point
    assert points[1].tags == {"host": "a", "dc": "x"}
    expected = agent_pb2.Point.FromString(odd)
    assert points[2].tags == dict(expected.tags) == {"host": "z", "dc": "x"}
    assert points[2].time == expected.time == 9
