"""Fuzz the agent-output path: frame decoding and response handling.

The target feeds arbitrary bytes (in two chunks) to :class:`udf.wire.FrameDecoder`
and the frames to :class:`udf.convert.ResponseDecoder`, as the server's reader
does (one C-level parse per read, ``decode_frames``), and again through the plain
frame-by-frame path (``decode``): both must agree. The only acceptable failures
are :class:`udf.ProtocolError` and :class:`udf.AgentError`; anything else is a bug.

With atheris installed (``pip install atheris``), run coverage-guided::

    python fuzz/fuzz_responses.py -atheris_runs=1000000

Without it, a seeded mutation loop runs (this is what CI runs, briefly)::

    python fuzz/fuzz_responses.py --iterations 20000 --seed 1

Now and then the loop's stream starts with a valid frame of 16 KiB to 2 MiB
(``_big.big_frame``: its length prefix mostly reads as text): that one must
come through clean, never called text, and then mutated in its first bytes.
"""

from __future__ import annotations

import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

try:
    from ._big import big_frame
    from ._entry import fuzz_main
except ImportError:  # run as a script: fuzz/ is sys.path[0]
    from _big import big_frame  # type: ignore[no-redef]
    from _entry import fuzz_main  # type: ignore[no-redef]

import agent_pb2  # noqa: E402
from udf import _fastdecode  # noqa: E402
from udf.convert import ResponseDecoder  # noqa: E402
from udf.errors import AgentError, ProtocolError  # noqa: E402
from udf.wire import FrameDecoder, encode_frame  # noqa: E402

MAX_FRAME = 4 << 20


def _run(data: bytes, cut: int, whole_frames: bool) -> tuple[list, str]:
    """One pass over the agent-output path; returns (events, outcome)."""
    decoder = FrameDecoder(MAX_FRAME)
    responses = ResponseDecoder()
    if whole_frames and responses._hand is not None:  # the hand path from the first frame (not after LEARN_AFTER)
        responses._hand = _fastdecode.HandDecoder(learn_after=0)
    events: list = []
    try:
        for chunk in (data[:cut], data[cut:]):
            if whole_frames:  # what the server does: one C-level parse per read
                got, error = responses.decode_frames(decoder.feed_frames(chunk))
            else:
                got, error = responses.decode(decoder.feed(chunk))
            events.extend(got)
            if error is not None:
                raise error
            decoder.check()
        decoder.eof()
        responses.eof()
    except (ProtocolError, AgentError) as exc:
        return events, type(exc).__name__
    return events, "clean"


def target(data: bytes) -> int:
    """Run one input through both decode paths; they must agree. Returns the event count."""
    cut = data[0] % (len(data) + 1) if data else 0
    fast = _run(data, cut, whole_frames=True)
    plain = _run(data, cut, whole_frames=False)
    if fast[1] != plain[1] or [k for k, _ in fast[0]] != [k for k, _ in plain[0]]:
        raise AssertionError(f"decode paths disagree on {data!r}: {fast[1]} vs {plain[1]}")
    return len(fast[0])


def seed_corpus() -> list[bytes]:
    """Valid agent outputs to mutate: points, a batch, answers, keepalives."""
    R = agent_pb2.Response
    messages = [
        R(point=agent_pb2.Point(name="cpu", time=1, tags={"h": "a"}, fieldsDouble={"v": 1.5}, fieldsInt={"n": 2})),
        R(begin=agent_pb2.BeginBatch(name="b", size=2, tags={"h": "a"})),
        R(point=agent_pb2.Point(time=2, fieldsBool={"ok": True}, fieldsString={"s": "x"})),
        R(end=agent_pb2.EndBatch(name="b", tmax=2)),
        R(
            info=agent_pb2.InfoResponse(
                wants=agent_pb2.BATCH, options={"f": agent_pb2.OptionInfo(valueTypes=[agent_pb2.STRING])}
            )
        ),
        R(init=agent_pb2.InitResponse(success=True)),
        R(keepalive=agent_pb2.KeepaliveResponse(time=3)),
        R(snapshot=agent_pb2.SnapshotResponse(snapshot=b"state")),
        R(error=agent_pb2.ErrorResponse(error="boom")),
    ]
    frames = [encode_frame(m.SerializeToString()) for m in messages]
    return [b"".join(frames)] + frames


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        op = rng.randrange(5)
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # truncate
            del buf[rng.randrange(len(buf)) :]
        elif op == 2:  # insert random bytes
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        elif op == 3 and buf:  # overwrite with a boundary value
            buf[rng.randrange(len(buf))] = rng.choice([0x00, 0x7F, 0x80, 0xFF])
        else:  # duplicate a slice
            if buf:
                i = rng.randrange(len(buf))
                buf[i:i] = buf[i : i + rng.randrange(1, 32)]
    return bytes(buf)


def check_big_first_frame(rng: random.Random, corpus: list[bytes]) -> None:
    """A stream that starts with a valid frame of 16 KiB to 2 MiB comes through clean; then its start is mutated."""
    data = big_frame(rng) + corpus[0]  # the corpus's whole stream ends with an ErrorResponse
    events, outcome = _run(data, rng.randrange(len(data) + 1), whole_frames=True)
    if outcome != "AgentError" or len(events) < 2:  # the big frame's event and the corpus's before its ErrorResponse
        raise AssertionError(
            f"a stream that starts with a frame of {len(data)} bytes came out {outcome} after {len(events)} events"
        )
    target(mutate(rng, data[:32]) + data[32:])


def run_loop(iterations: int, seed: int) -> int:
    """The fallback fuzzer: seeded mutations of valid streams plus pure random bytes; a few big first frames."""
    rng = random.Random(seed)
    corpus = seed_corpus()
    for _ in range(iterations):
        if rng.random() < 0.0005:
            check_big_first_frame(rng, corpus)
        if rng.random() < 0.1:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
        else:
            data = mutate(rng, rng.choice(corpus))
        target(data)
    return iterations


def main(argv: list[str]) -> int:
    return fuzz_main(
        argv,
        (__doc__ or "").splitlines()[0],
        target,
        run_loop,
        lambda n: f"fuzz: {n} inputs, no unexpected exception",
        100_000,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
