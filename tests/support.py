"""Test helpers: real archives, MongoDB-shaped job JSON, and a Digest-checking API handler."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import secrets
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug import Request, Response

PUBLIC_KEY = "testpublic"
PRIVATE_KEY = "test-private-key-5d6e7f"
REALM = "MMS Public API"
GROUP = "5f0c0ffee0000000000000aa"
CLUSTER = "Cluster0"
BATCH = "6a1b2c3d4e5f60718293a4b5"
API_ROOT = "/api/atlas/v1.0"
JOBS_PATH = f"{API_ROOT}/groups/{GROUP}/clusters/{CLUSTER}/restoreJobs"


SNAPSHOT = "Tue Nov 28 09:00:00 GMT 2026"
_DEFAULT = object()


def restore_info(replica_set: str, *, snapshot: str = SNAPSHOT, cluster: str = CLUSTER) -> str:
    """restoreInfo.txt as MongoDB documents it, with multi-line startup options."""
    role = "configsvr" if "config" in replica_set else "shardsvr"
    return (
        "Restore Information\n"
        "Group Name: Project0\n"
        f"Replica Set: {replica_set}\n"
        f"Cluster Name: {cluster}\n"
        f"Snapshot timestamp: {snapshot}\n"
        f"Restore timestamp: {snapshot} (1795942800, 1)\n"
        f"Last Oplog Applied: {snapshot} (1795942800, 1)\n"
        "MongoDB Version: 7.0.12\n"
        "Storage engine type: wiredTiger\n"
        "Startup Options: {\n"
        f'  "replication": {{ "replSetName": "{replica_set}" }},\n'
        f'  "sharding": {{ "clusterRole": "{role}" }},\n'
        '  "storage": { "dbPath": "/data/db", "engine": "wiredTiger" }\n'
        "}\n"
    )


def make_archive(
    replica_set: str,
    payload: int = 64 * 1024,
    *,
    level: int = 9,
    info: str | object | None = _DEFAULT,
    extra: tuple[tarfile.TarInfo, ...] = (),
) -> bytes:
    """A real restore tar.gz: REPLICA_SET/restoreInfo.txt and REPLICA_SET/data.bin of `payload`
    random bytes (gzip `level`); `info` replaces restoreInfo.txt (None: no restoreInfo.txt);
    `extra` members (no data) go last."""
    text = restore_info(replica_set) if info is _DEFAULT else info
    files = [("data.bin", os.urandom(payload))]
    if isinstance(text, str):
        files.insert(0, ("restoreInfo.txt", text.encode()))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=level) as tar:
        for name, data in files:
            entry = tarfile.TarInfo(f"{replica_set}/{name}")
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
        for member in extra:
            tar.addfile(member)
    return buf.getvalue()


class Sleeps:
    """A RetryPolicy sleep that waits for nothing, records every pause and can act during one."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.during: list[Callable[[], None]] = []  # run one per pause, in order

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.during:
            self.during.pop(0)()


def enospc_after(limit: int) -> Callable[[int, bytes | memoryview], int]:
    """An os.write that fills the disk after `limit` bytes, writing what fits first."""
    written = 0

    def write(fd: int, data: bytes | memoryview) -> int:
        nonlocal written
        room = limit - written
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(fd, data[:room])
        written += n
        return n

    return write


def sha1(data: bytes) -> str:
    """Hex SHA1 of bytes."""
    return hashlib.sha1(data).hexdigest()


def iso(when: datetime) -> str:
    """ISO-8601 with a Z, as the API writes it."""
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def new_id() -> str:
    """A 24-hex-digit id like MongoDB's ObjectIds."""
    return secrets.token_hex(12)


# The fields of a delivery that only a job with a link has (API-NOTES: "What a job looks like
# while a restore runs"). Until then the API lists none of them, and no hashes.
LINK_FIELDS = ("url", "urlV2", "authHeader", "authBearer", "authValue", "expires")


def has_link(status: str, delivery_status: str) -> bool:
    """Whether the real API lists a link (and expiry) for a job in this state."""
    if delivery_status in ("EXPIRED", "MAX_DOWNLOADS_EXCEEDED"):
        return True  # used up: the url may still be listed, but must never be requested
    return status == "FINISHED" and delivery_status == "READY"


def job_json(
    *,
    job_id: str | None = None,
    url: str | None = None,
    file_name: str | None = None,
    sha1_hex: str | None = None,
    batch_id: str | None = BATCH,
    status: str = "FINISHED",
    delivery_status: str = "READY",
    method: str = "HTTP",
    expires_in: timedelta = timedelta(hours=2),
    with_hashes: bool = True,
    link: bool | None = None,
    max_downloads: int = 3,
    **delivery_extra: Any,
) -> dict[str, Any]:
    """One restore job in the shape the API gives a job in that state.

    A job that is not ready (IN_PROGRESS, BROKEN, KILLED; delivery NOT_STARTED, IN_PROGRESS,
    FAILED, INTERRUPTED) has no url, no urlV2, no expires and no hashes, as the real API lists
    it. `link=False` removes them from a READY job too (READY before the link is filled in, a
    shape in MongoDB's own Go client fixtures); `link=True` forces them (a shape the API never
    shows, for tests that prove fetcher still does not use them).
    """
    job_id = job_id or new_id()
    if link is None:
        link = has_link(status, delivery_status)
    delivery: dict[str, Any] = {
        "methodName": method,
        "statusName": delivery_status,
        "expires": iso(datetime.now(UTC) + expires_in),
        "expirationHours": 2,
        "maxDownloads": max_downloads,
    }
    if url is not None:
        delivery["url"] = url
    delivery.update(delivery_extra)
    hashes = []
    if with_hashes and sha1_hex:
        hashes = [{"fileName": file_name, "hash": sha1_hex, "typeName": "SHA1"}]
    if not link:
        for key in LINK_FIELDS:
            delivery.pop(key, None)
        hashes = []
    job: dict[str, Any] = {
        "id": job_id,
        "clusterId": "5f0c0ffee0000000000000cc",
        "clusterName": CLUSTER,
        "groupId": GROUP,
        "snapshotId": "5f0c0ffee0000000000000dd",
        "created": "2026-11-28T10:00:00Z",
        "timestamp": {"date": "2026-11-28T09:00:00Z", "increment": 1},
        "pointInTime": False,
        "encryptionEnabled": False,
        "statusName": status,
        "delivery": delivery,
        "hashes": hashes,
        "links": [],
    }
    if batch_id is not None:
        job["batchId"] = batch_id
    return job


def page(results: list[dict[str, Any]], next_href: str | None = None) -> dict[str, Any]:
    """A list response, with a next link when there is one."""
    links = [{"rel": "self", "href": "self"}]
    if next_href:
        links.append({"rel": "next", "href": next_href})
    return {"results": results, "totalCount": len(results), "links": links}


class DigestGate:
    """Wraps a werkzeug handler with server-side HTTP Digest (MD5, qop=auth) checking."""

    def __init__(self, user: str = PUBLIC_KEY, password: str = PRIVATE_KEY) -> None:
        self.user, self.password = user, password
        self.nonce = secrets.token_hex(16)
        self.challenges = 0
        self.accepted = 0

    def check(self, request: Request) -> bool:
        """Return True when the request carries a valid digest response."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return False
        fields = dict(_split_digest(header[7:]))
        if fields.get("username") != self.user or fields.get("nonce") != self.nonce:
            return False
        ha1 = _md5(f"{self.user}:{REALM}:{self.password}")
        ha2 = _md5(f"{request.method}:{fields.get('uri', '')}")
        expected = _md5(
            f"{ha1}:{self.nonce}:{fields.get('nc')}:{fields.get('cnonce')}:{fields.get('qop')}:{ha2}"
        )
        return fields.get("response") == expected

    def challenge(self) -> Response:
        """A 401 like MongoDB's."""
        self.challenges += 1
        body = {"error": 401, "reason": "Unauthorized", "detail": "You are not authorized."}
        header = (
            f'Digest realm="{REALM}", domain="", nonce="{self.nonce}", algorithm=MD5, qop="auth"'
        )
        return Response(
            json.dumps(body), 401, {"WWW-Authenticate": header}, content_type="application/json"
        )

    def json(self, body: Any, request: Request, status: int = 200) -> Response:
        """Answer `body` as JSON if authenticated, else the challenge."""
        if not self.check(request):
            return self.challenge()
        self.accepted += 1
        return Response(json.dumps(body), status, content_type="application/json")


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _split_digest(text: str) -> list[tuple[str, str]]:
    out = []
    for part in text.split(","):
        if "=" in part:
            key, _, value = part.strip().partition("=")
            out.append((key.strip(), value.strip().strip('"')))
    return out
