"""Build the two HTTP clients: one for the API (digest auth), one for pull links (no auth)."""

from __future__ import annotations

import functools
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import certifi
import httpx

from fetcher import __version__
from fetcher.config import Auth, Credentials, Settings
from fetcher.engine.netio import read_in_bulk
from fetcher.errors import ConfigError
from fetcher.redact import Redactor, bare_url, display_url, origin
from fetcher.service.auth import ServiceAccountAuth, token_url
from fetcher.service.client import OriginDigestAuth

Log = Callable[[str], None]
# What a support log shows of each request and answer: the headers that drive resuming,
# retrying and redirects. Nothing else, so no other header can carry a secret into it.
_REQUEST_HEADERS = ("range", "if-range", "accept", "accept-encoding")
_RESPONSE_HEADERS = (
    "content-length",
    "content-range",
    "content-encoding",
    "transfer-encoding",
    "accept-ranges",
    "etag",
    "last-modified",
    "retry-after",
)

USER_AGENT = f"fetcher/{__version__}"
# The pull client's connections are read in bulk (fetcher.engine.netio): each read returns every TLS
# record already received, up to 256 KiB, where httpcore's returns one (16 KiB at most). Most
# of a single-connection body is read straight from the socket anyway (fetcher.engine.stream); what
# goes through httpx is response heads, the first piece of a body, chunked bodies and the
# pieces of --connections, which must, so that their connection serves the next piece.


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Verification always on: the public roots, plus --ca-cert or SSL_CERT_FILE if given."""
    extra = settings.ca_cert or (
        Path(os.environ["SSL_CERT_FILE"]) if os.environ.get("SSL_CERT_FILE") else None
    )
    return _context(extra)


@functools.lru_cache(maxsize=4)
def _context(extra: Path | None) -> ssl.SSLContext:
    # Loading certifi's bundle takes ~0.1 s; both clients share one (thread-safe) context.
    context = ssl.create_default_context(cafile=certifi.where())
    if extra is not None:
        try:
            context.load_verify_locations(cafile=str(extra))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load CA certificates from {extra}: {exc}") from None
    return context


def _timeout(settings: Settings) -> httpx.Timeout:
    # `read` bounds how long a stream may deliver nothing before the attempt is cut.
    return httpx.Timeout(settings.timeout, connect=settings.connect_timeout)


def request_log(api_origin: str | None, write: Log) -> dict[str, list[Callable[..., Any]]]:
    """httpx event hooks that log every request and its answer, with no secret in them.

    URLs of the API keep their path and query (ids, page numbers); any other URL (a pull link,
    whose path holds a token and whose query may hold a signature) is shown as its origin and
    file name. Authorization shows its scheme only. Lines go through `write`, which the CLI
    scrubs of every secret it knows, as it does all it prints.
    """
    started: dict[int, float] = {}

    def shown(url: str) -> str:
        if api_origin is not None and origin(url) == api_origin:
            return bare_url(url, query=True, limit=None)  # never its user info
        return display_url(url)

    def on_request(request: httpx.Request) -> None:
        started[id(request)] = time.monotonic()
        headers = _picked(request.headers, _REQUEST_HEADERS)
        if "authorization" in request.headers:
            scheme = request.headers["authorization"].split(" ", 1)[0]
            headers.append(f"Authorization: {scheme} (hidden)")
        write(f"> {request.method} {shown(str(request.url))}{_listed(headers)}")

    def on_response(response: httpx.Response) -> None:
        request = response.request
        began = started.pop(id(request), None)
        took = f" in {time.monotonic() - began:.3f} s" if began is not None else ""
        headers = _picked(response.headers, _RESPONSE_HEADERS)
        if "location" in response.headers:
            headers.append(
                f"Location: {shown(urljoin(str(request.url), response.headers['location']))}"
            )
        if "www-authenticate" in response.headers:
            scheme = response.headers["www-authenticate"].split(" ", 1)[0]
            headers.append(f"WWW-Authenticate: {scheme} (challenge)")
        line = f"< {response.status_code} {response.reason_phrase} for {request.method}"
        write(f"{line} {shown(str(request.url))}{took}{_listed(headers)}")

    return {"request": [on_request], "response": [on_response]}


def _picked(headers: httpx.Headers, names: tuple[str, ...]) -> list[str]:
    return [f"{name.title()}: {headers[name]}" for name in names if name in headers]


def _listed(headers: list[str]) -> str:
    return f" [{'; '.join(headers)}]" if headers else ""


def api_client(
    settings: Settings,
    credentials: Auth,
    *,
    log: Log | None = None,
    redactor: Redactor | None = None,
) -> httpx.Client:
    """The API client: credentials bound to the API origin, no redirects followed by httpx.

    An API key pair answers digest challenges; a service account gets bearer tokens from the
    API host's OAuth endpoint (its secret, and each token, go to `redactor` when given).
    """
    api_origin = origin(settings.base_url)
    auth: httpx.Auth
    if isinstance(credentials, Credentials):
        auth = OriginDigestAuth(
            credentials.public_key, credentials.private_key, api_origin=api_origin
        )
    else:
        auth = ServiceAccountAuth(
            credentials.client_id,
            credentials.client_secret,
            api_origin=api_origin,
            token_url=token_url(settings.base_url),
            redactor=redactor,
        )
    return httpx.Client(
        auth=auth,
        timeout=_timeout(settings),
        verify=tls_context(settings),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        event_hooks=request_log(api_origin, log) if log else None,
    )


def pull_client(settings: Settings, *, log: Log | None = None) -> httpx.Client:
    """The pull client: no credentials at all; a bearer, when needed, is set per request.

    Its connections read in bulk (fetcher.engine.netio): what --connections and chunked bodies
    receive through httpx costs a fraction of the CPU over HTTPS.
    """
    client = httpx.Client(
        timeout=_timeout(settings),
        verify=tls_context(settings),
        # httpx drops Authorization when a redirect leaves the origin, which keeps a bearer home.
        follow_redirects=True,
        max_redirects=5,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        # --parallel (up to 32) archives of --connections (up to 16) each: no connection
        # waits for a slot, and each stays open for the archive's next piece.
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=512),
        # No origin is shown whole here: even on the API's host a pull link's path is a token.
        event_hooks=request_log(None, log) if log else None,
    )
    read_in_bulk(client)
    return client
