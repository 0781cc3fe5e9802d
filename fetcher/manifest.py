"""The per-batch manifest: what each job came to, enough to verify the archives offline."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from fetcher import __version__
from fetcher.checks.archive import ArchiveReport
from fetcher.checks.restoreset import Member, RestoreSet, judge
from fetcher.errors import (
    EXIT_ERROR,
    EXIT_INCOMPLETE,
    EXIT_INTEGRITY,
    EXIT_OK,
    ManifestError,
    UnsafeNameError,
)
from fetcher.names import MANIFEST_NAME, check_name
from fetcher.storage import Destination, io_error

MANIFEST_VERSION = 1
JOURNAL_NAME = ".manifest.journal"
JOURNAL_VERSION = 1
Outcome = Literal["verified", "skipped", "failed", "unverified"]
Failure = Literal["integrity", "error"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)


@dataclass(frozen=True)
class FileRecord:
    """One archive as it is on disk, and what the archive check found in it."""

    name: str
    size: int
    sha1: str
    archive_check: str | None = None  # "passed"; None when it was not checked (older fetcher)
    replica_set: str | None = None  # restoreInfo.txt's "Replica Set"
    restore_info: dict[str, str] | None = None  # every "Key: value" line of restoreInfo.txt
    content_bytes: int | None = None  # the disk its regular files need unpacked

    @classmethod
    def checked(
        cls,
        name: str,
        size: int,
        sha1: str,
        report: ArchiveReport | None,
        *,
        replica_set: str | None = None,
    ) -> FileRecord:
        """A record of an archive, with what a passed archive check found in it.

        `replica_set`, when given, is the name the API gives the archive: it comes before
        the one in restoreInfo.txt.
        """
        if report is None or not report.passed:
            return cls(name, size, sha1)
        return cls(
            name,
            size,
            sha1,
            archive_check="passed",
            replica_set=replica_set or report.replica_set,
            restore_info=report.restore_info,
            content_bytes=report.content_bytes,
        )

    def to_json(self) -> dict[str, Any]:
        """Return the manifest entry of this archive."""
        entry: dict[str, Any] = {"name": self.name, "size": self.size, "sha1": self.sha1}
        if self.archive_check is not None:
            entry["archiveCheck"] = self.archive_check
            entry["replicaSet"] = self.replica_set
            entry["restoreInfo"] = self.restore_info
            entry["contentBytes"] = self.content_bytes
        return entry


@dataclass(frozen=True)
class JobRecord:
    """What one restore job came to in a fetch."""

    id: str
    outcome: Outcome
    reason: str
    files: tuple[FileRecord, ...] = ()
    failure: Failure | None = None
    attempts: int = 0
    resumed_bytes: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the manifest entry of this job."""
        entry: dict[str, Any] = {"id": self.id, "outcome": self.outcome, "reason": self.reason}
        if self.failure:
            entry["failure"] = self.failure
        entry["files"] = [f.to_json() for f in self.files]
        entry["attempts"] = self.attempts
        entry["resumedBytes"] = self.resumed_bytes
        entry.update(self.info)
        return entry


@dataclass(frozen=True)
class Manifest:
    """Every job of a batch (or one job) and where its archive stands."""

    group_id: str
    cluster: str
    batch_id: str | None
    jobs: tuple[JobRecord, ...] = ()
    updated: str = ""
    selection: tuple[str, ...] = ()  # fetch --only patterns; empty: every job of the batch
    batch_job_ids: tuple[str, ...] = ()  # every job the batch listed, selected or not

    @property
    def complete(self) -> bool:
        """True when there is at least one job and every job is verified."""
        return bool(self.jobs) and all(j.outcome == "verified" for j in self.jobs)

    @property
    def restore_set(self) -> RestoreSet | None:
        """The verified archives judged as one restore set; None while some were never checked.

        An archive an older fetcher verified has no restoreInfo.txt on record: judging the
        set without it would report problems that are not there (`verify --deep` fills it in).
        """
        if self.unchecked:
            return None
        # A batch is a sharded cluster's restore; one of a single job restores one replica set.
        sharded = self.batch_id is not None and max(len(self.jobs), len(self.batch_job_ids)) > 1
        # A selection judges what it selected: the config server may be another host's part.
        return judge(
            self.members(), sharded=sharded, complete=not self.missing and not self.selection
        )

    def members(self) -> list[Member]:
        """The archives the restore set is judged on: verified, and checked as archives."""
        out = []
        for job in self.jobs:
            stamp = job.info.get("timestamp")
            date = stamp.get("date") if isinstance(stamp, dict) else None
            for f in job.files:
                if job.outcome == "verified" and f.archive_check == "passed":
                    out.append(
                        Member(
                            archive=f.name,
                            replica_set=f.replica_set,
                            restore_info=f.restore_info,
                            timestamp=date if isinstance(date, str) else None,
                        )
                    )
        return out

    @property
    def unchecked(self) -> int:
        """Verified archives an older fetcher recorded without the archive check."""
        return sum(
            1
            for job in self.jobs
            if job.outcome == "verified"
            for f in job.files
            if f.archive_check is None
        )

    @property
    def missing(self) -> int:
        """Jobs with no verified archive (of the selection, when there is one)."""
        return len(self.missing_jobs) + len(self.absent_ids)

    @property
    def absent_ids(self) -> tuple[str, ...]:
        """Jobs the batch listed that this manifest has no entry for (not selected here)."""
        if self.selection:
            return ()  # another host's part: not missing from this one
        known = {job.id for job in self.jobs}
        return tuple(i for i in self.batch_job_ids if i not in known)

    @property
    def missing_jobs(self) -> tuple[JobRecord, ...]:
        """The jobs whose archive is not (yet) here and verified."""
        return tuple(job for job in self.jobs if job.outcome != "verified")

    def verdict(self, restore_set: RestoreSet) -> str:
        """One line: can what this manifest holds be restored (a selection: as far as it goes)."""
        if self.selection and not restore_set.problems and not self.missing:
            point = f", restore point {p}" if (p := restore_set.restore_point) else ""
            return (
                f"selected archives ready: {', '.join(restore_set.replica_sets)}{point}"
                " (the whole batch: fetcher verify with every host's DIR)"
            )
        return restore_set.verdict(missing=self.missing)

    def restore_set_json(self) -> dict[str, Any] | None:
        """restoreSet as the manifest records it: the set, its verdict, the jobs it lacks."""
        restore_set = self.restore_set
        if restore_set is None:
            return None
        doc = restore_set.to_json()
        doc["verdict"] = self.verdict(restore_set)
        doc["missingJobs"] = [job.id for job in self.missing_jobs] + list(self.absent_ids)
        return doc

    def to_json(self) -> dict[str, Any]:
        """Return the manifest document."""
        return {
            "manifestVersion": MANIFEST_VERSION,
            "tool": f"fetcher {__version__}",
            "updated": self.updated,
            "groupId": self.group_id,
            "cluster": self.cluster,
            "batchId": self.batch_id,
            "complete": self.complete,
            "selection": list(self.selection),
            "batchJobIds": list(self.batch_job_ids),
            "restoreSet": self.restore_set_json(),
            "jobs": [j.to_json() for j in self.jobs],
        }


def combine(manifests: list[Manifest]) -> Manifest:
    """The manifests of one batch's parts (one per host) as the whole batch's.

    A job counts where it was verified; the batch is every job any of them listed.
    """
    first = manifests[0]
    jobs: dict[str, JobRecord] = {}
    for manifest in manifests:
        for job in manifest.jobs:
            if job.id not in jobs or (job.outcome == "verified" != jobs[job.id].outcome):
                jobs[job.id] = job
    return _superseded(
        replace(
            first,
            jobs=tuple(sorted(jobs.values(), key=_job_order)),
            selection=(),
            batch_job_ids=tuple(sorted({i for m in manifests for i in m.batch_job_ids})),
        )
    )


def merge(old: Manifest | None, new: Manifest) -> Manifest:
    """Combine an earlier manifest with this run's records; this run wins for the jobs it saw."""
    if old is None or _target(old) != _target(new):
        old = replace(new, jobs=(), batch_job_ids=())
    seen = {j.id for j in new.jobs}
    kept = tuple(j for j in old.jobs if j.id not in seen)
    return _superseded(
        replace(
            new,
            jobs=tuple(sorted(kept + new.jobs, key=_job_order)),
            batch_job_ids=tuple(sorted({*old.batch_job_ids, *new.batch_job_ids})),
        )
    )


def _superseded(manifest: Manifest) -> Manifest:
    """Drop what stood for a whole job once entries for each of its archives are here.

    A job that delivers several archives (an Atlas Cloud Backup sharded restore) is listed
    as one slot until it finishes, then as one entry per archive, each naming it in `jobId`.
    """
    split = {j.info["jobId"] for j in manifest.jobs if isinstance(j.info.get("jobId"), str)}
    if not split:
        return manifest
    return replace(
        manifest,
        jobs=tuple(j for j in manifest.jobs if j.id not in split),
        batch_job_ids=tuple(i for i in manifest.batch_job_ids if i not in split),
    )


def _job_order(job: JobRecord) -> tuple[str, str]:
    return (job.files[0].name if job.files else "~", job.id)


def exit_code(jobs: tuple[JobRecord, ...] | list[JobRecord], *, problems: int = 0) -> int:
    """Map outcomes to the process status: integrity (4) over error (1) over incomplete (3).

    Problems of the restore set (two archives for one replica set, ...) are incomplete too.
    """
    if any(j.failure == "integrity" for j in jobs):
        return EXIT_INTEGRITY
    if any(j.outcome == "failed" for j in jobs):
        return EXIT_ERROR
    if not jobs or problems or any(j.outcome != "verified" for j in jobs):
        return EXIT_INCOMPLETE
    return EXIT_OK


def write(dest: Destination, manifest: Manifest) -> Manifest:
    """Write the manifest atomically, stamped with the current time; return what was written."""
    stamped = replace(manifest, updated=_now())
    data = json.dumps(stamped.to_json(), indent=2, sort_keys=False) + "\n"
    dest.write_atomic(MANIFEST_NAME, data.encode())
    return stamped


class Journal:
    """Jobs verified since manifest.json was last written, one fsynced line each.

    Rewriting the whole manifest after every verified archive costs more per archive the
    larger the batch; a line appended to `.manifest.journal` costs the same for the first
    archive and the thousandth, and is as durable. `load` folds the journal into the
    manifest, so a run that is killed records every archive it verified; `close` ends the
    journal once manifest.json holds all of it.
    """

    def __init__(self, dest: Destination, target: Manifest) -> None:
        self._dest, self._target = dest, target
        self._fd: int | None = None
        self._lock = threading.Lock()

    def append(self, record: JobRecord) -> None:
        """Record a job durably before anyone is told of it; safe from several threads."""
        lines = [_journal_line(record.to_json())]
        try:
            with self._lock:
                if self._fd is None:
                    head = {"journalVersion": JOURNAL_VERSION, "groupId": self._target.group_id}
                    head.update(cluster=self._target.cluster, batchId=self._target.batch_id)
                    lines.insert(0, _journal_line(head))
                    # A new file every run: a line torn by a crash in the old one stays last.
                    self._dest.remove(JOURNAL_NAME)
                    self._fd = self._dest.open(JOURNAL_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                    self._dest.sync()  # the file's name must survive a crash, as its lines do
                fd = self._fd
                view = memoryview("".join(lines).encode())
                while view:
                    view = view[os.write(fd, view) :]
            # Outside the lock: threads that append meanwhile share one flush to the disk.
            os.fdatasync(fd)
        except OSError as exc:
            raise io_error(exc, self._dest.path / JOURNAL_NAME) from None

    def close(self) -> None:
        """Remove the journal: call once manifest.json holds every line of it."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._dest.remove(JOURNAL_NAME)


def _journal_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":")) + "\n"


def load(dest: Destination) -> Manifest | None:
    """Read DIR/manifest.json and any journal beside it; None when there is neither.

    ManifestError when the manifest is unusable, or the journal is another batch's.
    """
    # The journal first: a fetch that ends meanwhile writes manifest.json and then removes
    # the journal, so what this reads is at worst both, never neither.
    journal = _load_journal(dest)
    where = dest.path / MANIFEST_NAME
    try:
        doc = dest.read_json(MANIFEST_NAME)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{where} is not valid JSON ({_short(exc)})") from None
    except OSError as exc:
        raise ManifestError(f"cannot read {where}: {exc.strerror or exc}") from None
    try:
        manifest = None if doc is None else parse(doc)
    except (KeyError, TypeError, ValueError, UnsafeNameError) as exc:
        raise ManifestError(f"{where} is not a fetcher manifest ({_short(exc)})") from None
    if journal is None:
        return manifest
    if manifest is not None and _target(manifest) != _target(journal):
        raise ManifestError(
            f"{dest.path / JOURNAL_NAME} belongs to another batch than {where}; move one away"
        )
    return merge(manifest, journal) if manifest is not None else journal


def _load_journal(dest: Destination) -> Manifest | None:
    """The jobs a run verified after it last wrote manifest.json (a run that was killed).

    A line that does not read (torn by a crash, cut short by a full disk) is one whose job
    was never reported verified: it is left out, and the lines after it still count.
    """
    try:
        data = dest.read_bytes(JOURNAL_NAME)
    except (ValueError, OSError) as exc:
        raise ManifestError(f"cannot read {dest.path / JOURNAL_NAME}: {_short(exc)}") from None
    lines = (data or b"").split(b"\n")
    head = _json_line(lines[0])
    if not isinstance(head, dict) or head.get("journalVersion") != JOURNAL_VERSION:
        return None  # absent, or torn before its first line was whole: nothing was recorded
    try:
        target = {k: head[k] for k in ("groupId", "cluster")} | {"batchId": head.get("batchId")}
        journal = parse({"manifestVersion": MANIFEST_VERSION, **target, "jobs": []})
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(
            f"{dest.path / JOURNAL_NAME} is not a fetcher journal ({exc})"
        ) from None
    jobs: dict[str, JobRecord] = {}
    for line in lines[1:]:
        try:
            (job,) = parse(
                {"manifestVersion": MANIFEST_VERSION, **target, "jobs": [_json_line(line)]}
            ).jobs
        except (KeyError, TypeError, ValueError, UnsafeNameError):
            continue
        jobs[job.id] = job
    return replace(journal, jobs=tuple(jobs.values()))


def _json_line(line: bytes) -> Any:
    try:
        return json.loads(line) if line.strip() else None
    except (ValueError, RecursionError):
        return None


def _target(manifest: Manifest) -> tuple[str, str, str | None]:
    return (manifest.group_id, manifest.cluster, manifest.batch_id)


def parse(doc: Any) -> Manifest:
    """Build a Manifest from its JSON document, checking every field we rely on."""
    if not isinstance(doc, dict) or doc.get("manifestVersion") != MANIFEST_VERSION:
        raise ValueError(f"manifestVersion is not {MANIFEST_VERSION}")
    jobs = []
    for entry in _list(doc["jobs"]):
        outcome = entry["outcome"]
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        files = tuple(_file(f) for f in _list(entry["files"]))
        known = {"id", "outcome", "reason", "failure", "files", "attempts", "resumedBytes"}
        failure = entry.get("failure")
        jobs.append(
            JobRecord(
                id=_text(entry["id"]),
                outcome=outcome,
                reason=_text(entry.get("reason", "")),
                files=files,
                failure=failure if failure in ("integrity", "error") else None,
                attempts=_size(entry.get("attempts", 0)),
                resumed_bytes=_size(entry.get("resumedBytes", 0)),
                info={k: v for k, v in entry.items() if k not in known},
            )
        )
    batch = doc.get("batchId")
    return Manifest(
        group_id=_text(doc["groupId"]),
        cluster=_text(doc["cluster"]),
        batch_id=_text(batch) if batch is not None else None,
        jobs=tuple(jobs),
        updated=_text(doc.get("updated", "")),
        selection=tuple(_text(p) for p in _strings(doc.get("selection", []))),
        batch_job_ids=tuple(_text(i) for i in _strings(doc.get("batchJobIds", []))),
    )


def _file(obj: dict[str, Any]) -> FileRecord:
    """One files[] entry; the archive-check fields are absent from older manifests."""
    record = FileRecord(
        name=check_name(_text(obj["name"])), size=_size(obj["size"]), sha1=_sha1(obj["sha1"])
    )
    if obj.get("archiveCheck") is None:
        return record
    if obj["archiveCheck"] != "passed":
        raise ValueError(f"unknown archiveCheck {obj['archiveCheck']!r}")
    info = obj.get("restoreInfo")
    if info is not None and not (
        isinstance(info, dict) and all(isinstance(v, str) for v in info.values())
    ):
        raise TypeError("restoreInfo is not an object of strings")
    replica_set = obj.get("replicaSet")
    return replace(
        record,
        archive_check="passed",
        replica_set=_text(replica_set) if replica_set is not None else None,
        restore_info=info,
        content_bytes=_size(obj.get("contentBytes", 0)),
    )


def _strings(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("expected a list of strings")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise TypeError("expected a list of objects")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _size(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("expected a non-negative integer")
    return value


def _sha1(value: Any) -> str:
    text = _text(value)
    if len(text) != 40 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("a sha1 is not 40 lower-case hex digits")
    return text


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
