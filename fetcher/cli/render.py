"""What the commands print: tables, per-job lines, the readiness table and the JSON documents."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import click

from fetcher import manifest as mf
from fetcher.checks.archive import info_value
from fetcher.errors import FetcherError
from fetcher.manifest import JobRecord, Manifest
from fetcher.names import choose_name
from fetcher.redact import Redactor, origin, printable
from fetcher.service.model import Archive, RestoreJob, iso_utc, readiness
from fetcher.verify import Verification

# Every secret that becomes known is added here, and every line we print is scrubbed with it.
REDACTOR = Redactor()

LIST_HEADERS = (
    "JOB ID",
    "FILE",
    "REPLICA SET",
    "TYPE",
    "JOB",
    "DELIVERY",
    "EXPIRES",
    "DOWNLOADABLE",
)
READINESS_HEADERS = ("ARCHIVE", "REPLICA SET", "MONGODB", "ENGINE", "UNPACKED", "DBPATH")


def shown(text: str) -> str:
    """Text for the terminal: secrets masked, server-given control characters defused."""
    return printable(REDACTOR.scrub(text))


def silence_stdout() -> None:
    """Point stdout at /dev/null once its reader is gone, so exit does not complain again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def dump(doc: Any) -> str:
    """A JSON document as printed, every known secret masked."""
    return REDACTOR.scrub(json.dumps(doc, indent=2))


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """Columns padded to their widest cell; the last one is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([c.ljust(w) for c, w in zip(row, widths, strict=False)] + [row[-1]]).rstrip()
        for row in rows
    ]


def size(n: int) -> str:
    """A byte count as a person reads it: 512 B, 1.5 MiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"


# --- list -------------------------------------------------------------------------------------


def list_lines(jobs: list[RestoreJob], now: datetime) -> list[str]:
    """The table of `list`: a line per archive, a job's further archives under its first."""
    if not jobs:
        return ["no restore jobs"]
    rows: list[tuple[str, ...]] = [LIST_HEADERS]
    for job in jobs:
        state, reason = readiness(job, now)
        ready = "yes" if state == "ready" else reason
        delivery = job.delivery
        expires = iso_utc(delivery.expires) if delivery.expires else "-"
        job_cells = (delivery.type_label or delivery.method, job.status, delivery.status, expires)
        for i, archive in enumerate(job.archives):
            name, replica_set = _name_of(archive.names) or "-", archive.replica_set or "-"
            cells = (job.id, name, replica_set, *job_cells, ready)
            # A job's further archives go on lines of their own, under its first.
            rows.append(cells if i == 0 else ("", name, replica_set, *[""] * 5))
    # Columns that say nothing for this listing are left out: replica sets the API does not
    # name (legacy), and the delivery type when every job is an ordinary pull of a file.
    unnamed = all(not a.replica_set for job in jobs for a in job.archives)
    plain = not any(job.delivery.type_label for job in jobs)
    dropped = {i for i, drop in ((2, unnamed), (3, plain)) if drop}
    rows = [tuple(c for i, c in enumerate(row) if i not in dropped) for row in rows]
    return [shown(line) for line in table(rows)]


def list_document(
    jobs: list[RestoreJob], now: datetime, *, group: str, cluster: str, batch_id: str | None
) -> dict[str, Any]:
    """The JSON document of `list --json`."""
    return {
        "groupId": group,
        "cluster": cluster,
        "batchId": batch_id,
        "jobs": [_job_json(job, now) for job in jobs],
    }


def _job_json(job: RestoreJob, now: datetime) -> dict[str, Any]:
    state, reason = readiness(job, now)
    first = job.archives[0]
    return {
        "id": job.id,
        "batchId": job.batch_id,
        "fileName": _name_of(first.names),
        "statusName": job.status,
        "deliveryStatus": job.delivery.status,
        "deliveryMethod": job.delivery.method,
        "expires": iso_utc(job.delivery.expires) if job.delivery.expires else None,
        "readiness": state,
        "reason": reason,
        "sha1": first.sha1,
        "pullHost": origin(first.url) if first.url else None,
        "snapshotId": job.snapshot_id,
        "created": job.created,
        "archives": [_archive_json(a) for a in job.archives],
    }


def _archive_json(archive: Archive) -> dict[str, Any]:
    return {
        "id": archive.key,
        "fileName": _name_of(archive.names),
        "replicaSet": archive.replica_set,
        "sha1": archive.sha1,
        "link": archive.display or None,
    }


def _name_of(names: tuple[str, ...]) -> str:
    try:
        return choose_name(list(names))
    except FetcherError:
        return ""


# --- fetch ------------------------------------------------------------------------------------


def job_line(record: JobRecord) -> str:
    """One archive's outcome (a job's, while its archives are not known)."""
    f = record.files[0] if record.files else None
    if f is not None and f.size is not None and f.sha1 is not None:
        extra = f", {f.attempts} attempts" if f.attempts > 1 else ""
        if f.resumed_bytes:
            extra += f", {size(f.resumed_bytes)} resumed"
        what = f"{f.name}  {size(f.size)}  sha1 {f.sha1}"
        return f"{f.outcome:<10} {what}  ({f.reason}{extra})"
    label = f"job {record.id}" + (f" ({f.name or f.replica_set})" if f else "")
    return f"{record.outcome:<10} {label}: {record.reason}"


def unpack_line(record: JobRecord) -> str | None:
    """Where an archive was unpacked, or why not; None when no unpack was asked for."""
    f = record.files[0] if record.files else None
    if f is None or f.unpack is None or record.outcome != "verified":
        return None
    return unpack_text(f.name, f.unpack)


def unpack_text(name: str | None, u: mf.Unpack) -> str:
    """`unpacked  NAME  into ROOT/RS  (N files, SIZE)`, or `not unpacked  NAME: why`."""
    if u.problem is not None:
        return f"not unpacked  {name}: {u.problem}"
    earlier = "; unpacked earlier" if u.earlier else ""
    return f"unpacked  {name}  into {u.to}  ({u.files} files, {size(u.bytes)}{earlier})"


def summary(jobs: tuple[JobRecord, ...], where: Path, code: int) -> str:
    """The last line of a fetch: how many jobs came to what, and where the manifest is."""
    counts = {o: sum(1 for j in jobs if j.outcome == o) for o in mf.OUTCOMES}
    text = ", ".join(f"{n} {o}" for o, n in counts.items() if n or o == "verified")
    meaning = {0: "complete", 1: "error", 3: "incomplete", 4: "integrity failure"}[code]
    return f"{text}; manifest: {where} (exit {code}: {meaning})"


# --- the restore set --------------------------------------------------------------------------


def show_readiness(manifest: Manifest, where: Path, *, out: TextIO, quiet: bool) -> None:
    """End with what the operator restores from: the table and the batch's verdict."""
    restore_set = manifest.restore_set
    if quiet:  # only what is wrong
        for problem in restore_set.problems if restore_set else ():
            click.echo(shown(f"fetcher: restore set: {problem}"), err=True)
        return
    lines = ["", *readiness_table(manifest)]
    if restore_set is None:
        lines.append(
            f"restore set not judged: {manifest.unchecked} archives were verified by an older"
            f" fetcher, without the archive check; run: fetcher verify --deep {where}"
        )
    else:
        lines.append(manifest.verdict(restore_set))
        lines += [f"  - {problem}" for problem in restore_set.problems]
        for job, file in manifest.missing_archives:
            label = f"job {job.id}" + (f" ({file.name or file.replica_set})" if file else "")
            what = file or job
            lines.append(f"  - missing: {label}: {what.outcome}: {what.reason}")
        absent = [(job_id, None) for job_id in manifest.absent_ids]
        for job_id, name in [*absent, *manifest.absent_archives]:
            label = f"job {job_id}" + (f" ({name})" if name else "")
            lines.append(f"  - missing: {label}: in no manifest (fetched by no host)")
    for line in lines:
        click.echo(shown(line), file=out)


def readiness_table(manifest: Manifest) -> list[str]:
    """The verified archives, shards by name then the config server; none: no table."""
    restore_set = manifest.restore_set
    config = restore_set.config_server if restore_set else None
    # Each verified archive, whatever became of its job's others.
    files = [(f.name, f) for job in manifest.jobs for f in job.files if f.outcome == "verified"]
    files.sort(key=lambda nf: (config is not None and nf[1].replica_set == config, nf[0] or ""))
    rows: list[tuple[str, ...]] = [READINESS_HEADERS]
    for name, f in files:
        info = f.restore_info
        rows.append(
            (
                name or "-",
                f.replica_set or "-",
                info_value(info, "MongoDB Version") or "-",
                info_value(info, "Storage engine type", "Storage Engine") or "-",
                size(f.content_bytes) if f.content_bytes is not None else "-",
                f.unpack.to or "-" if f.unpack is not None else "-",
            )
        )
    return table(rows) if len(rows) > 1 else []


# --- verify -----------------------------------------------------------------------------------


def not_updated(directory: Path) -> str:
    """The notice for a DIR `verify --deep` checked but could not write."""
    return shown(f"fetcher: {directory} is not writable: checked, but its manifest was not updated")


def verify_lines(result: Verification, *, quiet: bool) -> list[str]:
    """A line per archive (--quiet: per problem), then the count; --quiet and all well: none."""
    lines = []
    for part in result.parts:
        where = f"{part.path}: " if len(result.parts) > 1 else ""
        for c in part.checks:
            if (c.status != "ok" or not quiet) and c in result.checks:
                label = c.label
                lines.append(shown(f"{c.status:<13} {where}{label}: {c.detail}"))
    ok = sum(1 for c in result.checks if c.status == "ok")
    if not quiet or result.exit_code != 0:  # --quiet: nothing at all when all is well
        lines.append(f"{ok} of {len(result.checks)} archives intact (exit {result.exit_code})")
    return lines


def verify_json(result: Verification) -> str:
    """`verify --json`, printed as it is: it holds paths, ids and hashes, no secret."""
    return json.dumps(verify_document(result), indent=2)


def verify_document(result: Verification) -> dict[str, Any]:
    """The JSON document of `verify --json`."""
    return {
        "directories": [str(part.path) for part in result.parts],
        "batchId": result.manifest.batch_id,
        "exitCode": result.exit_code,
        "archives": [
            {"jobId": c.job_id, "name": c.name or None, "status": c.status, "detail": c.detail}
            for c in result.checks
        ],
        "notInAnyDirectory": result.absent_ids,
        "archivesNotInAnyDirectory": [
            {"jobId": job_id, "name": name} for job_id, name in result.absent_archives
        ],
        "restoreSet": result.manifest.restore_set_json(),
    }
