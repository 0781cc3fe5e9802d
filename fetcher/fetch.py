"""Fetch a batch: decide per job, download what is ready, verify, and record the outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal, Protocol

import httpx

from fetcher import manifest as mf
from fetcher.api import RestoreJobsClient
from fetcher.errors import FetcherError, ManifestError, NotFoundError, UnsafeNameError
from fetcher.jobs import RestoreJob, readiness
from fetcher.manifest import FileRecord, JobRecord, Manifest
from fetcher.names import MANIFEST_NAME, choose_name, partial_name
from fetcher.redact import Redactor, display_url
from fetcher.retry import RetryPolicy
from fetcher.storage import Destination, SpaceGuard
from fetcher.transfer import Download, PartResult, Progress, Source, commit, discard

OnDisk = Literal["verified", "changed", "absent"]


@dataclass(frozen=True)
class Target:
    """What to fetch: a batch, or one job."""

    group: str
    cluster: str
    batch_id: str | None = None
    job_id: str | None = None


@dataclass(frozen=True)
class WaitPolicy:
    """How long to keep polling for jobs that are not ready yet (disabled when not `enabled`)."""

    enabled: bool = False
    poll_interval: float = 30.0
    timeout: float = 6 * 3600.0


class Reporter(Protocol):
    """What the CLI (or any caller) hears while a fetch runs; called from worker threads."""

    def progress(self, name: str) -> Progress:
        """Return the progress callback for one archive."""

    def finished(self, record: JobRecord) -> None:
        """Hear that a job reached its outcome."""

    def note(self, text: str) -> None:
        """Hear a remark worth showing (a rebuilt manifest, a wait)."""


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
        wait: WaitPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api, self._pull, self._dest, self._target = api, pull, dest, target
        self._reporter, self._redactor, self._policy = reporter, redactor, policy
        self._parallel = max(1, parallel)
        self._wait = wait or WaitPolicy()
        self._clock, self._now = clock, now
        self._space = SpaceGuard(dest.free_bytes)
        self._lock = threading.Lock()
        self._stop = threading.Event()  # set when run() is interrupted: transfers end early
        self._records: dict[str, JobRecord] = {}
        self._names: dict[str, str] = {}  # file name -> job id, to refuse collisions
        self._old: Manifest | None = None

    def run(self) -> Manifest:
        """Fetch every job of the target; return the manifest written to the destination."""
        self._old = self._load_old_manifest()
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
        if not self._records:
            raise NotFoundError(f"no restore jobs found for {self._describe_target()}")
        return self._write_manifest()

    def _fetch_all(self, jobs: list[RestoreJob], pool: ThreadPoolExecutor) -> None:
        """Start what is ready, poll for the rest while waiting, then wait for every transfer."""
        pending: dict[str, RestoreJob] = {}
        futures: list[Future[None]] = []
        self._dispatch(jobs, pending, pool, futures, final=not self._wait.enabled)
        deadline = self._clock() + self._wait.timeout
        while self._wait.enabled and (pending or (not self._records and not futures)):
            if self._clock() >= deadline:
                break
            self._policy.sleep(self._wait.poll_interval)
            self._dispatch(self._list(), pending, pool, futures, final=False)
        for job in pending.values():
            waited = f"not ready after waiting {int(self._wait.timeout)} s"
            self._finish(
                self._record(job, "skipped", f"{waited} ({readiness(job, self._now())[1]})")
            )
        for future in futures:
            future.result()

    # -- listing and deciding ------------------------------------------------------------

    def _list(self) -> list[RestoreJob]:
        t = self._target
        if t.job_id:
            return [self._api.get_job(t.group, t.cluster, t.job_id)]
        return self._api.list_jobs(t.group, t.cluster, t.batch_id)

    def _dispatch(
        self,
        jobs: list[RestoreJob],
        pending: dict[str, RestoreJob],
        pool: ThreadPoolExecutor,
        futures: list[Future[None]],
        *,
        final: bool,
    ) -> None:
        """Start, skip or keep waiting for each job not yet decided."""
        fresh: list[tuple[RestoreJob, str]] = []
        for job in jobs:
            job.hide_secrets(self._redactor)
            with self._lock:
                decided = job.id in self._records or job.id in self._names.values()
            if decided:
                continue
            pending.pop(job.id, None)
            name = self._claim_name(job)
            if name is not None:
                fresh.append((job, name))
        if not fresh:
            return
        # Re-hashing archives already on disk is the slow part of a re-run: do it in parallel,
        # on threads of its own so that it never waits behind running downloads.
        with ThreadPoolExecutor(self._parallel, thread_name_prefix="fetcher-check") as checks:
            on_disk = list(checks.map(lambda jn: self._on_disk(*jn), fresh))
        for (job, name), found in zip(fresh, on_disk, strict=True):
            if found == "verified":
                continue
            state, reason = readiness(job, self._now())
            if state == "ready":
                futures.append(pool.submit(self._download_job, job, name))
            elif found == "changed":
                self._finish(self._changed_on_disk(job, name, reason))
            elif self._kept_part_verifies(job, name):
                continue
            elif state == "never" or final:
                self._release_name(name)
                self._finish(self._record(job, "skipped", reason, name=name))
            else:
                self._release_name(name)
                pending[job.id] = job

    def _claim_name(self, job: RestoreJob) -> str | None:
        try:
            name = choose_name(job.name_candidates())
        except UnsafeNameError as exc:
            self._finish(self._record(job, "failed", str(exc), failure="error"))
            return None
        with self._lock:
            owner = self._names.get(name)
            if owner is None:
                self._names[name] = job.id
                return name
        reason = f"file name {name} is also the name of job {owner}'s archive"
        self._finish(self._record(job, "failed", reason, failure="error"))
        return None

    def _release_name(self, name: str) -> None:
        with self._lock:
            self._names.pop(name, None)

    def _on_disk(self, job: RestoreJob, name: str) -> OnDisk:
        """Check a final-named archive: still verified, changed since, or not there to check."""
        expected = job.sha1 or self._old_file(job.id, name)[0]
        if expected is None or not self._dest.exists(name):
            return "absent"
        update = self._reporter.progress(name)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            update(done, None)

        hashed = self._dest.hash_file(name, progress=advance)
        if hashed is None:
            return "absent"
        if hashed[1].hexdigest() != expected:
            return "changed"
        files = (FileRecord(name, hashed[0], expected),)
        self._finish(self._record(job, "verified", "already verified on disk", files=files))
        return "verified"

    def _changed_on_disk(self, job: RestoreJob, name: str, why_not: str) -> JobRecord:
        """An archive that no longer matches its SHA1 and cannot be fetched again is corrupt."""
        expected, size = self._old_file(job.id, name)
        expected = job.sha1 or expected
        assert expected is not None
        if size is None:
            size = self._dest.size(name) or 0
        reason = (
            f"{name} no longer matches its SHA1 {expected} and cannot be downloaded again"
            f" ({why_not})"
        )
        files = (FileRecord(name, size, expected),)
        return self._record(job, "failed", reason, files=files, failure="integrity")

    def _kept_part_verifies(self, job: RestoreJob, name: str) -> bool:
        """A complete partial file kept for want of a SHA1 can be verified with no link at all."""
        part = partial_name(name)
        if job.sha1 is None or not self._dest.exists(part):
            return False
        hashed = self._dest.hash_file(part)
        if hashed is None or hashed[1].hexdigest() != job.sha1:
            return False  # incomplete or stale: it stays for a resume while the link allows
        commit(self._dest, name)
        files = (FileRecord(name, hashed[0], job.sha1),)
        self._finish(self._record(job, "verified", "verified the bytes kept earlier", files=files))
        return True

    def _old_file(self, job_id: str, name: str) -> tuple[str | None, int | None]:
        """The SHA1 and size an earlier run verified for this archive, if any."""
        for record in self._old.jobs if self._old else ():
            if record.id == job_id:  # only verified and integrity-failed records have files
                for f in record.files:
                    if f.name == name:
                        return f.sha1, f.size
        return None, None

    # -- downloading ---------------------------------------------------------------------

    def _download_job(self, job: RestoreJob, name: str) -> None:
        try:
            record = self._transfer_and_verify(job, name)
        except FetcherError as exc:
            if self._stop.is_set():
                return  # interrupted: run() has already raised, and the partial file stays
            failure: mf.Failure = "integrity" if exc.exit_code == 4 else "error"
            record = self._record(job, "failed", str(exc), name=name, failure=failure)
        except httpx.HTTPError as exc:  # e.g. a redirect loop: this job fails, the batch goes on
            reason = f"{name}: {type(exc).__name__} from {display_url(job.delivery.url or '')}"
            record = self._record(job, "failed", reason, name=name, failure="error")
        except OSError as exc:
            record = self._record(
                job, "failed", f"{name}: {exc.strerror or exc}", name=name, failure="error"
            )
        except Exception as exc:  # noqa: BLE001 - one odd job must not sink the batch
            reason = f"{name}: unexpected {type(exc).__name__}"
            record = self._record(job, "failed", reason, name=name, failure="error")
        self._finish(record)

    def _transfer_and_verify(self, job: RestoreJob, name: str) -> JobRecord:
        assert job.delivery.url is not None
        source = Source(
            job_id=job.id,
            url=job.delivery.url,
            display=display_url(job.delivery.url),
            bearer=job.delivery.bearer,
        )
        result = self._download(source, name, job.sha1, fresh=False)
        attempts = result.attempts
        expected = job.sha1 or self._late_sha1(job)
        if expected is None:
            reason = (
                f"the API publishes no SHA1 for it yet; {result.size} bytes kept in"
                f" {partial_name(name)} (sha1 {result.sha1}); run fetch again to verify"
            )
            return self._record(job, "unverified", reason, name=name, result=result)
        if result.sha1 != expected and result.resumed:
            # The bytes kept from before may have been stale: one more try, from zero.
            self._reporter.note(f"{name}: SHA1 mismatch after a resumed transfer; starting over")
            discard(self._dest, name)
            result = self._download(source, name, expected, fresh=True)
            attempts += result.attempts
        if result.sha1 != expected:
            discard(self._dest, name)
            reason = f"SHA1 mismatch: expected {expected}, got {result.sha1}"
            return self._record(job, "failed", reason, name=name, failure="integrity")
        commit(self._dest, name)
        record = self._record(
            job, "verified", "downloaded", files=(FileRecord(name, result.size, expected),)
        )
        return _with_stats(record, attempts, result)

    def _download(self, source: Source, name: str, sha1: str | None, *, fresh: bool) -> PartResult:
        return Download(
            self._pull,
            self._dest,
            name,
            source,
            expected_sha1=sha1,
            policy=self._policy,
            space=self._space,
            progress=self._reporter.progress(name),
            stop=self._stop,
        ).run(fresh=fresh)

    def _late_sha1(self, job: RestoreJob) -> str | None:
        """The API documents hashes[] as filled only after the download: ask again."""
        again = self._api.get_job(self._target.group, self._target.cluster, job.id)
        return again.sha1

    # -- recording -----------------------------------------------------------------------

    def _record(
        self,
        job: RestoreJob,
        outcome: mf.Outcome,
        reason: str,
        *,
        name: str | None = None,
        files: tuple[FileRecord, ...] = (),
        failure: mf.Failure | None = None,
        result: PartResult | None = None,
    ) -> JobRecord:
        info = job.record()
        if name and not files:
            info["fileName"] = name
        record = JobRecord(
            id=job.id,
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
        with self._lock:
            self._records[record.id] = record
        if record.outcome == "verified":
            self._write_manifest()  # an interrupted run still records what it verified
        self._reporter.finished(record)

    def _write_manifest(self) -> Manifest:
        with self._lock:
            current = Manifest(
                group_id=self._target.group,
                cluster=self._target.cluster,
                batch_id=self._target.batch_id,
                jobs=tuple(self._records.values()),
            )
            return mf.write(self._dest, mf.merge(self._old, current))

    def _load_old_manifest(self) -> Manifest | None:
        try:
            old = mf.load(self._dest)
        except ManifestError as exc:
            # Keep the unreadable file for the operator, and rebuild from what is on disk.
            aside = f".{MANIFEST_NAME}.unreadable-{int(time.time())}"
            self._dest.replace(MANIFEST_NAME, aside)
            self._reporter.note(f"{exc}; kept it as {aside} and rebuilding it")
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
        return old

    def _describe_target(self) -> str:
        t = self._target
        what = f"job {t.job_id}" if t.job_id else f"batch {t.batch_id}" if t.batch_id else "cluster"
        return f"{what} of cluster {t.cluster} in group {t.group}"


def _with_stats(record: JobRecord, attempts: int, result: PartResult) -> JobRecord:
    return replace(record, attempts=attempts, resumed_bytes=result.resumed_bytes)
