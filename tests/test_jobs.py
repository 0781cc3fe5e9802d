"""Parsing restore jobs and deciding whether each can be downloaded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fetcher.errors import ApiError
from fetcher.jobs import parse_job, readiness
from tests.support import job_json

NOW = datetime.now(UTC)
URL = "https://pull.example/backup/restore/v2/pull/abc/TOKEN123456/x.tar.gz"
SHA = "a" * 40


def _job(**kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("url", URL)
    kwargs.setdefault("file_name", "x.tar.gz")
    kwargs.setdefault("sha1_hex", SHA)
    return job_json(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "state", "reason"),
    [
        ({}, "ready", "ready"),
        ({"delivery_status": "EXPIRED"}, "never", "delivery EXPIRED"),
        ({"delivery_status": "MAX_DOWNLOADS_EXCEEDED"}, "never", "delivery MAX_DOWNLOADS_EXCEEDED"),
        ({"delivery_status": "FAILED"}, "never", "delivery FAILED"),
        ({"delivery_status": "INTERRUPTED"}, "never", "delivery INTERRUPTED"),
        ({"status": "BROKEN"}, "never", "job BROKEN"),
        ({"status": "KILLED"}, "never", "job KILLED"),
        ({"expires_in": timedelta(minutes=-5)}, "never", "expired at "),
        ({"status": "IN_PROGRESS", "delivery_status": "NOT_STARTED"}, "wait", "not ready yet"),
        ({"delivery_status": "IN_PROGRESS"}, "wait", "not ready yet"),
        ({"method": "SCP", "url": None}, "never", "delivery method SCP has no file"),
        ({"method": "QUERY", "url": None}, "never", "delivery method QUERY has no file"),
        ({"link": False}, "wait", "delivery READY but no link yet"),
    ],
)
def test_readiness_says_why(kwargs: dict[str, Any], state: str, reason: str) -> None:
    job = parse_job(_job(**kwargs))
    got_state, got_reason = readiness(job, NOW)
    assert got_state == state
    assert reason in got_reason


def test_expiry_is_compared_with_the_clock_given() -> None:
    job = parse_job(_job(expires_in=timedelta(hours=1)))
    assert readiness(job, NOW)[0] == "ready"
    assert readiness(job, NOW + timedelta(hours=2))[0] == "never"


def test_hashes_and_names() -> None:
    job = parse_job(_job(sha1_hex="ABCDEF" + "0" * 34, file_name="shard0.tar.gz"))
    assert job.sha1 == "abcdef" + "0" * 34  # compared lower-case
    assert job.name_candidates() == ["shard0.tar.gz", "x.tar.gz"]


def test_hashes_may_be_missing_until_the_download() -> None:
    job = parse_job(_job(with_hashes=False))
    assert job.sha1 is None
    assert job.name_candidates() == ["x.tar.gz"]


def test_ops_manager_url_v2_with_bearer() -> None:
    obj = _job(
        url=None,
        urlV2=URL,
        authHeader="Authorization",
        authBearer="Bearer",
        authValue="s3cr3t-bearer",
    )
    job = parse_job(obj)
    assert job.delivery.url == URL
    assert job.delivery.bearer == "s3cr3t-bearer"
    assert "s3cr3t" not in repr(job) and "TOKEN123456" not in repr(job)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda j: j.pop("id"), "no valid id"),
        (lambda j: j.update(id="../../etc"), "no valid id"),
        (lambda j: j.update(hashes="nope"), "not a list"),
        (lambda j: j["hashes"][0].update(hash="xyz"), "not SHA1"),
        (lambda j: j.update(delivery=[]), "wrong type"),
        (lambda j: j["delivery"].update(url="file:///etc/passwd"), "not HTTP"),
        (lambda j: j["delivery"].update(expires="soon"), "unreadable expiry"),
        (lambda j: j.update(statusName=7), "not a string"),
    ],
)
def test_malformed_jobs_are_rejected(mutate: Any, message: str) -> None:
    obj = _job()
    mutate(obj)
    with pytest.raises(ApiError, match=message):
        parse_job(obj)


def test_record_holds_what_an_operator_needs_and_no_secret() -> None:
    record = parse_job(_job()).record()
    assert record["snapshotId"] and record["clusterId"] and record["created"]
    assert record["timestamp"] == {"date": "2026-11-28T09:00:00Z", "increment": 1}
    assert "TOKEN123456" not in str(record)
