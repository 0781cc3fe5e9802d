#!/usr/bin/env python3
"""A local, stdlib-only stand-in for the MongoDB restore-jobs API and its pull host.

With --v2-shards or --v2-replica-set, also for Atlas Admin API v2 download restores.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime as dt
import email.utils
import hashlib
import hmac
import io
import json
import math
import os
import re
import secrets
import signal
import sys
import tarfile
import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import parse_qs, urlencode, urlsplit

API_ROOT = "/api/atlas/v1.0"
V2_ROOT = "/api/atlas/v2"
V2_TYPE = "application/vnd.atlas.2023-01-01+json"  # the version of the restoreJobs resource
V2_FIRST_VERSION = dt.date(2023, 1, 1)
V2_ACCEPT_RE = re.compile(r"^application/vnd\.atlas\.(\d{4}-\d{2}-\d{2})\+json$")
TOKEN_PATH = "/api/oauth/token"
DEFAULT_CLIENT_ID = "mdb_sa_id_demo"
DEFAULT_CLIENT_SECRET = "mdb_sa_sk_demo-secret"
DEFAULT_GROUP = "5f0c0ffee0000000000000aa"
GROUP_NAME = "Project0"  # the group's name, as restoreInfo.txt gives it
MONGODB_VERSION = "7.0.12"
WIREDTIGER_VERSION = "11.2.0"
INFO_NAME = "restoreInfo.txt"
REALM = "MMS Public API"
CHUNK = 1 << 20
# A fixed snapshot time keeps archive names stable across runs, so big files are reused.
SNAPSHOT_EPOCH = 1_700_000_000
OTHER_EPOCH = SNAPSHOT_EPOCH - 86_400
EXPIRED_EPOCH = SNAPSHOT_EPOCH - 3 * 86_400
PULL_RE = re.compile(r"^/backup/restore/v2/pull/([^/]+)/([^/]+)/([^/]+)$")
DIGEST_RE = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]*))')
RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
CLUSTER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
# Pre-signed download links, shaped like S3's query-string authentication (SigV4).
AMZ_ALGORITHM = "AWS4-HMAC-SHA256"
AMZ_KEY_ID = "AKIAFAKEATLAS0000000"
AMZ_DATE = "%Y%m%dT%H%M%SZ"
LINK_HOURS = 2  # how long a finished restore's download links (and the job) stay valid
# What MongoDB's own example lists for a link without a download limit (Java's Integer.MAX_VALUE).
UNLIMITED_DOWNLOADS = 2_147_483_647


def iso(when: dt.datetime) -> str:
    """Format a UTC datetime the way the API does."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hex_id(*parts: str) -> str:
    """Derive a stable 24-hex-char id, so job ids survive a server restart like real ones."""
    return hashlib.sha1(":".join(parts).encode()).hexdigest()[:24]


def md5(text: str) -> str:
    """Hex MD5, the only hash RFC 2617 Digest with algorithm=MD5 knows."""
    return hashlib.md5(text.encode()).hexdigest()


def stamp(epoch: int) -> str:
    """Snapshot-like stamp used in archive file names."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def restore_info(
    *, group: str, cluster: str, replica_set: str, role: str | None, epoch: int
) -> bytes:
    """restoreInfo.txt as MongoDB documents it: one `Key: value` line each, and the mongod
    startup options (a JSON document over several lines) the restore must be started with.
    A `role` of None is a replica set cluster's: its options have no sharding section."""
    when = dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%a %b %d %H:%M:%S GMT %Y")
    port = 27017 if role is None else 27019 if role == "configsvr" else 27018
    options: dict[str, Any] = {
        "net": {"bindIp": "0.0.0.0", "port": port},
        "replication": {"replSetName": replica_set},
        "sharding": {"clusterRole": role},
        "storage": {"dbPath": "/data/db", "engine": "wiredTiger"},
    }
    if role is None:
        del options["sharding"]
    return (
        "Restore Information\n"
        f"Group Name: {GROUP_NAME}\n"
        f"Replica Set: {replica_set}\n"
        f"Cluster Id: {hex_id('cluster', group, cluster)}\n"  # the API's clusterId of the job
        f"Snapshot timestamp: {when}\n"
        f"Restore timestamp: {when} ({epoch}, 1)\n"
        f"Last Oplog Applied: {when} ({epoch}, 1)\n"
        f"MongoDB Version: {MONGODB_VERSION}\n"
        "Storage engine type: wiredTiger\n"
        f"Startup Options: {json.dumps(options, indent=2)}\n"
    ).encode()


def _member(name: str, epoch: int, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.size, entry.mtime = size, epoch
    entry.uname = entry.gname = "mongod"
    entry.uid = entry.gid = 999
    if directory:
        entry.type, entry.mode = tarfile.DIRTYPE, 0o700
    else:
        entry.mode = 0o600
    return entry


def _head(replica_set: str, info: bytes, epoch: int) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The small members every archive starts with, in order; the data files follow them."""
    wiredtiger = f"WiredTiger\nWiredTiger {WIREDTIGER_VERSION}: (fake-atlas)\n".encode()
    return [
        (_member(replica_set, epoch, directory=True), b""),
        (_member(f"{replica_set}/{INFO_NAME}", epoch, len(info)), info),
        (_member(f"{replica_set}/WiredTiger", epoch, len(wiredtiger)), wiredtiger),
    ]


def _shape(member: tarfile.TarInfo) -> tuple[str, bytes, int]:
    return member.name, member.type, member.size


def _is_current(path: Path, head: list[tuple[tarfile.TarInfo, bytes]]) -> bool:
    """True when the archive at `path` starts with `head`: the layout and restoreInfo.txt this
    version writes (an archive of an older layout is made again). Reads a few KiB, not the file."""
    try:
        with tarfile.open(path, "r|gz") as tar:
            for want, data in head:
                got = tar.next()
                if got is None or _shape(got) != _shape(want):
                    return False
                if data and (f := tar.extractfile(got)) is not None and f.read() != data:
                    return False
    except (OSError, EOFError, tarfile.TarError, zlib.error):
        return False
    return True


def make_archive(path: Path, *, replica_set: str, info: bytes, epoch: int, size: int) -> None:
    """Write a restore tar.gz of about `size` bytes, unless `path` already holds one like it.

    Its layout is a real restore archive's: one top-level directory named after the replica
    set, holding restoreInfo.txt and WiredTiger files; the data files are random bytes, so the
    archive is mostly incompressible, as snappy-compressed WiredTiger files are.
    """
    head = _head(replica_set, info, epoch)
    if path.exists() and _is_current(path, head):
        return
    print(f"fake-atlas: generating {path.name} ({size} bytes)", file=sys.stderr, flush=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # The head, two more headers and the end-of-archive blocks; the data files fill the rest.
    overhead = sum(512 + -(-m.size // 512) * 512 for m, _ in head) + 2 * 512 + 1024
    data_len = max(0, size - overhead) // 512 * 512
    index_len = min(data_len // 16, 16 * CHUNK) // 512 * 512  # an index: a sliver of the data
    ident = int(hex_id("ident", replica_set), 16) % 10**19  # WiredTiger's idents are numbers
    data = [
        _member(f"{replica_set}/collection-0-{ident}.wt", epoch, data_len - index_len),
        _member(f"{replica_set}/index-1-{ident}.wt", epoch, index_len),
    ]
    # Level 0 (stored deflate blocks): random data does not compress anyway, and level 1
    # would make a 1 GiB bench archive take half a minute instead of a few seconds.
    try:
        # Naming the final path keeps the temp name out of the gzip header.
        with (
            tmp.open("wb") as raw,
            Path("/dev/urandom").open("rb") as rnd,
            tarfile.open(path, "w:gz", raw, compresslevel=0) as tar,
        ):
            # tarfile copies 16 KiB at a time by default; its typeshed stub lacks the knob.
            tar.copybufsize = CHUNK  # type: ignore[attr-defined]
            for member, content in head:
                tar.addfile(member, io.BytesIO(content) if member.isfile() else None)
            for member in data:
                tar.addfile(member, cast(BinaryIO, rnd))  # tarfile copies in CHUNK blocks
        # Rename last so an interrupted run never leaves a half archive that later runs reuse.
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
    role = None if not sharded else "configsvr" if member.startswith("config") else "shardsvr"
    info = restore_info(
        group=group, cluster=cluster, replica_set=replica_set, role=role, epoch=epoch
    )
    path = directory / f"{replica_set}-{stamp(epoch)}.tar.gz"
    make_archive(path, replica_set=replica_set, info=info, epoch=epoch, size=size)
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


def accepts_v2(accept: str) -> bool:
    """Whether an Accept header asks for a v2 version: application/vnd.atlas.YYYY-MM-DD+json
    with a real date from the first version to today."""
    today = dt.datetime.now(dt.UTC).date()
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


class State:
    """Everything the listeners share; `lock` guards counters, delivery status and tokens."""

    def __init__(
        self, args: argparse.Namespace, jobs: list[Job], v2_jobs: list[V2Job] | None = None
    ) -> None:
        self.args, self.jobs = args, jobs
        self.by_id = {job.id: job for job in jobs}
        self.lock = threading.Lock()
        self.nonces: OrderedDict[str, None] = OrderedDict()
        self.api_base = ""
        self.pull_base = ""
        self.v2_jobs = v2_jobs or []
        self.v2_by_id = {job.id: job for job in self.v2_jobs}
        # Download link path -> (job, archive); the links are signed with a key of this run.
        self.downloads = {
            self.download_path(job, archive): (job, archive)
            for job in self.v2_jobs
            for archive in job.archives
        }
        self.download_key = secrets.token_bytes(32)
        self.tokens: dict[str, float] = {}  # access token -> when it expires (monotonic)
        self.v2_base = ""
        self.download_base = ""
        # The restore is triggered now: job lifecycles run on the monotonic clock from here,
        # and wall-clock times (created, expires) are derived from the same moment.
        self.started = time.monotonic()
        self.started_at = dt.datetime.now(dt.UTC)
        triggered = args.ready_after > 0
        self.created = self.started_at - dt.timedelta(minutes=0 if triggered else 20)

    def phase(self, job: Job) -> str:
        """Where the job is in its lifecycle: NOT_STARTED, IN_PROGRESS (half-way) or READY."""
        elapsed = time.monotonic() - self.started
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
        """The job as the API returns it, shaped by where it is in its lifecycle.

        Until it is ready a job has no link (no url, no urlV2 or auth fields), no expires
        and no hashes, as the real API shows it while a restore runs.
        """
        a = self.args
        phase = self.phase(job)
        ready = phase == "READY"
        with self.lock:
            status, downloaded = self.delivery_status(job, phase), job.completed > 0
        epoch = OTHER_EPOCH if job.batch_id != a.batch else SNAPSHOT_EPOCH
        delivery: dict[str, Any] = {
            "methodName": "HTTP",
            "statusName": status,
            "expirationHours": 2,
            "maxDownloads": a.max_downloads or UNLIMITED_DOWNLOADS,
        }
        if ready:
            if job.expired:
                expires = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
            else:
                expires = self.started_at + dt.timedelta(seconds=job.ready_at, hours=2)
            delivery["expires"] = iso(expires)
            if a.bearer:
                delivery.update(urlV2=self.pull_url(job), authHeader="Authorization")
                delivery.update(authBearer="Bearer", authValue=job.auth_value)
            else:
                delivery["url"] = self.pull_url(job)
        hidden = not ready or job.expired or (a.late_hashes and not downloaded)
        hashes = [{"fileName": job.file_name, "hash": job.sha1, "typeName": "SHA1"}]
        return {
            "id": job.id,
            "batchId": job.batch_id,
            "clusterId": hex_id("cluster", a.group, a.cluster),
            "clusterName": a.cluster,
            "groupId": a.group,
            "snapshotId": hex_id("snapshot", job.batch_id, job.file_name),
            "created": iso(self.created),
            "timestamp": {"date": iso(dt.datetime.fromtimestamp(epoch, dt.UTC)), "increment": 1},
            "pointInTime": False,
            "encryptionEnabled": False,
            "links": [{"rel": "self", "href": f"{self.list_url()}/{job.id}"}],
            "statusName": "FINISHED" if ready else "IN_PROGRESS",
            "delivery": delivery,
            "hashes": [] if hidden else hashes,
        }

    def list_url(self) -> str:
        """Absolute URL of the restore-jobs collection."""
        return f"{self.api_base}/groups/{self.args.group}/clusters/{self.args.cluster}/restoreJobs"

    def v2_list_url(self, cluster: str) -> str:
        """Absolute URL of a cluster's v2 restore-jobs collection."""
        return f"{self.v2_base}/groups/{self.args.group}/clusters/{cluster}/backup/restoreJobs"

    def v2_finished(self, job: V2Job) -> bool:
        """Whether a v2 job has finished (its download links exist)."""
        return time.monotonic() - self.started >= job.ready_at

    @staticmethod
    def download_path(job: V2Job, archive: Job) -> str:
        """The path of an archive's download link."""
        return f"/restore/{job.id}/{archive.file_name}"

    def sign(self, path: str, credential: str, amz_date: str, expires: str) -> str:
        """The X-Amz-Signature of a download link: an HMAC of what the link may not change."""
        message = "\n".join([AMZ_ALGORITHM, path, credential, amz_date, expires]).encode()
        return hmac.new(self.download_key, message, hashlib.sha256).hexdigest()

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

    def render_v2(self, job: V2Job) -> dict[str, Any]:
        """The job as the v2 API returns it (a DiskBackupSnapshotRestoreJob).

        Until it has finished a job has no finishedAt and no URLs: a sharded job's components
        lack downloadUrl and a replica set's deliveryUrl is empty. There are no hashes.
        """
        finished = self.started_at + dt.timedelta(seconds=job.ready_at)
        expires = finished + dt.timedelta(hours=LINK_HOURS)
        created = self.created if job.ready_at >= 0 else finished - dt.timedelta(minutes=20)
        href = f"{self.v2_list_url(self.args.v2_cluster)}/{job.id}"
        body: dict[str, Any] = {
            "id": job.id,
            "snapshotId": hex_id("snapshot", job.id),
            "deliveryType": job.delivery_type,
            "cancelled": False,
            "expired": job.expired,
            "failed": False,
            "createdAt": iso(created),
            "timestamp": iso(dt.datetime.fromtimestamp(job.epoch, dt.UTC)),
            "links": [{"href": href, "rel": "self"}],
        }
        done = self.v2_finished(job)
        if done:
            body["finishedAt"] = iso(finished)
        if job.delivery_type != "download":
            body.update(targetClusterName=f"{self.args.v2_cluster}-restored")
            body.update(targetGroupId=self.args.group)
            return body
        body["expiresAt"] = iso(expires)
        if dt.datetime.now(dt.UTC) > expires:
            body["expired"] = True  # a run longer than LINK_HOURS outlives its links
        urls = [self.download_url(job, archive) for archive in job.archives] if done else []
        if job.kind == "replicaSet":
            body["deliveryUrl"] = urls
            return body
        body["components"] = []
        for i, archive in enumerate(job.archives):
            component: dict[str, Any] = {"replicaSetName": archive.replica_set}
            if urls:
                component["downloadUrl"] = urls[i]
            component["privateDownloadDeliveryUrls"] = []
            body["components"].append(component)
        return body

    def token_valid(self, token: str) -> bool:
        """Whether `token` is an access token this server issued that has not expired."""
        with self.lock:
            expires = self.tokens.get(token)
        return expires is not None and time.monotonic() < expires

    def issue_token(self) -> str:
        """A new access token, valid for --token-ttl seconds; forget the expired ones."""
        token, now = secrets.token_urlsafe(32), time.monotonic()
        with self.lock:
            for old in [t for t, expires in self.tokens.items() if expires <= now]:
                del self.tokens[old]
            self.tokens[token] = now + self.args.token_ttl
        return token


class Server(ThreadingHTTPServer):
    """A threading HTTP server that carries the shared state."""

    daemon_threads = True

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

    def send_json(
        self,
        status: int,
        body: object,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        """Send a complete JSON response."""
        data = json.dumps(body, indent=1).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

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
        header = (
            f'Digest realm="{REALM}", domain="", nonce="{nonce}", algorithm=MD5, '
            f'qop="auth", stale={"true" if stale else "false"}'
        )
        self.send_error_json(
            401, "Unauthorized", "You are not authorized for this resource.",
            "NOT_ORG_GROUP_CREATOR", WWW_Authenticate=header,
        )  # fmt: skip

    def authorized(self) -> bool:
        """Check the Digest response; send a challenge and return False if it is wrong."""
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("digest "):
            self.challenge()
            return False
        p = {m[1].lower(): m[2] or m[3] for m in DIGEST_RE.finditer(header[7:])}
        a = self.state.args
        ha1 = md5(f"{a.public_key}:{REALM}:{a.private_key}")
        ha2 = md5(f"{self.command}:{p.get('uri', '')}")
        fields = [p.get(k, "") for k in ("nonce", "nc", "cnonce", "qop")]
        expected = md5(":".join([ha1, *fields, ha2]))
        ok = (
            p.get("username") == a.public_key
            and p.get("realm") == REALM
            and p.get("qop") == "auth"
            and p.get("algorithm", "MD5").upper() == "MD5"
            and p.get("uri") == self.path  # the hash must cover this very request
            and hmac.compare_digest(expected, p.get("response", ""))
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
        jobs = [j for j in self.state.jobs if batch is None or j.batch_id == batch]
        start = (page - 1) * per_page
        params = {"batchId": batch} if batch is not None else {}
        links = page_links(self.state.list_url(), params, page, per_page, len(jobs))
        results = [self.state.render(j) for j in jobs[start : start + per_page]]
        self.send_json(200, {"results": results, "totalCount": len(jobs), "links": links})

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
        if not accepts_v2(", ".join(self.headers.get_all("Accept") or [])):
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
        jobs = self.state.v2_jobs if cluster == self.state.args.v2_cluster else []
        start = (page - 1) * per_page
        links = page_links(self.state.v2_list_url(cluster), {}, page, per_page, len(jobs))
        results = [self.state.render_v2(j) for j in jobs[start : start + per_page]]
        body = {"results": results, "totalCount": len(jobs), "links": links}
        self.send_json(200, body, content_type=V2_TYPE)

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
                jobs = {
                    j.id: {
                        "fileName": j.file_name, "downloadsStarted": j.downloads,
                        "bytesSent": j.bytes_sent, "requests": j.requests,
                        "completed": j.completed, "deliveryStatus": state.delivery_status(j),
                    }
                    for j in state.jobs
                }  # fmt: skip
                total = sum(j.bytes_sent for j in state.jobs)
            self.send_json(200, {"jobs": jobs, "totalBytesSent": total})
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

    def byte_range(self, job: Job) -> tuple[int, int, bool] | None:
        """The inclusive (start, end) to send and whether it is a 206; None if unsatisfiable."""
        header = self.headers.get("Range")
        match = RANGE_RE.match(header.replace(" ", "")) if header else None
        if_range = self.headers.get("If-Range")
        etag, last_modified = f'"{job.sha1}"', email.utils.formatdate(job.mtime, usegmt=True)
        # A stale validator means the client's partial file is another version: send it all.
        # Multi-range and malformed headers are ignored too, as RFC 7233 allows.
        if match is None or (if_range is not None and if_range not in (etag, last_modified)):
            return 0, job.size - 1, False
        first, last = match[1], match[2]
        if not first:  # suffix range: the last N bytes
            if not last or int(last) == 0:
                return None
            return max(0, job.size - int(last)), job.size - 1, True
        start = int(first)
        end = min(int(last), job.size - 1) if last else job.size - 1
        if start >= job.size or end < start:
            return None
        return start, end, True

    def range_not_satisfiable(self, total: int) -> None:
        """Reply 416 to a range that starts past the end."""
        detail = "Requested range not satisfiable."
        self.send_error_json(416, "Range Not Satisfiable", detail, "INVALID_RANGE",
                             Content_Range=f"bytes */{total}")  # fmt: skip

    def serve_file(self, job: Job, *, counted: bool = True) -> None:
        """Send the whole archive or one range of it; `counted` keeps the download statistics
        and applies --max-downloads."""
        state, total = self.state, job.size
        span = self.byte_range(job)
        if span is None:
            self.range_not_satisfiable(total)
            return
        start, end, partial = span
        counts = counted and self.command == "GET" and start == 0
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
        self.send_response(206 if partial else 200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("ETag", f'"{job.sha1}"')
        self.send_header("Last-Modified", email.utils.formatdate(job.mtime, usegmt=True))
        self.send_header("Accept-Ranges", "bytes")
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        self.end_headers()
        if self.command == "HEAD" or job.path is None:
            return
        pos = start
        try:
            with job.path.open("rb") as f:
                f.seek(start)
                while pos <= end and (block := f.read(min(CHUNK, end + 1 - pos))):
                    self.wfile.write(block)
                    pos += len(block)
                    if counted:
                        with state.lock:
                            job.bytes_sent += len(block)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client went away mid-body; that is allowed
            return
        if pos != end + 1:
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
        request_id = secrets.token_hex(8).upper()
        data = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def range_not_satisfiable(self, total: int) -> None:
        """Reply 416 as S3 does."""
        self.send_s3_error(416, "InvalidRange", "The requested range is not satisfiable",
                           Content_Range=f"bytes */{total}")  # fmt: skip

    def do_GET(self) -> None:
        """Check the link's signature and expiry, then serve its archive."""
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        if "Authorization" in self.headers:
            message = (
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                "Signature query string parameter or the Authorization header should be specified"
            )
            self.send_s3_error(400, "InvalidArgument", message)
            return
        wanted = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires")
        if any(key not in query for key in (*wanted, "X-Amz-Signature")):
            message = f"Query-string authentication requires {', '.join(wanted)} and a signature"
            self.send_s3_error(403, "AccessDenied", message)
            return
        expected = self.state.sign(
            url.path, query["X-Amz-Credential"], query["X-Amz-Date"], query["X-Amz-Expires"]
        )
        if query["X-Amz-Algorithm"] != AMZ_ALGORITHM or not hmac.compare_digest(
            expected.encode(), query["X-Amz-Signature"].encode()
        ):
            message = (
                "The request signature we calculated does not match the signature you "
                "provided. Check your key and signing method."
            )
            self.send_s3_error(403, "SignatureDoesNotMatch", message)
            return
        # Signed, hence written by us: the date and lifetime parse.
        signed = dt.datetime.strptime(query["X-Amz-Date"], AMZ_DATE).replace(tzinfo=dt.UTC)
        if dt.datetime.now(dt.UTC) > signed + dt.timedelta(seconds=int(query["X-Amz-Expires"])):
            self.send_s3_error(403, "AccessDenied", "Request has expired")
            return
        found = self.state.downloads.get(url.path)
        if found is None or found[1].path is None or not self.state.v2_finished(found[0]):
            self.send_s3_error(404, "NoSuchKey", "The specified key does not exist.")
            return
        self.serve_file(found[1], counted=False)


def describe(jobs: list[Job]) -> None:
    """Fill in the hash, size and mtime of the archives that exist."""

    def one(job: Job) -> None:
        assert job.path is not None
        job.sha1, st = sha1_of(job.path), job.path.stat()
        job.size, job.mtime = st.st_size, st.st_mtime

    # hashlib drops the GIL on big buffers, so hashing GiB archives in parallel pays off.
    with concurrent.futures.ThreadPoolExecutor() as pool:
        list(pool.map(one, [j for j in jobs if j.path is not None]))


def build_jobs(args: argparse.Namespace) -> list[Job]:
    """Create or reuse the archives and describe the jobs that serve them."""
    archives: Path = args.archives
    archives.mkdir(parents=True, exist_ok=True)
    c, batch, group = args.cluster, args.batch, args.group
    members = [f"shard-{i}" for i in range(args.shards)] + ["config"]
    jobs = []
    for member in members:
        rs_name, path = member_archive(
            archives, group=group, cluster=c, member=member, epoch=SNAPSHOT_EPOCH, size=args.size
        )
        jobs.append(Job(hex_id("job", batch, path.name), batch, path.name, path, rs_name))
    # Another batch of the same cluster, from another snapshot (so another restore point): a
    # client that forgets to filter downloads this too.
    other_batch = hex_id("batch", batch)
    rs_name, path = member_archive(
        archives, group=group, cluster=c, member="shard-0", epoch=OTHER_EPOCH, size=64 << 10
    )
    other = Job(hex_id("job", other_batch, path.name), other_batch, path.name, path, rs_name)
    jobs.insert(min(2, len(jobs)), other)  # mid-list, so it lands on a later page unfiltered
    if args.expired_job:
        rs_name = f"{c}-shard-{args.shards}"
        name = f"{rs_name}-{stamp(SNAPSHOT_EPOCH)}.tar.gz"
        expired = Job(hex_id("job", batch, name), batch, name, None, rs_name, expired=True)
        expired.delivery_status = "EXPIRED"
        jobs.append(expired)

    # The requested batch's jobs become ready one after another over --ready-after seconds.
    preparing = [j for j in jobs if j.batch_id == batch and not j.expired]
    for i, job in enumerate(preparing):
        job.ready_at = args.ready_after * (i + 1) / len(preparing)

    describe(jobs)
    return jobs


def build_v2_jobs(args: argparse.Namespace) -> list[V2Job]:
    """Create or reuse the v2 cluster's archives and describe its restore jobs (none unless
    --v2-shards or --v2-replica-set asks for a download job)."""
    if not (args.v2_shards or args.v2_replica_set):
        return []
    directory: Path = args.archives / "v2"  # apart from the legacy ones: names may coincide
    directory.mkdir(parents=True, exist_ok=True)
    c, group = args.v2_cluster, args.group

    def archive(job_id: str, member: str, epoch: int, *, sharded: bool) -> Job:
        rs_name, path = member_archive(
            directory, group=group, cluster=c, member=member, epoch=epoch, size=args.size,
            sharded=sharded,
        )  # fmt: skip
        return Job(hex_id("archive", job_id, rs_name), "", f"{rs_name}.tar.gz", path, rs_name)

    jobs = []
    if args.v2_shards:
        job_id = hex_id("v2job", group, c, "sharded", stamp(SNAPSHOT_EPOCH))
        members = [f"shard-{i}" for i in range(args.v2_shards)] + ["config-0"]
        archives = [archive(job_id, m, SNAPSHOT_EPOCH, sharded=True) for m in members]
        jobs.append(V2Job(job_id, "sharded", SNAPSHOT_EPOCH, archives))
    if args.v2_replica_set:  # another snapshot (of the cluster before it was sharded, say)
        job_id = hex_id("v2job", group, c, "replicaSet", stamp(OTHER_EPOCH))
        archives = [archive(job_id, "shard-0", OTHER_EPOCH, sharded=False)]
        jobs.append(V2Job(job_id, "replicaSet", OTHER_EPOCH, archives))
    for job in jobs:
        job.ready_at = args.ready_after  # triggered at the start, finished after SECONDS
    describe([a for job in jobs for a in job.archives])
    # Jobs there is nothing to download from: an automated restore of yesterday, on the first
    # page; and a download whose links expired days ago but are still listed.
    automated = V2Job(hex_id("v2job", group, c, "automated"), jobs[0].kind, OTHER_EPOCH, [])
    automated.delivery_type, automated.ready_at = "automated", -86_400
    jobs.insert(1, automated)
    if args.expired_job:
        job_id = hex_id("v2job", group, c, "expired", stamp(EXPIRED_EPOCH))
        archives = [
            Job(hex_id("archive", job_id, a.replica_set), "", a.file_name, None, a.replica_set)
            for a in jobs[0].archives
        ]
        expired = V2Job(job_id, jobs[0].kind, EXPIRED_EPOCH, archives, expired=True)
        expired.ready_at = -3 * 86_400
        jobs.append(expired)
    return jobs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--state-dir", type=Path, required=True, help="where server.json goes")
    p.add_argument("--api-port", type=int, default=0)
    p.add_argument("--pull-port", type=int, default=0)
    p.add_argument("--group", default=DEFAULT_GROUP)
    p.add_argument("--cluster", default="Cluster0")
    p.add_argument("--batch", default="6a1b2c3d4e5f60718293a4b5")
    p.add_argument("--shards", type=int, default=3)
    p.add_argument("--size", type=int, default=4 << 20, help="bytes per archive")
    p.add_argument("--page-size", type=int, default=2, help="default and max itemsPerPage")
    p.add_argument("--public-key", default="demo-public")
    p.add_argument("--private-key", default="demo-private-key")
    p.add_argument("--pull-base", help="serve no archives; put this base in delivery URLs")
    p.add_argument("--archives", type=Path, help="archive directory (default STATE/archives)")
    p.add_argument("--late-hashes", action="store_true", help="publish hashes after download")
    p.add_argument("--bearer", action="store_true", help="Ops Manager urlV2 + bearer token")
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
    v2.add_argument("--v2-cluster", default="Cluster1", metavar="NAME", help="(default Cluster1)")
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


def main(argv: list[str] | None = None) -> int:
    """Generate data, serve both listeners, write server.json, wait for a signal."""
    args = parse_args(argv)
    state_dir: Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    info_path = state_dir / "server.json"
    # Whoever waits for server.json must not read a previous run's while archives generate.
    info_path.unlink(missing_ok=True)
    # Until we serve, SIGTERM just exits, but through make_archive's cleanup of its temp file.
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
    info = {
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
    tmp = info_path.with_name(f".server.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
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


if __name__ == "__main__":
    sys.exit(main())
