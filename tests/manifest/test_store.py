"""fetcher.manifest: its document, merging and exit codes."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from fetcher import manifest as mf
from fetcher.errors import ManifestError
from fetcher.manifest import JobRecord, Manifest
from fetcher.storage import Destination
from tests.support import ARCHIVE_BYTES, manifest_of, sha1, verified_record


@pytest.mark.parametrize(
    ("outcomes", "failures", "code"),
    [
        (["verified", "verified"], [None, None], 0),
        (["verified", "skipped"], [None, None], 3),
        (["verified", "unverified"], [None, None], 3),
        (["skipped", "failed"], [None, "error"], 1),
        (["failed", "failed", "skipped"], ["error", "integrity", None], 4),
        ([], [], 3),
    ],
)
def test_exit_code_precedence(
    outcomes: list[mf.Outcome], failures: list[mf.Failure | None], code: int
) -> None:
    jobs = [
        JobRecord(str(i), o, "", failure=f)
        for i, (o, f) in enumerate(zip(outcomes, failures, strict=True))
    ]
    assert mf.exit_code(jobs) == code


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    (archive,) = verified_record("j1", "a.tar.gz").files
    archive = replace(archive, attempts=2, resumed_bytes=10)
    job = JobRecord.of("j1", (archive,), info={"snapshotId": "s"})
    with Destination(tmp_path) as dest:
        mf.write(dest, manifest_of(job, JobRecord("j2", "skipped", "delivery EXPIRED")))
        loaded = mf.load(dest)
    doc = json.loads((tmp_path / "manifest.json").read_text())
    assert doc["manifestVersion"] == 2 and doc["batchId"] == "b" and doc["complete"] is False
    assert doc["jobs"][0]["files"] == [
        {
            "name": "a.tar.gz",
            "outcome": "verified",
            "reason": "downloaded",
            "size": len(ARCHIVE_BYTES),
            "sha1": sha1(ARCHIVE_BYTES),
            "attempts": 2,
            "resumedBytes": 10,
        }
    ]
    assert doc["jobs"][0]["snapshotId"] == "s" and doc["jobs"][0]["outcome"] == "verified"
    assert loaded is not None and loaded.jobs[0] == job
    assert not [p for p in tmp_path.iterdir() if ".tmp." in p.name]


def test_merge_keeps_earlier_jobs_and_prefers_this_run() -> None:
    old = manifest_of(
        verified_record("j1", "a.tar.gz"), JobRecord("j2", "skipped", "not ready yet")
    )
    new = manifest_of(verified_record("j2", "b.tar.gz"))
    merged = mf.merge(old, new)
    assert [(j.id, j.outcome) for j in merged.jobs] == [("j1", "verified"), ("j2", "verified")]
    assert merged.complete
    other_batch = Manifest(group_id="g", cluster="c", batch_id="other", jobs=new.jobs)
    assert mf.merge(old, other_batch) == other_batch


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"manifestVersion": 99, "jobs": []}',
        '{"manifestVersion": 1, "groupId": "g", "cluster": "c",'
        ' "jobs": [{"id": "x", "outcome": "great"}]}',
        '{"manifestVersion": 1, "groupId": "g", "cluster": "c",'
        ' "jobs": [{"id": "x", "outcome": "verified",'
        ' "reason": "", "files": [{"name": "../../etc/passwd", "size": 1, "sha1": "'
        + "a" * 40
        + '"}]}]}',
    ],
)
def test_unusable_manifests_are_manifest_errors(tmp_path: Path, text: str) -> None:
    (tmp_path / "manifest.json").write_text(text)
    with Destination(tmp_path) as dest, pytest.raises(ManifestError):
        mf.load(dest)


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")
@pytest.mark.parametrize("how", ["owner", "hard-link"])
def test_a_journal_of_another_user_is_set_aside_not_folded_in(tmp_path: Path, how: str) -> None:
    target = manifest_of()
    with Destination(tmp_path) as dest:
        mf.Journal(dest, target).append(verified_record("j1", "a.tar.gz"))  # a killed run's
        journal = tmp_path / mf.JOURNAL_NAME
        if how == "owner":
            os.chown(journal, 65534, 65534)
        else:
            os.link(journal, tmp_path.parent / f"{tmp_path.name}-elsewhere")
        assert mf.recover(dest, target, note=lambda line: None) is None  # nothing recorded
        mf.Journal(dest, target).append(verified_record("j2", "b.tar.gz"))
    (aside,) = tmp_path.glob(f"{mf.JOURNAL_NAME}.foreign-*")
    assert b"j1" in aside.read_bytes()
    assert journal.stat().st_uid == os.getuid() and journal.stat().st_nlink == 1
    assert b"j1" not in journal.read_bytes()
