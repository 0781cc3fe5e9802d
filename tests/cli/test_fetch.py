"""`fetcher fetch` (fetcher.cli): a batch through the command line, in-process and as a process."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trustme
from click.testing import Result
from pytest_httpserver import HTTPServer

from fetcher import manifest as mf
from fetcher.cli import Runtime
from fetcher.config import Settings
from fetcher.engine.transfer import Download, Source
from fetcher.errors import EXIT_ERROR, EXIT_INCOMPLETE, EXIT_INTEGRITY, EXIT_OK
from fetcher.names import MANIFEST_NAME, partial_name, state_name
from fetcher.redact import display_url
from fetcher.retry import RetryPolicy
from fetcher.service.http import tls_context
from fetcher.storage import LOCK_NAME, Destination
from tests.atlasv2 import CLIENT_ID, CLIENT_SECRET, CLUSTER_V2, AtlasV2, V2Job
from tests.conftest import (
    PATIENCE,
    Atlas,
    add_batch,
    add_host_batch,
    add_job,
    add_ops_manager_job,
    add_shards,
    api_args,
    cli_runtime,
    fetch_args,
    fetch_job,
    file_entry,
    job_entry,
    kill_9_when,
    loud,
    manifest_doc,
    plant_secrets,
    run_cli,
    server_context,
    spawn_fetch,
    v2_args,
    wait_until,
)
from tests.pullserver import Fault, PullServer, Resource, Served
from tests.support import (
    BATCH,
    BEARER,
    CLUSTER,
    CONFIG,
    GROUP,
    HOST_SHARDS,
    JOBS_PATH,
    PRIVATE_KEY,
    PUBLIC_KEY,
    SHARDS,
    KiB,
    Sleeps,
    enospc_after,
    file_mode,
    job_json,
    list_args,
    make_archive,
    new_id,
    one_line_error,
    only_line,
    restore_info,
    run_without_privilege,
    sha1,
    with_garbage,
    with_member,
    write_netrc,
)

# == a batch end to end, in-process ================================================================


def _manifest(dest: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((dest / "manifest.json").read_text())
    return doc


def test_fetch_a_sharded_batch(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    jobs = add_shards(atlas)
    atlas.page_size = 2  # two pages of jobs
    dest = tmp_path / "out"
    args = fetch_args(atlas, dest)
    args.remove("--quiet")
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("verified ") == 4
    assert "4 verified; manifest:" in result.stdout
    visible = sorted(p.name for p in dest.iterdir() if not p.name.startswith("."))
    assert visible == sorted([*atlas.archives, "manifest.json"])
    for name, data in atlas.archives.items():
        assert (dest / name).read_bytes() == data
    doc = _manifest(dest)
    assert doc["complete"] is True and doc["batchId"] == BATCH and doc["groupId"] == GROUP
    assert doc["cluster"] == CLUSTER
    by_id = {j["id"]: j for j in doc["jobs"]}  # type: ignore[attr-defined]
    for job in jobs:
        entry = by_id[job["id"]]
        assert entry["outcome"] == "verified"
        assert entry["snapshotId"] and entry["created"] and entry["clusterId"]
        (file,) = entry["files"]
        assert file["sha1"] == sha1(atlas.archives[file["name"]])
        assert file["size"] == len(atlas.archives[file["name"]])
    # Each archive was asked for once, whole, without credentials of any kind.
    for job in jobs:
        (request,) = atlas.pull.requests_for(str(job["_path"]))
        assert "authorization" not in request.headers and "range" not in request.headers
        assert request.headers["accept-encoding"] == "identity"


def test_default_dest_is_the_batch_id(
    atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    atlas.add("a.tar.gz")
    monkeypatch.chdir(tmp_path)
    args = fetch_args(atlas, tmp_path)
    i = args.index("--dest")
    del args[i : i + 2]
    assert run_cli(*args).exit_code == 0
    assert (tmp_path / BATCH / "a.tar.gz").is_file()


def test_one_replica_set_job(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    job = atlas.add("rs0.tar.gz", batch_id=None)
    args = api_args(atlas, "fetch", "--job", str(job["id"]), "--dest", str(tmp_path / "rs"))
    assert run_cli(*args).exit_code == 0
    doc = _manifest(tmp_path / "rs")
    assert doc["batchId"] is None and doc["complete"] is True


def test_unready_and_expired_jobs_are_skipped_with_reasons(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    atlas.add("ok.tar.gz")
    expired = atlas.add("expired.tar.gz", delivery_status="EXPIRED")
    exhausted = atlas.add("exhausted.tar.gz", delivery_status="MAX_DOWNLOADS_EXCEEDED")
    from datetime import timedelta

    late = atlas.add("late.tar.gz", expires_in=timedelta(minutes=-1))
    running = atlas.add("running.tar.gz", status="IN_PROGRESS", delivery_status="NOT_STARTED")
    result = run_cli(*fetch_args(atlas, tmp_path / "d", "--json"))
    assert result.exit_code == 3
    doc = json.loads(result.stdout)
    reasons = {j["id"]: (j["outcome"], j["reason"]) for j in doc["jobs"]}
    assert reasons[expired["id"]] == ("skipped", "delivery EXPIRED")
    assert reasons[exhausted["id"]] == ("skipped", "delivery MAX_DOWNLOADS_EXCEEDED")
    assert reasons[late["id"]][1].startswith("expired at ")
    assert reasons[running["id"]][1].startswith("not ready yet")
    assert doc["complete"] is False
    for job in (expired, exhausted, late, running):
        assert atlas.pull.requests_for(str(job["_path"])) == []  # nothing asked of a dead link
    assert not (tmp_path / "d" / "expired.tar.gz").exists()


def test_sha1_mismatch_fails_with_exit_4_and_no_final_file(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    atlas.add("good.tar.gz")
    bad = atlas.add("bad.tar.gz", published_sha1="0" * 40)
    result = run_cli(*fetch_args(atlas, tmp_path))
    assert result.exit_code == 4
    assert not (tmp_path / "bad.tar.gz").exists()
    assert not (tmp_path / partial_name("bad.tar.gz")).exists()
    entry = next(j for j in _manifest(tmp_path)["jobs"] if j["id"] == bad["id"])  # type: ignore[attr-defined]
    assert entry["outcome"] == "failed" and entry["failure"] == "integrity"
    assert "SHA1 mismatch" in entry["reason"]
    # What the check found in bytes that were deleted is not on record.
    assert "archiveCheck" not in entry["files"][0] and "sha1" not in entry["files"][0]
    assert (tmp_path / "good.tar.gz").exists()


def test_late_hashes_are_read_again_after_the_download(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("late.tar.gz", with_hashes=False)
    digest = sha1(atlas.archives["late.tar.gz"])
    atlas.hashes_on_job_read[str(job["id"])] = [
        {"fileName": "late.tar.gz", "hash": digest, "typeName": "SHA1"}
    ]
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    assert (tmp_path / "late.tar.gz").exists()
    assert _manifest(tmp_path)["jobs"][0]["files"][0]["sha1"] == digest  # type: ignore[index]


def test_late_hash_that_does_not_match_is_an_integrity_failure(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("late.tar.gz", with_hashes=False)
    atlas.hashes_on_job_read[str(job["id"])] = [
        {"fileName": "late.tar.gz", "hash": "1" * 40, "typeName": "SHA1"}
    ]
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 4
    assert not (tmp_path / "late.tar.gz").exists()


def test_no_hash_at_all_is_unverified_and_kept_partial(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("nohash.tar.gz", with_hashes=False)
    result = run_cli(*fetch_args(atlas, tmp_path))
    assert result.exit_code == 3
    entry = _manifest(tmp_path)["jobs"][0]  # type: ignore[index]
    assert entry["outcome"] == "unverified" and "no SHA1" in entry["reason"]
    assert not (tmp_path / "nohash.tar.gz").exists()
    data = atlas.archives["nohash.tar.gz"]
    assert (tmp_path / partial_name("nohash.tar.gz")).read_bytes() == data
    # Later the API publishes the hash, and the link has expired: the kept bytes verify offline.
    job["hashes"] = [{"fileName": "nohash.tar.gz", "hash": sha1(data), "typeName": "SHA1"}]
    job["delivery"]["statusName"] = "EXPIRED"
    sent = atlas.pull.bytes_sent(str(job["_path"]))
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    assert (tmp_path / "nohash.tar.gz").read_bytes() == data
    assert atlas.pull.bytes_sent(str(job["_path"])) == sent


def test_ops_manager_bearer_goes_to_its_url_only(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    plain = atlas.add("plain.tar.gz", make_archive("Cluster0-config"))  # the config server
    om = atlas.add("om.tar.gz")
    delivery = om["delivery"]
    delivery["urlV2"] = delivery.pop("url")
    delivery.update(
        authHeader="Authorization", authBearer="Bearer", authValue="om-bearer-secret-42"
    )
    result = run_cli(*fetch_args(atlas, tmp_path, "--json"))
    assert result.exit_code == 0
    (req,) = atlas.pull.requests_for(str(om["_path"]))
    assert req.headers["authorization"] == "Bearer om-bearer-secret-42"
    (other,) = atlas.pull.requests_for(str(plain["_path"]))
    assert "authorization" not in other.headers
    assert "om-bearer-secret-42" not in result.stdout + result.stderr
    assert "om-bearer-secret-42" not in (tmp_path / "manifest.json").read_text()


def test_rerun_downloads_nothing_verified_even_after_expiry(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    jobs = add_shards(atlas, 2)
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    before = len(atlas.pull.log)
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    for job in jobs:
        job["delivery"]["statusName"] = "EXPIRED"  # type: ignore[index]
    result = run_cli(*fetch_args(atlas, tmp_path, "--json"))
    assert result.exit_code == 0
    assert len(atlas.pull.log) == before  # not one request to the pull host
    doc = json.loads(result.stdout)
    assert {j["outcome"] for j in doc["jobs"]} == {"verified"}
    assert {j["reason"] for j in doc["jobs"]} == {"already verified on disk"}


def test_an_archive_changed_on_disk_is_fetched_again(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("a.tar.gz")
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    data = atlas.archives["a.tar.gz"]
    (tmp_path / "a.tar.gz").write_bytes(b"X" + data[1:])
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    assert (tmp_path / "a.tar.gz").read_bytes() == data
    assert len(atlas.pull.requests_for(str(job["_path"]))) == 2


def test_empty_batch_is_an_error(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    result = run_cli(*fetch_args(atlas, tmp_path))
    assert result.exit_code == 1
    assert "no restore jobs found for batch" in only_line(result.stderr)


def test_a_failed_fetch_leaves_no_empty_directory_behind(
    atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONGODB_ATLAS_PRIVATE_API_KEY", "not-the-key")
    assert run_cli(*fetch_args(atlas, tmp_path / "new")).exit_code == 1
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    assert run_cli(*fetch_args(atlas, tmp_path / "old")).exit_code == 1
    assert (tmp_path / "old").is_dir()  # a directory the user made stays


def test_quiet_still_says_why_a_job_failed(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    atlas.add("ok.tar.gz")
    atlas.add("bad.tar.gz", published_sha1="0" * 40)
    result = run_cli(*fetch_args(atlas, tmp_path))  # fetch_args passes --quiet
    assert result.exit_code == 4
    assert result.stdout == ""
    assert "bad.tar.gz" in result.stderr and "SHA1 mismatch" in result.stderr
    assert "ok.tar.gz" not in result.stderr


def test_a_verified_archive_corrupted_after_its_link_expired_is_an_integrity_failure(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("a.tar.gz")
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    data = bytearray((tmp_path / "a.tar.gz").read_bytes())
    data[100] ^= 0xFF
    (tmp_path / "a.tar.gz").write_bytes(bytes(data))
    job["delivery"]["statusName"] = "EXPIRED"
    result = run_cli(*fetch_args(atlas, tmp_path, "--json"))
    assert result.exit_code == 4
    (entry,) = json.loads(result.stdout)["jobs"]
    assert entry["outcome"] == "failed" and entry["failure"] == "integrity"
    assert "no longer matches its SHA1" in entry["reason"]
    assert entry["files"][0]["sha1"] == sha1(atlas.archives["a.tar.gz"])  # what it should be
    checked = run_cli("verify", str(tmp_path))
    assert checked.exit_code == 4 and "changed       a.tar.gz" in checked.stdout


def test_exit_code_is_this_runs_and_the_manifest_keeps_earlier_jobs(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    bad = atlas.add("bad.tar.gz", batch_id=None, published_sha1="0" * 40)
    good = atlas.add("good.tar.gz", batch_id=None)
    base = ["fetch", "--base-url", atlas.base_url, "--group", GROUP, "--cluster", CLUSTER]
    base += ["--dest", str(tmp_path), "--quiet", "--job"]
    assert run_cli(*base, str(bad["id"])).exit_code == 4
    assert run_cli(*base, str(good["id"])).exit_code == 0
    outcomes = {j["id"]: j["outcome"] for j in _manifest(tmp_path)["jobs"]}  # type: ignore[attr-defined]
    assert outcomes == {bad["id"]: "failed", good["id"]: "verified"}


def test_a_directory_of_another_batch_is_refused(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    job = atlas.add("a.tar.gz")
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    before = (tmp_path / "manifest.json").read_text()
    args = ["fetch", "--base-url", atlas.base_url, "--group", GROUP, "--cluster", CLUSTER]
    result = run_cli(*args, "--job", str(job["id"]), "--dest", str(tmp_path))
    assert result.exit_code == 1
    assert f"holds the manifest of batch {BATCH}" in only_line(result.stderr)
    assert (tmp_path / "manifest.json").read_text() == before


def test_json_output_is_the_manifest_as_written(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    atlas.add("a.tar.gz")
    result = run_cli(*fetch_args(atlas, tmp_path, "--json"))
    assert json.loads(result.stdout) == _manifest(tmp_path)
    assert _manifest(tmp_path)["updated"]


def test_an_unexpected_error_fails_one_job_not_the_batch(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    atlas.add("good.tar.gz")
    job = atlas.add("odd.tar.gz")
    # httpx accepts this URL but its IDNA encoder raises when connecting.
    job["delivery"]["url"] = "https://xn--a.com/backup/restore/v2/pull/x/TOKEN123/odd.tar.gz"
    result = run_cli(*fetch_args(atlas, tmp_path))
    assert result.exit_code == 1
    line = only_line(result.stderr)
    assert line.startswith("failed") and "odd.tar.gz" in line and "TOKEN123" not in line
    assert (tmp_path / "good.tar.gz").exists()
    outcomes = {j["id"]: j["outcome"] for j in _manifest(tmp_path)["jobs"]}  # type: ignore[attr-defined]
    assert outcomes[job["id"]] == "failed"


# == transfer faults end to end, in-process and as a real process ==================================


NAME = "Cluster0-shard-0.tar.gz"


MiB = 1024 * KiB


@pytest.fixture
def sleeps() -> Iterator[Sleeps]:
    """Make every pause the CLI takes (API and pull retries, polls) go through a recorder."""
    recorder = Sleeps()
    with cli_runtime(Runtime(sleep=recorder)):
        yield recorder


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
    record = file_entry(dest, job)
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
    assert file_entry(dest, job)["resumedBytes"] == 0


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
    assert (file_entry(dest, job)["attempts"], file_entry(dest, job)["resumedBytes"]) == (0, size)


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
    assert (file_entry(dest, job)["attempts"], file_entry(dest, job)["resumedBytes"]) == (1, 0)


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
    assert file_entry(dest, job)["attempts"] == 2


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
    assert file_entry(dest, job)["resumedBytes"] == 0


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
    assert file_entry(dest, job)["attempts"] == 2


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
    assert file_entry(dest, job)["resumedBytes"] == 300 * KiB


def test_failures_with_progress_between_them_are_not_limited(
    atlas: Atlas, creds: None, dest: Path, sleeps: Sleeps
) -> None:
    job, _ = add(atlas, *[Fault(drop_after=150 * KiB) for _ in range(5)])

    result = run_cli(*fetch_args(atlas, dest, "--retries", "1"))

    assert result.exit_code == 0, result.stderr
    assert_verified(dest, atlas, job)
    assert len(log(atlas, job)) == 6
    assert atlas.pull.bytes_sent(job["_path"]) == len(atlas.archives[NAME])
    assert file_entry(dest, job)["attempts"] == 6


# -- 9. and 10. real processes: kill -9, and two fetches into one directory --------------------


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
    kill_9_when(lambda: part_size(dest) == first, proc, tmp_path, "killed", held)
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
        assert file_entry(dest, job)["resumedBytes"] == first
    else:
        # The state does not describe this archive: start over, splice nothing.
        assert ranges(atlas, job)[-1] is None
        assert log(atlas, job)[-1].sent == size
        assert file_entry(dest, job)["resumedBytes"] == 0


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
    full = run_cli(*loud(fetch_args(atlas, dest)), runtime=Runtime(write=enospc_after(limit)))

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


# == while a restore runs: readiness first, --wait, maxDownloads, ids, the journal =================


def _late_hashes(atlas: Atlas, job: dict[str, Any], name: str) -> None:
    """Publish the job's SHA1 only when it is read on its own, after the download."""
    digest = sha1(atlas.archives[name])
    atlas.hashes_on_job_read[job["id"]] = [{"fileName": name, "hash": digest, "typeName": "SHA1"}]


# -- readiness before names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "delivery", "extra", "reason"),
    [
        ("IN_PROGRESS", "NOT_STARTED", {}, "not ready yet (job IN_PROGRESS, delivery NOT_STARTED)"),
        ("IN_PROGRESS", "IN_PROGRESS", {}, "not ready yet (job IN_PROGRESS, delivery IN_PROGRESS)"),
        ("FINISHED", "IN_PROGRESS", {}, "not ready yet (job FINISHED, delivery IN_PROGRESS)"),
        ("FINISHED", "READY", {"link": False}, "delivery READY but no link yet"),
        ("BROKEN", "FAILED", {}, "job BROKEN"),
        ("BROKEN", "NOT_STARTED", {}, "job BROKEN"),
        ("KILLED", "INTERRUPTED", {}, "job KILLED"),
        ("FINISHED", "FAILED", {}, "delivery FAILED"),
        ("FINISHED", "INTERRUPTED", {}, "delivery INTERRUPTED"),
    ],
)
def test_a_job_without_a_link_is_skipped_with_its_reason_never_failed(
    atlas: Atlas,
    creds: None,
    tmp_path: Path,
    status: str,
    delivery: str,
    extra: dict[str, Any],
    reason: str,
) -> None:
    ready = atlas.add("Cluster0-shard-0.tar.gz")
    odd = atlas.add("Cluster0-shard-1.tar.gz", status=status, delivery_status=delivery, **extra)
    # The document is the one the API lists for a job in that state: nothing to name a file by.
    assert "url" not in odd["delivery"] and "expires" not in odd["delivery"]
    assert odd["hashes"] == []

    result = run_cli(*fetch_args(atlas, tmp_path, "--json"))

    assert result.exit_code == 3, result.stderr
    entry = job_entry(tmp_path, odd)
    assert (entry["outcome"], entry["reason"]) == ("skipped", reason)
    assert "failure" not in entry and "fileName" not in entry
    assert entry["status"] == status and entry["deliveryStatus"] == delivery
    assert job_entry(tmp_path, ready)["outcome"] == "verified"
    assert atlas.pull.requests_for(odd["_path"]) == []


# -- --wait from the moment a restore is triggered ---------------------------------------------


def test_wait_from_the_start_of_a_restore_downloads_each_archive_when_ready(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    names = [f"Cluster0-shard-{i}.tar.gz" for i in range(3)] + ["Cluster0-config.tar.gz"]
    jobs = [
        atlas.add(n, status="IN_PROGRESS", delivery_status="NOT_STARTED", with_hashes=False)
        for n in names
    ]
    for job, name in zip(jobs, names, strict=True):
        _late_hashes(atlas, job, name)
    pulled_at: dict[str, int] = {}

    def on_request(served: Served) -> None:
        pulled_at.setdefault(served.path, atlas.polls)

    atlas.pull.on_request = on_request

    def on_list(poll: int) -> None:
        if poll == 2:
            for job in jobs:
                atlas.set_state(job, "IN_PROGRESS", "IN_PROGRESS")
        if poll == 3:
            atlas.set_state(jobs[0])
        if poll == 4:
            atlas.set_state(jobs[1])
            atlas.set_state(jobs[2])
            atlas.set_state(jobs[3], "FINISHED", "READY", link=False)
        if poll == 5:
            atlas.set_state(jobs[3])

    atlas.on_list = on_list
    result = run_cli(
        *loud(
            fetch_args(atlas, tmp_path, "--wait", "--poll-interval", "0.01", "--wait-timeout", "20")
        )
    )

    assert result.exit_code == 0, result.stderr
    doc = manifest_doc(tmp_path)
    assert doc["complete"] is True
    for job, name in zip(jobs, names, strict=True):
        entry = job_entry(tmp_path, job)
        assert entry["outcome"] == "verified"
        assert entry["files"][0]["sha1"] == sha1(atlas.archives[name])
        assert (tmp_path / name).read_bytes() == atlas.archives[name]
        assert len(atlas.pull.requests_for(job["_path"])) == 1  # each pulled once
    # Each as soon as its job was ready, not when the whole batch was.
    assert [pulled_at[j["_path"]] for j in jobs] == [3, 4, 4, 5]
    assert atlas.polls == 5
    # Off a terminal: one line per poll where something changed, none for the others.
    waits = [line for line in result.stderr.splitlines() if "waiting for" in line]
    assert waits == [
        "fetcher: waiting for 4 of 4 jobs: IN_PROGRESS; next poll in 0.01 s",
        "fetcher: waiting for 3 of 4 jobs: IN_PROGRESS; next poll in 0.01 s",
        "fetcher: waiting for 1 of 4 jobs: no link yet; next poll in 0.01 s",
    ]


def test_wait_gives_up_on_a_job_that_breaks(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    job = atlas.add("Cluster0-shard-0.tar.gz", status="IN_PROGRESS", delivery_status="NOT_STARTED")
    atlas.on_list = lambda poll: atlas.set_state(job, "BROKEN", "FAILED") if poll == 2 else None

    result = run_cli(
        *fetch_args(atlas, tmp_path, "--wait", "--poll-interval", "0.01", "--wait-timeout", "20")
    )

    assert result.exit_code == 3, result.stderr
    assert (job_entry(tmp_path, job)["outcome"], job_entry(tmp_path, job)["reason"]) == (
        "skipped",
        "job BROKEN",
    )
    assert atlas.polls == 2  # no more polls for a job that can never be downloaded


def test_wait_quiet_prints_no_wait_lines(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    job = atlas.add("Cluster0-shard-0.tar.gz", status="IN_PROGRESS", delivery_status="NOT_STARTED")
    atlas.on_list = lambda poll: atlas.set_state(job) if poll == 3 else None
    result = run_cli(
        *fetch_args(atlas, tmp_path, "--wait", "--poll-interval", "0.01", "--wait-timeout", "20")
    )
    assert result.exit_code == 0, result.stderr
    assert "waiting" not in result.stderr + result.stdout


# -- MongoDB's own example response, verbatim ------------------------------------------------


def test_the_documented_example_is_skipped_whole_without_a_download(
    documented: dict[str, Any], creds: None, tmp_path: Path
) -> None:
    # Were any of the links requested, the job would fail (no network here) and exit 1.
    result = run_cli("fetch", *documented["args"], "--dest", str(tmp_path), "--quiet")
    assert result.exit_code == 3, result.stdout + result.stderr
    doc = manifest_doc(tmp_path)
    assert doc["complete"] is False
    for job in documented["doc"]["results"]:
        entry = job_entry(tmp_path, job)
        assert (entry["outcome"], entry["reason"]) == ("skipped", "delivery EXPIRED")
        (archive,) = entry["files"]
        assert archive["name"] == job["hashes"][0]["fileName"]
        assert (archive["outcome"], archive["reason"]) == ("skipped", "delivery EXPIRED")
        assert "sha1" not in archive  # nothing of it is in DIR
        assert entry["maxDownloads"] == 2147483647
        assert entry["snapshotId"] == job["snapshotId"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "manifest.json"
    ]


# -- maxDownloads -------------------------------------------------------------------------------


def test_the_manifest_records_max_downloads(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    job = atlas.add("a.tar.gz", max_downloads=5)
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    assert job_entry(tmp_path, job)["maxDownloads"] == 5


@pytest.mark.parametrize("status", [403, 410])
def test_a_refusal_once_the_download_limit_is_spent_says_so(
    atlas: Atlas, creds: None, tmp_path: Path, status: int
) -> None:
    job = atlas.add("a.tar.gz", max_downloads=2)
    resource = atlas.pull.resources[job["_path"]]
    resource.faults = [Fault(drop_after=1000), Fault(status=status)]

    result = run_cli(*fetch_args(atlas, tmp_path))

    assert result.exit_code == 1
    entry = job_entry(tmp_path, job)
    assert entry["outcome"] == "failed"
    assert f"answered {status}" in entry["reason"]
    assert "after 2 requests to a link that allows 2 downloads" in entry["reason"]
    assert "download limit is probably used up" in entry["reason"]
    assert "a new restore job is needed" in entry["reason"]
    assert (tmp_path / partial_name("a.tar.gz")).stat().st_size == 1000  # kept


def test_the_request_count_survives_between_runs(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    job = atlas.add("a.tar.gz", max_downloads=2)
    resource = atlas.pull.resources[job["_path"]]
    resource.faults = [Fault(status=410), Fault(status=410)]

    first = run_cli(*fetch_args(atlas, tmp_path))
    assert first.exit_code == 1
    reason = job_entry(tmp_path, job)["reason"]
    assert "answered 410" in reason and "limit" not in reason  # 1 of 2: something else
    assert json.loads((tmp_path / state_name("a.tar.gz")).read_text())["requests"] == 1

    second = run_cli(*fetch_args(atlas, tmp_path))
    assert second.exit_code == 1
    assert "after 2 requests to a link that allows 2" in job_entry(tmp_path, job)["reason"]


# -- the journal: per-archive cost that does not grow with the batch ---------------------------


def test_a_batch_writes_manifest_json_once(
    atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(11):
        atlas.add(f"Cluster0-shard-{i}.tar.gz")
    atlas.add("Cluster0-config.tar.gz")
    writes: list[int] = []
    real = mf.write

    def counting(dest: Destination, manifest: mf.Manifest) -> mf.Manifest:
        writes.append(len(manifest.jobs))
        return real(dest, manifest)

    monkeypatch.setattr(mf, "write", counting)

    assert run_cli(*fetch_args(atlas, tmp_path, "--parallel", "4")).exit_code == 0

    assert writes == [12]  # once, whole, at the end: not once per archive
    assert not (tmp_path / mf.JOURNAL_NAME).exists()
    assert len(manifest_doc(tmp_path)["jobs"]) == 12


@pytest.mark.slow  # a real process, killed
def test_a_killed_run_still_records_every_archive_it_verified(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    done = [atlas.add(f"Cluster0-shard-{i}.tar.gz") for i in range(3)]
    stuck = atlas.add("Cluster0-config.tar.gz")
    hold = threading.Event()
    atlas.pull.resources[stuck["_path"]].faults = [Fault(stall_after=4096, hold=hold)]
    journal = dest / mf.JOURNAL_NAME

    def journaled() -> int:
        return journal.read_text().count("\n") - 1 if journal.exists() else 0

    proc = spawn_fetch(atlas, dest, tmp_path, "killed", "--parallel", "4")
    try:
        wait_until(lambda: journaled() == 3, proc, tmp_path, "killed")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=PATIENCE) == -signal.SIGKILL
    finally:
        hold.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (dest / "manifest.json").exists()  # never written whole: the journal holds it

    # verify reads the journal: every archive the killed run verified is on record, and the
    # restore set says what the run did not get to.
    verified = run_cli("verify", str(dest))
    assert verified.exit_code == 3, verified.stdout
    assert "3 of 3 archives intact" in verified.stdout
    assert "no config server archive among 3 archives" in verified.stdout

    # The next fetch folds the journal into manifest.json and downloads only what is missing.
    atlas.pull.log.clear()
    again = run_cli(*fetch_args(atlas, dest))
    assert again.exit_code == 0, again.stderr
    assert not journal.exists()
    for job in done:
        assert atlas.pull.requests_for(job["_path"]) == []
        assert job_entry(dest, job)["outcome"] == "verified"
    assert job_entry(dest, stuck)["outcome"] == "verified"


@pytest.mark.parametrize("torn", ["last", "middle"])
def test_a_journal_line_that_does_not_read_is_left_out(
    atlas: Atlas, creds: None, tmp_path: Path, torn: str
) -> None:
    names = ("Cluster0-shard-0.tar.gz", "Cluster0-shard-1.tar.gz", "Cluster0-config.tar.gz")
    for name in names:
        atlas.add(name)
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    doc = manifest_doc(tmp_path)
    (tmp_path / "manifest.json").unlink()
    head = {"journalVersion": 1, "groupId": doc["groupId"], "cluster": doc["cluster"]}
    head["batchId"] = doc["batchId"]
    whole = [json.dumps(job) for job in doc["jobs"]]
    # A crash tears the last line; a full disk can cut one short that later lines follow.
    bad = 2 if torn == "last" else 1
    whole[bad] = whole[bad][:40]
    (tmp_path / mf.JOURNAL_NAME).write_text("\n".join([json.dumps(head), *whole]))

    result = run_cli("verify", str(tmp_path))

    assert "2 of 2 archives intact" in result.stdout, result.stdout
    kept = {j["id"] for j in manifest_doc_or_journal(tmp_path)}
    assert kept == {j["id"] for i, j in enumerate(doc["jobs"]) if i != bad}


def manifest_doc_or_journal(dest: Path) -> list[dict[str, Any]]:
    """The jobs `load` sees: here, those of the journal."""
    with Destination(dest, create=False) as d:
        loaded = mf.load(d)
    assert loaded is not None
    return [j.to_json() for j in loaded.jobs]


def test_a_verified_archive_stays_on_record_when_its_job_loses_its_link(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("Cluster0-shard-0.tar.gz")
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    atlas.set_state(job, "FINISHED", "EXPIRED", link=False)  # listed again: no url, no hashes

    again = run_cli(*fetch_args(atlas, tmp_path))

    assert again.exit_code == 0, again.stderr
    record = job_entry(tmp_path, job)
    assert (record["outcome"], record["reason"]) == ("verified", "already verified on disk")
    assert record["files"][0]["name"] == "Cluster0-shard-0.tar.gz"


# == restore readiness: the archive check, restoreInfo.txt, the restore set ========================


JOB_TIME = "2026-11-28T09:00:00Z"  # support.job_json's timestamp.date


def _gz(tar_bytes: bytes) -> bytes:
    import gzip

    return gzip.compress(tar_bytes, compresslevel=1)


def _escaping_archive(rs: str) -> bytes:
    """A restore archive with one more member, whose path climbs out of the directory."""
    return with_member(rs, tarfile.TarInfo("../../etc/cron.d/evil"), b"evil\n")


# -- a good batch ----------------------------------------------------------------------------


def test_a_good_batch_is_ready_to_restore(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    jobs = add_batch(atlas)

    result = run_cli(*loud(fetch_args(atlas, tmp_path)))

    assert result.exit_code == EXIT_OK, result.stderr
    doc = manifest_doc(tmp_path)
    for rs, job in jobs.items():
        (f,) = job_entry(tmp_path, job)["files"]
        assert f["archiveCheck"] == "passed"
        assert f["replicaSet"] == rs
        assert f["restoreInfo"]["Storage engine type"] == "wiredTiger"
        assert f["restoreInfo"]["Startup Options"].startswith("{\n")  # the whole JSON block
        assert set(f["restoreInfo"]) == {
            "Group Name",
            "Replica Set",
            "Cluster Name",
            "Snapshot timestamp",
            "Restore timestamp",
            "Last Oplog Applied",
            "MongoDB Version",
            "Storage engine type",
            "Startup Options",
        }
        # restoreInfo.txt plus the 32 KiB of data: what unpacking takes.
        assert f["contentBytes"] == 32 * KiB + len(restore_info(rs))
    assert doc["restoreSet"] == {
        "replicaSets": [*SHARDS, CONFIG],
        "configServer": CONFIG,
        "restorePoint": JOB_TIME,
        "problems": [],
        "verdict": f"ready to restore: 3 shards + config server, restore point {JOB_TIME}",
        "missingJobs": [],
    }
    lines = result.stdout.rstrip().splitlines()
    assert lines[-1] == f"ready to restore: 3 shards + config server, restore point {JOB_TIME}"
    header = lines[-6].split()
    assert header == ["ARCHIVE", "REPLICA", "SET", "MONGODB", "ENGINE", "UNPACKED", "DBPATH"]
    assert lines[-2].split()[-1] == "-"  # not unpacked
    assert lines[-2].split()[:4] == [f"{CONFIG}.tar.gz", CONFIG, "7.0.12", "wiredTiger"]


# -- damaged archives ------------------------------------------------------------------------


def _truncated(rs: str) -> bytes:
    return make_archive(rs, 32 * KiB)[:-200]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_truncated, "truncated"),
        (with_garbage, "after the end of the gzip data"),
        (_escaping_archive, "climbs out of the archive"),
    ],
    ids=["truncated-gzip", "trailing-garbage", "member-escapes"],
)
def test_a_damaged_published_archive_fails_and_is_not_downloaded_again(
    atlas: Atlas, creds: None, tmp_path: Path, damage: Any, problem: str
) -> None:
    bad = damage(SHARDS[1])
    jobs = add_batch(atlas, **{SHARDS[1]: bad})  # the API publishes the damaged archive's SHA1
    job = jobs[SHARDS[1]]
    name = f"{SHARDS[1]}.tar.gz"

    first = run_cli(*fetch_args(atlas, tmp_path))

    assert first.exit_code == EXIT_INTEGRITY
    entry = job_entry(tmp_path, job)
    assert (entry["outcome"], entry["failure"]) == ("failed", "integrity")
    assert "the published archive itself is damaged" in entry["reason"]
    assert problem in entry["reason"]
    assert not (tmp_path / name).exists()  # never under its final name
    assert (tmp_path / partial_name(name)).read_bytes() == bad  # kept, as published
    assert len(atlas.pull.requests_for(job["_path"])) == 1
    # The others are fine, and the batch is judged on what is there.
    assert job_entry(tmp_path, jobs[SHARDS[0]])["outcome"] == "verified"

    again = run_cli(*fetch_args(atlas, tmp_path))

    assert again.exit_code == EXIT_INTEGRITY
    assert len(atlas.pull.requests_for(job["_path"])) == 1  # the kept bytes decided, no request
    assert "the published archive itself is damaged" in job_entry(tmp_path, job)["reason"]


def test_a_damaged_archive_without_a_sha1_is_kept_and_said_so(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    bad = _truncated(SHARDS[0])
    job = atlas.add(f"{SHARDS[0]}.tar.gz", bad, with_hashes=False)

    result = run_cli(*fetch_args(atlas, tmp_path))

    assert result.exit_code == EXIT_INTEGRITY
    entry = job_entry(tmp_path, job)
    assert (entry["outcome"], entry["failure"]) == ("failed", "integrity")
    assert "publishes no SHA1 to tell whether the transfer or the published" in entry["reason"]
    assert (tmp_path / partial_name(f"{SHARDS[0]}.tar.gz")).read_bytes() == bad


def test_an_archive_damaged_in_transit_and_resumed_is_fetched_again_from_zero(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add(f"{SHARDS[0]}.tar.gz", make_archive(SHARDS[0], 256 * KiB), with_hashes=False)
    name = f"{SHARDS[0]}.tar.gz"
    resource = atlas.pull.resources[job["_path"]]
    resource.faults = [Fault(drop_after=100 * KiB)]
    assert run_cli(*fetch_args(atlas, tmp_path, "--retries", "0")).exit_code == 1
    part = tmp_path / partial_name(name)
    data = bytearray(part.read_bytes())
    data[50 * KiB] ^= 0xFF  # the kept bytes went bad on disk: no SHA1 can tell, the check can
    part.write_bytes(bytes(data))
    atlas.pull.log.clear()

    result = run_cli(*loud(fetch_args(atlas, tmp_path)))

    assert "damaged archive after a resumed transfer; starting over" in result.stderr
    ranges = [s.headers.get("range") for s in atlas.pull.requests_for(job["_path"])]
    assert ranges == [f"bytes={100 * KiB}-", None]
    assert result.exit_code == EXIT_INCOMPLETE  # unverified: no SHA1 published
    assert part.read_bytes() == atlas.archives[name]
    assert "archive check passed" in job_entry(tmp_path, job)["reason"]


def test_the_check_follows_a_resumed_transfer_across_runs(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    jobs = add_batch(atlas)
    big = make_archive(SHARDS[0], 512 * KiB)
    jobs[SHARDS[0]] = atlas.add(f"{SHARDS[0]}-big.tar.gz", big)
    atlas.jobs.remove(next(j for j in atlas.jobs if j["_path"].endswith(f"/{SHARDS[0]}.tar.gz")))
    atlas.pull.resources[jobs[SHARDS[0]]["_path"]].faults = [Fault(drop_after=300 * KiB)]
    assert run_cli(*fetch_args(atlas, tmp_path, "--retries", "0")).exit_code == 1

    result = run_cli(*fetch_args(atlas, tmp_path))

    assert result.exit_code == EXIT_OK, result.stderr
    entry = file_entry(tmp_path, jobs[SHARDS[0]])
    assert entry["resumedBytes"] == 300 * KiB
    f = entry
    # restoreInfo.txt came in the first run's bytes: read again from disk before the rest.
    assert (f["archiveCheck"], f["replicaSet"]) == ("passed", SHARDS[0])
    assert f["contentBytes"] == 512 * KiB + len(restore_info(SHARDS[0]))


# -- the batch as a restore set --------------------------------------------------------------


@pytest.mark.parametrize(
    ("special", "problem"),
    [
        ({SHARDS[2]: make_archive(SHARDS[2], 1024, info=None)}, "holds no restoreInfo.txt"),
        (
            {SHARDS[2]: make_archive(SHARDS[2], 1024, info=restore_info(SHARDS[1]))},
            f"replica set {SHARDS[1]} is in more than one archive",
        ),
        (
            {
                SHARDS[2]: make_archive(
                    SHARDS[2], 1024, info=restore_info(SHARDS[2], snapshot="Mon Nov 27 2026")
                )
            },
            "different restore points: Snapshot timestamp is",
        ),
        (
            {SHARDS[2]: make_archive(SHARDS[2], 1024, info=restore_info(SHARDS[2], cluster="X"))},
            "different clusters: Cluster Name is",
        ),
    ],
    ids=["no-restoreInfo", "duplicate-replica-set", "two-restore-points", "two-clusters"],
)
def test_a_batch_that_is_not_one_restore_set_exits_3(
    atlas: Atlas, creds: None, tmp_path: Path, special: dict[str, bytes], problem: str
) -> None:
    add_batch(atlas, **special)

    result = run_cli(*loud(fetch_args(atlas, tmp_path)))

    assert result.exit_code == EXIT_INCOMPLETE, result.stderr
    assert "4 verified" in result.stdout  # every archive is fine as an archive
    problems = manifest_doc(tmp_path)["restoreSet"]["problems"]
    assert any(problem in p for p in problems), problems
    assert f"not ready to restore: {len(problems)} problem" in result.stdout
    assert any(problem in line for line in result.stdout.splitlines()[-len(problems) :])
    verified = run_cli("verify", str(tmp_path))
    assert verified.exit_code == EXIT_INCOMPLETE
    quiet = run_cli("verify", "--quiet", str(tmp_path))
    assert problem in quiet.stderr


def test_a_sharded_batch_without_its_config_server(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    jobs = add_batch(atlas)
    atlas.set_state(jobs[CONFIG], "FINISHED", "EXPIRED")

    result = run_cli(*loud(fetch_args(atlas, tmp_path)))

    assert result.exit_code == EXIT_INCOMPLETE
    verdict, missing = result.stdout.rstrip().splitlines()[-2:]
    assert verdict == "not ready to restore: 1 archive missing"
    config = jobs[CONFIG]["id"]
    assert missing == f"  - missing: job {config} ({CONFIG}.tar.gz): skipped: delivery EXPIRED"
    # The missing job may be the config server: no problem is claimed about what is not here.
    restore_set = manifest_doc(tmp_path)["restoreSet"]
    assert restore_set["problems"] == []
    assert restore_set["missingJobs"] == [config] and restore_set["verdict"] == verdict


# -- verify --deep ------------------------------------------------------------------------------


def test_a_kept_damaged_archive_without_a_sha1_is_not_downloaded_on_every_run(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add(f"{SHARDS[0]}.tar.gz", _truncated(SHARDS[0]), with_hashes=False)
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == EXIT_INTEGRITY

    again = run_cli(*fetch_args(atlas, tmp_path))

    assert again.exit_code == EXIT_INTEGRITY
    assert len(atlas.pull.requests_for(job["_path"])) == 1  # the kept bytes decide again
    assert (tmp_path / partial_name(f"{SHARDS[0]}.tar.gz")).exists()


# == one batch across many hosts: fetch --only, verify DIR... ======================================


def test_only_fetches_the_selected_jobs_and_judges_them_alone(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    jobs = add_host_batch(atlas)

    result = run_cli(*loud(fetch_args(atlas, tmp_path, "--only", "*shard-0*", "--only", "*-1.*")))

    assert result.exit_code == EXIT_OK, result.stdout + result.stderr
    doc = manifest_doc(tmp_path)
    assert doc["selection"] == ["*shard-0*", "*-1.*"]
    assert doc["batchJobIds"] == sorted(job["id"] for job in jobs.values())
    assert sorted(j["id"] for j in doc["jobs"]) == sorted(jobs[rs]["id"] for rs in HOST_SHARDS[:2])
    assert doc["complete"] is True and doc["restoreSet"]["problems"] == []  # no config: not ours
    for rs in [*HOST_SHARDS[2:], CONFIG]:
        assert atlas.pull.requests_for(jobs[rs]["_path"]) == []  # never asked for
        assert not (tmp_path / f"{rs}.tar.gz").exists()
    assert (
        "selected archives ready: Cluster0-shard-0, Cluster0-shard-1, restore point"
        in result.stdout
    )


def test_only_a_job_whose_name_is_not_known_yet(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    jobs = add_host_batch(atlas)
    for rs in (HOST_SHARDS[0], HOST_SHARDS[1]):
        atlas.set_state(jobs[rs], "IN_PROGRESS", "NOT_STARTED")  # no link, no name yet

    without = run_cli(*fetch_args(atlas, tmp_path / "a", "--only", "*shard-0*"))

    assert without.exit_code == EXIT_INCOMPLETE
    skipped = {j["id"]: j["reason"] for j in manifest_doc(tmp_path / "a")["jobs"]}
    assert set(skipped) == {
        jobs[HOST_SHARDS[0]]["id"],
        jobs[HOST_SHARDS[1]]["id"],
    }  # may be selected
    assert all(r.startswith("not ready yet") for r in skipped.values())

    def finish(poll: int) -> None:
        if poll == 2:
            atlas.set_state(jobs[HOST_SHARDS[0]])
            atlas.set_state(jobs[HOST_SHARDS[1]])

    atlas.on_list = finish
    waited = run_cli(
        *fetch_args(atlas, tmp_path / "b", "--only", "*shard-0*", "--wait", "--poll-interval", "0")
    )

    assert waited.exit_code == EXIT_OK, waited.stdout + waited.stderr
    doc = manifest_doc(tmp_path / "b")
    assert [j["id"] for j in doc["jobs"]] == [
        jobs[HOST_SHARDS[0]]["id"]
    ]  # shard 1 dropped once named
    assert atlas.pull.requests_for(jobs[HOST_SHARDS[1]]["_path"]) == []


def test_only_that_matches_nothing_is_an_error(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    add_host_batch(atlas)
    result = run_cli(*fetch_args(atlas, tmp_path / "d", "--only", "*shard-9*"))
    assert result.exit_code == EXIT_ERROR
    assert "matches --only *shard-9*" in result.stderr
    assert not (tmp_path / "d").exists()


# == Atlas Cloud Backup (Admin API v2): an archive per replica set, no hash ========================


V2_SHARD, V2_CONFIG = f"{CLUSTER_V2}-shard-0", f"{CLUSTER_V2}-config-0"


def files_by_set(dest: Path) -> dict[str, dict[str, object]]:
    """The manifest's files[] entries, by replica set."""
    doc = manifest_doc(dest)
    return {f["replicaSet"]: f for j in doc["jobs"] for f in j["files"]}


def test_a_sharded_job_downloads_every_component(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    job = atlas_v2.add((f"{CLUSTER_V2}-shard-0", f"{CLUSTER_V2}-shard-1", V2_CONFIG))
    dest = tmp_path / "out"
    result = run_cli(*fetch_job(atlas_v2, job, dest))
    assert result.exit_code == 0, result.output + result.stderr
    files = files_by_set(dest)
    assert sorted(files) == sorted(job.replica_sets)
    for name, data in job.archives.items():
        entry = files[name]
        # No SHA1 is published: the one recorded is the one computed, and the check passed.
        assert entry["sha1"] == hashlib.sha1(data).hexdigest()
        assert entry["archiveCheck"] == "passed"
        assert (dest / str(entry["name"])).read_bytes() == data
    doc = manifest_doc(dest)
    assert doc["complete"] is True
    assert doc["batchId"] == job.id  # the job is the batch of its archives
    assert doc["restoreSet"]["configServer"] == V2_CONFIG
    assert doc["restoreSet"]["verdict"].startswith("ready to restore: 2 shards + config server")
    # One entry, under the job's own id, with one file a component.
    (entry,) = doc["jobs"]
    assert entry["id"] == job.id and entry["outcome"] == "verified"
    assert sorted(f["replicaSet"] for f in entry["files"]) == sorted(job.replica_sets)
    assert {f["outcome"] for f in entry["files"]} == {"verified"}
    assert doc["batchJobIds"] == [job.id]
    assert "ready to restore: 2 shards + config server" in result.output
    # Nothing is downloaded twice: a re-run re-hashes what is on disk.
    sent = sum(atlas_v2.pull.bytes_sent(p) for p in job.paths.values())
    again = run_cli(*fetch_job(atlas_v2, job, dest))
    assert again.exit_code == 0, again.output + again.stderr
    assert sum(atlas_v2.pull.bytes_sent(p) for p in job.paths.values()) == sent


def test_a_replica_set_job_is_its_deliveryurl(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    job = atlas_v2.add((f"{CLUSTER_V2}-rs",), sharded=False)
    dest = tmp_path / "rs"
    result = run_cli(*fetch_job(atlas_v2, job, dest, "--json"))
    assert result.exit_code == 0, result.output + result.stderr
    doc = json.loads(result.stdout)
    (entry,) = doc["jobs"]
    assert entry["id"] == job.id and entry["outcome"] == "verified"
    assert entry["files"][0]["replicaSet"] == f"{CLUSTER_V2}-rs"
    assert doc["restoreSet"]["verdict"].startswith(f"ready to restore: replica set {CLUSTER_V2}-rs")
    quiet = run_cli("verify", "--quiet", str(dest))
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")  # all is well: silence


@pytest.mark.parametrize(
    ("state", "delivery_type", "reason"),
    [
        ("expired", "download", "expired"),
        ("failed", "download", "failed"),
        ("cancelled", "download", "cancelled"),
        ("ready", "automated", "not a download restore (automated)"),
        ("running", "download", "not finished yet"),
    ],
)
def test_jobs_that_cannot_be_downloaded_are_skipped_with_the_reason(
    atlas_v2: AtlasV2,
    creds: None,
    tmp_path: Path,
    state: str,
    delivery_type: str,
    reason: str,
) -> None:
    job = atlas_v2.add(state=state, delivery_type=delivery_type)
    dest = tmp_path / "out"
    result = run_cli(*fetch_job(atlas_v2, job, dest))
    assert result.exit_code == 3, result.output + result.stderr
    assert reason in result.output
    assert not atlas_v2.pull.log  # no link was requested, not even the expired one's
    doc = manifest_doc(dest)
    assert {j["outcome"] for j in doc["jobs"]} == {"skipped"}
    assert doc["complete"] is False


def test_wait_until_the_job_finishes_then_only_its_archives_are_recorded(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    job = atlas_v2.add(state="running")
    dest = tmp_path / "out"
    # Without --wait: skipped "not finished yet", recorded under the job's own id.
    first = run_cli(*fetch_job(atlas_v2, job, dest, "--quiet"))
    assert first.exit_code == 3
    assert [j["id"] for j in manifest_doc(dest)["jobs"]] == [job.id]

    def finish(polls: int) -> None:
        if polls >= 2:
            job.state = "ready"

    atlas_v2.on_poll = finish
    args = fetch_job(atlas_v2, job, dest, "--wait", "--poll-interval", "0", "--quiet")
    result = run_cli(*args)
    assert result.exit_code == 0, result.output + result.stderr
    doc = manifest_doc(dest)
    # The same entry, now with one file per archive; the slot that stood for them is gone.
    (entry,) = doc["jobs"]
    assert entry["id"] == job.id and entry["outcome"] == "verified"
    assert sorted(f["replicaSet"] for f in entry["files"]) == sorted(job.replica_sets)
    assert doc["complete"] is True
    assert doc["batchJobIds"] == [job.id]


def test_a_corrupt_component_is_an_integrity_failure(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    good = make_archive(V2_SHARD, info=restore_info(V2_SHARD, cluster=CLUSTER_V2))
    torn = good[:-200] + bytes(200)  # the gzip trailer and the last blocks are gone
    job = atlas_v2.add(archives={V2_SHARD: torn})
    dest = tmp_path / "out"
    result = run_cli(*fetch_job(atlas_v2, job, dest))
    assert result.exit_code == 4, result.output + result.stderr
    assert not (dest / f"{V2_SHARD}.tar.gz").exists()  # never under its final name
    assert (dest / f"{V2_CONFIG}.tar.gz").exists()
    # The torn component fails, and so does its job: one entry, the worst of its files.
    (entry,) = manifest_doc(dest)["jobs"]
    assert (entry["id"], entry["outcome"], entry["failure"]) == (job.id, "failed", "integrity")
    files = {f["replicaSet"]: f for f in entry["files"]}
    torn_entry, config = files[V2_SHARD], files[V2_CONFIG]
    assert (torn_entry["outcome"], torn_entry["failure"]) == ("failed", "integrity")
    assert torn_entry["archiveCheck"] == "failed" and torn_entry["archiveProblem"]
    assert "sha1" not in torn_entry  # its bytes are not under its final name
    assert (config["outcome"], config["archiveCheck"]) == ("verified", "passed")
    # The readiness table still shows the component that is verified.
    (row,) = [line for line in result.output.splitlines() if line.startswith(V2_CONFIG)]
    assert V2_CONFIG in row.split()[1]


def _components_without_links(atlas_v2: AtlasV2, *, expired: bool) -> None:
    """From now on the API lists the job's components with no downloadUrl (expired, or
    finished with its links not filled in yet)."""
    render = atlas_v2.render

    def without_links(job: V2Job) -> dict[str, Any]:
        doc = render(job)
        doc["expired"] = expired
        for component in doc.get("components", []):
            component["downloadUrl"] = None
        return doc

    atlas_v2.render = without_links  # type: ignore[method-assign]


def test_expired_components_listed_without_links_are_checked_again_on_disk(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    job = atlas_v2.add((V2_SHARD, f"{CLUSTER_V2}-shard-1", V2_CONFIG))
    dest = tmp_path / "out"
    assert run_cli(*fetch_job(atlas_v2, job, dest)).exit_code == 0
    _components_without_links(atlas_v2, expired=True)
    shard = dest / f"{V2_SHARD}.tar.gz"
    data = bytearray(shard.read_bytes())
    data[100] ^= 1
    shard.write_bytes(bytes(data))
    again = run_cli(*fetch_job(atlas_v2, job, dest))
    assert again.exit_code == 4, again.output + again.stderr
    assert "no longer matches its SHA1" in again.output
    (entry,) = manifest_doc(dest)["jobs"]
    outcomes = {f["replicaSet"]: f["outcome"] for f in entry["files"]}
    assert outcomes == {
        V2_SHARD: "failed",
        f"{CLUSTER_V2}-shard-1": "verified",
        V2_CONFIG: "verified",
    }
    assert manifest_doc(dest)["complete"] is False


def test_components_whose_names_are_not_known_yet_keep_the_job_incomplete(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    job = atlas_v2.add((V2_SHARD, V2_CONFIG))
    _components_without_links(atlas_v2, expired=False)
    dest = tmp_path / "out"
    result = run_cli(*fetch_job(atlas_v2, job, dest, "--quiet"))
    assert result.exit_code == 3, result.output + result.stderr
    (entry,) = manifest_doc(dest)["jobs"]
    assert entry["outcome"] == "skipped" and manifest_doc(dest)["complete"] is False
    assert sorted((f["name"], f["replicaSet"]) for f in entry["files"]) == [
        (None, V2_CONFIG),
        (None, V2_SHARD),
    ]
    assert {f["reason"] for f in entry["files"]} == {"finished, but no download link yet"}
    assert run_cli("verify", str(dest)).exit_code == 3


def test_an_archive_of_another_replica_set_than_listed_is_refused(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    other = f"{CLUSTER_V2}-shard-7"
    swapped = make_archive(other, info=restore_info(other, cluster=CLUSTER_V2))
    job = atlas_v2.add(archives={V2_SHARD: swapped})
    dest = tmp_path / "out"
    result = run_cli(*fetch_job(atlas_v2, job, dest))
    assert result.exit_code == 4
    assert f"restoreInfo.txt names {other}" in result.output + result.stderr
    assert not (dest / f"{V2_SHARD}.tar.gz").exists()


def test_only_selects_by_replica_set(atlas_v2: AtlasV2, creds: None, tmp_path: Path) -> None:
    job = atlas_v2.add((V2_SHARD, f"{CLUSTER_V2}-shard-1", V2_CONFIG))
    dest = tmp_path / "out"
    result = run_cli(*fetch_job(atlas_v2, job, dest, "--only", "*-shard-1", "--quiet"))
    assert result.exit_code == 0, result.output + result.stderr
    assert sorted(files_by_set(dest)) == [f"{CLUSTER_V2}-shard-1"]
    assert manifest_doc(dest)["batchJobIds"] == [job.id]


def test_a_service_account_token_is_issued_reused_and_renewed(
    atlas_v2: AtlasV2, service_account: None, tmp_path: Path
) -> None:
    job = atlas_v2.add(state="running")

    def finish(polls: int) -> None:
        if polls >= 3:
            job.state = "ready"

    atlas_v2.on_poll = finish
    dest = tmp_path / "out"
    result = run_cli(*fetch_job(atlas_v2, job, dest, "--wait", "--poll-interval", "0"))
    assert result.exit_code == 0, result.output + result.stderr
    assert len(atlas_v2.api_requests) >= 3 and atlas_v2.token_requests == 1  # one token, reused
    assert atlas_v2.gate.accepted == 0  # bearer only: the API keys were not used
    assert all(h.get("Authorization", "").startswith("Bearer ") for h in atlas_v2.api_requests)
    # Never to the download host (which, like S3, would refuse a request that carries one).
    assert all("authorization" not in s.headers for s in atlas_v2.pull.log)
    # A token refused (revoked, expired early) is renewed once, and the request goes through.
    atlas_v2.revoke_next = True
    again = run_cli(*v2_args(atlas_v2, "list"))
    assert again.exit_code == 0, again.stderr
    assert atlas_v2.token_requests == 3  # a new run's token, then the renewal


def test_no_secret_of_a_v2_run_reaches_output_logs_or_files(
    atlas_v2: AtlasV2, service_account: None, tmp_path: Path
) -> None:
    job = atlas_v2.add()
    gone = atlas_v2.add(state="expired")
    dest = tmp_path / "out"
    outputs = []
    for args in (
        fetch_job(atlas_v2, job, dest, "--verbose"),
        fetch_job(atlas_v2, gone, tmp_path / "gone", "--verbose", "--json"),
        v2_args(atlas_v2, "list", "--verbose"),
        v2_args(atlas_v2, "list", "--json"),
        ["verify", "--deep", str(dest)],
    ):
        result = run_cli(*args)
        outputs.append(result.output + result.stderr)
    text = "\n".join(outputs)
    text += "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
    secrets = [CLIENT_SECRET, *atlas_v2.tokens, "X-Amz-Signature", "AKIAEXAMPLE"]
    secrets += [*job.signatures.values(), *gone.signatures.values()]
    assert [s for s in secrets if s in text] == []
    assert "Authorization: Bearer (hidden)" in text  # the log was on, and shows the scheme only


def test_a_profile_gives_the_credentials_and_the_project(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("MONGODB_ATLAS_PUBLIC_API_KEY", "MONGODB_ATLAS_PRIVATE_API_KEY"):
        monkeypatch.delenv(var)
    config = tmp_path / "xdg" / "atlascli"
    config.mkdir(parents=True)
    (config / "config.toml").write_text(
        f'[default]\n  public_api_key = "nobody"\n  private_api_key = "wrong-key-1234"\n'
        f'[svc]\n  client_id = "{CLIENT_ID}"\n  client_secret = "{CLIENT_SECRET}"\n'
        f'  project_id = "{GROUP}"\n'
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    job = atlas_v2.add()
    base = ["--base-url", atlas_v2.base_url, "--cluster", CLUSTER_V2, "--profile", "svc"]
    result = run_cli("fetch", *base, "--job", job.id, "--dest", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output + result.stderr
    assert atlas_v2.token_requests == 1
    # The default profile has no project_id: --group is needed.
    nogroup = run_cli("list", "--base-url", atlas_v2.base_url, "--cluster", CLUSTER_V2)
    assert nogroup.exit_code == 2 and "--group" in nogroup.stderr
    # Its keys are wrong: the API refuses them, in one line that does not show them.
    refused = run_cli(*v2_args(atlas_v2, "list"))
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1
    assert "401" in refused.stderr and "wrong-key-1234" not in refused.output + refused.stderr
    missing = run_cli("list", *base[:4], "--profile", "nope", "--group", GROUP)
    assert missing.exit_code == 2 and "nope" in missing.stderr  # a configuration error
    assert missing.stderr.count("\n") == 1


def test_an_expired_job_listed_without_links_still_has_its_archives_checked(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    job = atlas_v2.add()
    dest = tmp_path / "out"
    assert run_cli(*fetch_job(atlas_v2, job, dest, "-q")).exit_code == 0
    job.state = "failed"  # listed now with no components and no links
    again = run_cli(*fetch_job(atlas_v2, job, dest))
    assert again.exit_code == 0, again.output + again.stderr
    assert "already verified on disk" in again.output
    archive = dest / f"{V2_SHARD}.tar.gz"
    data = bytearray(archive.read_bytes())
    data[1000] ^= 0xFF
    archive.write_bytes(bytes(data))
    broken = run_cli(*fetch_job(atlas_v2, job, dest))
    assert broken.exit_code == 4, broken.output + broken.stderr
    assert f"{V2_SHARD}.tar.gz no longer matches its SHA1" in broken.output


def test_wait_ends_when_only_leaves_every_archive_to_other_hosts(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    job = atlas_v2.add()
    args = fetch_job(atlas_v2, job, tmp_path / "out", "--only", "nothing-*", "--wait")
    result = run_cli(*args, "--poll-interval", "0", "--wait-timeout", "30")
    assert result.exit_code == 1
    assert "matches --only" in result.stderr
    assert atlas_v2.polls == 1  # no polling for what no host here will take


# == hostile input and secrets (issue 4) ===========================================================


PRECIOUS = b"precious bytes outside DIR\n"


# -- helpers ---------------------------------------------------------------------------------


def _manifest_jobs(dest: Path) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = json.loads((dest / MANIFEST_NAME).read_text())["jobs"]
    return jobs


def _snapshot(root: Path, skip: Path | None = None) -> dict[str, bytes | str]:
    """Every entry under root (not under skip): file bytes, link targets, directories."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        key = str(path.relative_to(root))
        if path.is_symlink():
            out[key] = f"link:{path.readlink()}"
        elif path.is_dir():
            out[key] = "dir"
        else:
            out[key] = path.read_bytes()
    return out


def _everything_in(dest: Path) -> str:
    """Every byte of every file in DIR, hidden ones included, as text."""
    return "".join(
        p.read_bytes().decode("latin-1")
        for p in dest.rglob("*")
        if p.is_file() and not p.is_symlink()
    )


def _within(seconds: float, call: Callable[[], Result], fifo: Path) -> Result:
    """Run call on a thread; a call blocked opening the FIFO is released, and the test fails."""
    box: dict[str, Result] = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", call()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # lets the blocked reader go
        os.close(fd)
        thread.join(5)
        pytest.fail(f"blocked opening the FIFO {fifo.name}")
    return box["result"]


# -- file names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "segment"),
    [
        ("../escape.tar.gz", "..%2Fescape.tar.gz"),
        ("ABSOLUTE", "ABSOLUTE"),
        ("%2e%2e%2fescape.tar.gz", "%252e%252e%252fescape.tar.gz"),
        ("manifest.json", "manifest.json"),
        (".fetcher.lock", ".fetcher.lock"),
        ("esc\x00ape.tar.gz", "esc%00ape.tar.gz"),
        ("C:escape.tar.gz", "C:escape.tar.gz"),
        ("x" * 300, "y" * 300),
    ],
)
def test_a_job_with_only_unsafe_names_fails_and_nothing_leaves_dir(
    atlas: Atlas, creds: None, tmp_path: Path, file_name: str, segment: str
) -> None:
    area = tmp_path / "area"
    dest = area / "dest"
    if file_name == "ABSOLUTE":
        file_name = str(area / "escape.tar.gz")
        segment = quote(file_name, safe="")
    safe = atlas.add("fine.tar.gz")
    bad = add_job(atlas, segment, file_name=file_name)
    result = run_cli(*fetch_args(atlas, dest))
    assert result.exit_code == 1, result.stderr
    by_id = {j["id"]: j for j in _manifest_jobs(dest)}
    assert by_id[safe["id"]]["outcome"] == "verified"  # the batch goes on
    failed = by_id[bad["id"]]
    assert failed["outcome"] == "failed" and failed["failure"] == "error"
    assert failed["reason"].startswith("unsafe file name")
    assert not atlas.pull.requests_for(bad["_path"])  # not even downloaded
    assert _snapshot(area, skip=dest) == {}  # nothing beside DIR
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [LOCK_NAME, MANIFEST_NAME, "fine.tar.gz"]
    )


def test_an_unsafe_hash_name_with_a_safe_url_segment_uses_the_segment(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    area = tmp_path / "area"
    dest = area / "dest"
    job = add_job(atlas, "good.tar.gz", file_name="../escape.tar.gz")
    result = run_cli(*fetch_args(atlas, dest))
    assert result.exit_code == 0, result.stderr
    assert (dest / "good.tar.gz").read_bytes() == job["_data"]
    (entry,) = _manifest_jobs(dest)
    assert entry["files"][0]["name"] == "good.tar.gz"
    assert _snapshot(area, skip=dest) == {}


# Where a symlink is planted, and whether fetch then succeeds (0) or refuses clearly (1).
PLANTS: dict[str, tuple[Callable[[str], str], int, str]] = {
    "final": (lambda n: n, 0, ""),
    "partial": (partial_name, 1, "is a symbolic link"),
    "state": (state_name, 0, ""),
    "manifest": (lambda n: MANIFEST_NAME, 0, ""),
    "lock": (lambda n: LOCK_NAME, 1, "is a symbolic link"),
}


@pytest.mark.parametrize("target", ["file", "missing", "directory"])
@pytest.mark.parametrize("where", list(PLANTS))
def test_a_planted_symlink_never_leads_outside_dir(
    atlas: Atlas, creds: None, tmp_path: Path, where: str, target: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(PRECIOUS)
    link_to = {"file": outside / "precious", "missing": outside / "new", "directory": outside}
    dest = tmp_path / "dest"
    dest.mkdir()
    name = "Cluster0-shard-0.tar.gz"
    atlas.add(name)
    planted, code, message = PLANTS[where]
    (dest / planted(name)).symlink_to(link_to[target])
    before = _snapshot(outside)

    result = run_cli(*fetch_args(atlas, dest))

    assert _snapshot(outside) == before  # not written, not truncated, nothing created
    assert (outside / "precious").read_bytes() == PRECIOUS
    assert result.exit_code == code, result.stdout + result.stderr
    if code == 0:
        assert not (dest / name).is_symlink()
        assert (dest / name).read_bytes() == atlas.archives[name]
    elif where == "partial":
        (entry,) = _manifest_jobs(dest)
        assert entry["outcome"] == "failed" and message in entry["reason"]
    else:
        assert message in one_line_error(result)


@pytest.mark.parametrize("where", ["partial", "manifest-temp"])
def test_a_planted_hard_link_is_not_written_through(
    atlas: Atlas, creds: None, tmp_path: Path, where: str
) -> None:
    # O_NOFOLLOW does not see a hard link: writing or truncating through one changes the
    # file it shares an inode with, wherever that is on the file system.
    precious = tmp_path / "precious"
    precious.write_bytes(PRECIOUS)
    dest = tmp_path / "dest"
    dest.mkdir()
    name = "rs0.tar.gz"
    atlas.add(name)
    # The manifest's temporary name is predictable: pid and thread of whoever writes it last.
    planted = {
        "partial": partial_name(name),
        "manifest-temp": f".{MANIFEST_NAME}.tmp.{os.getpid()}.{threading.get_ident()}",
    }[where]
    os.link(precious, dest / planted)
    result = run_cli(*fetch_args(atlas, dest))
    assert precious.read_bytes() == PRECIOUS
    assert result.exit_code == 0, result.stderr
    assert (dest / name).read_bytes() == atlas.archives[name]
    assert json.loads((dest / MANIFEST_NAME).read_text())["complete"] is True


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")
def test_files_of_another_user_are_not_adopted_and_everything_finished_is_the_runners(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    name = "rs0.tar.gz"
    atlas.add(name)
    dest = tmp_path / "dest"
    dest.mkdir()
    data = atlas.archives[name]
    for planted, text in ((partial_name(name), data[:100]), (mf.JOURNAL_NAME, b"{}\n")):
        (dest / planted).write_bytes(text)
        os.chown(dest / planted, 65534, 65534)
    result = run_cli(*fetch_args(atlas, dest))
    assert result.exit_code == 0, result.stderr
    assert (dest / name).read_bytes() == data
    for finished in (name, MANIFEST_NAME):
        assert (dest / finished).stat().st_uid == os.getuid()
    assert len(list(dest.glob(f"{partial_name(name)}.foreign-*"))) == 1
    assert len(list(dest.glob(f"{mf.JOURNAL_NAME}.foreign-*"))) == 1
    for planted in (partial_name(name), mf.JOURNAL_NAME):  # each said in one line
        assert f"fetcher: {planted} belongs to uid 65534" in result.stderr


def test_an_archive_and_manifest_of_another_user_are_set_aside_and_fetched_again(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    if os.getuid() != 0:
        pytest.skip("planting another user's files takes root")
    name = "rs0.tar.gz"
    job = atlas.add(name)
    dest = tmp_path / "dest"
    assert run_cli(*fetch_args(atlas, dest)).exit_code == 0
    sent = atlas.pull.bytes_sent(job["_path"])
    for planted in (name, MANIFEST_NAME):  # they could be rewritten after any check
        os.chown(dest / planted, 65534, 65534)
    result = run_cli(*loud(fetch_args(atlas, dest)))
    assert result.exit_code == 0, result.stderr
    assert atlas.pull.bytes_sent(job["_path"]) == 2 * sent  # not adopted: downloaded again
    for finished in (name, MANIFEST_NAME):
        assert (dest / finished).stat().st_uid == os.getuid()
        assert len(list(dest.glob(f"{finished}.foreign-*"))) == 1
    for planted in (name, MANIFEST_NAME):
        assert f"fetcher: {planted} belongs to uid 65534" in result.stderr


def test_a_planted_fifo_does_not_hang_verify_or_fetch(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    name = "rs0.tar.gz"
    atlas.add(name)
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    (tmp_path / name).unlink()
    os.mkfifo(tmp_path / name)
    result = _within(10, lambda: run_cli("verify", str(tmp_path)), tmp_path / name)
    assert result.exit_code == 4 and "missing" in result.stdout
    (tmp_path / MANIFEST_NAME).unlink()
    os.mkfifo(tmp_path / MANIFEST_NAME)
    result = _within(10, lambda: run_cli(*fetch_args(atlas, tmp_path)), tmp_path / MANIFEST_NAME)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / name).read_bytes() == atlas.archives[name]


# -- credentials -----------------------------------------------------------------------------


def test_a_pull_host_asking_for_digest_gets_no_authorization(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("rs0.tar.gz")
    atlas.pull.resources[job["_path"]].faults = [Fault(digest_challenge=True) for _ in range(3)]
    result = run_cli(*fetch_args(atlas, tmp_path))
    assert atlas.gate.accepted > 0  # the API client did hold a digest session to offer
    assert result.exit_code == 1
    (request,) = atlas.pull.requests_for(job["_path"])  # the challenge was not answered
    assert "authorization" not in request.headers
    (entry,) = _manifest_jobs(tmp_path)
    assert entry["outcome"] == "failed" and "answered 401" in entry["reason"]


@pytest.mark.parametrize("to", ["other-host", "same-host-by-another-name"])
def test_the_bearer_goes_to_its_own_origin_only(
    atlas: Atlas, creds: None, tmp_path: Path, other: PullServer, to: str
) -> None:
    moved = "/moved/om.tar.gz"
    job = add_ops_manager_job(atlas, "om.tar.gz")
    if to == "other-host":
        other.add(moved, job["_data"])
        target, log = other.url(moved), other
    else:
        atlas.pull.add(moved, job["_data"])
        target, log = atlas.pull.url(moved).replace("//127.0.0.1:", "//localhost:"), atlas.pull
    atlas.pull.resources[job["_path"]].faults = [Fault(redirect_to=target)]
    plain = atlas.add("plain.tar.gz", make_archive("Cluster0-config"))  # the batch's config server

    result = run_cli(*fetch_args(atlas, tmp_path, "--json"))

    assert result.exit_code == 0, result.stderr
    (first,) = atlas.pull.requests_for(job["_path"])
    assert first.headers["authorization"] == f"Bearer {BEARER}"
    (redirected,) = log.requests_for(moved)
    assert "authorization" not in redirected.headers
    (unrelated,) = atlas.pull.requests_for(plain["_path"])
    assert "authorization" not in unrelated.headers
    assert (tmp_path / "om.tar.gz").read_bytes() == job["_data"]
    assert BEARER not in result.stdout + result.stderr + _everything_in(tmp_path)


def test_fetch_with_netrc_credentials_only(
    atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MONGODB_ATLAS_PUBLIC_API_KEY")
    monkeypatch.delenv("MONGODB_ATLAS_PRIVATE_API_KEY")
    path = write_netrc(
        tmp_path, f"machine localhost\n  login {PUBLIC_KEY}\n  password {PRIVATE_KEY}\n"
    )
    monkeypatch.setenv("NETRC", str(path))
    atlas.add("rs0.tar.gz")
    result = run_cli(*fetch_args(atlas, tmp_path / "dest"))
    assert result.exit_code == 0, result.stderr
    assert PRIVATE_KEY not in result.stdout + result.stderr


# -- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize("pull_fault", ["none", "403", "500", "redirect-loop", "dropped"])
def test_tokens_bearers_and_keys_never_show_or_persist(
    atlas: Atlas, creds: None, tmp_path: Path, pull_fault: str
) -> None:
    plain = atlas.add("plain.tar.gz", make_archive("Cluster0-config"))  # the config server
    om = add_ops_manager_job(atlas, "om.tar.gz")
    signed = add_job(
        atlas, "signed.tar.gz", file_name="signed.tar.gz", query="?X-Signature=s1gnature-d34db33f"
    )
    hexed = add_job(atlas, "hex.tar.gz", file_name="hex.tar.gz", token=secrets.token_hex(12))
    jobs = [plain, om, signed, hexed]
    tokens = [str(j["_path"]).split("/")[-2] for j in jobs]
    for job in jobs:
        fault = {
            "none": None,
            "403": Fault(status=403),
            "500": Fault(status=500),
            "redirect-loop": Fault(redirect_to=atlas.pull.url(job["_path"])),
            "dropped": Fault(drop_after=1000),  # leaves .part and .part.json behind
        }[pull_fault]
        if fault is not None:
            atlas.pull.resources[job["_path"]].faults = [fault] * 100

    shown = ""
    for extra in (["--json"], []):
        args = fetch_args(atlas, tmp_path / "dest", "--retries", "0", *extra)
        if not extra:
            args.remove("--quiet")
        result = run_cli(*args)
        assert result.exit_code == (0 if pull_fault == "none" else 1), result.stderr
        shown += result.stdout + result.stderr
    for extra in ([], ["--json"]):
        result = run_cli(*list_args(atlas.base_url, *extra))
        assert result.exit_code == 0
        shown += result.stdout + result.stderr
    stored = _everything_in(tmp_path / "dest")
    if pull_fault == "dropped":
        assert (tmp_path / "dest" / state_name("om.tar.gz")).is_file()

    for secret in [*tokens, BEARER, PRIVATE_KEY, "s1gnature-d34db33f"]:
        assert secret not in shown, secret
        assert secret not in stored, secret
    if pull_fault != "none":
        # The failure still says which archive it was about.
        assert "om.tar.gz" in shown and "plain.tar.gz" in shown
    for job in jobs:
        assert job["id"] in shown  # ids are not secrets, even when a URL holds them


# -- TLS ---------------------------------------------------------------------------------------


def _https_server(ca: trustme.CA, *names: str) -> HTTPServer:
    context = server_context(ca, *names)
    server = HTTPServer(host="localhost", port=0, ssl_context=context)
    server.start()
    return server


@pytest.fixture(scope="module")
def https_server(authority: tuple[trustme.CA, Path]) -> Iterator[HTTPServer]:
    """One HTTPS server for the module: stopping one takes half a second."""
    server = _https_server(authority[0])
    yield server
    server.stop()


@pytest.fixture
def ca(authority: tuple[trustme.CA, Path], tmp_path: Path) -> trustme.CA:
    shutil.copy(authority[1], tmp_path / "ca.pem")
    return authority[0]


@pytest.fixture
def https_atlas(https_server: HTTPServer, ca: trustme.CA, pull: PullServer) -> Iterator[Atlas]:
    atlas = Atlas(https_server, pull)
    atlas.add("rs0.tar.gz")
    yield atlas
    https_server.clear()


def test_tls_without_the_ca_fails_at_once_with_a_hint(
    https_atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    assert https_atlas.base_url.startswith("https://")
    started = time.monotonic()
    result = run_cli(*fetch_args(https_atlas, tmp_path / "dest"))
    line = one_line_error(result)
    assert "not trusted" in line and "--ca-cert" in line
    # A refused certificate is refused again on every retry: no backoff (>= 7.75 s) first.
    assert time.monotonic() - started < 5
    assert not (tmp_path / "dest" / "rs0.tar.gz").exists()


def test_tls_with_ca_cert_option(https_atlas: Atlas, creds: None, tmp_path: Path) -> None:
    result = run_cli(
        *fetch_args(https_atlas, tmp_path / "dest", "--ca-cert", str(tmp_path / "ca.pem"))
    )
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "dest" / "rs0.tar.gz").read_bytes() == https_atlas.archives["rs0.tar.gz"]


def test_tls_with_ssl_cert_file(
    https_atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    result = run_cli(*fetch_args(https_atlas, tmp_path / "dest"))
    assert result.exit_code == 0, result.stderr


def test_tls_checks_the_host_name_even_with_the_ca(
    ca: trustme.CA, pull: PullServer, creds: None, tmp_path: Path
) -> None:
    server = _https_server(ca, "api.example.org")
    try:
        atlas = Atlas(server, pull)
        result = run_cli(
            *fetch_args(atlas, tmp_path / "dest", "--ca-cert", str(tmp_path / "ca.pem"))
        )
        line = one_line_error(result)
        assert "not trusted" in line and "mismatch" in line.lower()
    finally:
        server.clear()
        server.stop()


def test_a_tls_pull_host_with_an_unknown_ca_fails_the_job_at_once(
    atlas: Atlas, https_server: HTTPServer, ca: trustme.CA, creds: None, tmp_path: Path
) -> None:
    data = make_archive("rs0")
    pull = https_server
    try:
        path = f"/backup/restore/v2/pull/{new_id()}/{secrets.token_urlsafe(24)}/rs0.tar.gz"
        pull.expect_request(path).respond_with_data(data)
        atlas.jobs.append(
            job_json(url=pull.url_for(path), file_name="rs0.tar.gz", sha1_hex=sha1(data))
        )
        started = time.monotonic()
        result = run_cli(*fetch_args(atlas, tmp_path / "a"))
        assert result.exit_code == 1
        (entry,) = _manifest_jobs(tmp_path / "a")
        assert "TLS certificate not trusted" in entry["reason"]
        assert time.monotonic() - started < 5
        ok = run_cli(*fetch_args(atlas, tmp_path / "b", "--ca-cert", str(tmp_path / "ca.pem")))
        assert ok.exit_code == 0, ok.stderr
    finally:
        pull.clear()


def test_there_is_no_switch_that_turns_verification_off(tmp_path: Path) -> None:
    for command in ("fetch", "list"):
        text = run_cli(command, "--help").stdout.lower()
        for word in ("insecure", "no-verify", "verify-ssl", "skip-tls", "no-check"):
            assert word not in text
    assert run_cli("fetch", "--insecure", "--group", GROUP, "--cluster", CLUSTER).exit_code == 2
    context = tls_context(Settings())
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


# -- absurd sizes from the pull host -----------------------------------------------------------


def test_an_absurd_content_length_is_refused_not_blamed_on_the_disk(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("rs0.tar.gz")
    atlas.pull.resources[job["_path"]].faults = [Fault(content_length=str(2**60))]
    result = run_cli(*fetch_args(atlas, tmp_path, "--retries", "0"))
    assert result.exit_code == 1
    (entry,) = _manifest_jobs(tmp_path)
    assert "claims the archive is 1152921504606846976 bytes" in entry["reason"]
    assert "space" not in entry["reason"]
    assert atlas.pull.requests_for(job["_path"])[0].sent < len(atlas.archives["rs0.tar.gz"]) + 1


@pytest.mark.parametrize("value", ["-5", "²", "9" * 5000, "12abc"])
def test_a_malformed_content_length_is_a_clean_failure(
    atlas: Atlas, creds: None, tmp_path: Path, value: str
) -> None:
    job = atlas.add("rs0.tar.gz")
    atlas.pull.resources[job["_path"]].faults = [Fault(content_length=value)]
    result = run_cli(*fetch_args(atlas, tmp_path, "--retries", "0"))
    assert result.exit_code == 1 and "internal error" not in result.stderr, result.stderr
    (entry,) = _manifest_jobs(tmp_path)
    assert entry["outcome"] == "failed" and "giving up" in entry["reason"]


def _plant_partial(atlas: Atlas, job: dict[str, Any], dest: Path, part: bytes, state: Any) -> None:
    """Leave a .part and its state file as an earlier run would have."""
    name = str(job["_path"]).rsplit("/", 1)[-1]
    dest.mkdir(exist_ok=True)
    (dest / partial_name(name)).write_bytes(part)
    text = state if isinstance(state, str) else json.dumps(state)
    (dest / state_name(name)).write_text(text)


def _state(job: dict[str, Any], atlas: Atlas, **changes: Any) -> dict[str, Any]:
    url = job["delivery"]["url"]
    state = {
        "version": 1,
        "jobId": job["id"],
        "source": display_url(url),
        "etag": atlas.pull.resources[job["_path"]].etag,
        "lastModified": None,
        "size": None,
        "sha1": job["hashes"][0]["hash"],
    }
    state.update(changes)
    return state


@pytest.mark.parametrize(
    ("status", "content_range"),
    [
        (206, "bytes 1000-{end}/" + "9" * 5000),
        (206, "bytes 1000-{end}/" + str(2**60)),
        (206, "bytes 1000-{end}/-5"),
        (416, "bytes */" + "9" * 5000),
    ],
)
def test_an_absurd_content_range_is_a_clean_failure(
    atlas: Atlas, creds: None, tmp_path: Path, status: int, content_range: str
) -> None:
    job = atlas.add("rs0.tar.gz")
    data = atlas.archives["rs0.tar.gz"]
    have = data if status == 416 else data[:1000]
    _plant_partial(atlas, job, tmp_path, have, _state(job, atlas))
    header = {"Content-Range": content_range.format(end=len(data) - 1)}
    fault = Fault(status=416, headers=header) if status == 416 else Fault(headers=header)
    atlas.pull.resources[job["_path"]].faults = [fault]
    result = run_cli(*fetch_args(atlas, tmp_path, "--retries", "0"))
    assert result.exit_code == 1 and "internal error" not in result.stderr, result.stderr
    (entry,) = _manifest_jobs(tmp_path)
    assert entry["outcome"] == "failed"
    assert "giving up" in entry["reason"] or "over 1 PiB" in entry["reason"]
    (request,) = atlas.pull.requests_for(job["_path"])
    assert request.headers["range"] == f"bytes={len(have)}-"  # the planted state was used


# -- bad local state -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "broken",
    [
        "{not json",
        "[" * 100_000,
        '{"manifestVersion": 1, "groupId": "g", "cluster": "c", "jobs": [{"id": "j",'
        ' "outcome": "verified", "reason": "", "files": [{"name": "../precious", "size": 1,'
        ' "sha1": "' + "a" * 40 + '"}]}]}',
    ],
    ids=["invalid-json", "nested-deep", "names-a-file-outside"],
)
def test_a_broken_manifest_is_kept_aside_and_rebuilt(
    atlas: Atlas, creds: None, tmp_path: Path, broken: str
) -> None:
    dest = tmp_path / "dest"
    atlas.add("rs0.tar.gz")
    assert run_cli(*fetch_args(atlas, dest)).exit_code == 0
    (dest / MANIFEST_NAME).write_text(broken)

    line = one_line_error(run_cli("verify", str(dest)))
    assert str(dest / MANIFEST_NAME) in line and len(line) < 300

    before = len(atlas.pull.log)
    result = run_cli(*fetch_args(atlas, dest))
    assert result.exit_code == 0, result.stderr
    assert "kept it as" in result.stderr
    assert len(atlas.pull.log) == before  # the verified archive was not fetched again
    (aside,) = dest.glob(f".{MANIFEST_NAME}.unreadable-*")
    assert aside.read_text() == broken  # the operator's file is not lost
    assert (dest / "rs0.tar.gz").read_bytes() == atlas.archives["rs0.tar.gz"]
    assert run_cli("verify", str(dest)).exit_code == 0


LYING_STATES: dict[str, Callable[[dict[str, Any], Atlas], Any]] = {
    "wrong-job-id": lambda job, atlas: _state(job, atlas, jobId=new_id(), size=10**6),
    "size-smaller-than-part": lambda job, atlas: _state(job, atlas, size=10),
    "negative-size": lambda job, atlas: _state(job, atlas, size=-5),
    "other-version": lambda job, atlas: _state(job, atlas, version=99),
    "garbage-json": lambda job, atlas: "{{{ not json",
    "nested-deep": lambda job, atlas: "[" * 100_000,
    "right-ids-wrong-bytes": lambda job, atlas: _state(job, atlas),
}


@pytest.mark.parametrize("lie", list(LYING_STATES))
def test_a_lying_part_state_means_start_over(
    atlas: Atlas, creds: None, tmp_path: Path, lie: str
) -> None:
    job = atlas.add("rs0.tar.gz")
    data = atlas.archives["rs0.tar.gz"]
    _plant_partial(atlas, job, tmp_path, os.urandom(1000), LYING_STATES[lie](job, atlas))
    result = run_cli(*fetch_args(atlas, tmp_path, "--retries", "0"))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert sha1((tmp_path / "rs0.tar.gz").read_bytes()) == sha1(data)
    asked = [r.headers.get("range") for r in atlas.pull.requests_for(job["_path"])]
    if lie == "right-ids-wrong-bytes":
        # Nothing in the state gives it away: the SHA1 does, and the retry starts from zero.
        assert asked == ["bytes=1000-", None]
    else:
        assert asked == [None]  # the state was not believed: one whole download
    assert not (tmp_path / partial_name("rs0.tar.gz")).exists()
    assert not (tmp_path / state_name("rs0.tar.gz")).exists()


def test_a_lock_that_cannot_be_opened_is_a_clear_error(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    # A real OSError from the lock, whoever runs the test (root included): the same mapping
    # a read-only DIR goes through.
    atlas.add("rs0.tar.gz")
    (tmp_path / LOCK_NAME).mkdir()
    line = one_line_error(run_cli(*fetch_args(atlas, tmp_path)))
    assert f"cannot write {tmp_path / LOCK_NAME}: Is a directory" in line


def test_a_read_only_dir_is_a_clear_error_and_loses_nothing(
    atlas: Atlas, creds: None, tmp_path: Path, read_only: Callable[[Path], None]
) -> None:
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    job = atlas.add("rs0.tar.gz")
    assert run_cli(*fetch_args(atlas, full)).exit_code == 0
    manifest = (full / MANIFEST_NAME).read_bytes()
    read_only(empty)
    read_only(full)

    result = run_without_privilege(fetch_args(atlas, empty))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        f"fetcher: error: cannot write {empty / LOCK_NAME}: Permission denied"
    )
    assert list(empty.iterdir()) == []

    # Reading still works; writing the manifest fails, and nothing already there is lost.
    assert run_without_privilege(["verify", str(full)]).returncode == 0
    result = run_without_privilege(fetch_args(atlas, full))
    assert result.returncode == 1, result.stderr
    assert "Permission denied" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (full / "rs0.tar.gz").read_bytes() == atlas.archives["rs0.tar.gz"]
    assert (full / MANIFEST_NAME).read_bytes() == manifest
    assert job["id"] in manifest.decode()


# == --verbose: every request and answer, no secret ================================================


def test_verbose_logs_every_request_and_no_secret(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    secrets = plant_secrets(atlas)

    result = run_cli(*fetch_args(atlas, tmp_path, "--verbose"))

    assert result.exit_code == 0, result.stderr
    log = [line for line in result.stderr.splitlines() if line.startswith("fetcher: ")]
    sent = [line for line in log if line.startswith("fetcher: > ")]
    answered = [line for line in log if line.startswith("fetcher: < ")]
    served = len(atlas.pull.log)
    api_requests = atlas.gate.challenges + atlas.gate.accepted
    assert len(sent) == len(answered) == served + api_requests
    # The API's Digest dance, shown as what it is, with neither the key nor the response.
    assert any(
        re.search(r"< 401 unauthorized for GET \S+/restoreJobs\?", line, re.IGNORECASE)
        for line in log
    ), "\n".join(log)
    assert any("WWW-Authenticate: Digest (challenge)" in line for line in log)
    assert any("Authorization: Digest (hidden)" in line for line in log)
    # The pull side: the Ops Manager bearer by its scheme only, the resume with its Range.
    assert any("Authorization: Bearer (hidden)" in line for line in log)
    assert any("Range: bytes=20000-" in line for line in log)
    assert any(re.search(r"< 206 Partial Content .* in \d+\.\d{3} s", line) for line in log)
    assert any("Content-Range: bytes 20000-" in line for line in log)
    assert any("/…/Cluster0-shard-1.tar.gz [" in line for line in sent)  # origin and name only
    everything = result.stdout + result.stderr
    for secret in secrets:
        assert secret not in everything, secret
    for digest_field in ("response=", "cnonce=", 'nonce="', "username="):
        assert digest_field not in everything, digest_field  # no Digest header, either way
    for word in ("response=", "cnonce", "nonce=", "X-Amz", "?"):
        assert not any(word in line for line in sent + answered if "/restoreJobs" not in line), word


def test_a_redirect_is_logged_without_the_token_it_leads_to(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    data = make_archive("rs0")
    token = new_id()
    moved = f"/backup/restore/v2/pull/{new_id()}/{token}/rs0.tar.gz"
    atlas.pull.add(moved, data)
    job = atlas.add("rs0.tar.gz", data, batch_id=None)
    atlas.pull.resources[job["_path"]].faults = [Fault(redirect_to=atlas.pull.url(moved))]

    result = run_cli(*api_args(atlas, "fetch", "--job", job["id"], "--dest", str(tmp_path), "-v"))

    assert result.exit_code == 0, result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if "Location:" in ln]
    assert "rs0.tar.gz" in line and token not in line
    assert sha1((tmp_path / "rs0.tar.gz").read_bytes()) == sha1(data)


# == several connections per archive ===============================================================


def test_a_link_that_allows_one_download_gets_one_connection_and_one_request(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("one.tar.gz", make_archive("one", payload=6 * MiB, level=1), max_downloads=1)
    result = run_cli(*loud(fetch_args(atlas, tmp_path / "a")))
    assert result.exit_code == 0, result.output + result.stderr
    assert (tmp_path / "a" / "one.tar.gz").exists()
    served = atlas.pull.requests_for(job["_path"])
    assert len(served) == 1 and "range" not in served[0].headers
    assert "allow 1 downloads: one connection per archive" in result.stderr
    # Asked for: several connections even there.
    other = atlas.add("two.tar.gz", make_archive("two", payload=6 * MiB, level=1), max_downloads=1)
    again = run_cli(*fetch_args(atlas, tmp_path / "b", "--only", "two.*", "--connections", "3"))
    assert again.exit_code == 0, again.output + again.stderr
    assert len(atlas.pull.requests_for(other["_path"])) >= 3


def test_kill_9_with_ranges_in_flight_then_a_rerun_fetches_little_twice(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    data = make_archive("big", payload=32 * MiB, level=1)
    job = atlas.add("big.tar.gz", data, max_downloads=2147483647)
    atlas.pull.resources[job["_path"]].rate = 3 * MiB  # per connection: about 3 s in all
    dest = tmp_path / "out"
    env = {
        **os.environ,
        "MONGODB_ATLAS_PUBLIC_API_KEY": PUBLIC_KEY,
        "MONGODB_ATLAS_PRIVATE_API_KEY": PRIVATE_KEY,
        "NETRC": str(tmp_path / "no-netrc"),
        "XDG_CONFIG_HOME": str(tmp_path / "no-config"),
    }
    args = [
        sys.executable,
        "-m",
        "fetcher.cli",
        "fetch",
        "--base-url",
        atlas.base_url,
        "--group",
        GROUP,
        "--cluster",
        CLUSTER,
        "--batch",
        BATCH,
        "--dest",
        str(dest),
        "--quiet",
        "--connections",
        "4",
    ]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = dest / state_name("big.tar.gz")
    deadline = time.monotonic() + 30
    kept = 0
    while time.monotonic() < deadline and kept < len(data) // 2:
        time.sleep(0.05)
        try:
            doc = json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        kept = sum(e - s for s, e in doc.get("done", []))
    assert kept >= len(data) // 2, "the transfer did not get halfway"
    # Several ranges in flight: requests still being answered when the process dies.
    ranges = {s.headers.get("range") for s in atlas.pull.requests_for(job["_path"])}
    assert len(ranges - {"bytes=0-0"}) >= 3
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(atlas.pull.requests_for(job["_path"]))
    # Over the same link: 3 MiB/s a connection.
    result = run_cli(*fetch_args(atlas, dest, "--connections", "4"))
    assert result.exit_code == 0, result.output + result.stderr
    assert (dest / "big.tar.gz").read_bytes() == data
    served = atlas.pull.bytes_sent(job["_path"])
    assert served <= 1.05 * len(data), (served, len(data))
    # The re-run asked for what was missing only, each range guarded by If-Range.
    rerun = atlas.pull.requests_for(job["_path"])[before:]
    assert rerun and all(s.headers.get("if-range") and s.headers.get("range") for s in rerun)


# == connections read in bulk over TLS =============================================================


def test_several_connections_over_https_from_the_command_line(
    httpserver: HTTPServer,
    https_pull: PullServer,
    authority: tuple[trustme.CA, Path],
    creds: None,
    tmp_path: Path,
) -> None:
    atlas = Atlas(httpserver, https_pull)
    data = make_archive("shard-0", payload=32 * 1024 * 1024, level=1)
    atlas.add("Cluster0-shard-0.tar.gz", data)
    atlas.add("Cluster0-config.tar.gz")
    dest = tmp_path / "out"
    extra = ("--ca-cert", str(authority[1]), "--connections", "2")
    result = run_cli(*fetch_args(atlas, dest, *extra))
    assert result.exit_code == 0, result.output + result.stderr
    assert (dest / "Cluster0-shard-0.tar.gz").read_bytes() == data
    assert manifest_doc(dest)["complete"] is True
    ranged = [s for s in https_pull.log if "shard-0" in s.path and s.headers.get("range")]
    assert len(ranged) > 4  # pieces, over connections kept open
    assert len({s.client for s in ranged}) < len(ranged)
    recorded = {f["name"]: f["sha1"] for job in manifest_doc(dest)["jobs"] for f in job["files"]}
    assert recorded["Cluster0-shard-0.tar.gz"] == sha1(data)


# == private files, and files that shrink while hashed =============================================


# -- point 5: everything fetcher creates is private -------------------------------------------


@pytest.mark.usefixtures("umask_022")
def test_fetch_creates_a_private_directory_and_private_files(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    atlas.add("rs0.tar.gz")
    dest = tmp_path / "out"
    result = run_cli(*fetch_args(atlas, dest))
    assert result.exit_code == 0, result.stderr
    assert file_mode(dest) == 0o700
    for name in ("rs0.tar.gz", "manifest.json", LOCK_NAME):
        assert file_mode(dest / name) == 0o600, name
    assert (dest / "rs0.tar.gz").read_bytes() == atlas.archives["rs0.tar.gz"]
