"""fetcher.manifest.records: an archive's record, and a job as the worst of its archives."""

from __future__ import annotations

import pytest

from fetcher import manifest as mf
from fetcher.checks.archive import ArchiveReport
from fetcher.manifest import FileRecord, JobRecord

JOB = "5c1b2c3d4e5f60718293a4b5"
A, B, C = "c-shard-0.tar.gz", "c-shard-1.tar.gz", "c-config-0.tar.gz"
SHA = "0" * 40


def verified(name: str) -> FileRecord:
    return FileRecord(name, "verified", "downloaded", size=10, sha1=SHA, archive_check="passed")


def job(*files: FileRecord, job_id: str = JOB) -> JobRecord:
    return JobRecord.of(job_id, files, info={"status": "FINISHED"})


@pytest.mark.parametrize(
    ("outcomes", "job_outcome", "failure"),
    [
        (["verified", "verified", "verified"], "verified", None),
        (["verified", "unverified", "verified"], "unverified", None),
        (["verified", "skipped", "unverified"], "skipped", None),
        (["verified", "failed", "skipped"], "failed", "error"),
    ],
)
def test_a_job_is_as_far_from_restorable_as_its_worst_archive(
    outcomes: list[mf.Outcome], job_outcome: str, failure: str | None
) -> None:
    failures: dict[str, mf.Failure | None] = {"failed": "error"}
    files = [
        FileRecord(name, o, f"{o} here", failure=failures.get(o))
        for name, o in zip((A, B, C), outcomes, strict=True)
    ]
    record = job(*files)
    assert (record.outcome, record.failure) == (job_outcome, failure)
    assert [f.name for f in record.files] == sorted((A, B, C))
    if job_outcome != "verified":
        worst = next(f for f in files if f.outcome == job_outcome)
        assert record.reason.endswith(f"{worst.name}: {job_outcome} here")


def test_integrity_over_error_and_one_archive_gives_its_reason() -> None:
    torn = FileRecord(A, "failed", "SHA1 mismatch", failure="integrity")
    lost = FileRecord(B, "failed", "connection reset", failure="error")
    assert job(torn, lost).failure == "integrity"
    assert job(torn).reason == "SHA1 mismatch"
    # A job whose archives are not known yet speaks for itself.
    waiting = JobRecord.of(JOB, (), info={}, outcome="skipped", reason="not ready yet")
    assert (waiting.outcome, waiting.reason, waiting.files) == ("skipped", "not ready yet", ())


def test_the_api_s_replica_set_comes_before_restore_info_s() -> None:
    report = ArchiveReport(None, {"Replica Set": "inside-name"}, 5, 3)
    listed = FileRecord(A, replica_set="c-shard-0").with_check(report)
    assert (listed.archive_check, listed.replica_set, listed.content_bytes) == (
        "passed",
        "c-shard-0",
        5,
    )
    assert FileRecord(A).with_check(report).replica_set == "inside-name"
    failed = FileRecord(A).with_check(ArchiveReport("truncated gzip stream", None, 0, 0))
    assert (failed.archive_check, failed.problem, failed.restore_info) == (
        "failed",
        "truncated gzip stream",
        None,
    )


def test_an_unpack_is_written_and_read_back_and_its_problem_is_an_error() -> None:
    tree = mf.Unpack("/r/rs0", "/r/rs0.mongod.conf", 3, 4096, "d" * 40)
    done = FileRecord("a.tar.gz", size=1, sha1="a" * 40, unpack=tree)
    entry = done.to_json()
    assert {k: entry[k] for k in ("unpackedTo", "mongodConfig", "unpackedFiles")} == {
        "unpackedTo": "/r/rs0",
        "mongodConfig": "/r/rs0.mongod.conf",
        "unpackedFiles": 3,
    }
    assert "unpackProblem" not in entry
    # Not unpacked here, the tree made elsewhere stays on record beside the problem.
    refused = FileRecord("a.tar.gz", size=1, sha1="a" * 40, unpack=mf.Unpack(
        "/r/rs0", None, 3, 4096, "d" * 40, problem="/s/rs0 holds data: not unpacked into it"
    ))  # fmt: skip
    for record in (done, refused):
        doc = {"id": "j1", "outcome": "verified", "reason": "", "files": [record.to_json()]}
        (back,) = (
            mf.parse({"manifestVersion": 2, "groupId": "g", "cluster": "c", "jobs": [doc]})
            .jobs[0]
            .files
        )
        assert back.unpack == record.unpack
    ok = JobRecord.of("j1", (done,), info={})
    bad = JobRecord.of("j2", (refused,), info={})
    assert mf.exit_code([ok]) == 0
    assert mf.exit_code([ok, bad]) == 1  # verified, and not unpacked as asked
