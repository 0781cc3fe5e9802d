"""Restore jobs as the APIs list them, at each moment of their life.

Legacy backup (Atlas v1.0, Cloud Manager, Ops Manager): `legacy_job`, a BackupRestoreJob;
Atlas Admin API v2 (Cloud Backup): `v2_job`, a DiskBackupSnapshotRestoreJob. Both follow
API-NOTES, "What a job looks like while a restore runs": a job that is not ready has no link,
no expiry and no hashes. tests/fake/test_shapes.py checks every shape rendered here against
MongoDB's OpenAPI definition (tests/fixtures/atlas-openapi-restore-jobs.json); the few fields
it does not declare are named there, each with the source that says the service sends it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

# The delivery fields that only a job with a link has: until then the API lists none of them.
LINK_FIELDS: Final = ("url", "urlV2", "authHeader", "authBearer", "authValue", "expires")
# What MongoDB's own example lists for a link without a download limit (Java's Integer.MAX_VALUE).
UNLIMITED_DOWNLOADS: Final = 2_147_483_647


def iso(when: datetime) -> str:
    """ISO-8601 in UTC with a Z and whole seconds, as the API writes times."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- legacy backup ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Moment:
    """One moment of a legacy job's life: the job's and the delivery's statusName."""

    name: str
    status: str
    delivery_status: str

    @property
    def link(self) -> bool:
        """Whether the API lists the job's link, expiry and hashes at this moment."""
        return has_link(self.status, self.delivery_status)


# API-NOTES' table, row by row (and the two ways a restore goes wrong, and is used up).
MOMENTS: Final = (
    Moment("just triggered", "IN_PROGRESS", "NOT_STARTED"),
    Moment("being prepared", "IN_PROGRESS", "IN_PROGRESS"),
    Moment("prepared, not finished", "FINISHED", "IN_PROGRESS"),
    Moment("ready", "FINISHED", "READY"),
    Moment("broken", "BROKEN", "FAILED"),
    Moment("killed", "KILLED", "INTERRUPTED"),
    Moment("expired", "FINISHED", "EXPIRED"),
    Moment("downloads used up", "FINISHED", "MAX_DOWNLOADS_EXCEEDED"),
)


def has_link(status: str, delivery_status: str) -> bool:
    """Whether the real API lists a link (and expiry) for a job in this state."""
    if delivery_status in ("EXPIRED", "MAX_DOWNLOADS_EXCEEDED"):
        return True  # used up: the url may still be listed, but must never be requested
    return status == "FINISHED" and delivery_status == "READY"


def link_fields(url: str, *, bearer: str | None = None) -> dict[str, str]:
    """The delivery fields that carry a job's link.

    Atlas and Cloud Manager: `url`, the pull link with its token in the path (deprecated in the
    definition, and what MongoDB's example and every service we know of lists).

    With `bearer`: the Ops Manager variant, as API-NOTES describes it: `urlV2` with `authHeader`
    (Authorization), `authBearer` (Bearer) and `authValue` (the token), sent as
    `Authorization: Bearer {authValue}`. Atlas's definition declares urlV2, authHeader and
    authValue but not authBearer: only this variant carries it, and the shape test names it.
    """
    if bearer is None:
        return {"url": url}
    return {
        "urlV2": url,
        "authHeader": "Authorization",
        "authBearer": "Bearer",
        "authValue": bearer,
    }


def file_hash(file_name: str | None, sha1: str) -> dict[str, Any]:
    """One hashes[] entry (a RestoreJobFileHash)."""
    return {"fileName": file_name, "hash": sha1, "typeName": "SHA1"}


def legacy_job(
    *,
    job_id: str,
    status: str,
    delivery_status: str,
    cluster_id: str,
    cluster_name: str,
    group_id: str,
    snapshot_id: str,
    created: str,
    timestamp: Mapping[str, Any],
    link: Mapping[str, str] | None = None,
    expires: datetime | None = None,
    hashes: Sequence[Mapping[str, Any]] = (),
    show_link: bool | None = None,
    batch_id: str | None = None,
    method: str = "HTTP",
    expiration_hours: int = 2,
    max_downloads: int = UNLIMITED_DOWNLOADS,
    links: Sequence[Mapping[str, str]] = (),
    point_in_time: bool | None = False,
    delivery_extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One legacy restore job (a BackupRestoreJob) in the shape the API gives its state.

    The link (see link_fields), `expires` and `hashes` are listed only when the job has a
    link at this moment (has_link; `show_link` overrides it: False for READY before the link
    is filled in, a shape of MongoDB's Go client fixtures; True for a shape the API never
    shows, to prove a client still does not use it). `delivery_extra` adds delivery fields;
    those that belong to a link are dropped with it. `batchId` is a sharded restore's only.
    `pointInTime` is in MongoDB's own example of the response (not in the definition): None
    leaves it out.
    """
    shown = has_link(status, delivery_status) if show_link is None else show_link
    delivery: dict[str, Any] = {
        "methodName": method,
        "statusName": delivery_status,
        "expirationHours": expiration_hours,
        "maxDownloads": max_downloads,
    }
    if expires is not None:
        delivery["expires"] = iso(expires)
    delivery.update(link or {})
    delivery.update(delivery_extra or {})
    if not shown:
        for key in LINK_FIELDS:
            delivery.pop(key, None)
    job: dict[str, Any] = {
        "id": job_id,
        "clusterId": cluster_id,
        "clusterName": cluster_name,
        "groupId": group_id,
        "snapshotId": snapshot_id,
        "created": created,
        "timestamp": dict(timestamp),
        "encryptionEnabled": False,
        "statusName": status,
        "delivery": delivery,
        "hashes": [dict(h) for h in hashes] if shown else [],
        "links": [dict(link) for link in links],
    }
    if point_in_time is not None:
        job["pointInTime"] = point_in_time
    if batch_id is not None:
        job["batchId"] = batch_id
    return job


# -- Atlas Admin API v2 (Cloud Backup) --------------------------------------------------------

V2_STATES: Final = ("running", "ready", "expired", "failed", "cancelled")
V2_FINISHED: Final = ("ready", "expired")  # failed and cancelled jobs never finish


def v2_job(
    *,
    job_id: str,
    snapshot_id: str,
    state: str,
    sharded: bool,
    timestamp: str,
    href: str,
    delivery_type: str = "download",
    links: Sequence[tuple[str, str]] = (),
    finished_at: str | None = None,
    expires_at: str | None = None,
    target_cluster: str | None = None,
    target_group: str | None = None,
) -> dict[str, Any]:
    """One Cloud Backup restore job (a DiskBackupSnapshotRestoreJob) in `state` (V2_STATES).

    `links` are (replica set, pre-signed link) pairs, one per archive. Until the job has
    finished it has no finishedAt, no expiresAt, no components and an empty deliveryUrl; then
    a replica set's link is its deliveryUrl and a sharded restore (one job, no batchId) lists
    one component per replica set. There are never hashes. An automated restore names its
    target and has nothing to download.
    """
    if state not in V2_STATES:
        raise ValueError(f"unknown v2 job state {state!r}")
    doc: dict[str, Any] = {
        "id": job_id,
        "snapshotId": snapshot_id,
        "deliveryType": delivery_type,
        "expired": state == "expired",
        "failed": state == "failed",
        "cancelled": state == "cancelled",
        "timestamp": timestamp,
        "links": [{"rel": "self", "href": href}],
    }
    finished = state in V2_FINISHED
    if finished and finished_at is not None:
        doc["finishedAt"] = finished_at
    if delivery_type != "download":
        if target_cluster is not None:
            doc["targetClusterName"] = target_cluster
        if target_group is not None:
            doc["targetGroupId"] = target_group
        return doc
    doc["deliveryUrl"] = []
    if not finished:
        return doc
    if expires_at is not None:
        doc["expiresAt"] = expires_at
    if sharded:
        doc["components"] = [
            {"replicaSetName": name, "downloadUrl": url, "privateDownloadDeliveryUrls": []}
            for name, url in links
        ]
    else:
        doc["deliveryUrl"] = [url for _, url in links[:1]]
    return doc


def page(
    results: list[dict[str, Any]], links: list[dict[str, str]], total: int | None = None
) -> dict[str, Any]:
    """A list response: results, totalCount and the page's links."""
    return {
        "results": results,
        "totalCount": len(results) if total is None else total,
        "links": links,
    }
