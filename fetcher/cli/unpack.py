"""`fetcher unpack DIR --to ROOT`: unpack the archives a fetch verified, offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from fetcher.cli.options import only_option
from fetcher.cli.render import not_updated, show_readiness, shown, unpack_text
from fetcher.unpacking import Unpacked, UnpackResult, unpack_dir


@click.command("unpack")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--to",
    "root",
    metavar="ROOT",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Unpack each archive into ROOT/<replica set>, its mongod config beside it.",
)
@only_option()
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
@click.option("--quiet", "-q", is_flag=True, help="Print only problems.")
def unpack_command(
    directory: Path, root: Path, only: tuple[str, ...], as_json: bool, quiet: bool
) -> None:
    """Unpack each archive verified in DIR into ROOT/<replica set>, offline.

    Each archive is hashed and checked again in the pass that unpacks it; its tree gets its
    name only once both passed. A ROOT/<replica set> that holds anything is left alone.
    """
    if root.absolute() == directory.absolute():
        raise click.UsageError("--to ROOT must not be DIR: ROOT holds only the trees")

    def tell(found: Unpacked) -> None:
        line = unpacked_line(found)
        if not as_json and (not quiet or found.status != "unpacked"):
            click.echo(shown(line), err=found.status != "unpacked")

    result = unpack_dir(directory, root, only=only, note=_note, done=tell)
    if result.not_updated:
        click.echo(not_updated(directory), err=True)
    if as_json:
        click.echo(json.dumps(unpack_document(result, directory, root), indent=2))
    else:
        if not quiet:
            good = sum(1 for a in result.archives if a.status == "unpacked")
            total = len(result.archives)
            click.echo(f"{good} of {total} archives unpacked (exit {result.exit_code})")
        show_readiness(result.manifest, directory, out=sys.stdout, quiet=quiet)
    sys.exit(result.exit_code)


def _note(text: str) -> None:
    click.echo(shown(f"fetcher: {text}"), err=True)


def unpacked_line(found: Unpacked) -> str:
    """One archive's line: where it was unpacked, or what kept it from being."""
    u = found.record.unpack
    if found.status in ("unpacked", "not unpacked") and u is not None:
        return unpack_text(found.record.name, u)
    return f"{found.status}  {found.record.name}: {found.detail}"


def unpack_document(result: UnpackResult, directory: Path, root: Path) -> dict[str, object]:
    """The JSON document of `unpack --json`."""
    return {
        "directory": str(directory),
        "root": str(root.absolute()),
        "exitCode": result.exit_code,
        "manifestUpdated": not result.not_updated,
        "archives": [a.to_json() for a in result.archives],
    }
