"""fetcher.engine.ring: buffers through stages in order, and a stage's error raised once."""

from __future__ import annotations

import hashlib

import pytest

from fetcher.engine.ring import Ring, feed


def test_every_stage_sees_every_block_in_order_and_buffers_go_round() -> None:
    digest = hashlib.sha1()
    seen: list[bytes] = []

    def record(block: memoryview) -> int:
        seen.append(bytes(block))
        return len(block)

    ring = Ring([record, feed(digest)], blocks=2, size=4, name="test")
    data = [b"abcd", b"ef", b"ghij", b"k"]  # more blocks than buffers: they must come back
    for chunk in data:
        index = ring.get()
        ring.buffers[index][: len(chunk)] = chunk
        ring.put(index, len(chunk))
    ring.close()
    assert seen == data
    assert digest.hexdigest() == hashlib.sha1(b"".join(data)).hexdigest()


def test_a_stage_that_fails_stops_the_producer_and_the_close() -> None:
    def broken(block: memoryview) -> int:
        raise OSError(28, "No space left on device")

    ring = Ring([broken], blocks=1, size=4, name="test")

    def produce() -> None:
        # The one buffer comes back only after the stage failed on it: by the third block
        # at the latest, the producer hears of it.
        for _ in range(3):
            ring.put(ring.get(), 4)

    with pytest.raises(OSError, match="No space"):
        produce()
    with pytest.raises(OSError, match="No space"):
        ring.close()
