"""Offline verification: re-hash every archive a manifest names (and, deep, check it as one)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from fetcher import manifest as mf
from fetcher.checks.archive import ArchiveCheck, ArchiveReport
from fetcher.errors import EXIT_ERROR, EXIT_INCOMPLETE, EXIT_INTEGRITY, EXIT_OK, ManifestError
from fetcher.manifest import FileRecord, Manifest
from fetcher.names import MANIFEST_NAME
from fetcher.storage import Destination

Status = Literal["ok", "missing", "changed", "damaged", "unreadable", "not verified"]


@dataclass(frozen=True)
class Check:
    """The verdict on one archive (or on a job that has none to check)."""

    job_id: str
    name: str  # "": the job's, or an archive of it whose name is not known
    status: Status
    detail: str
    report: ArchiveReport | None = None  # what the archive check found (verify --deep)
    replica_set: str | None = None  # of an archive whose name is not known

    @property
    def label(self) -> str:
        """What the check is of, as a person reads it."""
        if self.name:
            return self.name
        return f"job {self.job_id}" + (f" ({self.replica_set})" if self.replica_set else "")


@dataclass(frozen=True)
class Examined:
    """A file hashed (and checked as an archive) in one read."""

    size: int
    sha1: str
    report: ArchiveReport | None  # None when it was not checked as an archive


def examine(
    dest: Destination,
    name: str,
    *,
    deep: bool = True,
    progress: Callable[[int], None] | None = None,
    check_with: Callable[[], ArchiveCheck] = ArchiveCheck,
) -> Examined | None:
    """Hash a file of DIR and, `deep`, check it as a tar.gz in the same pass (`check_with`
    makes the check: one that unpacks, say); None if absent."""
    check = check_with() if deep else None
    hashed = dest.hash_file(name, progress=progress, sink=check)
    if hashed is None:
        return None
    return Examined(hashed[0], hashed[1].hexdigest(), check.finish() if check else None)


def verify(
    dest: Destination,
    manifest: Manifest,
    *,
    deep: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> list[Check]:
    """Re-hash each recorded archive and compare size and SHA1 with the manifest.

    `deep` also checks each archive as a tar.gz in the same pass (see fetcher.checks.archive).
    """
    checks = []
    for job in manifest.jobs:
        if not job.files:
            checks.append(Check(job.id, "", "not verified", f"{job.outcome}: {job.reason}"))
        for record in job.files:
            # An archive that failed its integrity check under its final name keeps its
            # bytes on record: it is checked, and found changed or damaged.
            kept = record.outcome == "verified" or record.failure == "integrity"
            if record.name is not None and record.on_disk and kept:
                checks.append(
                    _check_file(dest, job.id, record.name, record, deep=deep, progress=progress)
                )
            else:
                detail = f"{record.outcome}: {record.reason}"
                unnamed = record.replica_set if record.name is None else None
                checks.append(
                    Check(job.id, record.name or "", "not verified", detail, replica_set=unnamed)
                )
    return checks


def _check_file(
    dest: Destination,
    job_id: str,
    name: str,
    record: FileRecord,
    *,
    deep: bool,
    progress: Callable[[str, int], None] | None,
) -> Check:
    report = (lambda n: progress(name, n)) if progress else None
    try:
        seen = examine(dest, name, deep=deep, progress=report)
    except OSError as exc:  # one unreadable archive must not hide the others' state
        return Check(job_id, name, "unreadable", exc.strerror or type(exc).__name__)
    if seen is None:
        return Check(job_id, name, "missing", "not in the directory")
    if seen.size != record.size:
        detail = f"size {seen.size}, manifest says {record.size}"
        return Check(job_id, name, "changed", detail)
    if seen.sha1 != record.sha1:
        detail = f"sha1 {seen.sha1}, manifest says {record.sha1}"
        return Check(job_id, name, "changed", detail)
    found = seen.report
    if found is None:
        return Check(job_id, name, "ok", f"sha1 {record.sha1}")
    if not found.passed:
        return Check(job_id, name, "damaged", f"{found.problem}", found)
    return Check(job_id, name, "ok", f"sha1 {record.sha1}, archive check passed", found)


def with_reports(manifest: Manifest, checks: list[Check]) -> Manifest:
    """The manifest with what a deep verify found filled in (for one an older fetcher wrote)."""
    found = {(c.job_id, c.name): c.report for c in checks if c.status == "ok" and c.report}
    jobs = tuple(
        replace(
            job,
            files=tuple(
                f.with_check(found[(job.id, f.name)])
                if f.name is not None and (job.id, f.name) in found
                else f
                for f in job.files
            ),
        )
        for job in manifest.jobs
    )
    return replace(manifest, jobs=jobs)


def verify_exit_code(checks: list[Check], *, problems: int = 0) -> int:
    """4: an archive missing, changed or damaged; 1: one unreadable; 3: a job never verified
    or a problem of the restore set; else 0."""
    if any(c.status in ("missing", "changed", "damaged") for c in checks):
        return EXIT_INTEGRITY
    if any(c.status == "unreadable" for c in checks):
        return EXIT_ERROR
    if not checks or problems or any(c.status == "not verified" for c in checks):
        return EXIT_INCOMPLETE
    return EXIT_OK


@dataclass(frozen=True)
class DirResult:
    """One DIR verified against its manifest."""

    path: Path
    manifest: Manifest  # deep: with what the archive check found filled in
    checks: list[Check]
    # Deep, but DIR could not be written (read-only, or the lock file is another user's):
    # checked all the same, and its manifest left as it was.
    not_updated: bool = False


@dataclass(frozen=True)
class Verification:
    """DIRs holding parts of one batch (or one DIR), verified as a whole."""

    parts: list[DirResult]
    manifest: Manifest  # the batch's: every DIR's manifest combined
    checks: list[Check]  # the batch's verdict on each archive, once
    absent_ids: list[str]  # jobs the batch listed that no DIR verified or has an entry for
    absent_archives: list[tuple[str, str]]  # (job id, name): listed, and in no DIR's entries
    exit_code: int


def verify_dir(path: Path, *, deep: bool = False) -> DirResult:
    """Verify one DIR against its manifest; with `deep`, fill the manifest in if DIR can be
    written (one that cannot, read-only or another user's, is checked all the same)."""
    with Destination(path, create=False) as dest:
        writable = deep and dest.writable()
        if writable:
            dest.lock()  # it writes the manifest: not beside a fetch that does too
        manifest = mf.load(dest)
        if manifest is None:
            raise ManifestError(f"no {MANIFEST_NAME} in {path}")
        checks = verify(dest, manifest, deep=deep)
        if deep:
            manifest = with_reports(manifest, checks)
        if writable:
            manifest = mf.write(dest, manifest)
            mf.Journal(dest, manifest).close()  # folded into the manifest just written
    return DirResult(path, manifest, checks, not_updated=deep and not writable)


def verify_dirs(
    paths: Sequence[Path],
    *,
    deep: bool = False,
    done: Callable[[DirResult], None] | None = None,
) -> Verification:
    """Verify each DIR (one per host, say), each archive where it is, then the batch as a
    whole; `done` hears of each DIR as soon as it is verified."""
    parts = []
    for path in paths:
        parts.append(verify_dir(path, deep=deep))
        if done is not None:
            done(parts[-1])
    return verify_batch(parts)


def verify_batch(parts: list[DirResult]) -> Verification:
    """Judge verified DIRs as one batch: their manifests combined, each archive counted once."""
    batches = {p.manifest.target for p in parts}
    if len(batches) > 1:
        listed = "; ".join(
            f"{p.path}: batch {p.manifest.batch_id} of {p.manifest.cluster}" for p in parts
        )
        raise ManifestError(f"the DIRs hold manifests of different batches ({listed})")
    manifest = mf.combine([p.manifest for p in parts]) if len(parts) > 1 else parts[0].manifest
    # A job with no archive known in one DIR gave way to its archives in another.
    with_files = {job.id for job in manifest.jobs if job.files}
    checks = [
        c for p in parts for c in p.checks if c.name or c.replica_set or c.job_id not in with_files
    ]
    verified = {(c.job_id, c.name) for c in checks if c.status == "ok"}
    # An archive verified in one DIR is the batch's, whatever another DIR says of it.
    checks = [c for c in checks if c.status != "not verified" or (c.job_id, c.name) not in verified]
    nowhere = [i for i in manifest.absent_ids if i not in {j for j, _ in verified}]
    restore_set = manifest.restore_set
    problems = len(restore_set.problems) if restore_set else 0
    absent = list(manifest.absent_archives)
    code = verify_exit_code(checks, problems=problems + len(nowhere) + len(absent))
    return Verification(parts, manifest, checks, nowhere, absent, code)
