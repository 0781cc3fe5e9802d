"""fetcher.cli's terminal reporter: what a terminal shows while a batch is fetched."""

from __future__ import annotations

import pytest

from fetcher.cli import TerminalReporter
from fetcher.fetch import WaitStatus

# -- --wait from the moment a restore is triggered ---------------------------------------------


def test_on_a_terminal_the_wait_status_is_one_line_that_is_replaced(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reporter = TerminalReporter(bars=True, lines=None, wait=True)
    reporter.waiting(WaitStatus(3, 5, (("IN_PROGRESS", 3),), 30.0))
    reporter.waiting(WaitStatus(2, 5, (("IN_PROGRESS", 2),), 30.0))
    reporter.waiting(None)
    reporter.close()
    err = capsys.readouterr().err
    assert "waiting for 3 of 5 jobs: IN_PROGRESS; next poll in 30 s" in err
    assert "waiting for 2 of 5 jobs" in err
    assert "\n" not in err.replace("\r\n", "\r").strip("\n")  # redrawn in place, not scrolled
