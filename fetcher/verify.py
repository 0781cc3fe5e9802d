"""Offline verification: re-hash every archive a manifest names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fetcher.errors import EXIT_ERROR, EXIT_INCOMPLETE, EXIT_INTEGRITY, EXIT_OK
from fetcher.manifest import Manifest
from fetcher.storage import Destination

Status = Literal["ok", "missing", "changed", "unreadable", "not verified"]


@dataclass(frozen=True)
class Check:
    """The verdict on one archive (or on a job that has none to check)."""

    job_id: str
    name: str
    status: Status
    detail: str


def verify(
    dest: Destination,
    manifest: Manifest,
    *,
    progress: Callable[[str, int], None] | None = None,
) -> list[Check]:
    """Re-hash each recorded archive and compare size and SHA1 with the manifest."""
    checks = []
    for job in manifest.jobs:
        # A failed-integrity job keeps the files it had: they are checked, and found changed.
        if not job.files or (job.outcome != "verified" and job.failure != "integrity"):
            checks.append(Check(job.id, "", "not verified", f"{job.outcome}: {job.reason}"))
            continue
        for record in job.files:
            report = (lambda n, name=record.name: progress(name, n)) if progress else None
            try:
                hashed = dest.hash_file(record.name, progress=report)
            except OSError as exc:  # one unreadable archive must not hide the others' state
                detail = exc.strerror or type(exc).__name__
                checks.append(Check(job.id, record.name, "unreadable", detail))
                continue
            if hashed is None:
                checks.append(Check(job.id, record.name, "missing", "not in the directory"))
                continue
            size, digest = hashed
            if size != record.size:
                detail = f"size {size}, manifest says {record.size}"
                checks.append(Check(job.id, record.name, "changed", detail))
            elif digest.hexdigest() != record.sha1:
                detail = f"sha1 {digest.hexdigest()}, manifest says {record.sha1}"
                checks.append(Check(job.id, record.name, "changed", detail))
            else:
                checks.append(Check(job.id, record.name, "ok", f"sha1 {record.sha1}"))
    return checks


def verify_exit_code(checks: list[Check]) -> int:
    """4: an archive missing or changed; 1: one unreadable; 3: a job never verified; else 0."""
    if any(c.status in ("missing", "changed") for c in checks):
        return EXIT_INTEGRITY
    if any(c.status == "unreadable" for c in checks):
        return EXIT_ERROR
    if not checks or any(c.status == "not verified" for c in checks):
        return EXIT_INCOMPLETE
    return EXIT_OK
