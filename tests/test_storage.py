"""The destination directory's files: private modes (issue 8, point 5), and hashing a file that
shrinks under it without dying of SIGBUS (issue 8, point 6)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetcher import manifest as mf
from fetcher import storage
from fetcher.errors import EXIT_ERROR, EXIT_INTEGRITY
from fetcher.names import partial_name, state_name
from fetcher.storage import HASH_BLOCK, HASH_BUFFERS, LOCK_NAME, Destination
from fetcher.verify import verify, verify_exit_code
from tests.conftest import Atlas, fetch_args, run_cli
from tests.support import sha1

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which an unspecified mode would leave files world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _write_manifest(dest: Destination, name: str, data: bytes) -> None:
    """A manifest recording one verified archive, written the way fetch writes it."""
    record = mf.FileRecord(name=name, size=len(data), sha1=sha1(data))
    job = mf.JobRecord(
        id="bca12412cddf8dd1f34daff6", outcome="verified", reason="downloaded", files=(record,)
    )
    mf.write(dest, mf.Manifest(group_id="g", cluster="c", batch_id="b", jobs=(job,)))


# -- point 5: everything fetcher creates is private -------------------------------------------


@pytest.mark.usefixtures("umask_022")
def test_every_file_a_destination_creates_is_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "a" / "b" / "out"
    temp_modes: dict[str, int] = {}
    real_replace = Destination.replace

    def replace(self: Destination, src: str, dst: str) -> None:
        temp_modes[src] = _mode(self.path / src)  # before the rename: the temp file itself
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
        _write_manifest(dest, "rs0.tar.gz", b"archive bytes")
        os.close(dest.open("plain", os.O_WRONLY | os.O_CREAT))  # the default of open()
        dest.replace(partial_name("rs0.tar.gz"), "rs0.tar.gz")  # how an archive gets its name

        files = sorted(p.name for p in out.iterdir())
        assert files == sorted(
            [LOCK_NAME, state_name("rs0.tar.gz"), "manifest.json", "plain", "rs0.tar.gz"]
        )
        assert {name: _mode(out / name) for name in files} == dict.fromkeys(files, 0o600)
    temp_names = [n for n in temp_modes if ".tmp." in n]
    assert len(temp_names) == 2  # the state file's temp and the manifest's
    assert set(temp_modes.values()) == {0o600}
    assert _mode(out) == 0o700  # the directory fetcher created
    assert _mode(out.parent) == _mode(tmp_path / "a") == 0o755  # mkdir -p's parents: default


@pytest.mark.usefixtures("umask_022")
def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    with Destination(shared):
        pass
    with Destination(shared, create=False):
        pass
    assert _mode(shared) == 0o755


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
    assert _mode(part) == 0o600
    assert part.stat().st_ino == inode  # the same file, tightened, its bytes kept for a resume
    assert part.read_bytes() == b"kept from an older version"


@pytest.mark.usefixtures("umask_022")
def test_fetch_creates_a_private_directory_and_private_files(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    atlas.add("rs0.tar.gz")
    dest = tmp_path / "out"
    result = run_cli(*fetch_args(atlas, dest))
    assert result.exit_code == 0, result.stderr
    assert _mode(dest) == 0o700
    for name in ("rs0.tar.gz", "manifest.json", LOCK_NAME):
        assert _mode(dest / name) == 0o600, name
    assert (dest / "rs0.tar.gz").read_bytes() == atlas.archives["rs0.tar.gz"]


# -- point 6: a file that shrinks while it is hashed ------------------------------------------

# verify, in its own process, with a SHA1 whose first update() truncates the archive to 3 bytes
# and only then hashes the buffer it was given. When that buffer is a map of the file (as it
# was), touching it raises SIGBUS and the process dies; read bytes are already in memory.
_SHRINK_DURING_UPDATE = textwrap.dedent(
    """
    import hashlib, os, sys
    import fetcher.storage
    from fetcher.cli import main

    archive, directory = sys.argv[1:]
    real_sha1 = hashlib.sha1

    class ShrinkingSha1:
        cut = False

        def __init__(self, *args):
            self._h = real_sha1(*args)

        def update(self, data):
            if not ShrinkingSha1.cut:
                ShrinkingSha1.cut = True
                os.truncate(archive, 3)
            self._h.update(data)

        def digest(self):
            return self._h.digest()

        def hexdigest(self):
            return self._h.hexdigest()

    fetcher.storage.hashlib.sha1 = ShrinkingSha1
    main(["verify", directory])
    """
)


@pytest.mark.slow  # a real process, which the old code killed with SIGBUS
def test_verify_survives_an_archive_truncated_while_it_is_hashed(tmp_path: Path) -> None:
    data = os.urandom(6 * MiB)  # several blocks, and more than one map of the old code
    archive = tmp_path / "rs0.tar.gz"
    archive.write_bytes(data)
    with Destination(tmp_path) as dest:
        _write_manifest(dest, archive.name, data)
    assert run_cli("verify", str(tmp_path)).exit_code == 0  # intact before the cut

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FETCHER_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-c", _SHRINK_DURING_UPDATE, str(archive), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == EXIT_INTEGRITY, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Fatal" not in proc.stderr, proc.stderr
    (line,) = [
        ln for ln in proc.stdout.splitlines() if ln.startswith(f"changed       {archive.name}")
    ]
    assert line.startswith("changed") and "manifest says 6291456" in line, proc.stdout
    assert archive.stat().st_size == 3  # the cut did happen, mid-hash


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


def test_verify_reports_a_file_that_shrinks_between_reads_as_changed(tmp_path: Path) -> None:
    data = os.urandom((HASH_BUFFERS + 2) * HASH_BLOCK)
    archive = tmp_path / "rs0.tar.gz"
    archive.write_bytes(data)
    cut = HASH_BUFFERS * HASH_BLOCK + 7  # beyond what is read ahead of the first block

    def shrink(name: str, n: int) -> None:
        if archive.stat().st_size > cut:
            os.truncate(archive, cut)

    with Destination(tmp_path) as dest:
        _write_manifest(dest, archive.name, data)
        manifest = mf.load(dest)
        assert manifest is not None
        (check,) = verify(dest, manifest, progress=shrink)
    assert check.status == "changed"
    assert check.detail == f"size {cut}, manifest says {len(data)}"
    assert verify_exit_code([check]) == EXIT_INTEGRITY


def test_a_read_error_is_one_unreadable_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(2 * HASH_BLOCK)
    (tmp_path / "rs0.tar.gz").write_bytes(data)
    with Destination(tmp_path) as dest:
        _write_manifest(dest, "rs0.tar.gz", data)
    real_readv = os.readv
    calls = 0

    def failing_readv(fd: int, buffers: list[memoryview]) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_readv(fd, buffers)

    monkeypatch.setattr(os, "readv", failing_readv)
    result = run_cli("verify", str(tmp_path))
    assert result.exit_code == EXIT_ERROR
    assert "Traceback" not in result.stdout + result.stderr
    assert f"unreadable    rs0.tar.gz: {os.strerror(errno.EIO)}" in result.stdout


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
