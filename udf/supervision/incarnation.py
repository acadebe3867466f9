"""One agent's life under a Supervisor: start it, replay the log into it, stop it, reap it.

An :class:`Incarnation` wraps one :class:`udf.Interface` the factory built,
using only what ``Interface`` declares (``open``, ``info``, ``init``,
``restore``, ``put_encoded``, ``abort``, ``kill``, ``close``, ``error``,
``add_abort_callback``, ``snapshot_with_position``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..convert import BATCH as BATCH_EVENT
from ..convert import POINTS, Info, ResponseDecoder
from ..errors import ChannelClosed, InitError, RestoreError, UDFError
from ..interface import Interface
from ..stats import Stats
from ..wire import FrameDecoder
from .replay_log import KIND_NAMES, Entry

__all__ = ["RETIRE_GRACE", "Fatal", "ReplayFailed", "Incarnation", "describe_item"]

#: How long a retiring agent whose output ended cleanly may take to exit before it is killed.
RETIRE_GRACE = 2.0

#: ``put_encoded(frame, block, timeout)`` of an agent's inlet.
PutEncoded = Callable[[bytes, bool, float | None], None]
#: Where an incarnation reports its failures: ``report(gen, cause)`` (its abort callback).
FailureReport = Callable[[int, BaseException], None]


class Fatal(Exception):
    """A failure a restart cannot cure (InitError, RestoreError, other edge types): give up now."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class ReplayFailed(Exception):
    """The new agent failed while the log was replayed into it: ``cause``, ``where``, and the last ``seq`` sent."""

    def __init__(self, cause: BaseException, where: str, seq: int) -> None:
        super().__init__(where)
        self.cause = cause
        self.where = where
        self.seq = seq


class Incarnation:
    """Agent ``gen`` (0 the first): its transport, where its items start, and how frames go into it."""

    def __init__(self, udf: Interface, gen: int) -> None:
        self.udf = udf
        self.gen = gen
        #: The seq of this agent's first item: its snapshot position ``p`` covers the items before ``base + p``.
        self.base = 0
        #: ``put_encoded`` of its point_in and batch_in, by kind (bound at start()).
        self.puts: tuple[PutEncoded, ...] = ()

    @property
    def error(self) -> BaseException | None:
        """The transport's first error (what every call to it raises), or ``None``."""
        return self.udf.error

    def start(
        self, report: FailureReport, expected: Info | None, options: list[Any] | None, snapshot: bytes | None
    ) -> Info:
        """Open the agent, check its edge types against ``expected``, ``init(options)``, ``restore(snapshot)``.

        Raises :class:`Fatal` for what a restart cannot cure (other edge
        types; for a replacement, refused init options; a refused snapshot);
        the first agent's own ``InitError`` is raised as it is.
        """
        udf, gen = self.udf, self.gen
        udf.add_abort_callback(lambda err: report(gen, err))
        udf.open()
        self.puts = (udf.point_in.put_encoded, udf.batch_in.put_encoded)
        info = udf.info()
        if expected is not None and (info.wants, info.provides) != (expected.wants, expected.provides):
            raise Fatal(
                UDFError(
                    f"the new agent wants {_edge(info.wants)} and provides {_edge(info.provides)}, "
                    f"the first one wanted {_edge(expected.wants)} and provided {_edge(expected.provides)}"
                )
            )
        if options is not None:
            try:
                udf.init(options)
            except InitError as exc:
                if gen == 0:
                    raise
                raise Fatal(exc) from None
        if snapshot is not None:
            try:
                udf.restore(snapshot)
            except RestoreError as exc:
                raise Fatal(exc) from None
        return info

    def replay(self, first: int, entries: list[Entry], careful_until: int | None) -> int:
        """Put ``entries`` (seq ``first`` on) in order, then confirm with a round trip; return how many.

        Up to seq ``careful_until`` (where an agent died while replayed into
        before) each item gets its own round trip, so that the item an agent
        dies on is known. Raises :class:`ReplayFailed`.
        """
        puts, count = self.puts, len(entries)
        for i, (kind, frame) in enumerate(entries):
            seq = first + i
            careful = careful_until is not None and seq <= careful_until
            try:
                puts[kind](frame, True, None)
                if careful:
                    self.udf.info()  # a round trip: the agent has processed this item
            except (UDFError, OSError) as exc:
                what = "" if careful else "at or before "
                where = (
                    f"while replaying {what}{KIND_NAMES[kind]} {i + 1} of {count} since the last snapshot "
                    f"(item #{seq} accepted): {describe_item(frame, kind)}"
                )
                raise ReplayFailed(self.explain(exc), where, seq) from None
        if count:
            try:
                self.udf.info()
            except (UDFError, OSError) as exc:
                where = f"while replaying the {count} items accepted since the last snapshot"
                raise ReplayFailed(self.explain(exc), where, first + count - 1) from None
        return count

    def snapshot(self) -> tuple[bytes, int]:
        """A snapshot, and the seq of the first item it does not cover."""
        data, position = self.udf.snapshot_with_position()
        return data, self.base + int(position)

    def explain(self, exc: BaseException) -> BaseException:
        """Why a put or a request failed: the agent's own error if it has one."""
        error = self.udf.error
        if error is not None:
            return error
        if isinstance(exc, ChannelClosed) and exc.__cause__ is not None:
            return exc.__cause__
        return exc

    # --- the end --------------------------------------------------------------------

    def abort(self, err: BaseException) -> None:
        """Abort the agent's conversation now (it wakes a producer or a request blocked on it)."""
        try:
            self.udf.abort(err)
        except Exception:
            pass  # an abort is best effort: the kill and the close follow

    def kill(self) -> None:
        """End the agent now, without waiting (a hung one); nothing to do if it was never opened."""
        try:
            self.udf.kill()
        except UDFError:
            pass  # not opened

    def stop(self, cause: BaseException, soft: bool) -> threading.Timer | None:
        """Abort and kill the agent now, without waiting; :meth:`reap` then closes it.

        An agent whose output ended cleanly (``soft``) is instead given
        RETIRE_GRACE seconds to exit and explain itself: the returned timer
        kills it then.
        """
        if soft and self.udf.error is None:
            reaper = threading.Timer(RETIRE_GRACE, self.kill)
            reaper.name = "udf-supervisor-reaper"
            reaper.daemon = True
            reaper.start()
            return reaper
        self.abort(cause)
        self.kill()
        return None

    def reap(self, cause: BaseException, reaper: threading.Timer | None) -> BaseException:
        """Close the stopped agent; return the best explanation of its end (its own error first)."""
        close_error: BaseException | None = None
        try:
            self.udf.close()
        except Exception as exc:
            close_error = exc
        if reaper is not None:
            reaper.cancel()
            reaper.join()
        return self.udf.error or close_error or cause

    def discard(self, cause: BaseException, soft: bool = False) -> BaseException:
        """End the agent (abort, kill, close); return the best explanation of its end."""
        return self.reap(cause, self.stop(cause, soft))

    def close(self, discard_output: bool) -> None:
        """Close the agent cleanly (its input ends, its output is read to the end); raise its first error."""
        if discard_output:
            self.udf.close(discard_output=True)
        else:
            self.udf.close()

    def stats(self) -> Stats:
        """The transport's stats; zeros (state "") for one that does not report them."""
        try:
            return self.udf.stats()
        except NotImplementedError:
            return Stats(
                state="", uptime=0.0, points_in=0, batches_in=0, points_out=0, batches_out=0, bytes_in=0, bytes_out=0
            )


def describe_item(frame: bytes, kind: int) -> str:
    """The item an encoded frame holds, for a message (at most 300 characters)."""
    try:
        text = repr(_decode_item(frame))
    except Exception as exc:  # a frame we encoded ourselves: should not happen
        text = f"<undecodable {KIND_NAMES[kind]}: {exc}>"
    return text if len(text) <= 300 else text[:297] + "..."


def _decode_item(frame: bytes) -> Any:
    """The ``udf.Point`` or ``udf.Batch`` of a frame ``encode_point``/``encode_batch`` made.

    Request and Response share the data messages' field numbers, so the
    response decoder reads them.
    """
    frames = FrameDecoder(max(len(frame), 1)).feed_frames(frame)
    events, error = ResponseDecoder().decode_frames(frames)
    if error is not None:
        raise error
    for event, item in events:
        if event is POINTS:
            return item[0]
        if event is BATCH_EVENT:
            return item
    raise ValueError("not an encoded point or batch")


def _edge(edge: int) -> str:
    return {0: "stream", 1: "batch"}.get(edge, str(edge))
