"""fetcher.service.fields: the job fields both dialects read, refused when they are off."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fetcher.errors import ApiError
from fetcher.service.fields import checked_url, job_object, parse_time, text, url_problem

JOB = "5c1b2c3d4e5f60718293a4b5"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://pull.example/backup/restore/v2/pull/j/t/a.tar.gz", None),
        ("http://10.0.0.5:8080/a.tar.gz", None),
        ("ftp://pull.example/a.tar.gz", "that is not HTTP"),
        ("https:///a.tar.gz", "with no host"),
        ("https://user:pw@pull.example/a.tar.gz", "with credentials in it"),
        ("https://pull.example/a b.tar.gz", "with spaces or control characters"),
        ("https://pull.example:99999/a.tar.gz", "that cannot be parsed"),
    ],
)
def test_url_problem(url: str, problem: str | None) -> None:
    assert url_problem(url) == problem


def test_a_bad_link_is_refused_without_quoting_it() -> None:
    with pytest.raises(ApiError) as refused:
        checked_url("https://user:s3cret@pull.example/a.tar.gz", JOB)
    assert "s3cret" not in str(refused.value) and JOB in str(refused.value)
    assert checked_url(None, JOB) is None


def test_ids_strings_and_times() -> None:
    assert job_object({"id": JOB}) == ({"id": JOB}, JOB)
    bad: object
    for bad in ([], {"id": "../x"}, {"id": 5}):
        with pytest.raises(ApiError):
            job_object(bad)
    with pytest.raises(ApiError, match="statusName"):
        text({"statusName": 3}, "statusName", JOB)
    assert parse_time("2026-12-04T10:00:00Z", JOB) == datetime(2026, 12, 4, 10, tzinfo=UTC)
    assert parse_time("2026-12-04T10:00:00", JOB) == datetime(2026, 12, 4, 10, tzinfo=UTC)
    with pytest.raises(ApiError):
        parse_time("tomorrow", JOB)
