"""Property-based tests (hypothesis) of the pure layers: framing, chunking, conversion."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agent_pb2
from udf import Batch, BatchPoint, Dimensions, Point
from udf.convert import BatchAssembler, encode_batch, encode_point, point_from_message
from udf.errors import ProtocolError
from udf.wire import FrameDecoder, encode_frame

from ..helpers import NEGATIVE_ZERO_SURVIVES

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(max_size=12)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
finite = st.floats(allow_nan=False)  # NaN != NaN would make equality meaningless
field_values = st.one_of(finite, int64, text, st.booleans())
fields = st.dictionaries(text, field_values, max_size=6)
tags = st.dictionaries(text, text, max_size=4)

points = st.builds(
    Point,
    name=text,
    database=text,
    retention_policy=text,
    group=text,
    dimensions=st.builds(Dimensions, by_name=st.booleans(), tag_names=st.lists(text, max_size=3)),
    tags=tags,
    fields=fields,
    time=int64,
)
batch_points = st.builds(BatchPoint, time=int64, fields=fields, tags=tags)
batches = st.builds(
    Batch,
    name=text,
    tmax=int64,
    group=text,
    by_name=st.booleans(),
    tags=tags,
    points=st.lists(batch_points, max_size=5),
)


def pb_point(p: Point) -> Any:
    msg = agent_pb2.Point(time=p.time, name=p.name, group=p.group)
    for k, tag in p.tags.items():
        msg.tags[k] = tag
    for k, v in p.fields.items():
        if isinstance(v, bool):
            msg.fieldsBool[k] = v
        elif isinstance(v, int):
            msg.fieldsInt[k] = v
        elif isinstance(v, float):
            msg.fieldsDouble[k] = v
        else:
            msg.fieldsString[k] = v
    return msg


responses = st.one_of(
    points.map(lambda p: agent_pb2.Response(point=pb_point(p))),
    st.builds(lambda n: agent_pb2.Response(begin=agent_pb2.BeginBatch(name=n, size=3)), text),
    st.builds(lambda n, t: agent_pb2.Response(end=agent_pb2.EndBatch(name=n, tmax=t)), text, int64),
    st.builds(lambda t: agent_pb2.Response(keepalive=agent_pb2.KeepaliveResponse(time=t)), int64),
    st.builds(lambda e: agent_pb2.Response(error=agent_pb2.ErrorResponse(error=e)), text),
    st.builds(lambda s: agent_pb2.Response(snapshot=agent_pb2.SnapshotResponse(snapshot=s)), st.binary(max_size=300)),
    st.just(agent_pb2.Response(info=agent_pb2.InfoResponse(wants=agent_pb2.BATCH))),
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.slow
@SETTINGS
@given(st.lists(responses, max_size=20), st.lists(st.integers(min_value=0), max_size=30))
def test_any_message_sequence_survives_framing_and_any_chunking(messages: list[Any], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(m.SerializeToString()) for m in messages)
    decoder = FrameDecoder()
    payloads: list[bytes] = []
    for chunk in chunked(stream, cuts):
        payloads.extend(decoder.feed(chunk))
    decoder.eof()
    assert [agent_pb2.Response.FromString(p) for p in payloads] == messages


@SETTINGS
@given(points)
def test_any_point_survives_encoding_and_conversion(p: Point) -> None:
    frames = FrameDecoder().feed(encode_point(p))
    assert len(frames) == 1
    request = agent_pb2.Request.FromString(frames[0])
    got = point_from_message(request.point)
    assert got == p
    for key, value in p.fields.items():
        assert type(got.fields[key]) is type(value)


@SETTINGS
@given(batches)
def test_any_batch_survives_encoding_and_assembly(b: Batch) -> None:
    decoder = FrameDecoder()
    requests = [agent_pb2.Request.FromString(f) for f in decoder.feed(encode_batch(b))]
    assert [r.WhichOneof("message") for r in requests] == ["begin"] + ["point"] * len(b.points) + ["end"]
    assembler = BatchAssembler()
    assembler.begin(requests[0].begin)
    for r in requests[1:-1]:
        assembler.point(r.point)
    assert assembler.end(requests[-1].end) == b


@SETTINGS
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=10), st.integers(1, 512))
def test_any_bytes_give_frames_or_protocol_error(data: bytes, cuts: list[int], limit: int) -> None:
    decoder = FrameDecoder(max_frame_size=limit)
    try:
        for chunk in chunked(data, cuts):
            for payload in decoder.feed(chunk):
                assert len(payload) <= limit
        decoder.eof()
    except ProtocolError:
        pass


@SETTINGS
@given(finite)
def test_float_fields_keep_their_exact_value(value: float) -> None:
    p = Point(fields={"v": value})
    got = point_from_message(agent_pb2.Request.FromString(FrameDecoder().feed(encode_point(p))[0]).point)
    assert got.fields["v"] == value
    if value != 0 or NEGATIVE_ZERO_SURVIVES:
        assert math.copysign(1, float(got.fields["v"])) == math.copysign(1, value)
