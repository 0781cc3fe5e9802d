"""One batch across many hosts: `fetch --only` takes a host's share, `verify DIR...` the whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fetcher.errors import EXIT_ERROR, EXIT_INCOMPLETE, EXIT_OK
from tests.conftest import Atlas, fetch_args, job_entry, loud, manifest_doc, run_cli
from tests.support import BATCH, new_id

SHARDS = [f"Cluster0-shard-{i}" for i in range(4)]
CONFIG = "Cluster0-config"


def _batch(atlas: Atlas) -> dict[str, dict[str, Any]]:
    return {rs: atlas.add(f"{rs}.tar.gz") for rs in [*SHARDS, CONFIG]}


def test_only_fetches_the_selected_jobs_and_judges_them_alone(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    jobs = _batch(atlas)

    result = run_cli(*loud(fetch_args(atlas, tmp_path, "--only", "*shard-0*", "--only", "*-1.*")))

    assert result.exit_code == EXIT_OK, result.stdout + result.stderr
    doc = manifest_doc(tmp_path)
    assert doc["selection"] == ["*shard-0*", "*-1.*"]
    assert doc["batchJobIds"] == sorted(job["id"] for job in jobs.values())
    assert sorted(j["id"] for j in doc["jobs"]) == sorted(jobs[rs]["id"] for rs in SHARDS[:2])
    assert doc["complete"] is True and doc["restoreSet"]["problems"] == []  # no config: not ours
    for rs in [*SHARDS[2:], CONFIG]:
        assert atlas.pull.requests_for(jobs[rs]["_path"]) == []  # never asked for
        assert not (tmp_path / f"{rs}.tar.gz").exists()
    assert (
        "selected archives ready: Cluster0-shard-0, Cluster0-shard-1, restore point"
        in result.stdout
    )


def test_only_a_job_whose_name_is_not_known_yet(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    jobs = _batch(atlas)
    for rs in (SHARDS[0], SHARDS[1]):
        atlas.set_state(jobs[rs], "IN_PROGRESS", "NOT_STARTED")  # no link, no name yet

    without = run_cli(*fetch_args(atlas, tmp_path / "a", "--only", "*shard-0*"))

    assert without.exit_code == EXIT_INCOMPLETE
    skipped = {j["id"]: j["reason"] for j in manifest_doc(tmp_path / "a")["jobs"]}
    assert set(skipped) == {jobs[SHARDS[0]]["id"], jobs[SHARDS[1]]["id"]}  # may be selected
    assert all(r.startswith("not ready yet") for r in skipped.values())

    def finish(poll: int) -> None:
        if poll == 2:
            atlas.set_state(jobs[SHARDS[0]])
            atlas.set_state(jobs[SHARDS[1]])

    atlas.on_list = finish
    waited = run_cli(
        *fetch_args(atlas, tmp_path / "b", "--only", "*shard-0*", "--wait", "--poll-interval", "0")
    )

    assert waited.exit_code == EXIT_OK, waited.stdout + waited.stderr
    doc = manifest_doc(tmp_path / "b")
    assert [j["id"] for j in doc["jobs"]] == [jobs[SHARDS[0]]["id"]]  # shard 1 dropped once named
    assert atlas.pull.requests_for(jobs[SHARDS[1]]["_path"]) == []


def test_only_that_matches_nothing_is_an_error(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    _batch(atlas)
    result = run_cli(*fetch_args(atlas, tmp_path / "d", "--only", "*shard-9*"))
    assert result.exit_code == EXIT_ERROR
    assert "matches --only *shard-9*" in result.stderr
    assert not (tmp_path / "d").exists()


def test_verify_several_dirs_judges_the_whole_batch(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    jobs = _batch(atlas)
    hosts = {
        rs: tmp_path / f"host-{i}" for i, rs in enumerate([SHARDS[0], SHARDS[1], SHARDS[2], CONFIG])
    }
    for rs, dest in hosts.items():
        assert run_cli(*fetch_args(atlas, dest, "--only", f"{rs}.tar.gz")).exit_code == EXIT_OK
    dirs = [str(d) for d in hosts.values()]

    split = run_cli("verify", *dirs)

    # Shard 3 was fetched by no host: every archive there is intact, the batch is not whole.
    assert split.exit_code == EXIT_INCOMPLETE, split.stdout
    assert "4 of 4 archives intact" in split.stdout
    missing = jobs[SHARDS[3]]["id"]
    assert f"  - missing: job {missing}: in no manifest (fetched by no host)" in split.stdout
    assert "not ready to restore: 1 archive missing" in split.stdout

    again = run_cli(*fetch_args(atlas, hosts[CONFIG], "--only", f"{SHARDS[3]}.tar.gz"))
    assert again.exit_code == EXIT_OK
    whole = run_cli("verify", *dirs)

    assert whole.exit_code == EXIT_OK, whole.stdout
    assert "\nready to restore: 4 shards + config server, restore point" in whole.stdout
    assert job_entry(hosts[CONFIG], jobs[CONFIG])["outcome"] == "verified"  # kept beside


def test_verify_refuses_dirs_of_different_batches(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    _batch(atlas)
    other = atlas.add("Cluster0-shard-0-older.tar.gz", batch_id=(other_batch := new_id()))
    assert run_cli(*fetch_args(atlas, tmp_path / "a", "--only", "*shard-0.tar.gz")).exit_code == 0
    args = fetch_args(atlas, tmp_path / "b")
    args[args.index(BATCH)] = other_batch
    assert run_cli(*args).exit_code == EXIT_OK, other

    result = run_cli("verify", str(tmp_path / "a"), str(tmp_path / "b"))

    assert result.exit_code == EXIT_ERROR
    assert "manifests of different batches" in result.stderr
