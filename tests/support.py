"""Test helpers: real archives, MongoDB-shaped job JSON, and a Digest-checking API handler."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from fetcher import manifest as mf
from fetcher.engine.transfer import Download, Source
from fetcher.manifest import FileRecord, JobRecord, Manifest
from fetcher.redact import display_url
from fetcher.retry import RetryPolicy
from fetcher.storage import Destination
from tests.pullserver import PullServer

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


# -- shared by several test modules (one definition each) --------------------------------------

# The download engine's tests: one archive at one path of the pull host.
ARCHIVE_NAME = "Cluster0-shard-0.tar.gz"
ARCHIVE_PATH = f"/backup/restore/v2/pull/job1/secret-token/{ARCHIVE_NAME}"


def download(
    client: httpx.Client,
    dest: Destination,
    pull: PullServer | str,
    sleeps: Sleeps | None = None,
    *,
    job_id: str = "job1",
    expected: str | None = None,
    retries: int = 5,
    display: str | None = None,
    name: str = ARCHIVE_NAME,
    **kwargs: Any,
) -> Download:
    """The one-connection Download of an archive, built as Fetcher builds it for a job: from
    ARCHIVE_PATH on the `pull` host (or from the URL `pull`), its pauses recorded by `sleeps`."""
    url = pull if isinstance(pull, str) else pull.url(ARCHIVE_PATH)
    shown = display_url(url) if display is None else display
    source = Source(job_id=job_id, url=url, display=shown)
    policy = RetryPolicy(retries=retries, sleep=Sleeps() if sleeps is None else sleeps)
    return Download(client, dest, name, source, expected_sha1=expected, policy=policy, **kwargs)


# A restore job with a link, a file name and a SHA1 (parsing, readiness).
JOB_URL = "https://pull.example/backup/restore/v2/pull/abc/TOKEN123456/x.tar.gz"
JOB_SHA1 = "a" * 40


def linked_job_json(**kwargs: Any) -> dict[str, Any]:
    """job_json() of a job at JOB_URL, named x.tar.gz, with JOB_SHA1, unless told otherwise."""
    kwargs.setdefault("url", JOB_URL)
    kwargs.setdefault("file_name", "x.tar.gz")
    kwargs.setdefault("sha1_hex", JOB_SHA1)
    return job_json(**kwargs)


def api_job(**changes: Any) -> dict[str, Any]:
    """A job as the API lists it, with `changes` (delivery_X: in delivery; None: left out)."""
    job = job_json(
        url="https://pull.example/p/tok3n-abcdef/rs0.tar.gz",
        file_name="rs0.tar.gz",
        sha1_hex="a" * 40,
    )
    for key, value in changes.items():
        if key.startswith("delivery_"):
            job["delivery"][key.removeprefix("delivery_")] = value
        elif value is None:
            job.pop(key)
        else:
            job[key] = value
    return job


def results_body(results: Any) -> bytes:
    """A one-page list answer holding `results`."""
    return json.dumps({"results": results, "links": []}).encode()


def api_base(server: HTTPServer) -> str:
    """The API root on a bare local server."""
    return server.url_for(API_ROOT)


# Manifests as fetch writes them.
ARCHIVE_BYTES = b"archive bytes" * 1000


def verified_record(job_id: str, name: str, data: bytes = ARCHIVE_BYTES) -> JobRecord:
    """The record of a job whose one archive `name` (of `data`) was verified."""
    return JobRecord(
        job_id, "verified", "downloaded", files=(FileRecord(name, len(data), sha1(data)),)
    )


def manifest_of(*jobs: JobRecord) -> Manifest:
    """A manifest of `jobs`."""
    return Manifest(group_id="g", cluster="c", batch_id="b", jobs=jobs)


def write_manifest(dest: Destination, name: str, data: bytes) -> None:
    """A manifest recording one verified archive, written the way fetch writes it."""
    record = FileRecord(name=name, size=len(data), sha1=sha1(data))
    job = JobRecord(
        id="bca12412cddf8dd1f34daff6", outcome="verified", reason="downloaded", files=(record,)
    )
    mf.write(dest, Manifest(group_id="g", cluster="c", batch_id="b", jobs=(job,)))


def file_mode(path: Path) -> int:
    """The permission bits of `path` itself (a link is not followed)."""
    return stat.S_IMODE(os.lstat(path).st_mode)


# Batches through the command line.
KiB = 1024
SHARDS = ["Cluster0-shard-0", "Cluster0-shard-1", "Cluster0-shard-2"]  # conftest.add_batch
HOST_SHARDS = [f"Cluster0-shard-{i}" for i in range(4)]  # conftest.add_host_batch
CONFIG = "Cluster0-config"
BEARER = "om-bearer-5ecret-token-77"  # conftest.add_ops_manager_job's
SIGNATURE = "s1gnature-d34db33f-9f8e7d"  # conftest.plant_secrets'
# MongoDB's "Get All Restore Jobs" example, as its page gives it (conftest.documented).
DOCUMENTED_EXAMPLE = Path(__file__).parent / "fixtures" / "get-all-restore-jobs.json"


def with_garbage(rs: str) -> bytes:
    """A restore archive of `rs` with an error page after its gzip data."""
    return make_archive(rs, 32 * KiB) + b"<html>502 Bad Gateway</html>"


def list_args(base_url: str, *extra: str) -> list[str]:
    """`fetcher list` of the test cluster at `base_url`, then `extra`."""
    return ["list", "--base-url", base_url, "--group", GROUP, "--cluster", CLUSTER, *extra]


def write_netrc(tmp_path: Path, text: str) -> Path:
    """A private netrc file of `text`."""
    path = tmp_path / "netrc"
    path.write_text(text)
    path.chmod(0o600)
    return path


def one_line_error(result: Result, code: int = 1) -> str:
    """The CLI failed the documented way: this exit code, one line on stderr, no traceback."""
    text = result.stdout + result.stderr
    assert result.exit_code == code, text
    assert "Traceback" not in text and "internal error" not in text, text
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fetcher: error: ")
    return lines[0]


def only_line(stderr: str) -> str:
    """The one line of `stderr`, which holds no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def run_without_privilege(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI where permission bits apply: as is, or in a user namespace when root.

    Root ignores permission bits. In a new user namespace our uid maps to nobody, keeps no
    capability over files outside it, and so meets the bits like any user.
    """
    command = [sys.executable, "-m", "fetcher.cli", *args]
    if os.geteuid() == 0:
        unshare = shutil.which("unshare")
        probe = (
            subprocess.run([unshare, "--user", "true"], capture_output=True) if unshare else None
        )
        if probe is None or probe.returncode != 0:
            pytest.skip("running as root without user namespaces: a read-only DIR cannot bite")
        command = [str(unshare), "--user", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=dict(os.environ))
