"""fetcher.manifest.document: merge (runs), combine (hosts), what is missing, the restore set."""

from __future__ import annotations

from fetcher import manifest as mf
from fetcher.manifest import FileRecord, JobRecord, Manifest
from tests.manifest.test_records import JOB, SHA, A, B, C, job, verified


def manifest(*jobs: JobRecord, batch_ids: tuple[str, ...] = ()) -> Manifest:
    return Manifest("g", "c", JOB, jobs=jobs, batch_job_ids=batch_ids)


def test_merge_lets_this_run_win_per_archive_and_keeps_the_others() -> None:
    before = manifest(job(verified(A), verified(B)), batch_ids=(JOB,))
    # This run (--only the first shard, say) found A changed; B is another host's now.
    now = manifest(job(FileRecord(A, "failed", "no longer matches", failure="integrity")))
    merged = mf.merge(before, now)
    (record,) = merged.jobs
    assert record.id == JOB and [f.outcome for f in record.files] == ["failed", "verified"]
    assert record.outcome == "failed" and merged.batch_job_ids == (JOB,)


def test_merge_drops_the_slot_that_stood_for_a_job_once_its_archives_are_known() -> None:
    waiting = JobRecord.of(JOB, (), info={}, outcome="skipped", reason="not finished yet")
    merged = mf.merge(manifest(waiting), manifest(job(verified(A)), job(verified(B))))
    (record,) = merged.jobs
    assert record.outcome == "verified" and len(record.files) == 2
    assert not merged.missing_archives and merged.complete


def test_merge_of_another_batch_starts_afresh() -> None:
    other = Manifest("g", "c", "another-batch", jobs=(job(verified(C)),))
    merged = mf.merge(other, manifest(job(verified(A))))
    assert [f.name for f in merged.jobs[0].files] == [A]


def test_combine_counts_an_archive_where_it_was_verified() -> None:
    host1 = Manifest("g", "c", JOB, (job(verified(A), FileRecord(B, "skipped", "gone")),))
    host2 = Manifest("g", "c", JOB, (job(FileRecord(A, "failed", "x"), verified(B)),))
    (record,) = mf.combine([host1, host2]).jobs
    assert record.outcome == "verified" and [f.outcome for f in record.files] == ["verified"] * 2


def test_missing_archives_name_the_file_or_the_job() -> None:
    waiting = JobRecord.of("6" * 24, (), info={}, outcome="skipped", reason="not ready")
    doc = manifest(job(verified(A), FileRecord(B, "skipped", "expired")), waiting)
    missing = [(j.id, f.name if f else None) for j, f in doc.missing_archives]
    assert missing == [(JOB, B), ("6" * 24, None)]
    restore_set = doc.restore_set_json()
    assert restore_set is not None and restore_set["missingJobs"] == [JOB, "6" * 24]


def test_one_job_of_several_archives_is_judged_as_a_sharded_restore() -> None:
    # An Atlas v2 sharded restore: one job, the manifest's batch, with three archives.
    info = {"Replica Set": "", "Restore timestamp": "t"}
    files = [
        FileRecord(
            n,
            "verified",
            "ok",
            size=1,
            sha1=SHA,
            archive_check="passed",
            replica_set=n.removesuffix(".tar.gz"),
            restore_info=info,
        )
        for n in (A, B, C)
    ]
    restore_set = manifest(job(*files)).restore_set
    assert restore_set is not None and restore_set.config_server == "c-config-0"
    assert restore_set.problems == ()
