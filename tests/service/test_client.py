"""fetcher.service.client: RestoreJobsClient (pages, retries, caps, rate limit) over HTTP Digest."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from fetcher.config import Credentials, Settings
from fetcher.errors import ApiError, AuthError, NotFoundError
from fetcher.retry import RetryPolicy
from fetcher.service.client import RateLimiter, RestoreJobsClient
from fetcher.service.http import api_client
from tests.conftest import Atlas
from tests.support import (
    BATCH,
    CLUSTER,
    GROUP,
    JOBS_PATH,
    PRIVATE_KEY,
    PUBLIC_KEY,
    api_base,
    api_job,
    job_json,
    new_id,
    page,
    results_body,
)

# == RestoreJobsClient against a local server speaking HTTP Digest =================================


def _client(atlas: Atlas, private_key: str = PRIVATE_KEY) -> Iterator[RestoreJobsClient]:
    settings = Settings(base_url=atlas.base_url, retries=1)
    with api_client(settings, Credentials(PUBLIC_KEY, private_key)) as http:
        yield RestoreJobsClient(
            http, atlas.base_url, policy=RetryPolicy(retries=1, sleep=lambda s: None)
        )


@pytest.fixture
def client(atlas: Atlas) -> Iterator[RestoreJobsClient]:
    yield from _client(atlas)


def test_digest_auth_and_every_page(atlas: Atlas, client: RestoreJobsClient) -> None:
    ids = [atlas.add(f"Cluster0-shard-{i}.tar.gz")["id"] for i in range(5)]
    atlas.page_size = 2
    jobs = client.list_jobs(GROUP, CLUSTER, BATCH)
    assert [j.id for j in jobs] == ids
    # The first request is the unauthenticated one that draws the challenge.
    assert [r["pageNum"] for r in atlas.list_requests] == ["1", "1", "2", "3"]
    assert atlas.list_requests[0]["batchId"] == BATCH
    # One challenge, then the remembered nonce authenticates every later page.
    assert atlas.gate.challenges == 1
    assert atlas.gate.accepted == 3


def test_wrong_key_is_an_auth_error(atlas: Atlas) -> None:
    atlas.add("a.tar.gz")
    for client in _client(atlas, private_key="wrong-private-key"):
        with pytest.raises(AuthError, match="401"):
            client.list_jobs(GROUP, CLUSTER, BATCH)


def test_jobs_of_other_batches_are_dropped_when_the_server_ignores_the_filter(
    atlas: Atlas, client: RestoreJobsClient
) -> None:
    mine = atlas.add("mine.tar.gz")
    atlas.add("theirs.tar.gz", batch_id="0" * 24)
    atlas.add("none.tar.gz", batch_id=None)
    atlas.honour_batch_filter = False
    assert [j.id for j in client.list_jobs(GROUP, CLUSTER, BATCH)] == [mine["id"]]
    assert len(client.list_jobs(GROUP, CLUSTER)) == 3


def test_one_job(atlas: Atlas, client: RestoreJobsClient) -> None:
    job = atlas.add("rs.tar.gz", batch_id=None)
    got = client.get_job(GROUP, CLUSTER, job["id"])
    assert got.id == job["id"] and got.batch_id is None
    with pytest.raises(NotFoundError, match="404"):
        client.get_job(GROUP, CLUSTER, "f" * 24)


def _raw(
    atlas: Atlas, body: bytes | str, status: int = 200, ctype: str = "application/json"
) -> None:
    def handler(request: Request) -> Response:
        if not atlas.gate.check(request):
            return atlas.gate.challenge()
        return Response(body, status, content_type=ctype)

    atlas.server.clear()
    atlas.server.expect_request(JOBS_PATH).respond_with_handler(handler)


@pytest.mark.parametrize(
    ("body", "status", "ctype", "error", "message"),
    [
        ("<html>maintenance</html>", 200, "text/html", ApiError, "not JSON .text/html."),
        ('{"results": [', 200, "application/json", ApiError, "not JSON"),
        ('{"results": {}}', 200, "application/json", ApiError, "no results list"),
        (
            '{"results": [{"statusName": "FINISHED"}]}',
            200,
            "application/json",
            ApiError,
            "no valid id",
        ),
        (
            '{"error": 403, "detail": "IP not in access list",'
            ' "errorCode": "IP_ADDRESS_NOT_ON_ACCESS_LIST"}',
            403,
            "application/json",
            AuthError,
            "403 Forbidden: IP_ADDRESS_NOT_ON_ACCESS_LIST",
        ),
        (
            '{"error": 404, "errorCode": "GROUP_NOT_FOUND"}',
            404,
            "application/json",
            NotFoundError,
            "GROUP_NOT_FOUND",
        ),
        (
            '{"error": 400, "errorCode": "INVALID_QUERY_PARAMETER"}',
            400,
            "application/json",
            ApiError,
            "400 Bad Request",
        ),
    ],
)
def test_bad_answers_are_one_line_errors(
    atlas: Atlas,
    client: RestoreJobsClient,
    body: str,
    status: int,
    ctype: str,
    error: type[Exception],
    message: str,
) -> None:
    _raw(atlas, body, status, ctype)
    with pytest.raises(error, match=message) as info:
        client.list_jobs(GROUP, CLUSTER, BATCH)
    assert "\n" not in str(info.value)


def test_empty_result_may_be_a_bare_list(atlas: Atlas, client: RestoreJobsClient) -> None:
    _raw(atlas, "[]")
    assert client.list_jobs(GROUP, CLUSTER, BATCH) == []


def test_next_link_loop_is_an_error(atlas: Atlas, client: RestoreJobsClient) -> None:
    loop = {
        "results": [job_json(url="https://h/x.tar.gz")],
        "links": [{"rel": "next", "href": atlas.server.url_for(JOBS_PATH) + "?pageNum=1"}],
    }
    atlas.server.clear()
    atlas.server.expect_request(JOBS_PATH).respond_with_handler(lambda r: atlas.gate.json(loop, r))
    with pytest.raises(ApiError, match="loops"):
        client.list_jobs(GROUP, CLUSTER, BATCH)


def test_unreachable_api_is_an_error_after_retries() -> None:
    settings = Settings(base_url="http://127.0.0.1:9/api", retries=1)
    sleeps: list[float] = []
    with api_client(settings, Credentials(PUBLIC_KEY, PRIVATE_KEY)) as http:
        client = RestoreJobsClient(
            http, settings.base_url, policy=RetryPolicy(retries=2, sleep=sleeps.append)
        )
        with pytest.raises(ApiError, match=r"cannot reach the API at http://127\.0\.0\.1:9"):
            client.list_jobs(GROUP, CLUSTER)
    assert len(sleeps) == 2  # three tries in all


def test_rate_limiter_keeps_under_the_limit() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(3, 60.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(7):
        limiter.acquire()
        now[0] += 1.0
    # 7 requests at 3 a minute: the 4th waits for the window, and so does the 7th.
    assert len(slept) == 2
    assert now[0] >= 120.0


# == hostile input and secrets (issue 4) ===========================================================


# -- bad API input -----------------------------------------------------------------------------


def _library_client(base_url: str, **kwargs: Any) -> Iterator[RestoreJobsClient]:
    settings = Settings(base_url=base_url)
    with api_client(settings, Credentials(PUBLIC_KEY, PRIVATE_KEY)) as http:
        yield RestoreJobsClient(
            http,
            base_url,
            policy=RetryPolicy(retries=0, sleep=lambda s: None),
            limiter=RateLimiter(limit=10**6),
            **kwargs,
        )


def test_max_body_caps_what_the_client_reads(httpserver: HTTPServer) -> None:
    httpserver.expect_request(JOBS_PATH).respond_with_data(
        results_body([api_job()] * 2), content_type="application/json"
    )
    for client in _library_client(api_base(httpserver), max_body=1024):
        with pytest.raises(ApiError, match="larger than 1024 bytes"):
            client.list_jobs(GROUP, CLUSTER)


def test_a_gzip_bomb_is_cut_off_before_it_inflates(httpserver: HTTPServer) -> None:
    bomb = gzip.compress(b" " * (64 * 1024 * 1024), compresslevel=9)  # ~64 KiB on the wire
    httpserver.expect_request(JOBS_PATH).respond_with_response(
        Response(bomb, 200, {"Content-Encoding": "gzip"}, content_type="application/json")
    )
    for client in _library_client(api_base(httpserver), max_body=1024 * 1024):
        tracemalloc.start()
        try:
            with pytest.raises(ApiError, match="larger than 1 MiB"):
                client.list_jobs(GROUP, CLUSTER)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 16 * 1024 * 1024  # httpx alone would hold the 64 MiB it inflates


def test_gzip_within_the_cap_is_read(httpserver: HTTPServer) -> None:
    body = gzip.compress(results_body([api_job()]))
    httpserver.expect_request(JOBS_PATH).respond_with_response(
        Response(body, 200, {"Content-Encoding": "gzip"}, content_type="application/json")
    )
    for client in _library_client(api_base(httpserver)):
        (job,) = client.list_jobs(GROUP, CLUSTER)
        assert job.archives[0].sha1 == "a" * 40


def test_pagination_that_never_ends_stops_at_max_pages(httpserver: HTTPServer) -> None:
    served: list[int] = []

    def endless(request: Request) -> Response:
        served.append(1)
        # A fresh URL every time, so only the page count can stop it; after 50 pages the
        # server gives up itself, which keeps this test short even if the bound is gone.
        href = httpserver.url_for(JOBS_PATH) + f"?pageNum={len(served) + 1}"
        body = page([], next_href=href if len(served) < 50 else None)
        return Response(json.dumps(body), 200, content_type="application/json")

    httpserver.expect_request(JOBS_PATH).respond_with_handler(endless)
    for client in _library_client(api_base(httpserver), max_pages=3):
        with pytest.raises(ApiError, match="did not end after 3 pages"):
            client.list_jobs(GROUP, CLUSTER)
    assert len(served) == 3


def test_a_next_link_loop_is_caught_on_its_second_lap(httpserver: HTTPServer) -> None:
    url = httpserver.url_for(JOBS_PATH) + "?pageNum=1&itemsPerPage=100"
    httpserver.expect_request(JOBS_PATH).respond_with_json(page([api_job()], next_href=url))
    for client in _library_client(api_base(httpserver), max_pages=20):
        with pytest.raises(ApiError, match="loops"):
            client.list_jobs(GROUP, CLUSTER)
    assert len(httpserver.log) == 2


def test_a_protocol_error_is_one_line_that_quotes_nothing_of_the_exchange() -> None:
    # A server whose answer breaks HTTP/1.1: h11's error quotes the line it could not read.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nQUOTED-LEAK no colon\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    settings = Settings(base_url=f"http://127.0.0.1:{port}/api", retries=0)
    try:
        with api_client(settings, Credentials(PUBLIC_KEY, PRIVATE_KEY)) as http:
            client = RestoreJobsClient(
                http, settings.base_url, policy=RetryPolicy(retries=0, sleep=lambda s: None)
            )
            with pytest.raises(ApiError) as caught:
                client.list_jobs(GROUP, CLUSTER)
    finally:
        listener.close()
    message = str(caught.value)
    assert "RemoteProtocolError" in message and "\n" not in message
    assert "QUOTED-LEAK" not in message and "bytearray" not in message


def test_a_listing_holds_at_most_max_jobs(httpserver: HTTPServer) -> None:
    served: list[int] = []

    def pages(request: Request) -> Response:
        served.append(1)
        href = httpserver.url_for(JOBS_PATH) + f"?pageNum={len(served) + 1}"
        jobs = [api_job(id=new_id()) for _ in range(3)]
        body = page(jobs, next_href=href if len(served) < 4 else None)
        return Response(json.dumps(body), 200, content_type="application/json")

    httpserver.expect_request(JOBS_PATH).respond_with_handler(pages)
    for client in _library_client(api_base(httpserver), max_jobs=12):
        assert len(client.list_jobs(GROUP, CLUSTER)) == 12  # the bound itself is fine
    served.clear()
    for client in _library_client(api_base(httpserver), max_jobs=7):
        with pytest.raises(ApiError, match="more than 7 restore jobs") as caught:
            client.list_jobs(GROUP, CLUSTER)
        assert "\n" not in str(caught.value)
    assert len(served) == 3  # stopped at the page that went past it
