"""RestoreJobsClient against a real local server speaking HTTP Digest."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from werkzeug import Request, Response

from fetcher.config import Credentials, Settings
from fetcher.errors import ApiError, AuthError, NotFoundError
from fetcher.retry import RetryPolicy
from fetcher.service.client import RateLimiter, RestoreJobsClient
from fetcher.service.http import api_client
from tests.conftest import Atlas
from tests.support import BATCH, CLUSTER, GROUP, JOBS_PATH, PRIVATE_KEY, PUBLIC_KEY, job_json


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


def test_client_never_follows_a_redirect_by_itself(atlas: Atlas) -> None:
    settings = Settings(base_url=atlas.base_url)
    with api_client(settings, Credentials(PUBLIC_KEY, PRIVATE_KEY)) as http:
        assert http.follow_redirects is False
        assert isinstance(http.auth, httpx.DigestAuth)
