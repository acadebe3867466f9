"""max_batch_bytes: an agent that never ends its batch cannot make the host buffer without bound (issue 21)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

import udf
from udf.errors import ChannelClosed, ProtocolError

from ..helpers import AGENTS, TIMEOUT


def batches_agent(per_batch: int, count: int, max_batch_bytes: int) -> udf.Process:
    return udf.Process(
        sys.executable, [str(AGENTS / "batches.py"), str(per_batch), str(count)], max_batch_bytes=max_batch_bytes
    )


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.slow
def test_a_batch_that_never_ends_is_refused_at_the_limit_naming_it() -> None:
    """BeginBatch, then points forever: the host aborts at 4 MiB with one cause everywhere, and RSS stays bounded."""
    before = _rss_kib()
    proc = batches_agent(1000, 0, 4 * 2**20)
    proc.open()
    proc.info()
    proc.init({})
    with pytest.raises(ChannelClosed) as got:
        proc.batch_out.get(timeout=TIMEOUT * 3)
    cause = got.value.__cause__
    assert isinstance(cause, ProtocolError), repr(cause)
    assert "max_batch_bytes (4194304 bytes) without an EndBatch" in str(cause)
    assert proc.error is cause
    with pytest.raises(ProtocolError) as closed:
        proc.close(timeout=TIMEOUT)
    assert closed.value is cause
    # 4 MiB of frames become about 10x that in Python objects; without the limit it grows until memory ends.
    assert _rss_kib() - before < 200 * 1024


@pytest.mark.slow
def test_batches_under_the_limit_pass_whatever_their_total() -> None:
    """60 batches of 0.66 MiB each (40 MiB in all) through a 1 MiB limit: every batch arrives whole.

    (99-byte point frames; a read that ends one batch and begins the next counts whole
    for the new one: up to one 256 KiB read more than the batch, still under the limit.)
    """
    proc = batches_agent(7000, 60, 2**20)
    got: list[int] = []
    proc.open()
    consumer = threading.Thread(
        target=lambda: got.extend(len(b.points) for b in proc.batch_out), name="fake-agent-consumer"
    )
    consumer.start()
    try:
        proc.info()
        proc.init({})
        # The agent ends its output once it has sent its batches and its input ends: close() waits for that.
        proc.close(timeout=TIMEOUT * 6)
    finally:
        consumer.join(TIMEOUT)
    assert not consumer.is_alive()
    assert got == [7000] * 60


def test_max_batch_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch_bytes must be positive"):
        udf.Server(None, None, max_batch_bytes=0)
