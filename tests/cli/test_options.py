"""fetcher.cli.options: the shared options declared once, as one ApiOptions, and the Runtime."""

from __future__ import annotations

import click
from click.testing import CliRunner

from fetcher.cli.options import ApiOptions, Runtime, api_options, runtime

GROUP = "5f0c0ffee0000000000000aa"


@click.command()
@api_options
@click.option("--own", default="x")
def probe(options: ApiOptions, own: str) -> None:
    """A command with the shared options and one of its own."""
    settings = options.settings(parallel=3)
    click.echo(f"{options.group} {options.cluster} {settings.base_url} {settings.parallel} {own}")


def test_the_shared_options_reach_a_command_as_one_object() -> None:
    result = CliRunner().invoke(
        probe,
        [
            "--group",
            GROUP,
            "--cluster",
            "C0",
            "--base-url",
            "https://om.example/api/public/v1.0/",
            "--own",
            "y",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (f"{GROUP} C0 https://om.example/api/public/v1.0 3 y")


def test_a_group_that_is_no_object_id_is_a_usage_error_before_anything_is_sent() -> None:
    result = CliRunner().invoke(probe, ["--group", "nope", "--cluster", "C0"])
    assert result.exit_code == 2
    assert "'nope' is not a MongoDB id (24 hexadecimal digits)" in result.output


def test_the_runtime_is_the_one_given_as_obj_else_the_process_s_own() -> None:
    heard: list[float] = []

    @click.command()
    def pause() -> None:
        runtime().sleep(0.0)

    CliRunner().invoke(pause, [], obj=Runtime(sleep=heard.append), catch_exceptions=False)
    assert heard == [0.0]
    assert CliRunner().invoke(pause, [], obj=object()).exit_code == 0  # time.sleep
