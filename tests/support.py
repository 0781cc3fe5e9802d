"""Test helpers: real archives, MongoDB-shaped job JSON, and a Digest-checking API handler.

The archives, restoreInfo.txt and job shapes are the shared fake's (tests/fake/); these are
the names the tests have always called, with the tests' defaults (project, cluster, batch and
restore point).
"""

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
from tests.fake import archive, auth, jobs
from tests.fake.ids import BATCH as BATCH
from tests.fake.ids import CLUSTER as CLUSTER
from tests.fake.ids import GROUP as GROUP
from tests.fake.ids import new_id as new_id
from tests.fake.jobs import LINK_FIELDS as LINK_FIELDS
from tests.fake.jobs import has_link as has_link
from tests.fake.jobs import iso as iso
from tests.pullserver import PullServer

PUBLIC_KEY = "testpublic"
PRIVATE_KEY = "test-private-key-5d6e7f"
REALM = auth.REALM
API_ROOT = "/api/atlas/v1.0"
JOBS_PATH = f"{API_ROOT}/groups/{GROUP}/clusters/{CLUSTER}/restoreJobs"

# The restore point of the tests' archives: job_json's timestamp.date, 2026-11-28T09:00:00Z.
RESTORE_EPOCH = 1_795_856_400
SNAPSHOT = archive.snapshot_time(RESTORE_EPOCH)
_DEFAULT = object()


def restore_info(replica_set: str, *, snapshot: str = SNAPSHOT, cluster: str = CLUSTER) -> str:
    """restoreInfo.txt as MongoDB documents it, with multi-line startup options; the role is
    the replica set's in a sharded cluster (configsvr when its name says config)."""
    return archive.restore_info(
        replica_set, epoch=RESTORE_EPOCH, snapshot=snapshot, cluster_name=cluster
    )


def make_archive(
    replica_set: str,
    payload: int = 64 * 1024,
    *,
    level: int = 9,
    info: str | object | None = _DEFAULT,
    extra: tuple[tarfile.TarInfo, ...] = (),
) -> bytes:
    """A real restore tar.gz: REPLICA_SET/, REPLICA_SET/restoreInfo.txt and
    REPLICA_SET/data.bin of `payload` random bytes (gzip `level`); `info` replaces
    restoreInfo.txt (None: no restoreInfo.txt); `extra` members (no data) go last."""
    text = restore_info(replica_set) if info is _DEFAULT else info
    return archive.make_archive(
        replica_set, payload, info=text, epoch=RESTORE_EPOCH, level=level, extra=extra
    )


def with_member(rs: str, member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    """A small restore archive of `rs` with one more member (and its data) after the others."""
    buf = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(make_archive(rs, 4 * KiB)), mode="r:gz") as src,
        tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar,
    ):
        for m in src.getmembers():
            tar.addfile(m, src.extractfile(m))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
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
    """One restore job in the shape the API gives a job in that state (jobs.legacy_job).

    A job that is not ready (IN_PROGRESS, BROKEN, KILLED; delivery NOT_STARTED, IN_PROGRESS,
    FAILED, INTERRUPTED) has no url, no urlV2, no expires and no hashes, as the real API lists
    it. `link=False` removes them from a READY job too (READY before the link is filled in, a
    shape in MongoDB's own Go client fixtures); `link=True` forces them (a shape the API never
    shows, for tests that prove fetcher still does not use them). `delivery_extra` adds
    delivery fields (Ops Manager's urlV2 and auth fields, say: see jobs.link_fields).
    """
    hashes = [jobs.file_hash(file_name, sha1_hex)] if with_hashes and sha1_hex else []
    return jobs.legacy_job(
        job_id=job_id or new_id(),
        status=status,
        delivery_status=delivery_status,
        link=None if url is None else jobs.link_fields(url),
        expires=datetime.now(UTC) + expires_in,
        hashes=hashes,
        show_link=link,
        batch_id=batch_id,
        method=method,
        expiration_hours=2,
        max_downloads=max_downloads,
        cluster_id="5f0c0ffee0000000000000cc",
        cluster_name=CLUSTER,
        group_id=GROUP,
        snapshot_id="5f0c0ffee0000000000000dd",
        created="2026-11-28T10:00:00Z",
        timestamp={"date": "2026-11-28T09:00:00Z", "increment": 1},
        delivery_extra=delivery_extra,
    )


def page(results: list[dict[str, Any]], next_href: str | None = None) -> dict[str, Any]:
    """A list response, with a next link when there is one."""
    links = [{"rel": "self", "href": "self"}]
    if next_href:
        links.append({"rel": "next", "href": next_href})
    return jobs.page(results, links)


class DigestGate:
    """Wraps a werkzeug handler with server-side HTTP Digest (MD5, qop=auth) checking."""

    def __init__(self, user: str = PUBLIC_KEY, password: str = PRIVATE_KEY) -> None:
        self.user, self.password = user, password
        self.nonce = secrets.token_hex(16)
        self.challenges = 0
        self.accepted = 0

    def check(self, request: Request) -> bool:
        """Return True when the request carries a valid digest response."""
        fields = auth.parse_digest(request.headers.get("Authorization", ""))
        if fields is None or fields.get("nonce") != self.nonce:
            return False
        return auth.digest_matches(
            fields, user=self.user, password=self.password, method=request.method
        )

    def challenge(self) -> Response:
        """A 401 like MongoDB's."""
        self.challenges += 1
        body = {"error": 401, "reason": "Unauthorized", "detail": "You are not authorized."}
        header = auth.challenge(self.nonce)
        return Response(
            json.dumps(body), 401, {"WWW-Authenticate": header}, content_type="application/json"
        )

    def json(self, body: Any, request: Request, status: int = 200) -> Response:
        """Answer `body` as JSON if authenticated, else the challenge."""
        if not self.check(request):
            return self.challenge()
        self.accepted += 1
        return Response(json.dumps(body), status, content_type="application/json")


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
    archive = FileRecord(name, "verified", "downloaded", size=len(data), sha1=sha1(data))
    return JobRecord.of(job_id, (archive,), info={})


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
