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
    """BeginBatch, then points forever: the host aborts at 1 MiB with one cause everywhere, and RSS stays bounded.

    (1 MiB, not more: on protobuf 4.22's pure-Python backend each 10,000 points take seconds.)
    """
    before = _rss_kib()
    proc = batches_agent(1000, 0, 2**20)
    proc.open()
    proc.info()
    proc.init({})
    with pytest.raises(ChannelClosed) as got:
        proc.batch_out.get(timeout=TIMEOUT * 3)
    cause = got.value.__cause__
    assert isinstance(cause, ProtocolError), repr(cause)
    assert "max_batch_bytes (1048576 bytes) without an EndBatch" in str(cause)
    assert proc.error is cause
    with pytest.raises(ProtocolError) as closed:
        proc.close(timeout=TIMEOUT)
    assert closed.value is cause
    # 1 MiB of frames becomes about 10x that in Python objects; without the limit it grows until memory ends.
    assert _rss_kib() - before < 200 * 1024


@pytest.mark.slow
def test_batches_under_the_limit_pass_whatever_their_total() -> None:
    """12 batches of 0.66 MiB each (8 MiB in all) through a 1 MiB limit: every batch arrives whole.

    (99-byte point frames; a read that ends one batch and begins the next counts whole
    for the new one: up to one 256 KiB read more than the batch, still under the limit.
    Twelve, not more: 84,000 points already take seconds on protobuf 4.22's pure-Python backend.)
    """
    proc = batches_agent(7000, 12, 2**20)
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
    assert got == [7000] * 12


def test_max_batch_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch_bytes must be positive"):
        udf.Server(None, None, max_batch_bytes=0)


def test_close_after_an_abort_ends_an_agent_that_keeps_writing() -> None:
    """The server aborted (a batch past the limit) and the agent keeps writing: close() with no timeout
    still ends, SIGTERM after ``kill_grace``, because what an aborted server discards is no progress.
    """
    proc = udf.Process(sys.executable, [str(AGENTS / "batches.py"), "1000", "0"], max_batch_bytes=2**18, kill_grace=0.5)
    proc.open()
    proc.info()
    proc.init({})
    with pytest.raises(ChannelClosed):
        proc.batch_out.get(timeout=TIMEOUT * 3)
    errors: list[BaseException] = []

    def close() -> None:
        try:
            proc.close()
        except BaseException as exc:
            errors.append(exc)

    closer = threading.Thread(target=close, name="test-closer")
    closer.start()
    closer.join(TIMEOUT * 3)  # before the fix: blocked as long as the agent writes
    assert not closer.is_alive(), "close() after an abort waited for an agent that never stops writing"
    assert len(errors) == 1 and isinstance(errors[0], ProtocolError), errors  # the first error stays the cause
    assert proc.returncode is not None and proc.returncode < 0  # it was signalled
