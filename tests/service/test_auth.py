"""fetcher.service.auth: ServiceAccountAuth against a local token endpoint and a bearer API."""

from __future__ import annotations

import base64
import gzip
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from fetcher.config import ServiceAccount, Settings
from fetcher.errors import ApiError, AuthError, ConfigError
from fetcher.redact import Redactor, origin
from fetcher.retry import RetryPolicy
from fetcher.service.auth import ServiceAccountAuth, token_url
from fetcher.service.client import RestoreJobsClient
from fetcher.service.http import USER_AGENT, api_client, request_log

CLIENT_ID = "mdb_sa_id_0123456789abcdef01234567"
CLIENT_SECRET = "mdb_sa_sk_s3cr3t-0a1b2c3d4e5f"
BASIC = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
API_ROOT = "/api/atlas/v2"
API_PATH = f"{API_ROOT}/groups/5f0c0ffee0000000000000aa/things"
TOKEN_PATH = "/api/oauth/token"


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Issuer:
    """A token endpoint and an API that accepts the tokens it issued, on one server."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.token_posts: list[tuple[str, dict[str, str], bytes]] = []
        self.issued: list[str] = []
        self.valid: set[str] = set()
        self.api_seen: list[str | None] = []  # the Authorization of each API request
        self.api_bodies: list[bytes] = []
        self.refusal_body: Callable[[], Any] | None = None  # the body of the API's 401s
        self.expires_in: Any = 3600
        self.token_delay = 0.0
        self.token_delays: list[float] = []  # one-off delays, used before token_delay
        self.token_answer: Callable[[Request], Response] | None = None
        self.accept = True  # False: the API refuses every token
        server.expect_request(TOKEN_PATH).respond_with_handler(self._token)
        server.expect_request(re.compile(re.escape(API_ROOT) + "/.*")).respond_with_handler(
            self._api
        )

    @property
    def api_url(self) -> str:
        """A URL of the API."""
        return self.server.url_for(API_PATH)

    def _token(self, request: Request) -> Response:
        self.token_posts.append((request.method, dict(request.headers), request.get_data()))
        time.sleep(self.token_delays.pop(0) if self.token_delays else self.token_delay)
        if self.token_answer is not None:
            return self.token_answer(request)
        value = f"tok-{secrets.token_urlsafe(24)}"
        self.issued.append(value)
        self.valid.add(value)
        body: dict[str, Any] = {"access_token": value, "token_type": "Bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return Response(json.dumps(body), 200, content_type="application/json")

    def _api(self, request: Request) -> Response:
        header = request.headers.get("Authorization")
        self.api_seen.append(header)
        self.api_bodies.append(request.get_data())
        if self.accept and header and header.startswith("Bearer ") and header[7:] in self.valid:
            page = {"results": [], "totalCount": 0, "links": []}
            return Response(json.dumps(page), 200, content_type="application/json")
        refusal = self.refusal_body() if self.refusal_body else '{"error": 401}'
        return Response(refusal, 401, content_type="application/json")


@pytest.fixture(scope="module")
def parallel_server() -> Iterator[HTTPServer]:
    """A server that answers each request at once in a thread of its own.

    With pytest-httpserver's one-at-a-time server, a request that a test gave up on (a
    timeout) would wait in its queue and be answered by the next test's handlers.
    """
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def issuer(parallel_server: HTTPServer) -> Issuer:
    """A token endpoint and an API, on the parallel server."""
    parallel_server.clear()
    return Issuer(parallel_server)


def _client(
    issuer: Issuer,
    *,
    clock: Callable[[], float] | None = None,
    url: str | None = None,
    timeout: float = 10.0,
    redactor: Redactor | None = None,
) -> httpx.Client:
    auth = ServiceAccountAuth(
        CLIENT_ID,
        CLIENT_SECRET,
        api_origin=origin(issuer.api_url),
        token_url=url or issuer.server.url_for(TOKEN_PATH),
        clock=clock or Clock(),
        redactor=redactor,
    )
    return httpx.Client(auth=auth, timeout=timeout, follow_redirects=False)


def _one_line_without_secrets(message: str, issuer: Issuer) -> None:
    assert "\n" not in message and "\r" not in message
    for secret in (CLIENT_SECRET, BASIC, *issuer.issued):
        assert secret not in message


def test_token_url_is_the_oauth_endpoint_of_the_api_host() -> None:
    assert token_url("https://cloud.mongodb.com/api/atlas/v2") == (
        "https://cloud.mongodb.com/api/oauth/token"
    )
    assert token_url("https://cloud.mongodb.com:443/api/atlas/v2/") == (
        "https://cloud.mongodb.com/api/oauth/token"
    )
    assert token_url("http://127.0.0.1:8080/api/atlas/v1.0") == (
        "http://127.0.0.1:8080/api/oauth/token"
    )
    with pytest.raises(ConfigError):
        token_url("not a url")


def test_token_is_asked_for_with_basic_auth_and_a_form_body(issuer: Issuer) -> None:
    with _client(issuer) as client:
        response = client.get(issuer.api_url)
    assert response.status_code == 200
    [(method, headers, body)] = issuer.token_posts
    assert method == "POST"
    assert headers["Authorization"] == f"Basic {BASIC}"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert headers["Accept"] == "application/json"
    assert body == b"grant_type=client_credentials"
    assert issuer.api_seen == [f"Bearer {issuer.issued[0]}"]


def test_token_is_reused_across_requests(issuer: Issuer) -> None:
    with _client(issuer) as client:
        for _ in range(4):
            assert client.get(issuer.api_url).status_code == 200
    assert len(issuer.token_posts) == 1
    assert issuer.api_seen == [f"Bearer {issuer.issued[0]}"] * 4


@pytest.mark.parametrize(
    ("expires_in", "still_fresh", "renewed"),
    [
        (3600, 3239.0, 3241.0),  # 10 % of an hour: 360 s before the end
        (300, 239.0, 241.0),  # at least 60 s before the end
        (30, 14.0, 16.0),  # a very short token: renewed half-way, not on every request
        (None, 3239.0, 3241.0),  # no expires_in: an hour
        ("600", 539.0, 541.0),  # a number sent as a string
    ],
)
def test_token_is_renewed_shortly_before_it_expires(
    issuer: Issuer, expires_in: Any, still_fresh: float, renewed: float
) -> None:
    issuer.expires_in = expires_in
    clock = Clock()
    with _client(issuer, clock=clock) as client:
        client.get(issuer.api_url)
        clock.now = still_fresh
        client.get(issuer.api_url)
        assert len(issuer.token_posts) == 1
        clock.now = renewed
        assert client.get(issuer.api_url).status_code == 200
    assert len(issuer.token_posts) == 2
    assert issuer.api_seen[-1] == f"Bearer {issuer.issued[1]}"


def test_a_401_gets_one_new_token_and_one_retry(issuer: Issuer) -> None:
    with _client(issuer) as client:
        client.get(issuer.api_url)
        issuer.valid.clear()  # revoked on the server's side
        response = client.get(issuer.api_url)
        assert response.status_code == 200
        first, second = issuer.issued
        assert issuer.api_seen == [f"Bearer {first}", f"Bearer {first}", f"Bearer {second}"]
        client.get(issuer.api_url)  # and the new token is kept
    assert len(issuer.token_posts) == 2


def test_a_request_body_is_sent_again_on_the_retry(issuer: Issuer) -> None:
    with _client(issuer) as client:
        client.get(issuer.api_url)
        issuer.valid.clear()
        response = client.post(issuer.api_url, content=iter([b"streamed ", b"body"]))
    assert response.status_code == 200
    assert issuer.api_bodies[-2:] == [b"streamed body", b"streamed body"]


def test_the_body_of_a_refused_request_is_left_unread(issuer: Issuer) -> None:
    def endless() -> Iterator[bytes]:
        for _ in range(40):  # 4 s of body, unless the client hangs up
            yield b"x" * 1024
            time.sleep(0.1)

    with _client(issuer) as client:
        client.get(issuer.api_url)
        issuer.valid.clear()
        issuer.refusal_body = endless
        started = time.monotonic()
        assert client.get(issuer.api_url).status_code == 200
    assert time.monotonic() - started < 2.0


def test_a_second_401_reaches_the_caller(issuer: Issuer) -> None:
    issuer.accept = False
    with _client(issuer) as client:
        response = client.get(issuer.api_url)
    assert response.status_code == 401
    assert len(issuer.token_posts) == 2
    assert len(issuer.api_seen) == 2


def test_no_token_and_no_authorization_for_another_origin(
    issuer: Issuer, httpserver_ipv4: HTTPServer
) -> None:
    seen: list[str | None] = []

    def elsewhere(request: Request) -> Response:
        seen.append(request.headers.get("Authorization"))
        return Response("ok")

    httpserver_ipv4.expect_request("/file").respond_with_handler(elsewhere)
    other = httpserver_ipv4.url_for("/file")
    assert origin(other) != origin(issuer.api_url)
    with _client(issuer) as client:
        client.get(other, headers={"Authorization": "Bearer planted"})
        assert issuer.token_posts == []  # no token asked for on another origin's behalf
        client.get(issuer.api_url)
        client.get(other)
    assert seen == [None, None]
    assert len(issuer.token_posts) == 1


def test_same_port_under_another_host_name_is_another_origin(issuer: Issuer) -> None:
    with _client(issuer) as client:
        client.get(issuer.api_url)
        other = issuer.api_url.replace("//localhost:", "//127.0.0.1:")
        assert origin(other) != origin(issuer.api_url)
        response = client.get(other)
    assert response.status_code == 401
    assert issuer.api_seen[-1] is None


def _refusal(description: str, **extra: Any) -> Callable[[Request], Response]:
    def answer(request: Request) -> Response:
        body = {"error": "invalid_client", "error_description": description, **extra}
        return Response(json.dumps(body), 401, content_type="application/json")

    return answer


def test_a_refused_service_account_is_one_clear_line_without_secrets(issuer: Issuer) -> None:
    issuer.token_answer = _refusal(
        f"bad secret {CLIENT_SECRET} in {BASIC}\n\x1b[2Jretry " + "x" * 400,
        access_token="tok-in-an-error-0123456789",
    )
    issuer.issued.append("tok-in-an-error-0123456789")
    with _client(issuer) as client, pytest.raises(AuthError) as caught:
        client.get(issuer.api_url)
    message = str(caught.value)
    assert message.startswith(
        f"the service account was refused by {origin(issuer.api_url)} (invalid_client - bad"
    )
    assert message.endswith(": check MONGODB_ATLAS_CLIENT_ID/SECRET")
    assert "\x1b" not in message
    assert len(message) < 400
    assert caught.value.status == 401
    _one_line_without_secrets(message, issuer)
    assert issuer.api_seen == []


def test_a_refusal_on_renewal_does_not_show_the_old_token(issuer: Issuer) -> None:
    with _client(issuer) as client:
        client.get(issuer.api_url)
        old = issuer.issued[0]
        issuer.valid.clear()
        issuer.token_answer = _refusal(f"token {old} was revoked")
        with pytest.raises(AuthError, match="refused") as caught:
            client.get(issuer.api_url)
    _one_line_without_secrets(str(caught.value), issuer)


def _answer(
    body: bytes,
    status: int = 200,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Callable[[Request], Response]:
    return lambda request: Response(body, status, headers or {}, content_type=content_type)


def _token_json(**fields: Any) -> bytes:
    doc = {"access_token": "tok-0123456789abcdef", "token_type": "Bearer", "expires_in": 3600}
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        (_answer(b"<html>hello</html>", content_type="text/html"), ApiError, "no JSON object"),
        (_answer(b"[1, 2]"), ApiError, "no JSON object"),
        (_answer(b"[" * 60_000), ApiError, "no JSON object"),
        (_answer(_token_json(access_token=...)), ApiError, "no access_token"),
        (_answer(_token_json(access_token=12345678)), ApiError, "no access_token"),
        (_answer(_token_json(access_token="tok\r\nX-Evil: 1")), ApiError, "unfit for a header"),
        (_answer(_token_json(token_type="mac")), ApiError, "type mac, not Bearer"),
        (_answer(_token_json(token_type=...)), ApiError, "type none, not Bearer"),
        (_answer(_token_json(expires_in=-5)), ApiError, "expires_in"),
        (_answer(_token_json(expires_in=0)), ApiError, "expires_in"),
        (_answer(_token_json(expires_in="soon")), ApiError, "expires_in"),
        (_answer(_token_json(expires_in=True)), ApiError, "expires_in"),
        (_answer(_token_json(expires_in=[3600])), ApiError, "expires_in"),
        (_answer(_token_json(expires_in=float("nan"))), ApiError, "expires_in"),
        (_answer(_token_json(expires_in="inf")), ApiError, "expires_in"),
        (_answer(b'{"error": "temporarily_unavailable"}', 503), ApiError, "answered 503"),
        (_answer(b"", 302, headers={"Location": "http://elsewhere/"}), ApiError, "answered 302"),
        (_answer(b'{"error": "access_denied"}', 403), AuthError, "answered 403"),
        (_answer(_token_json(), headers={"Content-Encoding": "br"}), ApiError, "content encoding"),
        (
            _answer(b"\x1f\x8b garbage", headers={"Content-Encoding": "gzip"}),
            ApiError,
            "decompress",
        ),
    ],
)
def test_a_token_endpoint_answering_garbage_is_one_line(
    issuer: Issuer, answer: Callable[[Request], Response], error: type[ApiError], words: str
) -> None:
    issuer.token_answer = answer
    with _client(issuer) as client, pytest.raises(error) as caught:
        client.get(issuer.api_url)
    assert words in str(caught.value)
    assert str(caught.value).startswith("the token endpoint ")
    _one_line_without_secrets(str(caught.value), issuer)
    assert issuer.api_seen == []


def test_a_gzipped_token_answer_is_read(issuer: Issuer) -> None:
    issuer.token_answer = _answer(
        gzip.compress(_token_json()), headers={"Content-Encoding": "gzip"}
    )
    issuer.valid.add("tok-0123456789abcdef")
    with _client(issuer) as client:
        assert client.get(issuer.api_url).status_code == 200
    assert issuer.api_seen == ["Bearer tok-0123456789abcdef"]


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_the_token_answer_is_read_under_a_cap(issuer: Issuer, encoding: str) -> None:
    padded = _token_json(padding=" " * (200 * 1024))
    body = gzip.compress(padded) if encoding == "gzip" else padded

    def answer(request: Request) -> Response:
        # Streamed with no Content-Length: only counting the bytes can stop it.
        response = Response(iter([body[i : i + 4096] for i in range(0, len(body), 4096)]))
        response.headers["Content-Encoding"] = encoding
        return response

    issuer.token_answer = answer
    with _client(issuer) as client, pytest.raises(ApiError, match="more than 65536 bytes"):
        client.get(issuer.api_url)
    assert issuer.api_seen == []


def test_a_transport_error_on_the_token_post_comes_out_of_send(issuer: Issuer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{closed_port}{TOKEN_PATH}"
    with _client(issuer, url=url) as client:
        outcomes: list[BaseException] = []

        def attempt() -> None:
            try:
                client.get(issuer.api_url)
            except BaseException as exc:
                outcomes.append(exc)

        for _ in range(2):  # the second one proves the token lock was let go
            worker = threading.Thread(target=attempt, daemon=True)
            worker.start()
            worker.join(timeout=10)
            assert not worker.is_alive()
    assert [type(exc) for exc in outcomes] == [httpx.ConnectError, httpx.ConnectError]


def test_the_token_post_keeps_the_client_timeout(issuer: Issuer) -> None:
    issuer.token_delays = [1.5]
    started = time.monotonic()
    with _client(issuer, timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
        client.get(issuer.api_url)
    assert time.monotonic() - started < 1.4


def test_the_api_client_retries_a_token_post_that_timed_out(issuer: Issuer) -> None:
    issuer.token_delays = [1.0]
    base = issuer.server.url_for(API_ROOT)
    settings = Settings(base_url=base, timeout=0.3, retries=2)
    with api_client(settings, ServiceAccount(CLIENT_ID, CLIENT_SECRET)) as http:
        api = RestoreJobsClient(http, base, policy=RetryPolicy(retries=2, sleep=lambda s: None))
        assert api.list_jobs("5f0c0ffee0000000000000aa", "Cluster0") == []
    assert len(issuer.token_posts) == 2  # the slow one (answered too late), then the retry
    assert issuer.api_seen == [f"Bearer {issuer.issued[-1]}"]


def test_the_log_and_the_redactor_hide_the_secret_and_every_token(issuer: Issuer) -> None:
    lines: list[str] = []
    redactor = Redactor()
    settings = Settings(base_url=issuer.server.url_for(API_ROOT))
    account = ServiceAccount(CLIENT_ID, CLIENT_SECRET)
    with api_client(settings, account, log=lines.append, redactor=redactor) as http:
        http.get(issuer.api_url)
        issuer.valid.clear()
        http.get(issuer.api_url)  # a 401, a new token, a retry
    assert len(issuer.issued) == 2
    assert issuer.token_posts[0][1]["User-Agent"] == USER_AGENT
    log = "\n".join(lines)
    assert f"> POST {issuer.server.url_for(TOKEN_PATH)} [" in log
    assert "Authorization: Basic (hidden)" in log
    assert "Authorization: Bearer (hidden)" in log
    for secret in (CLIENT_SECRET, BASIC, *issuer.issued):
        assert secret not in log
    shown = redactor.scrub(f"{CLIENT_SECRET} {BASIC} {issuer.issued[0]} {issuer.issued[1]}")
    assert shown == "*** *** *** ***"


def test_the_request_log_hook_sees_no_token_on_a_bare_client(issuer: Issuer) -> None:
    lines: list[str] = []
    auth = ServiceAccountAuth(
        CLIENT_ID,
        CLIENT_SECRET,
        api_origin=origin(issuer.api_url),
        token_url=issuer.server.url_for(TOKEN_PATH),
    )
    hooks = request_log(origin(issuer.api_url), lines.append)
    with httpx.Client(auth=auth, event_hooks=hooks) as client:
        client.get(issuer.api_url)
    assert len(lines) == 4  # the token POST and its answer, the API request and its answer
    assert all(CLIENT_SECRET not in line and issuer.issued[0] not in line for line in lines)


def test_threads_finding_an_expired_token_ask_for_one_new_token(issuer: Issuer) -> None:
    clock = Clock()
    with _client(issuer, clock=clock) as client:
        client.get(issuer.api_url)
        clock.now = 10_000.0
        issuer.token_delay = 0.3  # all threads arrive while the first one is asking
        start = threading.Barrier(8)
        statuses: list[int] = []

        def work() -> None:
            start.wait()
            statuses.append(client.get(issuer.api_url).status_code)

        workers = [threading.Thread(target=work, daemon=True) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=30)
    assert statuses == [200] * 8
    assert len(issuer.token_posts) == 2
    assert issuer.api_seen[1:] == [f"Bearer {issuer.issued[1]}"] * 8


def test_threads_hit_by_one_401_ask_for_one_new_token(issuer: Issuer) -> None:
    with _client(issuer) as client:
        client.get(issuer.api_url)
        issuer.valid.clear()
        issuer.token_delay = 0.3
        start = threading.Barrier(4)
        statuses: list[int] = []

        def work() -> None:
            start.wait()
            statuses.append(client.get(issuer.api_url).status_code)

        workers = [threading.Thread(target=work, daemon=True) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=30)
    assert statuses == [200] * 4
    assert len(issuer.token_posts) == 2


def test_the_secret_does_not_show_in_a_repr() -> None:
    auth = ServiceAccountAuth(
        CLIENT_ID, CLIENT_SECRET, api_origin="https://h", token_url=token_url("https://h/api")
    )
    assert CLIENT_SECRET not in repr(auth)
    assert BASIC not in repr(auth)


def test_an_async_client_is_refused(issuer: Issuer) -> None:
    import asyncio

    async def main() -> None:
        auth = ServiceAccountAuth(
            CLIENT_ID,
            CLIENT_SECRET,
            api_origin=origin(issuer.api_url),
            token_url=issuer.server.url_for(TOKEN_PATH),
        )
        async with httpx.AsyncClient(auth=auth) as client:
            await client.get(issuer.api_url)

    with pytest.raises(RuntimeError, match=r"httpx\.Client only"):
        asyncio.run(main())
