"""A partial file on disk: `.NAME.part`, the state beside it, and how it is given its name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fetcher.names import partial_name, state_name
from fetcher.storage import Destination

_UNSENDABLE = re.compile(r"[\x00-\x1f\x7f]")  # control characters: no header holds them

STATE_VERSION = 1


@dataclass
class PartState:
    """What the partial file belongs to; kept beside it in `.NAME.part.json`."""

    job_id: str
    source: str
    etag: str | None = None
    last_modified: str | None = None
    size: int | None = None
    sha1: str | None = None
    requests: int = 0  # GETs sent to this link for this file, over every run
    # Of a several-connection run's state (version 2): how far the file is whole from its
    # start; the ranges beyond are dropped when one connection continues it.
    prefix: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "jobId": self.job_id,
            "source": self.source,
            "etag": self.etag,
            "lastModified": self.last_modified,
            "size": self.size,
            "sha1": self.sha1,
            "requests": self.requests,
        }

    @classmethod
    def from_json(cls, obj: object) -> PartState | None:
        if not isinstance(obj, dict) or obj.get("version") not in (STATE_VERSION, 2):
            return None
        prefix = None
        if obj.get("version") == 2:  # segmented's: finished ranges, [[start, end], ...]
            done = obj.get("done")
            first = done[0] if isinstance(done, list) and done else [0, 0]
            if not (
                isinstance(first, list)
                and len(first) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in first)
            ):
                return None
            prefix = first[1] if first[0] == 0 and first[1] > 0 else 0
        size = obj.get("size")
        fields = {k: obj.get(k) for k in ("jobId", "source", "etag", "lastModified", "sha1")}
        if not all(isinstance(v, str | None) for v in fields.values()):
            return None
        if not isinstance(fields["jobId"], str) or not isinstance(fields["source"], str):
            return None
        if any(v is not None and _UNSENDABLE.search(v) for v in fields.values()):
            return None  # a validator no header can carry (h11 would refuse, and quote, it)
        if size is not None and (not isinstance(size, int) or size < 0):
            return None
        requests = obj.get("requests", 0)
        if not isinstance(requests, int) or isinstance(requests, bool) or requests < 0:
            return None
        return cls(
            job_id=fields["jobId"],
            source=fields["source"],
            etag=fields["etag"],
            last_modified=fields["lastModified"],
            size=size,
            sha1=fields["sha1"],
            requests=requests,
            prefix=prefix,
        )


def commit(dest: Destination, name: str) -> None:
    """Give a verified partial file its final name, durably, and drop its state."""
    dest.replace(partial_name(name), name)
    dest.remove(state_name(name))


def discard(dest: Destination, name: str) -> None:
    """Delete a partial file and its state."""
    dest.remove(partial_name(name))
    dest.remove(state_name(name))
