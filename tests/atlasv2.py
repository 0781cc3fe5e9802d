"""Atlas Admin API v2 (Cloud Backup) restore jobs, its token endpoint, and pre-signed links.

Shaped like the real service (API-NOTES, "Atlas Admin API v2"): every request needs the
versioned Accept (406 without it); a job has no batchId and no hashes; an unfinished job has
no finishedAt, no components and no URLs; links are pre-signed, on another origin, and refuse
any Authorization header. The job shapes are the shared fake's (tests.fake.jobs.v2_job), the
archives its too; `now` is this fake's clock.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.fake import jobs
from tests.fake.ids import CLUSTER_V2 as CLUSTER_V2
from tests.fake.pull import PullServer
from tests.support import GROUP, DigestGate, iso, make_archive, new_id, page, restore_info

V2_ROOT = "/api/atlas/v2"
JOBS_V2 = f"{V2_ROOT}/groups/{GROUP}/clusters/{CLUSTER_V2}/backup/restoreJobs"
TOKEN_PATH = "/api/oauth/token"
ACCEPT = "application/vnd.atlas.2023-01-01+json"
CLIENT_ID = "mdb_sa_id_0123456789abcdef"
CLIENT_SECRET = "mdb_sa_sk_s3cr3t-client-secret-42"
STATES = jobs.V2_STATES


@dataclass
class V2Job:
    """One restore job and its archives (by replica set); `state` moves it on."""

    id: str
    replica_sets: tuple[str, ...]
    sharded: bool
    state: str = "ready"
    delivery_type: str = "download"
    archives: dict[str, bytes] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    signatures: dict[str, str] = field(default_factory=dict)


class AtlasV2:
    """The Cloud Backup restore-jobs API of one cluster, on `httpserver`; links on `pull`."""

    def __init__(
        self,
        httpserver: HTTPServer,
        pull: PullServer,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.server, self.pull, self.now = httpserver, pull, now
        self.gate = DigestGate()
        self.jobs: list[V2Job] = []
        self.tokens: dict[str, datetime] = {}  # issued access tokens and their expiry
        self.token_requests = 0
        self.token_faults: list[int] = []  # statuses to answer token requests with first
        self.token_ttl = 3600
        self.revoke_next = False  # answer the next bearer request 401, as after a revocation
        self.api_requests: list[dict[str, str]] = []  # the headers of each API request
        self.on_poll: Any = None  # called with the poll count on each authenticated read
        self.polls = 0
        httpserver.expect_request(TOKEN_PATH, method="POST").respond_with_handler(self._token)
        httpserver.expect_request(JOBS_V2).respond_with_handler(self._list)
        httpserver.expect_request(re.compile(re.escape(JOBS_V2) + "/[^/]+$")).respond_with_handler(
            self._one
        )

    @property
    def base_url(self) -> str:
        """The API root to give fetcher."""
        return self.server.url_for(V2_ROOT)

    def add(
        self,
        replica_sets: tuple[str, ...] = (f"{CLUSTER_V2}-shard-0", f"{CLUSTER_V2}-config-0"),
        *,
        sharded: bool = True,
        state: str = "ready",
        delivery_type: str = "download",
        archives: dict[str, bytes] | None = None,
    ) -> V2Job:
        """A job with one real restore archive per replica set (give `archives` to replace)."""
        job = V2Job(new_id(), replica_sets, sharded, state, delivery_type)
        for name in replica_sets:
            data = (archives or {}).get(name) or make_archive(
                name, info=restore_info(name, cluster=CLUSTER_V2)
            )
            path = f"/restore/{job.id}/{name}.tar.gz"
            signature = secrets.token_hex(32)
            self.pull.add(path, data, signature=signature)
            job.archives[name], job.paths[name], job.signatures[name] = data, path, signature
        self.jobs.append(job)
        return job

    def link(self, job: V2Job, replica_set: str) -> str:
        """The pre-signed link of one archive, with its signature in the query."""
        query = (
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20261129%2Fs3"
            f"&X-Amz-Expires=3600&X-Amz-Signature={job.signatures[replica_set]}"
        )
        return self.pull.url(job.paths[replica_set]) + "?" + query

    def render(self, job: V2Job) -> dict[str, Any]:
        """The job as the API lists it in its state (tests.fake.jobs.v2_job)."""
        now = self.now()
        expires = now + (timedelta(hours=-1) if job.state == "expired" else timedelta(hours=4))
        return jobs.v2_job(
            job_id=job.id,
            snapshot_id="5f0c0ffee0000000000000dd",
            state=job.state,
            sharded=job.sharded,
            timestamp="2026-11-28T09:00:00Z",
            href=self.server.url_for(f"{JOBS_V2}/{job.id}"),
            delivery_type=job.delivery_type,
            links=[(name, self.link(job, name)) for name in job.replica_sets],
            finished_at=iso(now - timedelta(minutes=5)),
            expires_at=iso(expires),
        )

    # -- the server side ------------------------------------------------------------------

    def _refusal(self, request: Request) -> Response | None:
        self.api_requests.append(dict(request.headers))
        if request.headers.get("Accept") != ACCEPT:
            body = {
                "error": 406,
                "reason": "Not Acceptable",
                "detail": "Invalid accept header or version date.",
                "errorCode": "INVALID_VERSION_DATE",
            }
            return Response(json.dumps(body), 406, content_type="application/json")
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            expiry = self.tokens.get(header[7:])
            if self.revoke_next:
                self.revoke_next = False
                expiry = None
            if expiry is not None and expiry > self.now():
                return None
            body = {"error": 401, "reason": "Unauthorized", "detail": "Invalid token."}
            return Response(json.dumps(body), 401, content_type="application/json")
        if not self.gate.check(request):
            return self.gate.challenge()
        return None

    def _json(self, body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status, content_type=ACCEPT)

    def _list(self, request: Request) -> Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        self._polled()
        return self._json(page([self.render(j) for j in self.jobs]))

    def _polled(self) -> None:
        self.polls += 1
        if self.on_poll is not None:
            self.on_poll(self.polls)

    def _one(self, request: Request) -> Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        self._polled()
        job_id = request.path.rsplit("/", 1)[-1]
        for job in self.jobs:
            if job.id == job_id:
                return self._json(self.render(job))
        return self._json(
            {"error": 404, "reason": "Not Found", "errorCode": "RESOURCE_NOT_FOUND"}, 404
        )

    def _token(self, request: Request) -> Response:
        self.token_requests += 1
        if self.token_faults:
            status = self.token_faults.pop(0)
            return Response(json.dumps({"error": "temporarily_unavailable"}), status)
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        body: dict[str, Any]
        if request.headers.get("Authorization") != f"Basic {expected}":
            body = {"error": "invalid_client", "error_description": "Invalid client credentials"}
            return Response(json.dumps(body), 401, content_type="application/json")
        if request.form.get("grant_type") != "client_credentials":
            body = {"error": "unsupported_grant_type"}
            return Response(json.dumps(body), 400, content_type="application/json")
        token = secrets.token_urlsafe(32)
        self.tokens[token] = self.now() + timedelta(seconds=self.token_ttl)
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl}
        return Response(json.dumps(body), 200, content_type="application/json")
