"""The standalone fake: MongoDB's restore-jobs API, its pull host and, for Atlas Admin API v2
download restores, the OAuth token endpoint and a host of pre-signed download links.

scripts/fake_atlas.py runs it (the demo, the benchmark and tests/test_e2e.py); tests can build a
State in-process. Archives, restoreInfo.txt, job shapes, ranges and Digest come from the shared
modules of tests.fake. Time is the State's `clock` (monotonic seconds, for the jobs' lives) and
`now` (wall-clock, for the times the API shows): give it others to move it.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime as dt
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.fake import archive, auth, jobs, pull
from tests.fake.ids import BATCH, CLUSTER, CLUSTER_V2, GROUP, hex_id

API_ROOT = "/api/atlas/v1.0"
V2_ROOT = "/api/atlas/v2"
V2_TYPE = "application/vnd.atlas.2023-01-01+json"  # the version of the restoreJobs resource
V2_FIRST_VERSION = dt.date(2023, 1, 1)
V2_ACCEPT_RE = re.compile(r"^application/vnd\.atlas\.(\d{4}-\d{2}-\d{2})\+json$")
TOKEN_PATH = "/api/oauth/token"
DEFAULT_CLIENT_ID = "mdb_sa_id_demo"
DEFAULT_CLIENT_SECRET = "mdb_sa_sk_demo-secret"
DEFAULT_GROUP = GROUP
CHUNK = archive.CHUNK
# A fixed snapshot time keeps archive names stable across runs, so big files are reused.
SNAPSHOT_EPOCH = 1_700_000_000
OTHER_EPOCH = SNAPSHOT_EPOCH - 86_400
EXPIRED_EPOCH = SNAPSHOT_EPOCH - 3 * 86_400
PULL_RE = re.compile(r"^/backup/restore/v2/pull/([^/]+)/([^/]+)/([^/]+)$")
CLUSTER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
# Pre-signed download links, shaped like S3's query-string authentication (SigV4).
AMZ_ALGORITHM = "AWS4-HMAC-SHA256"
AMZ_KEY_ID = "AKIAFAKEATLAS0000000"
AMZ_DATE = "%Y%m%dT%H%M%SZ"
AMZ_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires")
LINK_HOURS = 2  # how long a finished restore's download links (and the job) stay valid


def stamp(epoch: int) -> str:
    """Snapshot-like stamp used in archive file names."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def member_archive(
    directory: Path,
    *,
    group: str,
    cluster: str,
    member: str,
    epoch: int,
    size: int,
    sharded: bool = True,
) -> tuple[str, Path]:
    """Make (or reuse) the archive of `cluster`'s replica set `member` ("shard-N", "config" or
    "config-N") at the restore point `epoch`; return the replica set's name and the archive's
    path. Without `sharded` the cluster is a replica set, whose options name no clusterRole."""
    replica_set = f"{cluster}-{member}"
    role = None if not sharded else archive.cluster_role(member)
    info = archive.restore_info(
        replica_set, epoch=epoch, role=role, cluster_id=hex_id("cluster", group, cluster)
    )
    path = directory / f"{replica_set}-{stamp(epoch)}.tar.gz"
    archive.write_archive(path, replica_set=replica_set, info=info, epoch=epoch, size=size)
    return replica_set, path


def sha1_of(path: Path) -> str:
    """Stream a file through SHA1."""
    digest = hashlib.sha1()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def page_of(query: dict[str, list[str]], cap: int) -> tuple[int, int] | None:
    """The (pageNum, itemsPerPage) a list request asks for, at most `cap` per page (also the
    default); None unless both are positive integers."""
    try:
        page = int(query.get("pageNum", ["1"])[0])
        per_page = min(int(query.get("itemsPerPage", [str(cap)])[0]), cap)
    except ValueError:
        return None
    return (page, per_page) if page >= 1 and per_page >= 1 else None


def page_links(
    url: str, params: dict[str, str], page: int, per_page: int, total: int
) -> list[dict[str, str]]:
    """The self, previous and next links of one page of a list of `total` items."""

    def link(rel: str, num: int) -> dict[str, str]:
        query = {**params, "pageNum": str(num), "itemsPerPage": str(per_page)}
        return {"rel": rel, "href": f"{url}?{urlencode(query)}"}

    links = [link("self", page)]
    if page > 1:
        links.append(link("previous", page - 1))
    if page * per_page < total:
        links.append(link("next", page + 1))
    return links


def accepts_v2(accept: str, today: dt.date) -> bool:
    """Whether an Accept header asks for a v2 version: application/vnd.atlas.YYYY-MM-DD+json
    with a real date from the first version to `today`."""
    for item in accept.split(","):
        match = V2_ACCEPT_RE.match(item.partition(";")[0].strip().lower())
        try:
            if match and V2_FIRST_VERSION <= dt.date.fromisoformat(match[1]) <= today:
                return True
        except ValueError:  # 2023-02-30 and the like
            continue
    return False


@dataclass
class Job:
    """One restore job and the pull-side state that goes with it."""

    id: str
    batch_id: str
    file_name: str
    path: Path | None
    replica_set: str  # what the archive's restoreInfo.txt names
    expired: bool = False
    sha1: str = ""
    size: int = 0
    mtime: float = 0.0
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    auth_value: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    delivery_status: str = "READY"
    ready_at: float = 0.0  # seconds after the trigger (server start) when the archive is ready
    downloads: int = 0
    bytes_sent: int = 0
    requests: int = 0
    completed: int = 0

    @property
    def etag(self) -> str:
        """The archive's ETag."""
        return f'"{self.sha1}"'

    @property
    def last_modified(self) -> str:
        """The archive's Last-Modified."""
        return pull.http_date(self.mtime)


@dataclass
class V2Job:
    """One Cloud Backup restore job of the v2 API. A sharded restore is one job with an archive
    per replica set (its components); the download server serves each archive as a Job, of
    which it uses only the file fields (file_name, path, replica_set, sha1, size, mtime)."""

    id: str
    kind: str  # "sharded" or "replicaSet"
    epoch: int  # when the snapshot was taken
    archives: list[Job]
    delivery_type: str = "download"  # or "automated": restored into a cluster, nothing to fetch
    expired: bool = False
    ready_at: float = 0.0  # seconds after the start when it finished (negative: before it)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class State:
    """Everything the listeners share; `lock` guards counters, delivery status and tokens.

    `clock` (monotonic seconds) runs the jobs' lives from the State's creation, the moment the
    restore is triggered; `now` gives the wall-clock times the API shows.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        jobs: list[Job],
        v2_jobs: list[V2Job] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.args, self.jobs = args, jobs
        self.clock, self.now = clock, now
        self.by_id = {job.id: job for job in jobs}
        self.lock = threading.Lock()
        self.nonces: OrderedDict[str, None] = OrderedDict()
        self.api_base = ""
        self.pull_base = ""
        self.v2_jobs = v2_jobs or []
        self.v2_by_id = {job.id: job for job in self.v2_jobs}
        # Download link path -> (job, archive); the links are signed with a key of this run.
        self.downloads = {
            self.download_path(job, a): (job, a) for job in self.v2_jobs for a in job.archives
        }
        self.download_key = secrets.token_bytes(32)
        self.tokens: dict[str, float] = {}  # access token -> when it expires (on `clock`)
        self.v2_base = ""
        self.download_base = ""
        self.started = clock()
        self.started_at = now()
        triggered = args.ready_after > 0
        self.created = self.started_at - dt.timedelta(minutes=0 if triggered else 20)

    def elapsed(self) -> float:
        """Seconds since the restore was triggered."""
        return self.clock() - self.started

    def phase(self, job: Job) -> str:
        """Where the job is in its lifecycle: NOT_STARTED, IN_PROGRESS (half-way) or READY."""
        elapsed = self.elapsed()
        if elapsed >= job.ready_at:
            return "READY"
        return "IN_PROGRESS" if elapsed >= job.ready_at / 2 else "NOT_STARTED"

    def delivery_status(self, job: Job, phase: str | None = None) -> str:
        """The delivery's statusName: the phase until ready, then the pull side's (hold `lock`)."""
        phase = phase or self.phase(job)
        return job.delivery_status if phase == "READY" else phase

    def pull_url(self, job: Job) -> str:
        """Where the job's archive can be fetched."""
        if self.args.pull_base:
            return f"{self.pull_base}/{job.file_name}"
        return f"{self.pull_base}/backup/restore/v2/pull/{job.id}/{job.token}/{job.file_name}"

    def render(self, job: Job) -> dict[str, Any]:
        """The job as the legacy API returns it at this moment of its life (jobs.legacy_job):
        until it is ready no link, no expires and no hashes. With --bearer the link is Ops
        Manager's (urlV2 and its auth fields); with --late-hashes the SHA1 is published once
        the archive was downloaded."""
        a = self.args
        phase = self.phase(job)
        ready = phase == "READY"
        with self.lock:
            status, downloaded = self.delivery_status(job, phase), job.completed > 0
        epoch = OTHER_EPOCH if job.batch_id != a.batch else SNAPSHOT_EPOCH
        if job.expired:
            expires = self.now() - dt.timedelta(days=3)
        else:
            expires = self.started_at + dt.timedelta(seconds=job.ready_at, hours=LINK_HOURS)
        hidden = not ready or job.expired or (a.late_hashes and not downloaded)
        bearer = job.auth_value if a.bearer else None
        return jobs.legacy_job(
            job_id=job.id,
            status="FINISHED" if ready else "IN_PROGRESS",
            delivery_status=status,
            link=jobs.link_fields(self.pull_url(job), bearer=bearer),
            expires=expires,
            hashes=[] if hidden else [jobs.file_hash(job.file_name, job.sha1)],
            batch_id=job.batch_id,
            expiration_hours=LINK_HOURS,
            max_downloads=a.max_downloads or jobs.UNLIMITED_DOWNLOADS,
            cluster_id=hex_id("cluster", a.group, a.cluster),
            cluster_name=a.cluster,
            group_id=a.group,
            snapshot_id=hex_id("snapshot", job.batch_id, job.file_name),
            created=jobs.iso(self.created),
            timestamp={"date": jobs.iso(dt.datetime.fromtimestamp(epoch, dt.UTC)), "increment": 1},
            links=[{"rel": "self", "href": f"{self.list_url()}/{job.id}"}],
        )

    def list_url(self) -> str:
        """Absolute URL of the restore-jobs collection."""
        return f"{self.api_base}/groups/{self.args.group}/clusters/{self.args.cluster}/restoreJobs"

    def v2_list_url(self, cluster: str) -> str:
        """Absolute URL of a cluster's v2 restore-jobs collection."""
        return f"{self.v2_base}/groups/{self.args.group}/clusters/{cluster}/backup/restoreJobs"

    def v2_finished(self, job: V2Job) -> bool:
        """Whether a v2 job has finished (its download links exist)."""
        return self.elapsed() >= job.ready_at

    @staticmethod
    def download_path(job: V2Job, archive: Job) -> str:
        """The path of an archive's download link."""
        return f"/restore/{job.id}/{archive.file_name}"

    def sign(self, path: str, credential: str, amz_date: str, expires: str) -> str:
        """The X-Amz-Signature of a download link: an HMAC of what the link may not change."""
        message = "\n".join([AMZ_ALGORITHM, path, credential, amz_date, expires]).encode()
        return hmac.new(self.download_key, message, hashlib.sha256).hexdigest()

    def signed(self, path: str, query: Mapping[str, str]) -> bool:
        """Whether `query` is the signature of a link to `path` this run made."""
        expected = self.sign(
            path, query["X-Amz-Credential"], query["X-Amz-Date"], query["X-Amz-Expires"]
        )
        return query["X-Amz-Algorithm"] == AMZ_ALGORITHM and hmac.compare_digest(
            expected.encode(), query.get("X-Amz-Signature", "").encode()
        )

    def download_url(self, job: V2Job, archive: Job) -> str:
        """An archive's pre-signed link, valid from the job's end for LINK_HOURS."""
        path = self.download_path(job, archive)
        signed = self.started_at + dt.timedelta(seconds=job.ready_at)
        amz_date = signed.strftime(AMZ_DATE)
        credential = f"{AMZ_KEY_ID}/{signed:%Y%m%d}/us-east-1/s3/aws4_request"
        expires = str(LINK_HOURS * 3600)
        query = {
            "X-Amz-Algorithm": AMZ_ALGORITHM,
            "X-Amz-Credential": credential,
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": expires,
            "X-Amz-Signature": self.sign(path, credential, amz_date, expires),
        }
        return f"{self.download_base}{path}?{urlencode(query)}"

    def v2_state(self, job: V2Job) -> str:
        """The job's state (jobs.V2_STATES): running until it finishes, then ready until its
        download links expire (a run longer than LINK_HOURS outlives them)."""
        if not self.v2_finished(job):
            return "running"
        finished = self.started_at + dt.timedelta(seconds=job.ready_at)
        outlived = self.now() > finished + dt.timedelta(hours=LINK_HOURS)
        if job.expired or (job.delivery_type == "download" and outlived):
            return "expired"
        return "ready"

    def render_v2(self, job: V2Job) -> dict[str, Any]:
        """The job as the v2 API returns it (jobs.v2_job): until it has finished no
        finishedAt, no expiry and no links. There are no hashes."""
        finished = self.started_at + dt.timedelta(seconds=job.ready_at)
        automated = job.delivery_type != "download"
        return jobs.v2_job(
            job_id=job.id,
            snapshot_id=hex_id("snapshot", job.id),
            state=self.v2_state(job),
            sharded=job.kind == "sharded",
            timestamp=jobs.iso(dt.datetime.fromtimestamp(job.epoch, dt.UTC)),
            href=f"{self.v2_list_url(self.args.v2_cluster)}/{job.id}",
            delivery_type=job.delivery_type,
            links=[(a.replica_set, self.download_url(job, a)) for a in job.archives],
            finished_at=jobs.iso(finished),
            expires_at=jobs.iso(finished + dt.timedelta(hours=LINK_HOURS)),
            target_cluster=f"{self.args.v2_cluster}-restored" if automated else None,
            target_group=self.args.group if automated else None,
        )

    def token_valid(self, token: str) -> bool:
        """Whether `token` is an access token this server issued that has not expired."""
        with self.lock:
            expires = self.tokens.get(token)
        return expires is not None and self.clock() < expires

    def issue_token(self) -> str:
        """A new access token, valid for --token-ttl seconds; forget the expired ones."""
        token, now = secrets.token_urlsafe(32), self.clock()
        with self.lock:
            for old in [t for t, expires in self.tokens.items() if expires <= now]:
                del self.tokens[old]
            self.tokens[token] = now + self.args.token_ttl
        return token


class Server(pull.QuietServer):
    """A threading HTTP server that carries the shared state."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], state: State, port: int) -> None:
        super().__init__(("127.0.0.1", port), handler)
        self.state = state


class Handler(BaseHTTPRequestHandler):
    """Common plumbing: keep-alive, JSON replies, quiet logs."""

    protocol_version = "HTTP/1.1"  # keep-alive, as httpx pools connections
    server_version = "fake-atlas/1.0"
    timeout = 120

    @property
    def state(self) -> State:
        """The shared state."""
        return cast(Server, self.server).state

    def log_message(self, format: str, *args: Any) -> None:
        """Log only with --verbose, and never the path token."""
        if self.state.args.verbose:
            line = re.sub(r"(/pull/[^/]+/)[^/]+/", r"\1***/", format % args)
            line = re.sub(r"(X-Amz-Signature=)[^&\s]+", r"\1***", line)
            sys.stderr.write(f"fake-atlas: {self.address_string()} {line}\n")

    def send_body(
        self, status: int, data: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """Send a complete response (no body to a HEAD)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_json(
        self,
        status: int,
        body: object,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        """Send a complete JSON response."""
        self.send_body(status, json.dumps(body, indent=1).encode(), content_type, headers)

    def send_error_json(
        self, status: int, reason: str, detail: str, code: str, **headers: str
    ) -> None:
        """Send an error in the Atlas error shape."""
        body = {"error": status, "reason": reason, "detail": detail, "errorCode": code}
        self.send_json(status, body, {k.replace("_", "-"): v for k, v in headers.items()})

    def do_HEAD(self) -> None:
        """Answer HEAD like GET without a body (never counted as a download)."""
        self.do_GET()

    def do_GET(self) -> None:
        """Overridden by each listener."""
        raise NotImplementedError


class ApiHandler(Handler):
    """The restore-jobs API behind HTTP Digest auth."""

    def challenge(self, stale: bool = False) -> None:
        """Reply 401 with a fresh Digest challenge."""
        nonce = secrets.token_hex(16)
        with self.state.lock:
            self.state.nonces[nonce] = None
            while len(self.state.nonces) > 4096:
                self.state.nonces.popitem(last=False)
        self.send_error_json(
            401, "Unauthorized", "You are not authorized for this resource.",
            "NOT_ORG_GROUP_CREATOR", WWW_Authenticate=auth.challenge(nonce, stale=stale),
        )  # fmt: skip

    def authorized(self) -> bool:
        """Check the Digest response; send a challenge and return False if it is wrong."""
        p = auth.parse_digest(self.headers.get("Authorization", ""))
        if p is None:
            self.challenge()
            return False
        a = self.state.args
        ok = (
            auth.digest_matches(p, user=a.public_key, password=a.private_key, method=self.command)
            and p.get("realm") == auth.REALM
            and p.get("qop") == "auth"
            and p.get("algorithm", "MD5").upper() == "MD5"
            and p.get("uri") == self.path  # the hash must cover this very request
        )
        with self.state.lock:
            known = p.get("nonce") in self.state.nonces
        if ok and known:
            return True
        self.challenge(stale=ok)  # a good hash on a nonce we forgot only needs a retry
        return False

    def do_GET(self) -> None:
        """Route an API request."""
        if urlsplit(self.path).path.startswith(V2_ROOT + "/"):
            self.v2_get()
            return
        if not self.authorized():
            return
        url = urlsplit(self.path)
        parts = url.path.removeprefix(API_ROOT).strip("/").split("/")
        a = self.state.args
        if (
            not url.path.startswith(API_ROOT + "/")
            or len(parts) not in (5, 6)
            or [parts[0], parts[2], parts[4]] != ["groups", "clusters", "restoreJobs"]
        ):
            self.send_error_json(404, "Not Found", "No such resource.", "RESOURCE_NOT_FOUND")
        elif parts[1] != a.group:
            detail = f"No group with ID {parts[1]} exists."
            self.send_error_json(404, "Not Found", detail, "GROUP_NOT_FOUND")
        elif parts[3] != a.cluster:
            detail = f"No cluster named {parts[3]} exists in group {a.group}."
            self.send_error_json(404, "Not Found", detail, "CLUSTER_NOT_FOUND")
        elif len(parts) == 6:
            job = self.state.by_id.get(parts[5])
            if job is None:
                detail = f"No restore job with ID {parts[5]} exists in group {a.group}."
                self.send_error_json(404, "Not Found", detail, "RESTORE_JOB_NOT_FOUND")
            else:
                self.send_json(200, self.state.render(job))
        else:
            self.list_jobs(parse_qs(url.query))

    def list_jobs(self, query: dict[str, list[str]]) -> None:
        """One page of the (optionally batch-filtered) job list."""
        paging = page_of(query, self.state.args.page_size)
        if paging is None:
            detail = "pageNum and itemsPerPage must be positive integers."
            self.send_error_json(400, "Bad Request", detail, "INVALID_QUERY_PARAMETER")
            return
        page, per_page = paging
        batch = query.get("batchId", [None])[0]
        listed = [j for j in self.state.jobs if batch is None or j.batch_id == batch]
        start = (page - 1) * per_page
        params = {"batchId": batch} if batch is not None else {}
        links = page_links(self.state.list_url(), params, page, per_page, len(listed))
        results = [self.state.render(j) for j in listed[start : start + per_page]]
        self.send_json(200, jobs.page(results, links, len(listed)))

    # Atlas Admin API v2: the same keys by Digest, or a service account's bearer token.

    def send_v2_error(self, status: int, reason: str, detail: str, code: str) -> None:
        """Send an error in the Atlas error shape, as a versioned v2 response."""
        body = {"error": status, "reason": reason, "detail": detail, "errorCode": code}
        self.send_json(status, body, content_type=V2_TYPE)

    def v2_authorized(self) -> bool:
        """Check a bearer token, or else the Digest response; reply 401 if it is wrong."""
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return self.authorized()
        if self.state.token_valid(token.strip()):
            return True
        detail = "The access token is invalid or has expired."
        self.send_error_json(
            401, "Unauthorized", detail, "UNAUTHORIZED",
            WWW_Authenticate='Bearer realm="MongoDB Atlas", error="invalid_token"',
        )  # fmt: skip
        return False

    def v2_get(self) -> None:
        """Route a v2 request: .../groups/G/clusters/C/backup/restoreJobs[/JOB-ID]."""
        if not self.v2_authorized():
            return
        accept = ", ".join(self.headers.get_all("Accept") or [])
        if not accepts_v2(accept, self.state.now().date()):
            detail = (
                "Invalid Accept header: send application/vnd.atlas.YYYY-MM-DD+json with a "
                f"version date from {V2_FIRST_VERSION} to today."
            )
            self.send_error_json(406, "Not Acceptable", detail, "INVALID_VERSION_DATE")
            return
        url = urlsplit(self.path)
        parts = url.path.removeprefix(V2_ROOT).strip("/").split("/")
        a = self.state.args
        if len(parts) not in (6, 7) or [parts[0], parts[2], parts[4], parts[5]] != [
            "groups", "clusters", "backup", "restoreJobs"
        ]:  # fmt: skip
            self.send_v2_error(404, "Not Found", "No such resource.", "RESOURCE_NOT_FOUND")
        elif parts[1] != a.group:
            detail = f"No group with ID {parts[1]} exists."
            self.send_v2_error(404, "Not Found", detail, "GROUP_NOT_FOUND")
        elif parts[3] not in (a.v2_cluster, a.cluster):  # the legacy cluster has no v2 jobs
            detail = f"No cluster named {parts[3]} exists in group {a.group}."
            self.send_v2_error(404, "Not Found", detail, "CLUSTER_NOT_FOUND")
        elif len(parts) == 7:
            job = self.state.v2_by_id.get(parts[6]) if parts[3] == a.v2_cluster else None
            if job is None:
                detail = f"No restore job with ID {parts[6]} exists in cluster {parts[3]}."
                self.send_v2_error(404, "Not Found", detail, "RESTORE_JOB_NOT_FOUND")
            else:
                self.send_json(200, self.state.render_v2(job), content_type=V2_TYPE)
        else:
            self.v2_list_jobs(parts[3], parse_qs(url.query))

    def v2_list_jobs(self, cluster: str, query: dict[str, list[str]]) -> None:
        """One page of a cluster's v2 restore jobs."""
        paging = page_of(query, self.state.args.page_size)
        if paging is None:
            detail = "pageNum and itemsPerPage must be positive integers."
            self.send_v2_error(400, "Bad Request", detail, "INVALID_QUERY_PARAMETER")
            return
        page, per_page = paging
        listed = self.state.v2_jobs if cluster == self.state.args.v2_cluster else []
        start = (page - 1) * per_page
        links = page_links(self.state.v2_list_url(cluster), {}, page, per_page, len(listed))
        results = [self.state.render_v2(j) for j in listed[start : start + per_page]]
        self.send_json(200, jobs.page(results, links, len(listed)), content_type=V2_TYPE)

    def do_POST(self) -> None:
        """Issue access tokens at /api/oauth/token; refuse any other POST, as before."""
        if urlsplit(self.path).path != TOKEN_PATH:
            self.send_error(501, f"Unsupported method ({self.command!r})")
            return
        a = self.state.args
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= 1 << 16 or "Transfer-Encoding" in self.headers:
            self.close_connection = True  # a body we do not read must not be taken for a request
            self.send_oauth_error(400, "invalid_request", "Send a form body with Content-Length.")
            return
        form_body = self.rfile.read(length).decode("ascii", "replace")
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            decoded = ""
        client_id, colon, secret = decoded.partition(":")
        if not (
            scheme.lower() == "basic"
            and colon
            and hmac.compare_digest(client_id.encode(), a.client_id.encode())
            and hmac.compare_digest(secret.encode(), a.client_secret.encode())
        ):
            detail = "Client authentication failed: send Basic base64(client_id:client_secret)."
            self.send_oauth_error(
                401, "invalid_client", detail, WWW_Authenticate='Basic realm="MongoDB Atlas"'
            )
            return
        media = self.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        form = parse_qs(form_body) if media == "application/x-www-form-urlencoded" else {}
        grant = form.get("grant_type", [])
        if len(grant) != 1:
            detail = "Send grant_type=client_credentials as application/x-www-form-urlencoded."
            self.send_oauth_error(400, "invalid_request", detail)
        elif grant[0] != "client_credentials":
            detail = "Only the client_credentials grant is supported."
            self.send_oauth_error(400, "unsupported_grant_type", detail)
        else:
            body = {
                "access_token": self.state.issue_token(),
                "token_type": "Bearer",
                "expires_in": a.token_ttl,
            }
            self.send_json(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def send_oauth_error(self, status: int, error: str, description: str, **headers: str) -> None:
        """Send an OAuth 2.0 error (RFC 6749 section 5.2)."""
        body = {"error": error, "error_description": description}
        headers = {k.replace("_", "-"): v for k, v in headers.items()}
        self.send_json(status, body, {"Cache-Control": "no-store", **headers})


class PullHandler(Handler):
    """Serves archives with ranges, validators and download limits, plus /_stats."""

    def do_GET(self) -> None:
        """Serve /_stats or an archive."""
        state = self.state
        if self.path == "/_stats":
            with state.lock:
                stats = {
                    j.id: {
                        "fileName": j.file_name, "downloadsStarted": j.downloads,
                        "bytesSent": j.bytes_sent, "requests": j.requests,
                        "completed": j.completed, "deliveryStatus": state.delivery_status(j),
                    }
                    for j in state.jobs
                }  # fmt: skip
                total = sum(j.bytes_sent for j in state.jobs)
            self.send_json(200, {"jobs": stats, "totalBytesSent": total})
            return
        m = PULL_RE.match(urlsplit(self.path).path)
        job = state.by_id.get(m[1]) if m else None
        if (
            m is None
            or job is None
            or not hmac.compare_digest(m[2], job.token)
            or m[3] != job.file_name
            or state.phase(job) != "READY"  # no archive exists yet, whoever knows the path
        ):
            self.send_error_json(404, "Not Found", "No such file.", "NOT_FOUND")
            return
        with state.lock:
            job.requests += 1
        bearer = f"Bearer {job.auth_value}"
        if state.args.bearer and not hmac.compare_digest(
            self.headers.get("Authorization", ""), bearer
        ):
            detail = "A valid bearer token is required."
            self.send_error_json(
                401, "Unauthorized", detail, "UNAUTHORIZED", WWW_Authenticate="Bearer"
            )
            return
        if job.expired or job.path is None:
            self.send_error_json(410, "Gone", "This restore link has expired.", "EXPIRED")
            return
        self.serve_file(job)

    def range_not_satisfiable(self, total: int) -> None:
        """Reply 416 to a range that starts past the end."""
        detail = "Requested range not satisfiable."
        body = {"error": 416, "reason": "Range Not Satisfiable", "detail": detail}
        body["errorCode"] = "INVALID_RANGE"
        self.send_json(416, body, pull.unsatisfiable(total))

    def serve_file(self, job: Job, *, counted: bool = True) -> None:
        """Send the whole archive or one range of it (pull.byte_range); `counted` keeps the
        download statistics and applies --max-downloads."""
        state, total = self.state, job.size
        span = pull.byte_range(
            self.headers.get("Range"),
            self.headers.get("If-Range"),
            total,
            (job.etag, job.last_modified),
        )
        if span is None:
            self.range_not_satisfiable(total)
            return
        counts = counted and self.command == "GET" and span.start == 0
        with state.lock:
            limit = state.args.max_downloads
            if counts and limit and job.downloads >= limit:
                job.delivery_status = "MAX_DOWNLOADS_EXCEEDED"
            exceeded = job.delivery_status == "MAX_DOWNLOADS_EXCEEDED"
            if counts and not exceeded:
                job.downloads += 1
        if exceeded:
            detail = "The maximum number of downloads for this restore has been reached."
            self.send_error_json(410, "Gone", detail, "MAX_DOWNLOADS_EXCEEDED")
            return
        self.send_response(206 if span.partial else 200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(span.end - span.start))
        for key, value in pull.range_headers(span, job.etag, job.last_modified).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD" or job.path is None:
            return
        pos = span.start
        try:
            with job.path.open("rb") as f:
                f.seek(span.start)
                while pos < span.end and (block := f.read(min(CHUNK, span.end - pos))):
                    self.wfile.write(block)
                    pos += len(block)
                    if counted:
                        with state.lock:
                            job.bytes_sent += len(block)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client went away mid-body; that is allowed
            return
        if pos != span.end:
            self.close_connection = True  # the file shrank under us: a short body must end it
        elif pos == total and counted:
            with state.lock:
                job.completed += 1  # the last byte went out: hashes may now be published


class DownloadHandler(PullHandler):
    """The v2 download links, on an origin of their own: pre-signed URLs checked the way S3
    checks them (signature, expiry, no other credentials), errors in S3's XML shape. Ranges and
    validators are the pull host's; nothing is counted."""

    server_version = "fake-s3/1.0"

    def send_s3_error(self, status: int, code: str, message: str, **headers: str) -> None:
        """Send an error in S3's shape."""
        extra = {key.replace("_", "-"): value for key, value in headers.items()}
        self.send_body(status, pull.s3_error(code, message), "application/xml", extra)

    def range_not_satisfiable(self, total: int) -> None:
        """Reply 416 as S3 does."""
        self.send_s3_error(416, "InvalidRange", "The requested range is not satisfiable",
                           Content_Range=f"bytes */{total}")  # fmt: skip

    def do_GET(self) -> None:
        """Check the link's signature and expiry, then serve its archive."""
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        headers = {key.lower(): value for key, value in self.headers.items()}
        refused = pull.presigned_refusal(
            headers, query, lambda q: self.state.signed(url.path, q), required=AMZ_PARAMS
        )
        if refused is not None:
            self.send_s3_error(*refused)
            return
        # Signed, hence written by us: the date and lifetime parse.
        signed = dt.datetime.strptime(query["X-Amz-Date"], AMZ_DATE).replace(tzinfo=dt.UTC)
        if self.state.now() > signed + dt.timedelta(seconds=int(query["X-Amz-Expires"])):
            self.send_s3_error(403, "AccessDenied", "Request has expired")
            return
        found = self.state.downloads.get(url.path)
        if found is None or found[1].path is None or not self.state.v2_finished(found[0]):
            self.send_s3_error(404, "NoSuchKey", "The specified key does not exist.")
            return
        self.serve_file(found[1], counted=False)


def describe(archives: list[Job]) -> None:
    """Fill in the hash, size and mtime of the archives that exist."""

    def one(job: Job) -> None:
        assert job.path is not None
        job.sha1, st = sha1_of(job.path), job.path.stat()
        job.size, job.mtime = st.st_size, st.st_mtime

    # hashlib drops the GIL on big buffers, so hashing GiB archives in parallel pays off.
    with concurrent.futures.ThreadPoolExecutor() as pool:
        list(pool.map(one, [j for j in archives if j.path is not None]))


def build_jobs(args: argparse.Namespace) -> list[Job]:
    """Create or reuse the archives and describe the jobs that serve them."""
    archives: Path = args.archives
    archives.mkdir(parents=True, exist_ok=True)
    c, batch, group = args.cluster, args.batch, args.group
    members = [f"shard-{i}" for i in range(args.shards)] + ["config"]
    out = []
    for member in members:
        rs_name, path = member_archive(
            archives, group=group, cluster=c, member=member, epoch=SNAPSHOT_EPOCH, size=args.size
        )
        out.append(Job(hex_id("job", batch, path.name), batch, path.name, path, rs_name))
    # Another batch of the same cluster, from another snapshot (so another restore point): a
    # client that forgets to filter downloads this too.
    other_batch = hex_id("batch", batch)
    rs_name, path = member_archive(
        archives, group=group, cluster=c, member="shard-0", epoch=OTHER_EPOCH, size=64 << 10
    )
    other = Job(hex_id("job", other_batch, path.name), other_batch, path.name, path, rs_name)
    out.insert(min(2, len(out)), other)  # mid-list, so it lands on a later page unfiltered
    if args.expired_job:
        rs_name = f"{c}-shard-{args.shards}"
        name = f"{rs_name}-{stamp(SNAPSHOT_EPOCH)}.tar.gz"
        expired = Job(hex_id("job", batch, name), batch, name, None, rs_name, expired=True)
        expired.delivery_status = "EXPIRED"
        out.append(expired)

    # The requested batch's jobs become ready one after another over --ready-after seconds.
    preparing = [j for j in out if j.batch_id == batch and not j.expired]
    for i, job in enumerate(preparing):
        job.ready_at = args.ready_after * (i + 1) / len(preparing)

    describe(out)
    return out


def build_v2_jobs(args: argparse.Namespace) -> list[V2Job]:
    """Create or reuse the v2 cluster's archives and describe its restore jobs (none unless
    --v2-shards or --v2-replica-set asks for a download job)."""
    if not (args.v2_shards or args.v2_replica_set):
        return []
    directory: Path = args.archives / "v2"  # apart from the legacy ones: names may coincide
    directory.mkdir(parents=True, exist_ok=True)
    c, group = args.v2_cluster, args.group

    def archive_of(job_id: str, member: str, epoch: int, *, sharded: bool) -> Job:
        rs_name, path = member_archive(
            directory, group=group, cluster=c, member=member, epoch=epoch, size=args.size,
            sharded=sharded,
        )  # fmt: skip
        return Job(hex_id("archive", job_id, rs_name), "", f"{rs_name}.tar.gz", path, rs_name)

    out = []
    if args.v2_shards:
        job_id = hex_id("v2job", group, c, "sharded", stamp(SNAPSHOT_EPOCH))
        members = [f"shard-{i}" for i in range(args.v2_shards)] + ["config-0"]
        archives = [archive_of(job_id, m, SNAPSHOT_EPOCH, sharded=True) for m in members]
        out.append(V2Job(job_id, "sharded", SNAPSHOT_EPOCH, archives))
    if args.v2_replica_set:  # another snapshot (of the cluster before it was sharded, say)
        job_id = hex_id("v2job", group, c, "replicaSet", stamp(OTHER_EPOCH))
        archives = [archive_of(job_id, "shard-0", OTHER_EPOCH, sharded=False)]
        out.append(V2Job(job_id, "replicaSet", OTHER_EPOCH, archives))
    for job in out:
        job.ready_at = args.ready_after  # triggered at the start, finished after SECONDS
    describe([a for job in out for a in job.archives])
    # Jobs there is nothing to download from: an automated restore of yesterday, on the first
    # page; and a download whose links expired days ago but are still listed.
    automated = V2Job(hex_id("v2job", group, c, "automated"), out[0].kind, OTHER_EPOCH, [])
    automated.delivery_type, automated.ready_at = "automated", -86_400
    out.insert(1, automated)
    if args.expired_job:
        job_id = hex_id("v2job", group, c, "expired", stamp(EXPIRED_EPOCH))
        archives = [
            Job(hex_id("archive", job_id, a.replica_set), "", a.file_name, None, a.replica_set)
            for a in out[0].archives
        ]
        expired = V2Job(job_id, out[0].kind, EXPIRED_EPOCH, archives, expired=True)
        expired.ready_at = -3 * 86_400
        out.append(expired)
    return out


def parse_args(argv: list[str] | None, description: str | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=description or __doc__)
    p.add_argument("--state-dir", type=Path, required=True, help="where server.json goes")
    p.add_argument("--api-port", type=int, default=0)
    p.add_argument("--pull-port", type=int, default=0)
    p.add_argument("--group", default=DEFAULT_GROUP)
    p.add_argument("--cluster", default=CLUSTER)
    p.add_argument("--batch", default=BATCH)
    p.add_argument("--shards", type=int, default=3)
    p.add_argument("--size", type=int, default=4 << 20, help="bytes per archive")
    p.add_argument("--page-size", type=int, default=2, help="default and max itemsPerPage")
    p.add_argument("--public-key", default="demo-public")
    p.add_argument("--private-key", default="demo-private-key")
    p.add_argument("--pull-base", help="serve no archives; put this base in delivery URLs")
    p.add_argument("--archives", type=Path, help="archive directory (default STATE/archives)")
    p.add_argument("--late-hashes", action="store_true", help="publish hashes after download")
    p.add_argument(
        "--bearer", action="store_true",
        help="Ops Manager's link: urlV2 + authHeader/authBearer/authValue, a bearer token",
    )  # fmt: skip
    p.add_argument("--max-downloads", type=int, default=0, help="0 = unlimited")
    p.add_argument(
        "--ready-after", type=float, default=0.0, metavar="SECONDS",
        help="the batch is triggered at start; its jobs get ready one by one over SECONDS",
    )  # fmt: skip
    p.add_argument("--expired-job", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--verbose", action="store_true", help="log requests (tokens redacted)")
    v2 = p.add_argument_group(
        "Atlas Admin API v2 (Cloud Backup download restores)",
        f"Served at {V2_ROOT} on the API port, to Digest (the keys above) or a bearer token from "
        f"POST {TOKEN_PATH}; the pre-signed download links have an origin of their own. --size, "
        "--page-size, --ready-after and --expired-job apply too.",
    )
    v2.add_argument(
        "--v2-shards", type=int, default=0, metavar="N",
        help="one sharded download job: N shards + config server (default 0: none)",
    )  # fmt: skip
    v2.add_argument("--v2-replica-set", action="store_true", help="one replica set download job")
    v2.add_argument("--v2-cluster", default=CLUSTER_V2, metavar="NAME", help="(default Cluster1)")
    v2.add_argument("--download-port", type=int, default=0, metavar="PORT")
    v2.add_argument("--client-id", default=DEFAULT_CLIENT_ID, help="service account client id")
    v2.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET, metavar="SECRET")
    v2.add_argument(
        "--token-ttl", type=int, default=3600, metavar="SECONDS",
        help="access token lifetime (default 3600)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.shards < 1 or args.size < 0 or args.page_size < 1 or args.max_downloads < 0:
        p.error("--shards and --page-size must be >= 1; --size, --max-downloads >= 0")
    if args.v2_shards < 0 or args.token_ttl < 1:
        p.error("--v2-shards must be >= 0; --token-ttl >= 1")
    if not CLUSTER_NAME_RE.match(args.v2_cluster):
        p.error("--v2-cluster must be a cluster name: letters, digits and hyphens")
    if not (math.isfinite(args.ready_after) and args.ready_after >= 0):
        p.error("--ready-after must be a finite number of seconds >= 0")
    args.archives = args.archives or args.state_dir / "archives"
    args.pull_base = args.pull_base.rstrip("/") if args.pull_base else None
    return args


def server_info(state: State) -> dict[str, Any]:
    """What server.json tells the demo, the benchmark and the end-to-end tests."""
    args = state.args
    return {
        "apiBase": state.api_base, "pullBase": state.pull_base, "group": args.group,
        "cluster": args.cluster, "batch": args.batch, "publicKey": args.public_key,
        "privateKey": args.private_key, "pid": os.getpid(), "readyAfter": args.ready_after,
        "jobs": [
            # readyAt (seconds after start) and pullUrl let tests probe a job before it is ready.
            {"id": j.id, "fileName": j.file_name, "replicaSet": j.replica_set, "sha1": j.sha1,
             "size": j.size, "readyAt": j.ready_at, "pullUrl": state.pull_url(j)}
            for j in state.jobs
            if j.batch_id == args.batch and not j.expired
        ],
        "expiredJobs": [
            {"id": j.id, "fileName": j.file_name, "replicaSet": j.replica_set}
            for j in state.jobs
            if j.expired
        ],
        "otherBatchJobs": [
            {"id": j.id, "batchId": j.batch_id, "fileName": j.file_name,
             "replicaSet": j.replica_set, "sha1": j.sha1}
            for j in state.jobs
            if j.batch_id != args.batch
        ],
        # Atlas Admin API v2: its cluster's download jobs (sharded: one archive per replica
        # set), the service account, and where the download links point (null: no v2 jobs).
        "v2Base": state.v2_base, "v2Cluster": args.v2_cluster,
        "clientId": args.client_id, "clientSecret": args.client_secret,
        "tokenTtl": args.token_ttl, "downloadBase": state.download_base or None,
        "v2Jobs": [
            {"id": j.id, "kind": j.kind, "readyAt": j.ready_at, "archives": [
                {"replicaSet": a.replica_set, "fileName": a.file_name, "sha1": a.sha1,
                 "size": a.size, "downloadUrl": state.download_url(j, a)}
                for a in j.archives
            ]}
            for j in state.v2_jobs
            if j.delivery_type == "download" and not j.expired
        ],
        "v2ExpiredJobs": [{"id": j.id, "kind": j.kind} for j in state.v2_jobs if j.expired],
        "v2AutomatedJobs": [
            {"id": j.id} for j in state.v2_jobs if j.delivery_type == "automated"
        ],
    }  # fmt: skip


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    """Generate data, serve every listener, write server.json, wait for a signal."""
    args = parse_args(argv, description)
    state_dir: Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    info_path = state_dir / "server.json"
    # Whoever waits for server.json must not read a previous run's while archives generate.
    info_path.unlink(missing_ok=True)
    # Until we serve, SIGTERM just exits, but through write_archive's cleanup of its temp file.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    state = State(args, build_jobs(args), build_v2_jobs(args))
    servers = [Server(ApiHandler, state, args.api_port)]
    if args.pull_base is None:
        servers.append(Server(PullHandler, state, args.pull_port))
    state.api_base = f"http://127.0.0.1:{servers[0].server_address[1]}{API_ROOT}"
    state.pull_base = args.pull_base or f"http://127.0.0.1:{servers[-1].server_address[1]}"
    state.v2_base = f"http://127.0.0.1:{servers[0].server_address[1]}{V2_ROOT}"
    if state.v2_jobs:
        servers.append(Server(DownloadHandler, state, args.download_port))
        state.download_base = f"http://127.0.0.1:{servers[-1].server_address[1]}"
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    for server in servers:
        # A short poll interval is what bounds how long shutdown() waits on SIGTERM.
        threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
    tmp = info_path.with_name(f".server.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(server_info(state), indent=2) + "\n")
    tmp.replace(info_path)
    print(
        f"fake-atlas: API at {state.api_base} "
        f"(group {args.group}, cluster {args.cluster}, batch {args.batch})",
        flush=True,
    )
    if state.v2_jobs:
        print(
            f"fake-atlas: v2 API at {state.v2_base} (cluster {args.v2_cluster}, "
            f"{len(state.v2_jobs)} jobs), download links at {state.download_base}",
            flush=True,
        )
    while not stop.wait(0.2):  # a timed wait keeps signal delivery prompt
        pass
    for server in servers:
        server.shutdown()
        server.server_close()
    info_path.unlink(missing_ok=True)
    return 0
