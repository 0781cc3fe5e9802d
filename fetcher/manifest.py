"""The per-batch manifest: what each job came to, enough to verify the archives offline."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from fetcher import __version__
from fetcher.errors import (
    EXIT_ERROR,
    EXIT_INCOMPLETE,
    EXIT_INTEGRITY,
    EXIT_OK,
    ManifestError,
    UnsafeNameError,
)
from fetcher.names import MANIFEST_NAME, check_name
from fetcher.storage import Destination

MANIFEST_VERSION = 1
Outcome = Literal["verified", "skipped", "failed", "unverified"]
Failure = Literal["integrity", "error"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)


@dataclass(frozen=True)
class FileRecord:
    """One archive as it is on disk."""

    name: str
    size: int
    sha1: str


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
        entry["files"] = [{"name": f.name, "size": f.size, "sha1": f.sha1} for f in self.files]
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

    @property
    def complete(self) -> bool:
        """True when there is at least one job and every job is verified."""
        return bool(self.jobs) and all(j.outcome == "verified" for j in self.jobs)

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
            "jobs": [j.to_json() for j in self.jobs],
        }


def merge(old: Manifest | None, new: Manifest) -> Manifest:
    """Combine an earlier manifest with this run's records; this run wins for the jobs it saw."""
    if old is None or (old.group_id, old.cluster, old.batch_id) != (
        new.group_id,
        new.cluster,
        new.batch_id,
    ):
        return new
    seen = {j.id for j in new.jobs}
    kept = tuple(j for j in old.jobs if j.id not in seen)
    return replace(new, jobs=tuple(sorted(kept + new.jobs, key=_job_order)))


def _job_order(job: JobRecord) -> tuple[str, str]:
    return (job.files[0].name if job.files else "~", job.id)


def exit_code(jobs: tuple[JobRecord, ...] | list[JobRecord]) -> int:
    """Map outcomes to the process status: integrity (4) over error (1) over incomplete (3)."""
    if any(j.failure == "integrity" for j in jobs):
        return EXIT_INTEGRITY
    if any(j.outcome == "failed" for j in jobs):
        return EXIT_ERROR
    if not jobs or any(j.outcome != "verified" for j in jobs):
        return EXIT_INCOMPLETE
    return EXIT_OK


def write(dest: Destination, manifest: Manifest) -> Manifest:
    """Write the manifest atomically, stamped with the current time; return what was written."""
    stamped = replace(manifest, updated=_now())
    data = json.dumps(stamped.to_json(), indent=2, sort_keys=False) + "\n"
    dest.write_atomic(MANIFEST_NAME, data.encode())
    return stamped


def load(dest: Destination) -> Manifest | None:
    """Read DIR/manifest.json; None when there is none, ManifestError when it is unusable."""
    where = dest.path / MANIFEST_NAME
    try:
        doc = dest.read_json(MANIFEST_NAME)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{where} is not valid JSON ({_short(exc)})") from None
    except OSError as exc:
        raise ManifestError(f"cannot read {where}: {exc.strerror or exc}") from None
    if doc is None:
        return None
    try:
        return parse(doc)
    except (KeyError, TypeError, ValueError, UnsafeNameError) as exc:
        raise ManifestError(f"{where} is not a fetcher manifest ({_short(exc)})") from None


def parse(doc: Any) -> Manifest:
    """Build a Manifest from its JSON document, checking every field we rely on."""
    if not isinstance(doc, dict) or doc.get("manifestVersion") != MANIFEST_VERSION:
        raise ValueError(f"manifestVersion is not {MANIFEST_VERSION}")
    jobs = []
    for entry in _list(doc["jobs"]):
        outcome = entry["outcome"]
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        files = tuple(
            FileRecord(
                name=check_name(_text(f["name"])), size=_size(f["size"]), sha1=_sha1(f["sha1"])
            )
            for f in _list(entry["files"])
        )
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
    )


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
