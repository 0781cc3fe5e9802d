"""fetcher.cli.render: the list table from the model, and the per-archive lines of a fetch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fetcher.cli.render import job_line, list_lines
from fetcher.manifest import FileRecord, JobRecord
from fetcher.service.model import Archive, Delivery, RestoreJob

NOW = datetime(2026, 12, 4, 10, tzinfo=UTC)
LATER = NOW + timedelta(hours=2)
SHA = "ab" * 20


def legacy_job(job_id: str, name: str) -> RestoreJob:
    archive = Archive(job_id, names=(name,), url=f"https://pull.example/p/{job_id}/t/{name}")
    return RestoreJob(job_id, "FINISHED", Delivery("HTTP", "READY", LATER), (archive,))


def test_a_legacy_listing_drops_the_columns_that_say_nothing() -> None:
    lines = list_lines([legacy_job("a" * 24, "s0.tar.gz"), legacy_job("b" * 24, "s1.tar.gz")], NOW)
    assert lines[0].split() == ["JOB", "ID", "FILE", "JOB", "DELIVERY", "EXPIRES", "DOWNLOADABLE"]
    assert lines[1].split() == [
        "a" * 24,
        "s0.tar.gz",
        "FINISHED",
        "READY",
        "2026-12-04T12:00:00Z",
        "yes",
    ]


def test_a_job_of_several_archives_lists_them_under_it_with_its_type() -> None:
    archives = tuple(
        Archive(
            f"j:{rs}",
            names=(f"{rs}.tar.gz",),
            url=f"https://s3.example/{rs}.tar.gz",
            replica_set=rs,
            sha1_source="none",
            secret_path=False,
        )
        for rs in ("c-shard-0", "c-config-0")
    )
    delivery = Delivery("download", "READY", LATER, type_label="download")
    lines = list_lines([RestoreJob("c" * 24, "FINISHED", delivery, archives)], NOW)
    assert "REPLICA SET" in lines[0] and "TYPE" in lines[0]
    assert lines[1].split()[:4] == ["c" * 24, "c-shard-0.tar.gz", "c-shard-0", "download"]
    assert lines[2].split() == ["c-config-0.tar.gz", "c-config-0"]  # the job's cells once


def test_job_lines_say_an_archive_with_its_bytes_or_a_job_by_its_id() -> None:
    verified = FileRecord(
        "s0.tar.gz", "verified", "downloaded", size=2048, sha1=SHA, attempts=2, resumed_bytes=1024
    )
    line = job_line(JobRecord.of("a" * 24, (verified,), info={}))
    assert (
        line
        == f"verified   s0.tar.gz  2.0 KiB  sha1 {SHA}  (downloaded, 2 attempts, 1.0 KiB resumed)"
    )
    skipped = FileRecord("s1.tar.gz", "skipped", "delivery EXPIRED")
    assert job_line(JobRecord.of("b" * 24, (skipped,), info={})) == (
        f"skipped    job {'b' * 24} (s1.tar.gz): delivery EXPIRED"
    )
    waiting = JobRecord("c" * 24, "skipped", "not ready yet")
    assert job_line(waiting) == f"skipped    job {'c' * 24}: not ready yet"
