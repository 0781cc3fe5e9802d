"""fetcher.fetch.run: the Fetcher itself, against the fake API and pull host (no CLI)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetcher.config import Credentials, Settings
from fetcher.engine.transfer import Progress
from fetcher.fetch import Fetcher, Target, WaitStatus
from fetcher.manifest import JobRecord
from fetcher.redact import Redactor
from fetcher.retry import RetryPolicy
from fetcher.service.client import RestoreJobsClient
from fetcher.service.http import api_client, pull_client
from fetcher.storage import Destination
from tests.atlasv2 import CLUSTER_V2, AtlasV2
from tests.conftest import Atlas
from tests.support import BATCH, GROUP, PRIVATE_KEY, PUBLIC_KEY


class Heard:
    """A Reporter that keeps what it hears."""

    def __init__(self) -> None:
        self.records: list[JobRecord] = []
        self.lock = threading.Lock()

    def progress(self, name: str) -> Progress:
        return lambda done, total: None

    def finished(self, record: JobRecord) -> None:
        with self.lock:
            self.records.append(record)

    def note(self, text: str) -> None:
        pass

    def remark(self, text: str) -> None:
        pass

    def waiting(self, status: WaitStatus | None) -> None:
        pass


@pytest.fixture
def heard() -> Heard:
    return Heard()


@contextlib.contextmanager
def fetcher_for(base_url: str, dest: Path, target: Target, heard: Heard) -> Iterator[Fetcher]:
    settings = Settings(base_url=base_url, retries=1)
    policy = RetryPolicy(retries=1, sleep=lambda s: None)
    with (
        api_client(settings, Credentials(PUBLIC_KEY, PRIVATE_KEY)) as http,
        pull_client(settings) as pull,
        Destination(dest) as destination,
    ):
        api = RestoreJobsClient(http, base_url, policy=policy)
        destination.lock()
        yield Fetcher(
            api, pull, destination, target, reporter=heard, redactor=Redactor(), policy=policy
        )


def test_each_archive_is_heard_of_once_and_each_job_is_one_entry(
    atlas: Atlas, heard: Heard, tmp_path: Path
) -> None:
    atlas.add("Cluster0-shard-0.tar.gz", batch_id=BATCH)
    atlas.add("Cluster0-config.tar.gz", batch_id=BATCH)
    waiting = atlas.add("Cluster0-shard-1.tar.gz", batch_id=BATCH, status="IN_PROGRESS")
    target = Target(group=GROUP, cluster="Cluster0", batch_id=BATCH)
    with fetcher_for(atlas.base_url, tmp_path, target, heard) as fetcher:
        manifest = fetcher.run()
        assert sorted(r.id for r in fetcher.records) == sorted(r.id for r in heard.records)
    assert len(heard.records) == 3 and all(len(r.files) <= 1 for r in heard.records)
    by_id = {job.id: job for job in manifest.jobs}
    assert by_id[waiting["id"]].outcome == "skipped" and by_id[waiting["id"]].files == ()
    assert manifest.batch_id == BATCH and len(manifest.batch_job_ids) == 3
    assert json.loads((tmp_path / "manifest.json").read_text())["manifestVersion"] == 2


def test_a_job_that_is_a_whole_restore_is_the_manifest_s_batch(
    atlas_v2: AtlasV2, heard: Heard, tmp_path: Path
) -> None:
    sets = (f"{CLUSTER_V2}-shard-0", f"{CLUSTER_V2}-shard-1", f"{CLUSTER_V2}-config-0")
    job = atlas_v2.add(sets)
    target = Target(group=GROUP, cluster=CLUSTER_V2, job_id=job.id, only=("*-shard-1",))
    with fetcher_for(atlas_v2.base_url, tmp_path, target, heard) as fetcher:
        manifest = fetcher.run()
    assert manifest.batch_id == job.id  # no --batch: the dialect says the job is the restore
    (entry,) = manifest.jobs
    assert [f.replica_set for f in entry.files] == [f"{CLUSTER_V2}-shard-1"]
    # Every archive the job lists is on record, this host's or not.
    assert sorted(entry.listed) == sorted(f"{s}.tar.gz" for s in sets)
