"""fetcher.verify: DIR checked offline against its manifest."""

from __future__ import annotations

import os
from pathlib import Path

from fetcher import manifest as mf
from fetcher.errors import EXIT_INTEGRITY
from fetcher.manifest import FileRecord, JobRecord, Manifest
from fetcher.storage import HASH_BLOCK, HASH_BUFFERS, Destination
from fetcher.verify import verify, verify_dirs, verify_exit_code
from tests.support import ARCHIVE_BYTES, manifest_of, verified_record, write_manifest

# == offline verification ==========================================================================


def test_verify_intact_changed_missing_and_unverified(tmp_path: Path) -> None:
    (tmp_path / "a.tar.gz").write_bytes(ARCHIVE_BYTES)
    (tmp_path / "b.tar.gz").write_bytes(ARCHIVE_BYTES[:-1] + b"X")  # same size, other bytes
    (tmp_path / "d.tar.gz").write_bytes(ARCHIVE_BYTES + b"more")
    manifest = manifest_of(
        verified_record("ja", "a.tar.gz"),
        verified_record("jb", "b.tar.gz"),
        verified_record("jc", "c.tar.gz"),
        verified_record("jd", "d.tar.gz"),
    )
    with Destination(tmp_path, create=False) as dest:
        checks = verify(dest, manifest)
    assert [(c.name, c.status) for c in checks] == [
        ("a.tar.gz", "ok"),
        ("b.tar.gz", "changed"),
        ("c.tar.gz", "missing"),
        ("d.tar.gz", "changed"),
    ]
    assert verify_exit_code(checks) == 4
    assert verify_exit_code(checks[:1]) == 0
    with Destination(tmp_path, create=False) as dest:
        partial = verify(
            dest,
            manifest_of(verified_record("ja", "a.tar.gz"), JobRecord("x", "skipped", "EXPIRED")),
        )
    assert verify_exit_code(partial) == 3


def test_verify_does_not_follow_a_planted_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(ARCHIVE_BYTES)
    inner = tmp_path / "dir"
    inner.mkdir()
    (inner / "a.tar.gz").symlink_to(outside)
    with Destination(inner, create=False) as dest:
        checks = verify(dest, manifest_of(verified_record("ja", "a.tar.gz")))
    assert checks[0].status == "missing"


# == private files, and files that shrink while hashed =============================================


# -- point 6: a file that shrinks while it is hashed ------------------------------------------


def test_verify_reports_a_file_that_shrinks_between_reads_as_changed(tmp_path: Path) -> None:
    data = os.urandom((HASH_BUFFERS + 2) * HASH_BLOCK)
    archive = tmp_path / "rs0.tar.gz"
    archive.write_bytes(data)
    cut = HASH_BUFFERS * HASH_BLOCK + 7  # beyond what is read ahead of the first block

    def shrink(name: str, n: int) -> None:
        if archive.stat().st_size > cut:
            os.truncate(archive, cut)

    with Destination(tmp_path) as dest:
        write_manifest(dest, archive.name, data)
        manifest = mf.load(dest)
        assert manifest is not None
        (check,) = verify(dest, manifest, progress=shrink)
    assert check.status == "changed"
    assert check.detail == f"size {cut}, manifest says {len(data)}"
    assert verify_exit_code([check]) == EXIT_INTEGRITY


def test_an_archive_verified_in_one_dir_is_the_batch_s_whatever_another_says(
    tmp_path: Path,
) -> None:
    here, there = tmp_path / "a", tmp_path / "b"
    for directory in (here, there):
        directory.mkdir()
    (here / "a.tar.gz").write_bytes(ARCHIVE_BYTES)
    with Destination(here) as dest:
        mf.write(dest, manifest_of(verified_record("ja", "a.tar.gz")))
    gone = FileRecord("a.tar.gz", "skipped", "delivery EXPIRED")
    with Destination(there) as dest:
        other = Manifest("g", "c", "b", (JobRecord.of("ja", (gone,), info={}),))
        mf.write(dest, other)
    both = verify_dirs([here, there])
    assert [(c.name, c.status) for c in both.checks] == [("a.tar.gz", "ok")]
    assert both.exit_code == 0
    alone = verify_dirs([there])
    assert [c.status for c in alone.checks] == ["not verified"] and alone.exit_code == 3
