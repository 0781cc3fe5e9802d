"""Fetch a batch: decide per job, download what is ready, verify, and record the outcome."""

from __future__ import annotations

import fnmatch
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal, Protocol

import httpx

from fetcher import manifest as mf
from fetcher.checks.archive import ArchiveCheck, ArchiveReport
from fetcher.engine.segmented import MultiDownload
from fetcher.engine.transfer import Download, PartResult, Progress, Source, commit, discard
from fetcher.errors import FetcherError, ManifestError, NotFoundError, UnsafeNameError
from fetcher.manifest import FileRecord, JobRecord, Manifest
from fetcher.names import MANIFEST_NAME, choose_name, partial_name
from fetcher.redact import Redactor
from fetcher.retry import RetryPolicy
from fetcher.service.client import RestoreJobsClient
from fetcher.service.model import Archive, Readiness, RestoreJob, readiness
from fetcher.storage import Destination, SpaceGuard
from fetcher.verify import examine

OnDisk = Literal["verified", "changed", "absent"]
DEFAULT_CONNECTIONS = 4  # per archive, where ranged requests cost nothing
COUNTED_BELOW = 1000  # a link allowing fewer downloads than this gets one connection


@dataclass(frozen=True)
class Target:
    """What to fetch: a batch, or one job."""

    group: str
    cluster: str
    batch_id: str | None = None
    job_id: str | None = None
    only: tuple[str, ...] = ()  # shell patterns on archive names; empty: every job

    def selects(self, name: str | None, replica_set: str | None = None) -> bool | None:
        """Whether an archive is this host's to fetch (fetch --only): by its file name, or by
        the replica set the API names it for. None while neither matches and the name is not
        known yet (it may still match)."""
        if not self.only:
            return True
        known = [n for n in (name, replica_set) if n]
        if any(fnmatch.fnmatchcase(n, p) for n in known for p in self.only):
            return True
        return False if name is not None else None


@dataclass(frozen=True)
class Item:
    """One archive of one job: the unit that is fetched, verified and recorded."""

    job: RestoreJob
    archive: Archive

    @property
    def key(self) -> str:
        """The manifest entry's id: the job's, or the job's and the archive's."""
        return self.archive.key


@dataclass(frozen=True)
class WaitPolicy:
    """How long to keep polling for jobs that are not ready yet (disabled when not `enabled`)."""

    enabled: bool = False
    poll_interval: float = 30.0
    timeout: float = 6 * 3600.0


@dataclass(frozen=True)
class WaitStatus:
    """What a fetch under --wait is waiting for, as of the last poll."""

    waiting: int  # jobs not ready yet
    listed: int  # jobs the last listing held
    stages: tuple[tuple[str, int], ...]  # what they wait on (e.g. IN_PROGRESS), and how many
    next_poll: float  # seconds

    @property
    def what(self) -> str:
        """The status without the countdown: it changes only when a job does."""
        if len(self.stages) == 1:
            stages = self.stages[0][0]
        else:
            stages = ", ".join(f"{n} {stage}" for stage, n in self.stages)
        return f"waiting for {self.waiting} of {self.listed} jobs: {stages}"

    def __str__(self) -> str:
        return f"{self.what}; next poll in {self.next_poll:g} s"


def wait_status(listed: list[RestoreJob], pending: dict[str, Item], next_poll: float) -> WaitStatus:
    """Summarise the archives still waited on, grouped by the stage each job is at."""
    stages = Counter(item.job.stage for item in pending.values())
    keys = {archive.key for job in listed for archive in job.archives}
    return WaitStatus(
        waiting=len(pending),
        listed=len(keys | set(pending)),
        stages=tuple(sorted(stages.items(), key=lambda kv: (-kv[1], kv[0]))),
        next_poll=next_poll,
    )


class Reporter(Protocol):
    """What the CLI (or any caller) hears while a fetch runs; called from worker threads."""

    def progress(self, name: str) -> Progress:
        """Return the progress callback for one archive."""

    def finished(self, record: JobRecord) -> None:
        """Hear that a job reached its outcome."""

    def note(self, text: str) -> None:
        """Hear a remark worth showing (a rebuilt manifest, a restart)."""

    def remark(self, text: str) -> None:
        """Hear a remark of interest only to whoever watches (--quiet drops it)."""

    def waiting(self, status: WaitStatus | None) -> None:
        """Hear what --wait waits for before each poll; None once it waits no more."""


class Fetcher:
    """Runs one fetch into a locked destination; build it with the two clients."""

    def __init__(
        self,
        api: RestoreJobsClient,
        pull: httpx.Client,
        dest: Destination,
        target: Target,
        *,
        reporter: Reporter,
        redactor: Redactor,
        policy: RetryPolicy,
        parallel: int = 4,
        connections: int | None = None,
        wait: WaitPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api, self._pull, self._dest, self._target = api, pull, dest, target
        self._reporter, self._redactor, self._policy = reporter, redactor, policy
        self._parallel = max(1, parallel)
        self._connections = connections  # per archive; None: DEFAULT_CONNECTIONS where free
        self._told_limit = False
        self._wait = wait or WaitPolicy()
        self._clock, self._now = clock, now
        self._space = SpaceGuard(dest.free_bytes)
        self._lock = threading.Lock()
        self._stop = threading.Event()  # set when run() is interrupted: transfers end early
        self._records: dict[str, JobRecord] = {}
        self._names: dict[str, str] = {}  # file name -> job id, to refuse collisions
        self._name_of: dict[str, str] = {}  # job id -> the file name it holds
        self._dropped: set[str] = set()  # jobs --only does not select: neither fetched nor kept
        self._batch_ids: set[str] = set()  # every job any listing held
        self._old: Manifest | None = None
        self._old_files: dict[str, tuple[FileRecord, ...]] = {}  # job id -> files verified
        self._journal = mf.Journal(
            dest, Manifest(group_id=target.group, cluster=target.cluster, batch_id=target.batch_id)
        )

    def run(self) -> Manifest:
        """Fetch every job of the target; return the manifest written to the destination."""
        self._old = self._load_old_manifest()
        self._old_files = {job.id: job.files for job in self._old.jobs} if self._old else {}
        jobs = self._list()
        if not jobs and not self._wait.enabled:
            raise NotFoundError(f"no restore jobs found for {self._describe_target()}")
        pool = ThreadPoolExecutor(self._parallel, thread_name_prefix="fetcher")
        interrupted = False
        try:
            self._fetch_all(jobs, pool)
        except KeyboardInterrupt:
            # Stop the transfers where they stand rather than wait hours for them to finish;
            # their partial files resume, as after kill -9.
            interrupted = True
            self._stop.set()
            raise
        finally:
            pool.shutdown(wait=not interrupted, cancel_futures=interrupted)
        if not self._records and self._dropped:
            patterns = " ".join(self._target.only)
            raise NotFoundError(f"no job of {self._describe_target()} matches --only {patterns}")
        if not self._records:
            raise NotFoundError(f"no restore jobs found for {self._describe_target()}")
        manifest = self._write_manifest()
        self._journal.close()  # manifest.json now holds every line of it
        return manifest

    def _fetch_all(self, jobs: list[RestoreJob], pool: ThreadPoolExecutor) -> None:
        """Start what is ready, poll for the rest while waiting, then wait for every transfer."""
        pending: dict[str, Item] = {}
        futures: list[Future[None]] = []
        self._dispatch(jobs, pending, pool, futures, final=not self._wait.enabled)
        deadline = self._clock() + self._wait.timeout
        try:
            while self._wait.enabled and (pending or self._nothing_yet(futures)):
                if self._clock() >= deadline:
                    break
                self._reporter.waiting(wait_status(jobs, pending, self._wait.poll_interval))
                self._policy.sleep(self._wait.poll_interval)
                jobs = self._list()
                self._dispatch(jobs, pending, pool, futures, final=False)
        finally:
            self._reporter.waiting(None)
        for item in pending.values():
            waited = f"not ready after waiting {int(self._wait.timeout)} s"
            reason = f"{waited} ({readiness(item.job, self._now())[1]})"
            self._finish(self._record(item, "skipped", reason))
        for future in futures:
            future.result()

    def _nothing_yet(self, futures: list[Future[None]]) -> bool:
        """Nothing to decide on yet (a restore triggered a moment ago lists no job): wait.

        Not when --only left every archive to other hosts: there is nothing to wait for.
        """
        return not self._records and not futures and not self._dropped

    # -- listing and deciding ------------------------------------------------------------

    def _list(self) -> list[RestoreJob]:
        t = self._target
        if t.job_id:
            jobs = [self._api.get_job(t.group, t.cluster, t.job_id)]
        else:
            jobs = self._api.list_jobs(t.group, t.cluster, t.batch_id)
        self._batch_ids.update(archive.key for job in jobs for archive in job.archives)
        return jobs

    def _dispatch(
        self,
        jobs: list[RestoreJob],
        pending: dict[str, Item],
        pool: ThreadPoolExecutor,
        futures: list[Future[None]],
        *,
        final: bool,
    ) -> None:
        """Start, skip or keep waiting for each archive not yet decided."""
        named: list[tuple[Item, str]] = []
        for job in jobs:
            job.hide_secrets(self._redactor)
            # What was waited on is listed afresh (a job's archives appear once it finishes).
            for key in [k for k, item in pending.items() if item.job.id == job.id]:
                del pending[key]
            # Readiness first: until a job is ready it has no link and often no hashes, so no
            # name. Only a ready job needs one; the others may still have an archive on disk.
            state, reason = readiness(job, self._now())
            for archive in self._archives_of(job):
                item = Item(job, archive)
                with self._lock:
                    decided = item.key in self._records or item.key in self._name_of
                if decided or item.key in self._dropped:
                    continue
                name = self._claim_name(item, required=state == "ready")
                if self._target.selects(name, archive.replica_set) is False:
                    if name is not None:
                        self._release_name(name)
                    self._dropped.add(item.key)  # another host's part of the batch
                    continue
                if name is not None:
                    named.append((item, name))
                elif state != "ready":
                    self._not_now(item, state, reason, pending, final=final)
        if not named:
            return
        # Re-hashing archives already on disk is the slow part of a re-run: do it in parallel,
        # on threads of its own so that it never waits behind running downloads.
        with ThreadPoolExecutor(self._parallel, thread_name_prefix="fetcher-check") as checks:
            on_disk = list(checks.map(lambda jn: self._on_disk(*jn), named))
        for (item, name), found in zip(named, on_disk, strict=True):
            if found == "verified":
                continue
            state, reason = readiness(item.job, self._now())  # again: hashing took a while
            if state == "ready":
                futures.append(pool.submit(self._download_job, item, name))
            elif found == "changed":
                self._finish(self._changed_on_disk(item, name, reason))
            elif self._kept_part_verifies(item, name):
                continue
            else:
                self._release_name(name)
                self._not_now(item, state, reason, pending, final=final, name=name)

    def _archives_of(self, job: RestoreJob) -> tuple[Archive, ...]:
        """The job's archives; for a job listed with none (expired, say), those it had.

        A job that delivers several archives lists them only while its links live. Once they
        are gone it shows as one slot with no name, yet the archives an earlier run verified
        are still here, and still to be checked.
        """
        (first, *others) = job.archives
        if others or first.names or first.url or first.key != job.id:
            return job.archives
        earlier = [
            record
            for record in (self._old.jobs if self._old else ())
            if record.info.get("jobId") == job.id and record.files
        ]
        if not earlier:
            return job.archives
        return tuple(
            Archive(
                key=record.id,
                names=tuple(f.name for f in record.files),
                replica_set=_text(record.info.get("replicaSetName")),
                secret_path=first.secret_path,
            )
            for record in earlier
        )

    def _not_now(
        self,
        item: Item,
        state: Readiness,
        reason: str,
        pending: dict[str, Item],
        *,
        final: bool,
        name: str | None = None,
    ) -> None:
        """Skip an archive that cannot be downloaded now, or keep it to poll again."""
        if state == "never" or final:
            self._finish(self._record(item, "skipped", reason, name=name))
        else:
            pending[item.key] = item

    def _claim_name(self, item: Item, *, required: bool) -> str | None:
        """Reserve the archive's file name; an archive that `required` one and has none fails."""
        # A job listed again without a link or hashes (expired, say) keeps the name its
        # archive was verified under: the archive is still here, and still to be checked.
        candidates = list(item.archive.names) or [f.name for f in self._old_files.get(item.key, ())]
        try:
            name = choose_name(candidates)
        except UnsafeNameError as exc:
            if required:
                self._finish(self._record(item, "failed", str(exc), failure="error"))
            return None
        with self._lock:
            owner = self._names.get(name)
            if owner is None:
                self._names[name] = item.key
                self._name_of[item.key] = name
                return name
        if required:
            reason = f"file name {name} is also the name of job {owner}'s archive"
            self._finish(self._record(item, "failed", reason, failure="error"))
        return None

    def _release_name(self, name: str) -> None:
        with self._lock:
            job_id = self._names.pop(name, None)
            if job_id is not None:
                self._name_of.pop(job_id, None)

    def _on_disk(self, item: Item, name: str) -> OnDisk:
        """Check a final-named archive: still verified, changed since, or not there to check."""
        expected = item.archive.sha1 or self._old_file(item.key, name)[0]
        if expected is None or not self._dest.exists(name):
            return "absent"
        update = self._reporter.progress(name)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            update(done, None)

        seen = examine(self._dest, name, progress=advance)
        if seen is None:
            return "absent"
        if seen.sha1 != expected:
            return "changed"
        report = seen.report
        assert report is not None
        if not report.passed:  # verified by an older fetcher, which had no archive check
            record = self._damaged(item, name, seen.size, expected, report, where=name)
        else:
            files = (self._file(item, name, seen.size, expected, report),)
            record = self._record(item, "verified", "already verified on disk", files=files)
        self._finish(record)
        return "verified"

    def _changed_on_disk(self, item: Item, name: str, why_not: str) -> JobRecord:
        """An archive that no longer matches its SHA1 and cannot be fetched again is corrupt."""
        expected, size = self._old_file(item.key, name)
        expected = item.archive.sha1 or expected
        assert expected is not None
        if size is None:
            size = self._dest.size(name) or 0
        reason = (
            f"{name} no longer matches its SHA1 {expected} and cannot be downloaded again"
            f" ({why_not})"
        )
        files = (FileRecord(name, size, expected),)
        return self._record(item, "failed", reason, files=files, failure="integrity")

    def _kept_part_verifies(self, item: Item, name: str) -> bool:
        """A complete partial file kept for want of a SHA1 can be verified with no link at all."""
        part = partial_name(name)
        expected = item.archive.sha1
        if expected is None or not self._dest.exists(part):
            return False
        seen = examine(self._dest, part)
        if seen is None or seen.sha1 != expected:
            return False  # incomplete or stale: it stays for a resume while the link allows
        report = seen.report
        assert report is not None
        if not report.passed:
            self._finish(self._damaged(item, name, seen.size, expected, report, where=part))
            return True
        commit(self._dest, name)
        files = (self._file(item, name, seen.size, expected, report),)
        self._finish(self._record(item, "verified", "verified the bytes kept earlier", files=files))
        return True

    def _file(
        self, item: Item, name: str, size: int, sha1: str, report: ArchiveReport
    ) -> FileRecord:
        """The manifest's record of a checked archive; the API's replica set name comes first."""
        return FileRecord.checked(name, size, sha1, report, replica_set=item.archive.replica_set)

    def _damaged(
        self, item: Item, name: str, size: int, sha1: str, report: ArchiveReport, *, where: str
    ) -> JobRecord:
        """The bytes are the ones the API published (the SHA1 says so), and they do not open."""
        reason = (
            f"the published archive itself is damaged: {report.problem}. Its SHA1 matches the"
            f" API's, so downloading it again would not help; the bytes stay in {where}"
        )
        # Under its final name (an older fetcher had no archive check) the file is recorded,
        # so that verify looks at it too; a partial file is not an archive of the batch.
        files = (FileRecord(name, size, sha1),) if where == name else ()
        return self._record(item, "failed", reason, name=name, failure="integrity", files=files)

    def _old_file(self, job_id: str, name: str) -> tuple[str | None, int | None]:
        """The SHA1 and size an earlier run verified for this archive, if any."""
        # Only verified and integrity-failed records have files.
        for f in self._old_files.get(job_id, ()):
            if f.name == name:
                return f.sha1, f.size
        return None, None

    # -- downloading ---------------------------------------------------------------------

    def _download_job(self, item: Item, name: str) -> None:
        try:
            record = self._transfer_and_verify(item, name)
        except FetcherError as exc:
            if self._stop.is_set():
                return  # interrupted: run() has already raised, and the partial file stays
            failure: mf.Failure = "integrity" if exc.exit_code == 4 else "error"
            record = self._record(item, "failed", str(exc), name=name, failure=failure)
        except httpx.HTTPError as exc:  # e.g. a redirect loop: this job fails, the batch goes on
            reason = f"{name}: {type(exc).__name__} from {item.archive.display}"
            record = self._record(item, "failed", reason, name=name, failure="error")
        except OSError as exc:
            record = self._record(
                item, "failed", f"{name}: {exc.strerror or exc}", name=name, failure="error"
            )
        except Exception as exc:  # noqa: BLE001 - one odd job must not sink the batch
            reason = f"{name}: unexpected {type(exc).__name__}"
            record = self._record(item, "failed", reason, name=name, failure="error")
        self._finish(record)

    def _transfer_and_verify(self, item: Item, name: str) -> JobRecord:
        job, archive = item.job, item.archive
        assert archive.url is not None
        source = Source(
            job_id=item.key,
            url=archive.url,
            display=archive.display,
            bearer=archive.bearer,
            max_downloads=job.delivery.max_downloads,
        )
        result = self._download(source, name, archive.sha1, fresh=False)
        attempts = result.attempts
        expected = archive.sha1 or (self._late_sha1(item) if archive.sha1_source == "late" else None)
        report = result.archive
        assert report is not None  # every download runs the archive check
        if expected is not None:
            bad = result.sha1 != expected
        else:
            # Without a SHA1 only a splice made by this run is suspect: a damaged .part that
            # an earlier run finished already had its one more try (or needed none).
            bad = not report.passed and result.downloaded_bytes > 0
        if bad and result.resumed:
            # The bytes kept from before may have been stale: one more try, from zero.
            what = "SHA1 mismatch" if expected is not None else "damaged archive"
            self._reporter.note(f"{name}: {what} after a resumed transfer; starting over")
            discard(self._dest, name)
            result = self._download(source, name, expected, fresh=True)
            attempts += result.attempts
            report = result.archive
            assert report is not None
        part = partial_name(name)
        if expected is None and archive.sha1_source == "none" and report.passed:
            # Atlas v2 publishes no SHA1: an archive that passes the check is the verified one,
            # and the SHA1 computed here is what later runs and `verify` compare with.
            return self._verified(item, name, result.sha1, result, attempts)
        if expected is None:
            if not report.passed:
                reason = (
                    f"{name} is damaged: {report.problem}. The API publishes no SHA1 to tell"
                    f" whether the transfer or the published archive is at fault; the bytes stay"
                    f" in {part} (delete it to download the archive again)"
                )
                return self._record(item, "failed", reason, name=name, failure="integrity")
            reason = (
                f"the API publishes no SHA1 for it yet; {result.size} bytes kept in"
                f" {part} (sha1 {result.sha1}, archive check passed); run fetch again to verify"
            )
            return self._record(item, "unverified", reason, name=name, result=result)
        if result.sha1 != expected:
            discard(self._dest, name)
            reason = f"SHA1 mismatch: expected {expected}, got {result.sha1}"
            return self._record(item, "failed", reason, name=name, failure="integrity")
        if not report.passed:
            record = self._damaged(item, name, result.size, expected, report, where=part)
            return _with_stats(record, attempts, result)
        return self._verified(item, name, expected, result, attempts)

    def _verified(
        self, item: Item, name: str, sha1: str, result: PartResult, attempts: int
    ) -> JobRecord:
        """Give a checked archive its final name, unless it is not the replica set listed."""
        report = result.archive
        assert report is not None
        assert report.passed
        listed, inside = item.archive.replica_set, report.replica_set
        if listed and inside and listed != inside:
            reason = (
                f"the API lists {name} as replica set {listed}, but its restoreInfo.txt names"
                f" {inside}; the bytes stay in {partial_name(name)}"
            )
            record = self._record(item, "failed", reason, name=name, failure="integrity")
            return _with_stats(record, attempts, result)
        commit(self._dest, name)
        files = (self._file(item, name, result.size, sha1, report),)
        record = self._record(item, "verified", "downloaded", files=files)
        return _with_stats(record, attempts, result)

    def _download(self, source: Source, name: str, sha1: str | None, *, fresh: bool) -> PartResult:
        connections = self._connections_for(source)
        engine = Download(
            self._pull,
            self._dest,
            name,
            source,
            expected_sha1=sha1,
            policy=self._policy,
            space=self._space,
            progress=self._reporter.progress(name),
            stop=self._stop,
            check=ArchiveCheck,
        )
        if connections > 1:
            near_single = self._connections is None  # the default yields to a near server
            multi = MultiDownload(engine, connections=connections, near_single=near_single)
            return multi.run(fresh=fresh)
        return engine.run(fresh=fresh)

    def _connections_for(self, source: Source) -> int:
        """Connections for one archive: as asked, else the default where ranges cost nothing.

        A legacy link with a finite download limit may count each ranged request as a
        download: one connection there, unless --connections asks for more.
        """
        if self._connections is not None:
            return self._connections
        limit = source.max_downloads
        if limit is not None and limit < COUNTED_BELOW:
            with self._lock:
                told, self._told_limit = self._told_limit, True
            if not told:
                self._reporter.remark(
                    f"pull links here allow {limit} downloads: one connection per archive,"
                    " since each ranged request may count (--connections N to override)"
                )
            return 1
        return DEFAULT_CONNECTIONS

    def _late_sha1(self, item: Item) -> str | None:
        """The API documents hashes[] as filled only after the download: ask again."""
        again = self._api.get_job(self._target.group, self._target.cluster, item.job.id)
        return next((a.sha1 for a in again.archives if a.key == item.key), None)

    # -- recording -----------------------------------------------------------------------

    def _record(
        self,
        item: Item,
        outcome: mf.Outcome,
        reason: str,
        *,
        name: str | None = None,
        files: tuple[FileRecord, ...] = (),
        failure: mf.Failure | None = None,
        result: PartResult | None = None,
    ) -> JobRecord:
        info = item.job.info()
        if item.archive.key != item.job.id:
            info = {"jobId": item.job.id, **info}
        if item.archive.replica_set is not None:
            info = {"replicaSetName": item.archive.replica_set, **info}
        if name and not files:
            info["fileName"] = name
        record = JobRecord(
            id=item.key,
            outcome=outcome,
            reason=self._redactor.scrub(reason),
            files=files,
            failure=failure,
            info=info,
        )
        return _with_stats(record, result.attempts, result) if result else record

    @property
    def records(self) -> tuple[JobRecord, ...]:
        """What this run decided for each job it saw (the manifest also keeps older ones)."""
        with self._lock:
            return tuple(self._records.values())

    def _finish(self, record: JobRecord) -> None:
        if record.outcome == "verified":
            self._journal.append(record)  # an interrupted run still records what it verified
        with self._lock:
            self._records[record.id] = record
        self._reporter.finished(record)

    def _write_manifest(self) -> Manifest:
        with self._lock:
            current = Manifest(
                group_id=self._target.group,
                cluster=self._target.cluster,
                batch_id=self._target.batch_id,
                jobs=tuple(self._records.values()),
                selection=self._target.only,
                batch_job_ids=tuple(sorted(self._batch_ids)),
            )
            return mf.write(self._dest, mf.merge(self._old, current))

    def _load_old_manifest(self) -> Manifest | None:
        recovering = self._dest.exists(mf.JOURNAL_NAME)  # a run was killed before its end
        try:
            old = mf.load(self._dest)
        except ManifestError as exc:
            # Keep the unreadable files for the operator, and rebuild from what is on disk.
            kept = []
            for name in (MANIFEST_NAME, mf.JOURNAL_NAME):
                if self._dest.exists(name):
                    aside = f".{name.lstrip('.')}.unreadable-{int(time.time())}"
                    self._dest.replace(name, aside)
                    kept.append(aside)
            self._reporter.note(f"{exc}; kept it as {' and '.join(kept)} and rebuilding it")
            return None
        t = self._target
        if old is not None and (old.group_id, old.cluster, old.batch_id) != (
            t.group,
            t.cluster,
            t.batch_id,
        ):
            what = f"batch {old.batch_id}" if old.batch_id else "single jobs"
            raise FetcherError(
                f"{self._dest.path} holds the manifest of {what} of cluster {old.cluster}"
                f" in group {old.group_id}; give another --dest"
            )
        if recovering and old is not None:
            mf.write(self._dest, old)  # fold the journal in before this run starts its own
            self._journal.close()
        return old

    def _describe_target(self) -> str:
        t = self._target
        what = f"job {t.job_id}" if t.job_id else f"batch {t.batch_id}" if t.batch_id else "cluster"
        return f"{what} of cluster {t.cluster} in group {t.group}"


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _with_stats(record: JobRecord, attempts: int, result: PartResult) -> JobRecord:
    return replace(record, attempts=attempts, resumed_bytes=result.resumed_bytes)
