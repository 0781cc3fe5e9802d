"""Archives already in DIR: still what was verified, changed since, or a kept .part to finish.

A re-run's first work: each is hashed (and checked as an archive) again before anything is
downloaded, so that a verified archive is never fetched twice and a changed one is told.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fetcher.checks.archive import ArchiveCheck, ArchiveReport
from fetcher.engine.part import commit
from fetcher.fetch.outcome import damaged
from fetcher.manifest import Failure, Outcome
from fetcher.names import partial_name
from fetcher.storage import Destination
from fetcher.verify import examine

OnDisk = Literal["verified", "changed", "absent"]


@dataclass(frozen=True)
class Seen:
    """What a look at bytes already in DIR found, as the archive's record will say it."""

    outcome: Outcome
    reason: str
    size: int | None = None  # set when the bytes are under the final name
    sha1: str | None = None
    report: ArchiveReport | None = None
    failure: Failure | None = None


def recheck(
    dest: Destination,
    name: str,
    expected: str,
    *,
    progress: Callable[[int], None],
    check_with: Callable[[], ArchiveCheck] = ArchiveCheck,
) -> tuple[OnDisk, Seen | None]:
    """Hash and check (`check_with` makes the check) a final-named archive against the SHA1
    it was verified with.

    One of another user (or with a second hard link) is set aside, never adopted: they could
    rewrite it after it was checked. It is then absent, to be downloaded again.
    """
    if dest.set_aside_foreign(name) is not None:
        return "absent", None
    seen = examine(dest, name, progress=progress, check_with=check_with)
    if seen is None:
        return "absent", None
    if seen.sha1 != expected:
        return "changed", None
    report = seen.report
    assert report is not None
    if not report.passed:  # verified by an older fetcher, which had no archive check
        reason = damaged(report.problem, where=name)
        return "verified", Seen("failed", reason, seen.size, expected, report, "integrity")
    return "verified", Seen("verified", "already verified on disk", seen.size, expected, report)


def changed(name: str, expected: str, size: int, why_not: str) -> Seen:
    """An archive that no longer matches its SHA1 and cannot be fetched again is corrupt."""
    reason = (
        f"{name} no longer matches its SHA1 {expected} and cannot be downloaded again ({why_not})"
    )
    return Seen("failed", reason, size, expected, failure="integrity")


def finish_kept_part(
    dest: Destination,
    name: str,
    expected: str,
    *,
    check_with: Callable[[], ArchiveCheck] = ArchiveCheck,
) -> Seen | None:
    """A complete partial file kept for want of a SHA1, verified now with no link at all:
    published under its final name when it passes. None when it is not complete or stale
    (it stays for a resume while the link allows)."""
    part = partial_name(name)
    dest.set_aside_foreign(part)  # another user's bytes would become their archive
    if not dest.exists(part):
        return None
    seen = examine(dest, part, check_with=check_with)
    if seen is None or seen.sha1 != expected:
        return None
    report = seen.report
    assert report is not None
    if not report.passed:
        return Seen(
            "failed", damaged(report.problem, where=part), report=report, failure="integrity"
        )
    commit(dest, name)
    return Seen("verified", "verified the bytes kept earlier", seen.size, expected, report)
