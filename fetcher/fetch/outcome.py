"""The per-archive decision: what a transfer found and the SHA1 the API gave, to an outcome.

Pure: values in, a Decision out, so that every case has a row in the tests' table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fetcher.manifest import Failure, Outcome
from fetcher.names import partial_name
from fetcher.service.model import Sha1Source

# What becomes of the bytes in NAME.part: the final name, kept for the operator or a later
# run, removed, or removed and downloaded again from zero.
Action = Literal["commit", "keep", "discard", "again"]


@dataclass(frozen=True)
class Found:
    """What one transfer of an archive found, in the same pass as the download."""

    sha1: str
    size: int
    passed: bool  # the archive check
    problem: str | None = None  # what the check found wrong
    replica_set: str | None = None  # restoreInfo.txt's
    resumed: bool = False  # it continued bytes kept from before
    fresh_bytes: int = 0  # bytes this transfer downloaded itself


@dataclass(frozen=True)
class Decision:
    """An archive's outcome, its reason, and what to do with its bytes."""

    outcome: Outcome
    reason: str
    action: Action
    failure: Failure | None = None
    sha1: str | None = None  # the SHA1 it is recorded with, once verified


def decide(
    name: str,
    found: Found,
    *,
    expected: str | None,
    source: Sha1Source,
    listed_set: str | None = None,
    retried: bool = False,
) -> Decision:
    """Decide one transferred archive.

    `expected` is the SHA1 the API published (or published late), `source` where SHA1s come
    from for this archive, `listed_set` the replica set the API names it for, and `retried`
    whether this is already the one fresh try that a suspect resumed transfer gets.
    """
    part = partial_name(name)
    if expected is not None:
        bad = found.sha1 != expected
    else:
        # Without a SHA1 only a splice made by this run is suspect: a damaged .part that an
        # earlier run finished already had its one more try (or needed none).
        bad = not found.passed and found.fresh_bytes > 0
    if bad and found.resumed and not retried:
        # The bytes kept from before may have been stale: one more try, from zero.
        what = "SHA1 mismatch" if expected is not None else "damaged archive"
        return Decision("failed", f"{what} after a resumed transfer", "again", "integrity")
    if expected is None and source == "none" and found.passed:
        # The API publishes no SHA1: an archive that passes the check is the verified one,
        # and the SHA1 computed here is what later runs and `verify` compare with.
        return _publish(name, found, found.sha1, listed_set)
    if expected is None:
        if not found.passed:
            reason = (
                f"{name} is damaged: {found.problem}. The API publishes no SHA1 to tell"
                f" whether the transfer or the published archive is at fault; the bytes stay"
                f" in {part} (delete it to download the archive again)"
            )
            return Decision("failed", reason, "keep", "integrity")
        reason = (
            f"the API publishes no SHA1 for it yet; {found.size} bytes kept in {part}"
            f" (sha1 {found.sha1}, archive check passed); run fetch again to verify"
        )
        return Decision("unverified", reason, "keep")
    if found.sha1 != expected:
        reason = f"SHA1 mismatch: expected {expected}, got {found.sha1}"
        return Decision("failed", reason, "discard", "integrity")
    if not found.passed:
        return Decision("failed", damaged(found.problem, where=part), "keep", "integrity")
    return _publish(name, found, expected, listed_set)


def damaged(problem: str | None, *, where: str) -> str:
    """The reason of an archive whose bytes match the published SHA1 and do not open."""
    return (
        f"the published archive itself is damaged: {problem}. Its SHA1 matches the"
        f" API's, so downloading it again would not help; the bytes stay in {where}"
    )


def _publish(name: str, found: Found, sha1: str, listed_set: str | None) -> Decision:
    """Give a checked archive its final name, unless it is not the replica set listed."""
    inside = found.replica_set
    if listed_set and inside and listed_set != inside:
        reason = (
            f"the API lists {name} as replica set {listed_set}, but its restoreInfo.txt names"
            f" {inside}; the bytes stay in {partial_name(name)}"
        )
        return Decision("failed", reason, "keep", "integrity")
    return Decision("verified", "downloaded", "commit", sha1=sha1)
