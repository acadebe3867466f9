"""Single-thread codec loops: how fast can one thread turn points into frames and back?

    python bench/ceiling.py                  # the cost per point of encode, frame splitting and decode
    python bench/ceiling.py --instructions   # the same in instructions, counted by valgrind (minutes)

The timings move with the machine's load; the instruction counts do not
(``valgrind --tool=callgrind``: each part run with 0 and 2 cycles over the
workload after the warm-up cycles, the difference divided by the points, the
cyclic GC off while they run), so on a shared machine they are the A/B's
steady measure. ``PYTHONPATH=<tree>``
measures another tree (only public API is used).

``ceiling_roundtrip`` is the ceiling the Server is measured against: it uses
the library's own encode and decode path (the one the Server runs) with no
threads, queues or pipes, so the ratio Server/ceiling is the cost of the
Server's machinery.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence

from udf import Batch, Point
from udf.convert import BATCH, POINTS, ResponseDecoder, encode_batch, encode_point
from udf.wire import FrameDecoder

#: Points encoded before the block of mirrored frames is decoded: ~17 KB of
#: frames, measured faster than larger blocks (which cost page faults).
BLOCK = 100


#: The decoders of the ceiling's one stream of points and one of batches, kept from call to call
#: as a Server's reader keeps its own (what a stream's decoder learned lives in it).
_STREAMS = {"points": ResponseDecoder(), "batches": ResponseDecoder()}


def ceiling_roundtrip(points: Sequence[Point], block: int = BLOCK) -> list[Point]:
    """Encode every point to a ``Request`` frame, decode the mirrored ``Response`` frames back.

    Data frames echo byte for byte (``Request.point`` and ``Response.point`` are
    both field 17), so the block of request frames *is* the agent's answer.
    """
    out: list[Point] = []
    decoder = _STREAMS["points"]
    for i in range(0, len(points), block):
        data = b"".join([encode_point(p) for p in points[i : i + block]])
        events, error = decoder.decode_frames(FrameDecoder().feed_frames(data))
        if error is not None:
            raise error
        for kind, items in events:
            if kind is POINTS:
                out.extend(items)
    return out


def ceiling_batch_roundtrip(batches: Sequence[Batch], block: int = 1) -> list[Batch]:
    """The same for batches: encode ``block`` batches, decode and assemble the mirrored frames."""
    out: list[Batch] = []
    decoder = _STREAMS["batches"]
    for i in range(0, len(batches), block):
        data = b"".join([encode_batch(b) for b in batches[i : i + block]])
        events, error = decoder.decode_frames(FrameDecoder().feed_frames(data))
        if error is not None:
            raise error
        out.extend([item for kind, item in events if kind is BATCH])
    return out


#: Cycles over the workload before a measurement: the first learns every series (the hand path misses
#: them all, so its window turns it off), the next ones let the window turn it back on.
WARM_CYCLES = 3


def _warm(frames: list[list[bytes]]) -> ResponseDecoder:
    """A decoder that has decoded ``frames`` WARM_CYCLES times: learning, and a stream's steady state, not timed."""
    decoder = ResponseDecoder()
    for _ in range(WARM_CYCLES):
        for f in frames:
            decoder.decode_frames(f)
    return decoder


def per_point_costs(points: Sequence[Point], cycles: int = 10, block: int = BLOCK) -> tuple[float, float, float]:
    """Microseconds per point to encode, to split the frames and to decode them, one thread (decoders warmed up)."""
    blocks = [list(points[i : i + block]) for i in range(0, len(points), block)]
    data = [b"".join([encode_point(p) for p in chunk]) for chunk in blocks]
    frames = [FrameDecoder().feed_frames(d) for d in data]
    decoder = _warm(frames)
    n = len(points) * cycles

    def timed(work: Callable[[], None]) -> float:
        t0 = time.perf_counter()
        for _ in range(cycles):
            work()
        return (time.perf_counter() - t0) / n * 1e6

    def encode_all() -> None:
        for chunk in blocks:
            for p in chunk:
                encode_point(p)

    def split_all() -> None:
        for d in data:
            FrameDecoder().feed_frames(d)

    def decode_all() -> None:  # each result dropped at once, as a consumer does
        for f in frames:
            decoder.decode_frames(f)

    return timed(encode_all), timed(split_all), timed(decode_all)


WORKLOADS = {"anchor": "anchor (1 series)", "series": "2,000 series"}


def _points(workload_name: str) -> list[Point]:
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import workload

    return workload.make_anchor_points(4000) if workload_name == "anchor" else workload.make_series_points(4000)


def run_part(part: str, workload_name: str, cycles: int) -> None:
    """Warm up (encode and decode each point once), then run ``part`` (encode, decode) ``cycles`` times (valgrind)."""
    points = _points(workload_name)
    data = [b"".join([encode_point(p) for p in points[i : i + BLOCK]]) for i in range(0, len(points), BLOCK)]
    frames = [FrameDecoder().feed_frames(d) for d in data]
    decoder = _warm(frames)
    gc.collect()
    gc.disable()  # a cyclic collection's cost depends on when it falls: not counted
    for _ in range(cycles):
        if part == "encode":
            for p in points:
                encode_point(p)
        else:
            for f in frames:
                decoder.decode_frames(f)


def instructions() -> None:
    """Instructions per point to encode and to decode, counted by valgrind (callgrind)."""
    import os
    import re
    import subprocess
    import sys

    def count(part: str, workload_name: str, cycles: int) -> int:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                os.path.abspath(__file__),
                "--run",
                part,
                workload_name,
                str(cycles),
            ],
            env={**os.environ, "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            check=True,
        )
        return int(re.search(r"Collected : (\d+)", out.stderr).group(1))  # type: ignore[union-attr]

    for workload_name, label in WORKLOADS.items():
        base = count("encode", workload_name, 0)
        per = [(count(part, workload_name, 2) - base) / (2 * 4000) for part in ("encode", "decode")]
        print(f"{label:18} encode {per[0]:,.0f}  decode {per[1]:,.0f}  instructions per point")


def main() -> int:
    """Print the codec's cost per point on the benchmark's two workloads (best of 5 runs each)."""
    import sys

    if sys.argv[1:2] == ["--run"]:
        run_part(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return 0
    if sys.argv[1:2] == ["--instructions"]:
        instructions()
        return 0
    for workload_name, label in WORKLOADS.items():
        points = _points(workload_name)
        runs = [per_point_costs(points) for _ in range(5)]
        encode, split, decode = (min(r[i] for r in runs) for i in range(3))
        print(f"{label:18} encode {encode:.2f} us  split {split:.2f} us  decode {decode:.2f} us  per point")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
