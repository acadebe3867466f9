"""An agent's output: :class:`FrameWriter` buffers response frames and writes them in bursts.

Every response goes through one lock into one buffer, written in one call when
flushed, when it passes ``FLUSH_THRESHOLD``, or when the handler thread goes
idle (the agent calls :meth:`FrameWriter.flush`): a burst of results costs one
write, and frames from several threads never interleave.
"""

from __future__ import annotations

import errno
import threading
from typing import Any, Protocol

from ..errors import UDFError, WriteError
from ..lifecycle import Lifecycle
from ..streams import describe_error
from .states import OUTPUT_TABLE, OutputEvent, OutputState

__all__ = ["FrameWriter", "FLUSH_THRESHOLD"]

#: Buffered output that is written even without a flush.
FLUSH_THRESHOLD = 256 * 1024

_OPEN = OutputState.OPEN


class OutputStream(Protocol):
    def write(self, data: bytes, /) -> int | None: ...

    def close(self) -> None: ...


class FrameWriter:
    """Frames to one binary stream, buffered; thread safe. Its life: table ``udf.agent.Output``.

    A failed write breaks the output for good (:class:`udf.WriteError` once,
    then :class:`udf.UDFError` "agent output is closed", as after :meth:`close`).
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lock = threading.Lock()  # guards _buffer, the lifecycle and every write
        self._buffer = bytearray()
        self._life = Lifecycle(OUTPUT_TABLE, _OPEN)

    @property
    def state(self) -> OutputState:
        return self._life.state

    def write(self, data: bytes, flush: bool) -> None:
        """Append ``data`` (whole frames); write the buffer if ``flush`` or past FLUSH_THRESHOLD."""
        with self._lock:
            if self._life.state is not _OPEN:
                raise UDFError("agent output is closed")
            buffer = self._buffer
            buffer += data
            if buffer and (flush or len(buffer) >= FLUSH_THRESHOLD):
                self._write_locked()

    def flush(self) -> None:
        """Write whatever is buffered."""
        self.write(b"", True)

    def close(self) -> WriteError | None:
        """Flush and close the stream; returns the flush's failure, if any (closing never raises)."""
        error: WriteError | None = None
        with self._lock:
            if self._buffer and self._life.state is _OPEN:
                try:
                    self._write_locked()
                except WriteError as exc:
                    error = exc
            self._life.fire(OutputEvent.CLOSE)
            try:
                self._stream.close()
            except (OSError, ValueError):
                pass
        return error

    def _write_locked(self) -> None:
        data = bytes(self._buffer)
        self._buffer.clear()
        stream = self._stream
        try:
            view = memoryview(data)
            while view:
                written = stream.write(view)
                if written is None:  # buffered streams write everything
                    break
                if written <= 0:
                    raise OSError(errno.EPIPE, "write accepted no bytes")
                view = view[written:]
            flush = getattr(stream, "flush", None)
            if flush is not None:
                flush()
        except (OSError, ValueError) as exc:
            self._life.fire(OutputEvent.WRITE_FAILED)
            raise WriteError(describe_error(exc)) from exc
