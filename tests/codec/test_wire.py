"""Tests of udf.wire: varints, the sans-I/O FrameDecoder and the blocking stream helpers.

The frame format is Kapacitor's (Go ``udf/agent/io.go``): an unsigned protobuf
varint holding the payload length, then the payload. Varint encodings are
checked against protobuf's own serializer, which is an independent oracle.
"""

from __future__ import annotations

import io
import os
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

import agent_pb2
from udf.errors import ProtocolError, UDFError
from udf.wire import (
    DEFAULT_MAX_FRAME_SIZE,
    FrameDecoder,
    decode_uvarint,
    encode_frame,
    encode_uvarint,
    excerpt,
    read_frame,
    read_message,
    write_message,
)

from ..helpers import run_in_thread as in_thread

# --- varints ------------------------------------------------------------------

EDGE_VARINTS: dict[int, bytes] = {
    0: b"\x00",
    1: b"\x01",
    127: b"\x7f",
    128: b"\x80\x01",
    16383: b"\xff\x7f",
    16384: b"\x80\x80\x01",
    2**32: b"\x80\x80\x80\x80\x10",
    2**63: b"\x80" * 9 + b"\x01",
    2**64 - 1: b"\xff" * 9 + b"\x01",
}


def protobuf_uvarint(value: int) -> bytes:
    """The varint protobuf itself writes for ``value`` (an int64 field holds it as uint64)."""
    signed = value - 2**64 if value >= 2**63 else value
    encoded = agent_pb2.KeepaliveRequest(time=signed).SerializeToString()
    if value == 0:
        return b"\x00"  # proto3 omits a zero scalar
    assert encoded[0] == 0x08  # field 1, wire type 0
    return bytes(encoded[1:])


@pytest.mark.parametrize("value", sorted(EDGE_VARINTS))
def test_encode_uvarint_edge_values(value: int) -> None:
    assert encode_uvarint(value) == EDGE_VARINTS[value]
    assert encode_uvarint(value) == protobuf_uvarint(value)


@pytest.mark.parametrize("value", sorted(EDGE_VARINTS))
def test_decode_uvarint_edge_values(value: int) -> None:
    data = EDGE_VARINTS[value]
    assert decode_uvarint(data) == (value, len(data))
    # At an offset, followed by more data.
    assert decode_uvarint(b"junk" + data + b"\x05", 4) == (value, 4 + len(data))


@pytest.mark.parametrize("value", sorted(EDGE_VARINTS))
def test_decode_uvarint_incomplete_needs_more(value: int) -> None:
    data = EDGE_VARINTS[value]
    for cut in range(len(data)):
        assert decode_uvarint(data[:cut]) is None


def test_uvarint_round_trip_around_every_seven_bit_boundary() -> None:
    for shift in range(0, 64, 7):
        for value in (2**shift - 1, 2**shift, 2**shift + 1):
            if value < 0 or value >= 2**64:
                continue
            encoded = encode_uvarint(value)
            assert encoded == protobuf_uvarint(value)
            assert decode_uvarint(encoded) == (value, len(encoded))


@pytest.mark.parametrize("value", [-1, -(2**63), 2**64, 2**64 + 1, 2**100])
def test_encode_uvarint_out_of_range(value: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_uvarint(value)


@pytest.mark.parametrize(
    "data",
    [
        b"\x80" * 10 + b"\x01",  # 11 bytes: longer than any varint
        b"\xff" * 10 + b"\x00",
        b"\xff" * 15,
    ],
)
def test_decode_uvarint_longer_than_ten_bytes(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="longer than 10 bytes"):
        decode_uvarint(data)


@pytest.mark.parametrize("last", [0x02, 0x03, 0x7F])
def test_decode_uvarint_overflow(last: int) -> None:
    # Ten bytes whose value needs more than 64 bits.
    with pytest.raises(ProtocolError, match="overflows"):
        decode_uvarint(b"\xff" * 9 + bytes([last]))


def test_protocol_error_is_a_udf_error() -> None:
    assert issubclass(ProtocolError, UDFError)


# --- a stream of frames -----------------------------------------------------------

BIG = bytes(range(256)) * 257  # 65,792 bytes: more than 64 KiB
PAYLOADS: list[bytes] = [
    b"",
    b"a",
    b"",
    b"b" * 127,  # one-byte prefix, largest
    b"c" * 128,  # two-byte prefix, smallest
    BIG,
    b"",
    b"d" * 300,
    b"e",
    b"",
]
STREAM = b"".join(encode_frame(p) for p in PAYLOADS)


def frame_spans(payloads: list[bytes]) -> list[tuple[int, int, int]]:
    """(frame start, payload start, frame end) offsets of each frame in the joined stream."""
    spans = []
    pos = 0
    for p in payloads:
        prefix = len(encode_uvarint(len(p)))
        spans.append((pos, pos + prefix, pos + prefix + len(p)))
        pos += prefix + len(p)
    return spans


SPANS = frame_spans(PAYLOADS)


def test_encode_frame_layout() -> None:
    assert encode_frame(b"") == b"\x00"
    assert encode_frame(b"xyz") == b"\x03xyz"
    assert encode_frame(b"q" * 200) == b"\xc8\x01" + b"q" * 200
    assert len(STREAM) > 65536 and SPANS[-1][2] == len(STREAM)


def test_decoder_whole_stream() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(STREAM) == PAYLOADS
    assert decoder.buffered == 0
    decoder.eof()  # ends at a frame boundary: fine


def test_decoder_split_at_every_offset() -> None:
    for cut in range(len(STREAM) + 1):
        decoder = FrameDecoder()
        frames = decoder.feed(STREAM[:cut])
        frames += decoder.feed(STREAM[cut:])
        if frames != PAYLOADS:
            pytest.fail(f"split at {cut}: got {[len(f) for f in frames]}")
        decoder.eof()


def test_decoder_one_byte_at_a_time() -> None:
    decoder = FrameDecoder()
    frames: list[bytes] = []
    completed_at: list[int] = []
    for i in range(len(STREAM)):
        got = decoder.feed(STREAM[i : i + 1])
        frames += got
        completed_at += [i + 1] * len(got)
    assert frames == PAYLOADS
    # Each frame is returned by the very feed that completed it.
    assert completed_at == [end for _, _, end in SPANS]
    decoder.eof()


def test_decoder_frames_are_bytes_and_empty_feeds_are_harmless() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    frames = decoder.feed(STREAM[:10]) + decoder.feed(b"") + decoder.feed(STREAM[10:])
    assert frames == PAYLOADS
    assert all(type(f) is bytes for f in frames)


def test_decoder_buffered_counts_partial_frame() -> None:
    decoder = FrameDecoder()
    cut = SPANS[5][1] + 1000  # inside the big frame
    decoder.feed(STREAM[:cut])
    assert decoder.buffered == cut - SPANS[5][0]


def expected_truncation(cut: int) -> str | None:
    """What eof() must say when the stream is cut at ``cut``; None at a frame boundary."""
    for start, payload_start, end in SPANS:
        if cut == start:
            return None
        if start < cut < payload_start:
            return "length prefix"
        if payload_start <= cut < end:
            return f"{end - cut} bytes missing"
    assert cut == len(STREAM)
    return None


def test_decoder_truncated_at_every_offset() -> None:
    failures: list[tuple[int, str | None, str | None]] = []
    for cut in range(len(STREAM) + 1):
        decoder = FrameDecoder()
        decoder.feed(STREAM[:cut])
        expected = expected_truncation(cut)
        message: str | None
        try:
            decoder.eof()
        except ProtocolError as exc:
            message = str(exc)
        else:
            message = None
        if expected is None:
            ok = message is None
        elif message is None:
            ok = False
        elif expected == "length prefix":
            ok = "inside a length prefix" in message
        else:  # "N bytes missing", N not part of a larger number
            at = message.find(expected)
            ok = at == 0 or (at > 0 and not message[at - 1].isdigit())
        if not ok:
            failures.append((cut, expected, message))
    assert not failures, failures[:5]


def test_decoder_truncated_inside_a_prefix_message() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x80\x80")
    with pytest.raises(ProtocolError, match="EOF inside a length prefix"):
        decoder.eof()


def test_decoder_bad_varint_prefix() -> None:
    with pytest.raises(ProtocolError, match="longer than 10 bytes"):
        FrameDecoder().feed(b"\x80" * 11)
    with pytest.raises(ProtocolError, match="overflows"):
        FrameDecoder().feed(b"\xff" * 9 + b"\x02")


# --- max_frame_size -------------------------------------------------------------


@pytest.mark.parametrize("size", [4 * 2**30, 2**63, 2**64 - 1, DEFAULT_MAX_FRAME_SIZE + 1])
def test_decoder_refuses_huge_length_without_allocating(size: int) -> None:
    decoder = FrameDecoder()
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError) as info:
            decoder.feed(encode_uvarint(size) + b"xyz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(size) in str(info.value)
    assert str(DEFAULT_MAX_FRAME_SIZE) in str(info.value)
    assert peak < 2**20, f"allocated {peak} bytes for a refused frame"


def test_decoder_custom_limit_is_inclusive() -> None:
    decoder = FrameDecoder(max_frame_size=100)
    assert decoder.feed(encode_frame(b"\0" * 100)) == [b"\0" * 100]
    with pytest.raises(ProtocolError, match="101"):
        decoder.feed(encode_frame(b"\0" * 101))


def test_decoder_refuses_huge_length_arriving_byte_by_byte() -> None:
    decoder = FrameDecoder(max_frame_size=1000)
    prefix = encode_uvarint(2**40)
    for b in prefix[:-1]:
        assert decoder.feed(bytes([b])) == []
    with pytest.raises(ProtocolError, match=str(2**40)):
        decoder.feed(prefix[-1:])


@pytest.mark.parametrize("limit", [0, -1])
def test_decoder_limit_must_be_positive(limit: int) -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame_size=limit)


class RecordingStream(io.RawIOBase):
    """A readable stream that records every size asked of read()."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.asked: list[int] = []

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        self.asked.append(n)
        return self._data.read(n)


@pytest.mark.parametrize("size", [4 * 2**30, 2**63])
def test_read_frame_refuses_huge_length_without_reading_it(size: int) -> None:
    stream = RecordingStream(encode_uvarint(size) + b"xyz")
    with pytest.raises(ProtocolError) as info:
        read_frame(stream)  # type: ignore[arg-type]
    assert str(size) in str(info.value)
    assert max(stream.asked) <= 1  # never asked the stream for the huge payload


def test_read_frame_custom_limit() -> None:
    stream = io.BytesIO(encode_frame(b"x" * 10) + encode_frame(b"y" * 11))
    assert read_frame(stream, max_frame_size=10) == b"x" * 10
    with pytest.raises(ProtocolError, match="11"):
        read_frame(stream, max_frame_size=10)


# --- blocking stream helpers --------------------------------------------------------


def test_read_frame_bytesio_sequence() -> None:
    stream = io.BytesIO(STREAM)
    frames = []
    while (frame := read_frame(stream)) is not None:
        frames.append(frame)
    assert frames == PAYLOADS
    assert read_frame(stream) is None  # clean EOF stays clean


def test_read_frame_truncated_prefix() -> None:
    with pytest.raises(ProtocolError, match="inside a length prefix"):
        read_frame(io.BytesIO(b"\x80\x80"))


def test_read_frame_truncated_payload_says_how_much_is_missing() -> None:
    with pytest.raises(ProtocolError, match=r"(?<!\d)7 bytes missing"):
        read_frame(io.BytesIO(b"\x0a" + b"abc"))


def test_read_frame_bad_prefix() -> None:
    with pytest.raises(ProtocolError, match="longer than 10 bytes"):
        read_frame(io.BytesIO(b"\x80" * 11 + b"x"))
    with pytest.raises(ProtocolError, match="overflows"):
        read_frame(io.BytesIO(b"\xff" * 9 + b"\x02"))


def sample_requests() -> list[Any]:
    """One Request of each kind, including one larger than a pipe buffer."""
    return [
        agent_pb2.Request(info=agent_pb2.InfoRequest()),
        agent_pb2.Request(init=agent_pb2.InitRequest(taskID="t", nodeID="n")),
        agent_pb2.Request(keepalive=agent_pb2.KeepaliveRequest(time=1_600_000_000_123_456_789)),
        agent_pb2.Request(snapshot=agent_pb2.SnapshotRequest()),
        agent_pb2.Request(restore=agent_pb2.RestoreRequest(snapshot=BIG)),
        agent_pb2.Request(point=agent_pb2.Point(name="cpu", fieldsBool={"ok": True}, time=-5)),
    ]


def test_write_then_read_message_bytesio() -> None:
    stream = io.BytesIO()
    requests = sample_requests()
    for r in requests:
        write_message(stream, r)
    assert stream.getvalue() == b"".join(encode_frame(r.SerializeToString()) for r in requests)
    stream.seek(0)
    got = []
    while (m := read_message(stream, agent_pb2.Request.FromString)) is not None:
        got.append(m)
    assert got == requests


def test_write_message_uses_one_write_call() -> None:
    writes: list[bytes] = []

    class Sink:
        def write(self, data: bytes) -> int:
            writes.append(bytes(data))
            return len(data)

    message = agent_pb2.Request(restore=agent_pb2.RestoreRequest(snapshot=BIG))
    write_message(Sink(), message)  # type: ignore[arg-type]
    assert writes == [encode_frame(message.SerializeToString())]


def test_read_message_undecodable_payload() -> None:
    # Field 1 claims 5 bytes but the message holds 2: protobuf cannot decode it.
    stream = io.BytesIO(encode_frame(b"\x0a\x05ab"))
    with pytest.raises(ProtocolError, match="undecodable") as info:
        read_message(stream, agent_pb2.Request.FromString)
    assert info.value.__cause__ is not None


def test_read_message_clean_eof_is_none() -> None:
    assert read_message(io.BytesIO(b""), agent_pb2.Response.FromString) is None


@pytest.fixture(params=[0, -1], ids=["raw", "buffered"])
def pipe(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    """A real OS pipe as (reader, writer) file objects; the reader raw or buffered."""
    r, w = os.pipe()
    reader = open(r, "rb", buffering=request.param)
    writer = open(w, "wb", buffering=0)
    yield reader, writer
    for f in (reader, writer):
        try:
            f.close()
        except OSError:
            pass


def test_frames_over_a_real_pipe(pipe: tuple[Any, Any]) -> None:
    reader, writer = pipe

    def produce() -> None:
        # STREAM is larger than a pipe's buffer: the reader sees partial reads.
        writer.write(STREAM)
        writer.close()

    join = in_thread(produce)
    frames = []
    while (frame := read_frame(reader)) is not None:
        frames.append(frame)
    join()
    assert frames == PAYLOADS


def test_messages_over_a_real_pipe(pipe: tuple[Any, Any]) -> None:
    reader, writer = pipe
    requests = sample_requests()

    def produce() -> None:
        for r in requests:
            write_message(writer, r)
        writer.close()

    join = in_thread(produce)
    got = []
    while (m := read_message(reader, agent_pb2.Request.FromString)) is not None:
        got.append(m)
    join()
    assert got == requests


def test_truncated_frame_over_a_real_pipe(pipe: tuple[Any, Any]) -> None:
    reader, writer = pipe
    frame = encode_frame(BIG)
    join = in_thread(lambda: (writer.write(frame[:-3]), writer.close()))
    with pytest.raises(ProtocolError, match=r"(?<!\d)3 bytes missing"):
        read_frame(reader)
    join()


def test_decoder_fed_from_a_real_pipe(pipe: tuple[Any, Any]) -> None:
    """The decoder fed with whatever each read returned yields the same frames."""
    reader, writer = pipe
    join = in_thread(lambda: (writer.write(STREAM), writer.close()))
    read = getattr(reader, "read1", None) or reader.read
    decoder = FrameDecoder()
    frames: list[bytes] = []
    while chunk := read(4096):
        frames += decoder.feed(chunk)
    decoder.eof()
    join()
    assert frames == PAYLOADS


def test_frames_before_a_bad_prefix_are_returned_then_check_raises() -> None:
    decoder = FrameDecoder()
    good = encode_frame(b"abc")
    assert decoder.feed(good + b"\x80" * 11) == [b"abc"]
    with pytest.raises(ProtocolError, match="longer than 10 bytes"):
        decoder.check()
    with pytest.raises(ProtocolError, match="longer than 10 bytes"):
        decoder.feed(good)  # the decoder stays failed
    with pytest.raises(ProtocolError, match="longer than 10 bytes"):
        decoder.eof()
    clean = FrameDecoder()
    assert clean.feed(good) == [b"abc"]
    clean.check()  # nothing pending


# --- a stream that starts with text (a UDF that prints to its stdout) ---------


def response_frame(**message: Any) -> bytes:
    return encode_frame(agent_pb2.Response(**message).SerializeToString())


@pytest.mark.parametrize(
    "stream, quoted",
    [
        (b"hello\n", "'hello'"),
        (b"hello\n" + encode_frame(agent_pb2.Response().SerializeToString()), "'hello'"),
        (b"Starting up\r\nmore", "'Starting up'"),
        (b"\nok\n", "'ok'"),
        ("héllo wörld\n".encode(), "'héllo wörld'"),
        (b"x" * 100, "'" + "x" * 40 + "'..."),  # a short excerpt, not the whole line
        (b"abc\x00\xff\x01", "b'abc\\x00\\xff\\x01'"),  # escaped, NULs and all
    ],
)
def test_decoder_says_the_agent_wrote_text(stream: bytes, quoted: str) -> None:
    for chunks in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
        decoder = FrameDecoder()
        with pytest.raises(ProtocolError) as info:
            for chunk in chunks:
                decoder.feed(chunk)
            decoder.eof()
        assert str(info.value).startswith("the agent wrote text to its stdout (a print?): ")
        if len(chunks) == 1:
            assert str(info.value).endswith(": " + quoted)
        with pytest.raises(ProtocolError, match="wrote text"):
            decoder.feed(b"more")  # the error sticks


def test_decoder_text_at_eof_and_its_hint() -> None:
    decoder = FrameDecoder(text_hint="the host sent text")
    assert decoder.feed(b"ok") == []
    with pytest.raises(ProtocolError, match=r"^the host sent text: 'ok'$"):
        decoder.eof()


@pytest.mark.parametrize(
    "message",
    [
        # An ErrorResponse whose length bytes are printable: every byte of its start is text.
        {"error": agent_pb2.ErrorResponse(error="a printable error of just the right size")},
        {"keepalive": agent_pb2.KeepaliveResponse(time=1)},
        {"info": agent_pb2.InfoResponse(wants=agent_pb2.BATCH, provides=agent_pb2.BATCH)},
        {"info": agent_pb2.InfoResponse()},
        {"point": agent_pb2.Point(name="cpu" * 10)},
    ],
)
def test_decoder_takes_real_frames_for_frames_however_chunked(message: dict[str, Any]) -> None:
    frame = response_frame(**message)
    for chunks in ([frame], [frame[i : i + 1] for i in range(len(frame))]):
        decoder = FrameDecoder()
        got = [payload for chunk in chunks for payload in decoder.feed(chunk)]
        decoder.eof()
        assert got == [frame[len(frame) - len(got[0]) :]]


def test_decoder_says_text_as_soon_as_its_bytes_cannot_be_a_frame() -> None:
    """'S' is a length, 't' a tag of wire type 4 (an end-group outside a group): no frame starts so."""
    decoder = FrameDecoder()
    assert decoder.feed(b"S") == [] and decoder.feed(b"t") == []
    with pytest.raises(ProtocolError, match="^the agent wrote text to its stdout \\(a print\\?\\): 'Sta'$"):
        decoder.feed(b"a")


def test_decoder_holds_a_first_frame_that_reads_as_text_until_it_tells() -> None:
    """A valid frame of two members whose bytes are all printable: held byte by byte, then returned whole."""
    payload = (
        agent_pb2.Response(error=agent_pb2.ErrorResponse(error="a printable error of just size")).SerializeToString()
        + agent_pb2.Response(snapshot=agent_pb2.SnapshotResponse(snapshot=b"zz")).SerializeToString()
    )
    frame = encode_frame(payload)
    assert all(0x20 <= b < 0x7F for b in frame[:3]) and frame[2] != frame[0] - 2  # the old check called it text
    decoder = FrameDecoder()
    got = []
    for i in range(len(frame)):
        got += decoder.feed(frame[i : i + 1])
        assert decoder.buffered == (0 if got else i + 1)
    assert got == [payload]
    decoder.eof()
    assert agent_pb2.Response.FromString(payload).snapshot.snapshot == b"zz"


def test_decoder_says_what_it_suspects_while_a_printed_line_may_still_begin_a_frame() -> None:
    """'ok' then an info frame may still be a frame of 111 bytes: held, suspected, said at EOF."""
    decoder = FrameDecoder()
    assert decoder.suspected_text is None
    assert (
        decoder.feed(b"ok\n" + encode_frame(agent_pb2.Response(info=agent_pb2.InfoResponse()).SerializeToString()))
        == []
    )
    assert decoder.suspected_text == "the agent wrote text to its stdout (a print?): 'ok'"
    with pytest.raises(ProtocolError, match="^the agent wrote text to its stdout \\(a print\\?\\): 'ok'$"):
        decoder.eof()
    frames = FrameDecoder()
    assert frames.feed(encode_frame(b"\x0a\x00")) == [b"\x0a\x00"] and frames.suspected_text is None


def test_decoder_text_check_can_be_turned_off() -> None:
    decoder = FrameDecoder(text_hint=None)
    assert decoder.feed(encode_frame(b"text payload")) == [b"text payload"]


def test_printable_error_response_really_starts_with_text_bytes() -> None:
    """The case the frame check exists for: without it this frame would pass for text."""
    frame = response_frame(error=agent_pb2.ErrorResponse(error="a printable error of just the right size"))
    assert frame[:5] == b",2*\n("


def test_excerpt_is_short_and_escaped() -> None:
    assert excerpt(b"hello") == "'hello'"
    assert excerpt(b"\x00\x01\xff") == "b'\\x00\\x01\\xff'"
    assert excerpt(b"a" * 1000) == "'" + "a" * 40 + "'..."
    assert excerpt("é".encode() * 30) == "'" + "é" * 20 + "'..."  # not cut inside a character
