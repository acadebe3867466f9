"""The writer thread: frames from the outbox to the agent's input, many per write call.

It owns the agent's input stream and closes it when it ends: at the end of the
outbox (``stop()``), at an abort, or when a write fails. A failure is only
recorded (``on_end(error)``): the server decides what it means once it knows
more (what the agent wrote before its end, and, for a process, its exit).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import UDFError, WriteError
from ..streams import describe_error
from .outbox import Outbox
from .progress import Progress

__all__ = ["Writer", "close_quietly"]


class Writer:
    """Writes what the outbox gives it to ``stream``; ``run`` is the ``udf-writer`` thread's body."""

    def __init__(
        self, stream: Any, outbox: Outbox, progress: Progress, on_end: Callable[[UDFError | None], None]
    ) -> None:
        #: The agent's input, closed by this thread when it ends (or by the server if never started).
        self.stream = stream
        self._outbox = outbox
        self._progress = progress
        self._on_end = on_end  # called last, with the write failure or None
        #: Bytes written to the agent (stats); written by this thread only.
        self.bytes_out = 0

    def run(self) -> None:
        """Write until the outbox ends (stop or abort) or a write fails; close the stream; report."""
        error: UDFError | None = None
        try:
            self._write_frames()
        except Exception as exc:  # OSError (EPIPE, ...), ValueError (closed file), a broken writer
            error = WriteError(describe_error(exc))
        finally:
            close_quietly(self.stream)
            progress = self._progress
            progress.input_closed = True
            progress.last_write = time.monotonic()  # closing the agent's input starts its time to finish
            # After a failure the frames in flight stay "unwritten": they were lost.
            self._on_end(error)

    def _write_frames(self) -> None:
        """The loop: take every queued frame (up to a budget), write them at once, flush."""
        stream = self.stream
        write = stream.write
        flush = getattr(stream, "flush", None)
        outbox = self._outbox
        take = outbox.take
        progress = self._progress
        monotonic = time.monotonic
        while True:
            frames = take()  # blocks until frames, stop() or abort()
            if frames is None:
                return
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            written = write(data)
            if written is not None and written < len(data):
                _write_rest(write, memoryview(data)[written:])
            if flush is not None:
                flush()
            outbox.in_flight = False
            self.bytes_out += len(data)
            progress.last_write = monotonic()


def close_quietly(stream: Any) -> None:
    """Close the agent's input; a dead pipe loses nothing by not being flushed."""
    try:
        stream.close()
    except (OSError, ValueError):
        pass


def _write_rest(write: Callable[[Any], int | None], view: memoryview) -> None:
    """Finish a partial write (raw streams may accept fewer bytes than given)."""
    while view:
        written = write(view)
        if not written:
            raise OSError("write accepted no bytes")
        view = view[written:]
