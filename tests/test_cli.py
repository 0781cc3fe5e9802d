"""The command line end to end, in-process, against the local API and pull host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fetcher.names import partial_name
from tests.conftest import Atlas, api_args, fetch_args, run_cli
from tests.support import BATCH, CLUSTER, GROUP, PRIVATE_KEY, make_archive, sha1


def _shards(atlas: Atlas, n: int = 3) -> list[dict[str, object]]:
    jobs = [atlas.add(f"Cluster0-shard-{i}.tar.gz") for i in range(n)]
    jobs.append(atlas.add("Cluster0-config.tar.gz"))
    return jobs


def _manifest(dest: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((dest / "manifest.json").read_text())
    return doc


def _one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_fetch_a_sharded_batch(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    jobs = _shards(atlas)
    atlas.page_size = 2  # two pages of jobs
    dest = tmp_path / "out"
    args = fetch_args(atlas, dest)
    args.remove("--quiet")
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("verified ") == 4
    assert "4 verified; manifest:" in result.stdout
    visible = sorted(p.name for p in dest.iterdir() if not p.name.startswith("."))
    assert visible == sorted([*atlas.archives, "manifest.json"])
    for name, data in atlas.archives.items():
        assert (dest / name).read_bytes() == data
    doc = _manifest(dest)
    assert doc["complete"] is True and doc["batchId"] == BATCH and doc["groupId"] == GROUP
    assert doc["cluster"] == CLUSTER
    by_id = {j["id"]: j for j in doc["jobs"]}  # type: ignore[attr-defined]
    for job in jobs:
        entry = by_id[job["id"]]
        assert entry["outcome"] == "verified"
        assert entry["snapshotId"] and entry["created"] and entry["clusterId"]
        (file,) = entry["files"]
        assert file["sha1"] == sha1(atlas.archives[file["name"]])
        assert file["size"] == len(atlas.archives[file["name"]])
    # Each archive was asked for once, whole, without credentials of any kind.
    for job in jobs:
        (request,) = atlas.pull.requests_for(str(job["_path"]))
        assert "authorization" not in request.headers and "range" not in request.headers
        assert request.headers["accept-encoding"] == "identity"


def test_default_dest_is_the_batch_id(
    atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    atlas.add("a.tar.gz")
    monkeypatch.chdir(tmp_path)
    args = fetch_args(atlas, tmp_path)
    i = args.index("--dest")
    del args[i : i + 2]
    assert run_cli(*args).exit_code == 0
    assert (tmp_path / BATCH / "a.tar.gz").is_file()


def test_one_replica_set_job(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    job = atlas.add("rs0.tar.gz", batch_id=None)
    args = api_args(atlas, "fetch", "--job", str(job["id"]), "--dest", str(tmp_path / "rs"))
    assert run_cli(*args).exit_code == 0
    doc = _manifest(tmp_path / "rs")
    assert doc["batchId"] is None and doc["complete"] is True


def test_unready_and_expired_jobs_are_skipped_with_reasons(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    atlas.add("ok.tar.gz")
    expired = atlas.add("expired.tar.gz", delivery_status="EXPIRED")
    exhausted = atlas.add("exhausted.tar.gz", delivery_status="MAX_DOWNLOADS_EXCEEDED")
    from datetime import timedelta

    late = atlas.add("late.tar.gz", expires_in=timedelta(minutes=-1))
    running = atlas.add("running.tar.gz", status="IN_PROGRESS", delivery_status="NOT_STARTED")
    result = run_cli(*fetch_args(atlas, tmp_path / "d", "--json"))
    assert result.exit_code == 3
    doc = json.loads(result.stdout)
    reasons = {j["id"]: (j["outcome"], j["reason"]) for j in doc["jobs"]}
    assert reasons[expired["id"]] == ("skipped", "delivery EXPIRED")
    assert reasons[exhausted["id"]] == ("skipped", "delivery MAX_DOWNLOADS_EXCEEDED")
    assert reasons[late["id"]][1].startswith("expired at ")
    assert reasons[running["id"]][1].startswith("not ready yet")
    assert doc["complete"] is False
    for job in (expired, exhausted, late, running):
        assert atlas.pull.requests_for(str(job["_path"])) == []  # nothing asked of a dead link
    assert not (tmp_path / "d" / "expired.tar.gz").exists()


def test_sha1_mismatch_fails_with_exit_4_and_no_final_file(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    atlas.add("good.tar.gz")
    bad = atlas.add("bad.tar.gz", published_sha1="0" * 40)
    result = run_cli(*fetch_args(atlas, tmp_path))
    assert result.exit_code == 4
    assert not (tmp_path / "bad.tar.gz").exists()
    assert not (tmp_path / partial_name("bad.tar.gz")).exists()
    entry = next(j for j in _manifest(tmp_path)["jobs"] if j["id"] == bad["id"])  # type: ignore[attr-defined]
    assert entry["outcome"] == "failed" and entry["failure"] == "integrity"
    assert "SHA1 mismatch" in entry["reason"]
    assert (tmp_path / "good.tar.gz").exists()


def test_exit_code_precedence_integrity_over_error_over_incomplete(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    atlas.add("mismatch.tar.gz", published_sha1="0" * 40)
    gone = atlas.add("gone.tar.gz")
    atlas.pull.resources.pop(str(gone["_path"]))  # the pull host answers 404
    atlas.add("expired.tar.gz", delivery_status="EXPIRED")
    assert run_cli(*fetch_args(atlas, tmp_path / "a")).exit_code == 4
    atlas.jobs.pop(0)
    result = run_cli(*fetch_args(atlas, tmp_path / "b"))
    assert result.exit_code == 1
    atlas.jobs.pop(0)
    assert run_cli(*fetch_args(atlas, tmp_path / "c")).exit_code == 3


def test_late_hashes_are_read_again_after_the_download(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("late.tar.gz", with_hashes=False)
    digest = sha1(atlas.archives["late.tar.gz"])
    atlas.hashes_on_job_read[str(job["id"])] = [
        {"fileName": "late.tar.gz", "hash": digest, "typeName": "SHA1"}
    ]
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    assert (tmp_path / "late.tar.gz").exists()
    assert _manifest(tmp_path)["jobs"][0]["files"][0]["sha1"] == digest  # type: ignore[index]


def test_late_hash_that_does_not_match_is_an_integrity_failure(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("late.tar.gz", with_hashes=False)
    atlas.hashes_on_job_read[str(job["id"])] = [
        {"fileName": "late.tar.gz", "hash": "1" * 40, "typeName": "SHA1"}
    ]
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 4
    assert not (tmp_path / "late.tar.gz").exists()


def test_no_hash_at_all_is_unverified_and_kept_partial(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("nohash.tar.gz", with_hashes=False)
    result = run_cli(*fetch_args(atlas, tmp_path))
    assert result.exit_code == 3
    entry = _manifest(tmp_path)["jobs"][0]  # type: ignore[index]
    assert entry["outcome"] == "unverified" and "no SHA1" in entry["reason"]
    assert not (tmp_path / "nohash.tar.gz").exists()
    data = atlas.archives["nohash.tar.gz"]
    assert (tmp_path / partial_name("nohash.tar.gz")).read_bytes() == data
    # Later the API publishes the hash, and the link has expired: the kept bytes verify offline.
    job["hashes"] = [{"fileName": "nohash.tar.gz", "hash": sha1(data), "typeName": "SHA1"}]
    job["delivery"]["statusName"] = "EXPIRED"
    sent = atlas.pull.bytes_sent(str(job["_path"]))
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    assert (tmp_path / "nohash.tar.gz").read_bytes() == data
    assert atlas.pull.bytes_sent(str(job["_path"])) == sent


def test_ops_manager_bearer_goes_to_its_url_only(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    plain = atlas.add("plain.tar.gz", make_archive("Cluster0-config"))  # the config server
    om = atlas.add("om.tar.gz")
    delivery = om["delivery"]
    delivery["urlV2"] = delivery.pop("url")
    delivery.update(
        authHeader="Authorization", authBearer="Bearer", authValue="om-bearer-secret-42"
    )
    result = run_cli(*fetch_args(atlas, tmp_path, "--json"))
    assert result.exit_code == 0
    (req,) = atlas.pull.requests_for(str(om["_path"]))
    assert req.headers["authorization"] == "Bearer om-bearer-secret-42"
    (other,) = atlas.pull.requests_for(str(plain["_path"]))
    assert "authorization" not in other.headers
    assert "om-bearer-secret-42" not in result.stdout + result.stderr
    assert "om-bearer-secret-42" not in (tmp_path / "manifest.json").read_text()


def test_rerun_downloads_nothing_verified_even_after_expiry(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    jobs = _shards(atlas, 2)
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    before = len(atlas.pull.log)
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    for job in jobs:
        job["delivery"]["statusName"] = "EXPIRED"  # type: ignore[index]
    result = run_cli(*fetch_args(atlas, tmp_path, "--json"))
    assert result.exit_code == 0
    assert len(atlas.pull.log) == before  # not one request to the pull host
    doc = json.loads(result.stdout)
    assert {j["outcome"] for j in doc["jobs"]} == {"verified"}
    assert {j["reason"] for j in doc["jobs"]} == {"already verified on disk"}


def test_an_archive_changed_on_disk_is_fetched_again(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("a.tar.gz")
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    data = atlas.archives["a.tar.gz"]
    (tmp_path / "a.tar.gz").write_bytes(b"X" + data[1:])
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    assert (tmp_path / "a.tar.gz").read_bytes() == data
    assert len(atlas.pull.requests_for(str(job["_path"]))) == 2


def test_list_table_and_json_show_no_token(atlas: Atlas, creds: None) -> None:
    ready = atlas.add("a.tar.gz")
    atlas.add("b.tar.gz", delivery_status="EXPIRED")
    token = str(ready["_path"]).split("/")[-2]
    base = api_args(atlas, "list", "--batch", BATCH)
    table = run_cli(*base)
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["JOB", "ID", "FILE", "JOB", "DELIVERY", "EXPIRES", "DOWNLOADABLE"]
    assert str(ready["id"]) in lines[1] and "a.tar.gz" in lines[1] and lines[1].endswith("yes")
    assert "delivery EXPIRED" in lines[2]
    listed = run_cli(*base, "--json")
    doc = json.loads(listed.stdout)
    assert [j["fileName"] for j in doc["jobs"]] == ["a.tar.gz", "b.tar.gz"]
    assert doc["jobs"][0]["pullHost"] == atlas.pull.base
    for out in (table.stdout, listed.stdout):
        assert token not in out


def test_verify_command(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    _shards(atlas, 1)
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
    assert "no manifest.json" in _one_line_error(result.stderr)
    assert run_cli("verify", str(tmp_path / "nope")).exit_code == 1


def test_missing_credentials(
    atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MONGODB_ATLAS_PRIVATE_API_KEY")
    monkeypatch.delenv("MONGODB_ATLAS_PUBLIC_API_KEY")
    result = run_cli(*fetch_args(atlas, tmp_path))
    assert result.exit_code == 2
    assert "MONGODB_ATLAS_PUBLIC_API_KEY" in _one_line_error(result.stderr)
    monkeypatch.setenv("MCLI_PUBLIC_API_KEY", "testpublic")
    monkeypatch.setenv("MCLI_PRIVATE_API_KEY", PRIVATE_KEY)
    atlas.add("a.tar.gz")
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0


def test_wrong_credentials_exit_1_without_traceback(
    atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONGODB_ATLAS_PRIVATE_API_KEY", "not-the-key")
    atlas.add("a.tar.gz")
    result = run_cli(*fetch_args(atlas, tmp_path))
    assert result.exit_code == 1
    assert "401" in _one_line_error(result.stderr)
    assert "not-the-key" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["fetch", "--group", "g", "--cluster", "c"],
        ["fetch", "--group", "g", "--cluster", "c", "--batch", "b", "--job", "j"],
        ["fetch", "--group", "g", "--cluster", "c", "--batch", "b", "--parallel", "0"],
        ["list", "--cluster", "c"],
        ["fetch", "--group", "g", "--cluster", "c", "--batch", "b", "--base-url", "ftp://x"],
    ],
)
def test_usage_errors_exit_2(args: list[str], creds: None) -> None:
    assert run_cli(*args).exit_code == 2


def test_empty_batch_is_an_error(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    result = run_cli(*fetch_args(atlas, tmp_path))
    assert result.exit_code == 1
    assert "no restore jobs found for batch" in _one_line_error(result.stderr)


def test_a_failed_fetch_leaves_no_empty_directory_behind(
    atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONGODB_ATLAS_PRIVATE_API_KEY", "not-the-key")
    assert run_cli(*fetch_args(atlas, tmp_path / "new")).exit_code == 1
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    assert run_cli(*fetch_args(atlas, tmp_path / "old")).exit_code == 1
    assert (tmp_path / "old").is_dir()  # a directory the user made stays


def test_quiet_still_says_why_a_job_failed(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    atlas.add("ok.tar.gz")
    atlas.add("bad.tar.gz", published_sha1="0" * 40)
    result = run_cli(*fetch_args(atlas, tmp_path))  # fetch_args passes --quiet
    assert result.exit_code == 4
    assert result.stdout == ""
    assert "bad.tar.gz" in result.stderr and "SHA1 mismatch" in result.stderr
    assert "ok.tar.gz" not in result.stderr


def test_a_verified_archive_corrupted_after_its_link_expired_is_an_integrity_failure(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("a.tar.gz")
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    data = bytearray((tmp_path / "a.tar.gz").read_bytes())
    data[100] ^= 0xFF
    (tmp_path / "a.tar.gz").write_bytes(bytes(data))
    job["delivery"]["statusName"] = "EXPIRED"
    result = run_cli(*fetch_args(atlas, tmp_path, "--json"))
    assert result.exit_code == 4
    (entry,) = json.loads(result.stdout)["jobs"]
    assert entry["outcome"] == "failed" and entry["failure"] == "integrity"
    assert "no longer matches its SHA1" in entry["reason"]
    assert entry["files"][0]["sha1"] == sha1(atlas.archives["a.tar.gz"])  # what it should be
    checked = run_cli("verify", str(tmp_path))
    assert checked.exit_code == 4 and "changed       a.tar.gz" in checked.stdout


def test_exit_code_is_this_runs_and_the_manifest_keeps_earlier_jobs(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    bad = atlas.add("bad.tar.gz", batch_id=None, published_sha1="0" * 40)
    good = atlas.add("good.tar.gz", batch_id=None)
    base = ["fetch", "--base-url", atlas.base_url, "--group", GROUP, "--cluster", CLUSTER]
    base += ["--dest", str(tmp_path), "--quiet", "--job"]
    assert run_cli(*base, str(bad["id"])).exit_code == 4
    assert run_cli(*base, str(good["id"])).exit_code == 0
    outcomes = {j["id"]: j["outcome"] for j in _manifest(tmp_path)["jobs"]}  # type: ignore[attr-defined]
    assert outcomes == {bad["id"]: "failed", good["id"]: "verified"}


def test_a_directory_of_another_batch_is_refused(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    job = atlas.add("a.tar.gz")
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    before = (tmp_path / "manifest.json").read_text()
    args = ["fetch", "--base-url", atlas.base_url, "--group", GROUP, "--cluster", CLUSTER]
    result = run_cli(*args, "--job", str(job["id"]), "--dest", str(tmp_path))
    assert result.exit_code == 1
    assert f"holds the manifest of batch {BATCH}" in _one_line_error(result.stderr)
    assert (tmp_path / "manifest.json").read_text() == before


def test_json_output_is_the_manifest_as_written(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    atlas.add("a.tar.gz")
    result = run_cli(*fetch_args(atlas, tmp_path, "--json"))
    assert json.loads(result.stdout) == _manifest(tmp_path)
    assert _manifest(tmp_path)["updated"]


def test_an_unexpected_error_fails_one_job_not_the_batch(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    atlas.add("good.tar.gz")
    job = atlas.add("odd.tar.gz")
    # httpx accepts this URL but its IDNA encoder raises when connecting.
    job["delivery"]["url"] = "https://xn--a.com/backup/restore/v2/pull/x/TOKEN123/odd.tar.gz"
    result = run_cli(*fetch_args(atlas, tmp_path))
    assert result.exit_code == 1
    line = _one_line_error(result.stderr)
    assert line.startswith("failed") and "odd.tar.gz" in line and "TOKEN123" not in line
    assert (tmp_path / "good.tar.gz").exists()
    outcomes = {j["id"]: j["outcome"] for j in _manifest(tmp_path)["jobs"]}  # type: ignore[attr-defined]
    assert outcomes[job["id"]] == "failed"
