"""Keep secrets (pull-URL tokens, bearer values, API keys) out of everything shown or stored."""

from __future__ import annotations

import threading
from urllib.parse import unquote, urlsplit

MASK = "***"


def origin(url: str) -> str:
    """Return scheme://host[:port] of a URL, without any userinfo."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def last_segment(url: str) -> str:
    """Return the percent-decoded last path segment of a URL ('' when there is none)."""
    path = urlsplit(url).path
    return unquote(path.rsplit("/", 1)[-1]) if path else ""


def display_url(url: str) -> str:
    """Show a pull URL as origin + file name: the path before it holds a bearer token."""
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    return f"{origin(url)}/…/{name}" if name else origin(url)


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

    def add_url(self, url: str | None) -> None:
        """Remember every path segment of a pull URL except the file name and fixed words."""
        if not url:
            return
        parts = urlsplit(url)
        self.add(parts.password)
        self.add(parts.query)
        segments = [s for s in parts.path.split("/") if s]
        for segment in segments[:-1]:
            if segment not in _PUBLIC_SEGMENTS and not _looks_like_object_id(segment):
                self.add(segment)
                self.add(unquote(segment))

    def scrub(self, text: str) -> str:
        """Return text with every known secret replaced by a mask."""
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            text = text.replace(secret, MASK)
        return text


# Path words of MongoDB pull URLs that are not secret.
_PUBLIC_SEGMENTS = frozenset({"backup", "restore", "v2", "pull", "api", "public", "v1.0"})


def _looks_like_object_id(segment: str) -> bool:
    return len(segment) == 24 and all(c in "0123456789abcdefABCDEF" for c in segment)
