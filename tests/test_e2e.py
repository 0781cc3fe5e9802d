"""Cross-cutting, end to end: scripts/fake_atlas.py and `python -m fetcher`, as the demo runs
them (real processes, every module at once)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import tarfile
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def _running_fake_atlas(state: Path, *options: str) -> Iterator[dict[str, Any]]:
    """Run scripts/fake_atlas.py with `options` until the block ends; yield its server.json."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "fake_atlas.py"),
            "--state-dir",
            str(state),
            "--size",
            str(256 * 1024),
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        info = state / "server.json"
        deadline = time.monotonic() + 30
        while not info.exists():
            assert proc.poll() is None, "fake_atlas.py exited early"
            assert time.monotonic() < deadline, "fake_atlas.py did not start"
            time.sleep(0.05)
        yield json.loads(info.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


@pytest.fixture
def fake_atlas(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with _running_fake_atlas(tmp_path / "server", "--bearer") as server:
        yield server


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
    _assert_restore_ready(fake_atlas, manifest, dest)
    _assert_ends_with_readiness(fake_atlas, fetched.stdout)

    verified = _fetcher(fake_atlas, "verify", str(dest))
    assert verified.returncode == 3 and "4 of 5 archives intact" in verified.stdout
    _assert_ends_with_readiness(fake_atlas, verified.stdout)
    deep = _fetcher(fake_atlas, "verify", "--deep", str(dest))
    assert deep.returncode == 3 and deep.stdout.count("archive check passed") == 4, deep.stdout
    _assert_ends_with_readiness(fake_atlas, deep.stdout)

    target = dest / fake_atlas["jobs"][0]["fileName"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    broken = _fetcher(fake_atlas, "verify", str(dest))
    assert broken.returncode == 4 and target.name in broken.stdout


def _assert_restore_ready(server: dict[str, Any], manifest: dict[str, Any], dest: Path) -> None:
    """Every archive fake_atlas served passed the archive check, with its restoreInfo.txt, and
    the batch is one restore set whose config server is the config replica set."""
    files = {
        f["name"]: f for job in manifest["jobs"] for f in job["files"] if f["outcome"] == "verified"
    }
    assert files.keys() == {job["fileName"] for job in server["jobs"]}
    for job in server["jobs"]:
        entry = files[job["fileName"]]
        assert entry["archiveCheck"] == "passed"
        assert entry["replicaSet"] == job["replicaSet"]
        with tarfile.open(dest / job["fileName"]) as tar:
            unpacked = sum(member.size for member in tar if member.isreg())
        assert entry["contentBytes"] == unpacked > 0
        assert entry["restoreInfo"]["MongoDB Version"]
        assert entry["restoreInfo"]["Replica Set"] == job["replicaSet"]
    restore_set = manifest["restoreSet"]
    config = f"{server['cluster']}-config"
    assert restore_set["configServer"] == config
    assert sorted(restore_set["replicaSets"]) == sorted(job["replicaSet"] for job in server["jobs"])
    assert restore_set["problems"] == []
    assert restore_set["restorePoint"]


def _assert_ends_with_readiness(server: dict[str, Any], out: str) -> None:
    """The output ends with the readiness table (an archive a row) and the batch's verdict."""
    lines = out.rstrip("\n").splitlines()
    rows = len(server["jobs"])
    header, table, verdict, missing = (
        lines[-rows - 3],
        lines[-rows - 2 : -2],
        lines[-2],
        lines[-1],
    )
    columns = ["ARCHIVE", "REPLICA", "SET", "MONGODB", "ENGINE", "UNPACKED", "DBPATH"]
    assert header.split() == columns
    shown = {row.split()[0]: row.split()[1:4] for row in table}
    assert shown == {
        job["fileName"]: [job["replicaSet"], "7.0.12", "wiredTiger"] for job in server["jobs"]
    }
    # The expired job's archive is the one missing; nothing else keeps the batch from restoring.
    assert verdict == "not ready to restore: 1 archive missing"
    (expired,) = server["expiredJobs"]
    assert missing.startswith(f"  - missing: job {expired['id']} ({expired['fileName']}): ")


def _fetch_on_a_tty(server: dict[str, Any], *args: str) -> tuple[str, int]:
    """Run `fetcher fetch ARGS` with stderr on a terminal; return what it drew, and its status."""
    primary, secondary = pty.openpty()
    # A terminal of 30 rows and 120 columns (a fresh pty has none, and tqdm sizes bars to it).
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fetcher", "fetch", *args],
        env=_env(server, COLUMNS="120"),
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
    status = proc.wait(timeout=60)
    os.close(primary)
    return out.decode(errors="replace"), status


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

    shown, _ = _fetch_on_a_tty(fake_atlas, *ids, "--dest", str(tmp_path / "d0"))
    assert "total" in shown
    assert all(name[:20] in shown for name in names), shown
    assert _fetch_on_a_tty(fake_atlas, *ids, "--dest", str(tmp_path / "d1"), "--quiet")[0] == ""


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


def test_fetch_wait_from_the_moment_a_restore_is_triggered(tmp_path: Path) -> None:
    # As the real API shows a fresh restore: every job IN_PROGRESS, ready one by one within
    # 1.5 s, and its SHA1 published only once the archive has been downloaded.
    with _running_fake_atlas(tmp_path / "server", "--ready-after", "1.5", "--late-hashes") as fake:
        last = max(fake["jobs"], key=lambda job: job["readyAt"])  # the config server, at 1.5 s
        url = f"{fake['apiBase']}/groups/{fake['group']}/clusters/{fake['cluster']}"
        url += f"/restoreJobs/{last['id']}"
        with httpx.Client(auth=httpx.DigestAuth(fake["publicKey"], fake["privateKey"])) as api:
            job = api.get(url).json()
        with httpx.Client() as pull:
            early = pull.get(last["pullUrl"])
        assert job["statusName"] == "IN_PROGRESS"
        delivery = job["delivery"]
        assert delivery["statusName"] in ("NOT_STARTED", "IN_PROGRESS")
        assert delivery["methodName"] == "HTTP"
        assert delivery["maxDownloads"] == 2147483647  # unlimited, as in MongoDB's example
        assert not {"url", "urlV2", "authValue", "expires"} & delivery.keys()
        assert job["hashes"] == []
        assert early.status_code == 404  # the path is known, but there is no archive yet
        assert early.json()["error"] == 404

        dest = tmp_path / "batch"
        args = ["--group", fake["group"], "--cluster", fake["cluster"], "--batch", fake["batch"]]
        args += ["--dest", str(dest), "--wait", "--poll-interval", "0.2"]
        fetched = _fetcher(fake, "fetch", *args)

    assert fetched.returncode == 3, fetched.stderr  # only the expired job is missing
    manifest = json.loads((dest / "manifest.json").read_text())
    outcomes = {entry["id"]: entry["outcome"] for entry in manifest["jobs"]}
    assert outcomes == {
        **{job["id"]: "verified" for job in fake["jobs"]},
        **{job["id"]: "skipped" for job in fake["expiredJobs"]},
    }
    for job in fake["jobs"]:
        archive = dest / job["fileName"]
        assert hashlib.sha1(archive.read_bytes()).hexdigest() == job["sha1"]


def test_on_a_terminal_wait_shows_a_status_line(tmp_path: Path) -> None:
    with _running_fake_atlas(tmp_path / "server", "--ready-after", "1.5") as fake:
        args = ["--group", fake["group"], "--cluster", fake["cluster"], "--batch", fake["batch"]]
        args += ["--dest", str(tmp_path / "batch"), "--wait", "--poll-interval", "0.3"]
        shown, status = _fetch_on_a_tty(fake, *args)
    assert status == 3, shown
    # Python's start-up may take as long as the first job takes to become ready.
    assert re.search(r"\rwaiting for [1-4] of 5 jobs: IN_PROGRESS; next poll in 0\.3 s", shown)
    # One line redrawn in place (tqdm's carriage returns), not a line per poll.
    assert "fetcher: waiting" not in shown
