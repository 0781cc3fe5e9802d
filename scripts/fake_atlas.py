#!/usr/bin/env python3
"""A local, stdlib-only stand-in for the MongoDB restore-jobs API and its pull host.

With --v2-shards or --v2-replica-set, also for Atlas Admin API v2 download restores. The server
is tests/fake/service.py, built on the fake the test suite uses (tests/fake/: archives and
restoreInfo.txt, job shapes checked against MongoDB's OpenAPI definition, Range serving);
this script puts the repository on sys.path and runs it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fake.service import (
    DEFAULT_GROUP,
    SNAPSHOT_EPOCH,
    State,
    main,
    member_archive,
    parse_args,
)

__all__ = ["DEFAULT_GROUP", "SNAPSHOT_EPOCH", "State", "main", "member_archive", "parse_args"]

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
