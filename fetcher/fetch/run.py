"""The orchestration of a fetch: list, decide per archive, download, verify, record."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime

import httpx

from fetcher import manifest as mf
from fetcher.checks.archive import ArchiveCheck, ArchiveReport
from fetcher.engine.part import commit, discard
from fetcher.engine.segmented import MultiDownload
from fetcher.engine.stream import Write
from fetcher.engine.transfer import Download, PartResult, Source
from fetcher.errors import FetcherError, NotFoundError, UnsafeNameError
from fetcher.fetch import ondisk
from fetcher.fetch.claims import NameClaims
from fetcher.fetch.outcome import Decision, Found, decide
from fetcher.fetch.poll import WaitPolicy, poll
from fetcher.fetch.target import Item, Reporter, Target
from fetcher.manifest import FileRecord, JobRecord, Manifest, Unpack
from fetcher.names import choose_name
from fetcher.redact import Redactor
from fetcher.retry import RetryPolicy
from fetcher.service.client import RestoreJobsClient
from fetcher.service.model import Archive, Readiness, RestoreJob, readiness
from fetcher.storage import Destination, SpaceGuard
from fetcher.unpacking import Archive as ArchiveUnpack
from fetcher.unpacking import UnpackRoot

DEFAULT_CONNECTIONS = 4  # per archive, where ranged requests cost nothing
COUNTED_BELOW = 1000  # a link allowing fewer downloads than this gets one connection


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
        write: Write = os.write,
        unpack: UnpackRoot | None = None,
    ) -> None:
        self._api, self._pull, self._dest, self._target = api, pull, dest, target
        self._unpack = unpack  # --unpack-to: each verified archive's tree there
        self._reporter, self._redactor, self._policy = reporter, redactor, policy
        self._parallel = max(1, parallel)
        self._connections = connections  # per archive; None: DEFAULT_CONNECTIONS where free
        self._told_limit = False
        self._wait = wait or WaitPolicy()
        self._clock, self._now, self._write = clock, now, write
        self._space = SpaceGuard(dest.free_bytes)
        dest.on_set_aside = reporter.note  # a file of another user in DIR is worth a line
        self._lock = threading.Lock()
        self._stop = threading.Event()  # set when run() is interrupted: transfers end early
        self._records: dict[str, JobRecord] = {}  # archive key -> what this run decided
        self._claims = NameClaims()
        self._dropped: set[str] = set()  # archives --only does not select: neither fetched nor kept
        self._batch_ids: set[str] = set()  # every job any listing held
        self._listed: dict[str, set[str]] = {}  # job id -> its archives' names, selected or not
        self._old: Manifest | None = None
        self._old_files: dict[str, tuple[FileRecord, ...]] = {}  # job id -> archives recorded
        # A job that is a whole restore (Atlas v2) is, fetched with --job, the manifest's batch.
        batch = target.batch_id
        if batch is None and api.dialect.job_is_restore:
            batch = target.job_id
        self._head = Manifest(group_id=target.group, cluster=target.cluster, batch_id=batch)
        self._journal = mf.Journal(dest, self._head)

    def run(self) -> Manifest:
        """Fetch every job of the target; return the manifest written to the destination."""
        self._old = mf.recover(self._dest, self._head, note=self._reporter.note)
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
        poll(
            jobs,
            policy=self._wait,
            clock=self._clock,
            sleep=self._policy.sleep,
            relist=self._list,
            dispatch=lambda listed: self._dispatch(listed, pending, pool, futures, final=False),
            pending=lambda: {key: item.job for key, item in pending.items()},
            undecided=lambda: self._nothing_yet(futures),
            report=self._reporter.waiting,
        )
        for item in pending.values():
            waited = f"not ready after waiting {int(self._wait.timeout)} s"
            reason = f"{waited} ({readiness(item.job, self._now())[1]})"
            self._finish(item, self._record(item, "skipped", reason))
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
        self._batch_ids.update(job.id for job in jobs)
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
                    decided = item.key in self._records
                if decided or self._claims.holds(item.key) or item.key in self._dropped:
                    continue
                name = self._claim_name(item, required=state == "ready")
                if name is not None:
                    self._listed.setdefault(job.id, set()).add(name)
                if self._target.selects(name, archive.replica_set) is False:
                    if name is not None:
                        self._claims.release(name)
                    self._dropped.add(item.key)  # another host's part of the batch
                    continue
                if name is not None:
                    named.append((item, name))
                elif state != "ready":
                    self._not_now(item, state, reason, pending, final=final)
        if named:
            self._start_or_check(named, pending, pool, futures, final=final)

    def _start_or_check(
        self,
        named: list[tuple[Item, str]],
        pending: dict[str, Item],
        pool: ThreadPoolExecutor,
        futures: list[Future[None]],
        *,
        final: bool,
    ) -> None:
        """Start the named archives that are ready and not verified on disk already."""
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
                self._finish(item, self._changed_on_disk(item, name, reason))
            elif self._kept_part_verifies(item, name):
                continue
            else:
                self._claims.release(name)
                self._not_now(item, state, reason, pending, final=final, name=name)

    def _archives_of(self, job: RestoreJob) -> tuple[Archive, ...]:
        """The job's archives, named as an earlier run recorded them where the listing no
        longer names them (expired, say).

        A job lists its archives' names only while its links live (and often has no hashes).
        Once they are gone it shows as one slot with no name, or its components with no
        link, yet the archives an earlier run recorded are still here, and still to be
        checked.
        """
        earlier = [f for f in self._old_files.get(job.id, ()) if f.name is not None]
        if not earlier:
            return job.archives
        (first, *others) = job.archives
        if not others and not first.names and not first.url:
            if len(earlier) == 1:
                return (replace(first, names=(earlier[0].name or "",)),)
            return tuple(
                replace(
                    first,
                    key=f"{job.id}:{f.replica_set or f.name}",
                    names=(f.name or "",),
                    replica_set=f.replica_set,
                )
                for f in earlier
            )
        by_set = {f.replica_set: f.name for f in earlier if f.replica_set and f.name}
        return tuple(
            replace(a, names=(by_set[a.replica_set],))
            if not a.names and not a.url and a.replica_set in by_set
            else a
            for a in job.archives
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
            self._finish(item, self._record(item, "skipped", reason, name=name))
        else:
            pending[item.key] = item

    def _claim_name(self, item: Item, *, required: bool) -> str | None:
        """Reserve the archive's file name; an archive that `required` one and has none fails."""
        try:
            name = choose_name(list(item.archive.names))
        except UnsafeNameError as exc:
            if required:
                self._finish(item, self._record(item, "failed", str(exc), failure="error"))
            return None
        owner = self._claims.claim(name, item.key)
        if owner is None:
            return name
        if required:
            reason = f"file name {name} is also the name of job {owner.split(':')[0]}'s archive"
            self._finish(item, self._record(item, "failed", reason, failure="error"))
        return None

    # -- archives already on disk ----------------------------------------------------------

    def _on_disk(self, item: Item, name: str) -> ondisk.OnDisk:
        """Check a final-named archive: still verified, changed since, or not there to check."""
        expected = item.archive.sha1 or self._old_file(item, name)[0]
        if expected is None or not self._dest.exists(name):
            return "absent"
        update = self._reporter.progress(name)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            update(done, None)

        unpack = self._unpacker(item, name)
        try:
            found, seen = ondisk.recheck(
                self._dest, name, expected, progress=advance, check_with=_checks(unpack)
            )
            if seen is not None:
                self._finish(item, self._seen(item, name, seen, unpack))
        finally:
            if unpack is not None:
                unpack.abort()
        return found

    def _changed_on_disk(self, item: Item, name: str, why_not: str) -> JobRecord:
        expected, size = self._old_file(item, name)
        expected = item.archive.sha1 or expected
        assert expected is not None
        if size is None:
            size = self._dest.size(name) or 0
        return self._seen(item, name, ondisk.changed(name, expected, size, why_not))

    def _kept_part_verifies(self, item: Item, name: str) -> bool:
        expected = item.archive.sha1
        if not expected:
            return False
        unpack = self._unpacker(item, name)
        try:
            seen = ondisk.finish_kept_part(self._dest, name, expected, check_with=_checks(unpack))
            if seen is not None:
                self._finish(item, self._seen(item, name, seen, unpack))
        finally:
            if unpack is not None:
                unpack.abort()
        return seen is not None

    def _seen(
        self, item: Item, name: str, seen: ondisk.Seen, unpack: ArchiveUnpack | None = None
    ) -> JobRecord:
        verified = seen.outcome == "verified" and seen.report is not None
        return self._record(
            item,
            seen.outcome,
            seen.reason,
            name=name,
            failure=seen.failure,
            size=seen.size,
            sha1=seen.sha1,
            report=seen.report,
            unpacked=unpack.complete(seen.report) if unpack and verified and seen.report else None,
        )

    def _old_file(self, item: Item, name: str) -> tuple[str | None, int | None]:
        """The SHA1 and size an earlier run recorded for this archive's bytes, if any."""
        f = self._old_record(item, name)
        return (f.sha1, f.size) if f is not None else (None, None)

    def _old_record(self, item: Item, name: str | None) -> FileRecord | None:
        """What an earlier run recorded of this archive's bytes under `name`, if any."""
        for f in self._old_files.get(item.job.id, ()):
            if f.name == name and f.on_disk:
                return f
        return None

    def _unpacker(self, item: Item, name: str) -> ArchiveUnpack | None:
        """The unpack of an archive (with --unpack-to), its replica set the API's else the
        one an earlier run read in it."""
        if self._unpack is None:
            return None
        earlier = self._old_record(item, name)
        replica_set = item.archive.replica_set or (earlier.replica_set if earlier else None)
        return self._unpack.archive(name, replica_set, earlier)

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
            reason = f"{name}: {exc.strerror or exc}"
            record = self._record(item, "failed", reason, name=name, failure="error")
        except Exception as exc:  # noqa: BLE001 - one odd job must not sink the batch
            reason = f"{name}: unexpected {type(exc).__name__}"
            record = self._record(item, "failed", reason, name=name, failure="error")
        self._finish(item, record)

    def _transfer_and_verify(self, item: Item, name: str) -> JobRecord:
        unpack = self._unpacker(item, name)
        try:
            return self._transfer(item, name, unpack)
        finally:
            if unpack is not None:
                unpack.abort()  # unless its tree was published: then nothing is left to remove

    def _transfer(self, item: Item, name: str, unpack: ArchiveUnpack | None) -> JobRecord:
        job, archive = item.job, item.archive
        assert archive.url is not None
        source = Source(
            job_id=item.key,
            url=archive.url,
            display=archive.display,
            bearer=archive.bearer,
            max_downloads=job.delivery.max_downloads,
        )
        result = self._download(source, name, archive.sha1, fresh=False, unpack=unpack)
        attempts = result.attempts
        expected = archive.sha1
        if expected is None and archive.sha1_source == "late":
            expected = self._late_sha1(item)
        decision = self._decide(item, name, result, expected, retried=False)
        if decision.action == "again":
            self._reporter.note(f"{name}: {decision.reason}; starting over")
            discard(self._dest, name)
            result = self._download(source, name, expected, fresh=True, unpack=unpack)
            attempts += result.attempts
            decision = self._decide(item, name, result, expected, retried=True)
        unpacked = None
        if decision.action == "commit":
            commit(self._dest, name)
            if unpack is not None and result.archive is not None:
                unpacked = unpack.complete(result.archive)  # the archive first, then its tree
        elif decision.action == "discard":
            discard(self._dest, name)
        published = decision.action == "commit"
        return self._record(
            item,
            decision.outcome,
            decision.reason,
            name=name,
            failure=decision.failure,
            size=result.size if published else None,
            sha1=decision.sha1 if published else None,
            # What the check found of bytes that were deleted says nothing of the archive.
            report=result.archive if decision.action != "discard" else None,
            attempts=attempts,
            resumed_bytes=result.resumed_bytes,
            unpacked=unpacked,
        )

    def _decide(
        self, item: Item, name: str, result: PartResult, expected: str | None, *, retried: bool
    ) -> Decision:
        report = result.archive
        assert report is not None  # every download runs the archive check
        found = Found(
            sha1=result.sha1,
            size=result.size,
            passed=report.passed,
            problem=report.problem,
            replica_set=report.replica_set,
            resumed=result.resumed,
            fresh_bytes=result.downloaded_bytes,
        )
        return decide(
            name,
            found,
            expected=expected,
            source=item.archive.sha1_source,
            listed_set=item.archive.replica_set,
            retried=retried,
        )

    def _download(
        self,
        source: Source,
        name: str,
        sha1: str | None,
        *,
        fresh: bool,
        unpack: ArchiveUnpack | None,
    ) -> PartResult:
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
            check=_checks(unpack),
            write=self._write,
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
        failure: mf.Failure | None = None,
        size: int | None = None,
        sha1: str | None = None,
        report: ArchiveReport | None = None,
        attempts: int = 0,
        resumed_bytes: int = 0,
        unpacked: Unpack | None = None,
    ) -> JobRecord:
        """The job's record with this one archive: unnamed but for its replica set when its
        name is not known (none at all while the job's archives are not)."""
        reason = self._redactor.scrub(reason)
        info = item.job.info()
        if name is None and (item.key == item.job.id or not item.archive.replica_set):
            # The slot that stands for a job whose archives are not known yet.
            return JobRecord(item.job.id, outcome, reason, failure=failure, info=info)
        file = FileRecord(
            name,
            outcome,
            reason,
            size=size,
            sha1=sha1,
            failure=failure,
            attempts=attempts,
            resumed_bytes=resumed_bytes,
            replica_set=item.archive.replica_set,
            unpack=unpacked or self._unpacked_earlier(item, name, sha1),
        )
        return JobRecord.of(item.job.id, (file.with_check(report),), info=info)

    def _unpacked_earlier(self, item: Item, name: str | None, sha1: str | None) -> Unpack | None:
        """Where an earlier run unpacked these very bytes, kept on record by a run without
        --unpack-to (one with it looks at the tree again)."""
        earlier = self._old_record(item, name) if self._unpack is None and sha1 else None
        if earlier is None or earlier.sha1 != sha1 or earlier.unpack is None:
            return None
        return replace(earlier.unpack, problem=None) if earlier.unpack.to else None

    @property
    def records(self) -> tuple[JobRecord, ...]:
        """What this run decided for each archive it saw (the manifest also keeps older ones)."""
        with self._lock:
            return tuple(self._records.values())

    def _finish(self, item: Item, record: JobRecord) -> None:
        if record.outcome == "verified":
            self._journal.append(record)  # an interrupted run still records what it verified
        with self._lock:
            self._records[item.key] = record
        self._reporter.finished(record)

    def _write_manifest(self) -> Manifest:
        with self._lock:
            jobs = tuple(
                replace(record, listed=tuple(sorted(self._listed.get(record.id, ()))))
                for record in self._records.values()
            )
            current = replace(
                self._head,
                jobs=jobs,
                selection=self._target.only,
                batch_job_ids=tuple(sorted(self._batch_ids)),
            )
            return mf.write(self._dest, mf.merge(self._old, current))

    def _describe_target(self) -> str:
        t = self._target
        what = f"job {t.job_id}" if t.job_id else f"batch {t.batch_id}" if t.batch_id else "cluster"
        return f"{what} of cluster {t.cluster} in group {t.group}"


def _checks(unpack: ArchiveUnpack | None) -> Callable[[], ArchiveCheck]:
    """The archive check a pass over an archive makes: one that unpacks it, with --unpack-to."""
    return unpack.new_check if unpack is not None else ArchiveCheck
