"""fetcher.retry: which answers are retried, how long to wait, and when to stop."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

import httpx
import pytest

from fetcher.retry import (
    MAX_RETRY_AFTER,
    RetryPolicy,
    certificate_error,
    is_retryable_status,
    parse_retry_after,
)


@pytest.mark.parametrize(
    ("status", "retried"),
    [
        (408, True),
        (425, True),
        (429, True),
        (500, True),
        (599, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (416, False),
    ],
)
def test_which_statuses_are_retried(status: int, retried: bool) -> None:
    assert is_retryable_status(status) is retried


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now=now) == 120.0
    assert parse_retry_after("Fri, 04 Dec 2026 10:01:30 GMT", now=now) == 90.0
    assert parse_retry_after("Fri, 04 Dec 2026 09:00:00 GMT", now=now) == 0.0  # past
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


def test_backoff_doubles_with_jitter_and_waits_at_least_retry_after() -> None:
    policy = RetryPolicy(retries=3, base_delay=1.0, max_delay=8.0, rand=lambda: 1.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    low = RetryPolicy(base_delay=1.0, rand=lambda: 0.0)
    assert low.delay(3) == 2.0  # half the ceiling at the least
    assert policy.delay(1, retry_after=30) == 31.0
    assert policy.delay(1, retry_after=10**6) == MAX_RETRY_AFTER + 1.0
    assert not policy.exhausted(3) and policy.exhausted(4)


def test_a_refused_certificate_is_found_on_the_chain() -> None:
    refused = ssl.SSLCertVerificationError("certificate verify failed")
    refused.verify_message = "unable to get local issuer certificate"
    wrapped = httpx.ConnectError("[SSL] failed")
    wrapped.__cause__ = refused  # as httpcore raises it: from the ssl error
    assert certificate_error(wrapped) == "unable to get local issuer certificate"
    assert certificate_error(httpx.ConnectError("refused")) is None
