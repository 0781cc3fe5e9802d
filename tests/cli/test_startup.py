"""Start-up of the command (fetcher.cli): `fetcher verify` loads neither httpx nor tqdm."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

# Start-up time counts in every run, and an offline verify needs no HTTP client and no bars.
HEAVY = re.compile(r"^(httpx|httpcore|tqdm)\b")


def _imported(*args: str) -> list[str]:
    """The modules `python -X importtime -m fetcher.cli ARGS` imported, as it reports them."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fetcher.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("import time:")]
    assert lines, run.stderr  # -X importtime answered: the checks below mean something
    return [line.rsplit("|", 1)[-1].strip() for line in lines]


def test_verify_help_imports_neither_httpx_nor_tqdm() -> None:
    modules = _imported("verify", "--help")
    assert "fetcher.cli.verify" in modules
    assert [m for m in modules if HEAVY.match(m)] == []


def test_a_verify_that_runs_imports_neither_httpx_nor_tqdm(tmp_path: Path) -> None:
    # The command itself runs (up to its error: there is no such DIR), not only its help.
    modules = _imported("verify", str(tmp_path / "absent"))
    assert "fetcher.verify" in modules
    assert [m for m in modules if HEAVY.match(m)] == []


def test_the_api_commands_import_httpx_only_when_they_run() -> None:
    modules = _imported("fetch", "--help")
    assert "fetcher.cli.fetch" in modules and "fetcher.cli.list" in modules
    assert [m for m in modules if HEAVY.match(m)] == []
