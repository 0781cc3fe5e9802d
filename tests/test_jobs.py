"""Parsing restore jobs and deciding whether each can be downloaded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fetcher.errors import ApiError
from fetcher.redact import Redactor
from fetcher.service.atlas_v2 import parse_job as parse_v2_job
from fetcher.service.legacy import parse_job
from fetcher.service.model import readiness
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
    assert job.archives[0].sha1 == "abcdef" + "0" * 34  # compared lower-case
    assert list(job.archives[0].names) == ["shard0.tar.gz", "x.tar.gz"]


def test_hashes_may_be_missing_until_the_download() -> None:
    job = parse_job(_job(with_hashes=False))
    assert job.archives[0].sha1 is None
    assert list(job.archives[0].names) == ["x.tar.gz"]


def test_ops_manager_url_v2_with_bearer() -> None:
    obj = _job(
        url=None,
        urlV2=URL,
        authHeader="Authorization",
        authBearer="Bearer",
        authValue="s3cr3t-bearer",
    )
    job = parse_job(obj)
    assert job.archives[0].url == URL
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
    obj = _job()
    mutate(obj)
    with pytest.raises(ApiError, match=message):
        parse_job(obj)


def test_record_holds_what_an_operator_needs_and_no_secret() -> None:
    record = parse_job(_job()).info()
    assert record["snapshotId"] and record["clusterId"] and record["created"]
    assert record["timestamp"] == {"date": "2026-11-28T09:00:00Z", "increment": 1}
    assert "TOKEN123456" not in str(record)


V2_LINK = "https://bucket.example/restore/{rs}/restore.tar.gz?X-Amz-Signature=abcdef123456"


def _v2(**fields: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "id": "6a1b2c3d4e5f60718293a4b6",
        "deliveryType": "download",
        "expired": False,
        "failed": False,
        "cancelled": False,
        "finishedAt": "2026-11-28T10:00:00Z",
        "expiresAt": (NOW + timedelta(hours=1)).isoformat(),
        "components": [
            {"replicaSetName": rs, "downloadUrl": V2_LINK.format(rs=rs)}
            for rs in ("c-shard-0", "c-config-0")
        ],
    }
    job.update(fields)
    return job


def test_v2_components_whose_links_share_a_file_name_are_named_by_replica_set() -> None:
    job = parse_v2_job(_v2())
    assert [a.names[0] for a in job.archives] == ["c-shard-0.tar.gz", "c-config-0.tar.gz"]
    assert [a.key for a in job.archives] == [f"{job.id}:c-shard-0", f"{job.id}:c-config-0"]
    assert job.archives[0].display == "https://bucket.example/restore/c-shard-0/restore.tar.gz"
    assert all(a.sha1 is None and a.sha1_source == "none" for a in job.archives)
    assert readiness(job, NOW) == ("ready", "ready")
    assert readiness(job, NOW + timedelta(hours=2))[0] == "never"  # expiresAt is checked too


def test_v2_replica_set_job_is_keyed_by_the_job_and_named_by_its_link() -> None:
    link = "https://bucket.example/x/rs0-2026.tar.gz?sig=s3cr3t-signature"
    job = parse_v2_job(_v2(components=None, deliveryUrl=[link]))
    (archive,) = job.archives
    assert (archive.key, archive.names, archive.replica_set) == (job.id, ("rs0-2026.tar.gz",), None)


def test_an_unfinished_v2_job_has_one_slot_and_no_name() -> None:
    job = parse_v2_job(_v2(finishedAt=None, components=None, deliveryUrl=[], expiresAt=None))
    (archive,) = job.archives
    assert (archive.key, archive.names, archive.url) == (job.id, (), None)
    assert readiness(job, NOW) == ("wait", "not finished yet")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"components": "nope"}, "malformed components"),
        ({"components": [{"replicaSetName": "a"}, {"replicaSetName": "a"}]}, "replica set twice"),
        ({"components": None, "deliveryUrl": "https://x/y"}, "not a list"),
        ({"components": [{"downloadUrl": "ftp://x/y.tar.gz"}]}, "not HTTP"),
        ({"expiresAt": "soon"}, "unreadable expiry"),
    ],
)
def test_malformed_v2_jobs_are_rejected(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiError, match=message):
        parse_v2_job(_v2(**fields))


def test_a_presigned_link_masks_its_signature_but_not_its_dates() -> None:
    link = (
        "https://bucket.example/restore/c-rs/restore.tar.gz?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Date=20261129T000000Z&X-Amz-Credential=AKIAEXAMPLE%2F20261129"
        "&X-Amz-Signature=0123456789abcdef&se=2026-11-29T06:00:00Z"
    )
    job = parse_v2_job(_v2(components=None, deliveryUrl=[link]))
    redactor = Redactor()
    job.hide_secrets(redactor)
    text = f"{link} AKIAEXAMPLE/20261129 0123456789abcdef expires 2026-11-29T06:00:00Z"
    shown = redactor.scrub(text)
    assert "0123456789abcdef" not in shown and "AKIAEXAMPLE" not in shown
    assert "expires 2026-11-29T06:00:00Z" in shown and "restore.tar.gz" in shown
