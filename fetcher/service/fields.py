"""Readers of the fields both dialects' jobs share: ids, strings, times and pull links."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from fetcher.errors import ApiError
from fetcher.redact import origin

SHA1_HEX = re.compile(r"^[0-9a-fA-F]{40}$")
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def job_object(obj: object) -> tuple[dict[str, Any], str]:
    """The job's JSON object and its id, or ApiError when it is neither."""
    if not isinstance(obj, dict):
        raise ApiError("unexpected API response: a restore job is not a JSON object")
    job_id = obj.get("id")
    if not isinstance(job_id, str) or not _ID.match(job_id):
        raise ApiError("unexpected API response: a restore job has no valid id")
    return obj, job_id


def text(obj: dict[str, Any], key: str, job_id: str) -> str | None:
    """A string field, None when absent; ApiError when it is another type."""
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ApiError(f"unexpected API response: job {job_id} has a {key} that is not a string")


def parse_time(value: object, job_id: str) -> datetime | None:
    """An ISO-8601 time as the API writes it (a naive one is UTC), None when absent."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ApiError(f"unexpected API response: job {job_id} has an unreadable expiry time")


def checked_url(url: str | None, job_id: str, what: str = "download") -> str | None:
    """A pull link fetcher can use, None when absent; ApiError (never quoting it) otherwise."""
    if url is not None and (problem := url_problem(url)) is not None:
        # Never quote the URL: its path or its query holds the secret.
        raise ApiError(f"unexpected API response: job {job_id} has a {what} URL {problem}")
    return url or None


def url_problem(url: str) -> str | None:
    """Say what makes a pull URL unusable, or None when it is a plain http(s) URL."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # reading the port parses it: ":99999" raises ValueError
    except ValueError:
        return "that cannot be parsed"
    if parts.scheme.lower() not in ("https", "http"):
        return "that is not HTTP"
    if not origin(url):
        return "with no host"
    if parts.username is not None or parts.password is not None:
        # httpx would turn userinfo into Basic auth: the pull client sends no credentials.
        return "with credentials in it"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        return "with spaces or control characters"
    try:
        httpx.URL(url)  # the client's own parser (IDNA hosts included) must accept it too
    except (httpx.InvalidURL, ValueError):  # idna's errors are UnicodeErrors
        return "that the HTTP client cannot parse"
    return None
