"""The transfer faults end to end: through `fetcher fetch`, in-process and as a real process."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fetcher import cli
from fetcher import fetch as fetch_module
from fetcher import retry as retry_module
from fetcher.engine.transfer import Download, Source
from fetcher.names import partial_name, state_name
from fetcher.redact import display_url
from fetcher.retry import RetryPolicy
from fetcher.storage import Destination
from tests.conftest import Atlas, fetch_args, job_entry, loud, run_cli
from tests.pullserver import Fault, Resource, Served
from tests.support import JOBS_PATH, Sleeps, enospc_after, make_archive, sha1

NAME = "Cluster0-shard-0.tar.gz"
KiB = 1024
MiB = 1024 * KiB
PATIENCE = 30.0  # how long to wait for a subprocess to reach a point; never reached when healthy


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    """Make every RetryPolicy the CLI builds (API and pull) sleep through a recorder."""
    recorder = Sleeps()
    recording = functools.partial(RetryPolicy, sleep=recorder)
    # cli.py may import RetryPolicy at the top or inside the command: patch wherever it is read.
    monkeypatch.setattr(retry_module, "RetryPolicy", recording)
    if hasattr(cli, "RetryPolicy"):
        monkeypatch.setattr(cli, "RetryPolicy", recording)
    return recorder


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "out"


def add(
    atlas: Atlas, *faults: Fault, name: str = NAME, **kwargs: Any
) -> tuple[dict[str, Any], Resource]:
    """List a job whose archive (about 1 MiB) is served with `faults`."""
    job = atlas.add(name, make_archive(name.split(".")[0], payload=MiB), **kwargs)
    resource = atlas.pull.resources[job["_path"]]
    resource.faults = list(faults)
    return job, resource


def log(atlas: Atlas, job: dict[str, Any]) -> list[Served]:
    return atlas.pull.requests_for(job["_path"])


def ranges(atlas: Atlas, job: dict[str, Any]) -> list[str | None]:
    return [s.headers.get("range") for s in log(atlas, job)]


def assert_verified(dest: Path, atlas: Atlas, job: dict[str, Any], name: str = NAME) -> None:
    data = atlas.archives[name]
    assert sha1((dest / name).read_bytes()) == sha1(data)
    assert not (dest / partial_name(name)).exists()
    assert not (dest / state_name(name)).exists()
    record = job_entry(dest, job)
    assert record["outcome"] == "verified"
    (file,) = record["files"]
    assert (file["name"], file["size"], file["sha1"]) == (name, len(data), sha1(data))
    assert file["archiveCheck"] == "passed"


def leave_partial(atlas: Atlas, dest: Path, job: dict[str, Any], keep: int) -> None:
    """Run a fetch that loses its connection after `keep` bytes and may not retry."""
    resource = atlas.pull.resources[job["_path"]]
    resource.faults.insert(0, Fault(drop_after=keep))
    result = run_cli(*fetch_args(atlas, dest, "--retries", "0"))
    assert result.exit_code == 1
    assert (dest / partial_name(NAME)).stat().st_size == keep
    assert job_entry(dest, job)["outcome"] == "failed"
    atlas.pull.log.clear()


# -- 1. and 13. drops, and what the output and manifest say about them -------------------------


def test_two_drops_resume_and_are_recorded(
    atlas: Atlas, creds: None, dest: Path, sleeps: Sleeps
) -> None:
    job, resource = add(atlas, Fault(drop_after=300 * KiB), Fault(drop_after=400 * KiB))

    result = run_cli(*loud(fetch_args(atlas, dest)))

    assert result.exit_code == 0, result.stderr
    assert_verified(dest, atlas, job)
    assert ranges(atlas, job) == [None, f"bytes={300 * KiB}-", f"bytes={700 * KiB}-"]
    assert [s.headers.get("if-range") for s in log(atlas, job)] == [None, *[resource.etag] * 2]
    assert atlas.pull.bytes_sent(job["_path"]) == len(atlas.archives[NAME])
    record = job_entry(dest, job)
    assert (record["attempts"], record["resumedBytes"]) == (3, 1000 * KiB)
    assert "(downloaded, 3 attempts, 1000.0 KiB resumed)" in result.stdout
    assert len(sleeps.calls) == 2


# -- 2. and 3. replies that cannot be spliced --------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "expected_ranges"),
    [
        pytest.param(Fault(ignore_range=True), [None, f"bytes={300 * KiB}-"], id="range-ignored"),
        pytest.param(
            Fault(range_start_shift=1000), [None, f"bytes={300 * KiB}-", None], id="wrong-start"
        ),
    ],
)
def test_unspliceable_reply_restarts_from_zero(
    atlas: Atlas,
    creds: None,
    dest: Path,
    sleeps: Sleeps,
    fault: Fault,
    expected_ranges: list[str | None],
) -> None:
    job, _ = add(atlas, Fault(drop_after=300 * KiB), fault)

    result = run_cli(*fetch_args(atlas, dest))

    assert result.exit_code == 0, result.stderr
    assert_verified(dest, atlas, job)
    assert ranges(atlas, job) == expected_ranges
    assert log(atlas, job)[-1].status == 200
    assert log(atlas, job)[-1].sent == len(atlas.archives[NAME])
    assert job_entry(dest, job)["resumedBytes"] == 0


# -- 4. a partial file that is already whole ---------------------------------------------------


def leave_whole_partial(atlas: Atlas, dest: Path, job: dict[str, Any]) -> None:
    """Leave a whole partial file with its state, as a run killed just before the rename would."""
    url = job["delivery"]["url"]
    data = atlas.archives[NAME]
    with Destination(dest) as d, httpx.Client() as client:
        source = Source(job_id=job["id"], url=url, display=display_url(url))
        Download(client, d, NAME, source, expected_sha1=sha1(data), policy=RetryPolicy()).run()
    atlas.pull.log.clear()


def test_whole_partial_file_is_verified_without_a_request(
    atlas: Atlas, creds: None, dest: Path
) -> None:
    job, _ = add(atlas)
    leave_whole_partial(atlas, dest, job)

    result = run_cli(*fetch_args(atlas, dest))

    assert result.exit_code == 0, result.stderr
    assert_verified(dest, atlas, job)
    assert log(atlas, job) == []
    size = len(atlas.archives[NAME])
    assert (job_entry(dest, job)["attempts"], job_entry(dest, job)["resumedBytes"]) == (0, size)


def test_corrupt_whole_partial_file_is_downloaded_again_once_from_zero(
    atlas: Atlas, creds: None, dest: Path
) -> None:
    job, _ = add(atlas)
    leave_whole_partial(atlas, dest, job)
    with (dest / partial_name(NAME)).open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"\xff" * 8)  # same size, other bytes: only the SHA1 can tell

    result = run_cli(*fetch_args(atlas, dest))

    assert result.exit_code == 0, result.stderr
    assert_verified(dest, atlas, job)
    assert "SHA1 mismatch after a resumed transfer; starting over" in result.stderr
    assert ranges(atlas, job) == [None]  # one request, from zero
    assert log(atlas, job)[0].sent == len(atlas.archives[NAME])
    assert (job_entry(dest, job)["attempts"], job_entry(dest, job)["resumedBytes"]) == (1, 0)


# -- 5. the bytes do not match the published SHA1 ----------------------------------------------


def test_mismatch_after_a_resumed_transfer_is_retried_once_from_zero(
    atlas: Atlas, creds: None, dest: Path
) -> None:
    job, _ = add(atlas)
    leave_partial(atlas, dest, job, 300 * KiB)
    with (dest / partial_name(NAME)).open("r+b") as fh:
        fh.seek(5000)
        fh.write(b"stale!")

    result = run_cli(*fetch_args(atlas, dest))

    assert result.exit_code == 0, result.stderr
    assert_verified(dest, atlas, job)
    assert ranges(atlas, job) == [f"bytes={300 * KiB}-", None]
    assert job_entry(dest, job)["attempts"] == 2


@pytest.mark.parametrize("resumed", [False, True], ids=["fresh", "resumed"])
def test_mismatch_of_a_full_transfer_fails_with_exit_4(
    atlas: Atlas, creds: None, dest: Path, resumed: bool
) -> None:
    job, _ = add(atlas, published_sha1="0" * 40)
    if resumed:
        leave_partial(atlas, dest, job, 300 * KiB)

    result = run_cli(*fetch_args(atlas, dest))

    assert result.exit_code == 4
    record = job_entry(dest, job)
    assert (record["outcome"], record["failure"]) == ("failed", "integrity")
    assert "SHA1 mismatch" in record["reason"]
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".fetcher")) == [
        "manifest.json"
    ]
    # A fresh transfer is not repeated; a resumed one is repeated once, from zero.
    expected = [f"bytes={300 * KiB}-", None] if resumed else [None]
    assert ranges(atlas, job) == expected


def test_archive_replaced_between_attempts_is_downloaded_whole_again(
    atlas: Atlas, creds: None, dest: Path, sleeps: Sleeps
) -> None:
    new = make_archive("Cluster0-shard-0", payload=MiB)
    job, old = add(atlas, Fault(drop_after=300 * KiB), published_sha1=sha1(new))

    def publish_new_version() -> None:
        atlas.pull.add(job["_path"], new, last_modified="Thu, 22 Oct 2026 07:28:00 GMT")
        atlas.archives[NAME] = new

    sleeps.during.append(publish_new_version)

    result = run_cli(*fetch_args(atlas, dest))

    assert result.exit_code == 0, result.stderr
    assert_verified(dest, atlas, job)
    assert ranges(atlas, job) == [None, f"bytes={300 * KiB}-"]
    assert [s.headers.get("if-range") for s in log(atlas, job)] == [None, old.etag]
    assert [s.status for s in log(atlas, job)] == [200, 200]
    assert job_entry(dest, job)["resumedBytes"] == 0


# -- 6. a stalled stream -----------------------------------------------------------------------


def test_stall_longer_than_timeout_is_cut_and_resumed(
    atlas: Atlas, creds: None, dest: Path, sleeps: Sleeps
) -> None:
    release = threading.Event()
    job, _ = add(atlas, Fault(stall_after=256 * KiB, hold=release))
    try:
        result = run_cli(*fetch_args(atlas, dest, "--timeout", "0.5"))
    finally:
        release.set()

    assert result.exit_code == 0, result.stderr
    assert_verified(dest, atlas, job)
    assert ranges(atlas, job) == [None, f"bytes={256 * KiB}-"]
    assert [s.sent for s in log(atlas, job)] == [256 * KiB, len(atlas.archives[NAME]) - 256 * KiB]
    assert job_entry(dest, job)["attempts"] == 2


# -- 7. busy servers and refusals --------------------------------------------------------------


def busy() -> list[Fault]:
    return [Fault(status=503), Fault(status=503), Fault(status=429, headers={"Retry-After": "7"})]


def test_busy_api_and_pull_host_are_waited_out(
    atlas: Atlas, creds: None, dest: Path, sleeps: Sleeps
) -> None:
    job, _ = add(atlas, *busy())
    atlas.api_faults = [(f.status or 0, f.headers) for f in busy()]

    result = run_cli(*fetch_args(atlas, dest))

    assert result.exit_code == 0, result.stderr
    assert_verified(dest, atlas, job)
    assert [status for _, status in atlas.answered[:4]] == [503, 503, 429, 200]
    assert [s.status for s in log(atlas, job)] == [503, 503, 429, 200]
    # The API is listed first, then the archive pulled: three pauses each, Retry-After honoured.
    assert len(sleeps.calls) == 6
    for pauses in (sleeps.calls[:3], sleeps.calls[3:]):
        assert pauses[0] < 7
        assert pauses[1] < 7
        assert pauses[2] >= 7


@pytest.mark.parametrize("status", [403, 404, 410])
def test_api_refusal_is_not_retried(
    atlas: Atlas, creds: None, dest: Path, sleeps: Sleeps, status: int
) -> None:
    job, _ = add(atlas)
    atlas.api_faults = [(status, {})]

    result = run_cli(*fetch_args(atlas, dest))

    assert result.exit_code == 1
    assert f"API answered {status}" in result.stderr
    assert atlas.answered == [(JOBS_PATH, status)]
    assert sleeps.calls == []
    assert log(atlas, job) == []


@pytest.mark.parametrize("status", [403, 404, 410])
def test_pull_host_refusal_is_not_retried(
    atlas: Atlas, creds: None, dest: Path, sleeps: Sleeps, status: int
) -> None:
    job, _ = add(atlas, Fault(status=status))

    result = run_cli(*fetch_args(atlas, dest))

    assert result.exit_code == 1
    assert [s.status for s in log(atlas, job)] == [status]
    assert sleeps.calls == []
    record = job_entry(dest, job)
    assert (record["outcome"], record["failure"]) == ("failed", "error")
    assert f"answered {status}" in record["reason"]
    assert not (dest / NAME).exists()


# -- 8. the retry budget -----------------------------------------------------------------------


def test_retry_budget_ends_a_run_of_failures_and_keeps_the_partial_file(
    atlas: Atlas, creds: None, dest: Path, sleeps: Sleeps
) -> None:
    job, _ = add(atlas)
    leave_partial(atlas, dest, job, 300 * KiB)
    resource = atlas.pull.resources[job["_path"]]
    resource.faults = [Fault(status=503), Fault(status=502), Fault(status=503)]

    result = run_cli(*fetch_args(atlas, dest, "--retries", "2"))

    assert result.exit_code == 1
    assert [s.status for s in log(atlas, job)] == [503, 502, 503]
    assert ranges(atlas, job) == [f"bytes={300 * KiB}-"] * 3
    record = job_entry(dest, job)
    assert record["outcome"] == "failed"
    assert "giving up after 3 attempts" in record["reason"]
    assert (dest / partial_name(NAME)).stat().st_size == 300 * KiB
    assert not (dest / NAME).exists()
    atlas.pull.log.clear()

    again = run_cli(*fetch_args(atlas, dest))

    assert again.exit_code == 0, again.stderr
    assert_verified(dest, atlas, job)
    assert ranges(atlas, job) == [f"bytes={300 * KiB}-"]
    assert job_entry(dest, job)["resumedBytes"] == 300 * KiB


def test_failures_with_progress_between_them_are_not_limited(
    atlas: Atlas, creds: None, dest: Path, sleeps: Sleeps
) -> None:
    job, _ = add(atlas, *[Fault(drop_after=150 * KiB) for _ in range(5)])

    result = run_cli(*fetch_args(atlas, dest, "--retries", "1"))

    assert result.exit_code == 0, result.stderr
    assert_verified(dest, atlas, job)
    assert len(log(atlas, job)) == 6
    assert atlas.pull.bytes_sent(job["_path"]) == len(atlas.archives[NAME])
    assert job_entry(dest, job)["attempts"] == 6


# -- 9. and 10. real processes: kill -9, and two fetches into one directory --------------------


def spawn_fetch(
    atlas: Atlas, dest: Path, tmp_path: Path, tag: str, *extra: str
) -> subprocess.Popen[bytes]:
    """Start `fetcher fetch` as a process of its own (credentials come from the environment)."""
    out = (tmp_path / f"{tag}.out").open("wb")
    err = (tmp_path / f"{tag}.err").open("wb")
    with out, err:
        return subprocess.Popen(
            [sys.executable, "-m", "fetcher.cli", *fetch_args(atlas, dest, *extra)],
            stdout=out,
            stderr=err,
            env=dict(os.environ),
            cwd=tmp_path,
        )


def wait_until(
    done: Callable[[], bool], proc: subprocess.Popen[bytes], tmp_path: Path, tag: str
) -> None:
    """Poll until `done()`; fail if the process ends first (or after PATIENCE seconds)."""
    deadline = time.monotonic() + PATIENCE
    while not done():
        if proc.poll() is not None:
            err = (tmp_path / f"{tag}.err").read_text()
            pytest.fail(f"fetch ended early with {proc.returncode}: {err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("fetch never got there")
        time.sleep(0.02)


def part_size(dest: Path) -> int:
    try:
        return (dest / partial_name(NAME)).stat().st_size
    except FileNotFoundError:
        return 0


def edit_state(dest: Path, **changes: Any) -> None:
    path = dest / state_name(NAME)
    state = json.loads(path.read_text())
    state.update(changes)
    path.write_text(json.dumps(state))


@pytest.mark.slow  # a real process
@pytest.mark.parametrize("tamper", ["none", "other-job", "other-size"])
def test_kill_9_mid_transfer_then_rerun_resumes(
    atlas: Atlas, creds: None, dest: Path, tmp_path: Path, tamper: str
) -> None:
    held = threading.Event()
    first = 512 * KiB
    job, resource = add(atlas, Fault(stall_after=first, hold=held))
    size = len(atlas.archives[NAME])
    proc = spawn_fetch(atlas, dest, tmp_path, "killed")
    try:
        wait_until(lambda: part_size(dest) == first, proc, tmp_path, "killed")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    finally:
        held.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (dest / NAME).exists()
    assert (dest / state_name(NAME)).exists()
    if tamper == "other-job":
        edit_state(dest, jobId="5f0c0ffee0000000000000ff")
    elif tamper == "other-size":
        edit_state(dest, size=size + 4096)

    result = run_cli(*fetch_args(atlas, dest))

    assert result.exit_code == 0, result.stderr
    assert_verified(dest, atlas, job)
    sent = atlas.pull.bytes_sent(job["_path"])
    if tamper == "none":
        assert ranges(atlas, job) == [None, f"bytes={first}-"]
        assert log(atlas, job)[1].headers.get("if-range") == resource.etag
        assert sent < 1.1 * size
        assert sent == size
        assert job_entry(dest, job)["resumedBytes"] == first
    else:
        # The state does not describe this archive: start over, splice nothing.
        assert ranges(atlas, job)[-1] is None
        assert log(atlas, job)[-1].sent == size
        assert job_entry(dest, job)["resumedBytes"] == 0


@pytest.mark.slow  # a real process
def test_second_fetch_into_the_same_directory_is_refused_at_once(
    atlas: Atlas, creds: None, dest: Path, tmp_path: Path
) -> None:
    held = threading.Event()
    job, _ = add(atlas, Fault(stall_after=256 * KiB, hold=held, continue_after_stall=True))
    proc = spawn_fetch(atlas, dest, tmp_path, "first")
    try:
        wait_until(lambda: part_size(dest) == 256 * KiB, proc, tmp_path, "first")
        polls = len(atlas.list_requests)

        second = run_cli(*fetch_args(atlas, dest))

        assert second.exit_code == 1
        assert "another fetch" in second.stderr
        assert len(atlas.list_requests) == polls  # refused before asking the API anything
        assert part_size(dest) == 256 * KiB
    finally:
        held.set()
    assert proc.wait(timeout=PATIENCE) == 0, (tmp_path / "first.err").read_text()
    assert_verified(dest, atlas, job)
    assert [s.sent for s in log(atlas, job)] == [len(atlas.archives[NAME])]


@pytest.mark.slow  # a real process
@pytest.mark.parametrize("stalled", [False, True], ids=["flowing", "stalled"])
def test_ctrl_c_stops_the_transfers_at_once_and_a_rerun_resumes(
    atlas: Atlas, creds: None, dest: Path, tmp_path: Path, stalled: bool
) -> None:
    held = threading.Event()
    first = 256 * KiB
    # Flowing: the stream carries on once released, after the interrupt. Stalled: it never
    # does, and only the read timeout (1 s here) frees the transfer thread.
    job, _ = add(atlas, Fault(stall_after=first, hold=held, continue_after_stall=not stalled))
    proc = spawn_fetch(atlas, dest, tmp_path, "int", "--timeout", "1")
    err = tmp_path / "int.err"
    try:
        wait_until(lambda: part_size(dest) == first, proc, tmp_path, "int")
        os.kill(proc.pid, signal.SIGINT)
        wait_until(lambda: b"interrupted" in err.read_bytes(), proc, tmp_path, "int")
        held.set()
        assert proc.wait(timeout=PATIENCE) == 130
    finally:
        held.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "run the same command again to resume" in err.read_text()
    # Nothing downloaded after the interrupt but what was already on the wire; no new request.
    assert ranges(atlas, job) == [None]
    assert not (dest / NAME).exists()
    kept = part_size(dest)
    assert first <= kept < len(atlas.archives[NAME])
    atlas.pull.log.clear()

    result = run_cli(*fetch_args(atlas, dest))

    assert result.exit_code == 0, result.stderr
    assert_verified(dest, atlas, job)
    assert ranges(atlas, job) == [f"bytes={kept}-"]


@pytest.mark.slow  # a real process
def test_ctrl_c_cuts_a_retry_after_pause_short(
    atlas: Atlas, creds: None, dest: Path, tmp_path: Path
) -> None:
    job, _ = add(atlas, Fault(status=429, headers={"Retry-After": "600"}))
    proc = spawn_fetch(atlas, dest, tmp_path, "int")
    try:
        wait_until(
            lambda: bool(log(atlas, job)) and log(atlas, job)[0].status == 429,
            proc,
            tmp_path,
            "int",
        )
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=PATIENCE) == 130  # not after the ten minutes asked for
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [s.status for s in log(atlas, job)] == [429]
    assert not (dest / NAME).exists()


# -- 11. waiting for restores to finish --------------------------------------------------------


def test_wait_downloads_each_archive_as_soon_as_it_is_ready(
    atlas: Atlas, creds: None, dest: Path
) -> None:
    early, _ = add(atlas, name="Cluster0-shard-0.tar.gz")
    late, _ = add(atlas, name="Cluster0-shard-1.tar.gz")
    never, _ = add(atlas, name="Cluster0-config.tar.gz")
    for job in (early, late, never):
        atlas.set_state(job, "IN_PROGRESS", "NOT_STARTED")
    early_pulled = threading.Event()
    polls_at_pull: dict[str, int] = {}

    def on_request(served: Served) -> None:
        polls_at_pull[served.path] = atlas.polls
        if served.path == early["_path"]:
            early_pulled.set()

    waited: list[bool] = []

    def on_list(poll: int) -> None:
        if poll == 2:
            atlas.set_state(early)
        if poll == 5:
            # A fetch that waited for the whole batch would never pull `early` here.
            waited.append(early_pulled.wait(PATIENCE))
            atlas.set_state(late)

    atlas.pull.on_request = on_request
    atlas.on_list = on_list

    result = run_cli(
        *fetch_args(atlas, dest, "--wait", "--poll-interval", "0.05", "--wait-timeout", "2")
    )

    assert result.exit_code == 3, result.stderr
    assert waited == [True]
    assert_verified(dest, atlas, early, "Cluster0-shard-0.tar.gz")
    assert_verified(dest, atlas, late, "Cluster0-shard-1.tar.gz")
    assert 2 <= polls_at_pull[early["_path"]] <= 5
    assert polls_at_pull[late["_path"]] >= 5
    assert [len(log(atlas, j)) for j in (early, late, never)] == [1, 1, 0]
    record = job_entry(dest, never)
    assert record["outcome"] == "skipped"
    assert "not ready after waiting 2 s" in record["reason"]
    assert atlas.polls > 5


def test_without_wait_an_unfinished_job_is_skipped(atlas: Atlas, creds: None, dest: Path) -> None:
    ready, _ = add(atlas, name="Cluster0-shard-0.tar.gz")
    unfinished, _ = add(atlas, name="Cluster0-shard-1.tar.gz")
    atlas.set_state(unfinished, "IN_PROGRESS", "NOT_STARTED")

    result = run_cli(*fetch_args(atlas, dest))

    assert result.exit_code == 3
    assert_verified(dest, atlas, ready)
    record = job_entry(dest, unfinished)
    assert record["outcome"] == "skipped"
    assert "not ready" in record["reason"]
    assert log(atlas, unfinished) == []
    assert atlas.polls == 1


# -- 12. disk space ----------------------------------------------------------------------------


def test_short_free_space_refuses_the_transfer(
    atlas: Atlas, creds: None, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, _ = add(atlas)
    monkeypatch.setattr(Destination, "free_bytes", lambda self: 2 * MiB)

    result = run_cli(*loud(fetch_args(atlas, dest)))

    assert result.exit_code == 1
    assert "not enough space in" in result.stdout
    assert "MiB free" in result.stdout
    assert len(log(atlas, job)) == 1
    assert part_size(dest) == 0
    assert not (dest / NAME).exists()
    assert job_entry(dest, job)["outcome"] == "failed"


def test_disk_full_mid_transfer_keeps_the_partial_file_and_a_rerun_resumes(
    atlas: Atlas, creds: None, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, _ = add(atlas)
    limit = 400 * KiB + 7
    with monkeypatch.context() as patch:
        patch.setattr(
            fetch_module, "Download", functools.partial(Download, write=enospc_after(limit))
        )
        full = run_cli(*loud(fetch_args(atlas, dest)))

    assert full.exit_code == 1
    assert "no space left on device" in full.stdout
    assert "run fetch again to resume" in full.stdout
    assert part_size(dest) == limit
    assert not (dest / NAME).exists()
    assert "no space left" in job_entry(dest, job)["reason"]
    atlas.pull.log.clear()

    again = run_cli(*fetch_args(atlas, dest))

    assert again.exit_code == 0, again.stderr
    assert_verified(dest, atlas, job)
    assert ranges(atlas, job) == [f"bytes={limit}-"]
    assert atlas.pull.bytes_sent(job["_path"]) == len(atlas.archives[NAME]) - limit


# -- 14. encodings -----------------------------------------------------------------------------


def test_gzip_encoded_archive_is_stored_as_sent(atlas: Atlas, creds: None, dest: Path) -> None:
    job, resource = add(atlas)
    resource.content_encoding = "gzip"

    result = run_cli(*fetch_args(atlas, dest))

    assert result.exit_code == 0, result.stderr
    assert_verified(dest, atlas, job)
    assert [s.headers.get("accept-encoding") for s in log(atlas, job)] == ["identity"]
