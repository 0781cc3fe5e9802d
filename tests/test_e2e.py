"""The real processes: scripts/fake_atlas.py and `python -m fetcher`, as the demo runs them."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake_atlas(tmp_path: Path) -> Iterator[dict[str, Any]]:
    state = tmp_path / "server"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "fake_atlas.py"),
            "--state-dir",
            str(state),
            "--size",
            str(256 * 1024),
            "--bearer",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    info = state / "server.json"
    deadline = time.monotonic() + 30
    while not info.exists():
        assert proc.poll() is None, "fake_atlas.py exited early"
        assert time.monotonic() < deadline, "fake_atlas.py did not start"
        time.sleep(0.05)
    yield json.loads(info.read_text())
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def _env(server: dict[str, Any], **extra: str) -> dict[str, str]:
    """This environment with the fake server's API root and keys (and no others)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_ATLAS", "MCLI"))}
    env.update(
        FETCHER_BASE_URL=server["apiBase"],
        MONGODB_ATLAS_PUBLIC_API_KEY=server["publicKey"],
        MONGODB_ATLAS_PRIVATE_API_KEY=server["privateKey"],
        **extra,
    )
    return env


def _fetcher(server: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fetcher", *args],
        env=_env(server),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_fetch_then_verify_a_batch(fake_atlas: dict[str, Any], tmp_path: Path) -> None:
    dest = tmp_path / "batch"
    ids = ["--group", fake_atlas["group"], "--cluster", fake_atlas["cluster"]]
    listed = _fetcher(fake_atlas, "list", *ids, "--batch", fake_atlas["batch"], "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)["jobs"]) == 5  # 3 shards, config, one expired

    fetched = _fetcher(
        fake_atlas, "fetch", *ids, "--batch", fake_atlas["batch"], "--dest", str(dest)
    )
    assert fetched.returncode == 3, fetched.stderr  # the expired job makes it incomplete
    assert "\r" not in fetched.stderr  # no progress bars when stderr is not a terminal
    for job in fake_atlas["jobs"]:
        assert (dest / job["fileName"]).stat().st_size == job["size"]
    manifest = json.loads((dest / "manifest.json").read_text())
    outcomes = sorted(j["outcome"] for j in manifest["jobs"])
    assert outcomes == ["skipped", "verified", "verified", "verified", "verified"]
    assert "authValue" not in (dest / "manifest.json").read_text()

    verified = _fetcher(fake_atlas, "verify", str(dest))
    assert verified.returncode == 3 and "4 of 5 archives intact" in verified.stdout

    target = dest / fake_atlas["jobs"][0]["fileName"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    broken = _fetcher(fake_atlas, "verify", str(dest))
    assert broken.returncode == 4 and target.name in broken.stdout


def test_progress_bars_on_a_terminal_and_none_with_quiet(
    fake_atlas: dict[str, Any], tmp_path: Path
) -> None:
    ids = [
        "--group",
        fake_atlas["group"],
        "--cluster",
        fake_atlas["cluster"],
        "--batch",
        fake_atlas["batch"],
    ]
    names = [job["fileName"] for job in fake_atlas["jobs"]]

    def stderr_on_a_tty(*extra: str) -> str:
        primary, secondary = pty.openpty()
        # A terminal of 30 rows and 120 columns (a fresh pty has none, and tqdm sizes bars to it).
        fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
        env = _env(fake_atlas, COLUMNS="120")
        dest = tmp_path / f"d{len(extra)}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "fetcher", "fetch", *ids, "--dest", str(dest), *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=secondary,
        )
        os.close(secondary)
        out = bytearray()
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO once the child closed the terminal
                break
            if not data:
                break
            out += data
        proc.wait(timeout=60)
        os.close(primary)
        return out.decode(errors="replace")

    shown = stderr_on_a_tty()
    assert "total" in shown
    assert all(name[:20] in shown for name in names), shown
    assert stderr_on_a_tty("--quiet") == ""


def test_a_closed_stdout_does_not_cost_the_manifest(
    fake_atlas: dict[str, Any], tmp_path: Path
) -> None:
    dest = tmp_path / "piped"
    env = _env(fake_atlas)
    args = ["--group", fake_atlas["group"], "--cluster", fake_atlas["cluster"]]
    args += ["--batch", fake_atlas["batch"], "--dest", str(dest), "--parallel", "1"]
    read, write = os.pipe()
    os.close(read)  # like `fetcher fetch ... | head -0`: every write to stdout fails
    proc = subprocess.run(
        [sys.executable, "-m", "fetcher", "fetch", *args],
        env=env,
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    os.close(write)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 3  # the batch's real outcome (one expired job), not a pipe error
    manifest = json.loads((dest / "manifest.json").read_text())
    assert sum(j["outcome"] == "verified" for j in manifest["jobs"]) == 4
