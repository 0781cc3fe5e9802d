"""Fixtures: a Digest-protected restore-jobs API (pytest-httpserver) and a pull host."""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from click.testing import CliRunner, Result
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from fetcher.cli import Runtime, main
from fetcher.storage import Destination
from tests.atlasv2 import CLIENT_ID, CLIENT_SECRET, CLUSTER_V2, AtlasV2, V2Job
from tests.pullserver import Fault, PullServer
from tests.support import (
    API_ROOT,
    BATCH,
    BEARER,
    CLUSTER,
    CONFIG,
    DOCUMENTED_EXAMPLE,
    GROUP,
    HOST_SHARDS,
    JOBS_PATH,
    PRIVATE_KEY,
    PUBLIC_KEY,
    SHARDS,
    SIGNATURE,
    DigestGate,
    KiB,
    job_json,
    make_archive,
    new_id,
    page,
    sha1,
)


class Atlas:
    """The restore-jobs API of one cluster, with archives on a separate pull host."""

    def __init__(self, httpserver: HTTPServer, pull: PullServer) -> None:
        self.server, self.pull = httpserver, pull
        self.gate = DigestGate()
        self.jobs: list[dict[str, Any]] = []
        self.archives: dict[str, bytes] = {}
        self.page_size = 100
        self.honour_batch_filter = True
        self.list_requests: list[dict[str, str]] = []
        # Hashes a job gains when it is read on its own (the API fills hashes[] late).
        self.hashes_on_job_read: dict[str, list[dict[str, str]]] = {}
        # Statuses to answer authenticated requests with, in order, before serving them normally.
        self.api_faults: list[tuple[int, dict[str, str]]] = []
        self.answered: list[tuple[str, int]] = []  # (path, fault status, or 200 when served)
        self.polls = 0  # authenticated list requests so far
        self.on_list: Callable[[int], None] | None = None  # hears each poll, may mutate jobs
        httpserver.expect_request(JOBS_PATH).respond_with_handler(self._list)
        httpserver.expect_request(
            re.compile(re.escape(JOBS_PATH) + "/[^/]+$")
        ).respond_with_handler(self._one)

    @property
    def base_url(self) -> str:
        """The API root to give fetcher."""
        return self.server.url_for(API_ROOT)

    def add(
        self,
        name: str,
        data: bytes | None = None,
        *,
        published_sha1: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Serve an archive and list a job for it (READY by default); return its JSON (mutable).

        The job has the shape the API gives its state (see support.job_json): one that is
        not ready yet lists no link and no hashes; set_state() moves it on.
        """
        data = make_archive(name.split(".")[0]) if data is None else data
        job_id = kwargs.pop("job_id", None) or new_id()
        token = secrets.token_urlsafe(24)
        path = f"/backup/restore/v2/pull/{job_id}/{token}/{name}"
        self.pull.add(path, data)
        self.archives[name] = data
        spec = {
            "job_id": job_id,
            "url": self.pull.url(path),
            "file_name": name,
            "sha1_hex": published_sha1 or sha1(data),
            **kwargs,
        }
        job = job_json(**spec)
        job["_path"], job["_spec"] = path, spec
        self.jobs.append(job)
        return job

    def set_state(
        self,
        job: dict[str, Any],
        status: str = "FINISHED",
        delivery_status: str = "READY",
        *,
        link: bool | None = None,
    ) -> None:
        """Move a job on, as the service does: its link and hashes appear once it is READY."""
        spec = {**job["_spec"], "status": status, "delivery_status": delivery_status}
        private = {k: v for k, v in job.items() if k.startswith("_")}
        job.clear()
        job.update(job_json(**spec, link=link), **private)
        job["_spec"] = spec

    def _public(self, job: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in job.items() if not k.startswith("_")}

    def _fault(self, request: Request) -> Response | None:
        """Answer the next programmed fault, or record the request and return None."""
        if not self.gate.check(request):
            return None
        if not self.api_faults:
            self.answered.append((request.path, 200))
            return None
        status, headers = self.api_faults.pop(0)
        self.answered.append((request.path, status))
        body = {"error": status, "reason": "Fault", "detail": "a programmed fault"}
        return Response(json.dumps(body), status, headers, content_type="application/json")

    def _list(self, request: Request) -> Response:
        self.list_requests.append(dict(request.args))
        fault = self._fault(request)
        if fault is not None:
            return fault
        if self.gate.check(request):
            self.polls += 1
            if self.on_list is not None:
                self.on_list(self.polls)
        batch = request.args.get("batchId")
        jobs = [
            self._public(j)
            for j in self.jobs
            if not (batch and self.honour_batch_filter) or j.get("batchId") == batch
        ]
        size = min(int(request.args.get("itemsPerPage", "100")), self.page_size)
        number = int(request.args.get("pageNum", "1"))
        chunk = jobs[(number - 1) * size : number * size]
        next_href = None
        if number * size < len(jobs):
            args = dict(request.args)
            args.update(pageNum=str(number + 1), itemsPerPage=str(size))
            query = "&".join(f"{k}={v}" for k, v in args.items())
            next_href = self.server.url_for(JOBS_PATH) + "?" + query
        body = page(chunk, next_href)
        body["totalCount"] = len(jobs)
        return self.gate.json(body, request)

    def _one(self, request: Request) -> Response:
        fault = self._fault(request)
        if fault is not None:
            return fault
        job_id = request.path.rsplit("/", 1)[-1]
        for job in self.jobs:
            if job["id"] == job_id:
                if job_id in self.hashes_on_job_read:
                    job["hashes"] = self.hashes_on_job_read[job_id]
                return self.gate.json(self._public(job), request)
        return self.gate.json({"error": 404, "reason": "Not Found"}, request, status=404)


@pytest.fixture
def pull() -> Iterator[PullServer]:
    """A pull host that logs requests and can misbehave."""
    server = PullServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def authority(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    """A throwaway CA for local HTTPS servers, and its certificate as a PEM file."""
    ca = trustme.CA()
    pem = tmp_path_factory.mktemp("authority") / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    return ca, pem


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    """A server's TLS context with a certificate for `names` (default: this host) by `ca`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*(names or ("localhost", "127.0.0.1"))).configure_cert(context)
    return context


@pytest.fixture
def https_pull(authority: tuple[trustme.CA, Path]) -> Iterator[PullServer]:
    """The pull host over HTTPS, as real pull links are (trust it with authority's PEM)."""
    server = PullServer(tls=server_context(authority[0]))
    yield server
    server.close()


@pytest.fixture
def atlas(httpserver: HTTPServer, pull: PullServer) -> Atlas:
    """An empty cluster; add archives with atlas.add(name)."""
    return Atlas(httpserver, pull)


@pytest.fixture
def atlas_v2(httpserver: HTTPServer, pull: PullServer) -> AtlasV2:
    """Atlas Cloud Backup's restore jobs (API v2) of another cluster; add jobs with add()."""
    return AtlasV2(httpserver, pull)


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials in the Atlas CLI's variables, and nothing else that could leak in."""
    for var in (
        "MCLI_PUBLIC_API_KEY",
        "MCLI_PRIVATE_API_KEY",
        "MONGODB_ATLAS_CLIENT_ID",
        "MONGODB_ATLAS_CLIENT_SECRET",
        "SSL_CERT_FILE",
        "FETCHER_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MONGODB_ATLAS_PUBLIC_API_KEY", PUBLIC_KEY)
    monkeypatch.setenv("MONGODB_ATLAS_PRIVATE_API_KEY", PRIVATE_KEY)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    # No Atlas CLI profile of the machine's user may stand in for the test's credentials.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))


# The Runtime (sleep, clock, writes) in-process runs get unless they pass one: see cli_runtime.
_RUNTIME: contextvars.ContextVar[Runtime | None] = contextvars.ContextVar("runtime", default=None)


def run_cli(*args: str, runtime: Runtime | None = None) -> Result:
    """Run the CLI in-process, with stderr apart from stdout, and the CLI's seam (click's
    `obj`) given `runtime`, else the one cli_runtime set, else the process's own."""
    obj = runtime or _RUNTIME.get()
    return CliRunner().invoke(main, list(args), obj=obj, catch_exceptions=False)


@contextlib.contextmanager
def cli_runtime(runtime: Runtime) -> Iterator[None]:
    """Every run_cli within gets `runtime` (a fixture's recorded sleeps, say)."""
    token = _RUNTIME.set(runtime)
    try:
        yield
    finally:
        _RUNTIME.reset(token)


def api_args(atlas: Atlas, command: str, *extra: str) -> list[str]:
    """A command with the test cluster's API options, then `extra`."""
    return [command, "--base-url", atlas.base_url, "--group", GROUP, "--cluster", CLUSTER, *extra]


def fetch_args(atlas: Atlas, dest: Path, *extra: str) -> list[str]:
    """The usual `fetcher fetch` arguments for the test batch."""
    return api_args(atlas, "fetch", "--batch", BATCH, "--dest", str(dest), "--quiet", *extra)


def loud(args: list[str]) -> list[str]:
    """The same arguments without --quiet, to see the per-job lines."""
    return [a for a in args if a != "--quiet"]


def manifest_doc(dest: Path) -> dict[str, Any]:
    """DIR/manifest.json as a document."""
    doc: dict[str, Any] = json.loads((dest / "manifest.json").read_text())
    return doc


def job_entry(dest: Path, job: dict[str, Any]) -> dict[str, Any]:
    """The manifest entry of a job."""
    found: dict[str, Any] = next(j for j in manifest_doc(dest)["jobs"] if j["id"] == job["id"])
    return found


def file_entry(dest: Path, job: dict[str, Any]) -> dict[str, Any]:
    """The one files[] entry of a legacy job (one archive a job) in the manifest."""
    (found,) = job_entry(dest, job)["files"]
    assert isinstance(found, dict)
    return found


# -- shared by several test modules (one definition each) --------------------------------------

PATIENCE = 30.0  # how long to wait for a subprocess to reach a point; never reached when healthy


def spawn_fetch(
    atlas: Atlas, dest: Path, tmp_path: Path, tag: str, *extra: str
) -> subprocess.Popen[bytes]:
    """Start `fetcher fetch` as a process of its own (credentials come from the environment)."""
    out = (tmp_path / f"{tag}.out").open("wb")
    err = (tmp_path / f"{tag}.err").open("wb")
    with out, err:
        return subprocess.Popen(
            [sys.executable, "-m", "fetcher.cli", *fetch_args(atlas, dest, *extra)],
            stdout=out,
            stderr=err,
            env=dict(os.environ),
            cwd=tmp_path,
        )


def wait_until(
    done: Callable[[], bool], proc: subprocess.Popen[bytes], tmp_path: Path, tag: str
) -> None:
    """Poll until `done()`; fail if the process ends first (or after PATIENCE seconds)."""
    deadline = time.monotonic() + PATIENCE
    while not done():
        if proc.poll() is not None:
            err = (tmp_path / f"{tag}.err").read_text()
            pytest.fail(f"fetch ended early with {proc.returncode}: {err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("fetch never got there")
        time.sleep(0.02)


def kill_9_when(
    done: Callable[[], bool],
    proc: subprocess.Popen[bytes],
    tmp_path: Path,
    tag: str,
    held: threading.Event,
) -> None:
    """SIGKILL the fetch once `done()`, then let the server go on (`held`)."""
    try:
        wait_until(done, proc, tmp_path, tag)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    finally:
        held.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """The pull client the download engine's tests hand to Download."""
    with httpx.Client(timeout=10.0) as c:
        yield c


@pytest.fixture
def dest(tmp_path: Path) -> Iterator[Destination]:
    """DIR (tmp_path/out), opened and locked as a fetch holds it."""
    with Destination(tmp_path / "out") as d:
        yield d


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which an unspecified mode would leave files world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Make directories read-only (mode 0555) for the test, and writable again after it."""
    made: list[Path] = []

    def make(path: Path) -> None:
        path.chmod(0o555)
        made.append(path)

    yield make
    for path in made:
        path.chmod(0o755)


@pytest.fixture
def other() -> Iterator[PullServer]:
    """A second host: where a redirect or a next link would take credentials."""
    server = PullServer()
    yield server
    server.close()


@pytest.fixture
def documented(httpserver: HTTPServer) -> dict[str, Any]:
    """Serve the example of MongoDB's "Get All Restore Jobs" page as it is written."""
    body = DOCUMENTED_EXAMPLE.read_bytes()
    doc: dict[str, Any] = json.loads(body)
    first = doc["results"][0]
    gate = DigestGate()
    path = f"/api/atlas/v1.0/groups/{first['groupId']}/clusters/{first['clusterName']}/restoreJobs"

    def handler(request: Request) -> Response:
        if not gate.check(request):
            return gate.challenge()
        return Response(body, 200, content_type="application/json")

    httpserver.expect_request(path).respond_with_handler(handler)
    return {
        "doc": doc,
        "args": [
            "--base-url",
            httpserver.url_for("/api/atlas/v1.0"),
            "--group",
            first["groupId"],
            "--cluster",
            first["clusterName"],
            "--batch",
            first["batchId"],
        ],
    }


@pytest.fixture
def service_account(monkeypatch: pytest.MonkeyPatch, creds: None) -> None:
    """A service account in the environment: it wins over the API keys creds set."""
    monkeypatch.setenv("MONGODB_ATLAS_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("MONGODB_ATLAS_CLIENT_SECRET", CLIENT_SECRET)


def add_shards(atlas: Atlas, n: int = 3) -> list[dict[str, object]]:
    """List `n` shards and the config server, each of a fresh archive."""
    jobs = [atlas.add(f"Cluster0-shard-{i}.tar.gz") for i in range(n)]
    jobs.append(atlas.add("Cluster0-config.tar.gz"))
    return jobs


def add_batch(atlas: Atlas, **special: bytes) -> dict[str, dict[str, Any]]:
    """A 3-shard + config batch; `special` replaces the archive of a replica set."""
    jobs = {}
    for rs in [*SHARDS, CONFIG]:
        jobs[rs] = atlas.add(f"{rs}.tar.gz", special.get(rs) or make_archive(rs, 32 * KiB))
    return jobs


def add_host_batch(atlas: Atlas) -> dict[str, dict[str, Any]]:
    """A 4-shard + config batch, to share out between hosts."""
    return {rs: atlas.add(f"{rs}.tar.gz") for rs in [*HOST_SHARDS, CONFIG]}


def add_job(
    atlas: Atlas,
    segment: str,
    *,
    file_name: str | None = None,
    data: bytes | None = None,
    token: str | None = None,
    query: str = "",
    **kwargs: Any,
) -> dict[str, Any]:
    """List a READY job whose pull URL ends in `segment` (raw, percent-encoding and all)."""
    data = make_archive(f"rs-{new_id()}") if data is None else data  # a replica set of its own
    job_id = new_id()
    path = f"/backup/restore/v2/pull/{job_id}/{token or secrets.token_urlsafe(24)}/{segment}"
    atlas.pull.add(path, data)
    job = job_json(
        job_id=job_id,
        url=atlas.pull.url(path) + query,
        file_name=file_name,
        sha1_hex=sha1(data),
        **kwargs,
    )
    job["_path"], job["_data"] = path, data
    atlas.jobs.append(job)
    return job


def add_ops_manager_job(atlas: Atlas, name: str, *, faults: list[Fault] | None = None) -> Any:
    """A job whose link needs `Authorization: Bearer`, given as urlV2 + authValue."""
    data = make_archive("om")
    job_id = new_id()
    path = f"/backup/restore/v2/pull/{job_id}/{secrets.token_urlsafe(24)}/{name}"
    atlas.pull.add(path, data, faults=faults or [])
    job = job_json(
        job_id=job_id,
        file_name=name,
        sha1_hex=sha1(data),
        urlV2=atlas.pull.url(path),
        authHeader="Authorization",
        authBearer="Bearer",
        authValue=BEARER,
    )
    job["_path"], job["_data"] = path, data
    atlas.jobs.append(job)
    return job


def plant_secrets(atlas: Atlas) -> list[str]:
    """A batch whose links carry every kind of secret; return the secrets."""
    plain = atlas.add("Cluster0-config.tar.gz")
    atlas.pull.resources[plain["_path"]].faults = [Fault(drop_after=20_000)]  # a resume
    om = add_ops_manager_job(atlas, "Cluster0-shard-0.tar.gz")
    signed = add_job(
        atlas,
        "Cluster0-shard-1.tar.gz",
        file_name="Cluster0-shard-1.tar.gz",
        data=make_archive("Cluster0-shard-1"),
        query=f"?X-Amz-Signature={SIGNATURE}&X-Amz-Credential=AKIAEXAMPLE",
    )
    tokens = [str(job["_path"]).split("/")[-2] for job in (plain, om, signed)]
    return [*tokens, BEARER, PRIVATE_KEY, SIGNATURE, "AKIAEXAMPLE"]


def v2_args(atlas_v2: AtlasV2, command: str, *extra: str) -> list[str]:
    """A command against the v2 fake's cluster."""
    base = ["--base-url", atlas_v2.base_url, "--group", GROUP, "--cluster", CLUSTER_V2]
    return [command, *base, *extra]


def fetch_job(atlas_v2: AtlasV2, job: V2Job, dest: Path, *extra: str) -> list[str]:
    """`fetcher fetch --job` of one v2 job into dest."""
    return v2_args(atlas_v2, "fetch", "--job", job.id, "--dest", str(dest), *extra)
