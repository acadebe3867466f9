"""The reader thread of a conversation: :class:`RequestReader`.

It reads the input in ``READ_CHUNK`` pieces, splits them with the sans-I/O
:class:`udf.wire.FrameDecoder` (one read call per many frames, not one per
length prefix as Kapacitor's agent does), answers keepalives at once (even
while the handler is busy) and queues every other request for the handler
thread in one ``put_many`` per read. The queue is bounded: a handler that falls
behind stops the reader, which applies backpressure to the host.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import agent_pb2

from ..channel import Channel
from ..errors import ChannelClosed, ProtocolError, ReadError, UDFError, WriteError
from ..streams import describe_error
from ..wire import FrameDecoder, encode_frame, parse_payload
from .output import FrameWriter

__all__ = ["RequestReader", "READ_CHUNK", "ReadWatch"]

#: Bytes asked of the input per read.
READ_CHUNK = 256 * 1024

#: Called after each read with the bytes of unfinished frames the reader holds
#: and whether the read completed requests (how AgentServer enforces its limits).
ReadWatch = Callable[[int, bool], None]


class Fail(Protocol):
    """The conversation's one way to stop on a fatal error: the first error is kept, logged and reported."""

    def __call__(self, error: BaseException, report: bool, log: bool = True) -> None: ...


class RequestReader:
    """Decode requests from ``stream``; answer keepalives; queue the rest on ``requests``.

    :meth:`run` returns at the end of the input. After a failure (its own, a
    malformed request, or the conversation's, seen as ``requests`` closed) it
    reads and discards the input until its end, so the host is never blocked
    writing to an agent that stopped listening.
    """

    def __init__(
        self,
        stream: Any,
        requests: Channel[tuple[str, Any]],
        output: FrameWriter,
        fail: Fail,
        logger: logging.Logger,
        max_frame_size: int,
        watch: ReadWatch | None = None,
    ) -> None:
        self._stream = stream
        self._requests = requests
        self._output = output
        self._fail = fail
        self._logger = logger
        self._max_frame_size = max_frame_size
        self._watch = watch
        #: Keepalive requests answered so far.
        self.keepalives = 0

    def run(self) -> None:
        """Read until the end of the input; closes the stream."""
        stream = self._stream
        read = getattr(stream, "read1", None) or stream.read
        try:
            self._read(read)
        except ProtocolError as exc:
            self._fail(exc, True)
            self._discard(read)
        except Exception as exc:  # a bug of ours: report it rather than die silently
            self._logger.exception("agent reader failed")
            self._fail(UDFError(f"agent reader failed: {type(exc).__name__}: {exc}"), True)
            self._discard(read)
        finally:
            try:
                stream.close()
            except (OSError, ValueError):
                pass

    def _read(self, read: Callable[[int], bytes | None]) -> None:
        decoder = FrameDecoder(self._max_frame_size, text_hint="the input is text, not UDF frames")
        feed = decoder.feed
        parse = agent_pb2.Request.FromString
        put_many = self._requests.put_many
        watch = self._watch
        queue_open = True
        while True:
            try:
                data = read(READ_CHUNK)
            except (OSError, ValueError) as exc:
                self._fail(ReadError(describe_error(exc)), False)  # the first error stays the error
                return
            if not data:
                if queue_open:
                    decoder.eof()
                return
            if not queue_open:
                continue  # stopped after an error: discard until EOF
            batch: list[tuple[str, Any]] = []
            payloads = feed(data)
            for payload in payloads:
                request = parse_payload(parse, payload)
                kind = request.WhichOneof("message")
                if kind == "keepalive":
                    self._answer_keepalive(request.keepalive.time)
                elif kind is None:
                    self._logger.warning("ignoring a request of an unknown type (%d bytes)", len(payload))
                else:
                    batch.append((kind, request))
            if batch:
                try:
                    put_many(batch)
                except ChannelClosed:
                    queue_open = False
            if watch is not None:
                watch(decoder.buffered, bool(payloads))

    def _discard(self, read: Callable[[int], bytes | None]) -> None:
        """Read and drop the input until its end; the frame decoder is gone, so nothing is held."""
        if self._watch is not None:
            self._watch(0, False)
        try:
            while read(READ_CHUNK):
                pass
        except (OSError, ValueError):
            pass

    def _answer_keepalive(self, t: int) -> None:
        if self._requests.closed:
            return  # the conversation stopped taking requests: a failure, or the end
        response = agent_pb2.Response(keepalive=agent_pb2.KeepaliveResponse(time=t))
        self.keepalives += 1  # counted first: the host may see the answer before write returns
        try:
            self._output.write(encode_frame(response.SerializeToString()), True)
        except WriteError as exc:
            self._fail(exc, False)
        except UDFError:
            pass  # output already closed: we are stopping
