"""Big first frames for both fuzzers: 16 KiB to 2 MiB, their length prefix mostly reading as text.

A frame of that size has a three-byte length prefix; for about 8.7% of the
sizes those bytes read as printable UTF-8 (``c3 bf 20`` is "ÿ "), which the
frame layer once took for a UDF printing to its stdout.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import agent_pb2
from udf.wire import _looks_like_text, encode_frame, encode_uvarint


def _sized(make: Callable[[int], bytes], size: int) -> bytes | None:
    """A payload ``make(k)`` of exactly ``size`` bytes (None if no ``k`` gives it: a nested length grew a byte)."""
    k = size - 24
    for _ in range(3):  # the length grows by one byte per unit of k, but where a varint grows
        payload = make(k)
        if len(payload) == size:
            return payload
        k += size - len(payload)
    return None


def big_frame(rng: random.Random) -> bytes:
    """A valid Response frame of 16 KiB to 2 MiB: a snapshot, or a point with a big string field or tag."""
    R = agent_pb2.Response
    makers: list[Callable[[int], bytes]] = [
        lambda k: R(snapshot=agent_pb2.SnapshotResponse(snapshot=b"s" * k)).SerializeToString(),
        lambda k: R(point=agent_pb2.Point(time=1, name="big", fieldsString={"s": "x" * k})).SerializeToString(),
        lambda k: R(
            point=agent_pb2.Point(name="big", tags={"t": "v" * k}, fieldsDouble={"v": 1.5})
        ).SerializeToString(),
    ]
    payload = None
    while payload is None:  # a few sizes cannot be made exactly (where a nested length grows a byte): another
        size = rng.randrange(16_384, 1 << 21)
        if rng.random() < 0.3 or _looks_like_text(encode_uvarint(size)):
            payload = _sized(rng.choice(makers), size)
    return encode_frame(payload)
