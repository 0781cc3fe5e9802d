"""Fetching while a restore runs: readiness first, --wait, maxDownloads, ids, the journal."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from fetcher import manifest as mf
from fetcher.cli import TerminalReporter
from fetcher.fetch import WaitStatus
from fetcher.names import partial_name, state_name
from fetcher.storage import Destination
from tests.conftest import Atlas, api_args, fetch_args, job_entry, loud, manifest_doc, run_cli
from tests.pullserver import Fault, Served
from tests.support import BATCH, DigestGate, sha1
from tests.test_faults_cli import PATIENCE, spawn_fetch, wait_until

FIXTURE = Path(__file__).parent / "fixtures" / "get-all-restore-jobs.json"


def _late_hashes(atlas: Atlas, job: dict[str, Any], name: str) -> None:
    """Publish the job's SHA1 only when it is read on its own, after the download."""
    digest = sha1(atlas.archives[name])
    atlas.hashes_on_job_read[job["id"]] = [{"fileName": name, "hash": digest, "typeName": "SHA1"}]


# -- readiness before names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "delivery", "extra", "reason"),
    [
        ("IN_PROGRESS", "NOT_STARTED", {}, "not ready yet (job IN_PROGRESS, delivery NOT_STARTED)"),
        ("IN_PROGRESS", "IN_PROGRESS", {}, "not ready yet (job IN_PROGRESS, delivery IN_PROGRESS)"),
        ("FINISHED", "IN_PROGRESS", {}, "not ready yet (job FINISHED, delivery IN_PROGRESS)"),
        ("FINISHED", "READY", {"link": False}, "delivery READY but no link yet"),
        ("BROKEN", "FAILED", {}, "job BROKEN"),
        ("BROKEN", "NOT_STARTED", {}, "job BROKEN"),
        ("KILLED", "INTERRUPTED", {}, "job KILLED"),
        ("FINISHED", "FAILED", {}, "delivery FAILED"),
        ("FINISHED", "INTERRUPTED", {}, "delivery INTERRUPTED"),
    ],
)
def test_a_job_without_a_link_is_skipped_with_its_reason_never_failed(
    atlas: Atlas,
    creds: None,
    tmp_path: Path,
    status: str,
    delivery: str,
    extra: dict[str, Any],
    reason: str,
) -> None:
    ready = atlas.add("Cluster0-shard-0.tar.gz")
    odd = atlas.add("Cluster0-shard-1.tar.gz", status=status, delivery_status=delivery, **extra)
    # The document is the one the API lists for a job in that state: nothing to name a file by.
    assert "url" not in odd["delivery"] and "expires" not in odd["delivery"]
    assert odd["hashes"] == []

    result = run_cli(*fetch_args(atlas, tmp_path, "--json"))

    assert result.exit_code == 3, result.stderr
    entry = job_entry(tmp_path, odd)
    assert (entry["outcome"], entry["reason"]) == ("skipped", reason)
    assert "failure" not in entry and "fileName" not in entry
    assert entry["status"] == status and entry["deliveryStatus"] == delivery
    assert job_entry(tmp_path, ready)["outcome"] == "verified"
    assert atlas.pull.requests_for(odd["_path"]) == []


def test_list_shows_jobs_without_links(atlas: Atlas, creds: None) -> None:
    atlas.add("Cluster0-shard-0.tar.gz", status="IN_PROGRESS", delivery_status="NOT_STARTED")
    result = run_cli(*api_args(atlas, "list", "--batch", BATCH))
    assert result.exit_code == 0, result.stderr
    cells = result.stdout.splitlines()[1].split()
    assert cells[1:5] == ["-", "IN_PROGRESS", "NOT_STARTED", "-"]  # no file, no expiry yet
    assert result.stdout.splitlines()[1].endswith(
        "not ready yet (job IN_PROGRESS, delivery NOT_STARTED)"
    )


# -- --wait from the moment a restore is triggered ---------------------------------------------


def test_wait_from_the_start_of_a_restore_downloads_each_archive_when_ready(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    names = [f"Cluster0-shard-{i}.tar.gz" for i in range(3)] + ["Cluster0-config.tar.gz"]
    jobs = [
        atlas.add(n, status="IN_PROGRESS", delivery_status="NOT_STARTED", with_hashes=False)
        for n in names
    ]
    for job, name in zip(jobs, names, strict=True):
        _late_hashes(atlas, job, name)
    pulled_at: dict[str, int] = {}

    def on_request(served: Served) -> None:
        pulled_at.setdefault(served.path, atlas.polls)

    atlas.pull.on_request = on_request

    def on_list(poll: int) -> None:
        if poll == 2:
            for job in jobs:
                atlas.set_state(job, "IN_PROGRESS", "IN_PROGRESS")
        if poll == 3:
            atlas.set_state(jobs[0])
        if poll == 4:
            atlas.set_state(jobs[1])
            atlas.set_state(jobs[2])
            atlas.set_state(jobs[3], "FINISHED", "READY", link=False)
        if poll == 5:
            atlas.set_state(jobs[3])

    atlas.on_list = on_list
    result = run_cli(
        *loud(
            fetch_args(atlas, tmp_path, "--wait", "--poll-interval", "0.01", "--wait-timeout", "20")
        )
    )

    assert result.exit_code == 0, result.stderr
    doc = manifest_doc(tmp_path)
    assert doc["complete"] is True
    for job, name in zip(jobs, names, strict=True):
        entry = job_entry(tmp_path, job)
        assert entry["outcome"] == "verified"
        assert entry["files"][0]["sha1"] == sha1(atlas.archives[name])
        assert (tmp_path / name).read_bytes() == atlas.archives[name]
        assert len(atlas.pull.requests_for(job["_path"])) == 1  # each pulled once
    # Each as soon as its job was ready, not when the whole batch was.
    assert [pulled_at[j["_path"]] for j in jobs] == [3, 4, 4, 5]
    assert atlas.polls == 5
    # Off a terminal: one line per poll where something changed, none for the others.
    waits = [line for line in result.stderr.splitlines() if "waiting for" in line]
    assert waits == [
        "fetcher: waiting for 4 of 4 jobs: IN_PROGRESS; next poll in 0.01 s",
        "fetcher: waiting for 3 of 4 jobs: IN_PROGRESS; next poll in 0.01 s",
        "fetcher: waiting for 1 of 4 jobs: no link yet; next poll in 0.01 s",
    ]


def test_wait_gives_up_on_a_job_that_breaks(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    job = atlas.add("Cluster0-shard-0.tar.gz", status="IN_PROGRESS", delivery_status="NOT_STARTED")
    atlas.on_list = lambda poll: atlas.set_state(job, "BROKEN", "FAILED") if poll == 2 else None

    result = run_cli(
        *fetch_args(atlas, tmp_path, "--wait", "--poll-interval", "0.01", "--wait-timeout", "20")
    )

    assert result.exit_code == 3, result.stderr
    assert (job_entry(tmp_path, job)["outcome"], job_entry(tmp_path, job)["reason"]) == (
        "skipped",
        "job BROKEN",
    )
    assert atlas.polls == 2  # no more polls for a job that can never be downloaded


def test_wait_quiet_prints_no_wait_lines(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    job = atlas.add("Cluster0-shard-0.tar.gz", status="IN_PROGRESS", delivery_status="NOT_STARTED")
    atlas.on_list = lambda poll: atlas.set_state(job) if poll == 3 else None
    result = run_cli(
        *fetch_args(atlas, tmp_path, "--wait", "--poll-interval", "0.01", "--wait-timeout", "20")
    )
    assert result.exit_code == 0, result.stderr
    assert "waiting" not in result.stderr + result.stdout


def test_wait_status_names_what_each_job_waits_for() -> None:
    one = WaitStatus(waiting=3, listed=5, stages=(("IN_PROGRESS", 3),), next_poll=30.0)
    assert str(one) == "waiting for 3 of 5 jobs: IN_PROGRESS; next poll in 30 s"
    mixed = WaitStatus(
        4, 5, (("IN_PROGRESS", 2), ("delivery NOT_STARTED", 1), ("no link yet", 1)), 2.5
    )
    assert str(mixed) == (
        "waiting for 4 of 5 jobs: 2 IN_PROGRESS, 1 delivery NOT_STARTED, 1 no link yet;"
        " next poll in 2.5 s"
    )


def test_on_a_terminal_the_wait_status_is_one_line_that_is_replaced(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reporter = TerminalReporter(bars=True, lines=None, wait=True)
    reporter.waiting(WaitStatus(3, 5, (("IN_PROGRESS", 3),), 30.0))
    reporter.waiting(WaitStatus(2, 5, (("IN_PROGRESS", 2),), 30.0))
    reporter.waiting(None)
    reporter.close()
    err = capsys.readouterr().err
    assert "waiting for 3 of 5 jobs: IN_PROGRESS; next poll in 30 s" in err
    assert "waiting for 2 of 5 jobs" in err
    assert "\n" not in err.replace("\r\n", "\r").strip("\n")  # redrawn in place, not scrolled


# -- MongoDB's own example response, verbatim ------------------------------------------------


@pytest.fixture
def documented(httpserver: HTTPServer) -> dict[str, Any]:
    """Serve the example of MongoDB's "Get All Restore Jobs" page as it is written."""
    body = FIXTURE.read_bytes()
    doc: dict[str, Any] = json.loads(body)
    first = doc["results"][0]
    gate = DigestGate()
    path = f"/api/atlas/v1.0/groups/{first['groupId']}/clusters/{first['clusterName']}/restoreJobs"

    def handler(request: Request) -> Response:
        if not gate.check(request):
            return gate.challenge()
        return Response(body, 200, content_type="application/json")

    httpserver.expect_request(path).respond_with_handler(handler)
    return {
        "doc": doc,
        "args": [
            "--base-url",
            httpserver.url_for("/api/atlas/v1.0"),
            "--group",
            first["groupId"],
            "--cluster",
            first["clusterName"],
            "--batch",
            first["batchId"],
        ],
    }


def test_the_documented_example_lists_three_expired_jobs(
    documented: dict[str, Any], creds: None
) -> None:
    table = run_cli("list", *documented["args"])
    assert table.exit_code == 0, table.stderr
    rows = table.stdout.splitlines()[1:]
    jobs = documented["doc"]["results"]
    assert len(rows) == 3
    for row, job in zip(rows, jobs, strict=True):
        assert row.startswith(job["id"]) and row.endswith("delivery EXPIRED")
        assert job["hashes"][0]["fileName"] in row
    listed = run_cli("list", *documented["args"], "--json")
    assert listed.exit_code == 0
    for job in jobs:
        token = job["delivery"]["url"].split("/")[-2]
        assert token not in table.stdout + listed.stdout
    shown = json.loads(listed.stdout)["jobs"]
    assert {j["pullHost"] for j in shown} == {"https://api-backup-dev.mongodb.com"}
    assert {j["reason"] for j in shown} == {"delivery EXPIRED"}


def test_the_documented_example_is_skipped_whole_without_a_download(
    documented: dict[str, Any], creds: None, tmp_path: Path
) -> None:
    # Were any of the links requested, the job would fail (no network here) and exit 1.
    result = run_cli("fetch", *documented["args"], "--dest", str(tmp_path), "--quiet")
    assert result.exit_code == 3, result.stdout + result.stderr
    doc = manifest_doc(tmp_path)
    assert doc["complete"] is False
    for job in documented["doc"]["results"]:
        entry = job_entry(tmp_path, job)
        assert (entry["outcome"], entry["reason"]) == ("skipped", "delivery EXPIRED")
        assert entry["fileName"] == job["hashes"][0]["fileName"]
        assert entry["maxDownloads"] == 2147483647
        assert entry["snapshotId"] == job["snapshotId"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "manifest.json"
    ]


# -- maxDownloads -------------------------------------------------------------------------------


def test_the_manifest_records_max_downloads(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    job = atlas.add("a.tar.gz", max_downloads=5)
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    assert job_entry(tmp_path, job)["maxDownloads"] == 5


@pytest.mark.parametrize("status", [403, 410])
def test_a_refusal_once_the_download_limit_is_spent_says_so(
    atlas: Atlas, creds: None, tmp_path: Path, status: int
) -> None:
    job = atlas.add("a.tar.gz", max_downloads=2)
    resource = atlas.pull.resources[job["_path"]]
    resource.faults = [Fault(drop_after=1000), Fault(status=status)]

    result = run_cli(*fetch_args(atlas, tmp_path))

    assert result.exit_code == 1
    entry = job_entry(tmp_path, job)
    assert entry["outcome"] == "failed"
    assert f"answered {status}" in entry["reason"]
    assert "after 2 requests to a link that allows 2 downloads" in entry["reason"]
    assert "download limit is probably used up" in entry["reason"]
    assert "a new restore job is needed" in entry["reason"]
    assert (tmp_path / partial_name("a.tar.gz")).stat().st_size == 1000  # kept


def test_the_request_count_survives_between_runs(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    job = atlas.add("a.tar.gz", max_downloads=2)
    resource = atlas.pull.resources[job["_path"]]
    resource.faults = [Fault(status=410), Fault(status=410)]

    first = run_cli(*fetch_args(atlas, tmp_path))
    assert first.exit_code == 1
    reason = job_entry(tmp_path, job)["reason"]
    assert "answered 410" in reason and "limit" not in reason  # 1 of 2: something else
    assert json.loads((tmp_path / state_name("a.tar.gz")).read_text())["requests"] == 1

    second = run_cli(*fetch_args(atlas, tmp_path))
    assert second.exit_code == 1
    assert "after 2 requests to a link that allows 2" in job_entry(tmp_path, job)["reason"]


# -- ids are checked before any request --------------------------------------------------------


_BAD_IDS = [
    ("--group", "my-project"),
    ("--group", "5f0c0ffee0000000000000a"),  # 23 digits
    ("--batch", "6a1b2c3d4e5f60718293a4b5z"),
    ("--batch", "../../etc"),
]


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [("list", *bad) for bad in _BAD_IDS]
    + [("fetch", *bad) for bad in _BAD_IDS]
    + [("fetch", "--job", "6a1b2c3d4e5f60718293a4g5")],
)
def test_ids_that_are_not_object_ids_are_usage_errors(
    atlas: Atlas, creds: None, tmp_path: Path, command: str, option: str, value: str
) -> None:
    args = api_args(atlas, command)
    if command == "fetch":
        args += ["--dest", str(tmp_path / "d")]
    if option == "--group":
        args[args.index("--group") + 1] = value
        if command == "fetch":
            args += ["--batch", BATCH]
    else:
        args += [option, value]

    result = run_cli(*args)

    assert result.exit_code == 2
    assert option in result.stderr and "24 hexadecimal digits" in result.stderr
    assert "Traceback" not in result.stderr
    assert atlas.gate.challenges == 0 and atlas.gate.accepted == 0  # not one request
    assert not (tmp_path / "d").exists()


# -- the journal: per-archive cost that does not grow with the batch ---------------------------


def test_a_batch_writes_manifest_json_once(
    atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(11):
        atlas.add(f"Cluster0-shard-{i}.tar.gz")
    atlas.add("Cluster0-config.tar.gz")
    writes: list[int] = []
    real = mf.write

    def counting(dest: Destination, manifest: mf.Manifest) -> mf.Manifest:
        writes.append(len(manifest.jobs))
        return real(dest, manifest)

    monkeypatch.setattr(mf, "write", counting)

    assert run_cli(*fetch_args(atlas, tmp_path, "--parallel", "4")).exit_code == 0

    assert writes == [12]  # once, whole, at the end: not once per archive
    assert not (tmp_path / mf.JOURNAL_NAME).exists()
    assert len(manifest_doc(tmp_path)["jobs"]) == 12


@pytest.mark.slow  # a real process, killed
def test_a_killed_run_still_records_every_archive_it_verified(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    done = [atlas.add(f"Cluster0-shard-{i}.tar.gz") for i in range(3)]
    stuck = atlas.add("Cluster0-config.tar.gz")
    hold = threading.Event()
    atlas.pull.resources[stuck["_path"]].faults = [Fault(stall_after=4096, hold=hold)]
    journal = dest / mf.JOURNAL_NAME

    def journaled() -> int:
        return journal.read_text().count("\n") - 1 if journal.exists() else 0

    proc = spawn_fetch(atlas, dest, tmp_path, "killed", "--parallel", "4")
    try:
        wait_until(lambda: journaled() == 3, proc, tmp_path, "killed")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=PATIENCE) == -signal.SIGKILL
    finally:
        hold.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (dest / "manifest.json").exists()  # never written whole: the journal holds it

    # verify reads the journal: every archive the killed run verified is on record, and the
    # restore set says what the run did not get to.
    verified = run_cli("verify", str(dest))
    assert verified.exit_code == 3, verified.stdout
    assert "3 of 3 archives intact" in verified.stdout
    assert "no config server archive among 3 archives" in verified.stdout

    # The next fetch folds the journal into manifest.json and downloads only what is missing.
    atlas.pull.log.clear()
    again = run_cli(*fetch_args(atlas, dest))
    assert again.exit_code == 0, again.stderr
    assert not journal.exists()
    for job in done:
        assert atlas.pull.requests_for(job["_path"]) == []
        assert job_entry(dest, job)["outcome"] == "verified"
    assert job_entry(dest, stuck)["outcome"] == "verified"


@pytest.mark.parametrize("torn", ["last", "middle"])
def test_a_journal_line_that_does_not_read_is_left_out(
    atlas: Atlas, creds: None, tmp_path: Path, torn: str
) -> None:
    names = ("Cluster0-shard-0.tar.gz", "Cluster0-shard-1.tar.gz", "Cluster0-config.tar.gz")
    for name in names:
        atlas.add(name)
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    doc = manifest_doc(tmp_path)
    (tmp_path / "manifest.json").unlink()
    head = {"journalVersion": 1, "groupId": doc["groupId"], "cluster": doc["cluster"]}
    head["batchId"] = doc["batchId"]
    whole = [json.dumps(job) for job in doc["jobs"]]
    # A crash tears the last line; a full disk can cut one short that later lines follow.
    bad = 2 if torn == "last" else 1
    whole[bad] = whole[bad][:40]
    (tmp_path / mf.JOURNAL_NAME).write_text("\n".join([json.dumps(head), *whole]))

    result = run_cli("verify", str(tmp_path))

    assert "2 of 2 archives intact" in result.stdout, result.stdout
    kept = {j["id"] for j in manifest_doc_or_journal(tmp_path)}
    assert kept == {j["id"] for i, j in enumerate(doc["jobs"]) if i != bad}


def manifest_doc_or_journal(dest: Path) -> list[dict[str, Any]]:
    """The jobs `load` sees: here, those of the journal."""
    with Destination(dest, create=False) as d:
        loaded = mf.load(d)
    assert loaded is not None
    return [j.to_json() for j in loaded.jobs]


def test_a_verified_archive_stays_on_record_when_its_job_loses_its_link(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("Cluster0-shard-0.tar.gz")
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    atlas.set_state(job, "FINISHED", "EXPIRED", link=False)  # listed again: no url, no hashes

    again = run_cli(*fetch_args(atlas, tmp_path))

    assert again.exit_code == 0, again.stderr
    record = job_entry(tmp_path, job)
    assert (record["outcome"], record["reason"]) == ("verified", "already verified on disk")
    assert record["files"][0]["name"] == "Cluster0-shard-0.tar.gz"
