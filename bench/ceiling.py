"""Single-thread codec loops: how fast can one thread turn points into frames and back?

``ceiling_roundtrip`` is the ceiling the Server is measured against: it uses
the library's own encode and decode path (the one the Server runs) with no
threads, queues or pipes, so the ratio Server/ceiling is the cost of the
Server's machinery.
"""

from __future__ import annotations

from typing import List, Sequence

from udf import Batch, Point
from udf.convert import BATCH, POINTS, ResponseDecoder, encode_batch, encode_point
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
    decoder = ResponseDecoder()
    for i in range(0, len(points), block):
        data = b"".join([encode_point(p) for p in points[i : i + block]])
        events, error = decoder.decode_frames(FrameDecoder().feed_frames(data))
        if error is not None:
            raise error
        for kind, items in events:
            if kind is POINTS:
                out.extend(items)
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
