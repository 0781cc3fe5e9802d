"""fetcher.engine.segmented: several connections per archive, from a local pull host's ranges."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx
import pytest

from fetcher.checks.archive import ArchiveCheck
from fetcher.engine.segmented import MultiDownload
from fetcher.engine.transfer import Download, PartResult
from fetcher.errors import TransferError
from fetcher.names import partial_name, state_name
from fetcher.storage import Destination
from tests.pullserver import Fault, PullServer
from tests.support import ARCHIVE_NAME as NAME
from tests.support import ARCHIVE_PATH as PATH
from tests.support import Sleeps, download, make_archive, sha1

MiB = 1024 * 1024


@pytest.fixture
def archive() -> bytes:
    return make_archive("shard-0", payload=8 * MiB, level=1)


def one_connection(
    client: httpx.Client, dest: Destination, pull: PullServer, *, retries: int, sleeps: Sleeps
) -> Download:
    """The single-connection download of the test archive (what MultiDownload builds on)."""
    return download(client, dest, pull, sleeps, retries=retries, check=ArchiveCheck)


def fetch(
    client: httpx.Client,
    dest: Destination,
    pull: PullServer,
    *,
    connections: int = 4,
    sleeps: Sleeps | None = None,
    fresh: bool = False,
    **options: Any,
) -> PartResult:
    single = one_connection(client, dest, pull, retries=5, sleeps=sleeps or Sleeps())
    return MultiDownload(single, connections=connections, **options).run(fresh=fresh)


def starts(pull: PullServer) -> list[int | None]:
    """The first byte each request asked for (None: no Range)."""
    out: list[int | None] = []
    for served in pull.requests_for(PATH):
        asked = served.headers.get("range")
        out.append(int(asked.removeprefix("bytes=").split("-")[0]) if asked else None)
    return out


def test_ranges_finished_out_of_order_make_the_archive_in_order(
    client: httpx.Client, dest: Destination, pull: PullServer, archive: bytes
) -> None:
    resource = pull.add(PATH, archive)
    # The range from zero is held back: the later ranges are written first, and the SHA1
    # and the archive check wait for the prefix, reading back what the others wrote.
    resource.by_start[0] = [
        Fault(),  # the probe
        Fault(stall_after=64 * 1024, stall_seconds=0.5, continue_after_stall=True),
    ]
    result = fetch(client, dest, pull)
    assert result.sha1 == sha1(archive) and result.size == len(archive)
    assert result.archive is not None and result.archive.passed
    assert (dest.path / partial_name(NAME)).read_bytes() == archive
    asked = starts(pull)
    assert asked[0] == 0  # the probe: one byte, to learn the size and that ranges work
    assert len({a for a in asked[1:] if a}) >= 3  # other ranges ran beside the first
    # Few bytes were fetched twice: only what was in flight past the end of a range that
    # another connection took over (loopback buffers a lot of it).
    assert pull.bytes_sent(PATH) <= 1.25 * len(archive)
    state = json.loads((dest.path / state_name(NAME)).read_text())
    assert state["done"] == [[0, len(archive)]] and state["version"] == 2


def test_pieces_go_in_order_over_connections_kept_open(
    client: httpx.Client, dest: Destination, pull: PullServer
) -> None:
    big = make_archive("shard-0", payload=48 * MiB, level=1)
    pull.add(PATH, big)
    result = fetch(client, dest, pull, connections=2)
    assert result.sha1 == sha1(big)
    ranged = [s for s in pull.requests_for(PATH) if s.headers.get("range") != "bytes=0-0"]
    asked = [a for a in starts(pull)[1:] if a is not None]
    # Pieces of 8 MiB (the order they are handed out in is Plan's, tested above).
    assert len(asked) >= 6 and all(a % (8 * MiB) == 0 for a in asked[:4])
    # Each connection served several pieces: no new handshake (or slow start) per piece.
    assert len({s.client for s in ranged}) < len(ranged)


def test_a_connection_dropped_mid_range_resumes_that_range(
    client: httpx.Client, dest: Destination, pull: PullServer, archive: bytes
) -> None:
    resource = pull.add(PATH, archive)
    resource.by_start[0] = [Fault(), Fault(drop_after=300_000)]
    sleeps = Sleeps()
    result = fetch(client, dest, pull, sleeps=sleeps)
    assert result.sha1 == sha1(archive)
    dropped = next(
        s
        for s in pull.requests_for(PATH)
        if s.headers.get("range", "").startswith("bytes=0-") and s.sent == 300_000
    )
    assert dropped.sent == 300_000
    # The range went on from where the drop left it, after a pause.
    assert any(0 < a <= 300_000 for a in starts(pull) if a), starts(pull)
    assert sleeps.calls
    assert pull.bytes_sent(PATH) <= 1.25 * len(archive)


def test_a_server_that_ignores_range_gets_one_connection(
    client: httpx.Client, dest: Destination, pull: PullServer, archive: bytes
) -> None:
    resource = pull.add(PATH, archive)
    resource.faults = [Fault(ignore_range=True) for _ in range(4)]
    result = fetch(client, dest, pull)
    assert result.sha1 == sha1(archive)
    # The probe got the whole file (200) and was cut; then one plain GET from zero.
    assert starts(pull) == [0, None]
    assert [s.status for s in pull.requests_for(PATH)] == [200, 200]


def test_a_slow_connection_has_its_range_split(
    client: httpx.Client, dest: Destination, pull: PullServer
) -> None:
    big = make_archive("shard-0", payload=16 * MiB, level=1)
    resource = pull.add(PATH, big)
    resource.by_start[0] = [Fault(), Fault(rate=MiB)]  # 4 s for its quarter alone
    began = time.monotonic()
    result = fetch(client, dest, pull)
    assert result.sha1 == sha1(big)
    quarter = -(-len(big) // 4)
    # Someone took the second half of what the slow connection had left.
    split = [a for a in starts(pull) if a and 0 < a < quarter]
    assert split, starts(pull)
    assert time.monotonic() - began < 3  # the slow one's range did not hold the end


def test_a_changed_archive_restarts_from_zero(
    client: httpx.Client, dest: Destination, pull: PullServer, archive: bytes
) -> None:
    resource = pull.add(PATH, archive)
    resource.by_start[0] = [Fault(), Fault(drop_after=100_000)]
    sleeps = Sleeps()
    sleeps.during.append(lambda: None)
    # The first run stops with ranges on disk: every retry fails at once.
    resource.faults = [Fault(status=500) for _ in range(50)]
    with pytest.raises(Exception, match="giving up"):
        fetch(client, dest, pull, sleeps=sleeps)
    state = json.loads((dest.path / state_name(NAME)).read_text())
    assert state["done"]  # some ranges were kept
    newer = make_archive("shard-0", payload=8 * MiB, level=1)
    pull.add(PATH, newer)  # new bytes, new ETag: If-Range answers 200
    result = fetch(client, dest, pull)
    assert result.sha1 == sha1(newer)
    assert result.resumed_bytes == 0


def test_a_server_that_gives_no_total_gets_one_connection(
    client: httpx.Client, dest: Destination, pull: PullServer, archive: bytes
) -> None:
    resource = pull.add(PATH, archive)
    resource.faults = [Fault(headers={"Content-Range": "bytes 0-0/*"})]
    result = fetch(client, dest, pull)
    assert result.sha1 == sha1(archive)
    assert starts(pull) == [0, None]  # the probe, then one plain GET


def test_a_single_connection_partial_file_is_continued_by_several(
    client: httpx.Client, dest: Destination, pull: PullServer, archive: bytes
) -> None:
    resource = pull.add(PATH, archive)
    resource.faults = [Fault(drop_after=3 * MiB)]
    with pytest.raises(TransferError):
        one_connection(client, dest, pull, retries=0, sleeps=Sleeps()).run()
    kept = (dest.path / partial_name(NAME)).stat().st_size
    assert kept >= 2 * MiB
    result = fetch(client, dest, pull)
    assert result.sha1 == sha1(archive)
    assert result.resumed_bytes == kept
    assert min(a for a in starts(pull)[1:] if a is not None) >= kept  # nothing asked twice


def test_by_default_a_server_that_answers_at_once_gets_one_connection(
    client: httpx.Client, dest: Destination, pull: PullServer, archive: bytes
) -> None:
    pull.add(PATH, archive)
    # Near (the threshold set high, so that a loaded machine cannot make it far): the probe,
    # then the single-connection download, with no Range.
    result = fetch(client, dest, pull, near_single=True, near_seconds=10.0)
    assert result.sha1 == sha1(archive)
    assert starts(pull) == [0, None]
    # Over one connection: the probe's answer was read whole, so its connection was reused.
    assert len({served.client for served in pull.requests_for(PATH)}) == 1


def test_by_default_a_server_far_away_gets_several(
    client: httpx.Client, dest: Destination, pull: PullServer, archive: bytes
) -> None:
    resource = pull.add(PATH, archive)
    resource.faults = [Fault(delay=0.05)]  # the probe's answer takes a long round trip
    result = fetch(client, dest, pull, near_single=True)
    assert result.sha1 == sha1(archive)
    assert len([a for a in starts(pull)[1:] if a is not None]) >= 4


def test_an_outage_seen_by_every_connection_is_retried_per_connection(
    client: httpx.Client, dest: Destination, pull: PullServer, archive: bytes
) -> None:
    resource = pull.add(PATH, archive)
    # After the probe, two 503s for each of the four connections: eight failures in all,
    # more than the budget of five, but two in a row for any one connection.
    resource.faults = [Fault()] + [Fault(status=503) for _ in range(8)]
    sleeps = Sleeps()
    result = fetch(client, dest, pull, sleeps=sleeps)
    assert result.sha1 == sha1(archive)
    assert len(sleeps.calls) == 8


def test_a_server_that_ignores_if_range_gets_one_connection(
    client: httpx.Client, dest: Destination, pull: PullServer, archive: bytes
) -> None:
    resource = pull.add(PATH, archive)
    # Ranges work for the probe, then every ranged request is answered with the whole file
    # and the same ETag: nothing changed, the server just does not do it. Not "changed".
    resource.faults = [Fault()] + [Fault(ignore_range=True) for _ in range(8)]
    result = fetch(client, dest, pull)
    assert result.sha1 == sha1(archive)
    assert starts(pull)[-1] is None  # the single download, from zero


def test_a_server_with_no_validator_gets_one_connection(
    client: httpx.Client, dest: Destination, pull: PullServer, archive: bytes
) -> None:
    resource = pull.add(PATH, archive)
    resource.etag = resource.last_modified = ""  # sent empty: no validator
    result = fetch(client, dest, pull)
    assert result.sha1 == sha1(archive)
    assert starts(pull) == [0, None]  # ranges fetched apart could not be told to match


def test_one_connection_continues_the_whole_start_of_a_several_connection_run(
    client: httpx.Client, dest: Destination, pull: PullServer, archive: bytes
) -> None:
    resource = pull.add(PATH, archive)
    # Two pieces of half the archive: the first is fetched whole, the second is refused (a
    # 403 ends the run), so the run gives up with the start of the file on disk.
    half = -(-len(archive) // 2)  # Plan's pieces: never fewer than the connections
    resource.by_start[half] = [Fault(status=403, delay=0.5)]
    with pytest.raises(TransferError, match="403"):
        fetch(client, dest, pull, connections=2)
    state = json.loads((dest.path / state_name(NAME)).read_text())
    whole = state["done"][0][1] if state["done"][0][0] == 0 else 0
    assert whole == half
    # Start again with one connection: it keeps the whole start, drops the rest, and asks
    # for what follows (with If-Range).
    pull.log.clear()
    result = one_connection(client, dest, pull, retries=2, sleeps=Sleeps()).run()
    assert result.sha1 == sha1(archive)
    assert result.resumed_bytes == whole
    (served,) = pull.requests_for(PATH)
    assert served.headers.get("range") == f"bytes={whole}-"
    assert served.headers.get("if-range")


def test_a_range_answer_longer_than_its_content_range_writes_nothing_past_it(
    client: httpx.Client, dest: Destination, pull: PullServer, archive: bytes
) -> None:
    resource = pull.add(PATH, archive)
    resource.by_start[0] = [Fault(), Fault(overlong=2_000_000)]  # the probe, then the range
    sleeps = Sleeps()
    result = fetch(client, dest, pull, sleeps=sleeps)
    assert result.sha1 == sha1(archive) and result.size == len(archive)
    part = dest.path / partial_name(NAME)
    assert part.stat().st_size == len(archive) and b"\xee" * 64 not in part.read_bytes()
    first = [s for s in pull.requests_for(PATH) if s.headers.get("range", "")[:8] == "bytes=0-"]
    asked = first[1].headers["range"].removeprefix("bytes=0-")
    assert first[1].sent > int(asked) + 1  # the server went on past the range
    assert sleeps.calls  # counted as broken, as a short body is


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")
@pytest.mark.parametrize("planted", ["part", "state"])
def test_a_partial_file_or_state_of_another_user_is_not_continued(
    client: httpx.Client, dest: Destination, pull: PullServer, archive: bytes, planted: str
) -> None:
    resource = pull.add(PATH, archive)
    resource.faults = [Fault(drop_after=3 * MiB)]
    with pytest.raises(TransferError):
        one_connection(client, dest, pull, retries=0, sleeps=Sleeps()).run()
    name = partial_name(NAME) if planted == "part" else state_name(NAME)
    os.chown(dest.path / name, 65534, 65534)
    pull.log.clear()
    result = fetch(client, dest, pull)
    assert result.sha1 == sha1(archive) and result.resumed_bytes == 0
    assert (dest.path / partial_name(NAME)).stat().st_uid == os.getuid()
    (aside,) = dest.path.glob(f"{name}.foreign-*")
    assert aside.stat().st_uid == 65534


def test_a_probe_answer_longer_than_its_one_byte_is_not_read_into_memory(
    client: httpx.Client, dest: Destination, pull: PullServer, archive: bytes
) -> None:
    resource = pull.add(PATH, archive)
    resource.by_start[0] = [Fault(overlong=64 * MiB)]  # the probe: 1 byte said, 64 MiB sent
    result = fetch(client, dest, pull, near_single=True, near_seconds=10.0)
    assert result.sha1 == sha1(archive)
    assert starts(pull) == [0, None]
    # The probe's connection was dropped, not read to its end (into memory, by httpx).
    assert pull.requests_for(PATH)[0].sent < 32 * MiB
