"""One resumable download into `.NAME.part`, hashed while it streams, committed atomically."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from fetcher.errors import DiskSpaceError, FetcherError, TransferError
from fetcher.names import partial_name, state_name
from fetcher.retry import RetryPolicy, is_retryable_status, parse_retry_after
from fetcher.storage import Destination, SpaceGuard, hash_fd

STATE_VERSION = 1
SYNC_EVERY = 64 * 1024 * 1024  # flush to disk as we go, so the final fsync is short
QUEUE_CHUNKS = 32
PROGRESS_INTERVAL = 0.2
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)

Write = Callable[[int, bytes | memoryview], int]


class Progress(Protocol):
    """Receives absolute progress for one archive; only the CLI knows how to draw it."""

    def __call__(self, done: int, total: int | None) -> None:
        """Report `done` bytes of `total` (None while unknown)."""


def _no_progress(done: int, total: int | None) -> None:
    return None


@dataclass(frozen=True)
class Source:
    """Where an archive comes from. `url` and `bearer` are secrets and never shown."""

    job_id: str
    url: str = field(repr=False)
    display: str
    bearer: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PartResult:
    """A complete partial file: what it hashes to and what it took to get it."""

    size: int
    sha1: str
    attempts: int
    resumed_bytes: int
    downloaded_bytes: int

    @property
    def resumed(self) -> bool:
        """True when some of the bytes were kept from an earlier attempt or run."""
        return self.resumed_bytes > 0


@dataclass
class _State:
    """What the partial file belongs to; kept beside it in `.NAME.part.json`."""

    job_id: str
    source: str
    etag: str | None = None
    last_modified: str | None = None
    size: int | None = None
    sha1: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "jobId": self.job_id,
            "source": self.source,
            "etag": self.etag,
            "lastModified": self.last_modified,
            "size": self.size,
            "sha1": self.sha1,
        }

    @classmethod
    def from_json(cls, obj: object) -> _State | None:
        if not isinstance(obj, dict) or obj.get("version") != STATE_VERSION:
            return None
        size = obj.get("size")
        fields = {k: obj.get(k) for k in ("jobId", "source", "etag", "lastModified", "sha1")}
        if not all(isinstance(v, str | None) for v in fields.values()):
            return None
        if not isinstance(fields["jobId"], str) or not isinstance(fields["source"], str):
            return None
        if size is not None and (not isinstance(size, int) or size < 0):
            return None
        return cls(
            job_id=fields["jobId"],
            source=fields["source"],
            etag=fields["etag"],
            last_modified=fields["lastModified"],
            size=size,
            sha1=fields["sha1"],
        )


class _Restart(Exception):
    """The bytes on disk cannot be continued: truncate and try again from zero."""


class _Retry(Exception):
    """A failure worth another try after a pause."""

    def __init__(self, why: str, retry_after: float | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.retry_after = retry_after


class _Writer:
    """Hashes and writes chunks on a thread of its own, so the network read never waits."""

    def __init__(self, fd: int, digest: Any, offset: int, write: Write) -> None:
        self._fd, self._digest, self._write = fd, digest, write
        self.written = offset
        self._synced = offset
        self.error: OSError | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._thread = threading.Thread(target=self._run, name="fetcher-writer", daemon=True)
        self._thread.start()

    def put(self, chunk: bytes) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(chunk)

    def close(self) -> None:
        """Wait for everything queued to be hashed and written; re-raise a write error."""
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self.error is not None:
                continue  # drain, so put() never blocks forever
            try:
                view = memoryview(chunk)
                while view:
                    view = view[self._write(self._fd, view) :]
                self._digest.update(chunk)
                self.written += len(chunk)
                if self.written - self._synced >= SYNC_EVERY:
                    os.fdatasync(self._fd)
                    self._synced = self.written
            except OSError as exc:
                self.error = exc


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
        progress: Progress = _no_progress,
        write: Write = os.write,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client, self._dest, self._name, self._source = client, dest, name, source
        self._expected_sha1 = expected_sha1
        self._policy, self._space, self._progress = policy, space, progress
        self._write, self._clock = write, clock
        self._part, self._state_name = partial_name(name), state_name(name)
        self._state = _State(job_id=source.job_id, source=source.display, sha1=expected_sha1)
        self._digest: Any = hashlib.sha1()
        self._offset = 0
        self.attempts = 0
        self._resumed_bytes = 0
        self._downloaded = 0

    def run(self, *, fresh: bool = False) -> PartResult:
        """Download until the partial file is complete; raise TransferError when giving up."""
        fd = self._open_part(fresh)
        try:
            self._loop(fd)
            os.fsync(fd)
        except OSError as exc:
            raise self._os_error(exc) from None
        finally:
            os.close(fd)
            if self._space is not None:
                self._space.release(self._name)
        return PartResult(
            size=self._offset,
            sha1=self._digest.hexdigest(),
            attempts=self.attempts,
            resumed_bytes=self._resumed_bytes,
            downloaded_bytes=self._downloaded,
        )

    def _open_part(self, fresh: bool) -> int:
        try:
            fd = self._dest.open(self._part, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise FetcherError(f"{self._dest.path / self._part} is a symbolic link") from None
            raise self._os_error(exc) from None
        size = os.fstat(fd).st_size
        state = None if fresh else self._load_state()
        if size and state is not None and self._matches(state, size):
            # SHA1 state cannot be saved between runs: hash what is already on disk.
            self._state = state
            self._offset, self._digest = self._hash_existing(fd, size)
            self._progress(self._offset, state.size)
        else:
            self._truncate(fd)
        return fd

    def _load_state(self) -> _State | None:
        try:
            return _State.from_json(self._dest.read_json(self._state_name, limit=64 * 1024))
        except (ValueError, OSError):
            return None  # a state file that lies or is torn means "start over"

    def _matches(self, state: _State, size: int) -> bool:
        if state.job_id != self._source.job_id or state.source != self._source.display:
            return False
        if state.sha1 and self._expected_sha1 and state.sha1 != self._expected_sha1:
            return False
        if state.size is not None and size > state.size:
            return False
        return bool(state.etag or state.last_modified or state.size)

    def _hash_existing(self, fd: int, size: int) -> tuple[int, Any]:
        done, digest = hash_fd(fd, limit=size)
        os.lseek(fd, done, os.SEEK_SET)
        return done, digest

    def _truncate(self, fd: int) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.fsync(fd)
        self._offset = 0
        self._digest = hashlib.sha1()
        self._resumed_bytes = 0

    def _save_state(self) -> None:
        data = (json.dumps(self._state.to_json()) + "\n").encode()
        self._dest.write_atomic(self._state_name, data)

    def _loop(self, fd: int) -> None:
        failures = 0
        while True:
            if self._state.size is not None and self._offset == self._state.size:
                # Complete on disk: ask nothing (a 416 would prove nothing); the SHA1 decides.
                self._resumed_bytes += self._offset if self.attempts == 0 else 0
                return
            self.attempts += 1
            before = self._offset
            try:
                self._attempt(fd)
                return
            except _Restart:
                self._truncate(fd)
                self._state = _State(
                    self._source.job_id, self._source.display, sha1=self._state.sha1
                )
                failures += 1
                why, retry_after = "could not resume", None
            except _Retry as exc:
                failures += 1
                why, retry_after = exc.why, exc.retry_after
            except httpx.TransportError as exc:
                failures += 1
                why, retry_after = type(exc).__name__, None
            if self._offset > before:
                failures = 1  # bytes arrived: the budget starts again
            if self._policy.exhausted(failures):
                raise TransferError(
                    f"{self._name}: giving up after {self.attempts} attempts ({why})"
                )
            self._policy.sleep(self._policy.delay(failures, retry_after))

    def _headers(self) -> dict[str, str]:
        headers = {"Accept-Encoding": "identity"}
        if self._source.bearer:
            headers["Authorization"] = f"Bearer {self._source.bearer}"
        if self._offset > 0:
            headers["Range"] = f"bytes={self._offset}-"
            validator = _if_range(self._state)
            if validator:
                headers["If-Range"] = validator
        return headers

    def _attempt(self, fd: int) -> None:
        with self._client.stream("GET", self._source.url, headers=self._headers()) as response:
            if response.status_code == 416 and self._complete_per_416(response):
                return
            total = self._accept(fd, response)
            self._receive(fd, response, total)

    def _complete_per_416(self, response: httpx.Response) -> bool:
        """A 416 whose total equals what we hold means every byte is here; the SHA1 decides."""
        _, total = _unsatisfied_range(response.headers.get("content-range"))
        if total is None or total != self._offset or self._state.size not in (None, total):
            return False
        self._state.size = total
        self._resumed_bytes += self._offset
        self._save_state()
        return True

    def _accept(self, fd: int, response: httpx.Response) -> int | None:
        """Check the status and headers; return the full size of the archive if known."""
        status = response.status_code
        if status == 200:
            if self._offset > 0:
                self._truncate(fd)  # Range ignored, or If-Range said the file changed
            length = _content_length(response)
            self._state = _State(
                self._source.job_id,
                self._source.display,
                etag=response.headers.get("etag"),
                last_modified=response.headers.get("last-modified"),
                size=length,
                sha1=self._state.sha1,
            )
            self._save_state()
            return length
        if status == 206:
            start, total = _content_range(response.headers.get("content-range"))
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
        raise TransferError(
            f"{self._name}: the pull host answered {status} {response.reason_phrase}"
            f" for {self._source.display}"
        )

    def _receive(self, fd: int, response: httpx.Response, total: int | None) -> None:
        if total is not None and self._space is not None:
            self._space.reserve(self._name, total - self._offset, where=str(self._dest.path))
        writer = _Writer(fd, self._digest, self._offset, self._write)
        next_report = 0.0
        try:
            for chunk in response.iter_raw():
                writer.put(chunk)
                self._offset += len(chunk)
                self._downloaded += len(chunk)
                now = self._clock()
                if now >= next_report:
                    next_report = now + PROGRESS_INTERVAL
                    self._progress(self._offset, total)
                    if self._space is not None and total is not None:
                        self._space.update(self._name, total - self._offset)
        finally:
            try:
                writer.close()
            finally:
                # Whatever happened, the offset is what is on disk, hashed.
                self._offset = writer.written
        self._progress(self._offset, total)
        if total is not None and self._offset != total:
            raise _Retry(f"short body ({self._offset} of {total} bytes)")
        if total is None:
            self._state.size = self._offset  # chunked body that ended cleanly
            self._save_state()

    def _os_error(self, exc: OSError) -> FetcherError:
        where = self._dest.path / self._part
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskSpaceError(
                f"no space left on device writing {where} ({self._offset} bytes kept;"
                " free some space and run fetch again to resume)"
            )
        return FetcherError(f"cannot write {where}: {exc.strerror or exc}")


def _if_range(state: _State) -> str | None:
    if state.etag and not state.etag.startswith("W/"):
        return state.etag  # weak validators are not allowed in If-Range
    return state.last_modified


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """Parse 'bytes START-END/TOTAL'; (None, None) when absent or malformed."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None
    start, end, total = int(match[1]), int(match[2]), match[3]
    if total == "*" or end < start or end >= int(total):
        return None, None
    return start, int(total)


def _unsatisfied_range(value: str | None) -> tuple[None, int | None]:
    """Parse a 416's 'bytes */TOTAL'."""
    match = re.match(r"^\s*bytes\s+\*/(\d+)\s*$", value or "", re.IGNORECASE)
    return None, (int(match[1]) if match else None)


def commit(dest: Destination, name: str) -> None:
    """Give a verified partial file its final name, durably, and drop its state."""
    dest.replace(partial_name(name), name)
    dest.remove(state_name(name))


def discard(dest: Destination, name: str) -> None:
    """Delete a partial file and its state."""
    dest.remove(partial_name(name))
    dest.remove(state_name(name))
