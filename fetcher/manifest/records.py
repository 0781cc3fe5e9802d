"""What a fetch found for each archive, and for each job as the worst of its archives."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from fetcher.checks.archive import ArchiveReport
from fetcher.errors import EXIT_ERROR, EXIT_INCOMPLETE, EXIT_INTEGRITY, EXIT_OK

Outcome = Literal["verified", "skipped", "failed", "unverified"]
Failure = Literal["integrity", "error"]
ArchiveCheck = Literal["passed", "failed"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
# How far an outcome is from a restorable archive: a job is as far as its worst archive.
_RANK: dict[str, int] = {"verified": 0, "unverified": 1, "skipped": 2, "failed": 3}


@dataclass(frozen=True)
class Unpack:
    """Where an archive was unpacked (fetch --unpack-to, fetcher unpack), or why it was not."""

    to: str | None = None  # the tree's absolute path: the dbPath its mongod uses
    config: str | None = None  # the mongod config file written beside it
    files: int = 0  # regular files (hard links included)
    bytes: int = 0  # their bytes
    digest: str | None = None  # of the tree's listing (paths, kinds, sizes, mtimes, links)
    problem: str | None = None  # why the last unpack asked for did not make its tree
    # Found unpacked by an earlier run, this run wrote nothing (not recorded).
    earlier: bool = field(default=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The manifest fields of this unpack: where the tree is (if anywhere), and the
        problem of the last try, if it had one (a tree elsewhere stays on record)."""
        doc: dict[str, Any] = {}
        if self.to is not None:
            doc.update(unpackedTo=self.to, mongodConfig=self.config, unpackedFiles=self.files)
            doc.update(unpackedBytes=self.bytes, unpackedDigest=self.digest)
        if self.problem is not None:
            doc["unpackProblem"] = self.problem
        return doc


@dataclass(frozen=True)
class FileRecord:
    """One archive of a job: what it came to, and, once checked, what is in it.

    `size` and `sha1` are those of the bytes under `name` in DIR: set only when the archive
    is there under its final name (verified, or found changed or damaged since). `name` is
    None for one of a job's several archives whose name is not known (no link yet, or none
    that is safe): the replica set the API names it for tells it from the others.
    """

    name: str | None
    outcome: Outcome = "verified"
    reason: str = ""
    size: int | None = None
    sha1: str | None = None
    failure: Failure | None = None
    attempts: int = 0
    resumed_bytes: int = 0
    archive_check: ArchiveCheck | None = None  # None: not checked (an older fetcher)
    problem: str | None = None  # what a failed archive check found
    replica_set: str | None = None  # the API's name for it, else restoreInfo.txt's
    restore_info: dict[str, str] | None = None  # every "Key: value" line of restoreInfo.txt
    content_bytes: int | None = None  # the disk its regular files need unpacked
    unpack: Unpack | None = None  # None: not unpacked, nor asked to be

    @property
    def key(self) -> str:
        """What tells this archive from the job's others: its name, else its replica set."""
        return self.name if self.name is not None else f"replica set {self.replica_set}"

    @property
    def on_disk(self) -> bool:
        """Whether bytes under `name` are recorded, for verify to check again."""
        return self.sha1 is not None and self.size is not None

    def with_check(self, report: ArchiveReport | None) -> FileRecord:
        """This record with what the archive check found (the API's replica set name stays)."""
        if report is None:
            return self
        if not report.passed:
            return replace(self, archive_check="failed", problem=report.problem)
        return replace(
            self,
            archive_check="passed",
            problem=None,
            replica_set=self.replica_set or report.replica_set,
            restore_info=report.restore_info,
            content_bytes=report.content_bytes,
        )

    def to_json(self) -> dict[str, Any]:
        """Return the manifest entry of this archive."""
        entry: dict[str, Any] = {"name": self.name, "outcome": self.outcome}
        entry["reason"] = self.reason
        if self.failure:
            entry["failure"] = self.failure
        if self.on_disk:
            entry.update(size=self.size, sha1=self.sha1)
        entry.update(attempts=self.attempts, resumedBytes=self.resumed_bytes)
        if self.archive_check is not None:
            entry["archiveCheck"] = self.archive_check
        if self.archive_check == "failed":
            entry["archiveProblem"] = self.problem
        if self.archive_check == "passed" or self.replica_set is not None:
            entry["replicaSet"] = self.replica_set
        if self.archive_check == "passed":
            entry.update(restoreInfo=self.restore_info, contentBytes=self.content_bytes)
        if self.unpack is not None:
            entry.update(self.unpack.to_json())
        return entry


@dataclass(frozen=True)
class JobRecord:
    """One restore job: its archives, and the worst of their outcomes.

    A job whose archives are not known yet (not ready, say) has none, and an outcome and a
    reason of its own.
    """

    id: str
    outcome: Outcome
    reason: str
    files: tuple[FileRecord, ...] = ()
    failure: Failure | None = None
    info: dict[str, Any] = field(default_factory=dict)  # the job's own fields (no secrets)
    # The file names of every archive the job lists, this host's or not (--only): what a
    # job split across hosts must have somewhere.
    listed: tuple[str, ...] = ()

    @property
    def unrecorded(self) -> tuple[str, ...]:
        """Archives the job lists that no files[] entry here records."""
        recorded = {f.name for f in self.files if f.name is not None}
        return tuple(n for n in self.listed if n not in recorded)

    @classmethod
    def of(
        cls,
        job_id: str,
        files: tuple[FileRecord, ...] | list[FileRecord],
        *,
        info: dict[str, Any],
        outcome: Outcome = "skipped",
        reason: str = "",
        failure: Failure | None = None,
        listed: tuple[str, ...] | set[str] = (),
    ) -> JobRecord:
        """A job's record: from its archives when it has any, else the outcome given."""
        files = tuple(sorted(_named_over_unnamed(files), key=lambda f: (f.name is None, f.key)))
        names = tuple(sorted(listed))
        if not files:
            return cls(job_id, outcome, reason, (), failure, info, names)
        worst = max(files, key=lambda f: _RANK[f.outcome])
        failures = {f.failure for f in files}
        failure = (
            "integrity" if "integrity" in failures else "error" if "error" in failures else None
        )
        return cls(job_id, worst.outcome, _summary(files, worst), files, failure, info, names)

    def to_json(self) -> dict[str, Any]:
        """Return the manifest entry of this job."""
        entry: dict[str, Any] = {"id": self.id, "outcome": self.outcome, "reason": self.reason}
        if self.failure:
            entry["failure"] = self.failure
        entry["files"] = [f.to_json() for f in self.files]
        if self.listed:
            entry["archiveNames"] = list(self.listed)
        entry.update(self.info)
        return entry


def _summary(files: tuple[FileRecord, ...], worst: FileRecord) -> str:
    """The job's reason: its one archive's, or how many came to what and the worst one's."""
    if len(files) == 1:
        return worst.reason
    counts = {o: sum(1 for f in files if f.outcome == o) for o in OUTCOMES}
    text = ", ".join(f"{n} {o}" for o, n in counts.items() if n)
    return text if worst.outcome == "verified" else f"{text}; {worst.key}: {worst.reason}"


def _named_over_unnamed(files: tuple[FileRecord, ...] | list[FileRecord]) -> list[FileRecord]:
    """Drop the record of an archive whose name was not known once one with its name is here
    (the same replica set): the named one says more."""
    named_sets = {f.replica_set for f in files if f.name is not None and f.replica_set}
    return [f for f in files if f.name is not None or f.replica_set not in named_sets]


def merge_job(old: JobRecord, new: JobRecord) -> JobRecord:
    """An earlier record of a job updated by a later one: the later wins for the archives it
    names; the earlier one's other archives stay (another --only, or a job listed without
    its archives once its links are gone)."""
    files = {f.key: f for f in old.files} | {f.key: f for f in new.files}
    info = {**old.info, **new.info}
    return JobRecord.of(
        new.id,
        list(files.values()),
        info=info,
        outcome=new.outcome,
        reason=new.reason,
        failure=new.failure,
        listed=new.listed or old.listed,  # the latest listing of the job says what it has
    )


def combine_job(a: JobRecord, b: JobRecord) -> JobRecord:
    """Two hosts' records of one job: an archive counts where it was verified."""
    files = {f.key: f for f in a.files}
    for f in b.files:
        if f.key not in files or (f.outcome == "verified" != files[f.key].outcome):
            files[f.key] = f
    if not files and b.outcome == "verified" != a.outcome:
        a = b
    return JobRecord.of(
        a.id,
        list(files.values()),
        info={**b.info, **a.info},
        outcome=a.outcome,
        reason=a.reason,
        failure=a.failure,
        listed={*a.listed, *b.listed},
    )


def exit_code(jobs: tuple[JobRecord, ...] | list[JobRecord], *, problems: int = 0) -> int:
    """Map outcomes to the process status: integrity (4) over error (1) over incomplete (3).

    Problems of the restore set (two archives for one replica set, ...) are incomplete too;
    an archive verified but not unpacked as asked is an error.
    """
    if any(j.failure == "integrity" for j in jobs):
        return EXIT_INTEGRITY
    if any(j.outcome == "failed" for j in jobs):
        return EXIT_ERROR
    if any(f.unpack is not None and f.unpack.problem for j in jobs for f in j.files):
        return EXIT_ERROR
    if not jobs or problems or any(j.outcome != "verified" for j in jobs):
        return EXIT_INCOMPLETE
    return EXIT_OK
