"""The `fetcher` command group (fetcher.cli): its commands, their options and shell completion."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from fetcher.cli import main


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_is_click_s_own(shell: str) -> None:
    result = CliRunner().invoke(
        main, [], prog_name="fetcher", env={"_FETCHER_COMPLETE": f"{shell}_source"}
    )
    assert result.exit_code == 0
    assert "_FETCHER_COMPLETE" in result.output and "fetcher" in result.output


def test_completion_offers_the_commands_and_their_options() -> None:
    env = {"_FETCHER_COMPLETE": "bash_complete", "COMP_WORDS": "fetcher f", "COMP_CWORD": "1"}
    words = CliRunner().invoke(main, [], prog_name="fetcher", env=env).output
    assert "plain,fetch" in words
    env.update(COMP_WORDS="fetcher verify --d", COMP_CWORD="2")
    assert "plain,--deep" in CliRunner().invoke(main, [], prog_name="fetcher", env=env).output
