"""`fetcher verify DIR...`: re-hash (and, deep, check) what the manifests name, offline."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fetcher.cli.render import not_updated, show_readiness, verify_json, verify_lines
from fetcher.verify import DirResult, verify_dirs


@click.command("verify")
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
def verify_command(directories: tuple[Path, ...], deep: bool, as_json: bool, quiet: bool) -> None:
    """Re-hash every archive named in DIR/manifest.json, offline (--deep: check them too).

    Several DIRs holding parts of one batch (one per host) are verified together: each
    archive where it is, then the batch as a whole.
    """
    result = verify_dirs(directories, deep=deep, done=_notice)
    if as_json:
        click.echo(verify_json(result))
    else:
        for line in verify_lines(result, quiet=quiet):
            click.echo(line)
        show_readiness(result.manifest, directories[0], out=sys.stdout, quiet=quiet)
    sys.exit(result.exit_code)


def _notice(part: DirResult) -> None:
    """Say at once that a DIR was checked but could not be written."""
    if part.not_updated:
        click.echo(not_updated(part.path), err=True)
