"""ServiceAccountAuth: Atlas service accounts (OAuth 2.0 client credentials) for httpx.

The token is asked for inside the auth flow of the API request that needs it: the POST goes
through the same client (its TLS settings, timeout and --verbose log), and a transport error
reaching the token endpoint comes out of `client.send()` as the httpx.TransportError it is,
for the caller's retries to see.
"""

from __future__ import annotations

import base64
import math
import threading
import time
import zlib
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Any

import httpx

from fetcher.errors import ApiError, AuthError, ConfigError
from fetcher.redact import MASK, Redactor, origin, printable
from fetcher.service.client import loads

TOKEN_PATH = "/api/oauth/token"  # noqa: S105 - a path, not a password
MAX_TOKEN_BODY = 64 * 1024
DEFAULT_EXPIRES_IN = 3600.0
# Renew a token when less than this remains of its life: max(60 s, 10 %), but never more
# than half its life, so that a token granted for a few seconds is still used a while.
MIN_RENEW_MARGIN = 60.0
RENEW_FRACTION = 0.1
MAX_DETAIL = 200

_Flow = Generator[httpx.Request, httpx.Response, None]
_TokenFlow = Generator[httpx.Request, httpx.Response, str]


def token_url(base_url: str) -> str:
    """The OAuth token endpoint of an API root: https://h/api/atlas/v2 -> https://h/api/oauth/token."""
    root = origin(base_url)
    if not root:
        raise ConfigError(f"cannot derive a token URL from {printable(base_url)[:200]!r}")
    return root + TOKEN_PATH


@dataclass(frozen=True)
class _Token:
    value: str
    renew_at: float  # on the auth's clock


class ServiceAccountAuth(httpx.Auth):
    """Bearer auth with tokens from the client-credentials grant, for the API origin only.

    Requests to any other origin go out with no Authorization at all. A token is reused until
    shortly before it expires; a 401 from the API gets one new token and one retry. One lock
    guards the token: when several threads find it stale, one asks and the others wait for it.
    Works with httpx.Client only (the flow does its own I/O under a thread lock).
    """

    requires_request_body = True  # a request retried after a 401 must be sent whole again

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        api_origin: str,
        token_url: str,
        clock: Callable[[], float] = time.monotonic,
        redactor: Redactor | None = None,
        max_token_body: int = MAX_TOKEN_BODY,
    ) -> None:
        self._api_origin = api_origin
        self._token_url = token_url
        self._token_origin = origin(token_url)
        self._secret = client_secret
        self._basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode("ascii")
        self._clock = clock
        self._redactor = redactor
        self._max_body = max_token_body
        self._token: _Token | None = None
        self._lock = threading.Lock()
        if redactor is not None:
            redactor.add(client_secret)
            redactor.add(self._basic)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_origin={self._api_origin!r})"

    def sync_auth_flow(self, request: httpx.Request) -> _Flow:
        """Add a bearer token to API requests (asking for one when needed); strip others."""
        if origin(str(request.url)) != self._api_origin:
            request.headers.pop("Authorization", None)
            yield request
            return
        request.read()  # requires_request_body: the retry must send it again
        token = yield from self._valid_token(request, refused=None)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        # The token may have been revoked or the server's clock may differ from ours: one new
        # token (unless another thread got one already), one retry, and the answer stands.
        _discard(response)
        token = yield from self._valid_token(request, refused=token)
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Not supported: the token lock is a thread lock."""
        raise RuntimeError("ServiceAccountAuth works with httpx.Client only")
        yield request  # pragma: no cover - makes this an async generator

    def _valid_token(self, request: httpx.Request, *, refused: str | None) -> _TokenFlow:
        # The lock is held across the token POST: the generator runs in the thread that sends
        # the request, and httpx closes it (releasing the lock) on any error.
        with self._lock:
            current = self._token
            if (
                current is not None
                and current.value != refused
                and self._clock() < current.renew_at
            ):
                return current.value
            asked_at = self._clock()
            response = yield self._token_request(request)
            body = self._read(response)
            # Tokens known so far must not show in an error message either.
            known = (current.value if current else None, refused)
            value, lifetime = self._parse(response.status_code, response.headers, body, known)
            margin = min(max(MIN_RENEW_MARGIN, lifetime * RENEW_FRACTION), lifetime / 2)
            self._token = _Token(value, asked_at + lifetime - margin)
            if self._redactor is not None:
                self._redactor.add(value)
            return value

    def _token_request(self, request: httpx.Request) -> httpx.Request:
        headers = {
            "Authorization": f"Basic {self._basic}",
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
        }
        if "user-agent" in request.headers:
            headers["User-Agent"] = request.headers["user-agent"]
        # A request built outside client.build_request() carries no timeout unless given one.
        extensions = {k: v for k, v in request.extensions.items() if k == "timeout"}
        return httpx.Request(
            "POST",
            self._token_url,
            headers=headers,
            content=b"grant_type=client_credentials",
            extensions=extensions,
        )

    def _read(self, response: httpx.Response) -> bytes:
        """Read the token endpoint's answer, at most max_body bytes before and after decoding."""
        too_big = ApiError(
            f"the token endpoint {self._token_origin} sent more than {self._max_body} bytes",
            status=response.status_code,
        )
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_raw():
                size += len(chunk)
                if size > self._max_body:
                    raise too_big
                chunks.append(chunk)
        finally:
            response.close()
        raw = b"".join(chunks)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            body = raw
        elif encoding in ("gzip", "x-gzip", "deflate"):
            inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)
            try:
                body = inflater.decompress(raw, self._max_body + 1)
            except zlib.error:
                raise ApiError(
                    f"the token endpoint {self._token_origin} sent a body that does not decompress",
                    status=response.status_code,
                ) from None
            if len(body) > self._max_body or inflater.unconsumed_tail:
                raise too_big
        else:
            raise ApiError(
                f"the token endpoint {self._token_origin} answered with an unsupported content"
                f" encoding ({printable(encoding)[:40]})",
                status=response.status_code,
            )
        # httpx reads each answer of an auth flow once the flow moves on; this one has been
        # read here (under a cap), so hand httpx its content rather than an exhausted stream.
        response._content = body
        return body

    def _parse(
        self, status: int, headers: httpx.Headers, body: bytes, known: tuple[str | None, ...]
    ) -> tuple[str, float]:
        where = self._token_origin
        try:
            doc: Any = loads(body)
        except ValueError:
            doc = None
        if status != 200:
            detail = self._detail(doc, known)
            if status in (400, 401):
                raise AuthError(
                    f"the service account was refused by {where}{detail}:"
                    " check MONGODB_ATLAS_CLIENT_ID/SECRET",
                    status=status,
                )
            reason = httpx.codes.get_reason_phrase(status) or "error"
            error = AuthError if status == 403 else ApiError
            raise error(
                f"the token endpoint {where} answered {status} {reason}{detail}", status=status
            )
        if not isinstance(doc, dict):
            media = printable(headers.get("content-type", "no content type").split(";")[0])[:60]
            raise ApiError(f"the token endpoint {where} answered with no JSON object ({media})")
        value = doc.get("access_token")
        if not isinstance(value, str) or not value:
            raise ApiError(f"the token endpoint {where} sent no access_token")
        if not all("\x21" <= c <= "\x7e" for c in value):
            raise ApiError(f"the token endpoint {where} sent an access_token unfit for a header")
        token_type = doc.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            shown = printable(token_type)[:40] if isinstance(token_type, str) else "none"
            raise ApiError(f"the token endpoint {where} sent a token of type {shown}, not Bearer")
        return value, self._lifetime(doc.get("expires_in", DEFAULT_EXPIRES_IN))

    def _lifetime(self, value: object) -> float:
        seconds: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            try:
                seconds = float(value.strip())
            except ValueError:
                seconds = None
        if seconds is None or not math.isfinite(seconds) or seconds <= 0:
            raise ApiError(
                f"the token endpoint {self._token_origin} sent an expires_in that is not"
                " a positive number of seconds"
            )
        return seconds

    def _detail(self, doc: Any, known: tuple[str | None, ...]) -> str:
        """The server's error and error_description, printable, short and free of secrets."""
        if not isinstance(doc, dict):
            return ""
        parts = [str(doc[k]) for k in ("error", "error_description") if doc.get(k)]
        if not parts:
            return ""
        text = " - ".join(parts)
        for secret in (self._secret, self._basic, doc.get("access_token"), *known):
            if isinstance(secret, str) and secret:
                text = text.replace(secret, MASK)
        return f" ({printable(text)[:MAX_DETAIL]})"


def _discard(response: httpx.Response) -> None:
    """Drop an answer the flow does not pass on, unread: its body could be of any size."""
    response.close()
    response._content = b""  # what httpx reads of it once the flow moves on
