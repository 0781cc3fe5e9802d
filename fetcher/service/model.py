"""The restore jobs of either API dialect, as one model, and whether one can be downloaded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from fetcher.redact import Redactor, display_url, public_url

Readiness = Literal["ready", "wait", "never"]
# Where an archive's SHA1 comes from: the listing (`published`), a read of the job after the
# download (`late`: legacy hashes[] is often empty until then), or nowhere (`none`: Atlas v2).
Sha1Source = Literal["published", "late", "none"]


@dataclass(frozen=True)
class Delivery:
    """How and until when a job's archives can be pulled."""

    method: str  # the API's word for it (legacy methodName, v2 deliveryType)
    status: str  # the delivery's state, in words a person reads in `list`
    expires: datetime | None = None
    max_downloads: int | None = None
    # What `list` shows in its TYPE column; None for the ordinary pull of a file.
    type_label: str | None = None


@dataclass(frozen=True)
class Archive:
    """One file a restore job delivers: where to pull it, what to call it, what it restores."""

    key: str  # unique among the archives of one listing (the job's id, or the job's and a slot)
    names: tuple[str, ...] = ()  # server-given file names, preferred first
    url: str | None = field(default=None, repr=False)
    bearer: str | None = field(default=None, repr=False)
    sha1: str | None = None  # the published SHA1, lower-cased, when the API gives one
    sha1_source: Sha1Source = "late"
    replica_set: str | None = None  # as the API names it (Atlas v2 components)
    secret_path: bool = True  # a legacy pull link's path is a token; a pre-signed one's is not

    @property
    def display(self) -> str:
        """The link as it may be shown: never a query, and never a path that holds a token."""
        if not self.url:
            return ""
        return display_url(self.url) if self.secret_path else public_url(self.url)


@dataclass(frozen=True)
class RestoreJob:
    """A restore job, and the archives it delivers (at least one slot).

    Readiness is decided from three reasons the dialect's parser fills in: `gone` (the job
    will never deliver: checked before the expiry), `unusable` (nothing to pull, after the
    expiry) and `pending` (not ready yet). A job whose archives are not known yet has one
    archive with no link and no name, keyed by the job's id.
    """

    id: str
    status: str  # the job's state, in words a person reads in `list`
    delivery: Delivery
    archives: tuple[Archive, ...]
    stage: str = ""  # what a job not ready yet waits on, for --wait's status line
    gone: str | None = None
    unusable: str | None = None
    pending: str | None = None
    batch_id: str | None = None
    cluster_id: str | None = None
    cluster_name: str | None = None
    group_id: str | None = None
    snapshot_id: str | None = None
    created: str | None = None
    timestamp: dict[str, Any] | None = None
    point_in_time: bool | None = None

    def hide_secrets(self, redactor: Redactor) -> None:
        """Teach `redactor` the secrets of this job's links, keeping its ids readable."""
        for archive in self.archives:
            redactor.add_url(archive.url, public=self.ids, path=archive.secret_path)
            redactor.add(archive.bearer)

    @property
    def ids(self) -> tuple[str | None, ...]:
        """The job's own ids: public, and shown in messages even when a pull URL holds them."""
        return (self.id, self.batch_id, self.cluster_id, self.group_id, self.snapshot_id)

    def info(self) -> dict[str, Any]:
        """What an operator needs of the job in the manifest (nothing secret)."""
        return {
            "clusterId": self.cluster_id,
            "clusterName": self.cluster_name,
            "snapshotId": self.snapshot_id,
            "created": self.created,
            "timestamp": self.timestamp,
            "pointInTime": self.point_in_time,
            "status": self.status,
            "deliveryStatus": self.delivery.status,
            "maxDownloads": self.delivery.max_downloads,
        }


Parse = Callable[[object, str, str], RestoreJob]


@dataclass(frozen=True)
class Dialect:
    """What one API dialect says about itself; everything else sees only RestoreJobs."""

    name: str
    accept: str  # the media type its restore-job resources answer to
    jobs_path: str  # under /groups/{G}/clusters/{C}/
    parse: Parse = field(repr=False)  # one element of results[], or one job: (obj, group, cluster)
    # Why it cannot select a batch (it has none), or None when a sharded restore is a batch.
    no_batches: str | None = None
    # A job is a whole restore (every replica set's archive): with --job it is the batch.
    job_is_restore: bool = False


def iso_utc(when: datetime) -> str:
    """ISO-8601 in UTC with a Z, as the API writes times."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def readiness(job: RestoreJob, now: datetime) -> tuple[Readiness, str]:
    """Say whether a job can be pulled now, later, or never, and why."""
    if job.gone:
        return "never", job.gone
    expires = job.delivery.expires
    if expires is not None and expires <= now:
        return "never", f"expired at {iso_utc(expires)}"
    if job.unusable:
        return "never", job.unusable
    if job.pending:
        return "wait", job.pending
    return "ready", "ready"
