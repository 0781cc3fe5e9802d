"""The manifest on disk: written atomically, a journal between writes, recovered after a kill."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fetcher.errors import FetcherError, ManifestError
from fetcher.manifest import codec
from fetcher.manifest.codec import ERRORS, parse, parse_job_v1, parse_job_v2
from fetcher.manifest.document import Manifest, merge
from fetcher.manifest.records import JobRecord
from fetcher.names import MANIFEST_NAME
from fetcher.storage import Destination, io_error

JOURNAL_NAME = ".manifest.journal"
JOURNAL_VERSION = 2  # its lines are jobs[] entries of the manifest of the same version


def write(dest: Destination, manifest: Manifest) -> Manifest:
    """Write the manifest atomically, stamped with the current time; return what was written."""
    stamped = replace(manifest, updated=_now())
    data = json.dumps(stamped.to_json(), indent=2, sort_keys=False) + "\n"
    dest.write_atomic(MANIFEST_NAME, data.encode())
    return stamped


class Journal:
    """Archives recorded since manifest.json was last written, one fsynced line each.

    Rewriting the whole manifest after every verified archive costs more per archive the
    larger the batch; a line appended to `.manifest.journal` costs the same for the first
    archive and the thousandth, and is as durable. `load` folds the journal into the
    manifest, so a run that is killed records every archive it verified; `close` ends the
    journal once manifest.json holds all of it.
    """

    def __init__(self, dest: Destination, target: Manifest) -> None:
        self._dest, self._target = dest, target
        self._fd: int | None = None
        self._lock = threading.Lock()

    def append(self, record: JobRecord) -> None:
        """Record a job (one archive of it) durably before anyone is told of it; thread-safe."""
        lines = [_journal_line(record.to_json())]
        try:
            with self._lock:
                if self._fd is None:
                    head = {"journalVersion": JOURNAL_VERSION, "groupId": self._target.group_id}
                    head.update(cluster=self._target.cluster, batchId=self._target.batch_id)
                    lines.insert(0, _journal_line(head))
                    # A new file every run: a line torn by a crash in the old one stays last.
                    self._dest.remove(JOURNAL_NAME)
                    self._fd = self._dest.open(JOURNAL_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                    self._dest.sync()  # the file's name must survive a crash, as its lines do
                fd = self._fd
                view = memoryview("".join(lines).encode())
                while view:
                    view = view[os.write(fd, view) :]
            # Outside the lock: threads that append meanwhile share one flush to the disk.
            os.fdatasync(fd)
        except OSError as exc:
            raise io_error(exc, self._dest.path / JOURNAL_NAME) from None

    def close(self) -> None:
        """Remove the journal: call once manifest.json holds every line of it."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._dest.remove(JOURNAL_NAME)


def _journal_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":")) + "\n"


def load(dest: Destination) -> Manifest | None:
    """Read DIR/manifest.json and any journal beside it; None when there is neither.

    ManifestError when the manifest is unusable, or the journal is another batch's.
    """
    # The journal first: a fetch that ends meanwhile writes manifest.json and then removes
    # the journal, so what this reads is at worst both, never neither.
    journal = _load_journal(dest)
    where = dest.path / MANIFEST_NAME
    try:
        doc = dest.read_json(MANIFEST_NAME)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{where} is not valid JSON ({_short(exc)})") from None
    except OSError as exc:
        raise ManifestError(f"cannot read {where}: {exc.strerror or exc}") from None
    try:
        manifest = None if doc is None else parse(doc)
    except ERRORS as exc:
        raise ManifestError(f"{where} is not a fetcher manifest ({_short(exc)})") from None
    if journal is None:
        return manifest
    if manifest is not None and manifest.target != journal.target:
        raise ManifestError(
            f"{dest.path / JOURNAL_NAME} belongs to another batch than {where}; move one away"
        )
    return merge(manifest, journal) if manifest is not None else journal


def _load_journal(dest: Destination) -> Manifest | None:
    """The archives a run recorded after it last wrote manifest.json (a run that was killed).

    A line that does not read (torn by a crash, cut short by a full disk) is one whose
    archive was never reported verified: it is left out, and the lines after it still count.
    """
    try:
        data = dest.read_bytes(JOURNAL_NAME)
    except (ValueError, OSError) as exc:
        raise ManifestError(f"cannot read {dest.path / JOURNAL_NAME}: {_short(exc)}") from None
    lines = (data or b"").split(b"\n")
    head = _json_line(lines[0])
    if not isinstance(head, dict) or head.get("journalVersion") not in (1, JOURNAL_VERSION):
        return None  # absent, or torn before its first line was whole: nothing was recorded
    # A journal that an older fetcher left (version 1) holds that version's entries.
    parse_job = parse_job_v1 if head["journalVersion"] == 1 else parse_job_v2
    try:
        journal = codec.head(head)
    except (KeyError, TypeError) as exc:
        raise ManifestError(
            f"{dest.path / JOURNAL_NAME} is not a fetcher journal ({exc})"
        ) from None
    jobs = []
    for line in lines[1:]:
        entry = _json_line(line)
        try:
            jobs.append(parse_job(entry))
        except ERRORS:
            continue
    return merge(None, replace(journal, jobs=tuple(jobs)))


def recover(dest: Destination, target: Manifest, *, note: Callable[[str], None]) -> Manifest | None:
    """The manifest a fetch into `dest` starts from, its journal folded in, or None.

    An unreadable manifest (or journal) is kept aside for the operator and rebuilt from what
    is on disk; one of another batch stops the fetch before anything is written.
    """
    for name in (MANIFEST_NAME, JOURNAL_NAME):
        # Another user's manifest or journal records nothing of ours: its SHA1s would vouch
        # for archives planted beside it.
        dest.set_aside_foreign(name)
    recovering = dest.exists(JOURNAL_NAME)  # a run was killed before its end
    try:
        old = load(dest)
    except ManifestError as exc:
        kept = []
        for name in (MANIFEST_NAME, JOURNAL_NAME):
            if dest.exists(name):
                aside = f".{name.lstrip('.')}.unreadable-{int(time.time())}"
                dest.replace(name, aside)
                kept.append(aside)
        note(f"{exc}; kept it as {' and '.join(kept)} and rebuilding it")
        return None
    if old is not None and old.target != target.target:
        what = f"batch {old.batch_id}" if old.batch_id else "single jobs"
        raise FetcherError(
            f"{dest.path} holds the manifest of {what} of cluster {old.cluster}"
            f" in group {old.group_id}; give another --dest"
        )
    if recovering and old is not None:
        write(dest, old)  # fold the journal in before this run starts its own
        Journal(dest, old).close()
    return old


def _json_line(line: bytes) -> Any:
    try:
        return json.loads(line) if line.strip() else None
    except (ValueError, RecursionError):
        return None


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
