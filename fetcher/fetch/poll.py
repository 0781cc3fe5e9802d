"""--wait: poll the jobs until each is ready (or can never be), within a deadline."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fetcher.service.model import RestoreJob


@dataclass(frozen=True)
class WaitPolicy:
    """How long to keep polling for jobs that are not ready yet (disabled when not `enabled`)."""

    enabled: bool = False
    poll_interval: float = 30.0
    timeout: float = 6 * 3600.0


@dataclass(frozen=True)
class WaitStatus:
    """What a fetch under --wait is waiting for, as of the last poll."""

    waiting: int  # archives not ready yet
    listed: int  # archives the last listing held
    stages: tuple[tuple[str, int], ...]  # what they wait on (e.g. IN_PROGRESS), and how many
    next_poll: float  # seconds

    @property
    def what(self) -> str:
        """The status without the countdown: it changes only when a job does."""
        if len(self.stages) == 1:
            stages = self.stages[0][0]
        else:
            stages = ", ".join(f"{n} {stage}" for stage, n in self.stages)
        return f"waiting for {self.waiting} of {self.listed} jobs: {stages}"

    def __str__(self) -> str:
        return f"{self.what}; next poll in {self.next_poll:g} s"


def wait_status(
    listed: Iterable[RestoreJob], pending: dict[str, RestoreJob], next_poll: float
) -> WaitStatus:
    """Summarise the archives still waited on (by key, with their job), grouped by stage."""
    stages = Counter(job.stage for job in pending.values())
    keys = {archive.key for job in listed for archive in job.archives}
    return WaitStatus(
        waiting=len(pending),
        listed=len(keys | set(pending)),
        stages=tuple(sorted(stages.items(), key=lambda kv: (-kv[1], kv[0]))),
        next_poll=next_poll,
    )


def poll(
    jobs: list[RestoreJob],
    *,
    policy: WaitPolicy,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    relist: Callable[[], list[RestoreJob]],
    dispatch: Callable[[list[RestoreJob]], None],
    pending: Callable[[], dict[str, RestoreJob]],
    undecided: Callable[[], bool],
    report: Callable[[WaitStatus | None], None],
) -> None:
    """Poll every interval while archives are pending (or nothing is decided yet) and the
    deadline has not passed; hand each listing to `dispatch`."""
    deadline = clock() + policy.timeout
    try:
        while policy.enabled and (pending() or undecided()):
            if clock() >= deadline:
                break
            report(wait_status(jobs, pending(), policy.poll_interval))
            sleep(policy.poll_interval)
            jobs = relist()
            dispatch(jobs)
    finally:
        report(None)
