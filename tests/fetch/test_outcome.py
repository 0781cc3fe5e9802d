"""fetcher.fetch.outcome: the per-archive decision, as a table of cases."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fetcher.fetch.outcome import Action, Found, decide
from fetcher.service.model import Sha1Source

NAME = "Cluster0-shard-0.tar.gz"
GOOD, OTHER = "a" * 40, "b" * 40


def found(
    sha1: str = GOOD,
    *,
    passed: bool = True,
    resumed: bool = False,
    fresh: int = 100,
    replica_set: str | None = "Cluster0-shard-0",
) -> Found:
    problem = None if passed else "truncated gzip stream"
    return Found(sha1, 100, passed, problem, replica_set, resumed=resumed, fresh_bytes=fresh)


@dataclass(frozen=True)
class Case:
    found: Found
    expected: str | None
    source: Sha1Source
    outcome: str
    action: Action
    failure: str | None = None
    listed: str | None = None
    retried: bool = False
    says: str = ""


CASES = {
    "published and matching": Case(found(), GOOD, "published", "verified", "commit"),
    "late and matching": Case(found(), GOOD, "late", "verified", "commit"),
    "mismatch": Case(
        found(OTHER), GOOD, "published", "failed", "discard", "integrity", says="SHA1 mismatch"
    ),
    "mismatch after a resume: once more from zero": Case(
        found(OTHER, resumed=True),
        GOOD,
        "published",
        "failed",
        "again",
        "integrity",
        says="resumed",
    ),
    "mismatch after the one fresh try": Case(
        found(OTHER, resumed=True),
        GOOD,
        "published",
        "failed",
        "discard",
        "integrity",
        retried=True,
    ),
    "matching but damaged: the published archive": Case(
        found(passed=False),
        GOOD,
        "published",
        "failed",
        "keep",
        "integrity",
        says="itself is damaged",
    ),
    "no SHA1 yet, check passed": Case(found(), None, "late", "unverified", "keep", says="no SHA1"),
    "no SHA1 yet, damaged": Case(found(passed=False), None, "late", "failed", "keep", "integrity"),
    "never a SHA1, check passed: the check vouches": Case(
        found(), None, "none", "verified", "commit"
    ),
    "never a SHA1, damaged": Case(
        found(passed=False), None, "none", "failed", "keep", "integrity", says="is damaged"
    ),
    "never a SHA1, damaged after a resume: once more": Case(
        found(passed=False, resumed=True), None, "none", "failed", "again", "integrity"
    ),
    "never a SHA1, damaged .part an earlier run finished: no more tries": Case(
        found(passed=False, resumed=True, fresh=0), None, "none", "failed", "keep", "integrity"
    ),
    "another replica set than listed": Case(
        found(),
        None,
        "none",
        "failed",
        "keep",
        "integrity",
        listed="Cluster0-shard-1",
        says="restoreInfo.txt names Cluster0-shard-0",
    ),
    "the replica set listed": Case(
        found(), None, "none", "verified", "commit", listed="Cluster0-shard-0"
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_decide(case: Case) -> None:
    decision = decide(
        NAME,
        case.found,
        expected=case.expected,
        source=case.source,
        listed_set=case.listed,
        retried=case.retried,
    )
    assert (decision.outcome, decision.action, decision.failure) == (
        case.outcome,
        case.action,
        case.failure,
    )
    assert case.says in decision.reason
    # Only a verified archive is recorded with a SHA1: the published one, else the computed.
    if decision.outcome == "verified":
        assert decision.sha1 == (case.expected or case.found.sha1)
    else:
        assert decision.sha1 is None
