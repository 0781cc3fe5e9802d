"""Fixtures: a Digest-protected restore-jobs API (pytest-httpserver) and a pull host."""

from __future__ import annotations

import json
import re
import secrets
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner, Result
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from fetcher.cli import main
from tests.atlasv2 import AtlasV2
from tests.pullserver import PullServer
from tests.support import (
    API_ROOT,
    BATCH,
    CLUSTER,
    GROUP,
    JOBS_PATH,
    PRIVATE_KEY,
    PUBLIC_KEY,
    DigestGate,
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


def run_cli(*args: str) -> Result:
    """Run the CLI in-process, with stderr apart from stdout."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


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
