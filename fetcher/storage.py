"""The destination directory: one lock, files opened without following links, atomic writes."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import mmap
import os
import shutil
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from fetcher.errors import DiskSpaceError, FetcherError, LockedError

LOCK_NAME = ".fetcher.lock"
HASH_BLOCK = 4 * 1024 * 1024  # mapped (or read) and hashed at a time
SPACE_MARGIN = 64 * 1024 * 1024  # leave the file system some room of its own


class Destination:
    """A directory opened once; every file operation is relative to its descriptor."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        try:
            if create:
                path.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileExistsError:
            raise FetcherError(f"{path} exists and is not a directory") from None
        except NotADirectoryError:
            raise FetcherError(f"{path} is not a directory") from None
        except FileNotFoundError:
            raise FetcherError(f"{path} does not exist") from None
        except PermissionError:
            raise FetcherError(f"permission denied: {path}") from None
        except OSError as exc:  # a read-only file system, a symlink loop, ...
            raise FetcherError(f"cannot use {path}: {exc.strerror or exc}") from None
        self._lock_fd: int | None = None

    def __enter__(self) -> Destination:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock (if held) and the directory."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def lock(self) -> None:
        """Take the destination's exclusive lock, or fail at once if another fetch holds it."""
        try:
            fd = self.open(LOCK_NAME, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise io_error(exc, self.path / LOCK_NAME) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(f"another fetch is writing to {self.path}; wait for it") from None
        self._lock_fd = fd

    def open(self, name: str, flags: int, mode: int = 0o644) -> int:
        """Open a file in the directory, never through a symbolic link."""
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)

    def open_private(self, name: str) -> int:
        """Open a file for reading and writing, creating it, with no other name sharing it.

        O_NOFOLLOW stops a planted symlink, not a planted hard link: writing (or truncating)
        through one would change a file outside the directory. A shared inode is unlinked
        and a new, empty file takes its place.
        """
        fd = self.open(name, os.O_RDWR | os.O_CREAT)
        st = os.fstat(fd)
        if _is_regular(st.st_mode) and st.st_nlink == 1:
            return fd
        os.close(fd)
        self.remove(name)
        return self.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL)

    def exists(self, name: str) -> bool:
        """Return True if a regular file of that name is in the directory."""
        return self.size(name) is not None

    def size(self, name: str) -> int | None:
        """Return the size of a regular file, or None when there is none."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return st.st_size if _is_regular(st.st_mode) else None

    def remove(self, name: str) -> None:
        """Delete a file if it is there."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def replace(self, src: str, dst: str) -> None:
        """Rename src over dst atomically and make the rename durable."""
        os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        os.fsync(self.fd)

    def write_atomic(self, name: str, data: bytes) -> None:
        """Write a small file whole or not at all: temp file, fsync, rename, fsync directory."""
        tmp = f".{name}.tmp.{os.getpid()}.{threading.get_ident()}"
        try:
            # The name is predictable: O_TRUNC on a hard link planted there would empty a
            # file elsewhere. Unlink whatever is there and insist on a new file.
            self.remove(tmp)
            fd = self.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            self.replace(tmp, name)
        except OSError as exc:
            self.remove(tmp)
            raise io_error(exc, self.path / name) from None

    def read_json(self, name: str, *, limit: int = 64 * 1024 * 1024) -> Any:
        """Return a JSON file's content, None when absent; ValueError when unreadable."""
        try:
            # O_NONBLOCK: opening a FIFO planted under this name must not wait for a writer.
            fd = self.open(name, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as fh:
            if not _is_regular(os.fstat(fd).st_mode):
                raise ValueError(f"{name} is not a regular file")
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise ValueError(f"{name} is larger than {limit} bytes")
        try:
            return json.loads(data)
        except RecursionError:  # "[[[[..." is not a JSONDecodeError, but it is unreadable
            raise ValueError(f"{name} is nested too deeply") from None

    def hash_file(
        self, name: str, *, limit: int | None = None, progress: Callable[[int], None] | None = None
    ) -> tuple[int, Any] | None:
        """Return (size, sha1 object) of the first `limit` bytes of a file, or None if absent."""
        try:
            # O_NONBLOCK: a FIFO planted under this name would otherwise block the open forever.
            fd = self.open(name, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP):
                return None
            raise
        try:
            if not _is_regular(os.fstat(fd).st_mode):
                return None
            return hash_fd(fd, limit=limit, progress=progress)
        finally:
            os.close(fd)

    def free_bytes(self) -> int:
        """Bytes available to us on the destination's file system."""
        return shutil.disk_usage(self.path).free


def hash_fd(
    fd: int, *, limit: int | None = None, progress: Callable[[int], None] | None = None
) -> tuple[int, Any]:
    """Hash a file from its start, mapping one block of it at a time.

    Hashing the page cache through a read-only map spares the copy that read() makes, which
    costs nearly as much as SHA1 itself; one block mapped at a time keeps memory flat. The
    size is checked before each block, so a file that shrinks ends the hash short (and fails
    its check) instead of faulting; only a cut within the few milliseconds one block takes
    would raise SIGBUS, and nothing in fetcher shrinks a file it hashes. A file that cannot
    be mapped is read instead.
    """
    digest = hashlib.sha1()
    size = 0
    if hasattr(os, "posix_fadvise"):  # a read-ahead hint; not on macOS
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    while limit is None or size < limit:
        want = HASH_BLOCK if limit is None else min(HASH_BLOCK, limit - size)
        want = min(want, os.fstat(fd).st_size - size)
        if want <= 0:
            break
        try:
            block = mmap.mmap(fd, want, prot=mmap.PROT_READ, offset=size)
        except (OSError, ValueError):
            return _hash_by_reading(fd, digest, size, limit, progress)
        with block, memoryview(block) as view:
            digest.update(view)
        size += want
        if progress is not None:
            progress(want)
    os.lseek(fd, size, os.SEEK_SET)
    return size, digest


def _hash_by_reading(
    fd: int, digest: Any, size: int, limit: int | None, progress: Callable[[int], None] | None
) -> tuple[int, Any]:
    """Go on hashing from `size` with big reads into one reused buffer."""
    view = memoryview(bytearray(HASH_BLOCK))
    os.lseek(fd, size, os.SEEK_SET)
    while limit is None or size < limit:
        want = HASH_BLOCK if limit is None else min(HASH_BLOCK, limit - size)
        n = os.readv(fd, [view[:want]])
        if n == 0:
            break
        digest.update(view[:n])
        size += n
        if progress is not None:
            progress(n)
    return size, digest


class SpaceGuard:
    """Refuses a transfer up front when the disk cannot hold it beside the others running."""

    def __init__(self, free: Callable[[], int]) -> None:
        self._free = free
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()

    def reserve(self, key: str, needed: int, *, where: str) -> None:
        """Count `needed` more bytes for `key`, or raise DiskSpaceError if they will not fit."""
        with self._lock:
            others = sum(v for k, v in self._pending.items() if k != key)
            free = self._free()
            if needed + others + SPACE_MARGIN > free:
                raise DiskSpaceError(
                    f"not enough space in {where}: {_mib(needed)} MiB needed"
                    + (f" (plus {_mib(others)} MiB for other archives)" if others else "")
                    + f", {_mib(free)} MiB free"
                )
            self._pending[key] = needed

    def update(self, key: str, remaining: int) -> None:
        """Record how much of a reservation is still to be written."""
        with self._lock:
            if key in self._pending:
                self._pending[key] = max(0, remaining)

    def release(self, key: str) -> None:
        """Forget a reservation."""
        with self._lock:
            self._pending.pop(key, None)


def _mib(n: int) -> int:
    return (n + 1024 * 1024 - 1) // (1024 * 1024)


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def io_error(exc: OSError, path: Path) -> FetcherError:
    """Turn a failed file operation on `path` into the error a user sees."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskSpaceError(f"no space left on device writing {path}")
    if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink: someone planted it
        return FetcherError(f"{path} is a symbolic link; fetcher writes through none")
    reason = exc.strerror or type(exc).__name__
    return FetcherError(f"cannot write {path}: {reason}")
