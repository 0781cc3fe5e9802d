"""One resumable download into `.NAME.part`, hashed while it streams, committed atomically."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from fetcher.checks.archive import ArchiveCheck, ArchiveReport
from fetcher.engine.answers import content_range, if_range, range_size, unsatisfied_range
from fetcher.engine.part import PartState
from fetcher.engine.stream import BodyWriter, OverlongBody, Write, content_length, read_body
from fetcher.errors import DiskSpaceError, FetcherError, TransferError
from fetcher.names import partial_name, state_name
from fetcher.retry import RetryPolicy, certificate_error, is_retryable_status, parse_retry_after
from fetcher.storage import Destination, SpaceGuard, hash_fd, io_error

PROGRESS_INTERVAL = 0.2  # seconds between progress reports
# No restore archive comes near 1 PiB: a larger claim is a lie, not a reason to say the
# disk is too small (or to reserve that much).
MAX_ARCHIVE_BYTES = 1 << 50


class Progress(Protocol):
    """Receives absolute progress for one archive; only the CLI knows how to draw it."""

    def __call__(self, done: int, total: int | None) -> None:
        """Report `done` bytes of `total` (None while unknown)."""


def no_progress(done: int, total: int | None) -> None:
    return None


@dataclass(frozen=True)
class Source:
    """Where an archive comes from. `url` and `bearer` are secrets and never shown."""

    job_id: str
    url: str = field(repr=False)
    display: str
    bearer: str | None = field(default=None, repr=False)
    max_downloads: int | None = None  # what the API says the link allows, when it says


@dataclass(frozen=True)
class PartResult:
    """A complete partial file: what it hashes to and what it took to get it."""

    size: int
    sha1: str
    attempts: int
    resumed_bytes: int
    downloaded_bytes: int
    archive: ArchiveReport | None = None  # the archive check's verdict, when one was asked for

    @property
    def resumed(self) -> bool:
        """True when some of the bytes were kept from an earlier attempt or run."""
        return self.resumed_bytes > 0


class _Restart(Exception):
    """The bytes on disk cannot be continued: truncate and try again from zero."""


class _Retry(Exception):
    """A failure worth another try after a pause."""

    def __init__(self, why: str, retry_after: float | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.retry_after = retry_after


class Download:
    """Fetch one archive into its partial file, resuming from whatever is safely there."""

    def __init__(
        self,
        client: httpx.Client,
        dest: Destination,
        name: str,
        source: Source,
        *,
        expected_sha1: str | None,
        policy: RetryPolicy,
        space: SpaceGuard | None = None,
        progress: Progress = no_progress,
        write: Write = os.write,
        clock: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
        check: Callable[[], ArchiveCheck] | None = None,
    ) -> None:
        # Public: a MultiDownload of the same archive works with them (the progress unwrapped).
        self.client, self.dest, self.name, self.source = client, dest, name, source
        self.expected_sha1, self.policy, self.space = expected_sha1, policy, space
        self.stop, self.progress = stop, progress
        # The archive check follows the SHA1 over every byte of the partial file, in order;
        # it starts again whenever the file does.
        self.new_check = check
        self._check: ArchiveCheck | None = None  # made when the partial file is opened
        self._progress = progress if stop is None else self._stoppable(progress)
        self._write, self._clock = write, clock
        self._part, self._state_name = partial_name(name), state_name(name)
        self._state = PartState(job_id=source.job_id, source=source.display, sha1=expected_sha1)
        self._digest: Any = hashlib.sha1()
        self._offset = 0
        self.attempts = 0
        self._resumed_bytes = 0
        self._downloaded = 0
        self._requests = 0  # sent to this link for this file, earlier runs included

    def run(self, *, fresh: bool = False) -> PartResult:
        """Download until the partial file is complete; raise TransferError when giving up."""
        fd = self._open_part(fresh)
        try:
            self._loop(fd)
            os.fsync(fd)
        except OSError as exc:
            raise self.os_error(exc) from None
        finally:
            os.close(fd)
            if self.space is not None:
                self.space.release(self.name)
        return PartResult(
            size=self._offset,
            sha1=self._digest.hexdigest(),
            attempts=self.attempts,
            resumed_bytes=self._resumed_bytes,
            downloaded_bytes=self._downloaded,
            archive=self._check.finish() if self._check is not None else None,
        )

    def _open_part(self, fresh: bool) -> int:
        try:
            fd = self.dest.open_private(self._part)  # no symlink, no shared hard link
        except OSError as exc:
            raise self.os_error(exc) from None
        try:
            size = os.fstat(fd).st_size
            state = None if fresh else self._load_state()
            if state is not None and self._same_link(state):
                self._requests = state.requests  # each may have counted against maxDownloads
                if state.prefix is not None and size > state.prefix:
                    # Several connections left ranges beyond a whole start: keep the start.
                    self._dest_truncate_to(fd, state.prefix)
                    size = state.prefix
            if size and state is not None and self._matches(state, size):
                # SHA1 state cannot be saved between runs: hash what is already on disk.
                self._state = state
                self._check = self.new_check() if self.new_check is not None else None
                # Leaves fd at the end; the archive check goes over the same bytes meanwhile.
                self._offset, self._digest = hash_fd(fd, limit=size, sink=self._check)
                self._progress(self._offset, state.size)
            else:
                self._truncate(fd)
        except BaseException:
            os.close(fd)  # run() only closes what _open_part returned
            raise
        return fd

    def _load_state(self) -> PartState | None:
        self.dest.set_aside_foreign(self._state_name)  # another user's state is not ours
        try:
            return PartState.from_json(self.dest.read_json(self._state_name, limit=64 * 1024))
        except (ValueError, OSError):
            return None  # a state file that lies or is torn means "start over"

    def _same_link(self, state: PartState) -> bool:
        return state.job_id == self.source.job_id and state.source == self.source.display

    def _matches(self, state: PartState, size: int) -> bool:
        if not self._same_link(state):
            return False
        if state.sha1 and self.expected_sha1 and state.sha1 != self.expected_sha1:
            return False
        if state.size is not None and size > state.size:
            return False
        return bool(state.etag or state.last_modified or state.size)

    def _dest_truncate_to(self, fd: int, size: int) -> None:
        self.dest.remove(self._state_name)  # it describes bytes about to go
        os.ftruncate(fd, size)

    def _truncate(self, fd: int) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.fsync(fd)
        self._offset = 0
        self._digest = hashlib.sha1()
        self._check = self.new_check() if self.new_check is not None else None
        self._resumed_bytes = 0

    def _save_state(self) -> None:
        self._state.requests = self._requests
        data = (json.dumps(self._state.to_json()) + "\n").encode()
        self.dest.write_atomic(self._state_name, data)

    def _loop(self, fd: int) -> None:
        failures = 0
        while True:
            if self._state.size is not None and self._offset == self._state.size:
                # Complete on disk: ask nothing (a 416 would prove nothing); the SHA1 decides.
                if self.attempts == 0:
                    self._resumed_bytes += self._offset  # all of it kept from an earlier run
                return
            self._check_stop()
            self.attempts += 1
            # Count arrivals, not the offset: a restart can leave the offset lower than before
            # even though bytes came in.
            before = self._downloaded
            try:
                self._attempt(fd)
                return
            except _Restart:
                self._truncate(fd)
                self._state = PartState(
                    self.source.job_id, self.source.display, sha1=self._state.sha1
                )
                failures += 1
                why, retry_after = "could not resume", None
            except _Retry as exc:
                failures += 1
                why, retry_after = exc.why, exc.retry_after
            except httpx.TransportError as exc:
                if (problem := certificate_error(exc)) is not None:
                    raise TransferError(
                        f"{self.name}: TLS certificate not trusted ({problem})"
                        f" at {self.source.display}; a private CA goes in --ca-cert"
                    ) from None
                failures += 1
                why, retry_after = type(exc).__name__, None
            if self._downloaded > before:
                failures = 1  # bytes arrived: the budget starts again
            if self.policy.exhausted(failures):
                raise TransferError(
                    f"{self.name}: giving up after {self.attempts} attempts ({why})"
                )
            self._pause(self.policy.delay(failures, retry_after))

    def _pause(self, seconds: float) -> None:
        """Wait before the next attempt; an interrupt cuts a real wait (up to minutes) short."""
        self._check_stop()
        if self.stop is not None and self.policy.sleep is time.sleep:
            self.stop.wait(seconds)
        else:
            self.policy.sleep(seconds)  # an injected sleep (tests) is called as it is
        self._check_stop()

    def _check_stop(self) -> None:
        """End the transfer where it stands once the fetch is interrupted; the bytes stay."""
        if self.stop is not None and self.stop.is_set():
            raise TransferError(f"{self.name}: interrupted; {self._part} kept for a resume")

    def _stoppable(self, progress: Progress) -> Progress:
        """Wrap `progress`: it is the one call made between chunks, so a stop can end a stream."""

        def report(done: int, total: int | None) -> None:
            self._check_stop()
            progress(done, total)

        return report

    def _headers(self) -> dict[str, str]:
        if self._offset == 0:
            return request_headers(self.source)
        validator = if_range(self._state.etag, self._state.last_modified)
        return request_headers(self.source, f"bytes={self._offset}-", validator)

    def _attempt(self, fd: int) -> None:
        if self.space is not None and self._state.size is not None:
            # Known from an earlier attempt or run: refuse before a request spends a download.
            remaining = self._state.size - self._offset
            self.space.reserve(self.name, remaining, where=str(self.dest.path))
        with self.client.stream("GET", self.source.url, headers=self._headers()) as response:
            self._requests += 1
            if _limited(self.source.max_downloads):
                self._save_state()  # every request may count: a kill must not lose one
            if response.status_code == 416 and self._complete_per_416(fd, response):
                return
            total = self._accept(fd, response)
            self._receive(fd, response, total)

    def _complete_per_416(self, fd: int, response: httpx.Response) -> bool:
        """A 416 whose total equals what we hold means every byte is here; the SHA1 decides."""
        total = unsatisfied_range(response.headers.get("content-range"))
        if total is None or total != self._offset or self._state.size not in (None, total):
            return False
        self._state.size = total
        self._resumed_bytes += self._offset
        os.fsync(fd)  # the state may say "complete" only once the bytes are durable
        self._save_state()
        return True

    def _accept(self, fd: int, response: httpx.Response) -> int | None:
        """Check the status and headers; return the full size of the archive if known."""
        status = response.status_code
        if status == 200:
            length = self._believable(content_length(response))  # before truncating
            if self._offset > 0:
                self._truncate(fd)  # Range ignored, or If-Range said the file changed
            self._state = PartState(
                self.source.job_id,
                self.source.display,
                etag=response.headers.get("etag"),
                last_modified=response.headers.get("last-modified"),
                size=length,
                sha1=self._state.sha1,
            )
            self._save_state()
            return length
        if status == 206:
            start, total = content_range(response.headers.get("content-range"))
            self._believable(total)
            if start != self._offset or total is None:
                raise _Restart()
            if self._state.size is not None and total != self._state.size:
                raise _Restart()
            etag = response.headers.get("etag")
            if etag and self._state.etag and etag != self._state.etag:
                raise _Restart()
            if self._state.size is None:
                self._state.size = total
                self._save_state()
            self._resumed_bytes += self._offset
            return total
        if status == 416:
            raise _Restart()  # our partial file is not a prefix of what is there now
        if is_retryable_status(status):
            raise _Retry(f"HTTP {status}", parse_retry_after(response.headers.get("retry-after")))
        self._save_state()  # the next run must know how many downloads this link has spent
        refused = (
            f"{self.name}: the pull host answered {status} {response.reason_phrase}"
            f" for {self.source.display}"
        )
        limit = self.source.max_downloads
        if status in (403, 410) and limit is not None and self._requests >= limit:
            raise TransferError(
                f"{refused} after {self._requests} requests to a link that allows {limit}"
                f" downloads: its download limit is probably used up; {self._part} is kept,"
                " but a new restore job is needed to download the archive"
            )
        raise TransferError(refused)

    def _believable(self, size: int | None) -> int | None:
        """Return a size the pull host announced, or refuse an absurd one."""
        if size is not None and size > MAX_ARCHIVE_BYTES:
            raise TransferError(
                f"{self.name}: the pull host claims the archive is {size} bytes (over 1 PiB)"
                f" at {self.source.display}; refusing"
            )
        return size

    def _receive(self, fd: int, response: httpx.Response, total: int | None) -> None:
        if total is not None and self.space is not None:
            self.space.reserve(self.name, total - self._offset, where=str(self.dest.path))
        writer = BodyWriter(fd, self._digest, self._offset, self._write, self._check)
        next_report = 0.0
        overlong = False
        try:
            for n in read_body(response, writer, self._limit(response, total)):
                self._offset += n
                self._downloaded += n
                now = self._clock()
                if now >= next_report:
                    next_report = now + PROGRESS_INTERVAL
                    self._progress(self._offset, total)
                    if self.space is not None and total is not None:
                        self.space.update(self.name, total - self._offset)
        except OverlongBody:
            overlong = True  # what the range covers is kept; the rest was never written
        finally:
            try:
                writer.close()
            finally:
                # Whatever happened, the offset is what is on disk, hashed.
                self._offset = writer.written
        self._progress(self._offset, total)
        if overlong:
            raise _Retry("body longer than its Content-Range")
        if total is not None and self._offset != total:
            raise _Retry(f"short body ({self._offset} of {total} bytes)")
        if total is None:
            self._state.size = self._offset  # chunked body that ended cleanly
            os.fsync(fd)  # data first, then the state that calls it complete
            self._save_state()

    def _limit(self, response: httpx.Response, total: int | None) -> int | None:
        """The most body bytes this answer may bring: its range, else the rest of the file."""
        if response.status_code == 206:
            return range_size(response.headers.get("content-range"))
        return None if total is None else total - self._offset

    def os_error(self, exc: OSError) -> FetcherError:
        where = self.dest.path / self._part
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # Say what a full disk leaves behind here: the bytes so far, ready to resume.
            return DiskSpaceError(
                f"no space left on device writing {where} ({self._offset} bytes kept;"
                " free some space and run fetch again to resume)"
            )
        return io_error(exc, where)


def _limited(max_downloads: int | None) -> bool:
    """A link whose downloads are counted (2147483647, MongoDB's 'unlimited', is not)."""
    return max_downloads is not None and max_downloads < 2**31 - 1


def request_headers(
    source: Source, byte_range: str | None = None, validator: str | None = None
) -> dict[str, str]:
    """The headers of a GET to a pull link: no compression, its bearer, a range, If-Range."""
    headers = {"Accept-Encoding": "identity"}
    if source.bearer:
        headers["Authorization"] = f"Bearer {source.bearer}"
    if byte_range is not None:
        headers["Range"] = byte_range
        if validator:
            headers["If-Range"] = validator
    return headers
