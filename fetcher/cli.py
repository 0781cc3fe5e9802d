"""The `fetcher` command: parse, build settings and clients, call the library, map errors."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TextIO, TypeVar

import click

from fetcher import __version__
from fetcher import manifest as mf
from fetcher.checks.archive import info_value
from fetcher.config import (
    DEFAULT_BASE_URL,
    Credentials,
    Settings,
    default_group,
    load_credentials,
    normalise_base_url,
)
from fetcher.errors import FetcherError, ManifestError
from fetcher.manifest import JobRecord, Manifest
from fetcher.names import MANIFEST_NAME, choose_name
from fetcher.redact import Redactor, origin, printable
from fetcher.storage import Destination
from fetcher.verify import Check, verify, verify_exit_code, with_reports

# httpx and tqdm (and the modules built on them) are imported by the commands that use them:
# `fetcher verify` needs neither, and start-up time counts in every run.
if TYPE_CHECKING:
    from tqdm import tqdm

    from fetcher.engine.transfer import Progress
    from fetcher.fetch import WaitStatus
    from fetcher.service.client import RestoreJobsClient

P = ParamSpec("P")
R = TypeVar("R")

_OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")

# Every secret that becomes known is added here, and every line we print is scrubbed with it.
REDACTOR = Redactor()


def _shown(text: str) -> str:
    """Text for the terminal: secrets masked, server-given control characters defused."""
    return printable(REDACTOR.scrub(text))


def _fail(message: str, code: int) -> None:
    click.echo(f"fetcher: error: {_shown(message)}", err=True)
    sys.exit(code)


def _interrupted() -> NoReturn:
    """Say so and end the process now, as kill -9 would, which every transfer survives.

    Worker threads may sit in a socket read for up to --timeout; waiting for them would keep
    the user waiting, and releasing the lock before they stop would let a second fetch in.
    Ending the process drops the lock and stops them at the same instant.
    """
    with contextlib.suppress(OSError):
        click.echo("fetcher: interrupted; run the same command again to resume", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(130)


def _silence_stdout() -> None:
    """Point stdout at /dev/null once its reader is gone, so exit does not complain again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn every error into one line on stderr and its documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise  # click prints usage errors itself, with exit 2
        except FetcherError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _interrupted()
        except BrokenPipeError:
            _silence_stdout()
            sys.exit(1)
        except OSError as exc:
            _fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), 1)
        except Exception as exc:
            if os.environ.get("FETCHER_DEBUG"):
                raise
            _fail(
                f"internal error ({type(exc).__name__}: {exc}); set FETCHER_DEBUG=1 for details", 1
            )
        raise AssertionError("unreachable")

    return wrapper


def object_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Accept a MongoDB ObjectId (24 hex digits) before anything is requested with it."""
    if value is None or _OBJECT_ID.fullmatch(value):
        return value
    shown = printable(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise click.BadParameter(f"{shown!r} is not a MongoDB id (24 hexadecimal digits)")


def api_options(func: Callable[P, R]) -> Callable[P, R]:
    """Options every command that talks to the API shares."""
    options = [
        click.option(
            "--group",
            "group",
            metavar="GROUP-ID",
            callback=object_id,
            help="Project (group) id [default: the profile's project_id].",
        ),
        click.option(
            "--profile",
            metavar="NAME",
            help="Atlas CLI profile for credentials and project (config.toml) [default: default].",
        ),
        click.option(
            "--cluster",
            required=True,
            metavar="CLUSTER",
            help="Cluster name (Atlas) or cluster id (Cloud Manager, Ops Manager).",
        ),
        click.option(
            "--base-url",
            envvar="FETCHER_BASE_URL",
            default=DEFAULT_BASE_URL,
            show_default=True,
            help="API root; env FETCHER_BASE_URL.",
        ),
        click.option(
            "--ca-cert",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Extra CA certificates (PEM), e.g. a private CA; env SSL_CERT_FILE.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0.1),
            default=60.0,
            show_default=True,
            help="Seconds a connection may deliver nothing before the attempt is cut and retried.",
        ),
        click.option(
            "--verbose",
            "-v",
            is_flag=True,
            help="Log every request and answer on stderr (no secrets: safe to share).",
        ),
        click.option(
            "--retries",
            type=click.IntRange(min=0, max=100),
            default=5,
            show_default=True,
            help="Consecutive failed attempts retried (the count resets whenever bytes arrive).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fetcher")
def main() -> None:
    """Download and verify MongoDB restore archives (Atlas, Cloud Manager, Ops Manager).

    Credentials come from the environment, never from the command line: a service account
    (MONGODB_ATLAS_CLIENT_ID, MONGODB_ATLAS_CLIENT_SECRET) or an API key pair
    (MONGODB_ATLAS_PUBLIC_API_KEY, MONGODB_ATLAS_PRIVATE_API_KEY; or MCLI_*), else an Atlas
    CLI profile (--profile) or ~/.netrc. An API root ending in /api/atlas/v2 speaks Atlas
    Cloud Backup's API; any other, the legacy restore-jobs API.
    Exit codes: 0 all verified, 1 error, 2 usage, 3 incomplete, 4 integrity failure.
    """


def _settings(
    base_url: str,
    ca_cert: Path | None,
    timeout: float,
    retries: int,
    verbose: bool,
    parallel: int = 4,
) -> Settings:
    return Settings(
        base_url=normalise_base_url(base_url),
        timeout=timeout,
        retries=retries,
        parallel=parallel,
        ca_cert=ca_cert,
        verbose=verbose,
    )


def _log_line(line: str) -> None:
    """One line of the --verbose log: every secret masked, above any progress bars."""
    from tqdm import tqdm

    with contextlib.suppress(OSError, ValueError):  # a closed stderr must not end the fetch
        tqdm.write(f"fetcher: {_shown(line)}", file=sys.stderr)


def _api(settings: Settings, profile: str | None) -> tuple[Any, RestoreJobsClient]:
    from fetcher.retry import RetryPolicy
    from fetcher.service.client import RestoreJobsClient
    from fetcher.service.http import api_client

    credentials = load_credentials(os.environ, settings.base_url, profile=profile)
    REDACTOR.add(
        credentials.private_key
        if isinstance(credentials, Credentials)
        else credentials.client_secret
    )
    log = _log_line if settings.verbose else None
    http = api_client(settings, credentials, log=log, redactor=REDACTOR)
    return http, RestoreJobsClient(
        http, settings.base_url, policy=RetryPolicy(retries=settings.retries)
    )


def _connect(
    settings: Settings, profile: str | None, group: str | None, batch_id: str | None
) -> tuple[str, Any, RestoreJobsClient]:
    """The group, and the API's HTTP client and restore-jobs client, after the usage checks."""
    from fetcher.service.dialects import dialect_for

    refusal = dialect_for(settings.base_url).no_batches
    if batch_id and refusal:
        raise click.UsageError(refusal)  # before any credentials are looked for
    group = _group(group, profile)
    return (group, *_api(settings, profile))


def _group(group: str | None, profile: str | None) -> str:
    """--group, else the project_id of the Atlas CLI profile."""
    if group is not None:
        return group
    found = default_group(os.environ, profile)
    if found is None:
        raise click.UsageError("give --group GROUP-ID (or a project_id in the Atlas CLI profile)")
    if not _OBJECT_ID.fullmatch(found):
        raise click.UsageError(
            "the Atlas CLI profile's project_id is not a MongoDB id (24 hexadecimal digits)"
        )
    return found


@main.command("list")
@api_options
@click.option(
    "--batch",
    "batch_id",
    metavar="BATCH-ID",
    callback=object_id,
    help="Only the jobs of this batch.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@handle_errors
def list_command(
    group: str | None,
    profile: str | None,
    cluster: str,
    base_url: str,
    ca_cert: Path | None,
    timeout: float,
    verbose: bool,
    retries: int,
    batch_id: str | None,
    as_json: bool,
) -> None:
    """List restore jobs and their archives, and whether each can be downloaded now.

    No link is shown whole: pull-URL tokens and pre-signed signatures stay hidden.
    """
    from fetcher.service.model import iso_utc, readiness

    settings = _settings(base_url, ca_cert, timeout, retries, verbose)
    group, http, api = _connect(settings, profile, group, batch_id)
    with http:
        jobs = api.list_jobs(group, cluster, batch_id)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for job in jobs:
        job.hide_secrets(REDACTOR)
        state, reason = readiness(job, now)
        archives: list[dict[str, Any]] = [
            {
                "id": a.key,
                "fileName": _name_of(a.names),
                "replicaSet": a.replica_set,
                "sha1": a.sha1,
                "link": a.display or None,
            }
            for a in job.archives
        ]
        first = job.archives[0]
        rows.append(
            {
                "id": job.id,
                "batchId": job.batch_id,
                "fileName": archives[0]["fileName"],
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
                "archives": archives,
            }
        )
    if as_json:
        doc = {"groupId": group, "cluster": cluster, "batchId": batch_id, "jobs": rows}
        click.echo(REDACTOR.scrub(json.dumps(doc, indent=2)))
        return
    if not rows:
        click.echo("no restore jobs")
        return
    headers = ("JOB ID", "FILE", "REPLICA SET", "TYPE", "JOB", "DELIVERY", "EXPIRES")
    table: list[tuple[str, ...]] = [(*headers, "DOWNLOADABLE")]
    for r in rows:
        ready = "yes" if r["readiness"] == "ready" else r["reason"]
        job_cells = (r["deliveryMethod"], r["statusName"], r["deliveryStatus"], r["expires"] or "-")
        for i, a in enumerate(r["archives"]):
            values = (r["id"], a["fileName"] or "-", a["replicaSet"] or "-", *job_cells, ready)
            cells = tuple(str(c) for c in values)
            # A job's further archives go on lines of their own, under its first.
            table.append(cells if i == 0 else ("", cells[1], cells[2], *[""] * 5))
    # Columns that say nothing for this listing are left out: replica sets the API does not
    # name (legacy), and the delivery type when every job is a plain HTTP delivery.
    unnamed = all(not a["replicaSet"] for r in rows for a in r["archives"])
    plain = all(r["deliveryMethod"] == "HTTP" for r in rows)
    dropped = {i for i, drop in ((2, unnamed), (3, plain)) if drop}
    table = [tuple(c for i, c in enumerate(row) if i not in dropped) for row in table]
    for line in _table(table):
        click.echo(_shown(line))


def _name_of(names: tuple[str, ...]) -> str:
    try:
        return choose_name(list(names))
    except FetcherError:
        return ""


@main.command("fetch")
@api_options
@click.option(
    "--batch",
    "batch_id",
    metavar="BATCH-ID",
    callback=object_id,
    help="Fetch every job of this batch.",
)
@click.option(
    "--job",
    "job_id",
    metavar="JOB-ID",
    callback=object_id,
    help="Fetch one job: a replica set's, or an Atlas Cloud Backup restore (every archive).",
)
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the archives and manifest.json [default: ./BATCH-ID or ./JOB-ID].",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 32),
    default=4,
    show_default=True,
    help="Archives downloaded at once.",
)
@click.option(
    "--connections",
    type=click.IntRange(1, 16),
    metavar="N",
    help="Connections per archive, each fetching byte ranges [default: 4, or 1 for links"
    " that allow fewer than 1000 downloads].",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    metavar="PATTERN",
    help="Only the archives whose file name or replica set matches this shell pattern"
    " (repeatable).",
)
@click.option("--wait", is_flag=True, help="Poll until every job is ready (or can never be).")
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds between polls with --wait (requests stay under 100 a minute).",
)
@click.option(
    "--wait-timeout",
    type=click.FloatRange(min=0),
    default=6 * 3600.0,
    show_default=True,
    help="Seconds to keep waiting with --wait.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON on stdout.")
@click.option(
    "--quiet", "-q", is_flag=True, help="No progress bars, and per-job lines only for failures."
)
@handle_errors
def fetch_command(
    group: str | None,
    profile: str | None,
    cluster: str,
    base_url: str,
    ca_cert: Path | None,
    timeout: float,
    verbose: bool,
    retries: int,
    batch_id: str | None,
    job_id: str | None,
    dest: Path | None,
    parallel: int,
    connections: int | None,
    only: tuple[str, ...],
    wait: bool,
    poll_interval: float,
    wait_timeout: float,
    as_json: bool,
    quiet: bool,
) -> None:
    """Download, verify and record every archive of a batch (or one job)."""
    from fetcher.fetch import Fetcher, Target, WaitPolicy
    from fetcher.retry import RetryPolicy
    from fetcher.service.http import pull_client

    if bool(batch_id) == bool(job_id):
        raise click.UsageError("give exactly one of --batch BATCH-ID or --job JOB-ID")
    settings = _settings(base_url, ca_cert, timeout, retries, verbose, parallel)
    group, http, api = _connect(settings, profile, group, batch_id)
    # Atlas Cloud Backup's restore is one job with an archive per replica set: the job is
    # the batch, and the manifest judges its archives as one restore set.
    batch_id = job_id if api.dialect.job_is_restore else batch_id
    target = Target(group=group, cluster=cluster, batch_id=batch_id, job_id=job_id, only=only)
    dest = dest or Path.cwd() / str(batch_id or job_id)
    reporter = TerminalReporter(
        bars=not quiet and sys.stderr.isatty(),
        lines=None if quiet else (sys.stderr if as_json else sys.stdout),
        wait=wait,
    )
    created = not dest.exists()
    try:
        log = _log_line if verbose else None
        with Destination(dest) as destination, http, pull_client(settings, log=log) as pull:
            destination.lock()
            fetcher = Fetcher(
                api,
                pull,
                destination,
                target,
                reporter=reporter,
                redactor=REDACTOR,
                policy=RetryPolicy(retries=retries),
                parallel=parallel,
                connections=connections,
                wait=WaitPolicy(enabled=wait, poll_interval=poll_interval, timeout=wait_timeout),
            )
            try:
                result = fetcher.run()
            finally:
                reporter.close()
    except BaseException:
        if created:
            _remove_if_unused(dest)  # a typo in --group should not leave an empty ./BATCH-ID
        raise
    # This run's outcomes decide the exit code; the manifest also keeps earlier runs' jobs.
    # Problems of the restore set (the whole batch's) make it incomplete.
    restore_set = result.restore_set
    code = mf.exit_code(fetcher.records, problems=len(restore_set.problems) if restore_set else 0)
    try:
        if as_json:
            click.echo(REDACTOR.scrub(json.dumps(result.to_json(), indent=2)))
        elif not quiet:
            click.echo(_summary(fetcher.records, dest / MANIFEST_NAME, code))
        _show_readiness(result, dest, out=sys.stderr if as_json else sys.stdout, quiet=quiet)
    except BrokenPipeError:
        _silence_stdout()  # the reader left (`| head`); the outcome is in the manifest
    sys.exit(code)


def _remove_if_unused(dest: Path) -> None:
    """Remove a directory this run created if it holds nothing but the lock file."""
    from fetcher.storage import LOCK_NAME

    try:
        if {p.name for p in dest.iterdir()} <= {LOCK_NAME}:
            (dest / LOCK_NAME).unlink(missing_ok=True)
            dest.rmdir()
    except OSError:
        pass  # best effort: the error being reported matters more


def _summary(jobs: tuple[JobRecord, ...], where: Path, code: int) -> str:
    counts = {o: sum(1 for j in jobs if j.outcome == o) for o in mf.OUTCOMES}
    text = ", ".join(f"{n} {o}" for o, n in counts.items() if n or o == "verified")
    meaning = {0: "complete", 1: "error", 3: "incomplete", 4: "integrity failure"}[code]
    return f"{text}; manifest: {where} (exit {code}: {meaning})"


def _show_readiness(manifest: Manifest, where: Path, *, out: TextIO, quiet: bool) -> None:
    """End with what the operator restores from: the table and the batch's verdict."""
    restore_set = manifest.restore_set
    if quiet:  # only what is wrong
        for problem in restore_set.problems if restore_set else ():
            click.echo(_shown(f"fetcher: restore set: {problem}"), err=True)
        return
    config = restore_set.config_server if restore_set else None
    files = [f for job in manifest.jobs if job.outcome == "verified" for f in job.files]
    # Shards by name, then the config server.
    files.sort(key=lambda f: (config is not None and f.replica_set == config, f.name))
    rows: list[tuple[str, ...]] = [("ARCHIVE", "REPLICA SET", "MONGODB", "ENGINE", "UNPACKED")]
    for f in files:
        info = f.restore_info
        rows.append(
            (
                f.name,
                f.replica_set or "-",
                info_value(info, "MongoDB Version") or "-",
                info_value(info, "Storage engine type", "Storage Engine") or "-",
                _size(f.content_bytes) if f.content_bytes is not None else "-",
            )
        )
    lines = [""] + (_table(rows) if len(rows) > 1 else [])
    if restore_set is None:
        lines.append(
            f"restore set not judged: {manifest.unchecked} archives were verified by an older"
            f" fetcher, without the archive check; run: fetcher verify --deep {where}"
        )
    else:
        lines.append(manifest.verdict(restore_set))
        lines += [f"  - {problem}" for problem in restore_set.problems]
        for job, file in manifest.missing_archives:
            label = f"job {job.id}" + (f" ({file.name})" if file else "")
            what = file or job
            lines.append(f"  - missing: {label}: {what.outcome}: {what.reason}")
        for job_id in manifest.absent_ids:
            lines.append(f"  - missing: job {job_id}: in no manifest (fetched by no host)")
    for line in lines:
        click.echo(_shown(line), file=out)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Columns padded to their widest cell; the last one is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([c.ljust(w) for c, w in zip(row, widths, strict=False)] + [row[-1]]).rstrip()
        for row in rows
    ]


@main.command("verify")
@click.argument(
    "directories", metavar="DIR...", nargs=-1, required=True, type=click.Path(path_type=Path)
)
@click.option(
    "--deep",
    is_flag=True,
    help="Also check each archive as a tar.gz and read its restoreInfo.txt (fills the manifest).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
@click.option("--quiet", "-q", is_flag=True, help="Print only problems.")
@handle_errors
def verify_command(directories: tuple[Path, ...], deep: bool, as_json: bool, quiet: bool) -> None:
    """Re-hash every archive named in DIR/manifest.json, offline (--deep: check them too).

    Several DIRs holding parts of one batch (one per host) are verified together: each
    archive where it is, then the batch as a whole.
    """
    parts = [(directory, *_verify_one(directory, deep=deep)) for directory in directories]
    batches = {(m.group_id, m.cluster, m.batch_id) for _, m, _ in parts}
    if len(batches) > 1:
        listed = "; ".join(f"{d}: batch {m.batch_id} of {m.cluster}" for d, m, _ in parts)
        raise ManifestError(f"the DIRs hold manifests of different batches ({listed})")
    manifest = mf.combine([m for _, m, _ in parts]) if len(parts) > 1 else parts[0][1]
    # A job with no archive known in one DIR gave way to its archives in another.
    with_files = {job.id for job in manifest.jobs if job.files}
    checks = [c for _, _, found in parts for c in found if c.name or c.job_id not in with_files]
    verified = {(c.job_id, c.name) for c in checks if c.status == "ok"}
    # An archive verified in one DIR is the batch's, whatever another DIR says of it.
    checks = [c for c in checks if c.status != "not verified" or (c.job_id, c.name) not in verified]
    nowhere = [i for i in manifest.absent_ids if i not in {j for j, _ in verified}]
    restore_set = manifest.restore_set
    problems = len(restore_set.problems) if restore_set else 0
    code = verify_exit_code(checks, problems=problems + len(nowhere))
    if as_json:
        doc = {
            "directories": [str(d) for d in directories],
            "batchId": manifest.batch_id,
            "exitCode": code,
            "archives": [
                {"jobId": c.job_id, "name": c.name or None, "status": c.status, "detail": c.detail}
                for c in checks
            ],
            "notInAnyDirectory": nowhere,
            "restoreSet": manifest.restore_set_json(),
        }
        click.echo(json.dumps(doc, indent=2))
    else:
        for directory, _, found in parts:
            where = f"{directory}: " if len(parts) > 1 else ""
            for c in found:
                if (c.status != "ok" or not quiet) and c in checks:
                    label = c.name or f"job {c.job_id}"
                    click.echo(_shown(f"{c.status:<13} {where}{label}: {c.detail}"))
        ok = sum(1 for c in checks if c.status == "ok")
        if not quiet or code != 0:  # --quiet: nothing at all when all is well
            click.echo(f"{ok} of {len(checks)} archives intact (exit {code})")
        _show_readiness(manifest, directories[0], out=sys.stdout, quiet=quiet)
    sys.exit(code)


def _verify_one(directory: Path, *, deep: bool) -> tuple[Manifest, list[Check]]:
    """Verify one DIR against its manifest; with `deep`, fill the manifest in if DIR can be
    written (one that cannot, read-only or another user's, is checked all the same)."""
    with Destination(directory, create=False) as dest:
        writable = deep and dest.writable()
        if writable:
            dest.lock()  # it writes the manifest: not beside a fetch that does too
        manifest = mf.load(dest)
        if manifest is None:
            raise ManifestError(f"no {MANIFEST_NAME} in {directory}")
        checks = verify(dest, manifest, deep=deep)
        if deep:
            manifest = with_reports(manifest, checks)
        if writable:
            manifest = mf.write(dest, manifest)
            mf.Journal(dest, manifest).close()  # folded into the manifest just written
        elif deep:
            click.echo(
                _shown(
                    f"fetcher: {directory} is not writable: checked, but its manifest was"
                    " not updated"
                ),
                err=True,
            )
    return manifest, checks


class TerminalReporter:
    """Progress bars (tqdm) on stderr when it is a terminal, and one line per finished job."""

    def __init__(self, *, bars: bool, lines: TextIO | None, wait: bool = False) -> None:
        self._bars_on, self._lines = bars, lines
        self._lock = threading.Lock()
        self._bars: dict[str, tqdm[Any]] = {}
        self._done: dict[str, tuple[int, int | None]] = {}
        self._total: tqdm[Any] | None = None
        self._closed: set[TextIO] = set()
        # Under --wait the top line is the wait status; the bars go below it.
        self._first_bar = 1 if wait else 0
        self._status: tqdm[Any] | None = None
        self._last_wait = ""

    def progress(self, name: str) -> Progress:
        """Return a callback that moves the archive's bar and the total bar."""
        if not self._bars_on:
            return _ignore_progress

        def update(done: int, total: int | None) -> None:
            with self._lock:
                bar = self._bars.get(name)
                if bar is None:
                    if self._total is None:
                        self._total = _bar("total", None, self._first_bar)
                    position = self._first_bar + len(self._bars) + 1
                    bar = self._bars[name] = _bar(name, total, position)
                self._done[name] = (done, total)
                _move(bar, done, total)
                known = [t for _, t in self._done.values()]
                grand = sum(t for t in known if t) if all(known) else None
                _move(self._total, sum(d for d, _ in self._done.values()), grand)

        return update

    def finished(self, record: JobRecord) -> None:
        """Print the job's outcome above the bars."""
        with self._lock:
            name = record.files[0].name if record.files else str(record.info.get("fileName", ""))
            bar = self._bars.pop(name, None)
            if bar is not None:
                bar.close()
            # --quiet drops the per-job lines, but never the reason a job failed.
            out = (
                self._lines if self._lines is not None or record.outcome != "failed" else sys.stderr
            )
            if out is not None:
                self._write(_shown(_line(record)), out)

    def note(self, text: str) -> None:
        """Show a remark on stderr."""
        with self._lock:
            self._write(f"fetcher: {_shown(text)}", sys.stderr)

    def remark(self, text: str) -> None:
        """Show a remark on stderr, unless --quiet."""
        if self._lines is not None:
            self.note(text)

    def waiting(self, status: WaitStatus | None) -> None:
        """Show what --wait waits for: a status line on a terminal, else a line per change."""
        with self._lock:
            if status is None:
                if self._status is not None:
                    self._status.close()
                    self._status = None
                return
            text = _shown(str(status))
            if self._bars_on:
                if self._status is None:
                    self._status = _status_line()
                self._status.set_description_str(text)
            elif self._lines is not None and status.what != self._last_wait:
                self._write(f"fetcher: {text}", sys.stderr)
            self._last_wait = status.what

    def _write(self, text: str, out: TextIO) -> None:
        """Print above the bars; a closed pipe (`| head`) silences us but never stops the fetch."""
        from tqdm import tqdm

        if out in self._closed:
            return
        try:
            tqdm.write(text, file=out)
            out.flush()
        except (OSError, ValueError):
            self._closed.add(out)

    def close(self) -> None:
        """Remove every bar."""
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            for line in (self._total, self._status):
                if line is not None:
                    line.close()


def _ignore_progress(done: int, total: int | None) -> None:
    return None


def _bar(name: str, total: int | None, position: int) -> tqdm[Any]:
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=name,
        position=position,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.2,
    )


def _status_line() -> tqdm[Any]:
    from tqdm import tqdm

    return tqdm(bar_format="{desc}", position=0, leave=False, file=sys.stderr, dynamic_ncols=True)


def _move(bar: tqdm[Any] | None, done: int, total: int | None) -> None:
    if bar is None:
        return
    if total is not None and bar.total != total:
        bar.total = total
    bar.update(done - bar.n)


def _line(record: JobRecord) -> str:
    """One archive's outcome (a job's, while its archives are not known)."""
    f = record.files[0] if record.files else None
    if f is not None and f.size is not None and f.sha1 is not None:
        extra = f", {f.attempts} attempts" if f.attempts > 1 else ""
        if f.resumed_bytes:
            extra += f", {_size(f.resumed_bytes)} resumed"
        what = f"{f.name}  {_size(f.size)}  sha1 {f.sha1}"
        return f"{f.outcome:<10} {what}  ({f.reason}{extra})"
    label = f"job {record.id}" + (f" ({f.name})" if f else "")
    return f"{record.outcome:<10} {label}: {record.reason}"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"


if __name__ == "__main__":  # pragma: no cover
    main()
