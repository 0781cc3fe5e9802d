"""`fetcher list` (fetcher.cli): the jobs, their archives and readiness, as a table and as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from fetcher.cli import Runtime
from tests.atlasv2 import ACCEPT, CLUSTER_V2, JOBS_V2, AtlasV2
from tests.conftest import (
    Atlas,
    api_args,
    fetch_args,
    plant_secrets,
    run_cli,
    v2_args,
)
from tests.pullserver import PullServer
from tests.support import BATCH, GROUP, JOBS_PATH, api_base, list_args, one_line_error, page

# == a batch end to end, in-process ================================================================


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


# == while a restore runs: readiness first, --wait, maxDownloads, ids, the journal =================


# -- readiness before names ---------------------------------------------------------------------


def test_list_shows_jobs_without_links(atlas: Atlas, creds: None) -> None:
    atlas.add("Cluster0-shard-0.tar.gz", status="IN_PROGRESS", delivery_status="NOT_STARTED")
    result = run_cli(*api_args(atlas, "list", "--batch", BATCH))
    assert result.exit_code == 0, result.stderr
    cells = result.stdout.splitlines()[1].split()
    assert cells[1:5] == ["-", "IN_PROGRESS", "NOT_STARTED", "-"]  # no file, no expiry yet
    assert result.stdout.splitlines()[1].endswith(
        "not ready yet (job IN_PROGRESS, delivery NOT_STARTED)"
    )


# -- MongoDB's own example response, verbatim ------------------------------------------------


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


# == Atlas Cloud Backup (Admin API v2): an archive per replica set, no hash ========================


V2_SHARD, V2_CONFIG = f"{CLUSTER_V2}-shard-0", f"{CLUSTER_V2}-config-0"


def test_list_shows_each_archive_and_its_replica_set_and_no_query(
    atlas_v2: AtlasV2, creds: None
) -> None:
    job = atlas_v2.add()
    atlas_v2.add(state="expired")
    atlas_v2.add(delivery_type="automated")
    table = run_cli(*v2_args(atlas_v2, "list"))
    assert table.exit_code == 0, table.stderr
    assert "REPLICA SET" in table.output and "TYPE" in table.output
    assert f"{V2_SHARD}.tar.gz" in table.output and V2_CONFIG in table.output
    assert "expired" in table.output
    automated = next(line for line in table.output.splitlines() if "automated" in line)
    assert "not a download restore (automated)" in automated
    doc = json.loads(run_cli(*v2_args(atlas_v2, "list", "--json")).output)
    listed = next(j for j in doc["jobs"] if j["id"] == job.id)
    assert listed["deliveryMethod"] == "download"
    links = {a["replicaSet"]: a["link"] for a in listed["archives"]}
    assert links[V2_SHARD] == atlas_v2.pull.url(job.paths[V2_SHARD])  # origin and path, no query
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


def test_a_token_endpoint_that_is_briefly_down_is_retried(
    atlas_v2: AtlasV2, service_account: None
) -> None:
    pauses: list[float] = []
    atlas_v2.token_faults = [503, 429]
    result = run_cli(*v2_args(atlas_v2, "list"), runtime=Runtime(sleep=pauses.append))
    assert result.exit_code == 0, result.stderr
    assert atlas_v2.token_requests == 3
    assert len(pauses) == 2  # backed off before each retry


# == hostile input and secrets (issue 4) ===========================================================


# -- credentials -----------------------------------------------------------------------------


def _redirect(to: str) -> Callable[[Request], Response]:
    return lambda request: Response(status=302, headers={"Location": to})


def _next_link(to: str) -> Callable[[Request], Response]:
    return lambda request: Response(json.dumps(page([], next_href=to)), 200, mimetype="text/json")


@pytest.mark.parametrize("how", [_redirect, _next_link])
@pytest.mark.parametrize("to", ["other-host", "same-host-by-another-name"])
def test_the_api_never_follows_to_another_origin(
    httpserver: HTTPServer,
    other: PullServer,
    creds: None,
    how: Callable[[str], Callable[[Request], Response]],
    to: str,
) -> None:
    if to == "other-host":
        other.add(JOBS_PATH, b'{"results": []}')
        target = other.url(JOBS_PATH)
    else:
        target = httpserver.url_for(JOBS_PATH).replace("//localhost:", "//127.0.0.1:")
    httpserver.expect_request(JOBS_PATH).respond_with_handler(how(target))
    result = run_cli(*list_args(api_base(httpserver)))
    assert "another host" in one_line_error(result)
    assert not other.log
    assert len(httpserver.log) == 1


# -- redaction -------------------------------------------------------------------------------


def test_server_text_cannot_drive_the_terminal(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    job = atlas.add("rs0.tar.gz", status="IN_PROGRESS")
    job["statusName"] = "IN_PROGRESS\x1b]0;pwned\x07\r\nverified   fake.tar.gz"
    for args in (list_args(atlas.base_url), fetch_args(atlas, tmp_path)):
        if "--quiet" in args:
            args.remove("--quiet")
        result = run_cli(*args)
        assert "\x1b" not in result.stdout + result.stderr
        assert "\x07" not in result.stdout + result.stderr
        assert not any(line.startswith("verified") for line in result.stdout.splitlines())


# == --verbose: every request and answer, no secret ================================================


def test_verbose_on_list_and_quiet_without_it(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    secrets = plant_secrets(atlas)

    listed = run_cli(*api_args(atlas, "list", "--verbose"))
    silent = run_cli(*fetch_args(atlas, tmp_path))

    assert listed.exit_code == 0
    assert "fetcher: > GET" in listed.stderr and "fetcher: < 200 OK" in listed.stderr
    assert "fetcher: >" not in silent.stderr  # no log unless asked for
    for secret in secrets:
        assert secret not in listed.stdout + listed.stderr
