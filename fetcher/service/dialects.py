"""The dialect an API root speaks, chosen once from its path."""

from __future__ import annotations

from urllib.parse import urlsplit

from fetcher.service import atlas_v2
from fetcher.service.legacy import LEGACY
from fetcher.service.model import Dialect


def dialect_for(base_url: str) -> Dialect:
    """`/api/atlas/v2` is Atlas Cloud Backup's API; any other root is the legacy one."""
    if urlsplit(base_url).path.rstrip("/").endswith(atlas_v2.PATH):
        return atlas_v2.ATLAS_V2
    return LEGACY
