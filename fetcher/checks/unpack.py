"""An archive's members written into a staging tree while it streams: a sink of the walk.

The walk (fetcher.checks.walk) tells each member the archive check accepted; this writes it
under a staging directory that one rename publishes, as a `.part` file is published. On a
thread of its own, so that inflating (the check's thread) and writing overlap:

- every file is created with O_EXCL and O_NOFOLLOW relative to its directory's descriptor,
  every directory opened component by component with O_NOFOLLOW, never through a path, and
  symbolic links are made last, once nothing more is created: no link in the tree can
  redirect a write;
- directories are 0700 and files 0600 whatever the archive says (owners are not restored),
  modification times are the archive's (directories' set last, deepest first);
- every file is fsynced (on a second thread, while the next ones are written), then every
  directory, before close() returns: a tree published after it survives a power cut.

Only what the archive check accepted reaches it, so nothing lands outside the tree, and links
land inside it (fetcher.checks.tree).
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STAGING_PREFIX = ".fetcher-unpack-"
_QUEUE = 32  # items of at most 256 KiB (an inflate chunk): a few MiB in flight at most
_DIR_FDS = 64  # open directory descriptors kept, most recently used
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_O_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_STOP = object()


@dataclass(frozen=True)
class Staged:
    """What close() found: the tree written, or why it could not be."""

    problem: str | None  # None: every member is written and fsynced
    files: int  # regular files and hard links
    bytes: int  # the bytes of the regular files


class Unpacker:
    """A MemberSink writing into a new staging directory under the directory `root_fd`."""

    def __init__(self, root_fd: int, *, label: str = "") -> None:
        """Make the staging directory (0700); `label` goes into its name, for whoever looks."""
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)[:40]
        self.staging = f"{STAGING_PREFIX}{safe}-{secrets.token_hex(4)}"
        self._root_fd = root_fd
        os.mkdir(self.staging, 0o700, dir_fd=root_fd)
        self._fd = os.open(self.staging, _O_DIR, dir_fd=root_fd)
        self._problem: str | None = None  # set by either side; the writer then only drains
        self._files = self._bytes = 0
        self._queue: queue.Queue[Any] = queue.Queue(_QUEUE)
        self._writer = _Writer(self._fd, self._fail)
        self._thread = threading.Thread(target=self._run, name="fetcher-unpack", daemon=True)
        self._thread.start()
        self._closed = False

    # -- the walk's side (MemberSink) ------------------------------------------------------

    def directory(self, parts: list[str], mtime: int) -> None:
        """A directory member."""
        if parts:  # "./" is the staging directory itself
            self._put((self._writer.directory, parts, mtime))

    def file(self, parts: list[str], mtime: int) -> None:
        """A regular file begins."""
        self._files += 1
        self._put((self._writer.file, parts, mtime))

    def data(self, chunk: memoryview) -> None:
        """The next bytes of the file begun."""
        self._bytes += len(chunk)
        self._put((self._writer.data, chunk))

    def end_file(self) -> None:
        """The file begun is complete."""
        self._put((self._writer.end_file,))

    def hardlink(self, parts: list[str], target: list[str]) -> None:
        """A hard link to a file already written."""
        self._files += 1
        self._put((self._writer.hardlink, parts, target))

    def symlink(self, parts: list[str], text: str, mtime: int) -> None:
        """A symbolic link: made at the end."""
        self._put((self._writer.symlink, parts, text, mtime))

    def refuse(self, reason: str) -> None:
        """A member not extracted here: the tree would not be tar's, so there is none."""
        self._fail(reason)

    def _put(self, item: tuple[Any, ...]) -> None:
        if self._problem is None:
            self._queue.put(item)

    def _fail(self, reason: str) -> None:
        if self._problem is None:
            self._problem = reason

    # -- the writer's side -----------------------------------------------------------------

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            if self._problem is not None:
                continue  # drain, so that the walk never blocks on a full queue
            try:
                self._writer.trim()
                item[0](*item[1:])
            except Exception as exc:  # noqa: BLE001 - the walk must hear of it, never hang
                self._fail(_problem(exc))
        if self._problem is None:
            try:
                self._writer.finish()
            except Exception as exc:  # noqa: BLE001
                self._fail(_problem(exc))
        self._writer.release()

    # -- the caller's side -----------------------------------------------------------------

    def close(self) -> Staged:
        """Wait until every member is written and fsynced (or the writing failed)."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()
        return Staged(self._problem, self._files, self._bytes)

    def publish(self, top: str | None, name: str) -> None:
        """Rename the tree (its directory `top` when it is stripped) to `name` in the root,
        then fsync the root. Fails (EEXIST, ENOTEMPTY, ENOTDIR) rather than replace a
        directory that holds anything, or anything but a directory."""
        assert self._closed
        assert self._problem is None
        if top is not None:
            os.rename(top, name, src_dir_fd=self._fd, dst_dir_fd=self._root_fd)
            os.fsync(self._fd)
            self._remove()
        else:
            os.rename(self.staging, name, src_dir_fd=self._root_fd, dst_dir_fd=self._root_fd)
            os.close(self._fd)
        os.fsync(self._root_fd)

    def abort(self) -> None:
        """Stop writing and remove the staging tree (whatever it holds)."""
        self._fail("aborted")
        if not self._closed:
            self._closed = True
            with contextlib.suppress(queue.Empty):
                while True:  # unblock the writer, then tell it to stop
                    self._queue.get_nowait()
            self._queue.put(_STOP)
            self._thread.join()
        self._remove()

    def _remove(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
        remove_staging(self._root_fd, self.staging)


def remove_staging(root_fd: int, name: str) -> None:
    """Remove a staging tree under the root, links not followed."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(name, dir_fd=root_fd)


class _Writer:
    """The file system work, all on the unpacker's thread (descriptors are its alone)."""

    def __init__(self, fd: int, fail: Callable[[str], None]) -> None:
        self._top = fd
        self._dirs: OrderedDict[tuple[str, ...], int] = OrderedDict()  # kept open, by path
        self._made: dict[tuple[str, ...], int | None] = {(): None}  # directory -> its mtime
        self._file: int | None = None
        self._file_mtime = 0
        self._links: list[tuple[list[str], str, int]] = []
        self._syncer = _Syncer(fail)

    def directory(self, parts: list[str], mtime: int) -> None:
        self._dir_fd(tuple(parts))
        self._made[tuple(parts)] = mtime

    def file(self, parts: list[str], mtime: int) -> None:
        parent = self._dir_fd(tuple(parts[:-1]))
        fd = os.open(parts[-1], _O_FILE, 0o600, dir_fd=parent)
        self._file, self._file_mtime = fd, mtime
        os.fchmod(fd, 0o600)  # whatever the umask

    def data(self, chunk: memoryview) -> None:
        assert self._file is not None
        while chunk:
            chunk = chunk[os.write(self._file, chunk) :]

    def end_file(self) -> None:
        fd, self._file = self._file, None
        assert fd is not None
        os.utime(fd, ns=(self._file_mtime, self._file_mtime))
        self._syncer.put(fd)  # fsynced and closed there, while the next file is written

    def hardlink(self, parts: list[str], target: list[str]) -> None:
        source = self._dir_fd(tuple(target[:-1]))
        parent = self._dir_fd(tuple(parts[:-1]))
        os.link(target[-1], parts[-1], src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)

    def symlink(self, parts: list[str], text: str, mtime: int) -> None:
        self._dir_fd(tuple(parts[:-1]))  # its directory exists from now, as in tar
        self._links.append((parts, text, mtime))

    def finish(self) -> None:
        """Make the symbolic links, set directories' times deepest first, fsync everything."""
        for parts, text, mtime in self._links:
            parent = self._dir_fd(tuple(parts[:-1]))
            os.symlink(text, parts[-1], dir_fd=parent)
            os.utime(parts[-1], ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)
        self._syncer.close()
        for where, when in sorted(self._made.items(), key=lambda kv: -len(kv[0])):
            self.trim()
            fd = self._dir_fd(where)
            if when is not None:
                os.utime(fd, ns=(when, when))
            os.fsync(fd)

    def release(self) -> None:
        """Close every descriptor (the writing is over, or failed)."""
        if self._file is not None:
            os.close(self._file)
            self._file = None
        self._syncer.close()
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def _dir_fd(self, parts: tuple[str, ...]) -> int:
        """The descriptor of directory `parts`, made (0700) where it is not there yet.

        Opened from the nearest one kept, a component at a time; only the last is kept (a
        path may be two thousand directories deep). Kept ones are closed only by trim(),
        between members, so that none a member uses closes under it.
        """
        if not parts:
            return self._top  # the unpacker's, not closed here
        fd = self._dirs.get(parts)
        if fd is not None:
            self._dirs.move_to_end(parts)
            return fd
        start = len(parts) - 1 if parts[:-1] in self._dirs else 0  # most often its parent
        fd = self._dirs[parts[:start]] if start else self._top
        for depth in range(start + 1, len(parts) + 1):
            here = parts[:depth]
            made = here not in self._made
            if made:
                os.mkdir(here[-1], 0o700, dir_fd=fd)
                self._made[here] = None
            try:
                child = os.open(here[-1], _O_DIR, dir_fd=fd)
            finally:
                if depth > start + 1:
                    os.close(fd)  # an intermediate one, opened here
            fd = child
            if made:
                os.fchmod(fd, 0o700)  # whatever the umask
        self._dirs[parts] = fd
        return fd

    def trim(self) -> None:
        """Close the least recently used directory descriptors past the ones kept."""
        while len(self._dirs) > _DIR_FDS:
            os.close(self._dirs.popitem(last=False)[1])


class _Syncer:
    """fsync and close finished files on a thread of their own."""

    def __init__(self, fail: Callable[[str], None]) -> None:
        self._fail = fail
        self._queue: queue.Queue[int | None] = queue.Queue(_QUEUE)
        self._thread: threading.Thread | None = None

    def put(self, fd: int) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fetcher-fsync", daemon=True)
            self._thread.start()
        self._queue.put(fd)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while (fd := self._queue.get()) is not None:
            try:
                os.fsync(fd)
            except OSError as exc:
                self._fail(_problem(exc))
            finally:
                os.close(fd)


def _problem(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"writing the tree failed: {exc.strerror or exc}"
    return f"writing the tree failed: {type(exc).__name__}"
