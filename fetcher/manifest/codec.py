"""Reading manifest documents, of this version and of version 1, checking every field."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypedDict

from fetcher.errors import UnsafeNameError
from fetcher.manifest.document import MANIFEST_VERSION, Manifest, merge
from fetcher.manifest.records import OUTCOMES, Failure, FileRecord, JobRecord, Outcome, Unpack
from fetcher.names import check_name

# What a reader of a document may meet; everything else in a job entry is the job's info.
_JOB_KEYS = {"id", "outcome", "reason", "failure", "files", "attempts", "resumedBytes"}
_JOB_KEYS |= {"archiveNames"}
ERRORS = (KeyError, TypeError, ValueError, UnsafeNameError)


def parse(doc: Any) -> Manifest:
    """Build a Manifest from its JSON document (version 2, or 1 brought up to 2)."""
    if not isinstance(doc, dict) or doc.get("manifestVersion") not in (1, MANIFEST_VERSION):
        raise ValueError(f"manifestVersion is neither 1 nor {MANIFEST_VERSION}")
    parse_job = parse_job_v1 if doc["manifestVersion"] == 1 else parse_job_v2
    manifest = head(doc)
    manifest = replace(
        manifest,
        updated=_text(doc.get("updated", "")),
        selection=tuple(_text(p) for p in _strings(doc.get("selection", []))),
    )
    entries = _list(doc["jobs"])
    if doc["manifestVersion"] == 1:
        entries = _without_superseded(entries)
    jobs = [parse_job(entry) for entry in entries]
    # Version 1 listed a job of several archives as one entry per archive, and its batch
    # by those entries' ids ("JOB-ID:REPLICA-SET"): one job each here.
    batch_ids = {_text(i).partition(":")[0] for i in _strings(doc.get("batchJobIds", []))}
    return merge(None, replace(manifest, jobs=tuple(jobs), batch_job_ids=tuple(sorted(batch_ids))))


def head(doc: dict[str, Any]) -> Manifest:
    """What a document (a manifest, or a journal's first line) is of, with no jobs yet."""
    batch = doc.get("batchId")
    return Manifest(
        group_id=_text(doc["groupId"]),
        cluster=_text(doc["cluster"]),
        batch_id=_text(batch) if batch is not None else None,
    )


def _without_superseded(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Version 1's entries less the one that stood for a job of several archives while it was
    unfinished, once entries for its archives were written (what version 1 dropped too)."""
    split = {e["jobId"] for e in entries if isinstance(e.get("jobId"), str)}
    return [e for e in entries if "jobId" in e or e.get("id") not in split]


def parse_job_v2(entry: dict[str, Any]) -> JobRecord:
    """One jobs[] entry of a version-2 manifest."""
    files = tuple(_file(f, _outcome(f)) for f in _list(entry["files"]))
    info = {k: v for k, v in entry.items() if k not in _JOB_KEYS}
    listed = {check_name(_text(n)) for n in _strings(entry.get("archiveNames", []))}
    return JobRecord.of(_text(entry["id"]), files, info=info, listed=listed, **_outcome(entry))


def parse_job_v1(entry: dict[str, Any]) -> JobRecord:
    """One jobs[] entry of a version-1 manifest: the outcome was the entry's, not its files'.

    An entry for one of a job's several archives had the id "JOB-ID:REPLICA-SET" and named
    its job in `jobId` and its replica set in `replicaSetName`; an entry with no files named
    its archive in `fileName`.
    """
    outcome = _outcome(entry)
    counts = _Counts(
        attempts=_size(entry.get("attempts", 0)),
        resumed_bytes=_size(entry.get("resumedBytes", 0)),
    )
    info = {k: v for k, v in entry.items() if k not in _JOB_KEYS}
    job_id = _text(info.pop("jobId", entry["id"]))
    api_set = info.pop("replicaSetName", None)
    file_name = info.pop("fileName", None)
    files = [_file(f, outcome, counts) for f in _list(entry["files"])]
    if not files and file_name is not None:
        files = [FileRecord(check_name(_text(file_name)), **outcome, **counts)]
    if not files and api_set is not None and job_id != entry["id"]:
        # One of a job's several archives, recorded before its name was known.
        files = [FileRecord(None, **outcome, **counts)]
    if api_set is not None:
        files = [_with_set(f, _text(api_set)) for f in files]
    return JobRecord.of(job_id, files, info=info, **outcome)


def _with_set(record: FileRecord, replica_set: str) -> FileRecord:
    return replace(record, replica_set=record.replica_set or replica_set)


class _Said(TypedDict):
    """What an entry says it came to: a job's, a file's, or (version 1) the job's for its file."""

    outcome: Outcome
    reason: str
    failure: Failure | None


class _Counts(TypedDict):
    """A transfer's counts, as version 1 kept them on the job."""

    attempts: int
    resumed_bytes: int


def _outcome(entry: dict[str, Any]) -> _Said:
    outcome = entry["outcome"]
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    failure = entry.get("failure")
    found: Outcome = outcome
    fail: Failure | None = failure if failure in ("integrity", "error") else None
    return {"outcome": found, "reason": _text(entry.get("reason", "")), "failure": fail}


def _file(obj: dict[str, Any], said: _Said, counts: _Counts | None = None) -> FileRecord:
    """One files[] entry; `counts` those version 1 kept on the job, else the file's own.
    The archive-check fields are absent from older manifests."""
    size, sha1 = obj.get("size"), obj.get("sha1")
    if (size is None) != (sha1 is None):
        raise ValueError("a file has a size without a sha1, or a sha1 without a size")
    if counts is None:  # version 2: counted per archive
        counts = _Counts(
            attempts=_size(obj.get("attempts", 0)),
            resumed_bytes=_size(obj.get("resumedBytes", 0)),
        )
    check = obj.get("archiveCheck")
    if check not in (None, "passed", "failed"):
        raise ValueError(f"unknown archiveCheck {check!r}")
    info = obj.get("restoreInfo")
    if info is not None and not (
        isinstance(info, dict) and all(isinstance(v, str) for v in info.values())
    ):
        raise TypeError("restoreInfo is not an object of strings")
    replica_set, problem = obj.get("replicaSet"), obj.get("archiveProblem")
    content = obj.get("contentBytes")
    name = obj["name"]
    if name is None and (not isinstance(replica_set, str) or size is not None):
        raise ValueError("a file with no name has bytes on record, or no replica set")
    return FileRecord(
        name=check_name(_text(name)) if name is not None else None,
        size=_size(size) if size is not None else None,
        sha1=_sha1(sha1) if sha1 is not None else None,
        archive_check=check,
        problem=_text(problem) if problem is not None else None,
        replica_set=_text(replica_set) if replica_set is not None else None,
        restore_info=info if check == "passed" else None,
        content_bytes=(_size(content) if content is not None else 0) if check == "passed" else None,
        unpack=_unpack(obj),
        **said,
        **counts,
    )


def _unpack(obj: dict[str, Any]) -> Unpack | None:
    """The unpack fields of a files[] entry (absent from older manifests)."""
    problem, to = obj.get("unpackProblem"), obj.get("unpackedTo")
    if problem is None and to is None:
        return None
    config, digest = obj.get("mongodConfig"), obj.get("unpackedDigest")
    return Unpack(
        to=_text(to) if to is not None else None,
        config=_text(config) if config is not None else None,
        files=_size(obj.get("unpackedFiles", 0)),
        bytes=_size(obj.get("unpackedBytes", 0)),
        digest=_text(digest) if digest is not None else None,
        problem=_text(problem) if problem is not None else None,
    )


def _strings(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("expected a list of strings")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise TypeError("expected a list of objects")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _size(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("expected a non-negative integer")
    return value


def _sha1(value: Any) -> str:
    text = _text(value)
    if len(text) != 40 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("a sha1 is not 40 lower-case hex digits")
    return text
