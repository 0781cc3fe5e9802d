"""The legacy restore-jobs API (Atlas v1.0, Cloud Manager, Ops Manager): its jobs and batches.

A sharded cluster's restore is a batch: one job per shard and one for the config server,
sharing `batchId`, each delivering one archive. Links carry a token in their path (or, from
Ops Manager, need a bearer), and `hashes[]` gives each archive's SHA1, often only once it has
been downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fetcher.errors import ApiError
from fetcher.redact import last_segment
from fetcher.service.fields import SHA1_HEX, checked_url, job_object, parse_time, text
from fetcher.service.model import Archive, Delivery, Dialect, RestoreJob

# Delivery states after which the link will never serve the file.
_DEAD_DELIVERY = ("EXPIRED", "MAX_DOWNLOADS_EXCEEDED", "FAILED", "INTERRUPTED")
_DEAD_JOB = ("BROKEN", "KILLED", "FAILED")
PULL_METHOD = "HTTP"  # the ordinary delivery: a tar.gz to pull


@dataclass(frozen=True)
class FileHash:
    """One entry of a job's hashes[]."""

    file_name: str
    sha1: str


def parse_job(obj: object, group: str | None = None, cluster: str | None = None) -> RestoreJob:
    """Build a RestoreJob from one element of the legacy API's results[] (or one job)."""
    obj, job_id = job_object(obj)
    delivery_obj = obj.get("delivery")
    if delivery_obj is None:
        delivery_obj = {}
    if not isinstance(delivery_obj, dict):
        raise ApiError(f"unexpected API response: job {job_id} has a delivery of the wrong type")
    status = text(obj, "statusName", job_id) or "UNKNOWN"
    delivery = _parse_delivery(delivery_obj, job_id)
    url, bearer = _pull_link(delivery_obj, job_id)
    hashes = _parse_hashes(obj.get("hashes"), job_id)
    names = [h.file_name for h in hashes if h.file_name]
    if url and (segment := last_segment(url)) and segment not in names:
        names.append(segment)
    archive = Archive(
        key=job_id,
        names=tuple(names),
        url=url,
        bearer=bearer,
        sha1=hashes[0].sha1 if hashes else None,
        sha1_source="published" if hashes else "late",
    )
    gone, unusable, pending, stage = _readiness(status, delivery, url)
    return RestoreJob(
        id=job_id,
        status=status,
        delivery=delivery,
        archives=(archive,),
        stage=stage,
        gone=gone,
        unusable=unusable,
        pending=pending,
        batch_id=text(obj, "batchId", job_id),
        cluster_id=text(obj, "clusterId", job_id),
        cluster_name=text(obj, "clusterName", job_id),
        group_id=text(obj, "groupId", job_id),
        snapshot_id=text(obj, "snapshotId", job_id),
        created=text(obj, "created", job_id),
        timestamp=obj["timestamp"] if isinstance(obj.get("timestamp"), dict) else None,
        point_in_time=obj["pointInTime"] if isinstance(obj.get("pointInTime"), bool) else None,
    )


def _readiness(
    status: str, delivery: Delivery, url: str | None
) -> tuple[str | None, str | None, str | None, str]:
    """Why the job will never deliver, has nothing to pull, or is not ready yet; its stage."""
    gone = unusable = pending = None
    if status in _DEAD_JOB:
        gone = f"job {status}"
    elif delivery.status in _DEAD_DELIVERY:
        gone = f"delivery {delivery.status}"
    if delivery.method not in (PULL_METHOD, "AUTOMATED_RESTORE") and not url:
        unusable = f"delivery method {delivery.method} has no file to download"
    elif status != "FINISHED" or delivery.status != "READY":
        pending = f"not ready yet (job {status}, delivery {delivery.status})"
    elif not url and delivery.method == "AUTOMATED_RESTORE":
        unusable = "delivery method AUTOMATED_RESTORE has no file to download"
    elif not url:
        # A shape MongoDB's own Go client fixtures show: READY before the link is filled in.
        pending = "delivery READY but no link yet"
    if status != "FINISHED":
        stage = status  # IN_PROGRESS: the restore itself is running
    elif delivery.status != "READY":
        stage = f"delivery {delivery.status}"
    else:
        stage = "no link yet"
    return gone, unusable, pending, stage


def _pull_link(obj: dict[str, Any], job_id: str) -> tuple[str | None, str | None]:
    """The delivery's link, and the bearer it needs (Ops Manager's urlV2), if any."""
    url = text(obj, "url", job_id)
    bearer = None
    url_v2 = text(obj, "urlV2", job_id)
    auth_value = text(obj, "authValue", job_id)
    if url_v2 and auth_value:
        # Ops Manager: the link needs "Authorization: Bearer <authValue>" and nothing else.
        url, bearer = url_v2, auth_value
    elif not url and url_v2:
        url = url_v2
    url = checked_url(url, job_id, "delivery")
    if bearer is not None and not all(0x21 <= ord(c) <= 0x7E for c in bearer):
        # It goes into a header line: a CR/LF in it would be a header of the server's choice.
        raise ApiError(f"unexpected API response: job {job_id} has an unusable authValue")
    return url or None, bearer


def _parse_delivery(obj: dict[str, Any], job_id: str) -> Delivery:
    max_downloads = obj.get("maxDownloads")
    if isinstance(max_downloads, bool) or not isinstance(max_downloads, int) or max_downloads < 0:
        max_downloads = None
    method = text(obj, "methodName", job_id) or "UNKNOWN"
    return Delivery(
        method=method,
        status=text(obj, "statusName", job_id) or "UNKNOWN",
        expires=parse_time(obj.get("expires"), job_id),
        max_downloads=max_downloads,
        type_label=None if method == PULL_METHOD else method,
    )


def _parse_hashes(value: object, job_id: str) -> tuple[FileHash, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ApiError(f"unexpected API response: job {job_id} has hashes that are not a list")
    hashes = []
    for entry in value:
        if not isinstance(entry, dict):
            raise ApiError(f"unexpected API response: job {job_id} has a malformed hashes entry")
        if str(entry.get("typeName", "SHA1")).upper() != "SHA1":
            continue  # only SHA1 is documented; ignore what we cannot check
        digest = entry.get("hash")
        if not isinstance(digest, str) or not SHA1_HEX.match(digest):
            raise ApiError(f"unexpected API response: job {job_id} has a hash that is not SHA1")
        name = entry.get("fileName")
        hashes.append(
            FileHash(file_name=name if isinstance(name, str) else "", sha1=digest.lower())
        )
    return tuple(hashes)


LEGACY = Dialect(
    name="legacy restore-jobs API",
    accept="application/json",
    jobs_path="restoreJobs",
    parse=parse_job,
)
