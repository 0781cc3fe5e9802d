"""The per-batch manifest: every job, its archives, and whether they make a restore set."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from fetcher import __version__
from fetcher.checks.restoreset import Member, RestoreSet, judge
from fetcher.manifest.records import FileRecord, JobRecord, combine_job, merge_job

MANIFEST_VERSION = 2


@dataclass(frozen=True)
class Manifest:
    """Every job of a batch (or one job) and where each of its archives stands."""

    group_id: str
    cluster: str
    batch_id: str | None
    jobs: tuple[JobRecord, ...] = ()
    updated: str = ""
    selection: tuple[str, ...] = ()  # fetch --only patterns; empty: every job of the batch
    batch_job_ids: tuple[str, ...] = ()  # every job the batch listed, selected or not

    @property
    def target(self) -> tuple[str, str, str | None]:
        """What the manifest is of: group, cluster and batch (None: single jobs)."""
        return (self.group_id, self.cluster, self.batch_id)

    @property
    def complete(self) -> bool:
        """True when there is at least one job, every archive of every job is verified, and
        none a job lists is missing."""
        verified = all(j.outcome == "verified" for j in self.jobs)
        return bool(self.jobs) and verified and not self.absent_archives

    @property
    def archive_count(self) -> int:
        """The archives the jobs deliver, as far as known (a job not listed whole counts one)."""
        return sum(max(1, len(job.files), len(job.listed)) for job in self.jobs)

    @property
    def restore_set(self) -> RestoreSet | None:
        """The verified archives judged as one restore set; None while some were never checked.

        An archive an older fetcher verified has no restoreInfo.txt on record: judging the
        set without it would report problems that are not there (`verify --deep` fills it in).
        """
        if self.unchecked:
            return None
        # A batch (or a job that is a whole restore) of several archives is a sharded
        # cluster's restore; a single job's one archive restores one replica set.
        known = max(self.archive_count, len(self.batch_job_ids))
        sharded = self.batch_id is not None and known > 1
        # A selection judges what it selected: the config server may be another host's part.
        return judge(
            self.members(), sharded=sharded, complete=not self.missing and not self.selection
        )

    def members(self) -> list[Member]:
        """The archives the restore set is judged on: verified, and checked as archives."""
        out = []
        for job in self.jobs:
            stamp = job.info.get("timestamp")
            date = stamp.get("date") if isinstance(stamp, dict) else None
            for f in job.files:
                if f.outcome == "verified" and f.archive_check == "passed" and f.name:
                    out.append(
                        Member(
                            archive=f.name,
                            replica_set=f.replica_set,
                            restore_info=f.restore_info,
                            timestamp=date if isinstance(date, str) else None,
                        )
                    )
        return out

    @property
    def unchecked(self) -> int:
        """Verified archives an older fetcher recorded without the archive check."""
        return sum(
            1
            for job in self.jobs
            for f in job.files
            if f.outcome == "verified" and f.archive_check is None
        )

    @property
    def missing(self) -> int:
        """Archives not (yet) here and verified, and those no manifest has an entry for."""
        return len(self.missing_archives) + len(self.absent_ids) + len(self.absent_archives)

    @property
    def missing_archives(self) -> tuple[tuple[JobRecord, FileRecord | None], ...]:
        """Each archive not verified, with its job; (job, None) for a job with none known."""
        out: list[tuple[JobRecord, FileRecord | None]] = []
        for job in self.jobs:
            if not job.files and job.outcome != "verified":
                out.append((job, None))
            out.extend((job, f) for f in job.files if f.outcome != "verified")
        return tuple(out)

    @property
    def absent_ids(self) -> tuple[str, ...]:
        """Jobs the batch listed that this manifest has no entry for (not selected here)."""
        if self.selection:
            return ()  # another host's part: not missing from this one
        known = {job.id for job in self.jobs}
        return tuple(i for i in self.batch_job_ids if i not in known)

    @property
    def absent_archives(self) -> tuple[tuple[str, str], ...]:
        """(job id, file name) of archives a job here lists and no entry records (a job split
        across hosts by --only, one of whose archives no host fetched)."""
        if self.selection:
            return ()  # another host's part: not missing from this one
        return tuple((job.id, name) for job in self.jobs for name in job.unrecorded)

    def verdict(self, restore_set: RestoreSet) -> str:
        """One line: can what this manifest holds be restored (a selection: as far as it goes)."""
        if self.selection and not restore_set.problems and not self.missing:
            point = f", restore point {p}" if (p := restore_set.restore_point) else ""
            return (
                f"selected archives ready: {', '.join(restore_set.replica_sets)}{point}"
                " (the whole batch: fetcher verify with every host's DIR)"
            )
        return restore_set.verdict(missing=self.missing)

    def restore_set_json(self) -> dict[str, Any] | None:
        """restoreSet as the manifest records it: the set, its verdict, the jobs it lacks."""
        restore_set = self.restore_set
        if restore_set is None:
            return None
        doc = restore_set.to_json()
        doc["verdict"] = self.verdict(restore_set)
        lacking = [job.id for job, _ in self.missing_archives] + list(self.absent_ids)
        lacking += [job_id for job_id, _ in self.absent_archives]
        doc["missingJobs"] = list(dict.fromkeys(lacking))
        return doc

    def to_json(self) -> dict[str, Any]:
        """Return the manifest document."""
        return {
            "manifestVersion": MANIFEST_VERSION,
            "tool": f"fetcher {__version__}",
            "updated": self.updated,
            "groupId": self.group_id,
            "cluster": self.cluster,
            "batchId": self.batch_id,
            "complete": self.complete,
            "selection": list(self.selection),
            "batchJobIds": list(self.batch_job_ids),
            "restoreSet": self.restore_set_json(),
            "jobs": [j.to_json() for j in self.jobs],
        }


def combine(manifests: list[Manifest]) -> Manifest:
    """The manifests of one batch's parts (one per host) as the whole batch's.

    An archive counts where it was verified; the batch is every job any of them listed.
    """
    jobs: dict[str, JobRecord] = {}
    for manifest in manifests:
        for job in manifest.jobs:
            jobs[job.id] = combine_job(jobs[job.id], job) if job.id in jobs else job
    return replace(
        manifests[0],
        jobs=_ordered(jobs.values()),
        selection=(),
        batch_job_ids=tuple(sorted({i for m in manifests for i in m.batch_job_ids})),
    )


def merge(old: Manifest | None, new: Manifest) -> Manifest:
    """An earlier manifest updated with this run's records (several of one job included):
    they win for the archives they name."""
    jobs: dict[str, JobRecord] = {}
    if old is not None and old.target == new.target:
        jobs = {job.id: job for job in old.jobs}
    else:
        old = None
    for job in new.jobs:
        jobs[job.id] = merge_job(jobs[job.id], job) if job.id in jobs else job
    batch = {*new.batch_job_ids, *(old.batch_job_ids if old else ())}
    return replace(new, jobs=_ordered(jobs.values()), batch_job_ids=tuple(sorted(batch)))


def _ordered(jobs: Any) -> tuple[JobRecord, ...]:
    return tuple(sorted(jobs, key=lambda j: (j.files[0].key if j.files else "~", j.id)))
