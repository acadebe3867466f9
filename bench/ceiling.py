"""Single-thread codec loops: how fast can one thread turn points into frames and back?

``ceiling_roundtrip`` is the ceiling the Server is measured against: it uses
the library's own encode and decode path (the one the Server runs) with no
threads, queues or pipes, so the ratio Server/ceiling is the cost of the
Server's machinery. ``tricks_roundtrip`` is the issue's reference loop, kept
self-contained (it does not change when the library does): the issue measured
it at about 77,000 points/s, which lets a run here estimate how fast this
machine is compared to the issue's.
"""

from __future__ import annotations

from typing import List, Sequence

import agent_pb2

from udf import Batch, Dimensions, Point
from udf.convert import BATCH, ResponseDecoder, encode_batch, encode_point, parse_responses, point_from_message
from udf.wire import FrameDecoder

#: Points encoded before the block of mirrored frames is decoded: ~17 KB of
#: frames, measured faster than larger blocks (which cost page faults).
BLOCK = 100


def ceiling_roundtrip(points: Sequence[Point], block: int = BLOCK) -> List[Point]:
    """Encode every point to a ``Request`` frame, decode the mirrored ``Response`` frames back.

    Data frames echo byte for byte (``Request.point`` and ``Response.point`` are
    both field 17), so the block of request frames *is* the agent's answer.
    """
    out: List[Point] = []
    for i in range(0, len(points), block):
        data = b"".join([encode_point(p) for p in points[i : i + block]])
        responses, error = parse_responses(FrameDecoder().feed_frames(data))
        if error is not None:
            raise error
        out.extend([point_from_message(r.point) for r in responses])
    return out


def ceiling_batch_roundtrip(batches: Sequence[Batch], block: int = 1) -> List[Batch]:
    """The same for batches: encode ``block`` batches, decode and assemble the mirrored frames."""
    out: List[Batch] = []
    decoder = ResponseDecoder()
    for i in range(0, len(batches), block):
        data = b"".join([encode_batch(b) for b in batches[i : i + block]])
        events, error = decoder.decode_frames(FrameDecoder().feed_frames(data))
        if error is not None:
            raise error
        out.extend([item for kind, item in events if kind is BATCH])
    return out


# --- the reference tricks ---------------------------------------------

_PbPoint = agent_pb2.Point
_parse_response = agent_pb2.Response.FromString


def _uvarint(value: int) -> bytes:  # the reference loop's own, as the issue measured it
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tricks_encode(p: Point) -> bytes:
    # Scalar keyword construction, per-key map assignment, hand-written envelope.
    msg = _PbPoint(
        time=p.time,
        name=p.name,
        database=p.database,
        retentionPolicy=p.retention_policy,
        group=p.group,
        byName=p.dimensions.by_name,
    )
    tags = msg.tags
    for k, v in p.tags.items():
        tags[k] = v
    for k, v in p.fields.items():
        kind = type(v)
        if kind is float:
            msg.fieldsDouble[k] = v
        elif kind is int:
            msg.fieldsInt[k] = v
        elif kind is str:
            msg.fieldsString[k] = v
        else:
            msg.fieldsBool[k] = v
    body = msg.SerializeToString()
    inner = b"\x8a\x01" + _uvarint(len(body))
    return _uvarint(len(inner) + len(body)) + inner + body


def _tricks_decode(data: bytes) -> List[Point]:
    # One parse per frame; dict(m.items()), empty maps skipped.
    out = []
    pos, end = 0, len(data)
    while pos < end:
        size, shift = 0, 0
        while True:
            b = data[pos]
            pos += 1
            size |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        m = _parse_response(data[pos : pos + size]).point
        pos += size
        fields: dict = {}
        for fm in (m.fieldsString, m.fieldsInt, m.fieldsDouble, m.fieldsBool):
            if fm:
                fields.update(dict(fm.items()))
        tags = m.tags
        out.append(
            Point(
                m.name,
                m.database,
                m.retentionPolicy,
                m.group,
                Dimensions(m.byName, list(m.dimensions)),
                dict(tags.items()) if tags else {},
                fields,
                m.time,
            )
        )
    return out


def tricks_roundtrip(points: Sequence[Point]) -> List[Point]:
    """The issue's best-tricks loop (reference only): encode one point, decode its mirror, repeat."""
    out: List[Point] = []
    for p in points:
        out.extend(_tricks_decode(_tricks_encode(p)))
    return out
