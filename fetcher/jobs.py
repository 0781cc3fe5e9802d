"""Restore jobs parsed from the API's JSON, and the decision whether one can be downloaded."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from fetcher.errors import ApiError
from fetcher.redact import Redactor, last_segment, origin

Readiness = Literal["ready", "wait", "never"]

_SHA1 = re.compile(r"^[0-9a-fA-F]{40}$")
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# Delivery states after which the link will never serve the file.
_DEAD_DELIVERY = ("EXPIRED", "MAX_DOWNLOADS_EXCEEDED", "FAILED", "INTERRUPTED")
_DEAD_JOB = ("BROKEN", "KILLED", "FAILED")


@dataclass(frozen=True)
class FileHash:
    """One entry of a job's hashes[]."""

    file_name: str
    sha1: str


@dataclass(frozen=True)
class Delivery:
    """How, where and until when a job's archive can be pulled."""

    method: str
    status: str
    url: str | None = field(default=None, repr=False)
    bearer: str | None = field(default=None, repr=False)
    expires: datetime | None = None
    max_downloads: int | None = None


@dataclass(frozen=True)
class RestoreJob:
    """The fields of a restore job that fetcher uses or records."""

    id: str
    status: str
    delivery: Delivery
    hashes: tuple[FileHash, ...] = ()
    batch_id: str | None = None
    cluster_id: str | None = None
    cluster_name: str | None = None
    group_id: str | None = None
    snapshot_id: str | None = None
    created: str | None = None
    timestamp: dict[str, Any] | None = None
    point_in_time: bool | None = None

    @property
    def sha1(self) -> str | None:
        """The published SHA1 of the archive, lower-cased, if the API lists one."""
        return self.hashes[0].sha1 if self.hashes else None

    def hide_secrets(self, redactor: Redactor) -> None:
        """Teach `redactor` this job's pull-link token and bearer, keeping its ids readable."""
        redactor.add_url(self.delivery.url, public=self.ids)
        redactor.add(self.delivery.bearer)

    @property
    def ids(self) -> tuple[str | None, ...]:
        """The job's own ids: public, and shown in messages even when a pull URL holds them."""
        return (self.id, self.batch_id, self.cluster_id, self.group_id, self.snapshot_id)

    def name_candidates(self) -> list[str]:
        """Server-given names for the archive, in order of preference."""
        names = [h.file_name for h in self.hashes if h.file_name]
        if self.delivery.url:
            segment = last_segment(self.delivery.url)
            if segment and segment not in names:
                names.append(segment)
        return names

    def record(self) -> dict[str, Any]:
        """Fields an operator needs in the manifest (nothing secret)."""
        return {
            "clusterId": self.cluster_id,
            "clusterName": self.cluster_name,
            "snapshotId": self.snapshot_id,
            "created": self.created,
            "timestamp": self.timestamp,
            "pointInTime": self.point_in_time,
            "status": self.status,
            "deliveryStatus": self.delivery.status,
            "maxDownloads": self.delivery.max_downloads,
        }


def parse_job(obj: object) -> RestoreJob:
    """Build a RestoreJob from one element of results[], rejecting shapes we cannot trust."""
    if not isinstance(obj, dict):
        raise ApiError("unexpected API response: a restore job is not a JSON object")
    job_id = obj.get("id")
    if not isinstance(job_id, str) or not _ID.match(job_id):
        raise ApiError("unexpected API response: a restore job has no valid id")
    delivery_obj = obj.get("delivery")
    if delivery_obj is None:
        delivery_obj = {}
    if not isinstance(delivery_obj, dict):
        raise ApiError(f"unexpected API response: job {job_id} has a delivery of the wrong type")
    return RestoreJob(
        id=job_id,
        status=_str(obj, "statusName", job_id) or "UNKNOWN",
        delivery=_parse_delivery(delivery_obj, job_id),
        hashes=_parse_hashes(obj.get("hashes"), job_id),
        batch_id=_str(obj, "batchId", job_id),
        cluster_id=_str(obj, "clusterId", job_id),
        cluster_name=_str(obj, "clusterName", job_id),
        group_id=_str(obj, "groupId", job_id),
        snapshot_id=_str(obj, "snapshotId", job_id),
        created=_str(obj, "created", job_id),
        timestamp=obj["timestamp"] if isinstance(obj.get("timestamp"), dict) else None,
        point_in_time=obj["pointInTime"] if isinstance(obj.get("pointInTime"), bool) else None,
    )


def _parse_delivery(obj: dict[str, Any], job_id: str) -> Delivery:
    url = _str(obj, "url", job_id)
    bearer = None
    url_v2 = _str(obj, "urlV2", job_id)
    auth_value = _str(obj, "authValue", job_id)
    if url_v2 and auth_value:
        # Ops Manager: the link needs "Authorization: Bearer <authValue>" and nothing else.
        url, bearer = url_v2, auth_value
    elif not url and url_v2:
        url = url_v2
    if url is not None:
        problem = url_problem(url)
        if problem is not None:
            # Never quote the URL: its path holds the token.
            raise ApiError(f"unexpected API response: job {job_id} has a delivery URL {problem}")
    if bearer is not None and not all(0x21 <= ord(c) <= 0x7E for c in bearer):
        # It goes into a header line: a CR/LF in it would be a header of the server's choice.
        raise ApiError(f"unexpected API response: job {job_id} has an unusable authValue")
    max_downloads = obj.get("maxDownloads")
    if isinstance(max_downloads, bool) or not isinstance(max_downloads, int) or max_downloads < 0:
        max_downloads = None
    return Delivery(
        method=_str(obj, "methodName", job_id) or "UNKNOWN",
        status=_str(obj, "statusName", job_id) or "UNKNOWN",
        url=url,
        bearer=bearer,
        expires=_parse_time(obj.get("expires"), job_id),
        max_downloads=max_downloads,
    )


def url_problem(url: str) -> str | None:
    """Say what makes a pull URL unusable, or None when it is a plain http(s) URL."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # reading the port parses it: ":99999" raises ValueError
    except ValueError:
        return "that cannot be parsed"
    if parts.scheme.lower() not in ("https", "http"):
        return "that is not HTTP"
    if not origin(url):
        return "with no host"
    if parts.username is not None or parts.password is not None:
        # httpx would turn userinfo into Basic auth: the pull client sends no credentials.
        return "with credentials in it"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        return "with spaces or control characters"
    try:
        httpx.URL(url)  # the client's own parser (IDNA hosts included) must accept it too
    except (httpx.InvalidURL, ValueError):  # idna's errors are UnicodeErrors
        return "that the HTTP client cannot parse"
    return None


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
        if not isinstance(digest, str) or not _SHA1.match(digest):
            raise ApiError(f"unexpected API response: job {job_id} has a hash that is not SHA1")
        name = entry.get("fileName")
        hashes.append(
            FileHash(file_name=name if isinstance(name, str) else "", sha1=digest.lower())
        )
    return tuple(hashes)


def _str(obj: dict[str, Any], key: str, job_id: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ApiError(f"unexpected API response: job {job_id} has a {key} that is not a string")


def _parse_time(value: object, job_id: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ApiError(f"unexpected API response: job {job_id} has an unreadable expiry time")


def iso_utc(when: datetime) -> str:
    """ISO-8601 in UTC with a Z, as the API writes times."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def readiness(job: RestoreJob, now: datetime) -> tuple[Readiness, str]:
    """Say whether a job can be pulled now, later, or never, and why."""
    delivery = job.delivery
    if job.status in _DEAD_JOB:
        return "never", f"job {job.status}"
    if delivery.status in _DEAD_DELIVERY:
        return "never", f"delivery {delivery.status}"
    if delivery.expires is not None and delivery.expires <= now:
        return "never", f"expired at {iso_utc(delivery.expires)}"
    if delivery.method not in ("HTTP", "AUTOMATED_RESTORE") and not delivery.url:
        return "never", f"delivery method {delivery.method} has no file to download"
    if job.status != "FINISHED" or delivery.status != "READY":
        return "wait", f"not ready yet (job {job.status}, delivery {delivery.status})"
    if not delivery.url:
        if delivery.method == "AUTOMATED_RESTORE":
            return "never", "delivery method AUTOMATED_RESTORE has no file to download"
        # A shape MongoDB's own Go client fixtures show: READY before the link is filled in.
        return "wait", "delivery READY but no link yet"
    return "ready", "ready"
