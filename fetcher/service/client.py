"""RestoreJobsClient: the restore-jobs API with digest auth, pagination, retries and limits."""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import Any
from urllib.parse import quote, urljoin

import httpx

from fetcher.engine.stream import content_length
from fetcher.errors import ApiError, AuthError, NotFoundError
from fetcher.redact import origin, printable
from fetcher.retry import RetryPolicy, certificate_error, is_retryable_status, parse_retry_after
from fetcher.service.dialects import dialect_for
from fetcher.service.model import RestoreJob

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_PAGES = 1000
MAX_JOBS = 100_000  # jobs one listing may hold: each is kept, parsed, until the listing ends
MAX_REDIRECTS = 5
ITEMS_PER_PAGE = 100  # the maximum every service accepts


class OriginDigestAuth(httpx.DigestAuth):
    """HTTP Digest auth that only ever answers challenges from the API's own origin.

    httpx's DigestAuth remembers the last challenge and sends Authorization pre-emptively
    on every later request of its client, to any host; this one stays silent elsewhere.
    """

    def __init__(self, username: str, password: str, *, api_origin: str) -> None:
        super().__init__(username, password)
        self._origin = api_origin

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Authenticate requests to the API origin; pass anything else through untouched."""
        if origin(str(request.url)) != self._origin:
            request.headers.pop("Authorization", None)
            yield request
            return
        yield from super().auth_flow(request)


class RateLimiter:
    """At most `limit` requests in any `period` seconds (MongoDB: 100 a minute a project)."""

    def __init__(
        self,
        limit: int = 100,
        period: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._limit, self._period = limit, period
        self._clock, self._sleep = clock, sleep
        self._sent: deque[float] = deque()

    def acquire(self) -> None:
        """Wait until one more request fits in the window, then count it."""
        while True:
            now = self._clock()
            while self._sent and now - self._sent[0] >= self._period:
                self._sent.popleft()
            if len(self._sent) < self._limit:
                self._sent.append(now)
                return
            self._sleep(self._period - (now - self._sent[0]))


class RestoreJobsClient:
    """Reads restore jobs; `http` must be a client whose only credentials are for this API.

    The API root says which dialect it speaks (fetcher.service.dialects): its paths, its
    media type, whether it has batches and how its jobs parse. Both give RestoreJobs.
    """

    def __init__(
        self,
        http: httpx.Client,
        base_url: str,
        *,
        policy: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        max_body: int = MAX_BODY_BYTES,
        max_pages: int = MAX_PAGES,
        max_jobs: int = MAX_JOBS,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._origin = origin(self._base)
        self.dialect = dialect_for(self._base)
        self._policy = policy or RetryPolicy()
        self._limiter = limiter or RateLimiter()
        self._max_body = max_body
        self._max_pages = max_pages
        self._max_jobs = max_jobs
        # One request at a time: digest nonce counts are shared state, and calls are few.
        self._lock = threading.Lock()

    def jobs_url(self, group: str, cluster: str, job_id: str | None = None) -> str:
        """Return the restoreJobs URL of a cluster, or of one of its jobs."""
        url = f"{self._base}/groups/{quote(group, safe='')}/clusters/{quote(cluster, safe='')}"
        url += f"/{self.dialect.jobs_path}"
        return f"{url}/{quote(job_id, safe='')}" if job_id else url

    def list_jobs(self, group: str, cluster: str, batch_id: str | None = None) -> list[RestoreJob]:
        """Return every job of the cluster (or of one batch), following every page."""
        params: dict[str, str] = {"itemsPerPage": str(ITEMS_PER_PAGE), "pageNum": "1"}
        if batch_id and self.dialect.no_batches:
            raise ApiError(self.dialect.no_batches)
        if batch_id:
            params["batchId"] = batch_id
        jobs: dict[str, RestoreJob] = {}
        read = 0
        for page in self._pages(self.jobs_url(group, cluster), params):
            read += len(page)
            if read > self._max_jobs:
                raise ApiError(
                    f"the API listed more than {self._max_jobs} restore jobs; refusing the rest"
                )
            for item in page:
                job = self.dialect.parse(item, group, cluster)
                # The server may ignore the filter: keep only what was asked for.
                if batch_id is None or job.batch_id == batch_id:
                    jobs.setdefault(job.id, job)
        return list(jobs.values())

    def get_job(self, group: str, cluster: str, job_id: str) -> RestoreJob:
        """Return one job, as the API describes it now."""
        body = self._get_json(self.jobs_url(group, cluster, job_id), None)
        job = self.dialect.parse(body, group, cluster)
        if job.id != job_id:
            raise ApiError(f"unexpected API response: asked for job {job_id}, got {job.id}")
        return job

    def _pages(self, url: str, params: dict[str, str] | None) -> Iterator[list[Any]]:
        seen: set[str] = set()
        next_url: str | None = url
        pages = 0
        while next_url is not None:
            # Count pages, not distinct URLs: the bound must hold even if loop detection
            # is fooled (the same page under two spellings of its URL).
            if pages >= self._max_pages:
                raise ApiError(f"API pagination did not end after {self._max_pages} pages")
            pages += 1
            seen.add(next_url)
            body = self._get_json(next_url, params)
            params = None  # a next link carries its own query
            if isinstance(body, list):  # some services answer an empty list as a bare []
                yield body
                return
            if not isinstance(body, dict) or not isinstance(body.get("results"), list):
                raise ApiError("unexpected API response: no results list in a restore-jobs page")
            yield body["results"]
            next_url = self._next_link(body, next_url)
            if next_url is not None and next_url in seen:
                raise ApiError("API pagination loops: a next link points to a page already read")

    def _next_link(self, body: dict[str, Any], current: str) -> str | None:
        links = body.get("links") or []
        if not isinstance(links, list):
            raise ApiError("unexpected API response: links is not a list")
        for link in links:
            if isinstance(link, dict) and link.get("rel") == "next":
                href = link.get("href")
                if not isinstance(href, str) or not href:
                    raise ApiError("unexpected API response: a next link has no href")
                absolute = urljoin(current, href)
                if origin(absolute) != self._origin:
                    raise ApiError("API pagination points to another host; refusing to follow")
                return absolute
        return None

    def _get_json(self, url: str, params: dict[str, str] | None) -> Any:
        failures = 0
        while True:
            with self._lock:
                self._limiter.acquire()
                try:
                    status, headers, body = self._get(url, params)
                except httpx.TransportError as exc:
                    problem = certificate_error(exc)
                    if problem is not None:
                        raise ApiError(
                            f"the TLS certificate of {self._origin} is not trusted ({problem});"
                            " give the CA that signed it with --ca-cert or SSL_CERT_FILE"
                        ) from None
                    failures += 1
                    if self._policy.exhausted(failures):
                        raise ApiError(
                            f"cannot reach the API at {self._origin}: {_describe(exc)}"
                        ) from None
                    status, headers, body = 0, httpx.Headers(), b""
                except ApiError as exc:
                    # The service account's token endpoint answered 429 or 5xx inside send():
                    # retried as the API's own answers are.
                    if exc.status is None or not is_retryable_status(exc.status):
                        raise
                    failures += 1
                    if self._policy.exhausted(failures):
                        raise
                    status, headers, body = 0, httpx.Headers(), b""
            if status == 0 or is_retryable_status(status):
                if status:
                    failures += 1
                    if self._policy.exhausted(failures):
                        raise _error_for(status, body)
                retry_after = parse_retry_after(headers.get("retry-after"))
                self._policy.sleep(self._policy.delay(failures, retry_after))
                continue
            if status != 200:
                raise _error_for(status, body)
            try:
                return loads(body)
            except ValueError:
                kind = printable(headers.get("content-type", "no content type").split(";")[0])
                raise ApiError(
                    f"the API answered with something that is not JSON ({kind[:60]})"
                ) from None

    def _get(self, url: str, params: dict[str, str] | None) -> tuple[int, httpx.Headers, bytes]:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                request = self._http.build_request(
                    "GET",
                    url,
                    params=params,
                    # gzip only: _decode_capped knows how to bound it.
                    headers={"Accept": self.dialect.accept, "Accept-Encoding": "gzip"},
                )
            except httpx.InvalidURL:
                raise ApiError("the API sent a link that is not a valid URL") from None
            response = self._http.send(request, stream=True)
            try:
                if response.is_redirect:
                    url = urljoin(url, response.headers.get("location", ""))
                    if origin(url) != self._origin:
                        raise ApiError("the API redirected to another host; refusing to follow")
                    params = None
                    continue
                return response.status_code, response.headers, self._read_capped(response)
            finally:
                response.close()
        raise ApiError("the API redirected too many times")

    def _read_capped(self, response: httpx.Response) -> bytes:
        """Read at most max_body bytes, before and after decompression, or raise."""
        too_big = ApiError(f"API response larger than {_size_text(self._max_body)}; refusing it")
        declared = content_length(response)
        if declared is not None and declared > self._max_body:
            raise too_big  # no need to read what we will refuse
        chunks, size = [], 0
        # Raw bytes: httpx would inflate each compressed chunk whole, and a small gzip
        # chunk can inflate to gigabytes before any count of ours could see it.
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > self._max_body:
                raise too_big
            chunks.append(chunk)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        return _decode_capped(b"".join(chunks), encoding, self._max_body, too_big)


def loads(body: bytes) -> Any:
    """Parse JSON from a server; every way it can be unreadable is a ValueError.

    json.loads raises RecursionError on deep nesting ("[[[[...") and a plain ValueError on
    integers over 4300 digits: neither is a JSONDecodeError.
    """
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _decode_capped(raw: bytes, encoding: str, cap: int, too_big: ApiError) -> bytes:
    """Undo a gzip Content-Encoding without ever holding more than `cap` bytes of output."""
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        shown = printable(encoding)[:40]
        raise ApiError(f"the API answered with an unsupported content encoding ({shown})")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # 32: a gzip or a zlib header
    try:
        out = inflater.decompress(raw, cap + 1)
    except zlib.error:
        raise ApiError(f"the API sent a body that does not decompress ({encoding})") from None
    if len(out) > cap or inflater.unconsumed_tail:
        raise too_big
    return out


def _size_text(n: int) -> str:
    mib = 1024 * 1024
    return f"{n // mib} MiB" if n >= mib and n % mib == 0 else f"{n} bytes"


def _describe(exc: httpx.TransportError) -> str:
    """A transport error in a few words that quote nothing of the request or the answer.

    h11's protocol errors quote the header they refuse (a Digest Authorization, say) or the
    line they could not read: only their class is shown.
    """
    if isinstance(exc, httpx.ProtocolError):
        return f"{type(exc).__name__} (the exchange broke HTTP/1.1)"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {printable(text)[:200]}" if text else type(exc).__name__


def _error_for(status: int, body: bytes) -> ApiError:
    """Turn an error status and MongoDB's error body into one readable exception."""
    detail = ""
    try:
        parsed = loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        parts = [str(parsed[k]) for k in ("errorCode", "detail") if parsed.get(k)]
        # The server's words reach a terminal: no escape sequences, no line breaks.
        detail = ": " + printable(" - ".join(parts)[:300]) if parts else ""
    reason = httpx.codes.get_reason_phrase(status) or "error"
    what = f"API answered {status} {reason}{detail}"
    if status in (401, 403):
        return AuthError(f"{what} (check the API key pair and its access list)", status=status)
    if status == 406:
        return ApiError(
            f"{what} (the API refused the version asked for: is --base-url the right API root?)",
            status=status,
        )
    if status == 404:
        return NotFoundError(f"{what} (no such group, cluster or job?)", status=status)
    return ApiError(what, status=status)
