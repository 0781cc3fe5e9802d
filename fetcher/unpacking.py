"""Unpacking into ROOT (fetch --unpack-to, fetcher unpack): one tree per replica set.

Each archive is unpacked by a sink of its archive check (fetcher.checks.unpack), so in the
pass that hashes and checks it, into a hidden staging directory under ROOT. Only once its
SHA1 and the check passed, and every file and directory is fsynced, is the tree renamed to
ROOT/<replica set> (its one top-level directory stripped, as `tar --strip-components 1`),
ROOT fsynced, and ROOT/<replica set>.mongod.conf written beside it. Anything else removes
the staging tree: ROOT never holds a partial tree under a name mongod would be started on.

A non-empty ROOT/<replica set> is never written into, renamed over or removed; one this
archive unpacked earlier (the manifest's digest of its listing still matches) counts as
unpacked. ROOT is locked (flock on the directory itself) for the run; staging trees a
killed run left are removed when it is opened.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from fetcher import manifest as mf
from fetcher.checks.archive import ArchiveCheck, ArchiveReport
from fetcher.checks.unpack import STAGING_PREFIX, Unpacker, remove_staging
from fetcher.errors import (
    EXIT_ERROR,
    EXIT_INTEGRITY,
    EXIT_OK,
    FetcherError,
    LockedError,
    ManifestError,
    NotFoundError,
)
from fetcher.manifest import FileRecord, Manifest, Unpack
from fetcher.mongodconf import mongod_config
from fetcher.names import MANIFEST_NAME
from fetcher.storage import Destination
from fetcher.verify import examine

CONFIG_SUFFIX = ".mongod.conf"
# A replica set name as a directory name: MongoDB's are letters, digits, '-' and '_'.
_SAFE_SET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class UnpackRoot:
    """ROOT, made if need be, opened and locked for one run; close() (or `with`) lets it go."""

    def __init__(self, path: Path, *, note: Callable[[str], None]) -> None:
        self.path = Path(os.path.abspath(path))  # noqa: PTH100 - a dbPath as given, not resolved
        self._note = note
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.fd = os.open(self.path, _O_DIR)
        except OSError as exc:
            raise FetcherError(f"--unpack-to {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise LockedError(
                f"another fetcher is unpacking into {self.path}; wait for it"
            ) from None
        self._lock = threading.Lock()  # one publish at a time: look, rename, config
        self._remove_stale()

    def __enter__(self) -> UnpackRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Let ROOT go (its lock with it)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def archive(self, name: str, replica_set: str | None, earlier: FileRecord | None) -> Archive:
        """The unpack of one archive; `earlier` its record from an earlier run, if any."""
        return Archive(self, name, replica_set, earlier.unpack if earlier else None)

    # -- for an Archive ---------------------------------------------------------------------

    def look(self, replica_set: str, earlier: Unpack | None) -> Unpack | None:
        """Before any write: None when ROOT/<replica set> can take a tree (absent or empty),
        the earlier unpack when it is that tree still, else why it is not unpacked."""
        problem = _name_problem(replica_set)
        if problem is not None:
            return Unpack(problem=problem)
        try:
            return self._look(replica_set, earlier)
        except OSError as exc:
            return Unpack(problem=f"{self.path / replica_set}: {exc.strerror or exc}: not unpacked")

    def _look(self, replica_set: str, earlier: Unpack | None) -> Unpack | None:
        where = self.path / replica_set
        try:
            st = os.stat(replica_set, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode) and not self._holds_anything(replica_set):
            return None
        if earlier is not None and earlier.digest is not None and stat.S_ISDIR(st.st_mode):
            # The listing of a tree is the archive's (paths, sizes, mtimes, links), wherever
            # it was unpacked: the one on record is this archive's tree, here or elsewhere.
            digest, (files, size) = self._digest(replica_set)
            if digest == earlier.digest:
                return Unpack(str(where), None, files, size, digest, earlier=True)
            if earlier.to == str(where):
                return Unpack(problem=f"{where} changed since it was unpacked: not unpacked again")
        what = "holds data" if stat.S_ISDIR(st.st_mode) else "is not a directory"
        return Unpack(problem=f"{where} {what}: not unpacked into it")

    def publish(self, sink: Unpacker, report: ArchiveReport, replica_set: str) -> Unpack:
        """Rename a closed, complete staging tree to ROOT/<replica set>; write its config."""
        with self._lock:
            found = self.look(replica_set, None)
            if found is not None:
                sink.abort()
                return found
            where = self.path / replica_set
            try:
                sink.publish(report.top_dir, replica_set)
            except OSError as exc:
                sink.abort()
                return Unpack(problem=f"{where}: {exc.strerror or exc}: not unpacked")
            digest, (files, size) = self._digest(replica_set)
            config = self._config(replica_set, report.restore_info)
        return Unpack(str(where), config, files, size, digest)

    def config_of(self, replica_set: str, restore_info: dict[str, str] | None) -> str | None:
        """The config file of a tree unpacked earlier, written if it is not there."""
        with self._lock:
            return self._config(replica_set, restore_info)

    def _config(self, replica_set: str, restore_info: dict[str, str] | None) -> str | None:
        """Write ROOT/<replica set>.mongod.conf (whole, fsynced, never over another file)."""
        final = replica_set + CONFIG_SUFFIX
        path = str(self.path / final)
        text = mongod_config(
            restore_info, db_path=str(self.path / replica_set), replica_set=replica_set
        ).encode()
        existing = _read(self.fd, final)
        if existing is not None:
            if existing != text:
                self._note(f"{path} is there already and differs: kept as it is")
            return path
        temp = f"{STAGING_PREFIX}{replica_set}-{secrets.token_hex(4)}{CONFIG_SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temp, flags, 0o600, dir_fd=self.fd)
            try:
                os.write(fd, text)
                os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileExistsError):  # made meanwhile: theirs stays
                os.link(temp, final, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            os.unlink(temp, dir_fd=self.fd)
            os.fsync(self.fd)
        except OSError as exc:
            self._note(f"{path}: {exc.strerror or exc}: no mongod config written")
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=self.fd)
            return None
        return path

    def _holds_anything(self, name: str) -> bool:
        fd = os.open(name, _O_DIR | os.O_NOFOLLOW, dir_fd=self.fd)
        try:
            with os.scandir(fd) as entries:
                return any(True for _ in entries)
        finally:
            os.close(fd)

    def _digest(self, name: str) -> tuple[str, tuple[int, int]]:
        """A digest of the tree's listing: each path, its kind, a file's size and mtime, a
        link's target (the contents are the archive's, whose SHA1 is on record); with the
        count and bytes of its files."""
        rows: list[str] = []
        files = size = 0
        for top, dirs, names, dir_fd in os.fwalk(name, dir_fd=self.fd, follow_symlinks=False):
            for entry in sorted(dirs + names):
                st = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
                rel = os.path.join(top, entry)[len(name) + 1 :]  # noqa: PTH118
                if stat.S_ISREG(st.st_mode):
                    rows.append(f"f {rel!r} {st.st_size} {st.st_mtime_ns}")
                    files, size = files + 1, size + st.st_size
                elif stat.S_ISLNK(st.st_mode):
                    rows.append(f"l {rel!r} {os.readlink(entry, dir_fd=dir_fd)!r}")
                else:
                    rows.append(f"{stat.S_IFMT(st.st_mode):o} {rel!r}")
        listing = "\n".join(sorted(rows)).encode("utf-8", "surrogateescape")
        return hashlib.sha1(listing).hexdigest(), (files, size)

    def _remove_stale(self) -> None:
        """Remove what a killed run left: staging trees, config files half written."""
        for entry in os.listdir(self.fd):  # noqa: PTH208 - of a descriptor
            if entry.startswith(STAGING_PREFIX):
                try:
                    st = os.stat(entry, dir_fd=self.fd, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        remove_staging(self.fd, entry)
                    else:
                        os.unlink(entry, dir_fd=self.fd)
                except OSError as exc:
                    self._note(f"{self.path / entry}: {exc.strerror or exc}: left there")


class Archive:
    """One archive's unpack: a check factory for its download (each call a fresh staging
    tree), then complete() once its SHA1 and check passed, or abort()."""

    def __init__(
        self, root: UnpackRoot, name: str, replica_set: str | None, earlier: Unpack | None
    ) -> None:
        self._root, self._name, self._set, self._earlier = root, name, replica_set, earlier
        self._sink: Unpacker | None = None
        # Known before any byte when the API names the replica set: unpacked earlier, or not
        # to be unpacked here; the archive is then downloaded and checked all the same.
        self._found = root.look(replica_set, earlier) if replica_set else None

    def new_check(self) -> ArchiveCheck:
        """The archive check of a pass over the archive from its first byte."""
        self.abort()  # the download started over: so does the tree
        if self._found is not None:
            return ArchiveCheck()
        try:
            self._sink = Unpacker(self._root.fd, label=self._set or self._name)
        except OSError as exc:  # the archive is fetched and checked all the same
            where = self._root.path
            self._found = Unpack(problem=f"{where}: {exc.strerror or exc}: not unpacked")
            return ArchiveCheck()
        return ArchiveCheck(sink=self._sink)

    def complete(self, report: ArchiveReport) -> Unpack:
        """The archive is verified (`report` the check's): publish its tree. Not unpacked
        here, a tree an earlier run made elsewhere stays on record beside the problem."""
        done = self._complete(report)
        earlier = self._earlier
        if done.problem is not None and earlier is not None and earlier.to is not None:
            return replace(earlier, problem=done.problem, earlier=False)
        return done

    def _complete(self, report: ArchiveReport) -> Unpack:
        found, sink, self._sink = self._found, self._sink, None
        if found is not None:
            if sink is not None:
                sink.abort()
            if found.earlier and self._set is not None:  # its config written, if need be
                return replace(found, config=self._root.config_of(self._set, report.restore_info))
            return found
        if sink is None:
            return Unpack(problem="not unpacked: the archive was not read")
        staged = sink.close()
        replica_set = self._set or report.replica_set
        problem = staged.problem
        if problem is None and replica_set is None:
            problem = "no replica set name (the API names none, nor restoreInfo.txt)"
        if problem is not None:
            sink.abort()
            return Unpack(problem=f"not unpacked: {problem}")
        assert replica_set is not None
        found = self._root.look(replica_set, self._earlier)
        if found is not None:  # known only now (restoreInfo.txt named the replica set)
            sink.abort()
            if found.earlier:
                return replace(found, config=self._root.config_of(replica_set, report.restore_info))
            return found
        return self._root.publish(sink, report, replica_set)

    def abort(self) -> None:
        """Remove the staging tree, if any (the archive failed, or its pass starts over)."""
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.abort()


def _name_problem(replica_set: str) -> str | None:
    if _SAFE_SET.fullmatch(replica_set) and replica_set not in (".", ".."):
        return None
    return f"not unpacked: replica set name {replica_set!r} is not a safe directory name"


def _read(dir_fd: int, name: str) -> bytes | None:
    """A small file of ROOT, never through a link; None when there is none."""
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        return b""  # a link or something unreadable: "differs", and left alone
    try:
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


# -- fetcher unpack DIR --to ROOT: offline, from the archives a fetch verified ---------------

Status = Literal["unpacked", "not unpacked", "missing", "changed", "damaged"]


@dataclass(frozen=True)
class Unpacked:
    """What `fetcher unpack` made of one verified archive of DIR."""

    job_id: str
    record: FileRecord  # with its unpack, when it was read
    status: Status
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """This archive's entry in `fetcher unpack --json`."""
        doc: dict[str, Any] = {"jobId": self.job_id, "name": self.record.name}
        doc.update(replicaSet=self.record.replica_set, status=self.status, detail=self.detail)
        if self.status in ("unpacked", "not unpacked") and self.record.unpack is not None:
            doc.update(self.record.unpack.to_json())
        return doc


@dataclass(frozen=True)
class UnpackResult:
    """Every selected archive of DIR, and the process status."""

    manifest: Manifest  # with where each archive was unpacked
    archives: list[Unpacked]
    not_updated: bool  # DIR could not be written: its manifest says nothing of the trees

    @property
    def exit_code(self) -> int:
        """4 an archive missing, changed or damaged; 1 one not unpacked; else 0."""
        if any(a.status in ("missing", "changed", "damaged") for a in self.archives):
            return EXIT_INTEGRITY
        return EXIT_ERROR if any(a.status != "unpacked" for a in self.archives) else EXIT_OK


def unpack_dir(
    path: Path,
    root: Path,
    *,
    only: tuple[str, ...] = (),
    note: Callable[[str], None],
    done: Callable[[Unpacked], None] = lambda _: None,
) -> UnpackResult:
    """Hash, check and unpack each verified archive of DIR (those --only selects) into ROOT
    in one read each; record in DIR's manifest where (when DIR can be written)."""
    with Destination(path, create=False) as dest:
        writable = dest.writable()
        if writable:
            dest.lock()  # it writes the manifest: not beside a fetch that does too
        manifest = mf.load(dest)
        if manifest is None:
            raise ManifestError(f"no {MANIFEST_NAME} in {path}")
        chosen = [
            (job, f)
            for job in manifest.jobs
            for f in job.files
            if f.outcome == "verified" and f.on_disk and _selected(f, only)
        ]
        if not chosen:
            what = f" matches --only {' '.join(only)}" if only else " is in it"
            raise NotFoundError(f"no verified archive of {path / MANIFEST_NAME}{what}")
        archives: list[Unpacked] = []
        with UnpackRoot(root, note=note) as into:
            for job, record in chosen:
                archives.append(_unpack_one(dest, into, job.id, record))
                done(archives[-1])
        found = {(a.job_id, a.record.name): a.record for a in archives}
        manifest = replace(
            manifest,
            jobs=tuple(
                replace(job, files=tuple(found.get((job.id, f.name), f) for f in job.files))
                for job in manifest.jobs
            ),
        )
        if writable:
            manifest = mf.write(dest, manifest)
            mf.Journal(dest, manifest).close()
    return UnpackResult(manifest, archives, not_updated=not writable)


def _selected(record: FileRecord, only: tuple[str, ...]) -> bool:
    names = [n for n in (record.name, record.replica_set) if n]
    return not only or any(fnmatch.fnmatchcase(n, p) for n in names for p in only)


def _unpack_one(dest: Destination, into: UnpackRoot, job_id: str, record: FileRecord) -> Unpacked:
    assert record.name is not None
    unpack = into.archive(record.name, record.replica_set, record)
    try:
        seen = examine(dest, record.name, check_with=unpack.new_check)
        if seen is None:
            return Unpacked(job_id, record, "missing", f"not in {dest.path}")
        if seen.sha1 != record.sha1:
            detail = f"sha1 {seen.sha1}, expected {record.sha1}: changed since it was verified"
            return Unpacked(job_id, record, "changed", detail)
        report = seen.report
        assert report is not None
        if not report.passed:
            return Unpacked(job_id, record, "damaged", report.problem or "")
        done = replace(record.with_check(report), unpack=unpack.complete(report))
        assert done.unpack is not None
        if done.unpack.problem is not None:
            return Unpacked(job_id, done, "not unpacked", done.unpack.problem)
        return Unpacked(job_id, done, "unpacked")
    finally:
        unpack.abort()
