"""The handler thread of a conversation: :class:`HandlerLoop`.

It takes requests from the reader's queue and calls the
:class:`~udf.agent.handler.Handler`, one at a time, in order; answers
info/init/snapshot/restore at once; flushes the buffered output whenever the
queue runs dry. At the end (the queue closed: end of input or a failure) it
calls ``handler.stop()`` with the output still open, then flushes and closes
the output.
"""

from __future__ import annotations

import logging
import queue
from typing import Any

from ..channel import Channel
from ..errors import ChannelClosed, UDFError, WriteError
from ..streams import describe_error
from ..wire import encode_frame
from .handler import Handler, as_response
from .output import FrameWriter
from .reading import Fail

__all__ = ["HandlerLoop"]


class HandlerLoop:
    """Call ``handler`` for each request on ``requests``; report what it raises through ``fail``."""

    def __init__(
        self,
        handler: Handler,
        requests: Channel[tuple[str, Any]],
        output: FrameWriter,
        fail: Fail,
        logger: logging.Logger,
    ) -> None:
        self._handler = handler
        self._requests = requests
        self._output = output
        self._fail = fail
        self._logger = logger

    def run(self) -> None:
        """Handle requests until the queue is closed and drained (or a failure); then stop and close."""
        try:
            self._handle()
        finally:
            self._finish()

    def _handle(self) -> None:
        get = self._requests.get
        dispatch = self._dispatch
        while True:
            try:
                kind, request = get(block=False)
            except queue.Empty:
                self._idle_flush()
                try:
                    kind, request = get()  # woken by the reader's put, or the queue's close
                except ChannelClosed:
                    return
            except ChannelClosed:
                return
            try:
                dispatch(kind, request)
            except WriteError as exc:
                self._fail(exc, False)
                return
            except Exception as exc:
                err = UDFError(f"error processing request of type {kind}: {str(exc) or type(exc).__name__}")
                self._logger.error("%s", err, exc_info=exc)
                self._fail(err, True, False)
                return

    def _idle_flush(self) -> None:
        try:
            self._output.flush()
        except WriteError as exc:
            self._fail(exc, False)
        except UDFError:
            pass

    def _dispatch(self, kind: str, request: Any) -> None:
        handler: Any = self._handler
        if kind == "point":
            handler.point(request.point)
        elif kind == "begin":
            handler.begin_batch(request.begin)
        elif kind == "end":
            handler.end_batch(request.end)
        elif kind == "info":
            self._answer(as_response(kind, handler.info()))
        elif kind == "init":
            self._answer(as_response(kind, handler.init(request.init)))
        elif kind == "snapshot":
            self._answer(as_response(kind, handler.snapshot()))
        elif kind == "restore":
            self._answer(as_response(kind, handler.restore(request.restore)))
        else:
            self._logger.warning("ignoring unhandled request %s", kind)

    def _answer(self, response: Any) -> None:
        self._output.write(encode_frame(response.SerializeToString()), True)

    def _finish(self) -> None:
        """Stop the handler, then flush and close the output."""
        stop = getattr(self._handler, "stop", None)
        if stop is not None:
            try:
                stop()
            except Exception as exc:
                self._fail(UDFError(f"error stopping handler: {describe_error(exc)}"), True)
        error = self._output.close()
        if error is not None:
            self._fail(error, False)
