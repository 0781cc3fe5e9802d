"""Atlas Cloud Backup (Admin API v2): one job per restore, an archive per replica set, no hash."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import httpx
import pytest

from tests.atlasv2 import (
    ACCEPT,
    CLIENT_ID,
    CLIENT_SECRET,
    CLUSTER_V2,
    JOBS_V2,
    AtlasV2,
    V2Job,
)
from tests.conftest import manifest_doc, run_cli
from tests.support import GROUP, make_archive, restore_info

SHARD, CONFIG = f"{CLUSTER_V2}-shard-0", f"{CLUSTER_V2}-config-0"


def v2_args(atlas_v2: AtlasV2, command: str, *extra: str) -> list[str]:
    """A command against the v2 fake's cluster."""
    base = ["--base-url", atlas_v2.base_url, "--group", GROUP, "--cluster", CLUSTER_V2]
    return [command, *base, *extra]


def fetch_job(atlas_v2: AtlasV2, job: V2Job, dest: Path, *extra: str) -> list[str]:
    """`fetcher fetch --job` of one v2 job into dest."""
    return v2_args(atlas_v2, "fetch", "--job", job.id, "--dest", str(dest), *extra)


def files_by_set(dest: Path) -> dict[str, dict[str, object]]:
    """The manifest's files[] entries, by replica set."""
    doc = manifest_doc(dest)
    return {f["replicaSet"]: f for j in doc["jobs"] for f in j["files"]}


def test_a_sharded_job_downloads_every_component(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    job = atlas_v2.add((f"{CLUSTER_V2}-shard-0", f"{CLUSTER_V2}-shard-1", CONFIG))
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
    assert doc["restoreSet"]["configServer"] == CONFIG
    assert doc["restoreSet"]["verdict"].startswith("ready to restore: 2 shards + config server")
    assert {j["jobId"] for j in doc["jobs"]} == {job.id}
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
    # The entry that stood for the unfinished job gave way to one per archive.
    assert sorted(j["id"] for j in doc["jobs"]) == sorted(f"{job.id}:{n}" for n in job.replica_sets)
    assert doc["complete"] is True
    assert doc["batchJobIds"] == sorted(f"{job.id}:{n}" for n in job.replica_sets)


def test_a_corrupt_component_is_an_integrity_failure(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    good = make_archive(SHARD, info=restore_info(SHARD, cluster=CLUSTER_V2))
    torn = good[:-200] + bytes(200)  # the gzip trailer and the last blocks are gone
    job = atlas_v2.add(archives={SHARD: torn})
    dest = tmp_path / "out"
    result = run_cli(*fetch_job(atlas_v2, job, dest))
    assert result.exit_code == 4, result.output + result.stderr
    assert not (dest / f"{SHARD}.tar.gz").exists()  # never under its final name
    assert (dest / f"{CONFIG}.tar.gz").exists()
    doc = manifest_doc(dest)
    failed = next(j for j in doc["jobs"] if j["outcome"] == "failed")
    assert failed["failure"] == "integrity" and failed["replicaSetName"] == SHARD


def test_an_archive_of_another_replica_set_than_listed_is_refused(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    other = f"{CLUSTER_V2}-shard-7"
    swapped = make_archive(other, info=restore_info(other, cluster=CLUSTER_V2))
    job = atlas_v2.add(archives={SHARD: swapped})
    dest = tmp_path / "out"
    result = run_cli(*fetch_job(atlas_v2, job, dest))
    assert result.exit_code == 4
    assert f"restoreInfo.txt names {other}" in result.output + result.stderr
    assert not (dest / f"{SHARD}.tar.gz").exists()


def test_only_selects_by_replica_set(atlas_v2: AtlasV2, creds: None, tmp_path: Path) -> None:
    job = atlas_v2.add((SHARD, f"{CLUSTER_V2}-shard-1", CONFIG))
    dest = tmp_path / "out"
    result = run_cli(*fetch_job(atlas_v2, job, dest, "--only", "*-shard-1", "--quiet"))
    assert result.exit_code == 0, result.output + result.stderr
    assert sorted(files_by_set(dest)) == [f"{CLUSTER_V2}-shard-1"]
    assert len(manifest_doc(dest)["batchJobIds"]) == 3


def test_batch_is_a_usage_error_that_points_to_job(atlas_v2: AtlasV2, creds: None) -> None:
    result = run_cli(*v2_args(atlas_v2, "fetch", "--batch", "6a1b2c3d4e5f60718293a4b5"))
    assert result.exit_code == 2
    assert "--job JOB-ID" in result.stderr
    assert not atlas_v2.api_requests


def test_list_shows_each_archive_and_its_replica_set_and_no_query(
    atlas_v2: AtlasV2, creds: None
) -> None:
    job = atlas_v2.add()
    atlas_v2.add(state="expired")
    atlas_v2.add(delivery_type="automated")
    table = run_cli(*v2_args(atlas_v2, "list"))
    assert table.exit_code == 0, table.stderr
    assert "REPLICA SET" in table.output and "TYPE" in table.output
    assert f"{SHARD}.tar.gz" in table.output and CONFIG in table.output
    assert "expired" in table.output
    automated = next(line for line in table.output.splitlines() if "automated" in line)
    assert "not a download restore (automated)" in automated
    doc = json.loads(run_cli(*v2_args(atlas_v2, "list", "--json")).output)
    listed = next(j for j in doc["jobs"] if j["id"] == job.id)
    assert listed["deliveryMethod"] == "download"
    links = {a["replicaSet"]: a["link"] for a in listed["archives"]}
    assert links[SHARD] == atlas_v2.pull.url(job.paths[SHARD])  # origin and path, no query
    for output in (table.output, json.dumps(doc)):
        assert "X-Amz-Signature" not in output
        assert not any(sig in output for sig in job.signatures.values())


def test_the_versioned_accept_is_sent_and_a_406_is_one_clear_line(
    atlas_v2: AtlasV2, creds: None
) -> None:
    # The fake refuses what the real API refuses.
    plain = httpx.get(atlas_v2.server.url_for(JOBS_V2), headers={"Accept": "application/json"})
    assert plain.status_code == 406
    atlas_v2.api_requests.clear()
    ok = run_cli(*v2_args(atlas_v2, "list"))
    assert ok.exit_code == 0
    assert {h.get("Accept") for h in atlas_v2.api_requests} == {ACCEPT}
    # A root that speaks another version: one line, exit 1, no traceback.
    root = atlas_v2.server.url_for("/api/atlas/v2beta")
    atlas_v2.server.expect_request(
        f"/api/atlas/v2beta/groups/{GROUP}/clusters/{CLUSTER_V2}/restoreJobs"
    ).respond_with_json(
        {"error": 406, "reason": "Not Acceptable", "errorCode": "INVALID_VERSION_DATE"}, status=406
    )
    refused = run_cli("list", "--base-url", root, "--group", GROUP, "--cluster", CLUSTER_V2)
    assert refused.exit_code == 1
    assert refused.stderr.count("\n") == 1 and "406" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.fixture
def service_account(monkeypatch: pytest.MonkeyPatch, creds: None) -> None:
    """A service account in the environment: it wins over the API keys creds set."""
    monkeypatch.setenv("MONGODB_ATLAS_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("MONGODB_ATLAS_CLIENT_SECRET", CLIENT_SECRET)


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


def test_a_token_endpoint_that_is_briefly_down_is_retried(
    atlas_v2: AtlasV2, service_account: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fetcher.retry

    pauses: list[float] = []
    quick = functools.partial(fetcher.retry.RetryPolicy, sleep=pauses.append)
    monkeypatch.setattr(fetcher.retry, "RetryPolicy", quick)
    atlas_v2.token_faults = [503, 429]
    result = run_cli(*v2_args(atlas_v2, "list"))
    assert result.exit_code == 0, result.stderr
    assert atlas_v2.token_requests == 3
    assert len(pauses) == 2  # backed off before each retry


def test_a_refused_service_account_is_one_line_without_the_secret(
    atlas_v2: AtlasV2, service_account: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONGODB_ATLAS_CLIENT_SECRET", "mdb_sa_sk_wrong-secret-9876")
    result = run_cli(*v2_args(atlas_v2, "list"))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "wrong-secret" not in result.stderr + result.output


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


def test_one_job_split_across_hosts_is_verified_as_a_whole(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    job = atlas_v2.add((SHARD, f"{CLUSTER_V2}-shard-1", CONFIG))
    hosts = {"a": "*-shard-0", "b": "*-shard-1"}  # and nobody takes the config server yet
    for host, pattern in hosts.items():
        result = run_cli(*fetch_job(atlas_v2, job, tmp_path / host, "--only", pattern, "-q"))
        assert result.exit_code == 0, result.output + result.stderr
    dirs = [str(tmp_path / h) for h in hosts]
    partial = run_cli("verify", *dirs)
    assert partial.exit_code == 3
    assert f"missing: job {job.id}:{CONFIG}: in no manifest" in partial.output
    result = run_cli(*fetch_job(atlas_v2, job, tmp_path / "c", "--only", "*-config-*", "-q"))
    assert result.exit_code == 0, result.output + result.stderr
    whole = run_cli("verify", *dirs, str(tmp_path / "c"))
    assert whole.exit_code == 0, whole.output
    assert "ready to restore: 2 shards + config server" in whole.output


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
    archive = dest / f"{SHARD}.tar.gz"
    data = bytearray(archive.read_bytes())
    data[1000] ^= 0xFF
    archive.write_bytes(bytes(data))
    broken = run_cli(*fetch_job(atlas_v2, job, dest))
    assert broken.exit_code == 4, broken.output + broken.stderr
    assert f"{SHARD}.tar.gz no longer matches its SHA1" in broken.output


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


def test_wait_ends_when_only_leaves_every_archive_to_other_hosts(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    job = atlas_v2.add()
    args = fetch_job(atlas_v2, job, tmp_path / "out", "--only", "nothing-*", "--wait")
    result = run_cli(*args, "--poll-interval", "0", "--wait-timeout", "30")
    assert result.exit_code == 1
    assert "matches --only" in result.stderr
    assert atlas_v2.polls == 1  # no polling for what no host here will take
