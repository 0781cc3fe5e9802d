"""`fetcher list`: the restore jobs of a cluster, and whether each can be downloaded now."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from fetcher.cli.options import ApiOptions, api_options, batch_option, connect
from fetcher.cli.render import REDACTOR, dump, list_document, list_lines


@click.command("list")
@api_options
@batch_option("Only the jobs of this batch.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def list_command(options: ApiOptions, batch_id: str | None, as_json: bool) -> None:
    """List restore jobs and their archives, and whether each can be downloaded now.

    No link is shown whole: pull-URL tokens and pre-signed signatures stay hidden.
    """
    connection = connect(options, batch_id=batch_id)
    with connection.http:
        jobs = connection.api.list_jobs(connection.group, options.cluster, batch_id)
    for job in jobs:
        job.hide_secrets(REDACTOR)
    now = datetime.now(UTC)
    if as_json:
        doc = list_document(
            jobs, now, group=connection.group, cluster=options.cluster, batch_id=batch_id
        )
        click.echo(dump(doc))
        return
    for line in list_lines(jobs, now):
        click.echo(line)
