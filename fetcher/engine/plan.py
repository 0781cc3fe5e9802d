"""Which byte ranges of an archive are written, which are being fetched, and who takes what.

The several-connection engine cuts an archive into ranges handed out as workers need them; a
worker that runs out takes half of the largest range still being fetched (as aria2 does).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

MIN_PIECE = 8 * 1024 * 1024  # the ranges a download is cut into, at first
MAX_PIECE = 64 * 1024 * 1024
# A range is split only when, at the rate it has had, it would need longer than this to end
# (and once it has run this long): a range about to end is not worth a connection's in-flight
# bytes, which splitting it throws away.
SPLIT_SECONDS = 0.5
MIN_SPLIT = 1024 * 1024  # a range is split only when each half keeps this much (aria2's -k)
Interval = tuple[int, int]  # [start, end)


@dataclass
class Segment:
    """A range a worker fetches: [start, end), of which [start, cursor) is written."""

    start: int
    cursor: int
    end: int  # lowered when another worker takes the second half
    began: float = 0.0  # when its worker took it (time.monotonic)


class Plan:
    """Which ranges are written, which are being fetched, and which nobody has taken yet."""

    def __init__(self, size: int, done: list[Interval], connections: int) -> None:
        self.size = size
        self.changed = threading.Condition()  # notified whenever bytes are written
        self._done = merge(done)
        self._active: list[Segment] = []
        gaps = missing(self._done, size)
        # The gaps cut into pieces handed out in order: the written part of the file then
        # grows from its start, and the SHA1 and the archive check, which can only follow
        # the prefix, keep up instead of reading most of the archive after its last byte.
        # About 4 pieces a connection, 8 to 64 MiB each (a request each, on a connection
        # kept open), and never fewer pieces than connections: a connection with no piece
        # of its own would split one.
        total, n = sum(e - s for s, e in gaps), max(1, connections)
        piece = min(MAX_PIECE, max(MIN_PIECE, total // (4 * n)), max(MIN_SPLIT, -(-total // n)))
        self._todo: list[Interval] = []
        for start, end in gaps:
            while end - start > piece + MIN_SPLIT:
                self._todo.append((start, start + piece))
                start += piece
            self._todo.append((start, end))

    def take(self, halt: threading.Event) -> Segment | None:
        """The next range to fetch: a gap nobody holds, else half of a slow one.

        With nothing to hand out yet, wait while ranges are being fetched: one of them may
        turn out slow. None once nothing is left to fetch, or `halt` is set.
        """
        with self.changed:
            while not halt.is_set():
                now = time.monotonic()
                if self._todo:
                    start, end = self._todo.pop(0)
                    segment = Segment(start, start, end, now)
                    self._active.append(segment)
                    return segment
                if not self._active:
                    return None
                victim = max(self._active, key=lambda s: _finish_in(s, now))
                if (
                    _finish_in(victim, now) > SPLIT_SECONDS
                    and victim.end - victim.cursor >= 2 * MIN_SPLIT
                ):
                    middle = victim.cursor + (victim.end - victim.cursor) // 2
                    segment = Segment(middle, middle, victim.end, now)
                    victim.end = middle  # its worker stops there
                    self._active.append(segment)
                    return segment
                self.changed.wait(SPLIT_SECONDS / 2)
            return None

    def room(self, segment: Segment) -> int:
        """How many bytes the segment's worker may still write (its end may have moved)."""
        with self.changed:
            return max(0, segment.end - segment.cursor)

    def advance(self, segment: Segment, n: int) -> None:
        """Count `n` bytes written at the segment's cursor."""
        with self.changed:
            segment.cursor += n
            self.changed.notify_all()

    def release(self, segment: Segment) -> None:
        """The worker lets go: what it wrote is done, the rest is for anyone to take."""
        with self.changed:
            self._active.remove(segment)
            if segment.cursor > segment.start:
                self._done = merge([*self._done, (segment.start, segment.cursor)])
            if segment.cursor < segment.end:
                self._todo.append((segment.cursor, segment.end))
                self._todo.sort()
            self.changed.notify_all()

    def written(self) -> list[Interval]:
        """Every range written so far, merged (those being fetched up to their cursors)."""
        with self.changed:
            return merge([*self._done, *((s.start, s.cursor) for s in self._active)])

    def prefix(self) -> int:
        """How many bytes from the start of the file are written without a gap."""
        written = self.written()
        return written[0][1] if written and written[0][0] == 0 else 0

    @property
    def busy(self) -> bool:
        """True while some range is still to fetch or being fetched."""
        with self.changed:
            return bool(self._todo or self._active)


def _finish_in(segment: Segment, now: float) -> float:
    """Seconds the range needs at the rate it has had; a young one is not judged yet."""
    elapsed = now - segment.began
    if elapsed < SPLIT_SECONDS:
        return 0.0
    rate = (segment.cursor - segment.start) / elapsed
    remaining = segment.end - segment.cursor
    return remaining / rate if rate > 0 else float("inf")


def merge(intervals: list[Interval]) -> list[Interval]:
    """Sorted, non-overlapping intervals covering the same bytes (empty ones dropped)."""
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def missing(done: list[Interval], size: int) -> list[Interval]:
    """The gaps of [0, size) that `done` (merged) does not cover."""
    gaps, at = [], 0
    for start, end in done:
        if start > at:
            gaps.append((at, start))
        at = max(at, end)
    if at < size:
        gaps.append((at, size))
    return gaps
