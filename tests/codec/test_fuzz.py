"""Run the fuzz entry point briefly, so that it never rots and finds what it can."""

from __future__ import annotations

import subprocess
import sys

import pytest

import agent_pb2
from fuzz.fuzz_responses import run_loop, seed_corpus, target

from ..helpers import ROOT


def test_seed_corpus_is_valid_and_produces_events() -> None:
    whole = seed_corpus()[0]
    assert target(whole) >= 1  # points before the ErrorResponse are events
    for frame in seed_corpus()[1:]:
        target(frame)


@pytest.mark.slow
def test_mutation_loop_finds_no_unexpected_exception() -> None:
    assert run_loop(50_000, seed=7) == 50_000


@pytest.mark.parametrize(
    "script, iterations, seed, said",
    [
        ("fuzz_responses.py", "2000", "3", "fuzz: 2000 inputs, no unexpected exception"),
        ("fuzz_codec.py", "500", "5", "fuzz codec: 500 points and 500 agent outputs, both paths agree"),
    ],
)
def test_entry_point_runs_from_the_command_line(script: str, iterations: str, seed: str, said: str) -> None:
    """The command line runs (the loops themselves run below, in this process)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / script), "--loop", "--iterations", iterations, "--seed", seed],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert said in out.stdout
    assert agent_pb2.Response  # the module under test imports the same generated code


@pytest.mark.slow
def test_codec_fuzz_loop_agrees_with_protobuf() -> None:
    """The hand-written encoder and decoder agree with protobuf's own paths."""
    from fuzz.fuzz_codec import run_loop as codec_loop

    assert codec_loop(2000, seed=11) == 2000


def test_big_first_frames_come_through_both_fuzzers() -> None:
    """The fuzzers' frames of 16 KiB to 2 MiB (length prefixes that read as text) are decoded, never called text."""
    import random

    from fuzz.fuzz_codec import big_first_frame, decode_target
    from fuzz.fuzz_responses import check_big_first_frame

    rng = random.Random(18)
    for _ in range(6):
        check_big_first_frame(rng, seed_corpus())
        assert decode_target(big_first_frame(rng)) >= 1
