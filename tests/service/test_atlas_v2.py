"""fetcher.service.atlas_v2: parsing Atlas Cloud Backup (Admin API v2) restore jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fetcher.errors import ApiError
from fetcher.redact import Redactor
from fetcher.service.atlas_v2 import parse_job as parse_v2_job
from fetcher.service.model import readiness

NOW = datetime.now(UTC)


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
