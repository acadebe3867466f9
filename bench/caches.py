"""Do the codec's caches pay their way, and how big are they when full?

    python bench/caches.py            # both parts (about a minute)
    python bench/caches.py --quick    # a smoke run

1. The codec ceiling (``ceiling.ceiling_roundtrip``: encode and decode in one
   thread) on the realistic workload (``workload.make_series_points``: 2,000
   series, 4,000 distinct points), with the hand-written decoder
   (``udf._fastdecode``) off and on, in alternating turns; learning is included
   (the caches are emptied before each turn).
2. The memory of each cache when full, measured with ``tracemalloc`` while
   filling it: Telegraf-sized series for the decoder's series cache, distinct
   field sets for its layouts and for the encoder's compiled writers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from typing import Callable, Dict, List, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import ceiling  # noqa: E402
import workload  # noqa: E402

import agent_pb2  # noqa: E402
from udf import Point, _fastcodec, _fastdecode  # noqa: E402
from udf.convert import ResponseDecoder, encode_point  # noqa: E402
from udf.wire import encode_frame, encode_uvarint  # noqa: E402

T0 = workload.T0


def codec_rate(points: Sequence[Point], cycles: int, hand: bool) -> float:
    """Points/s through the codec ceiling, the hand decoder on or off, from empty caches."""
    _fastdecode.clear()
    probe = _fastdecode.PROBE
    if not hand:  # every window plain, no probe: protobuf's path only
        _fastdecode.PROBE = 0
        _fastdecode._WINDOW.fast = False
    try:
        done = 0
        t0 = time.perf_counter()
        for cycle in range(cycles):
            out = ceiling.ceiling_roundtrip(points)
            if cycle == 0 and out != list(points):  # learned on the way: the points must still come back exactly
                raise AssertionError(f"the codec changed a point (hand decoder {'on' if hand else 'off'})")
            done += len(out)
        return done / (time.perf_counter() - t0)
    finally:
        _fastdecode.PROBE = probe
        _fastdecode.clear()


def _response_frame(body: bytes) -> bytes:
    return encode_frame(b"\x8a\x01" + encode_uvarint(len(body)) + body)


def _decode_all(frames: List[bytes]) -> None:
    decoder = ResponseDecoder()
    for i in range(0, len(frames), 100):
        decoder.decode_frames(frames[i : i + 100])


def _traced(fill: Callable[[], None]) -> float:
    """MB allocated and still held after ``fill()``."""
    tracemalloc.start()
    try:
        fill()
        return tracemalloc.get_traced_memory()[0] / 1e6
    finally:
        tracemalloc.stop()


def cache_sizes() -> None:
    _fastdecode.clear()
    _fastdecode.PROBE = 1 << 40  # learn everything

    def series() -> None:
        frames = []
        for s in range(_fastdecode.SERIES_CACHE_SIZE):
            host = "web-%04d.example.com" % s
            frames.append(_response_frame(agent_pb2.Point(
                time=T0, name="cpu", database="telegraf", retentionPolicy="autogen", group=f"cpu\ncpu=cpu0,host={host}",
                dimensions=["cpu", "host"], tags={"cpu": "cpu0", "dc": "us-west-2a", "host": host, "region": "us-west-2"},
                fieldsDouble={"usage_user": 1.5, "usage_system": 2.5}, fieldsInt={"count": 7},
            ).SerializeToString()))
        _decode_all(frames)

    def layouts() -> None:  # one series, a new field set per point; one layout already there
        _decode_all([_response_frame(agent_pb2.Point(
            time=T0, name="m", fieldsDouble={f"f{i}": 1.0, f"g{i}": 2.0}, fieldsInt={f"n{i}": 300},
        ).SerializeToString()) for i in range(_fastdecode.LAYOUT_CACHE_SIZE - 1)])

    def heads() -> None:  # a name's first letter and length make each frame's first 7 bytes differ
        names = [chr(0x41 + c) + "x" * n for n in range(90) for c in range(58)][: _fastdecode.HEAD_CACHE_SIZE - 1]
        _decode_all([_response_frame(agent_pb2.Point(name=name, fieldsDouble={"v": 1.0}).SerializeToString()) for name in names])

    def writers() -> None:
        _fastcodec._WRITERS.clear()
        for i in range(_fastcodec.WRITER_CACHE_SIZE):
            encode_point(Point(name="m", fields={f"f{i}": 1.0, f"g{i}": 2, f"s{i}": "x"}, time=T0))

    mb = _traced(series)
    print(f"decode: {len(_fastdecode._SERIES):,} series spans (with the view path's tag sets): {mb:.2f} MB")
    mb = _traced(layouts)
    print(f"decode: {sum(len(v) for v in _fastdecode._LAYOUTS.values()):,} layouts and their builders: {mb:.2f} MB")
    _fastdecode.clear()
    _fastdecode.PROBE = 1 << 40
    mb = _traced(heads)
    print(f"decode: {len(_fastdecode._HEADS):,} frame heads (with those frames' series): {mb:.2f} MB")
    mb = _traced(writers)
    print(f"encode: {len(_fastcodec._WRITERS):,} compiled writers (and the caches they fill): {mb:.2f} MB")
    _fastdecode.PROBE = 128
    _fastdecode.clear()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run")
    args = ap.parse_args(argv)
    turns, cycles = (1, 1) if args.quick else (5, 25)
    points = workload.make_series_points(4000)
    rates: Dict[bool, List[float]] = {False: [], True: []}
    for _ in range(turns):
        for hand in (False, True):
            rates[hand].append(codec_rate(points, cycles, hand))
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"codec ceiling, 2,000 series: hand decoder off {off:,.0f} pts/s, on {on:,.0f} pts/s: x{on / off:.2f}"
          f" (median of {turns} turns each, load {os.getloadavg()[0]:.2f})")
    cache_sizes()
    return 0


if __name__ == "__main__":
    sys.exit(main())
