"""fetcher.manifest.codec and store: version 2 round trips; version 1 is read and rewritten."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fetcher import manifest as mf
from fetcher.errors import ManifestError
from fetcher.manifest import FileRecord, JobRecord, Manifest
from fetcher.storage import Destination

JOB = "5c1b2c3d4e5f60718293a4b5"
LEGACY = "5c1b2c3d4e5f60718293a4c0"
SHA = "ab" * 20
INFO = {"Replica Set": "c-shard-0", "Restore timestamp": "Tue Nov 14 22:13:20 UTC 2023"}


def v1_checked(name: str, replica_set: str) -> dict[str, Any]:
    return {
        "name": name,
        "size": 10,
        "sha1": SHA,
        "archiveCheck": "passed",
        "replicaSet": replica_set,
        "restoreInfo": {**INFO, "Replica Set": replica_set},
        "contentBytes": 5,
    }


# What fetcher 0.1 wrote for an Atlas v2 sharded job fetched with --job: one entry per
# archive with a made-up id, the job's own id only in jobId; and a legacy job beside it.
V1: dict[str, Any] = {
    "manifestVersion": 1,
    "tool": "fetcher 0.1.0",
    "updated": "2026-12-01T10:00:00Z",
    "groupId": "g",
    "cluster": "c",
    "batchId": JOB,
    "complete": False,
    "selection": [],
    "batchJobIds": [f"{JOB}:c-shard-0", f"{JOB}:c-config-0", f"{JOB}:c-shard-1"],
    "restoreSet": None,
    "jobs": [
        {
            "id": f"{JOB}:c-shard-0",
            "outcome": "verified",
            "reason": "downloaded",
            "files": [v1_checked("c-shard-0.tar.gz", "c-shard-0")],
            "attempts": 2,
            "resumedBytes": 4,
            "jobId": JOB,
            "replicaSetName": "c-shard-0",
            "status": "FINISHED",
        },
        {
            "id": f"{JOB}:c-config-0",
            "outcome": "verified",
            "reason": "downloaded",
            "files": [v1_checked("c-config-0.tar.gz", "c-config-0")],
            "attempts": 1,
            "resumedBytes": 0,
            "jobId": JOB,
            "replicaSetName": "c-config-0",
            "status": "FINISHED",
        },
        {
            "id": f"{JOB}:c-shard-1",
            "outcome": "failed",
            "failure": "error",
            "reason": "c-shard-1.tar.gz: connection reset",
            "files": [],
            "attempts": 0,
            "resumedBytes": 0,
            "jobId": JOB,
            "replicaSetName": "c-shard-1",
            "fileName": "c-shard-1.tar.gz",
            "status": "FINISHED",
        },
    ],
}


def test_a_version_1_manifest_with_split_entries_is_one_job_and_is_rewritten(
    tmp_path: Path,
) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(V1))
    with Destination(tmp_path) as dest:
        manifest = mf.load(dest)
        assert manifest is not None
        (job,) = manifest.jobs
        assert job.id == JOB and job.outcome == "failed" and job.failure == "error"
        assert manifest.batch_job_ids == (JOB,)
        files = {f.name: f for f in job.files}
        assert set(files) == {"c-shard-0.tar.gz", "c-config-0.tar.gz", "c-shard-1.tar.gz"}
        shard = files["c-shard-0.tar.gz"]
        assert (shard.outcome, shard.attempts, shard.resumed_bytes) == ("verified", 2, 4)
        lost = files["c-shard-1.tar.gz"]
        assert (lost.outcome, lost.failure, lost.replica_set, lost.on_disk) == (
            "failed",
            "error",
            "c-shard-1",
            False,
        )
        assert "jobId" not in job.info and job.info["status"] == "FINISHED"
        mf.write(dest, manifest)
    doc = json.loads((tmp_path / "manifest.json").read_text())
    assert doc["manifestVersion"] == 2 and doc["batchJobIds"] == [JOB]
    (entry,) = doc["jobs"]
    assert entry["id"] == JOB and len(entry["files"]) == 3
    assert {f["outcome"] for f in entry["files"]} == {"verified", "failed"}
    assert doc["restoreSet"]["missingJobs"] == [JOB]


def test_version_2_round_trips(tmp_path: Path) -> None:
    checked = FileRecord(
        "a.tar.gz",
        "verified",
        "downloaded",
        size=10,
        sha1=SHA,
        attempts=2,
        resumed_bytes=3,
        archive_check="passed",
        replica_set="rs0",
        restore_info=INFO,
        content_bytes=5,
    )
    damaged = FileRecord(
        "b.tar.gz",
        "failed",
        "damaged",
        failure="integrity",
        archive_check="failed",
        problem="truncated gzip stream",
        replica_set="rs1",
    )
    jobs = (
        JobRecord.of(JOB, (checked, damaged), info={"snapshotId": "s"}),
        JobRecord.of(LEGACY, (), info={}, outcome="skipped", reason="delivery EXPIRED"),
    )
    with Destination(tmp_path) as dest:
        written = mf.write(dest, Manifest("g", "c", "b", jobs, batch_job_ids=(JOB, LEGACY)))
        loaded = mf.load(dest)
    assert loaded == written


def test_a_version_1_journal_left_by_a_killed_older_run_is_folded_in(tmp_path: Path) -> None:
    head = {"journalVersion": 1, "groupId": "g", "cluster": "c", "batchId": JOB}
    line = json.dumps(V1["jobs"][0])
    (tmp_path / ".manifest.journal").write_text(f"{json.dumps(head)}\n{line}\n")
    with Destination(tmp_path) as dest:
        manifest = mf.load(dest)
    assert manifest is not None
    (job,) = manifest.jobs
    assert job.id == JOB and [f.name for f in job.files] == ["c-shard-0.tar.gz"]


@pytest.mark.parametrize(
    "change",
    [
        {"manifestVersion": 3},
        {"jobs": [{"id": JOB, "outcome": "done", "reason": "", "files": []}]},
        {
            "jobs": [
                {
                    "id": JOB,
                    "outcome": "verified",
                    "reason": "",
                    "files": [{"name": "a", "size": 1}],
                }
            ]
        },
        {
            "jobs": [
                {
                    "id": JOB,
                    "outcome": "verified",
                    "reason": "",
                    "files": [{"name": "../a", "outcome": "verified"}],
                }
            ]
        },
    ],
)
def test_a_document_fetcher_did_not_write_is_refused(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    doc = {**V1, "manifestVersion": 2, "jobs": [], **change}
    (tmp_path / "manifest.json").write_text(json.dumps(doc))
    with Destination(tmp_path) as dest, pytest.raises(ManifestError):
        mf.load(dest)


def test_a_version_1_entry_for_an_archive_not_named_yet_stays_one_of_the_job_s(
    tmp_path: Path,
) -> None:
    # The config server's archive had no link yet: version 1 wrote an entry with its
    # replica set and no file. It must keep the job incomplete.
    waiting = {
        "id": f"{JOB}:c-config-0",
        "outcome": "skipped",
        "reason": "finished, but no download link yet",
        "files": [],
        "jobId": JOB,
        "replicaSetName": "c-config-0",
    }
    manifest = mf.parse({**V1, "jobs": [V1["jobs"][0], waiting]})
    (job,) = manifest.jobs
    assert job.outcome == "skipped" and not manifest.complete
    unnamed = next(f for f in job.files if f.name is None)
    assert (unnamed.replica_set, unnamed.reason) == ("c-config-0", waiting["reason"])
    # Written and read again as version 2: the same.
    with Destination(tmp_path) as dest:
        written = mf.write(dest, manifest)
        assert mf.load(dest) == written
    entry = json.loads((tmp_path / "manifest.json").read_text())["jobs"][0]
    assert {"name": None, "outcome": "skipped"}.items() <= next(
        f for f in entry["files"] if f["name"] is None
    ).items()


@pytest.mark.parametrize("placeholder_first", [True, False])
def test_a_version_1_entry_that_stood_for_the_whole_job_gives_way_whatever_its_place(
    placeholder_first: bool,
) -> None:
    placeholder: dict[str, Any] = {
        "id": JOB,
        "outcome": "skipped",
        "reason": "not finished yet",
        "files": [],
        "status": "IN_PROGRESS",
        "timestamp": None,
    }
    split = [dict(e, timestamp={"date": "2026-11-28T09:00:00Z"}) for e in V1["jobs"][:2]]
    jobs = [placeholder, *split] if placeholder_first else [*split, placeholder]
    (job,) = mf.parse({**V1, "jobs": jobs}).jobs
    assert job.outcome == "verified" and len(job.files) == 2
    assert job.info["status"] == "FINISHED" and job.info["timestamp"] is not None


def test_a_named_record_of_an_archive_takes_the_place_of_its_unnamed_one() -> None:
    unnamed = FileRecord(None, "skipped", "no link yet", replica_set="c-config-0")
    named = FileRecord(
        "c-config-0.tar.gz", "verified", "downloaded", size=1, sha1=SHA, replica_set="c-config-0"
    )
    before = Manifest("g", "c", JOB, (JobRecord.of(JOB, (unnamed,), info={}),))
    after = Manifest("g", "c", JOB, (JobRecord.of(JOB, (named,), info={}),))
    (job,) = mf.merge(before, after).jobs
    assert job.files == (named,) and job.outcome == "verified"
