"""The reader thread: the agent's output, decoded, to the output channels and to the request callers.

It reads until EOF, whatever happens: after an abort (or an ``ErrorResponse``,
or a malformed stream) it discards what the agent still writes, so that an agent
blocked writing to us can always finish and exit. A failure that only the
agent's end can explain (a read error, EOF inside a frame or a batch) is not
raised here: it is handed to ``on_end`` for the server to decide. This is the
per-point hot path (``_dispatch``, ``_deliver``): keep it lean.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..channel import Channel
from ..convert import BATCH, POINTS, ResponseDecoder
from ..errors import AgentError, ChannelClosed, ProtocolError, ReadError, UDFError
from ..lifecycle import Lifecycle
from ..streams import describe_error
from ..wire import FrameDecoder
from .progress import Progress
from .state import ServerState

__all__ = ["Reader", "READ_CHUNK"]

#: Bytes asked of the agent's output per read.
READ_CHUNK = 256 * 1024

_ABORTED = ServerState.ABORTED


class _Aborted(Exception):
    """Raised inside the reader when delivery meets the abort: switch to discarding."""


class Reader:
    """Reads ``stream`` to its end; ``run`` is the ``udf-reader`` thread's body."""

    def __init__(
        self,
        stream: Any,
        max_frame_size: int,
        max_batch_bytes: int,
        life: Lifecycle[Any, Any],
        progress: Progress,
        outputs: tuple[Channel[Any], Channel[Any]],
        answer: Callable[[str, Any], None],
        abort: Callable[[BaseException], None],
        on_end: Callable[[UDFError | None], None],
        logger: logging.Logger,
    ) -> None:
        self._stream = stream
        self._max_frame_size = max_frame_size
        self._max_batch_bytes = max_batch_bytes
        self._life = life  # read without the lock: only to switch to discarding after an abort
        self._progress = progress
        self._point_out, self._batch_out = outputs
        self._answer = answer
        self._abort = abort
        self._on_end = on_end  # called last, with a failure the agent's end may explain, or None
        self._logger = logger
        # Counters for stats(), written by this thread only.
        self.bytes_in = 0
        self.points_out = 0
        self.batches_out = 0
        self.batch_ends = 0  # EndBatches decoded (delivered or dropped): where a batch's byte count restarts
        self.dropped = 0
        self.keepalive_rtt: float | None = None
        #: The owner asked for no output (discard_output()): a closed channel is no news.
        self.discarding = False

    def run(self) -> None:
        """Read to EOF, dispatching until an error or an abort, then discarding; report the end."""
        read = getattr(self._stream, "read1", None) or self._stream.read
        failure: UDFError | None = None
        try:
            failure = self._read(read)
        except (OSError, ValueError) as exc:
            failure = ReadError(describe_error(exc))
        except _Aborted:
            self._discard_rest(read)
        except UDFError as exc:  # the agent's ErrorResponse, a malformed stream: its own fault, now
            self._abort(exc)
            self._discard_rest(read)
        except Exception as exc:  # a bug of ours: never let the reader die silently
            self._logger.exception("udf reader failed")
            self._abort(ReadError(f"unexpected {type(exc).__name__}: {exc}"))
            self._discard_rest(read)
        finally:
            self._on_end(failure)

    def _read(self, read: Callable[[int], bytes]) -> UDFError | None:
        """The loop; returns at EOF with what was left cut short (a frame, a batch), if anything."""
        decoder = FrameDecoder(self._max_frame_size)
        responses = ResponseDecoder()
        progress = self._progress
        life = self._life
        monotonic = time.monotonic
        # The bytes read while one batch is open, counted per read (not per point):
        # an agent that never ends its batch must not make the host buffer forever.
        batch_bytes = 0
        ends_seen = 0
        while True:
            data = read(READ_CHUNK)
            if not data:
                break
            progress.last_seen = monotonic()
            self.bytes_in += len(data)
            if life.state is _ABORTED:
                continue  # discard: the agent must be able to finish writing
            frames = decoder.feed_frames(data)
            if frames:
                self._dispatch(frames, responses)
                decoder.check()
            if responses.in_batch:
                if self.batch_ends != ends_seen:  # this read ended a batch: the open one began in it
                    ends_seen = self.batch_ends
                    batch_bytes = 0
                batch_bytes += len(data)
                if batch_bytes > self._max_batch_bytes:
                    raise ProtocolError(self._batch_too_big(batch_bytes))
            elif batch_bytes:
                batch_bytes = 0
        if life.state is _ABORTED:
            return None
        try:
            decoder.eof()
            responses.eof()
        except UDFError as exc:
            return exc
        return None

    def _batch_too_big(self, size: int) -> str:
        return (
            f"the agent's batch passed max_batch_bytes ({self._max_batch_bytes} bytes) without an EndBatch "
            f"({size} bytes read since it began)"
        )

    def _discard_rest(self, read: Callable[[int], bytes]) -> None:
        progress = self._progress
        try:
            while read(READ_CHUNK):
                progress.last_seen = time.monotonic()
        except (OSError, ValueError):
            pass

    def _dispatch(self, frames: list[bytes], responses: ResponseDecoder) -> None:
        """Decode a run of frames and hand each result to its destination, in order."""
        events, error = responses.decode_frames(frames)
        for kind, item in events:
            if kind is POINTS:
                if self._deliver(self._point_out, item):
                    self.points_out += len(item)
            elif kind is BATCH:
                self.batch_ends += 1
                if self._deliver(self._batch_out, [item]):
                    self.batches_out += 1
            elif kind == "keepalive":
                sent_ns = item.keepalive.time  # agents echo the request's time
                now_ns = time.time_ns()
                if 0 < sent_ns <= now_ns:
                    self.keepalive_rtt = (now_ns - sent_ns) / 1e9
            else:
                self._answer(kind, item)
        if error is not None:
            if isinstance(error, AgentError):
                self._logger.error("%s", error)
            raise error

    def _deliver(self, channel: Channel[Any], items: list[Any]) -> bool:
        """Hand ``items`` to the consumer; False if dropped (its channel was closed by the consumer)."""
        # While blocked on a slow consumer the agent is not to blame: the
        # keepalive watcher and close()'s patience treat this time as progress.
        progress = self._progress
        progress.delivering = True
        try:
            channel.put_many(items)
            return True
        except ChannelClosed:
            if self._life.state is _ABORTED:
                raise _Aborted from None
            self._dropped_output(channel, len(items))
            return False
        finally:
            progress.delivering = False
            progress.last_seen = time.monotonic()

    def _dropped_output(self, channel: Channel[Any], count: int) -> None:
        """A closed output channel that was not closed by us: its consumer wants no more; drop."""
        first = self.dropped == 0
        self.dropped += count
        if first and not self.discarding:
            which = "point_out" if channel is self._point_out else "batch_out"
            self._logger.warning(
                "%s was closed by its consumer: dropping what the agent sends there (requests are still answered)",
                which,
            )
