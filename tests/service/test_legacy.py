"""fetcher.service.legacy: parsing jobs of the restore-jobs API (Atlas v1.0, Cloud/Ops Manager)."""

from __future__ import annotations

from typing import Any

import pytest

from fetcher.errors import ApiError
from fetcher.service.legacy import parse_job
from tests.support import JOB_URL, linked_job_json


def test_hashes_and_names() -> None:
    job = parse_job(linked_job_json(sha1_hex="ABCDEF" + "0" * 34, file_name="shard0.tar.gz"))
    assert job.archives[0].sha1 == "abcdef" + "0" * 34  # compared lower-case
    assert list(job.archives[0].names) == ["shard0.tar.gz", "x.tar.gz"]


def test_hashes_may_be_missing_until_the_download() -> None:
    job = parse_job(linked_job_json(with_hashes=False))
    assert job.archives[0].sha1 is None
    assert list(job.archives[0].names) == ["x.tar.gz"]


def test_ops_manager_url_v2_with_bearer() -> None:
    obj = linked_job_json(
        url=None,
        urlV2=JOB_URL,
        authHeader="Authorization",
        authBearer="Bearer",
        authValue="s3cr3t-bearer",
    )
    job = parse_job(obj)
    assert job.archives[0].url == JOB_URL
    assert job.archives[0].bearer == "s3cr3t-bearer"
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
    obj = linked_job_json()
    mutate(obj)
    with pytest.raises(ApiError, match=message):
        parse_job(obj)


def test_record_holds_what_an_operator_needs_and_no_secret() -> None:
    record = parse_job(linked_job_json()).info()
    assert record["snapshotId"] and record["clusterId"] and record["created"]
    assert record["timestamp"] == {"date": "2026-11-28T09:00:00Z", "increment": 1}
    assert "TOKEN123456" not in str(record)
