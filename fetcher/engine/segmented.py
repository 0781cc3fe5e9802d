"""One archive over several connections: byte ranges written in place, checked in order behind.

A single TCP connection over a long, fat link gets a fraction of the bandwidth. Here each of N
workers fetches a byte range of the archive and writes it where it belongs in `.NAME.part`
(os.pwrite). Ranges are handed out as they are needed: a worker that runs out of work takes
half of the largest range still being fetched (as aria2 does), so one slow connection does not
hold the end of the download. The SHA1 and the archive check follow the contiguous prefix of
the file that is complete, reading back what the workers wrote (from the page cache) through
the same ring of buffers `hash_fd` uses: memory stays flat, and the archive still gets its final
name only after every check passed (the caller commits it).

The state file (`.NAME.part.json`, version 2) records the finished ranges and the validators,
written only after the data it describes is fsynced, so a run killed at any moment resumes every
range where it stood. A server that does not serve ranges (it answers 200, or gives no length)
gets one connection: `run()` hands over to the single-connection Download.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from fetcher.engine.answers import content_range, if_range, range_size
from fetcher.engine.part import PartState
from fetcher.engine.plan import Interval, Plan, Segment, merge
from fetcher.engine.ring import Ring, feed
from fetcher.engine.stream import content_length
from fetcher.engine.transfer import MAX_ARCHIVE_BYTES, Download, PartResult, request_headers
from fetcher.errors import TransferError
from fetcher.names import partial_name, state_name
from fetcher.retry import certificate_error, is_retryable_status, parse_retry_after
from fetcher.storage import HASH_BLOCK, HASH_BUFFERS

STATE_VERSION = 2
# A server that answers a request within this is on this host or its LAN: one connection
# fills such a link, and several would only cost CPU (httpx's copies) the transfer needs.
NEAR_SECONDS = 0.005
CHECKPOINT_SECONDS = 1.0
PROGRESS_INTERVAL = 0.2


class _Changed(Exception):
    """The archive on the server is not the one the ranges on disk came from."""


class _NoRanges(Exception):
    """The server answers byte ranges with the whole file, or gives no length."""


class _Near(Exception):
    """The server answers at once: one connection fills the link, and costs less CPU."""


class _Retry(Exception):
    def __init__(self, why: str, retry_after: float | None = None) -> None:
        super().__init__(why)
        self.why, self.retry_after = why, retry_after


def _mark(marks: dict[str, float], clock: Callable[[], float], event: str, info: object) -> None:
    marks[event] = clock()


def _answered_within(marks: dict[str, float], seconds: float) -> bool:
    """Whether the probe's answer came within `seconds` of its request (httpcore's trace)."""
    sent = marks.get("http11.send_request_headers.started")
    answered = marks.get("http11.receive_response_headers.complete")
    return sent is not None and answered is not None and answered - sent < seconds


class MultiDownload:
    """Download into `.NAME.part` over `connections` connections; same contract as Download."""

    def __init__(
        self,
        single: Download,
        *,
        connections: int,
        near_single: bool = False,
        near_seconds: float = NEAR_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The single-connection download, set up for this archive: its settings are this
        # one's, and it takes over when the server serves no ranges.
        self._single = single
        self._client, self._dest, self._name = single.client, single.dest, single.name
        self._source, self._expected_sha1 = single.source, single.expected_sha1
        self._policy, self._space, self._stop = single.policy, single.space, single.stop
        self._progress, self._new_check = single.progress, single.new_check
        self._connections = max(1, connections)
        # A default, not a request: a server that answers within NEAR_SECONDS gets one.
        self._near_single, self._near_seconds = near_single, near_seconds
        self._clock = clock
        self._part, self._state_name = partial_name(self._name), state_name(self._name)
        self._lock = threading.Lock()
        self._halt = threading.Event()  # set to end every worker (an error, an interrupt)
        self._error: BaseException | None = None
        self._attempts = 0
        self._downloaded = 0
        self._etag: str | None = None
        self._last_modified: str | None = None

    # -- the whole run ------------------------------------------------------------------

    def run(self, *, fresh: bool = False) -> PartResult:
        """Download until the partial file is complete and verified as far as it goes."""
        single = self._single
        try:
            fd = self._dest.open_private(self._part)
        except OSError as exc:
            raise single.os_error(exc) from None
        try:
            for _ in range(3):  # a file that changes on the server starts over, a few times
                try:
                    return self._run(fd, fresh=fresh)
                except _Changed:
                    fresh = True
            raise TransferError(f"{self._name}: the archive kept changing on the server")
        except _Near:
            return single.run(fresh=fresh)  # nothing was written: the single one starts as ever
        except _NoRanges:
            self._dest.remove(self._state_name)  # before the bytes it describes go
            os.ftruncate(fd, 0)
            return single.run(fresh=True)
        except OSError as exc:
            raise single.os_error(exc) from None
        finally:
            os.close(fd)
            if self._space is not None:
                self._space.release(self._name)

    def _run(self, fd: int, *, fresh: bool) -> PartResult:
        self._halt.clear()
        self._error = None
        size, done = (None, []) if fresh else self._resume_point(fd)
        if size is None:
            size = self._probe()
            done = []
            self._dest.remove(self._state_name)  # before the bytes it describes go
            os.ftruncate(fd, 0)
        os.ftruncate(fd, size)  # a sparse file of the archive's size: every range has a place
        self._save(done, size)
        resumed = sum(e - s for s, e in done)
        if self._space is not None:
            self._space.reserve(self._name, size - resumed, where=str(self._dest.path))
        plan = Plan(size, done, self._connections)
        workers: list[threading.Thread] = []
        try:
            for i in range(self._connections):
                worker = threading.Thread(
                    target=self._work, args=(fd, plan), name=f"fetcher-range-{i}"
                )
                worker.start()
                workers.append(worker)
            digest, report = self._follow(fd, plan)
        finally:
            self._halt.set()
            with plan.changed:
                plan.changed.notify_all()  # workers waiting for a range to split
            for worker in workers:
                worker.join()  # no write reaches the file after it is closed
        if self._error is not None:
            os.fdatasync(fd)
            self._save(plan.written(), size)  # every finished range is kept for a resume
            raise self._error
        os.fsync(fd)
        self._save([(0, size)], size)
        return PartResult(
            size=size,
            sha1=digest,
            attempts=self._attempts,
            resumed_bytes=resumed,
            downloaded_bytes=self._downloaded,
            archive=report,
        )

    def _follow(self, fd: int, plan: Plan) -> tuple[str, Any]:
        """Hash and check the written prefix as it grows; save the state now and then."""
        digest = hashlib.sha1()
        check = self._new_check() if self._new_check is not None else None
        ring = Ring(
            [feed(digest)] + ([feed(check)] if check is not None else []),
            blocks=HASH_BUFFERS,
            size=HASH_BLOCK,
            name="fetcher-follow",
        )
        size, read = plan.size, 0
        saved_at, saved_bytes = self._clock(), 0
        # A checkpoint (fdatasync, then the state) every 1/128 of the archive: a kill loses
        # what came since the last one, under 1% of the archive plus a read per connection.
        every = max(256 * 1024, size // 128)
        reported = 0.0
        try:
            while read < size:
                with plan.changed:
                    if plan.prefix() <= read and self._error is None and plan.busy:
                        plan.changed.wait(PROGRESS_INTERVAL)
                if self._error is not None:
                    break
                if self._stop is not None and self._stop.is_set():
                    self._fail(TransferError(f"{self._name}: interrupted; {self._part} kept"))
                    break
                available = plan.prefix()
                if available <= read and not plan.busy:
                    # Nothing is being fetched and the prefix does not grow: the workers ended.
                    if self._error is None:
                        self._fail(TransferError(f"{self._name}: ranges left unfetched"))
                    break
                # At most one checkpoint's worth at a time: saving the state, the progress and
                # the stop must not wait for a long prefix (a resumed one) to be hashed.
                upto = min(available, read + every)
                while read < upto:
                    index = ring.get()
                    want = min(HASH_BLOCK, upto - read)
                    n = os.preadv(fd, [memoryview(ring.buffers[index])[:want]], read)
                    ring.put(index, n)
                    if n == 0:
                        raise TransferError(f"{self._name}: {self._part} shrank while being read")
                    read += n
                written = plan.written()
                now = self._clock()
                total_written = sum(e - s for s, e in written)
                if total_written - saved_bytes >= every or now - saved_at >= CHECKPOINT_SECONDS:
                    os.fdatasync(fd)  # the data first, then the state that says it is there
                    self._save(written, size)
                    saved_at, saved_bytes = now, total_written
                if now - reported >= PROGRESS_INTERVAL:
                    reported = now
                    self._progress(total_written, size)
                    if self._space is not None:
                        self._space.update(self._name, size - total_written)
        finally:
            ring.close()
        self._progress(sum(e - s for s, e in plan.written()), size)
        return digest.hexdigest(), (check.finish() if check is not None else None)

    # -- the workers --------------------------------------------------------------------

    def _work(self, fd: int, plan: Plan) -> None:
        failures = 0  # this connection's, in a row: an outage seen by all counts once each
        while not self._halt.is_set():
            segment = plan.take(self._halt)
            if segment is None:
                return
            before = segment.cursor
            try:
                self._fetch(fd, plan, segment)
            except (_Retry, httpx.TransportError) as exc:
                failures = 1 if segment.cursor > before else failures + 1  # bytes came: anew
                plan.release(segment)
                self._retry_later(exc, failures)
                continue
            except BaseException as exc:  # noqa: BLE001 - the main thread raises it
                plan.release(segment)
                self._fail(exc)
                return
            failures = 0
            plan.release(segment)

    def _fetch(self, fd: int, plan: Plan, segment: Segment) -> None:
        """Stream the segment's range into place until it is written or cut short."""
        with self._lock:
            self._attempts += 1
        byte_range = f"bytes={segment.cursor}-{segment.end - 1}"
        headers = request_headers(self._source, byte_range, self._validator())
        with self._client.stream("GET", self._source.url, headers=headers) as response:
            self._accept(response, segment.cursor, plan.size)
            # Nothing past the range's end is the file's, whatever the body goes on with.
            declared = segment.cursor + (range_size(response.headers.get("content-range")) or 0)
            # A server may send less than asked (some cap each range): what it promised.
            promised = segment.cursor + (content_length(response) or plan.room(segment))
            # Through httpx, read to the end: the connection then serves the next piece
            # (no new handshake, no new slow start on a long link). Chunks come as they
            # arrive, so a dropped connection loses nothing that reached us.
            for data in response.iter_raw():
                chunk = memoryview(data)
                if self._halt.is_set():
                    return
                piece = chunk[: min(plan.room(segment), declared - segment.cursor)]
                view, at = piece, segment.cursor
                while view:
                    n = os.pwrite(fd, view, at)
                    view, at = view[n:], at + n
                plan.advance(segment, len(piece))
                with self._lock:
                    self._downloaded += len(piece)
                if len(piece) < len(chunk) and at >= declared:
                    raise _Retry("body longer than its Content-Range")
                if len(piece) < len(chunk) or (plan.room(segment) <= 0 and at < promised):
                    return  # the rest of this range is another worker's now (a split)
        if plan.room(segment) > 0 and segment.cursor < promised:
            raise _Retry(f"short body ({plan.room(segment)} bytes of a range missing)")

    def _accept(self, response: httpx.Response, start: int, size: int) -> None:
        status = response.status_code
        etag, modified = response.headers.get("etag"), response.headers.get("last-modified")
        same = (etag and etag == self._etag) or (modified and modified == self._last_modified)
        if status == 206:
            got, total = content_range(response.headers.get("content-range"))
            if got != start or total != size:
                raise _Changed()
            if (etag and self._etag and etag != self._etag) or (
                modified and self._last_modified and modified != self._last_modified
            ):
                raise _Changed()
            return
        if status == 200:
            # The whole file: changed (If-Range said so), or Range (or If-Range) not honoured.
            raise _NoRanges() if same else _Changed()
        if status == 416:
            raise _Changed()
        if is_retryable_status(status):
            raise _Retry(f"HTTP {status}", parse_retry_after(response.headers.get("retry-after")))
        raise TransferError(
            f"{self._name}: the pull host answered {status} {response.reason_phrase}"
            f" for {self._source.display}"
        )

    def _retry_later(self, exc: BaseException, failures: int) -> None:
        if isinstance(exc, httpx.TransportError) and (problem := certificate_error(exc)):
            self._fail(
                TransferError(
                    f"{self._name}: TLS certificate not trusted ({problem})"
                    f" at {self._source.display}; a private CA goes in --ca-cert"
                )
            )
            return
        why = exc.why if isinstance(exc, _Retry) else type(exc).__name__
        retry_after = exc.retry_after if isinstance(exc, _Retry) else None
        if self._policy.exhausted(failures):
            self._fail(
                TransferError(f"{self._name}: giving up after {self._attempts} attempts ({why})")
            )
            return
        self._pause(self._policy.delay(failures, retry_after), self._halt)

    def _pause(self, seconds: float, event: threading.Event | None) -> None:
        """Wait, unless `event` (a halt, an interrupt) cuts the wait short."""
        if event is not None and self._policy.sleep is time.sleep:
            event.wait(seconds)
        else:
            self._policy.sleep(seconds)  # an injected sleep (tests) is called as it is

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = exc
        self._halt.set()

    # -- the probe and the state --------------------------------------------------------

    def _probe(self) -> int:
        """Ask for the first byte: a 206 says ranges work, and how big the archive is."""
        headers = request_headers(self._source, "bytes=0-0")
        failures = 0
        while True:
            if self._stop is not None and self._stop.is_set():
                raise TransferError(f"{self._name}: interrupted")
            self._attempts += 1
            marks: dict[str, float] = {}
            trace = functools.partial(_mark, marks, self._clock)
            try:
                with self._client.stream(
                    "GET", self._source.url, headers=headers, extensions={"trace": trace}
                ) as response:
                    status = response.status_code
                    if status == 206:
                        _, total = content_range(response.headers.get("content-range"))
                        if total is None or total > MAX_ARCHIVE_BYTES:
                            raise _NoRanges()
                        if self._near_single and _answered_within(marks, self._near_seconds):
                            if content_length(response) == 1:  # never a long body into memory
                                response.read()  # its one byte: the connection serves on
                            raise _Near()
                        self._etag = response.headers.get("etag")
                        self._last_modified = response.headers.get("last-modified")
                        if not self._validator():
                            # Nothing tells one version of the file from the next: ranges
                            # fetched apart could be spliced from two. One connection.
                            raise _NoRanges()
                        return total
                    if status in (200, 416):
                        raise _NoRanges()  # the single download says what the status means
                    if not is_retryable_status(status):
                        raise _NoRanges()
                    why = f"HTTP {status}"
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
            except httpx.TransportError as exc:
                if certificate_error(exc):
                    raise _NoRanges() from None  # the single download reports it
                why, retry_after = type(exc).__name__, None
            failures += 1
            if self._policy.exhausted(failures):
                raise TransferError(f"{self._name}: giving up after {failures} attempts ({why})")
            self._pause(self._policy.delay(failures, retry_after), self._stop)

    def _validator(self) -> str | None:
        return if_range(self._etag, self._last_modified)

    def _resume_point(self, fd: int) -> tuple[int | None, list[Interval]]:
        """The size and written ranges a usable state file gives, or (None, [])."""
        self._dest.set_aside_foreign(self._state_name)  # another user's state is not ours
        try:
            doc = self._dest.read_json(self._state_name, limit=1024 * 1024)
        except (ValueError, OSError):
            return None, []
        on_disk = os.fstat(fd).st_size
        if isinstance(doc, dict) and doc.get("version") == 1:
            # A single-connection run's partial file: its bytes are the range from zero.
            state = PartState.from_json(doc)
            if state is None or state.source != self._source.display or not state.size:
                return None, []
            if state.job_id != self._source.job_id or not (state.etag or state.last_modified):
                return None, []
            if state.sha1 and self._expected_sha1 and state.sha1 != self._expected_sha1:
                return None, []  # the API publishes another archive now
            self._etag, self._last_modified = state.etag, state.last_modified
            return state.size, [(0, min(on_disk, state.size))]
        if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
            return None, []
        size, done = doc.get("size"), doc.get("done")
        if doc.get("jobId") != self._source.job_id or doc.get("source") != self._source.display:
            return None, []
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_ARCHIVE_BYTES:
            return None, []
        sha1 = doc.get("sha1")
        if isinstance(sha1, str) and self._expected_sha1 and sha1 != self._expected_sha1:
            return None, []  # the API publishes another archive now
        etag, modified = doc.get("etag"), doc.get("lastModified")
        if not (isinstance(etag, str) or isinstance(modified, str)) or on_disk != size:
            return None, []
        if not isinstance(done, list):
            return None, []
        ranges: list[Interval] = []
        for item in done:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)
                or not 0 <= item[0] < item[1] <= size
            ):
                return None, []
            ranges.append((item[0], item[1]))
        self._etag = etag if isinstance(etag, str) else None
        self._last_modified = modified if isinstance(modified, str) else None
        return size, merge(ranges)

    def _save(self, done: list[Interval], size: int) -> None:
        state = {
            "version": STATE_VERSION,
            "jobId": self._source.job_id,
            "source": self._source.display,
            "etag": self._etag,
            "lastModified": self._last_modified,
            "size": size,
            "sha1": self._expected_sha1,
            "done": [list(i) for i in done],
        }
        with contextlib.suppress(OSError):  # a state that is not saved costs a re-download
            self._dest.write_atomic(self._state_name, (json.dumps(state) + "\n").encode())
