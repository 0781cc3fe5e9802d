"""Restore jobs parsed from the API's JSON, and the decision whether one can be downloaded."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from fetcher.errors import ApiError
from fetcher.redact import Redactor, display_url, last_segment, origin, public_url

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
    """How and until when a job's archives can be pulled (the job's delivery, either dialect)."""

    method: str  # v1 methodName (HTTP, ...); v2 deliveryType (download, automated, ...)
    status: str  # v1 delivery statusName; v2: derived from the job's flags (READY, EXPIRED, ...)
    expires: datetime | None = None
    max_downloads: int | None = None


@dataclass(frozen=True)
class Archive:
    """One file a restore job delivers: where to pull it, what to call it, what it restores."""

    key: str  # its manifest entry's id: the job's id, or "JOB-ID:REPLICA-SET" for one of several
    names: tuple[str, ...] = ()  # server-given file names, preferred first
    url: str | None = field(default=None, repr=False)
    bearer: str | None = field(default=None, repr=False)
    sha1: str | None = None  # the published SHA1, lower-cased, when the API gives one
    replica_set: str | None = None  # as the API names it (Atlas v2 components)
    secret_path: bool = True  # a legacy pull link's path is a token; a pre-signed one's is not

    @property
    def display(self) -> str:
        """The link as it may be shown: never a query, and never a path that holds a token."""
        if not self.url:
            return ""
        return display_url(self.url) if self.secret_path else public_url(self.url)


@dataclass(frozen=True)
class RestoreJob:
    """A restore job of either API dialect, and the archives it delivers (at least one slot).

    Readiness is decided from three reasons the parser fills in: `gone` (the job will never
    deliver: checked before the expiry), `unusable` (nothing to pull, after the expiry) and
    `pending` (not ready yet). A job whose archives are not known yet has one archive with no
    link and no name, keyed by the job's id.
    """

    id: str
    status: str
    delivery: Delivery
    archives: tuple[Archive, ...]
    stage: str = ""  # what a job not ready yet waits on, for --wait's status line
    gone: str | None = None
    unusable: str | None = None
    pending: str | None = None
    publishes_sha1: bool = True  # Atlas v2 publishes none: the archive check is the check
    batch_id: str | None = None
    cluster_id: str | None = None
    cluster_name: str | None = None
    group_id: str | None = None
    snapshot_id: str | None = None
    created: str | None = None
    timestamp: dict[str, Any] | None = None
    point_in_time: bool | None = None

    def hide_secrets(self, redactor: Redactor) -> None:
        """Teach `redactor` the secrets of this job's links, keeping its ids readable."""
        for archive in self.archives:
            redactor.add_url(archive.url, public=self.ids, path=archive.secret_path)
            redactor.add(archive.bearer)

    @property
    def ids(self) -> tuple[str | None, ...]:
        """The job's own ids: public, and shown in messages even when a pull URL holds them."""
        return (self.id, self.batch_id, self.cluster_id, self.group_id, self.snapshot_id)

    def record(self, archive: Archive | None = None) -> dict[str, Any]:
        """Fields an operator needs in the manifest (nothing secret)."""
        info: dict[str, Any] = {}
        if archive is not None and archive.key != self.id:
            info["jobId"] = self.id  # one of the job's several archives
        if archive is not None and archive.replica_set is not None:
            info["replicaSetName"] = archive.replica_set
        info.update(
            clusterId=self.cluster_id,
            clusterName=self.cluster_name,
            snapshotId=self.snapshot_id,
            created=self.created,
            timestamp=self.timestamp,
            pointInTime=self.point_in_time,
            status=self.status,
            deliveryStatus=self.delivery.status,
            maxDownloads=self.delivery.max_downloads,
        )
        return info


def parse_job(obj: object) -> RestoreJob:
    """Build a RestoreJob from one element of the legacy API's results[] (v1.0)."""
    obj, job_id = _job_object(obj)
    delivery_obj = obj.get("delivery")
    if delivery_obj is None:
        delivery_obj = {}
    if not isinstance(delivery_obj, dict):
        raise ApiError(f"unexpected API response: job {job_id} has a delivery of the wrong type")
    status = _str(obj, "statusName", job_id) or "UNKNOWN"
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
    )
    gone = unusable = pending = None
    if status in _DEAD_JOB:
        gone = f"job {status}"
    elif delivery.status in _DEAD_DELIVERY:
        gone = f"delivery {delivery.status}"
    if delivery.method not in ("HTTP", "AUTOMATED_RESTORE") and not url:
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
    return RestoreJob(
        id=job_id,
        status=status,
        delivery=delivery,
        archives=(archive,),
        stage=stage,
        gone=gone,
        unusable=unusable,
        pending=pending,
        batch_id=_str(obj, "batchId", job_id),
        cluster_id=_str(obj, "clusterId", job_id),
        cluster_name=_str(obj, "clusterName", job_id),
        group_id=_str(obj, "groupId", job_id),
        snapshot_id=_str(obj, "snapshotId", job_id),
        created=_str(obj, "created", job_id),
        timestamp=obj["timestamp"] if isinstance(obj.get("timestamp"), dict) else None,
        point_in_time=obj["pointInTime"] if isinstance(obj.get("pointInTime"), bool) else None,
    )


def parse_v2_job(
    obj: object, *, group: str | None = None, cluster: str | None = None
) -> RestoreJob:
    """Build a RestoreJob from an Atlas Admin API v2 Cloud Backup restore job.

    A sharded restore is one job with one archive per `components[]` entry; a replica set's
    is the `deliveryUrl[]` link. Links are pre-signed (the secret is in the query), and the
    API publishes no SHA1: the archive check is the integrity check.
    """
    obj, job_id = _job_object(obj)
    kind = _str(obj, "deliveryType", job_id) or "UNKNOWN"
    flags = {k: obj.get(k) is True for k in ("expired", "failed", "cancelled")}
    expires = _parse_time(obj.get("expiresAt"), job_id)
    finished = _str(obj, "finishedAt", job_id)
    _parse_time(finished, job_id)  # a finishedAt that does not read is a malformed job
    slots = _v2_links(obj, job_id)
    archives = _v2_archives(job_id, slots)
    linked = any(a.url for a in archives)
    if flags["failed"]:
        status, gone = "FAILED", "failed"
    elif flags["cancelled"]:
        status, gone = "CANCELLED", "cancelled"
    elif flags["expired"]:
        status = "EXPIRED"
        gone = f"expired at {iso_utc(expires)}" if expires else "expired"
    else:
        status, gone = ("FINISHED" if finished else "IN_PROGRESS"), None
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
    timestamp = _str(obj, "timestamp", job_id)
    return RestoreJob(
        id=job_id,
        status=status,
        delivery=Delivery(method=kind, status=delivery_status, expires=expires),
        archives=archives,
        stage="not finished" if not finished else "no link yet",
        gone=gone,
        unusable=unusable,
        pending=pending,
        publishes_sha1=False,
        group_id=group,
        cluster_name=cluster,
        snapshot_id=_str(obj, "snapshotId", job_id),
        created=finished,
        timestamp={"date": timestamp} if timestamp else None,
        point_in_time=kind == "pointInTime" or None,
    )


def _job_object(obj: object) -> tuple[dict[str, Any], str]:
    if not isinstance(obj, dict):
        raise ApiError("unexpected API response: a restore job is not a JSON object")
    job_id = obj.get("id")
    if not isinstance(job_id, str) or not _ID.match(job_id):
        raise ApiError("unexpected API response: a restore job has no valid id")
    return obj, job_id


def _v2_links(obj: dict[str, Any], job_id: str) -> list[tuple[str | None, str | None]]:
    """(replica set, link) of each archive: one per component, else one per deliveryUrl."""
    components = obj.get("components")
    if components:
        if not isinstance(components, list) or not all(isinstance(c, dict) for c in components):
            raise ApiError(f"unexpected API response: job {job_id} has malformed components")
        return [
            (
                _str(c, "replicaSetName", job_id),
                _checked_url(_str(c, "downloadUrl", job_id), job_id),
            )
            for c in components
        ]
    urls = obj.get("deliveryUrl") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ApiError(
            f"unexpected API response: job {job_id} has a deliveryUrl that is not a list"
        )
    return [(None, _checked_url(u, job_id)) for u in urls]


def _v2_archives(job_id: str, slots: list[tuple[str | None, str | None]]) -> tuple[Archive, ...]:
    if not slots:
        return (Archive(key=job_id, secret_path=False),)  # not finished: nothing known yet
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
                replica_set=replica_set,
                secret_path=False,
            )
        )
    keys = [a.key for a in archives]
    if len(set(keys)) != len(keys):
        raise ApiError(f"unexpected API response: job {job_id} lists a replica set twice")
    return tuple(archives)


def _checked_url(url: str | None, job_id: str, what: str = "download") -> str | None:
    if url is not None and (problem := url_problem(url)) is not None:
        # Never quote the URL: its path or its query holds the secret.
        raise ApiError(f"unexpected API response: job {job_id} has a {what} URL {problem}")
    return url or None


def _pull_link(obj: dict[str, Any], job_id: str) -> tuple[str | None, str | None]:
    """The legacy delivery's link, and the bearer it needs (Ops Manager's urlV2), if any."""
    url = _str(obj, "url", job_id)
    bearer = None
    url_v2 = _str(obj, "urlV2", job_id)
    auth_value = _str(obj, "authValue", job_id)
    if url_v2 and auth_value:
        # Ops Manager: the link needs "Authorization: Bearer <authValue>" and nothing else.
        url, bearer = url_v2, auth_value
    elif not url and url_v2:
        url = url_v2
    url = _checked_url(url, job_id, "delivery")
    if bearer is not None and not all(0x21 <= ord(c) <= 0x7E for c in bearer):
        # It goes into a header line: a CR/LF in it would be a header of the server's choice.
        raise ApiError(f"unexpected API response: job {job_id} has an unusable authValue")
    return url or None, bearer


def _parse_delivery(obj: dict[str, Any], job_id: str) -> Delivery:
    max_downloads = obj.get("maxDownloads")
    if isinstance(max_downloads, bool) or not isinstance(max_downloads, int) or max_downloads < 0:
        max_downloads = None
    return Delivery(
        method=_str(obj, "methodName", job_id) or "UNKNOWN",
        status=_str(obj, "statusName", job_id) or "UNKNOWN",
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
    if job.gone:
        return "never", job.gone
    expires = job.delivery.expires
    if expires is not None and expires <= now:
        return "never", f"expired at {iso_utc(expires)}"
    if job.unusable:
        return "never", job.unusable
    if job.pending:
        return "wait", job.pending
    return "ready", "ready"
