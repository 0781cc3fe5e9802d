"""fetcher.engine.transfer: Download from a local pull host that drops, stalls, lies, runs dry."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from fetcher.engine.transfer import PartResult
from fetcher.errors import DiskSpaceError, TransferError
from fetcher.names import partial_name, state_name
from fetcher.storage import Destination, SpaceGuard
from tests.pullserver import Fault, PullServer, Resource
from tests.support import ARCHIVE_NAME as NAME
from tests.support import ARCHIVE_PATH as PATH
from tests.support import Sleeps, download, enospc_after, make_archive, sha1

KiB = 1024
MiB = 1024 * KiB


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def archive() -> bytes:
    return make_archive("shard-0", payload=MiB)


def serve(pull: PullServer, data: bytes, *faults: Fault, **kwargs: Any) -> Resource:
    """Serve `data` at PATH (replacing what was there), misbehaving as `faults` say."""
    resource = pull.add(PATH, data, **kwargs)
    resource.faults = list(faults)
    return resource


def part(dest: Destination) -> Path:
    return dest.path / partial_name(NAME)


def ranges(pull: PullServer) -> list[str | None]:
    return [s.headers.get("range") for s in pull.requests_for(PATH)]


def if_ranges(pull: PullServer) -> list[str | None]:
    return [s.headers.get("if-range") for s in pull.requests_for(PATH)]


def statuses(pull: PullServer) -> list[int]:
    return [s.status for s in pull.requests_for(PATH)]


def sent(pull: PullServer) -> list[int]:
    return [s.sent for s in pull.requests_for(PATH)]


def assert_complete(result: PartResult, dest: Destination, data: bytes) -> None:
    assert result.sha1 == sha1(data)
    assert result.size == len(data)
    assert sha1(part(dest).read_bytes()) == sha1(data)
    assert not (dest.path / NAME).exists()  # only Fetcher gives the final name, after the SHA1


def leave_partial(
    client: httpx.Client, dest: Destination, pull: PullServer, data: bytes, keep: int
) -> None:
    """Leave `keep` bytes and their state behind, as a run that lost its connection would."""
    serve(pull, data, Fault(drop_after=keep))
    with pytest.raises(TransferError):
        download(client, dest, pull, Sleeps(), retries=0).run()
    assert part(dest).stat().st_size == keep
    pull.log.clear()


# -- 1. drops --------------------------------------------------------------------------------


def test_two_drops_resume_with_range_and_strong_if_range(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    resource = serve(pull, archive, Fault(drop_after=300 * KiB), Fault(drop_after=400 * KiB))

    result = download(client, dest, pull, sleeps, expected=sha1(archive)).run()

    assert_complete(result, dest, archive)
    assert ranges(pull) == [None, f"bytes={300 * KiB}-", f"bytes={700 * KiB}-"]
    assert resource.etag.startswith('"')
    assert if_ranges(pull) == [None, resource.etag, resource.etag]
    assert statuses(pull) == [200, 206, 206]
    assert sent(pull) == [300 * KiB, 400 * KiB, len(archive) - 700 * KiB]
    assert pull.bytes_sent(PATH) == len(archive)  # not one byte sent twice
    assert all(s.headers.get("accept-encoding") == "identity" for s in pull.requests_for(PATH))
    assert (result.attempts, result.resumed_bytes) == (3, 300 * KiB + 700 * KiB)
    assert len(sleeps.calls) == 2


def test_weak_etag_resumes_with_last_modified(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    resource = serve(pull, archive, Fault(drop_after=200 * KiB), etag='W/"weak"')

    result = download(client, dest, pull, sleeps).run()

    assert_complete(result, dest, archive)
    assert ranges(pull) == [None, f"bytes={200 * KiB}-"]
    # A weak ETag is not allowed in If-Range; Last-Modified is the fallback.
    assert if_ranges(pull) == [None, resource.last_modified]
    assert pull.bytes_sent(PATH) == len(archive)


# -- 2. and 3. replies that cannot be spliced --------------------------------------------------


def test_range_ignored_on_retry_truncates_and_restarts(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    serve(pull, archive, Fault(drop_after=300 * KiB), Fault(ignore_range=True))

    result = download(client, dest, pull, sleeps).run()

    assert_complete(result, dest, archive)
    assert ranges(pull) == [None, f"bytes={300 * KiB}-"]
    assert statuses(pull) == [200, 200]
    assert sent(pull) == [300 * KiB, len(archive)]
    assert (result.attempts, result.resumed_bytes) == (2, 0)


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault(range_start_shift=4096), id="start-too-late"),
        pytest.param(Fault(range_start_shift=-4096), id="start-too-early"),
        pytest.param(
            Fault(headers={"Content-Range": f"bytes {300 * KiB}-{2 * MiB - 1}/{2 * MiB}"}),
            id="wrong-total",
        ),
        # A server that ignores If-Range but not Range: its ETag shows the file changed.
        pytest.param(Fault(headers={"ETag": '"another-version"'}), id="other-etag"),
    ],
)
def test_206_at_the_wrong_place_is_not_spliced(
    pull: PullServer,
    client: httpx.Client,
    dest: Destination,
    sleeps: Sleeps,
    archive: bytes,
    fault: Fault,
) -> None:
    serve(pull, archive, Fault(drop_after=300 * KiB), fault)

    result = download(client, dest, pull, sleeps).run()

    assert_complete(result, dest, archive)
    assert ranges(pull) == [None, f"bytes={300 * KiB}-", None]
    assert statuses(pull) == [200, 206, 200]
    assert sent(pull)[2] == len(archive)
    assert result.resumed_bytes == 0


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
@pytest.mark.parametrize(
    ("data", "keep"),
    [pytest.param(b"0123456789", 5, id="ten-bytes"), pytest.param(None, 300 * KiB, id="archive")],
)
def test_a_206_longer_than_its_content_range_is_cut_at_the_range_end_and_retried(
    pull: PullServer,
    client: httpx.Client,
    dest: Destination,
    sleeps: Sleeps,
    archive: bytes,
    data: bytes | None,
    keep: int,
    chunked: bool,
) -> None:
    data = archive if data is None else data
    # Chunked, the body is read through httpx rather than straight from the socket.
    serve(pull, data, Fault(drop_after=keep), Fault(overlong=2_000_000, chunked=chunked))
    sizes: list[int] = []
    pull.on_request = lambda served: sizes.append(part(dest).stat().st_size)

    result = download(client, dest, pull, sleeps).run()

    assert_complete(result, dest, data)
    assert statuses(pull) == [200, 206]  # then the range is all there: the SHA1 decides
    assert sent(pull)[1] > len(data) - keep  # the server went on past the range
    assert max(sizes) <= len(data) and part(dest).stat().st_size == len(data)
    assert len(sleeps.calls) == 2  # the overlong answer counted as broken, as a short one is


# -- 4. 416 ----------------------------------------------------------------------------------


def test_full_partial_file_asks_nothing_and_is_hashed(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    serve(pull, archive)
    download(client, dest, pull, sleeps).run()
    assert len(pull.log) == 1

    result = download(client, dest, pull, sleeps, expected=sha1(archive)).run()

    assert_complete(result, dest, archive)
    assert len(pull.log) == 1  # not even a Range request that would answer 416
    assert (result.attempts, result.resumed_bytes) == (0, len(archive))


def test_corrupt_full_partial_file_is_caught_by_its_sha1(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    serve(pull, archive)
    download(client, dest, pull, sleeps).run()
    with part(dest).open("r+b") as fh:
        fh.seek(len(archive) // 2)
        fh.write(b"\0" * 16)  # same size, different bytes

    stale = download(client, dest, pull, sleeps, expected=sha1(archive)).run()
    assert stale.sha1 != sha1(archive)
    assert stale.resumed
    assert len(pull.log) == 1

    again = download(client, dest, pull, sleeps, expected=sha1(archive)).run(fresh=True)

    assert_complete(again, dest, archive)
    assert ranges(pull) == [None, None]
    assert sent(pull) == [len(archive), len(archive)]


def test_416_for_exactly_what_we_hold_is_verified_without_restart(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    resource = serve(pull, archive)
    download(client, dest, pull, sleeps).run()
    # A state that knows the validators but not the size (as after a chunked body).
    state_file = dest.path / state_name(NAME)
    state = json.loads(state_file.read_text())
    state["size"] = None
    state_file.write_text(json.dumps(state))
    pull.log.clear()

    result = download(client, dest, pull, sleeps, expected=sha1(archive)).run()

    assert_complete(result, dest, archive)
    assert ranges(pull) == [f"bytes={len(archive)}-"]
    assert if_ranges(pull) == [resource.etag]
    assert statuses(pull) == [416]
    assert sent(pull) == [0]
    assert (result.attempts, result.resumed_bytes) == (1, len(archive))


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Content-Range": "bytes */999999999"}, id="other-total"),
        pytest.param({}, id="no-content-range"),
    ],
)
def test_any_other_416_restarts_from_zero(
    pull: PullServer,
    client: httpx.Client,
    dest: Destination,
    sleeps: Sleeps,
    archive: bytes,
    headers: dict[str, str],
) -> None:
    serve(pull, archive, Fault(drop_after=300 * KiB), Fault(status=416, headers=headers))

    result = download(client, dest, pull, sleeps).run()

    assert_complete(result, dest, archive)
    assert ranges(pull) == [None, f"bytes={300 * KiB}-", None]
    assert statuses(pull) == [200, 416, 200]
    assert sent(pull)[2] == len(archive)


# -- 5. the file changed between attempts ------------------------------------------------------


def test_changed_etag_answers_200_and_the_new_file_replaces_the_old(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    old = serve(pull, archive, Fault(drop_after=300 * KiB))
    new = make_archive("shard-0", payload=MiB)

    def publish_new_version() -> None:
        serve(pull, new, last_modified="Thu, 22 Oct 2026 07:28:00 GMT")

    sleeps.during.append(publish_new_version)

    result = download(client, dest, pull, sleeps, expected=sha1(new)).run()

    assert_complete(result, dest, new)
    assert ranges(pull) == [None, f"bytes={300 * KiB}-"]
    assert if_ranges(pull) == [None, old.etag]
    assert statuses(pull) == [200, 200]
    assert sent(pull) == [300 * KiB, len(new)]
    assert result.resumed_bytes == 0


# -- 6. stalls -------------------------------------------------------------------------------


def test_stream_that_stalls_past_the_read_timeout_is_cut_and_resumed(
    pull: PullServer, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    release = threading.Event()
    serve(pull, archive, Fault(stall_after=256 * KiB, hold=release))
    try:
        with httpx.Client(timeout=0.5) as client:
            result = download(client, dest, pull, sleeps).run()
    finally:
        release.set()

    assert_complete(result, dest, archive)
    assert ranges(pull) == [None, f"bytes={256 * KiB}-"]
    assert sent(pull) == [256 * KiB, len(archive) - 256 * KiB]
    assert result.attempts == 2


# -- 7. and 8. statuses and the retry budget ---------------------------------------------------


def test_503_503_429_are_retried_and_retry_after_is_honoured(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    serve(
        pull,
        archive,
        Fault(status=503),
        Fault(status=503),
        Fault(status=429, headers={"Retry-After": "7"}),
    )

    result = download(client, dest, pull, sleeps).run()

    assert_complete(result, dest, archive)
    assert statuses(pull) == [503, 503, 429, 200]
    assert ranges(pull) == [None, None, None, None]
    assert len(sleeps.calls) == 3
    assert all(s < 7 for s in sleeps.calls[:2])
    assert sleeps.calls[2] >= 7
    assert result.attempts == 4


@pytest.mark.parametrize("status", [403, 404, 410])
def test_other_4xx_are_not_retried(
    pull: PullServer,
    client: httpx.Client,
    dest: Destination,
    sleeps: Sleeps,
    archive: bytes,
    status: int,
) -> None:
    serve(pull, archive, Fault(status=status))

    with pytest.raises(TransferError, match=f"answered {status}"):
        download(client, dest, pull, sleeps).run()

    assert statuses(pull) == [status]
    assert sleeps.calls == []


def test_consecutive_failures_without_bytes_exhaust_the_budget(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    leave_partial(client, dest, pull, archive, 300 * KiB)
    serve(pull, archive, Fault(status=503), Fault(status=500), Fault(status=503))

    with pytest.raises(TransferError, match="giving up after 3 attempts"):
        download(client, dest, pull, sleeps, retries=2).run()

    assert statuses(pull) == [503, 500, 503]
    assert ranges(pull) == [f"bytes={300 * KiB}-"] * 3
    assert len(sleeps.calls) == 2
    assert part(dest).read_bytes() == archive[: 300 * KiB]  # kept for a later run


def test_failures_separated_by_progress_are_not_limited_by_the_budget(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    serve(pull, archive, *[Fault(drop_after=100 * KiB) for _ in range(5)])

    result = download(client, dest, pull, sleeps, retries=1).run()

    assert_complete(result, dest, archive)
    assert ranges(pull) == [None] + [f"bytes={n * 100 * KiB}-" for n in range(1, 6)]
    assert pull.bytes_sent(PATH) == len(archive)
    assert result.attempts == 6


def test_bytes_after_a_restart_also_reset_the_budget(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    # The second attempt starts over (Range ignored) and gets fewer bytes than the first had:
    # bytes still arrived, so it must not count against the budget.
    serve(
        pull,
        archive,
        Fault(drop_after=600 * KiB),
        Fault(ignore_range=True, drop_after=200 * KiB),
    )

    result = download(client, dest, pull, sleeps, retries=1).run()

    assert_complete(result, dest, archive)
    assert ranges(pull) == [None, f"bytes={600 * KiB}-", f"bytes={200 * KiB}-"]
    assert statuses(pull) == [200, 200, 206]


# -- 9. the state file -------------------------------------------------------------------------


def test_partial_file_resumes_across_runs_after_hashing_what_is_on_disk(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    leave_partial(client, dest, pull, archive, 300 * KiB)
    resource = serve(pull, archive)

    result = download(client, dest, pull, sleeps, expected=sha1(archive)).run()

    assert_complete(result, dest, archive)
    assert ranges(pull) == [f"bytes={300 * KiB}-"]
    assert if_ranges(pull) == [resource.etag]
    assert pull.bytes_sent(PATH) == len(archive) - 300 * KiB
    assert (result.attempts, result.resumed_bytes) == (1, 300 * KiB)


def test_state_of_another_job_means_start_over(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    leave_partial(client, dest, pull, archive, 300 * KiB)
    serve(pull, archive)

    result = download(client, dest, pull, sleeps, job_id="job2").run()

    assert_complete(result, dest, archive)
    assert ranges(pull) == [None]
    assert sent(pull) == [len(archive)]
    assert result.resumed_bytes == 0


def test_partial_file_longer_than_its_state_says_means_start_over(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    leave_partial(client, dest, pull, archive, 300 * KiB)
    state_file = dest.path / state_name(NAME)
    state = json.loads(state_file.read_text())
    assert state["size"] == len(archive)
    state["size"] = 200 * KiB
    state_file.write_text(json.dumps(state))
    serve(pull, archive)

    result = download(client, dest, pull, sleeps).run()

    assert_complete(result, dest, archive)
    assert ranges(pull) == [None]


@pytest.mark.parametrize("field", ["etag", "lastModified"])
def test_a_state_whose_validator_no_header_can_carry_means_start_over(
    pull: PullServer,
    client: httpx.Client,
    dest: Destination,
    sleeps: Sleeps,
    archive: bytes,
    field: str,
) -> None:
    leave_partial(client, dest, pull, archive, 300 * KiB)
    state_file = dest.path / state_name(NAME)
    state = json.loads(state_file.read_text())
    state[field] = '"abc"\r\nX-Injected: 1'
    if field == "lastModified":
        state["etag"] = None  # If-Range falls back to Last-Modified
    state_file.write_text(json.dumps(state))
    serve(pull, archive)

    result = download(client, dest, pull, sleeps).run()

    assert_complete(result, dest, archive)
    assert ranges(pull) == [None]


def test_state_with_another_size_than_the_server_means_start_over(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    leave_partial(client, dest, pull, archive, 300 * KiB)
    state_file = dest.path / state_name(NAME)
    state = json.loads(state_file.read_text())
    state["size"] = len(archive) + 5000
    state_file.write_text(json.dumps(state))
    serve(pull, archive)

    result = download(client, dest, pull, sleeps).run()

    assert_complete(result, dest, archive)
    # The 206's total contradicts the state: nothing is spliced onto the old bytes.
    assert ranges(pull) == [f"bytes={300 * KiB}-", None]
    assert statuses(pull) == [206, 200]
    assert result.resumed_bytes == 0


def test_state_with_other_validators_means_start_over(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    leave_partial(client, dest, pull, archive, 300 * KiB)
    serve(pull, archive, etag='"a-new-etag"', last_modified="Thu, 22 Oct 2026 07:28:00 GMT")

    result = download(client, dest, pull, sleeps).run()

    assert_complete(result, dest, archive)
    assert ranges(pull) == [f"bytes={300 * KiB}-"]
    assert statuses(pull) == [200]  # If-Range did not match: the whole file, from zero
    assert result.resumed_bytes == 0


# -- 12. disk space ----------------------------------------------------------------------------


def test_enospc_keeps_the_partial_file_for_a_later_resume(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    serve(pull, archive)
    limit = 300 * KiB + 123

    with pytest.raises(DiskSpaceError, match="no space left on device") as raised:
        download(client, dest, pull, sleeps, write=enospc_after(limit)).run()

    assert "run fetch again to resume" in str(raised.value)
    assert part(dest).read_bytes() == archive[:limit]
    assert not (dest.path / NAME).exists()
    assert len(pull.log) == 1
    assert sleeps.calls == []  # a full disk is not a network hiccup
    pull.log.clear()

    result = download(client, dest, pull, sleeps, expected=sha1(archive)).run()

    assert_complete(result, dest, archive)
    assert ranges(pull) == [f"bytes={limit}-"]
    assert pull.bytes_sent(PATH) == len(archive) - limit


def test_too_little_free_space_is_refused_before_the_body(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    serve(pull, archive)
    seen: list[int] = []

    def progress(done: int, total: int | None) -> None:
        seen.append(done)

    guard = SpaceGuard(lambda: 10 * MiB)  # less than the archive plus the safety margin
    with pytest.raises(DiskSpaceError, match="not enough space") as raised:
        download(client, dest, pull, sleeps, space=guard, progress=progress).run()

    assert "MiB free" in str(raised.value)
    assert len(pull.log) == 1
    assert sleeps.calls == []
    assert seen == []  # not one body byte taken
    assert part(dest).stat().st_size == 0
    assert not (dest.path / NAME).exists()


def test_a_resume_of_known_size_is_refused_before_any_request(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    leave_partial(client, dest, pull, archive, 300 * KiB)
    asked = len(pull.log)
    guard = SpaceGuard(lambda: 10 * MiB)  # the rest of the archive plus the margin won't fit
    with pytest.raises(DiskSpaceError, match="not enough space"):
        download(client, dest, pull, sleeps, space=guard).run()
    assert len(pull.log) == asked  # no request, so no download spent on a refusal
    assert part(dest).read_bytes() == archive[: 300 * KiB]


# -- 14. encodings -----------------------------------------------------------------------------


def test_gzip_content_encoding_is_stored_raw(
    pull: PullServer, client: httpx.Client, dest: Destination, sleeps: Sleeps, archive: bytes
) -> None:
    serve(pull, archive, Fault(drop_after=100 * KiB), content_encoding="gzip")

    result = download(client, dest, pull, sleeps, expected=sha1(archive)).run()

    assert_complete(result, dest, archive)
    assert [s.headers.get("accept-encoding") for s in pull.requests_for(PATH)] == ["identity"] * 2
    assert ranges(pull) == [None, f"bytes={100 * KiB}-"]
    assert pull.bytes_sent(PATH) == len(archive)


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")
@pytest.mark.parametrize("planted", ["part", "state"])
def test_a_partial_file_or_state_of_another_user_is_not_resumed(
    pull: PullServer,
    client: httpx.Client,
    dest: Destination,
    sleeps: Sleeps,
    archive: bytes,
    planted: str,
) -> None:
    leave_partial(client, dest, pull, archive, keep=300 * KiB)
    state = dest.path / state_name(NAME)
    os.chown(part(dest) if planted == "part" else state, 65534, 65534)
    pull.log.clear()
    serve(pull, archive)

    result = download(client, dest, pull, sleeps).run()

    assert_complete(result, dest, archive)
    assert ranges(pull) == [None] and result.resumed_bytes == 0  # started afresh
    assert part(dest).stat().st_uid == os.getuid() and part(dest).stat().st_nlink == 1
    foreign = f"{(part(dest) if planted == 'part' else state).name}.foreign-*"
    (aside,) = dest.path.glob(foreign)
    assert aside.stat().st_uid == 65534  # kept for the operator, not deleted
