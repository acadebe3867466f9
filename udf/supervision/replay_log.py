"""The replay log: the items accepted since the last snapshot, in order, and that snapshot.

Every item ``put()`` accepts gets a sequence number (``seq``, from 0, in the
order accepted). The log keeps the items from ``covered`` (the first one the
last snapshot does not cover) up to ``accepted`` (the next item's seq) as
``(kind, frame)`` entries: what a new agent needs after ``restore(snapshot)``.
A snapshot cuts the log at the seq it covers; an item the agent did not take
is rolled back. It also says when a count snapshot is due, and where producers
must wait for one (:meth:`ReplayLog.limit`). Pure: no threads, no I/O; its
owner (:class:`udf.supervision.core.Core`) guards it with its lock.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

__all__ = ["POINT", "BATCH", "KIND_NAMES", "LOG_SLACK", "Entry", "ReplayLog"]

#: An entry's kind: which inlet accepted it (``point_in`` or ``batch_in``).
POINT, BATCH = 0, 1
KIND_NAMES = ("point", "batch")

#: Producers wait (for the next snapshot) when the log holds this many items
#: beyond ``snapshot_every``: a backstop, the transport's own bounded queues
#: normally keep the log far below it.
LOG_SLACK = 16_384

#: ``(kind, frame)``: the item as ``encode_point``/``encode_batch`` made it.
Entry = tuple[int, bytes]


class ReplayLog:
    """The items since the last snapshot as ``(kind, frame)``, numbered; the snapshot; the next one's due seq.

    ``keep=False`` (``replay=False``) keeps no entries, only the numbers: a
    restart then counts the items since the snapshot as lost.
    """

    __slots__ = ("_entries", "accepted", "covered", "snapshot", "keep", "_every", "_due_at", "_cap")

    def __init__(self, snapshot_every: int, keep: bool = True, slack: int = LOG_SLACK) -> None:
        # The entries from seq ``covered`` on: a point's is its frame, a batch's
        # ``(BATCH, frame)``, so that the point path, the hot one, allocates
        # nothing (a tuple per point costs put() about 2%, in the allocation and
        # the garbage collector's passes). The same deque for the log's whole life.
        self._entries: collections.deque[bytes | Entry] = collections.deque() if keep else collections.deque(maxlen=0)
        self.accepted = 0  # the next item's seq
        self.covered = 0  # items before this seq are in the snapshot (or were lost)
        self.snapshot: bytes | None = None
        self.keep = keep
        self._every = snapshot_every
        self._due_at = snapshot_every  # the seq at which a count snapshot is due
        self._cap = snapshot_every + slack

    def __len__(self) -> int:
        return len(self._entries)

    def appender(self, kind: int) -> Callable[[bytes], None]:
        """The put path's way to log a frame of ``kind`` (StableInlet.put calls it, then counts ``accepted``)."""
        if kind == POINT:
            return self._entries.append
        entries = self._entries

        def append_batch(frame: bytes) -> None:
            entries.append((kind, frame))

        return append_batch

    def append(self, kind: int, frame: bytes) -> int:
        """Accept an item; return its seq. (StableInlet.put does the same inline: the hot path.)"""
        seq = self.accepted
        self.appender(kind)(frame)
        self.accepted = seq + 1
        return seq

    def rollback(self, seq: int) -> None:
        """Un-accept the last item, ``seq``: the agent did not take it (``queue.Full``), so nothing was accepted."""
        if seq != self.accepted - 1:
            raise ValueError(f"only the last item can be rolled back: {seq} is not {self.accepted - 1}")
        if self.keep:
            self._entries.pop()
        self.accepted = seq

    def cut(self, seq: int, snapshot: bytes) -> bool:
        """Record ``snapshot``, which covers the items before ``seq``, and drop them; False if older than ours."""
        if seq < self.covered:
            return False
        if seq > self.accepted:
            raise ValueError(f"a snapshot cannot cover item {seq}: only {self.accepted} accepted")
        entries = self._entries
        for _ in range(min(seq - self.covered, len(entries))):
            entries.popleft()
        self.covered = seq
        self.snapshot = snapshot
        self._due_at = max(self._due_at, seq + self._every)
        return True

    def since_cut(self) -> tuple[int, list[Entry]]:
        """What to replay into a new agent after the snapshot: the first entry's seq, and the entries in order."""
        return self.covered, [(POINT, e) if isinstance(e, bytes) else e for e in self._entries]

    def forget(self) -> int:
        """``replay=False``: the items since the snapshot will not be replayed; return how many are lost."""
        lost = self.accepted - self.covered
        self._entries.clear()
        self.covered = self.accepted
        return lost

    def snapshot_due(self) -> bool:
        """Whether ``snapshot_every`` items were accepted since the last snapshot was due or asked for."""
        return self.accepted >= self._due_at

    def snapshot_asked(self) -> None:
        """A count snapshot was asked for now: the next one is due ``snapshot_every`` items later."""
        self._due_at = self.accepted + self._every

    def has_room(self) -> bool:
        """Whether the log may grow (``snapshot_every`` plus the slack); producers wait for a snapshot otherwise."""
        return len(self._entries) < self._cap

    def limit(self) -> int:
        """The seq from which ``put()`` leaves its fast path: a count snapshot is due there, or the log is full."""
        if self.keep:
            return min(self._due_at, self.covered + self._cap)
        return self._due_at
