"""fetcher.fetch.claims: one archive a file name."""

from __future__ import annotations

from fetcher.fetch.claims import NameClaims


def test_a_name_is_held_by_the_first_archive_until_released() -> None:
    claims = NameClaims()
    assert claims.claim("a.tar.gz", "job1") is None
    assert claims.claim("a.tar.gz", "job1") is None  # asking again is no conflict
    assert claims.claim("a.tar.gz", "job2") == "job1"
    assert claims.holds("job1") and not claims.holds("job2")
    claims.release("a.tar.gz")
    assert not claims.holds("job1")
    assert claims.claim("a.tar.gz", "job2") is None and claims.holds("job2")
