"""Restore readiness through `fetcher fetch` and `fetcher verify`: the archive check, what
restoreInfo.txt says, and the batch judged as one restore set."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from fetcher.errors import EXIT_INCOMPLETE, EXIT_INTEGRITY, EXIT_OK
from fetcher.names import partial_name
from tests.conftest import Atlas, fetch_args, job_entry, loud, manifest_doc, run_cli
from tests.pullserver import Fault
from tests.support import make_archive, restore_info, sha1

KiB = 1024
SHARDS = ["Cluster0-shard-0", "Cluster0-shard-1", "Cluster0-shard-2"]
CONFIG = "Cluster0-config"
JOB_TIME = "2026-11-28T09:00:00Z"  # support.job_json's timestamp.date


def _batch(atlas: Atlas, **special: bytes) -> dict[str, dict[str, Any]]:
    """A 3-shard + config batch; `special` replaces the archive of a replica set."""
    jobs = {}
    for rs in [*SHARDS, CONFIG]:
        jobs[rs] = atlas.add(f"{rs}.tar.gz", special.get(rs) or make_archive(rs, 32 * KiB))
    return jobs


def _gz(tar_bytes: bytes) -> bytes:
    import gzip

    return gzip.compress(tar_bytes, compresslevel=1)


def _escaping_archive(rs: str) -> bytes:
    """A restore archive with one more member, whose path climbs out of the directory."""
    evil = tarfile.TarInfo("../../etc/cron.d/evil")
    buf = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(make_archive(rs, 4 * KiB)), mode="r:gz") as src,
        tarfile.open(fileobj=buf, mode="w") as tar,
    ):
        for member in src.getmembers():
            tar.addfile(member, src.extractfile(member))
        evil.size = 5
        tar.addfile(evil, io.BytesIO(b"evil\n"))
    return _gz(buf.getvalue())


# -- a good batch ----------------------------------------------------------------------------


def test_a_good_batch_is_ready_to_restore(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    jobs = _batch(atlas)

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
    assert header == ["ARCHIVE", "REPLICA", "SET", "MONGODB", "ENGINE", "UNPACKED"]
    assert lines[-2].split()[:4] == [f"{CONFIG}.tar.gz", CONFIG, "7.0.12", "wiredTiger"]


# -- damaged archives ------------------------------------------------------------------------


def _truncated(rs: str) -> bytes:
    return make_archive(rs, 32 * KiB)[:-200]


def _garbage(rs: str) -> bytes:
    return make_archive(rs, 32 * KiB) + b"<html>502 Bad Gateway</html>"


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_truncated, "truncated"),
        (_garbage, "after the end of the gzip data"),
        (_escaping_archive, "climbs out of the archive"),
    ],
    ids=["truncated-gzip", "trailing-garbage", "member-escapes"],
)
def test_a_damaged_published_archive_fails_and_is_not_downloaded_again(
    atlas: Atlas, creds: None, tmp_path: Path, damage: Any, problem: str
) -> None:
    bad = damage(SHARDS[1])
    jobs = _batch(atlas, **{SHARDS[1]: bad})  # the API publishes the damaged archive's SHA1
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
    jobs = _batch(atlas)
    big = make_archive(SHARDS[0], 512 * KiB)
    jobs[SHARDS[0]] = atlas.add(f"{SHARDS[0]}-big.tar.gz", big)
    atlas.jobs.remove(next(j for j in atlas.jobs if j["_path"].endswith(f"/{SHARDS[0]}.tar.gz")))
    atlas.pull.resources[jobs[SHARDS[0]]["_path"]].faults = [Fault(drop_after=300 * KiB)]
    assert run_cli(*fetch_args(atlas, tmp_path, "--retries", "0")).exit_code == 1

    result = run_cli(*fetch_args(atlas, tmp_path))

    assert result.exit_code == EXIT_OK, result.stderr
    entry = job_entry(tmp_path, jobs[SHARDS[0]])
    assert entry["resumedBytes"] == 300 * KiB
    (f,) = entry["files"]
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
    _batch(atlas, **special)

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
    jobs = _batch(atlas)
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


def _as_an_older_fetcher_wrote_it(dest: Path) -> None:
    doc = manifest_doc(dest)
    doc.pop("restoreSet")
    for job in doc["jobs"]:
        job["files"] = [{k: f[k] for k in ("name", "size", "sha1")} for f in job["files"]]
    (dest / "manifest.json").write_text(json.dumps(doc))


def test_verify_deep_fills_in_an_older_manifest(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    _batch(atlas)
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == EXIT_OK
    full = manifest_doc(tmp_path)
    _as_an_older_fetcher_wrote_it(tmp_path)

    plain = run_cli("verify", str(tmp_path))

    assert plain.exit_code == EXIT_OK  # SHA1-only, as before
    assert "restore set not judged: 4 archives were verified by an older fetcher" in plain.stdout
    assert "archive check" not in manifest_doc(tmp_path)["jobs"][0]["files"][0]

    deep = run_cli("verify", "--deep", str(tmp_path))

    assert deep.exit_code == EXIT_OK, deep.stdout
    assert deep.stdout.count("archive check passed") == 4
    assert deep.stdout.rstrip().endswith(f"restore point {JOB_TIME}")
    filled = manifest_doc(tmp_path)
    assert filled["restoreSet"] == full["restoreSet"]
    assert [j["files"] for j in filled["jobs"]] == [j["files"] for j in full["jobs"]]


def test_verify_deep_finds_an_archive_that_only_its_sha1_vouched_for(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    _batch(atlas)
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == EXIT_OK
    _as_an_older_fetcher_wrote_it(tmp_path)
    # What an older fetcher would have accepted: a damaged archive whose SHA1 matched.
    doc = manifest_doc(tmp_path)
    f = doc["jobs"][0]["files"][0]
    bad = _garbage(SHARDS[0])
    (tmp_path / f["name"]).write_bytes(bad)
    f.update(size=len(bad), sha1=sha1(bad))
    (tmp_path / "manifest.json").write_text(json.dumps(doc))

    assert run_cli("verify", str(tmp_path)).exit_code == EXIT_OK
    deep = run_cli("verify", "--deep", str(tmp_path))

    assert deep.exit_code == EXIT_INTEGRITY
    (line,) = [ln for ln in deep.stdout.splitlines() if ln.startswith("damaged")]
    assert f["name"] in line and "after the end of the gzip data" in line


def test_a_kept_damaged_archive_without_a_sha1_is_not_downloaded_on_every_run(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add(f"{SHARDS[0]}.tar.gz", _truncated(SHARDS[0]), with_hashes=False)
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == EXIT_INTEGRITY

    again = run_cli(*fetch_args(atlas, tmp_path))

    assert again.exit_code == EXIT_INTEGRITY
    assert len(atlas.pull.requests_for(job["_path"])) == 1  # the kept bytes decide again
    assert (tmp_path / partial_name(f"{SHARDS[0]}.tar.gz")).exists()
