"""The retry policy shared by the API client and the downloader."""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

# Statuses worth another try: the server or something between us is busy or broken.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Transport failures worth another try: resets, timeouts, short bodies, refused connections.
RETRY_EXCEPTIONS: tuple[type[Exception], ...] = (httpx.TransportError,)
MAX_RETRY_AFTER = 600.0


def is_retryable_status(status: int) -> bool:
    """Return True for 408, 425, 429 and every 5xx."""
    return status in RETRY_STATUSES or 500 <= status <= 599


def certificate_error(exc: BaseException) -> str | None:
    """Why a TLS certificate was refused, when that is what `exc` comes down to.

    A refused certificate is refused again on every retry: callers report it at once.
    httpx and httpcore chain their exceptions, so the ssl error is found on the chain.
    """
    cause: BaseException | None = exc
    for _ in range(10):  # a chain is short; the bound only guards against a cycle
        if cause is None:
            break
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause.verify_message or cause.reason or "certificate verify failed"
        cause = cause.__cause__ or cause.__context__
    return None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Read a Retry-After header (seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter; `sleep` and `rand` are seams for tests."""

    retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    rand: Callable[[], float] = field(default=random.random, repr=False)

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait before the next try, after `failures` consecutive failures."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** max(0, failures - 1))
        wait: float = ceiling / 2 + self.rand() * ceiling / 2
        if retry_after is not None:
            # MongoDB: wait at least Retry-After, then back off further.
            wait = min(MAX_RETRY_AFTER, retry_after) + wait
        return wait

    def exhausted(self, failures: int) -> bool:
        """Return True once `failures` consecutive failures exceed the retry budget."""
        return failures > self.retries
