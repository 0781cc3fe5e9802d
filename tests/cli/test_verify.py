"""`fetcher verify` (fetcher.cli): DIR... re-hashed (with --deep: checked) against the manifest."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from fetcher.errors import EXIT_ERROR, EXIT_INCOMPLETE, EXIT_INTEGRITY, EXIT_OK
from fetcher.names import MANIFEST_NAME
from fetcher.storage import HASH_BLOCK, LOCK_NAME, Destination
from tests.atlasv2 import CLUSTER_V2, AtlasV2
from tests.conftest import (
    Atlas,
    add_batch,
    add_host_batch,
    add_shards,
    fetch_args,
    fetch_job,
    job_entry,
    manifest_doc,
    run_cli,
)
from tests.support import (
    BATCH,
    CONFIG,
    HOST_SHARDS,
    SHARDS,
    new_id,
    only_line,
    run_without_privilege,
    sha1,
    with_garbage,
    write_manifest,
)

# == a batch end to end, in-process ================================================================


def test_verify_command(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    add_shards(atlas, 1)
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    intact = run_cli("verify", str(tmp_path))
    assert intact.exit_code == 0 and "2 of 2 archives intact" in intact.stdout
    (tmp_path / "Cluster0-shard-0.tar.gz").write_bytes(b"tampered")
    (tmp_path / "Cluster0-config.tar.gz").unlink()
    broken = run_cli("verify", str(tmp_path), "--json")
    assert broken.exit_code == 4
    doc = json.loads(broken.stdout)
    assert {a["name"]: a["status"] for a in doc["archives"]} == {
        "Cluster0-shard-0.tar.gz": "changed",
        "Cluster0-config.tar.gz": "missing",
    }
    text = run_cli("verify", str(tmp_path))
    assert "changed       Cluster0-shard-0.tar.gz" in text.stdout
    assert "missing       Cluster0-config.tar.gz" in text.stdout


def test_verify_without_manifest_is_an_error(tmp_path: Path) -> None:
    result = run_cli("verify", str(tmp_path))
    assert result.exit_code == 1
    assert "no manifest.json" in only_line(result.stderr)
    assert run_cli("verify", str(tmp_path / "nope")).exit_code == 1


# == restore readiness: the archive check, restoreInfo.txt, the restore set ========================


JOB_TIME = "2026-11-28T09:00:00Z"  # support.job_json's timestamp.date


# -- verify --deep ------------------------------------------------------------------------------


def _as_an_older_fetcher_wrote_it(dest: Path) -> None:
    """Manifest version 1 before the archive check: a name, a size and a SHA1 per file, the
    transfer's counts on the job."""
    doc = manifest_doc(dest)
    doc.pop("restoreSet")
    doc["manifestVersion"] = 1
    for job in doc["jobs"]:
        (f,) = job["files"]
        job.update(attempts=f["attempts"], resumedBytes=f["resumedBytes"])
        job["files"] = [{k: f[k] for k in ("name", "size", "sha1")}]
    (dest / "manifest.json").write_text(json.dumps(doc))


def test_verify_deep_fills_in_an_older_manifest(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    add_batch(atlas)
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
    add_batch(atlas)
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == EXIT_OK
    _as_an_older_fetcher_wrote_it(tmp_path)
    # What an older fetcher would have accepted: a damaged archive whose SHA1 matched.
    doc = manifest_doc(tmp_path)
    f = doc["jobs"][0]["files"][0]
    bad = with_garbage(SHARDS[0])
    (tmp_path / f["name"]).write_bytes(bad)
    f.update(size=len(bad), sha1=sha1(bad))
    (tmp_path / "manifest.json").write_text(json.dumps(doc))

    assert run_cli("verify", str(tmp_path)).exit_code == EXIT_OK
    deep = run_cli("verify", "--deep", str(tmp_path))

    assert deep.exit_code == EXIT_INTEGRITY
    (line,) = [ln for ln in deep.stdout.splitlines() if ln.startswith("damaged")]
    assert f["name"] in line and "after the end of the gzip data" in line


# == one batch across many hosts: fetch --only, verify DIR... ======================================


def test_verify_several_dirs_judges_the_whole_batch(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    jobs = add_host_batch(atlas)
    hosts = {
        rs: tmp_path / f"host-{i}"
        for i, rs in enumerate([HOST_SHARDS[0], HOST_SHARDS[1], HOST_SHARDS[2], CONFIG])
    }
    for rs, dest in hosts.items():
        assert run_cli(*fetch_args(atlas, dest, "--only", f"{rs}.tar.gz")).exit_code == EXIT_OK
    dirs = [str(d) for d in hosts.values()]

    split = run_cli("verify", *dirs)

    # Shard 3 was fetched by no host: every archive there is intact, the batch is not whole.
    assert split.exit_code == EXIT_INCOMPLETE, split.stdout
    assert "4 of 4 archives intact" in split.stdout
    missing = jobs[HOST_SHARDS[3]]["id"]
    assert f"  - missing: job {missing}: in no manifest (fetched by no host)" in split.stdout
    assert "not ready to restore: 1 archive missing" in split.stdout

    again = run_cli(*fetch_args(atlas, hosts[CONFIG], "--only", f"{HOST_SHARDS[3]}.tar.gz"))
    assert again.exit_code == EXIT_OK
    whole = run_cli("verify", *dirs)

    assert whole.exit_code == EXIT_OK, whole.stdout
    assert "\nready to restore: 4 shards + config server, restore point" in whole.stdout
    assert job_entry(hosts[CONFIG], jobs[CONFIG])["outcome"] == "verified"  # kept beside


def test_verify_refuses_dirs_of_different_batches(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    add_host_batch(atlas)
    other = atlas.add("Cluster0-shard-0-older.tar.gz", batch_id=(other_batch := new_id()))
    assert run_cli(*fetch_args(atlas, tmp_path / "a", "--only", "*shard-0.tar.gz")).exit_code == 0
    args = fetch_args(atlas, tmp_path / "b")
    args[args.index(BATCH)] = other_batch
    assert run_cli(*args).exit_code == EXIT_OK, other

    result = run_cli("verify", str(tmp_path / "a"), str(tmp_path / "b"))

    assert result.exit_code == EXIT_ERROR
    assert "manifests of different batches" in result.stderr


# == Atlas Cloud Backup (Admin API v2): an archive per replica set, no hash ========================


V2_SHARD, V2_CONFIG = f"{CLUSTER_V2}-shard-0", f"{CLUSTER_V2}-config-0"


def test_one_job_split_across_hosts_is_verified_as_a_whole(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    job = atlas_v2.add((V2_SHARD, f"{CLUSTER_V2}-shard-1", V2_CONFIG))
    hosts = {"a": "*-shard-0", "b": "*-shard-1"}  # and nobody takes the config server yet
    for host, pattern in hosts.items():
        result = run_cli(*fetch_job(atlas_v2, job, tmp_path / host, "--only", pattern, "-q"))
        assert result.exit_code == 0, result.output + result.stderr
    dirs = [str(tmp_path / h) for h in hosts]
    partial = run_cli("verify", *dirs)
    assert partial.exit_code == 3
    assert f"missing: job {job.id} ({V2_CONFIG}.tar.gz): in no manifest" in partial.output
    doc = json.loads(run_cli("verify", "--json", *dirs).stdout)
    assert doc["archivesNotInAnyDirectory"] == [{"jobId": job.id, "name": f"{V2_CONFIG}.tar.gz"}]
    assert doc["exitCode"] == 3
    result = run_cli(*fetch_job(atlas_v2, job, tmp_path / "c", "--only", "*-config-*", "-q"))
    assert result.exit_code == 0, result.output + result.stderr
    whole = run_cli("verify", *dirs, str(tmp_path / "c"))
    assert whole.exit_code == 0, whole.output
    assert "ready to restore: 2 shards + config server" in whole.output


def test_verify_counts_no_entry_that_gave_way_to_the_archives(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    job = atlas_v2.add(state="running")
    host_a, host_b = tmp_path / "a", tmp_path / "b"
    early = run_cli(*fetch_job(atlas_v2, job, host_a, "--only", "*-shard-0", "-q"))
    assert early.exit_code == 3  # not finished yet: recorded under the job's own id
    job.state = "ready"
    assert run_cli(*fetch_job(atlas_v2, job, host_b, "-q")).exit_code == 0
    result = run_cli("verify", str(host_a), str(host_b))
    assert result.exit_code == 0, result.output
    assert "2 of 2 archives intact" in result.output


# == hostile input and secrets (issue 4) ===========================================================


# -- bad local state -----------------------------------------------------------------------------


@pytest.mark.parametrize("why", ["read-only", "another user's lock file"])
def test_verify_deep_checks_a_dir_it_cannot_write_and_says_it_wrote_nothing(
    atlas: Atlas, creds: None, tmp_path: Path, read_only: Callable[[Path], None], why: str
) -> None:
    # Archives gathered on read-only storage (or another user's) are checked before a restore.
    full = tmp_path / "full"
    atlas.add("rs0.tar.gz")
    assert run_cli(*fetch_args(atlas, full)).exit_code == 0
    manifest = (full / MANIFEST_NAME).read_bytes()
    names = sorted(p.name for p in full.iterdir())
    if why == "read-only":
        read_only(full)
    else:  # a shared directory: anyone may write in it, but the lock is the other user's
        if os.geteuid() != 0:
            pytest.skip("giving the lock file to another user needs root")
        full.chmod(0o777)
        os.chown(full / LOCK_NAME, 54321, 54321)

    result = run_without_privilege(["verify", "--deep", str(full)])
    assert result.returncode == 0, result.stderr
    assert "1 of 1 archives intact (exit 0)" in result.stdout
    assert result.stderr.strip() == (
        f"fetcher: {full} is not writable: checked, but its manifest was not updated"
    )
    assert (full / MANIFEST_NAME).read_bytes() == manifest
    assert sorted(p.name for p in full.iterdir()) == names


# == private files, and files that shrink while hashed =============================================


ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


# -- point 6: a file that shrinks while it is hashed ------------------------------------------


# verify, in its own process, with a SHA1 whose first update() truncates the archive to 3 bytes
# and only then hashes the buffer it was given. When that buffer is a map of the file (as it
# was), touching it raises SIGBUS and the process dies; read bytes are already in memory.
_SHRINK_DURING_UPDATE = textwrap.dedent(
    """
    import hashlib, os, sys
    import fetcher.storage
    from fetcher.cli import main

    archive, directory = sys.argv[1:]
    real_sha1 = hashlib.sha1

    class ShrinkingSha1:
        cut = False

        def __init__(self, *args):
            self._h = real_sha1(*args)

        def update(self, data):
            if not ShrinkingSha1.cut:
                ShrinkingSha1.cut = True
                os.truncate(archive, 3)
            self._h.update(data)

        def digest(self):
            return self._h.digest()

        def hexdigest(self):
            return self._h.hexdigest()

    fetcher.storage.hashlib.sha1 = ShrinkingSha1
    main(["verify", directory])
    """
)


@pytest.mark.slow  # a real process, which the old code killed with SIGBUS
def test_verify_survives_an_archive_truncated_while_it_is_hashed(tmp_path: Path) -> None:
    data = os.urandom(6 * MiB)  # several blocks, and more than one map of the old code
    archive = tmp_path / "rs0.tar.gz"
    archive.write_bytes(data)
    with Destination(tmp_path) as dest:
        write_manifest(dest, archive.name, data)
    assert run_cli("verify", str(tmp_path)).exit_code == 0  # intact before the cut

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FETCHER_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-c", _SHRINK_DURING_UPDATE, str(archive), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == EXIT_INTEGRITY, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Fatal" not in proc.stderr, proc.stderr
    (line,) = [
        ln for ln in proc.stdout.splitlines() if ln.startswith(f"changed       {archive.name}")
    ]
    assert line.startswith("changed") and "manifest says 6291456" in line, proc.stdout
    assert archive.stat().st_size == 3  # the cut did happen, mid-hash


def test_a_read_error_is_one_unreadable_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(2 * HASH_BLOCK)
    (tmp_path / "rs0.tar.gz").write_bytes(data)
    with Destination(tmp_path) as dest:
        write_manifest(dest, "rs0.tar.gz", data)
    real_readv = os.readv
    calls = 0

    def failing_readv(fd: int, buffers: list[memoryview]) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_readv(fd, buffers)

    monkeypatch.setattr(os, "readv", failing_readv)
    result = run_cli("verify", str(tmp_path))
    assert result.exit_code == EXIT_ERROR
    assert "Traceback" not in result.stdout + result.stderr
    assert f"unreadable    rs0.tar.gz: {os.strerror(errno.EIO)}" in result.stdout
