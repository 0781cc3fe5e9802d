"""The unpacker on its own: a staging tree written in the check's pass, published by rename.

What it writes is compared with GNU tar's extraction over the whole corpus of
test_tar_differential; here, what is particular to it: the staging directory, the strip of
the one top-level directory, a publish that never replaces data, an abort that leaves nothing,
paths deeper than the descriptors it keeps, and a member it does not write.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetcher.checks.archive import ArchiveCheck, ArchiveReport
from fetcher.checks.unpack import STAGING_PREFIX, Staged, Unpacker, remove_staging
from tests.support import make_archive


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "root"
    path.mkdir()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    yield path, fd
    os.close(fd)


def run(data: bytes, fd: int, *, block: int = 65536) -> tuple[Unpacker, ArchiveReport, Staged]:
    sink = Unpacker(fd, label="rs0 shard/../x")
    check = ArchiveCheck(sink=sink)
    for start in range(0, len(data), block):
        check.update(data[start : start + block])
    report = check.finish()
    return sink, report, sink.close()


def names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def tar_gz(*members: tuple[str, bytes | None]) -> bytes:
    """Members by name: bytes a file, None a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            entry = tarfile.TarInfo(name)
            entry.mtime = 1_700_000_000
            if data is None:
                entry.type, entry.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(entry)
            else:
                entry.size, entry.mode = len(data), 0o644
                tar.addfile(entry, io.BytesIO(data))
    return buf.getvalue()


def test_the_staging_directory_is_hidden_private_and_named_safely(root: tuple[Path, int]) -> None:
    path, fd = root
    sink, report, staged = run(make_archive("rs0"), fd)
    assert report.passed and staged.problem is None
    assert sink.staging.startswith(STAGING_PREFIX)
    assert "/" not in sink.staging and ".." not in sink.staging.removeprefix(".")
    assert stat.S_IMODE((path / sink.staging).stat().st_mode) == 0o700
    assert staged.files == 2  # restoreInfo.txt and data.bin
    assert staged.bytes == report.content_bytes


def test_publishing_strips_the_one_top_directory(root: tuple[Path, int]) -> None:
    path, fd = root
    data = make_archive("rs0")
    sink, report, _ = run(data, fd, block=1000)
    assert report.top_dir == "rs0"
    sink.publish(report.top_dir, "shard-0")
    assert names(path) == ["shard-0"]  # the staging directory is gone
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile("rs0/data.bin")
        assert member is not None
        assert (path / "shard-0" / "data.bin").read_bytes() == member.read()
    assert (path / "shard-0" / "restoreInfo.txt").read_text().startswith("Restore Information")
    assert stat.S_IMODE((path / "shard-0").stat().st_mode) == 0o700


def test_an_archive_without_one_top_directory_is_published_as_it_is(
    root: tuple[Path, int],
) -> None:
    path, fd = root
    sink, report, _ = run(tar_gz(("restoreInfo.txt", b"Replica Set: rs0\n"), ("a/b", b"b")), fd)
    assert report.top_dir is None
    sink.publish(None, "rs0")
    assert names(path) == ["rs0"]
    assert (path / "rs0" / "a" / "b").read_bytes() == b"b"
    assert (path / "rs0" / "restoreInfo.txt").is_file()


def test_a_link_climbing_to_the_root_keeps_the_top_directory(root: tuple[Path, int]) -> None:
    """rs0/l -> ../rs0/f lands on rs0/f only while rs0 is there: stripping it would send it
    outside the tree, so the tree is published as it is."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("rs0/", None), ("rs0/f", b"f")):
            entry = tarfile.TarInfo(name)
            if data is None:
                entry.type = tarfile.DIRTYPE
                tar.addfile(entry)
            else:
                entry.size = len(data)
                tar.addfile(entry, io.BytesIO(data))
        link = tarfile.TarInfo("rs0/l")
        link.type, link.linkname = tarfile.SYMTYPE, "../rs0/f"
        tar.addfile(link)
    sink, report, staged = run(buf.getvalue(), fd := root[1])
    assert staged.problem is None and report.top_dir is None
    sink.publish(report.top_dir, "rs0")
    assert (root[0] / "rs0" / "rs0" / "l").read_bytes() == b"f"
    del fd


def test_publish_never_replaces_a_directory_that_holds_anything(root: tuple[Path, int]) -> None:
    path, fd = root
    (path / "rs0").mkdir()
    (path / "rs0" / "mine").write_bytes(b"data of the operator")
    sink, report, _ = run(make_archive("rs0"), fd)
    with pytest.raises(OSError, match=r"not empty|exists"):
        sink.publish(report.top_dir, "rs0")
    assert names(path / "rs0") == ["mine"]
    assert (path / "rs0" / "mine").read_bytes() == b"data of the operator"
    sink.abort()
    assert names(path) == ["rs0"]


def test_abort_removes_everything_written(root: tuple[Path, int]) -> None:
    path, fd = root
    sink = Unpacker(fd, label="rs0")
    check = ArchiveCheck(sink=sink)
    data = make_archive("rs0", 4 << 20, level=1)
    check.update(data[: len(data) // 2])  # the writer is mid-file, the queue may be full
    assert names(path) == [sink.staging]
    sink.abort()
    assert names(path) == []


def test_a_damaged_archive_is_a_problem_of_the_check_not_of_the_tree(
    root: tuple[Path, int],
) -> None:
    path, fd = root
    data = bytearray(make_archive("rs0", level=1))
    data[len(data) // 2] ^= 0xFF
    sink, report, _ = run(bytes(data), fd)
    assert not report.passed  # the caller aborts on this; nothing is published
    sink.abort()
    assert names(path) == []


def test_paths_deeper_than_the_descriptors_kept(root: tuple[Path, int]) -> None:
    """Two hundred directories deep and a hundred side by side: every file lands where tar
    puts it, while at most 64 directory descriptors stay open."""
    deep = "rs0/" + "/".join(f"d{i}" for i in range(200))
    wide = [(f"rs0/w{i}/f", f"w{i}".encode()) for i in range(100)]
    members = [("rs0/", None), (f"{deep}/f", b"deep"), *wide, (f"{deep}/g", b"again")]
    before = len(names(Path("/proc/self/fd")))
    sink, report, staged = run(tar_gz(*members), root[1])
    assert staged.problem is None
    assert len(names(Path("/proc/self/fd"))) == before + 1  # the staging directory's only
    sink.publish(report.top_dir, "rs0")
    assert len(names(Path("/proc/self/fd"))) == before
    tree = root[0] / "rs0"
    assert (tree / deep.removeprefix("rs0/") / "f").read_bytes() == b"deep"
    assert (tree / deep.removeprefix("rs0/") / "g").read_bytes() == b"again"
    assert all((tree / f"w{i}" / "f").read_bytes() == f"w{i}".encode() for i in range(100))


def test_a_sparse_member_is_refused_and_nothing_kept(root: tuple[Path, int]) -> None:
    path, fd = root
    sink = Unpacker(fd, label="rs0")
    sink.refuse("'rs0/s' is a sparse file, which is not unpacked")
    staged = sink.close()
    assert staged.problem == "'rs0/s' is a sparse file, which is not unpacked"
    sink.abort()
    assert names(path) == []


def test_a_stale_staging_tree_is_removed_without_following_links(
    root: tuple[Path, int], tmp_path: Path
) -> None:
    path, fd = root
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    stale = path / f"{STAGING_PREFIX}rs0-0000"
    stale.mkdir()
    (stale / "link").symlink_to(outside)
    remove_staging(fd, stale.name)
    remove_staging(fd, stale.name)  # already gone: nothing to do
    assert names(path) == []
    assert (outside / "keep").read_bytes() == b"keep"
