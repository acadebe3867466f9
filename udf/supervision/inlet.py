"""``Supervisor.point_in``/``batch_in``: the same objects whatever agent is behind them."""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from ..convert import encode_batch, encode_point
from ..errors import ChannelClosed
from .core import Core
from .replay_log import POINT

__all__ = ["StableInlet"]


class StableInlet:
    """One kind's send side: validate and encode in the caller's thread, then log and send, in one order.

    A bad item raises ``TypeError``/``ValueError`` naming the field, and
    nothing is accepted. While an agent is being replaced, ``put`` waits
    (``queue.Full`` if ``block=False`` or at ``timeout``). It uses the
    :class:`Core`'s put path only: ``lock``, ``log`` (its entries and
    ``accepted``), ``slow_at``, ``puts``, ``wait_for_room`` and ``refused``.
    """

    __slots__ = ("_core", "_log", "_append", "_kind", "_encode", "_encoded")

    def __init__(self, core: Core, kind: int, encode: Callable[[Any], bytes] | None = None) -> None:
        self._core = core
        self._log = core.log
        self._append = core.log.appender(kind)
        self._kind = kind
        self._encoded: StableInlet | None = None
        if encode is None:
            encode = encode_point if kind == POINT else encode_batch
            # put_encoded: the same path with no encoding (bytes(frame) is frame itself).
            self._encoded = StableInlet(core, kind, bytes)
        self._encode = encode

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Accept ``item``: log it for replay and send it to the current agent, in one order."""
        frame = self._encode(item)
        core = self._core
        log = self._log
        with core.lock:
            # The hot path: ReplayLog.append inline, and nothing more until slow_at.
            seq = log.accepted
            if seq >= core.slow_at:
                seq = core.wait_for_room(block, timeout)
            self._append(frame)
            log.accepted = seq + 1
            try:
                core.puts[self._kind](frame, block, timeout)
            except (queue.Full, ChannelClosed) as exc:
                core.refused(seq, exc)

    def put_encoded(self, frame: bytes, block: bool = True, timeout: float | None = None) -> None:
        """Accept an item already encoded by ``udf.convert.encode_point``/``encode_batch``."""
        encoded = self._encoded if self._encoded is not None else self
        encoded.put(frame, block, timeout)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)
