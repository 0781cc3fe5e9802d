"""`fetcher fetch`: download, verify and record every archive of a batch (or one job)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fetcher import manifest as mf
from fetcher.cli.options import (
    ApiOptions,
    Connection,
    api_options,
    batch_option,
    connect,
    object_id,
    only_option,
)
from fetcher.cli.progress import TerminalReporter
from fetcher.cli.render import REDACTOR, dump, show_readiness, silence_stdout, summary
from fetcher.manifest import JobRecord, Manifest
from fetcher.names import MANIFEST_NAME
from fetcher.storage import Destination, remove_if_unused

# The fetch package, and httpx with it, is imported when a fetch runs.
if TYPE_CHECKING:
    from fetcher.fetch import Target, WaitPolicy


@click.command("fetch")
@api_options
@batch_option("Fetch every job of this batch.")
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
@only_option()
@click.option(
    "--unpack-to",
    "unpack_to",
    metavar="ROOT",
    type=click.Path(file_okay=False, path_type=Path),
    help="Unpack each verified archive, while it downloads, into ROOT/<replica set> (the"
    " dbPath), with ROOT/<replica set>.mongod.conf to start mongod with.",
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
def fetch_command(
    options: ApiOptions,
    batch_id: str | None,
    job_id: str | None,
    dest: Path | None,
    parallel: int,
    connections: int | None,
    only: tuple[str, ...],
    unpack_to: Path | None,
    wait: bool,
    poll_interval: float,
    wait_timeout: float,
    as_json: bool,
    quiet: bool,
) -> None:
    """Download, verify and record every archive of a batch (or one job)."""
    from fetcher.fetch import Target, WaitPolicy

    if bool(batch_id) == bool(job_id):
        raise click.UsageError("give exactly one of --batch BATCH-ID or --job JOB-ID")
    connection = connect(options, batch_id=batch_id, parallel=parallel)
    target = Target(
        group=connection.group, cluster=options.cluster, batch_id=batch_id, job_id=job_id, only=only
    )
    dest = dest or Path.cwd() / str(batch_id or job_id)
    if unpack_to is not None and unpack_to.absolute() == dest.absolute():
        raise click.UsageError("--unpack-to ROOT must not be --dest: ROOT holds only the trees")
    reporter = TerminalReporter(
        bars=not quiet and sys.stderr.isatty(),
        lines=None if quiet else (sys.stderr if as_json else sys.stdout),
        wait=wait,
    )
    waiting = WaitPolicy(enabled=wait, poll_interval=poll_interval, timeout=wait_timeout)
    result, records = _run(connection, dest, target, reporter, connections, waiting, unpack_to)
    # This run's outcomes decide the exit code; the manifest also keeps earlier runs' jobs.
    # Problems of the restore set (the whole batch's) make it incomplete.
    restore_set = result.restore_set
    code = mf.exit_code(records, problems=len(restore_set.problems) if restore_set else 0)
    try:
        if as_json:
            click.echo(dump(result.to_json()))
        elif not quiet:
            click.echo(summary(records, dest / MANIFEST_NAME, code))
        show_readiness(result, dest, out=sys.stderr if as_json else sys.stdout, quiet=quiet)
    except BrokenPipeError:
        silence_stdout()  # the reader left (`| head`); the outcome is in the manifest
    sys.exit(code)


def _run(
    connection: Connection,
    dest: Path,
    target: Target,
    reporter: TerminalReporter,
    connections: int | None,
    wait: WaitPolicy,
    unpack_to: Path | None,
) -> tuple[Manifest, tuple[JobRecord, ...]]:
    """Fetch into `dest` under its lock: the manifest written, and this run's records."""
    from fetcher.fetch import Fetcher
    from fetcher.service.http import pull_client
    from fetcher.unpacking import UnpackRoot

    settings, http = connection.settings, connection.http
    created = not dest.exists()
    try:
        with (
            Destination(dest) as destination,
            http,
            pull_client(settings, log=connection.log) as pull,
            contextlib.ExitStack() as stack,
        ):
            destination.lock()
            root = None
            if unpack_to is not None:
                root = stack.enter_context(UnpackRoot(unpack_to, note=reporter.note))
            fetcher = Fetcher(
                connection.api,
                pull,
                destination,
                target,
                reporter=reporter,
                redactor=REDACTOR,
                policy=connection.policy(),
                parallel=settings.parallel,
                connections=connections,
                wait=wait,
                clock=connection.runtime.clock,
                write=connection.runtime.write,
                unpack=root,
            )
            try:
                return fetcher.run(), fetcher.records
            finally:
                reporter.close()
    except BaseException:
        if created:
            remove_if_unused(dest)  # a typo in --group should not leave an empty ./BATCH-ID
        raise
