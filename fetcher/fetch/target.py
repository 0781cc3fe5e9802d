"""What a fetch is of (a batch, a job, a selection), its unit (one archive of one job), and
what a caller hears while it runs."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Protocol

from fetcher.engine.transfer import Progress
from fetcher.fetch.poll import WaitStatus
from fetcher.manifest import JobRecord
from fetcher.service.model import Archive, RestoreJob


@dataclass(frozen=True)
class Target:
    """What to fetch: a batch, or one job."""

    group: str
    cluster: str
    batch_id: str | None = None
    job_id: str | None = None
    only: tuple[str, ...] = ()  # shell patterns on archive names; empty: every job

    def selects(self, name: str | None, replica_set: str | None = None) -> bool | None:
        """Whether an archive is this host's to fetch (fetch --only): by its file name, or by
        the replica set the API names it for. None while neither matches and the name is not
        known yet (it may still match)."""
        if not self.only:
            return True
        known = [n for n in (name, replica_set) if n]
        if any(fnmatch.fnmatchcase(n, p) for n in known for p in self.only):
            return True
        return False if name is not None else None


@dataclass(frozen=True)
class Item:
    """One archive of one job: the unit that is fetched, verified and recorded."""

    job: RestoreJob
    archive: Archive

    @property
    def key(self) -> str:
        """The manifest entry's id: the job's, or the job's and the archive's."""
        return self.archive.key


class Reporter(Protocol):
    """What the CLI (or any caller) hears while a fetch runs; called from worker threads."""

    def progress(self, name: str) -> Progress:
        """Return the progress callback for one archive."""

    def finished(self, record: JobRecord) -> None:
        """Hear that an archive reached its outcome: a job's record with that archive alone
        (or none, for a job whose archives are not known yet)."""

    def note(self, text: str) -> None:
        """Hear a remark worth showing (a rebuilt manifest, a restart)."""

    def remark(self, text: str) -> None:
        """Hear a remark of interest only to whoever watches (--quiet drops it)."""

    def waiting(self, status: WaitStatus | None) -> None:
        """Hear what --wait waits for before each poll; None once it waits no more."""
