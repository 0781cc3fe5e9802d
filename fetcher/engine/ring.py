"""A ring of buffers that a producer fills and stages consume in order, each on its own thread.

The download engine (socket -> write -> SHA1 -> archive check) and the hashing of files on disk
(read -> SHA1 -> archive check) are both such rings. hashlib, zlib and os.write release the
GIL, so the producer and every stage work on different buffers at once, on separate cores,
and the ring's buffers are all the memory a transfer or a hash holds, whatever the file's size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

# A stage gets the filled part of a buffer and returns how many of its bytes the next stage gets
# (a write that failed part way passes on only what reached the disk).
Stage = Callable[[memoryview], int]


class Sink(Protocol):
    """Anything fed a file's bytes in order: a hash, the archive check."""

    def update(self, block: memoryview, /) -> None:
        """Take the next bytes."""


def feed(sink: Sink) -> Stage:
    """A stage that hands every block to `sink` and passes it on whole."""

    def stage(block: memoryview) -> int:
        sink.update(block)
        return len(block)

    return stage


class Ring:
    """BLOCKS buffers that go round: producer, then each stage in turn, then free again."""

    def __init__(self, stages: Sequence[Stage], *, blocks: int, size: int, name: str) -> None:
        self.buffers = [bytearray(size) for _ in range(blocks)]
        self.error: BaseException | None = None  # the first a stage raised or reported
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(blocks):
            self._free.put(index)
        self._inboxes: list[queue.SimpleQueue[tuple[int, int] | None]] = [
            queue.SimpleQueue() for _ in stages
        ]
        self._threads = [
            threading.Thread(target=self._run, args=(i, stage), name=f"{name}-{i}", daemon=True)
            for i, stage in enumerate(stages)
        ]
        for thread in self._threads:
            thread.start()

    def get(self) -> int:
        """The index of a free buffer (waiting for one); raises a stage's error first."""
        if self.error is not None:
            raise self.error
        return self._free.get()

    def put(self, index: int, n: int) -> None:
        """Send the first `n` bytes of a filled buffer down the stages."""
        self._inboxes[0].put((index, n))

    def fail(self, exc: BaseException) -> None:
        """Record a stage's failure; the first one is what get() and close() raise."""
        if self.error is None:
            self.error = exc

    def close(self) -> None:
        """Let every stage finish what it was given, stop them; raise a stage's error."""
        self._inboxes[0].put(None)
        for thread in self._threads:
            thread.join()
        if self.error is not None:
            raise self.error

    def _run(self, position: int, stage: Stage) -> None:
        inbox = self._inboxes[position]
        after = self._inboxes[position + 1] if position + 1 < len(self._inboxes) else None
        while (item := inbox.get()) is not None:
            index, n = item
            done = 0
            try:
                if n:
                    done = stage(memoryview(self.buffers[index])[:n])
            except BaseException as exc:  # noqa: BLE001 -- raised again by get() and close()
                self.fail(exc)
            if after is None:
                self._free.put(index)  # always: the producer may be waiting for it
            else:
                after.put((index, done))
        if after is not None:
            after.put(None)
