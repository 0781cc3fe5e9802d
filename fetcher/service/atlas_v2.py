"""Atlas Cloud Backup's download restores (Admin API v2): one job per restore.

A sharded restore is one job with one archive per `components[]` entry; a replica set's is
the `deliveryUrl[]` link. Links are pre-signed (the secret is in the query), and the API
publishes no SHA1: the archive check is the integrity check. There are no batches.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fetcher.errors import ApiError
from fetcher.redact import last_segment
from fetcher.service.fields import checked_url, job_object, parse_time, text
from fetcher.service.model import Archive, Delivery, Dialect, RestoreJob, iso_utc

PATH = "/api/atlas/v2"
# The version date of the Cloud Backup restore-job resources; without it the API answers 406.
ACCEPT = "application/vnd.atlas.2023-01-01+json"
NO_BATCHES = (
    "Atlas Cloud Backup (an API root ending in /api/atlas/v2) has no batches: a sharded"
    " restore is one job; give --job JOB-ID"
)


def parse_job(obj: object, group: str | None = None, cluster: str | None = None) -> RestoreJob:
    """Build a RestoreJob from an Atlas Admin API v2 Cloud Backup restore job.

    The states are told in the words `list` shows for legacy jobs (FINISHED, IN_PROGRESS,
    EXPIRED, ...), so that one listing reads alike whichever API answered it.
    """
    obj, job_id = job_object(obj)
    kind = text(obj, "deliveryType", job_id) or "UNKNOWN"
    expires = parse_time(obj.get("expiresAt"), job_id)
    finished = text(obj, "finishedAt", job_id)
    parse_time(finished, job_id)  # a finishedAt that does not read is a malformed job
    archives = _archives(job_id, _links(obj, job_id))
    status, gone = _state(obj, expires, finished)
    linked = any(a.url for a in archives)
    unusable = pending = None
    if kind != "download":
        unusable = f"not a download restore ({kind})"
    elif not finished:
        pending = "not finished yet"
    elif not linked or not all(a.url for a in archives):
        pending = "finished, but no download link yet"
    if gone:
        delivery_status = status
    elif kind != "download":
        delivery_status = "NONE"  # nothing is delivered as a file
    else:
        delivery_status = "READY" if finished and linked else "NOT_READY"
    timestamp = text(obj, "timestamp", job_id)
    return RestoreJob(
        id=job_id,
        status=status,
        # Every restore type is listed together here (download, automated, pointInTime):
        # the type is always worth a column.
        delivery=Delivery(method=kind, status=delivery_status, expires=expires, type_label=kind),
        archives=archives,
        stage="not finished" if not finished else "no link yet",
        gone=gone,
        unusable=unusable,
        pending=pending,
        group_id=group,
        cluster_name=cluster,
        snapshot_id=text(obj, "snapshotId", job_id),
        created=finished,
        timestamp={"date": timestamp} if timestamp else None,
        point_in_time=kind == "pointInTime" or None,
    )


def _state(
    obj: dict[str, Any], expires: datetime | None, finished: str | None
) -> tuple[str, str | None]:
    """The job's state in `list`'s words, and why it will never deliver, if it will not."""
    if obj.get("failed") is True:
        return "FAILED", "failed"
    if obj.get("cancelled") is True:
        return "CANCELLED", "cancelled"
    if obj.get("expired") is True:
        return "EXPIRED", f"expired at {iso_utc(expires)}" if expires else "expired"
    return ("FINISHED" if finished else "IN_PROGRESS"), None


def _links(obj: dict[str, Any], job_id: str) -> list[tuple[str | None, str | None]]:
    """(replica set, link) of each archive: one per component, else one per deliveryUrl."""
    components = obj.get("components")
    if components:
        if not isinstance(components, list) or not all(isinstance(c, dict) for c in components):
            raise ApiError(f"unexpected API response: job {job_id} has malformed components")
        return [
            (
                text(c, "replicaSetName", job_id),
                checked_url(text(c, "downloadUrl", job_id), job_id),
            )
            for c in components
        ]
    urls = obj.get("deliveryUrl") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ApiError(
            f"unexpected API response: job {job_id} has a deliveryUrl that is not a list"
        )
    return [(None, checked_url(u, job_id)) for u in urls]


def _archives(job_id: str, slots: list[tuple[str | None, str | None]]) -> tuple[Archive, ...]:
    if not slots:
        # Not finished: nothing known yet.
        return (Archive(key=job_id, sha1_source="none", secret_path=False),)
    segments = [last_segment(url) if url else "" for _, url in slots]
    # Some stores name every component's file alike: then the replica set names the file.
    distinct = len(set(segments)) == len(segments)
    archives = []
    for index, ((replica_set, url), segment) in enumerate(zip(slots, segments, strict=True)):
        by_set = f"{replica_set}.tar.gz" if replica_set else ""
        names = [n for n in ((segment, by_set) if distinct else (by_set, segment)) if n]
        if url is None:
            names = []  # a name is decided once the link is there, as for a legacy job
        key = job_id if len(slots) == 1 else f"{job_id}:{replica_set or index}"
        archives.append(
            Archive(
                key=key,
                names=tuple(dict.fromkeys(names)),
                url=url,
                sha1_source="none",
                replica_set=replica_set,
                secret_path=False,
            )
        )
    keys = [a.key for a in archives]
    if len(set(keys)) != len(keys):
        raise ApiError(f"unexpected API response: job {job_id} lists a replica set twice")
    return tuple(archives)


ATLAS_V2 = Dialect(
    name="Atlas Cloud Backup (Admin API v2)",
    accept=ACCEPT,
    jobs_path="backup/restoreJobs",
    parse=parse_job,
    no_batches=NO_BATCHES,
    job_is_restore=True,
)
