"""The tests' pull host: tests/fake/pull.py, under the name the tests import it by."""

from __future__ import annotations

from tests.fake.pull import CHUNK, HOLD_LIMIT, Fault, PullServer, Resource, Served

__all__ = ["CHUNK", "HOLD_LIMIT", "Fault", "PullServer", "Resource", "Served"]
