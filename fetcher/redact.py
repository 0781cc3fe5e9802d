"""Keep secrets (pull-URL tokens, bearer values, API keys) out of everything shown or stored."""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> str:
    """Return scheme://host[:port] of a URL, without userinfo; '' when it cannot be parsed.

    Origins decide where credentials may go, so a URL we cannot read (a bad port, a broken
    IPv6 literal) gets an origin equal to no other rather than an exception.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ""
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    if not scheme or not host:
        return ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    # "https://h" and "https://h:443" are one origin; the same page may spell it either way.
    shown_port = f":{port}" if port is not None and port != _DEFAULT_PORTS.get(scheme) else ""
    return f"{scheme}://{host}{shown_port}"


def last_segment(url: str) -> str:
    """Return the percent-decoded last path segment of a URL ('' when there is none)."""
    path = urlsplit(url).path
    return unquote(path.rsplit("/", 1)[-1]) if path else ""


def display_url(url: str) -> str:
    """Show a pull URL as origin + file name: the path before it holds a bearer token."""
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    return f"{origin(url)}/…/{name}" if name else origin(url)


def bare_url(url: str, *, query: bool = False, limit: int | None = 120) -> str:
    """Show a URL of the API as it was, less its user info (and, unless asked, its query).

    Any URL a message names goes through here (or origin, display_url, public_url, which
    already leave user info out): a password typed into --base-url must not reach a terminal,
    even in the error that refuses it. Works on what does not parse as a URL too.
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    text = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme or netloc else parts.path
    if query and parts.query:
        text += f"?{parts.query}"
    text = printable(text)
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def public_url(url: str) -> str:
    """Show a pre-signed link as origin + path: its query holds the signature."""
    return origin(url) + urlsplit(url).path


class Redactor:
    """Collects secrets as they become known and masks them in any text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        """Remember a secret; short strings are ignored so that masking stays meaningful."""
        if secret and len(secret) >= 6:
            with self._lock:
                self._secrets.add(secret)

    def add_url(
        self, url: str | None, *, public: Iterable[str | None] = (), path: bool = True
    ) -> None:
        """Remember the query of a link and, with `path` (a legacy pull link, whose path holds
        a token), every path segment except the file name, fixed words and the ids in
        `public` (the job's own ids, which messages need to show).

        Any other segment may be the token, whatever it looks like: a token that happens to
        look like an ObjectId is still a token. A pre-signed link keeps its secret in the
        query only; its path (bucket, cluster and file names) stays readable.
        """
        if not url:
            return
        parts = urlsplit(url)
        self.add(parts.password)
        self.add(parts.query)
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key.lower() not in _PUBLIC_PARAMS:
                self.add(value)  # presigned links carry their signature in the query
        if not path:
            return
        keep = _PUBLIC_SEGMENTS | {p for p in public if p}
        segments = [s for s in parts.path.split("/") if s]
        for segment in segments[:-1]:
            if segment not in keep and unquote(segment) not in keep:
                self.add(segment)
                self.add(unquote(segment))

    def scrub(self, text: str) -> str:
        """Return text with every known secret replaced by a mask."""
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            text = text.replace(secret, MASK)
        return text


# Query parameters of pre-signed links (S3, GCS, Azure) that say how and until when, not who:
# masking their values would mask dates and words in every message.
_PUBLIC_PARAMS = frozenset(
    {
        "x-amz-algorithm",
        "x-amz-date",
        "x-amz-expires",
        "x-amz-signedheaders",
        "x-goog-algorithm",
        "x-goog-date",
        "x-goog-expires",
        "x-goog-signedheaders",
        "sv",
        "se",
        "st",
        "sp",
        "sr",
        "spr",
    }
)
# Path words of MongoDB pull URLs that are not secret.
_PUBLIC_SEGMENTS = frozenset({"backup", "restore", "v2", "pull", "api", "public", "v1.0"})


def printable(text: str) -> str:
    """Return text fit for a terminal line: no escape sequences, no line breaks.

    Server-given strings (statuses, error details, file names in reasons) reach stderr;
    an ESC byte in one could rewrite the operator's screen, a newline could fake a line.
    """
    return "".join(
        " " if c in "\r\n\t" else "?" if unicodedata.category(c) in _INVISIBLE else c for c in text
    )


_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
