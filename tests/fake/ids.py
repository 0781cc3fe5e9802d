"""Identifiers the fakes share: the test project's, and MongoDB-style ids."""

from __future__ import annotations

import hashlib
import secrets

GROUP = "5f0c0ffee0000000000000aa"  # the project (group) every fake serves
CLUSTER = "Cluster0"  # the legacy-backup cluster
CLUSTER_V2 = "Cluster1"  # the Cloud Backup (Atlas v2) cluster
BATCH = "6a1b2c3d4e5f60718293a4b5"  # the sharded restore the tests and the demo fetch


def new_id() -> str:
    """A random 24-hex-digit id like MongoDB's ObjectIds."""
    return secrets.token_hex(12)


def hex_id(*parts: str) -> str:
    """A stable 24-hex-digit id derived from `parts`, so ids survive a server restart."""
    return hashlib.sha1(":".join(parts).encode()).hexdigest()[:24]
