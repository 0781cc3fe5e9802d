"""fetcher.engine.plan: the ranges of a several-connection download, handed out and split."""

from __future__ import annotations

import threading

from fetcher.engine.plan import Plan, merge, missing

MiB = 1024 * 1024


def test_plan_hands_out_gaps_in_order_then_splits_a_slow_range() -> None:
    size = 32 * MiB
    done = [(0, 4 * MiB), (8 * MiB, 12 * MiB)]
    assert missing(merge(done), size) == [(4 * MiB, 8 * MiB), (12 * MiB, size)]
    plan = Plan(size, done, connections=2)
    running = threading.Event()
    taken = [plan.take(running) for _ in range(4)]
    # The gaps, in order, in pieces of MIN_PIECE (8 MiB; a rest under 1 MiB more stays whole).
    assert [(t.start // MiB, (t.end - t.start) // MiB) for t in taken if t] == [
        (4, 4),
        (12, 8),
        (20, 8),
        (28, 4),
    ]
    first, second, third, _ = taken
    assert first is not None and second is not None and third is not None
    # Nothing left to hand out, and every range young: nothing to split (a halt ends the wait).
    halted = threading.Event()
    halted.set()
    assert plan.take(halted) is None
    # One range has run for 10 s and got 1 MiB of 8: it would need 70 s more. Split it.
    second.began -= 10
    plan.advance(second, MiB)
    third.began -= 10
    plan.advance(third, 7 * MiB)  # fast: about to end, not worth splitting
    thief = plan.take(running)
    assert thief is not None
    assert (thief.start, thief.end) == (16 * MiB + MiB // 2, 20 * MiB)
    assert second.end == thief.start
    plan.advance(first, MiB)
    plan.release(first)
    assert plan.prefix() == 5 * MiB  # what was written of a released range stays written
