"""fetcher.fetch.ondisk: an archive in DIR re-checked, found changed, or a kept .part finished."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from fetcher.fetch import ondisk
from fetcher.names import partial_name
from fetcher.storage import Destination
from tests.support import make_archive, sha1

NAME = "Cluster0-shard-0.tar.gz"


def test_an_archive_still_as_verified_is_verified_again(tmp_path: Path) -> None:
    data = make_archive("Cluster0-shard-0")
    (tmp_path / NAME).write_bytes(data)
    read: list[int] = []
    with Destination(tmp_path) as dest:
        found, seen = ondisk.recheck(dest, NAME, sha1(data), progress=read.append)
    assert found == "verified" and seen is not None
    assert (seen.outcome, seen.size, seen.sha1) == ("verified", len(data), sha1(data))
    assert seen.report is not None and seen.report.replica_set == "Cluster0-shard-0"
    assert sum(read) == len(data)


def test_changed_or_absent_is_said_and_recorded_as_changed(tmp_path: Path) -> None:
    data = make_archive("Cluster0-shard-0")
    (tmp_path / NAME).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with Destination(tmp_path) as dest:
        assert ondisk.recheck(dest, NAME, sha1(data), progress=lambda n: None) == (
            "changed",
            None,
        )
        assert ondisk.recheck(dest, "other.tar.gz", sha1(data), progress=lambda n: None) == (
            "absent",
            None,
        )
    record = ondisk.changed(NAME, sha1(data), len(data), "delivery EXPIRED")
    assert (record.outcome, record.failure, record.sha1) == ("failed", "integrity", sha1(data))
    assert "cannot be downloaded again (delivery EXPIRED)" in record.reason


def test_an_archive_an_older_fetcher_verified_that_does_not_open_is_damaged(
    tmp_path: Path,
) -> None:
    data = gzip.compress(b"not a tar archive at all" * 100)
    (tmp_path / NAME).write_bytes(data)
    with Destination(tmp_path) as dest:
        found, seen = ondisk.recheck(dest, NAME, sha1(data), progress=lambda n: None)
    assert found == "verified" and seen is not None  # the SHA1 vouches for the bytes...
    assert (seen.outcome, seen.failure) == ("failed", "integrity")  # ...which do not open
    assert "the published archive itself is damaged" in seen.reason


def test_a_kept_part_is_published_when_its_late_sha1_matches(tmp_path: Path) -> None:
    data = make_archive("Cluster0-shard-0")
    (tmp_path / partial_name(NAME)).write_bytes(data)
    with Destination(tmp_path) as dest:
        assert ondisk.finish_kept_part(dest, NAME, "0" * 40) is None  # stale: left for a resume
        assert (tmp_path / partial_name(NAME)).exists()
        seen = ondisk.finish_kept_part(dest, NAME, sha1(data))
    assert seen is not None and seen.outcome == "verified"
    assert (tmp_path / NAME).read_bytes() == data and not (tmp_path / partial_name(NAME)).exists()


def test_a_kept_part_that_matches_its_sha1_and_does_not_open_stays_a_part(
    tmp_path: Path,
) -> None:
    data = gzip.compress(b"not a tar archive at all" * 100)
    (tmp_path / partial_name(NAME)).write_bytes(data)
    with Destination(tmp_path) as dest:
        seen = ondisk.finish_kept_part(dest, NAME, sha1(data))
    assert seen is not None and (seen.outcome, seen.failure) == ("failed", "integrity")
    assert seen.sha1 is None  # nothing under the final name to check later
    assert not (tmp_path / NAME).exists() and (tmp_path / partial_name(NAME)).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")
def test_a_kept_part_of_another_user_is_set_aside_not_published(tmp_path: Path) -> None:
    data = make_archive("Cluster0-shard-0")
    part = tmp_path / partial_name(NAME)
    part.write_bytes(data)
    os.chown(part, 65534, 65534)
    with Destination(tmp_path) as dest:
        assert ondisk.finish_kept_part(dest, NAME, sha1(data)) is None
    assert not (tmp_path / NAME).exists() and not part.exists()
    (aside,) = tmp_path.glob(f"{part.name}.foreign-*")
    assert aside.read_bytes() == data
