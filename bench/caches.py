"""Do the codec's own paths pay their way, how big are its caches when full, and what is the worst case?

    python bench/caches.py             # the rates and the cache sizes (a minute or two)
    python bench/caches.py --quick     # a smoke run
    python bench/caches.py --big-tags  # max RSS: 4,000 series with 128 KiB tags through a real agent
    python bench/caches.py --generator # does the code generator pay? (instructions, valgrind: minutes)

1. The codec ceiling (``ceiling.ceiling_roundtrip``: encode and decode in one
   thread) on the realistic workload (``workload.make_series_points``: 2,000
   series, 4,000 distinct points), with the hand-written paths on and off
   (``UDF_PUREPROTOBUF=1``: protobuf alone), each turn a fresh process, in
   alternating turns; learning is included.
2. The memory of each cache when full, measured with ``tracemalloc`` while
   filling it: Telegraf-sized series, then the worst case (entries just under
   the size over which nothing is cached, until the byte budget empties the
   cache), for the encoder's shared caches and one stream's decoder.
3. ``--generator``: instructions a point (``ceiling.py --instructions``'s
   method) with the generated code (the encoder's writer per field-key set,
   the decoder's builder per layout) and without it (the encoder writing
   field by field, ``_fastcodec._append_fields``; the decoder with one generic
   builder that walks the layout's fields), both patched in here.
4. ``--big-tags``: the issue's worst case through ``examples/mirror.py`` (a
   real agent, ``udf.Process``): 4,000 points, each its own series with a
   128 KiB tag, put while the echoes are taken; the process's max RSS, and its
   RSS once every point was dropped. Only public API: run it with
   ``PYTHONPATH=<another tree>`` to measure that tree.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if not os.environ.get("PYTHONPATH"):  # an A/B run names the tree to measure in PYTHONPATH
    sys.path.insert(0, os.path.dirname(HERE))

import workload  # noqa: E402

import agent_pb2  # noqa: E402
import udf  # noqa: E402
from udf import Point  # noqa: E402

T0 = workload.T0
MIRROR = os.path.join(os.path.dirname(HERE), "examples", "mirror.py")


# --- 1. the rates ------------------------------------------------------------------------


def codec_rate(cycles: int) -> float:
    """Points/s through the codec ceiling in this process (its UDF_PUREPROTOBUF decides the paths), caches empty."""
    import ceiling

    points = workload.make_series_points(4000)
    done = 0
    t0 = time.perf_counter()
    for cycle in range(cycles):
        out = ceiling.ceiling_roundtrip(points)
        if cycle == 0 and out != points:  # learned on the way: the points must still come back exactly
            raise AssertionError("the codec changed a point")
        done += len(out)
    return done / (time.perf_counter() - t0)


def rate_turn(cycles: int, hand: bool) -> float:
    """One turn in a fresh process, the hand-written paths on or off."""
    env = dict(os.environ)
    env.pop("UDF_PUREPROTOBUF", None)
    if not hand:
        env["UDF_PUREPROTOBUF"] = "1"
    out = subprocess.run(
        [sys.executable, __file__, "--rate-turn", str(cycles)], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.split()[-1])


# --- 2. the caches' sizes ------------------------------------------------------------------


def _response_frame(body: bytes) -> bytes:
    from udf.wire import encode_frame, encode_uvarint

    return encode_frame(b"\x8a\x01" + encode_uvarint(len(body)) + body)


def _traced(fill: Callable[[], Any]) -> tuple[float, Any]:
    """MB allocated and still held after ``fill()``, and what it returned (held until measured)."""
    gc.collect()
    tracemalloc.start()
    try:
        kept = fill()
        return tracemalloc.get_traced_memory()[0] / 1e6, kept
    finally:
        tracemalloc.stop()


def _telegraf_point(s: int, host_bytes: int = 0) -> Any:
    host = f"web-{s:04d}.example.com" + "x" * host_bytes
    return agent_pb2.Point(
        time=T0,
        name="cpu",
        database="telegraf",
        retentionPolicy="autogen",
        group=f"cpu\ncpu=cpu0,host={host}",
        dimensions=["cpu", "host"],
        tags={"cpu": "cpu0", "dc": "us-west-2a", "host": host, "region": "us-west-2"},
        fieldsDouble={"usage_user": 1.5, "usage_system": 2.5},
        fieldsInt={"count": 7},
    )


def _learned(messages: Iterator[Any]) -> Any:
    """One stream's hand decoder after it learned every point of ``messages``."""
    from udf import _fastdecode
    from udf.convert import point_from_message

    hand = _fastdecode.HandDecoder()
    for msg in messages:
        hand.learn(_response_frame(msg.SerializeToString()), point_from_message(msg))
    return hand


def _tag_sets(messages: Iterator[Any]) -> Any:
    """One stream's protobuf path after it decoded every point of ``messages`` (its tag-set cache filled)."""
    from udf import _views

    parser = _views.Parser()
    for msg in messages:
        parser.point(parser.frame(_response_frame(msg.SerializeToString())).point)
    return parser


def _encoded(points: Iterator[Point]) -> None:
    from udf.convert import encode_point

    for p in points:
        encode_point(p)


def _plain(p: Any) -> Point:
    """A point for the encoder with the series of ``p``."""
    return Point(
        p.name,
        p.database,
        p.retentionPolicy,
        p.group,
        udf.Dimensions(False, list(p.dimensions)),
        dict(p.tags),
        {"v": 1.5},
        T0,
    )


def _largest_pad(kept: Callable[[int], bool]) -> int:
    """The longest padding of the host name whose entry a cache still keeps (so its entries are just under the cap)."""
    from udf._cache import MAX_ENTRY_BYTES

    low, high = 0, MAX_ENTRY_BYTES
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if kept(mid) else (low, mid - 1)
    return low


def _encode_keeps(pad: int) -> bool:
    from udf import _fastcodec

    _fastcodec._SERIES.clear()
    _encoded(iter([_plain(_telegraf_point(0, pad))]))
    return len(_fastcodec._SERIES) == 1


def cache_sizes(quick: bool) -> None:
    from udf import _fastcodec, _fastdecode

    n = 256 if quick else 4096  # points (series) per fill
    code = 128 if quick else _fastdecode.LAYOUT_CACHE_SIZE  # layouts, writers
    heads = 512 if quick else _fastdecode.HEAD_CACHE_SIZE
    pads = {
        "decode": _largest_pad(lambda pad: _learned(iter([_telegraf_point(0, pad)])).sizes()["series"][0] == 1),
        "tags": _largest_pad(lambda pad: len(_tag_sets(iter([_telegraf_point(0, pad)]))._tag_sets) == 1),
        "encode": _largest_pad(_encode_keeps),
    }
    for case, pad in (("Telegraf-sized", 0), ("worst case", pads["decode"])):
        mb, hand = _traced(lambda pad=pad: _learned(_telegraf_point(s, pad) for s in range(n)))
        count, used = hand.sizes()["series"]
        print(
            f"decode: {count:,} series spans (one stream, {case}, hosts of +{pad:,} bytes): {mb:.2f} MB"
            f" (estimated {used / 1e6:.2f} MB)"
        )
    for case, pad in (("Telegraf-sized", 0), ("worst case", pads["tags"])):
        one = _tag_sets(iter([_telegraf_point(0, pad)]))._tag_sets
        if not one.used:  # no views on this protobuf (udf._views.VIEWS): the path keeps no tag sets
            print(f"decode: no tag sets kept (one stream's protobuf path, {case}): this protobuf has no views")
            continue
        fit = min(n, one.entries, one.budget // one.used)  # as many as it holds before it is emptied
        mb, parser = _traced(lambda pad=pad, fit=fit: _tag_sets(_telegraf_point(s, pad) for s in range(fit)))
        tag_sets = parser._tag_sets
        print(
            f"decode: {len(tag_sets):,} tag sets (one stream's protobuf path, {case}, hosts of +{pad:,} bytes):"
            f" {mb:.2f} MB (estimated {tag_sets.used / 1e6:.2f} MB)"
        )

    def layouts() -> Any:  # one series, a new field set per point
        _fastdecode._COMPILED.clear()
        return _learned(
            agent_pb2.Point(time=T0, name="m", fieldsDouble={f"f{i}": 1.0, f"g{i}": 2.0}, fieldsInt={f"n{i}": 300})
            for i in range(code)
        )

    mb, _ = _traced(layouts)
    print(f"decode: {len(_fastdecode._COMPILED):,} layouts and their builders (shared): {mb:.2f} MB")

    def heads_filled() -> Any:  # a name's first letter and length make each frame's first 7 bytes differ
        names = [chr(0x41 + c) + "x" * k for k in range(90) for c in range(58)][:heads]
        return _learned(agent_pb2.Point(name=name, fieldsDouble={"v": 1.0}) for name in names)

    mb, _ = _traced(heads_filled)
    print(f"decode: {heads:,} frame heads (with those frames' series): {mb:.2f} MB")
    for case, pad in (("Telegraf-sized", 0), ("worst case", pads["encode"])):
        _fastcodec._SERIES.clear()
        mb, _ = _traced(lambda pad=pad: _encoded(_plain(_telegraf_point(s, pad)) for s in range(n)))
        print(
            f"encode: {len(_fastcodec._SERIES):,} stream series (shared, {case}, hosts of +{pad:,} bytes):"
            f" {mb:.2f} MB (estimated {_fastcodec._SERIES.used / 1e6:.2f} MB)"
        )

    def writers() -> None:
        _fastcodec._WRITERS.clear()
        _encoded(Point(name="m", fields={f"f{i}": 1.0, f"g{i}": 2, f"s{i}": "x"}, time=T0) for i in range(code))

    mb, _ = _traced(writers)
    print(f"encode: {len(_fastcodec._WRITERS):,} compiled writers (and the caches they fill): {mb:.2f} MB")


# --- 3. the code generator ---------------------------------------------------------------


def _without_generated_code() -> None:
    """Patch the codec to run without generated code: writers never compiled, one generic builder for every layout."""
    import re

    from udf import _fastcodec, _fastdecode

    _fastcodec._writer_for = lambda keys, fields: _fastcodec._WRITERS.keep(keys, None, 100)
    source_of = _fastdecode._builder_source
    init = _fastdecode._Layout.__init__
    specs: dict[str, Any] = {}
    kinds = [
        (re.compile(p), k)
        for p, k in (
            (r"^v\[(\d+)\]$", 0),
            (r"^nine_byte_varint\(v\[(\d+)\], v\[\d+\]\)$", 1),
            (r"^\(v\[(\d+)\] & 0x7F \| v\[\d+\] >> 8 << 7\)$", 2),
            (r"^varint_value\(v\[(\d+)\]\)$", 3),
            (r"^v\[(\d+)\]\.decode\(\)$", 4),
        )
    ]

    def kind_of(expr: str) -> tuple[int, int]:
        for pattern, kind in kinds:
            match = pattern.match(expr)
            if match:
                return kind, int(match.group(1))
        raise ValueError(expr)

    def recording(fields: Any, time_expr: Any, by_name: Any) -> str:
        source = source_of(fields, time_expr, by_name)
        specs[source] = (
            tuple((key,) + kind_of(expr) for key, expr in sorted(fields)),
            kind_of(time_expr) if time_expr else None,
            kind_of(by_name)[1] if by_name else None,
        )
        return source

    nine, unpack_nine, varint = _fastdecode.nine_byte_varint, _fastdecode._NINE.unpack_from, _fastdecode.varint_value
    Dimensions, BatchPoint = udf.Dimensions, udf.BatchPoint

    def generic(spec: Any, time_spec: Any, by_name_at: Any) -> Any:
        def build(v: Any, series: Any, frame: bytes, body: int, leading: bool, batch: bool) -> Any:
            name, database, rp, group, by_name, dims, tags = series
            fields = {}
            for key, kind, i in spec:  # the layout's fields, interpreted
                x = v[i]
                if kind == 0:
                    fields[key] = x
                elif kind == 1:
                    fields[key] = nine(x, v[i + 1])
                elif kind == 2:
                    fields[key] = x & 0x7F | x >> 8 << 7
                elif kind == 3:
                    fields[key] = varint(x)
                else:
                    fields[key] = x.decode()
            if time_spec is None:
                t = nine(*unpack_nine(frame, body + 1)) if leading else 0
            else:
                kind, i = time_spec
                t = v[i] if kind == 0 else nine(v[i], v[i + 1]) if kind == 1 else varint(v[i])
            if batch:
                return BatchPoint(t, fields, tags.copy())
            if by_name_at is not None:
                by_name = v[by_name_at]
            return Point(name, database, rp, group, Dimensions(by_name, list(dims)), tags.copy(), fields, t)

        return build

    def generic_init(self: Any, mask: int, expected: int, fmt: str, source: str, size: int) -> None:
        init(self, mask, expected, fmt, source, size)
        self.build = generic(*specs[source])

    _fastdecode._builder_source = recording
    _fastdecode._Layout.__init__ = generic_init  # type: ignore[method-assign]


def generator() -> None:
    """Instructions a point to encode and to decode, with the generated code and without it (valgrind)."""
    import re

    def count(variant: str, part: str, workload_name: str, cycles: int) -> int:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                __file__,
                "--generator-run",
                variant,
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

    for workload_name in ("anchor", "series"):
        for variant in ("generated", "without"):
            base = count(variant, "encode", workload_name, 0)
            per = [(count(variant, part, workload_name, 2) - base) / (2 * 4000) for part in ("encode", "decode")]
            print(
                f"{workload_name:7} {variant:9} encode {per[0]:,.0f}  decode {per[1]:,.0f}  instructions per point",
                flush=True,
            )


# --- 4. the worst case through a real agent -------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _max_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def big_tags(series: int, tag_bytes: int) -> None:
    """Put ``series`` points, each its own series with a ``tag_bytes`` tag, through examples/mirror.py."""
    start_rss = _rss_mb()

    def points() -> Iterator[Point]:
        for i in range(series):
            yield Point("m", tags={"big": f"{i:08d}" + "x" * (tag_bytes - 8)}, fields={"v": float(i)}, time=T0 + i)

    errors: list[BaseException] = []
    with udf.Process(sys.executable, [MIRROR]) as agent:
        agent.info()
        agent.init({})

        def produce() -> None:
            try:
                for p in points():
                    agent.point_in.put(p)
            except BaseException as exc:  # reported below
                errors.append(exc)

        producer = threading.Thread(target=produce, name="bench-producer", daemon=True)
        producer.start()
        p: Any = None
        for got, p in enumerate(agent.point_out):  # taken while the producer puts
            if p.tags["big"][:8] != f"{got:08d}" or len(p.tags["big"]) != tag_bytes:
                raise AssertionError(f"point {got} came back different")
            if got + 1 == series:
                break
        producer.join(60)
    del p
    if errors:
        raise errors[0]
    gc.collect()
    print(
        f"{series:,} series with {tag_bytes // 1024} KiB tags through {os.path.basename(MIRROR)}: "
        f"max RSS {_max_rss_mb():,.0f} MB (at start {start_rss:,.0f} MB), "
        f"RSS once every point was dropped {_rss_mb():,.0f} MB"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run")
    ap.add_argument("--big-tags", action="store_true", help="only the worst case through a real agent (max RSS)")
    ap.add_argument("--series", type=int, default=4000, help="--big-tags: points, each its own series")
    ap.add_argument("--tag-kib", type=int, default=128, help="--big-tags: the tag's size")
    ap.add_argument("--generator", action="store_true", help="only: does the code generator pay (valgrind)")
    ap.add_argument("--rate-turn", type=int, metavar="CYCLES", help=argparse.SUPPRESS)
    ap.add_argument(
        "--generator-run", nargs=4, metavar=("VARIANT", "PART", "WORKLOAD", "CYCLES"), help=argparse.SUPPRESS
    )
    args = ap.parse_args(argv)
    if args.generator_run is not None:
        import ceiling

        variant, part, workload_name, cycles = args.generator_run
        if variant == "without":
            _without_generated_code()
        ceiling.run_part(part, workload_name, int(cycles))
        return 0
    if args.generator:
        generator()
        return 0
    if args.rate_turn is not None:
        print(f"{codec_rate(args.rate_turn):.1f}")
        return 0
    if args.big_tags:
        big_tags(args.series, args.tag_kib * 1024)
        return 0
    turns, cycles = (1, 1) if args.quick else (5, 25)
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(turns):
        for hand in (False, True):
            rates[hand].append(rate_turn(cycles, hand))
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    print(
        f"codec ceiling, 2,000 series: hand-written paths off (UDF_PUREPROTOBUF=1) {off:,.0f} pts/s, "
        f"on {on:,.0f} pts/s: x{on / off:.2f} (median of {turns} turns each, load {os.getloadavg()[0]:.2f})"
    )
    cache_sizes(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
