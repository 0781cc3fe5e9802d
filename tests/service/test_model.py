"""fetcher.service.model: whether a restore job can be downloaded now, later or never."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fetcher.service.legacy import parse_job
from fetcher.service.model import readiness
from tests.support import linked_job_json

NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    ("kwargs", "state", "reason"),
    [
        ({}, "ready", "ready"),
        ({"delivery_status": "EXPIRED"}, "never", "delivery EXPIRED"),
        ({"delivery_status": "MAX_DOWNLOADS_EXCEEDED"}, "never", "delivery MAX_DOWNLOADS_EXCEEDED"),
        ({"delivery_status": "FAILED"}, "never", "delivery FAILED"),
        ({"delivery_status": "INTERRUPTED"}, "never", "delivery INTERRUPTED"),
        ({"status": "BROKEN"}, "never", "job BROKEN"),
        ({"status": "KILLED"}, "never", "job KILLED"),
        ({"expires_in": timedelta(minutes=-5)}, "never", "expired at "),
        ({"status": "IN_PROGRESS", "delivery_status": "NOT_STARTED"}, "wait", "not ready yet"),
        ({"delivery_status": "IN_PROGRESS"}, "wait", "not ready yet"),
        ({"method": "SCP", "url": None}, "never", "delivery method SCP has no file"),
        ({"method": "QUERY", "url": None}, "never", "delivery method QUERY has no file"),
        ({"link": False}, "wait", "delivery READY but no link yet"),
    ],
)
def test_readiness_says_why(kwargs: dict[str, Any], state: str, reason: str) -> None:
    job = parse_job(linked_job_json(**kwargs))
    got_state, got_reason = readiness(job, NOW)
    assert got_state == state
    assert reason in got_reason


def test_expiry_is_compared_with_the_clock_given() -> None:
    job = parse_job(linked_job_json(expires_in=timedelta(hours=1)))
    assert readiness(job, NOW)[0] == "ready"
    assert readiness(job, NOW + timedelta(hours=2))[0] == "never"
