"""Build the two HTTP clients: one for the API (digest auth), one for pull links (no auth)."""

from __future__ import annotations

import functools
import os
import ssl
from pathlib import Path

import certifi
import httpcore
import httpx

from fetcher import __version__
from fetcher.api import OriginDigestAuth
from fetcher.config import Credentials, Settings
from fetcher.errors import ConfigError
from fetcher.redact import origin

USER_AGENT = f"fetcher/{__version__}"
# httpcore reads 64 KiB per socket read. httpx alone took 2.4 s to read 1 GiB from nginx on
# loopback that way, 1.8 s with 1 MiB reads (2.0 s with 4 MiB: bigger buffers cost more in
# allocation than they save). The transfer reads most of a body straight from the socket (see
# fetcher.stream.read_body); this size still serves response heads, the first piece of a
# body, and bodies that httpx must unframe (chunked ones).
SOCKET_READ_BYTES = 1024 * 1024


def tune_httpcore() -> None:
    """Raise httpcore's per-read size; a class attribute is the only knob it offers."""
    for cls in (httpcore._sync.http11.HTTP11Connection,):
        if getattr(cls, "READ_NUM_BYTES", 0) < SOCKET_READ_BYTES:
            cls.READ_NUM_BYTES = SOCKET_READ_BYTES


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


def api_client(settings: Settings, credentials: Credentials) -> httpx.Client:
    """The API client: digest auth bound to the API origin, no redirects followed by httpx."""
    return httpx.Client(
        auth=OriginDigestAuth(
            credentials.public_key, credentials.private_key, api_origin=origin(settings.base_url)
        ),
        timeout=_timeout(settings),
        verify=tls_context(settings),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


def pull_client(settings: Settings) -> httpx.Client:
    """The pull client: no credentials at all; a bearer, when needed, is set per request."""
    tune_httpcore()
    return httpx.Client(
        timeout=_timeout(settings),
        verify=tls_context(settings),
        # httpx drops Authorization when a redirect leaves the origin, which keeps a bearer home.
        follow_redirects=True,
        max_redirects=5,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
    )
