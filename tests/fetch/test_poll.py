"""fetcher.fetch.poll: --wait's loop on a fake clock, and the status line it reports."""

from __future__ import annotations

from fetcher.fetch.poll import WaitPolicy, WaitStatus, poll
from fetcher.service.model import Archive, Delivery, RestoreJob


def job(job_id: str, stage: str) -> RestoreJob:
    return RestoreJob(
        job_id, "IN_PROGRESS", Delivery("HTTP", "NOT_STARTED"), (Archive(job_id),), stage=stage
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_it_polls_each_interval_until_nothing_is_pending() -> None:
    clock = Clock()
    pending = {"a": job("a", "IN_PROGRESS"), "b": job("b", "delivery IN_PROGRESS")}
    listings: list[float] = []
    heard: list[WaitStatus | None] = []

    def relist() -> list[RestoreJob]:
        listings.append(clock.now)
        pending.pop(sorted(pending)[0])  # one job becomes ready each poll
        return list(pending.values())

    poll(
        list(pending.values()),
        policy=WaitPolicy(enabled=True, poll_interval=30, timeout=3600),
        clock=clock,
        sleep=clock.sleep,
        relist=relist,
        dispatch=lambda jobs: None,
        pending=lambda: dict(pending),
        undecided=lambda: False,
        report=heard.append,
    )
    assert listings == [30, 60]
    first = heard[0]
    assert first is not None and first.waiting == 2 and heard[-1] is None
    assert str(first) == (
        "waiting for 2 of 2 jobs: 1 IN_PROGRESS, 1 delivery IN_PROGRESS; next poll in 30 s"
    )


def test_it_stops_at_the_deadline_and_not_at_all_when_disabled() -> None:
    clock = Clock()
    polls: list[float] = []

    def relist() -> list[RestoreJob]:
        polls.append(clock.now)
        return []

    for enabled, expected in ((True, [30.0, 60.0, 90.0]), (False, [])):
        polls.clear()
        clock.now = 0.0
        poll(
            [],
            policy=WaitPolicy(enabled=enabled, poll_interval=30, timeout=90),
            clock=clock,
            sleep=clock.sleep,
            relist=relist,
            dispatch=lambda jobs: None,
            pending=dict,
            undecided=lambda: True,  # a restore triggered a moment ago lists no job yet
            report=lambda status: None,
        )
        assert polls == expected


def test_wait_status_names_what_each_job_waits_for() -> None:
    one = WaitStatus(waiting=3, listed=5, stages=(("IN_PROGRESS", 3),), next_poll=30.0)
    assert str(one) == "waiting for 3 of 5 jobs: IN_PROGRESS; next poll in 30 s"
    mixed = WaitStatus(
        4, 5, (("IN_PROGRESS", 2), ("delivery NOT_STARTED", 1), ("no link yet", 1)), 2.5
    )
    assert str(mixed) == (
        "waiting for 4 of 5 jobs: 2 IN_PROGRESS, 1 delivery NOT_STARTED, 1 no link yet;"
        " next poll in 2.5 s"
    )
