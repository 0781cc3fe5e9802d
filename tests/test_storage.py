"""fetcher.storage: the destination's private files (issue 8, point 5), and hashing a file that
shrinks under it without dying of SIGBUS (issue 8, point 6)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from fetcher import storage
from fetcher.errors import FetcherError
from fetcher.names import partial_name, state_name
from fetcher.storage import HASH_BLOCK, HASH_BUFFERS, LOCK_NAME, Destination
from tests.support import file_mode, sha1, write_manifest

# -- point 5: everything fetcher creates is private -------------------------------------------


@pytest.mark.usefixtures("umask_022")
def test_every_file_a_destination_creates_is_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "a" / "b" / "out"
    temp_modes: dict[str, int] = {}
    real_replace = Destination.replace

    def replace(self: Destination, src: str, dst: str) -> None:
        temp_modes[src] = file_mode(self.path / src)  # before the rename: the temp file itself
        real_replace(self, src, dst)

    monkeypatch.setattr(Destination, "replace", replace)
    with Destination(out) as dest:
        dest.lock()
        fd = dest.open_private(partial_name("rs0.tar.gz"))
        try:
            os.write(fd, b"archive bytes")
        finally:
            os.close(fd)
        dest.write_atomic(state_name("rs0.tar.gz"), b"{}\n")
        write_manifest(dest, "rs0.tar.gz", b"archive bytes")
        os.close(dest.open("plain", os.O_WRONLY | os.O_CREAT))  # the default of open()
        dest.replace(partial_name("rs0.tar.gz"), "rs0.tar.gz")  # how an archive gets its name

        files = sorted(p.name for p in out.iterdir())
        assert files == sorted(
            [LOCK_NAME, state_name("rs0.tar.gz"), "manifest.json", "plain", "rs0.tar.gz"]
        )
        assert {name: file_mode(out / name) for name in files} == dict.fromkeys(files, 0o600)
    temp_names = [n for n in temp_modes if ".tmp." in n]
    assert len(temp_names) == 2  # the state file's temp and the manifest's
    assert set(temp_modes.values()) == {0o600}
    assert file_mode(out) == 0o700  # the directory fetcher created
    assert (
        file_mode(out.parent) == file_mode(tmp_path / "a") == 0o755
    )  # mkdir -p's parents: default


@pytest.mark.usefixtures("umask_022")
def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    with Destination(shared):
        pass
    with Destination(shared, create=False):
        pass
    assert file_mode(shared) == 0o755


@pytest.mark.usefixtures("umask_022")
@pytest.mark.parametrize("old_mode", [0o644, 0o664, 0o666, 0o640, 0o604])
def test_a_readable_partial_is_made_private_when_reopened(tmp_path: Path, old_mode: int) -> None:
    part = tmp_path / partial_name("rs0.tar.gz")
    part.write_bytes(b"kept from an older version")
    part.chmod(old_mode)
    inode = part.stat().st_ino
    with Destination(tmp_path) as dest:
        fd = dest.open_private(part.name)
        try:
            assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        finally:
            os.close(fd)
    assert file_mode(part) == 0o600
    assert part.stat().st_ino == inode  # the same file, tightened, its bytes kept for a resume
    assert part.read_bytes() == b"kept from an older version"


# -- point 6: a file that shrinks while it is hashed ------------------------------------------


def test_hash_ends_short_when_the_file_shrinks_between_reads(tmp_path: Path) -> None:
    data = os.urandom((HASH_BUFFERS + 4) * HASH_BLOCK + 100)
    path = tmp_path / "f"
    path.write_bytes(data)
    seen: list[int] = []
    # When the first block is hashed, the reading thread is at most HASH_BUFFERS blocks in.
    cut = HASH_BUFFERS * HASH_BLOCK + 10

    def shrink(n: int) -> None:
        seen.append(n)
        if len(seen) == 1:
            os.truncate(path, cut)  # the reads after this one find the new end

    fd = os.open(path, os.O_RDONLY)
    try:
        size, digest = storage.hash_fd(fd, progress=shrink)
        offset = os.lseek(fd, 0, os.SEEK_CUR)
    finally:
        os.close(fd)
    assert (size, digest.hexdigest()) == (cut, sha1(data[:cut]))
    assert seen == [HASH_BLOCK] * HASH_BUFFERS + [10]
    assert offset == size  # left at the end of what was hashed


def test_hash_fd_reuses_a_fixed_ring_of_buffers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom((2 * HASH_BUFFERS + 1) * HASH_BLOCK + 3)
    path = tmp_path / "f"
    path.write_bytes(data)
    buffers: set[int] = set()
    real_readv = os.readv

    def readv(fd: int, views: list[memoryview]) -> int:
        buffers.update(id(v.obj) for v in views)
        return real_readv(fd, views)

    monkeypatch.setattr(os, "readv", readv)
    limit = 2 * HASH_BUFFERS * HASH_BLOCK + 1
    fd = os.open(path, os.O_RDONLY)
    try:
        size, digest = storage.hash_fd(fd, limit=limit)
        assert os.lseek(fd, 0, os.SEEK_CUR) == size
    finally:
        os.close(fd)
    assert (size, digest.hexdigest()) == (limit, sha1(data[:limit]))
    assert len(buffers) == HASH_BUFFERS  # memory stays flat, whatever the size


# == hash_fd =======================================================================================


# -- hash_fd: what verify and resume hash files with ------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, HASH_BLOCK - 1, HASH_BLOCK, HASH_BLOCK + 1, 2 * HASH_BLOCK + 5]
)
@pytest.mark.parametrize("limit", [None, HASH_BLOCK + 3], ids=["whole", "limit"])
def test_hash_fd_hashes_the_first_bytes(tmp_path: Path, size: int, limit: int | None) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    seen: list[int] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        done, digest = storage.hash_fd(fd, limit=limit, progress=seen.append)
        offset = os.lseek(fd, 0, os.SEEK_CUR)
    finally:
        os.close(fd)

    expected = data[:limit]
    assert (done, digest.hexdigest()) == (len(expected), sha1(expected))
    assert sum(seen) == done
    assert offset == done  # the file offset is left after what was hashed


def test_hash_fd_stops_where_a_shrinking_file_ends(tmp_path: Path) -> None:
    data = os.urandom((HASH_BUFFERS + 2) * HASH_BLOCK)
    path = tmp_path / "f"
    path.write_bytes(data)
    cut = HASH_BUFFERS * HASH_BLOCK + HASH_BLOCK // 2  # beyond what is read ahead

    def shrink(n: int) -> None:
        os.truncate(path, cut)  # after the first block: the reads after it find the new end

    fd = os.open(path, os.O_RDONLY)
    try:
        done, digest = storage.hash_fd(fd, progress=shrink)
    finally:
        os.close(fd)

    assert (done, digest.hexdigest()) == (cut, sha1(data[:cut]))


# -- issue 19: files of another user, or with a second hard link, are never adopted ------------

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")


def _plant(tmp_path: Path, name: str, how: str) -> Path:
    planted = tmp_path / name
    planted.write_bytes(b"planted by someone else")
    if how == "owner":
        os.chown(planted, NOBODY, NOBODY)
    else:
        os.link(planted, tmp_path.parent / f"{tmp_path.name}-elsewhere")
    return planted


@needs_root
@pytest.mark.parametrize("how", ["owner", "hard-link"])
def test_a_partial_file_of_another_user_or_with_two_links_is_set_aside(
    tmp_path: Path, how: str
) -> None:
    name = partial_name("rs0.tar.gz")
    planted = _plant(tmp_path, name, how)
    inode = planted.stat().st_ino
    with Destination(tmp_path) as dest:
        fd = dest.open_private(name)
        try:
            st = os.fstat(fd)
            assert st.st_size == 0 and st.st_ino != inode  # a new file, not theirs
            assert (st.st_uid, st.st_nlink) == (os.getuid(), 1)
        finally:
            os.close(fd)
    (aside,) = tmp_path.glob(f"{name}.foreign-*")
    assert aside.stat().st_ino == inode and aside.read_bytes() == b"planted by someone else"


@needs_root
def test_a_state_file_of_another_user_is_set_aside_and_the_own_stays(tmp_path: Path) -> None:
    name = state_name("rs0.tar.gz")
    _plant(tmp_path, name, "owner")
    with Destination(tmp_path) as dest:
        aside = dest.set_aside_foreign(name)
        assert aside is not None and aside.startswith(f"{name}.foreign-")
        assert not dest.exists(name)
        dest.write_atomic(name, b"{}")
        assert dest.set_aside_foreign(name) is None  # fetcher's own file stays where it is
        assert dest.set_aside_foreign("absent") is None
    assert (tmp_path / name).stat().st_uid == os.getuid()


@needs_root
@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr")
def test_a_foreign_file_that_cannot_be_set_aside_stops_the_run_with_one_line(
    tmp_path: Path,
) -> None:
    name = partial_name("rs0.tar.gz")
    planted = _plant(tmp_path, name, "owner")
    if subprocess.run(["chattr", "+i", str(planted)], capture_output=True).returncode:
        pytest.skip("the file system has no immutable flag")
    try:
        with Destination(tmp_path) as dest, pytest.raises(FetcherError) as caught:
            dest.open_private(name)
    finally:
        subprocess.run(["chattr", "-i", str(planted)], check=True)
    message = str(caught.value)
    assert "\n" not in message and "uid 65534" in message and "cannot set it aside" in message
    assert planted.read_bytes() == b"planted by someone else"
