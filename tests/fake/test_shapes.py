"""Every job shape the fake serves, checked against MongoDB's own OpenAPI definition.

The definition is tests/fixtures/atlas-openapi-restore-jobs.json: the schemas this checks
against, copied verbatim from mongodb/openapi (its `x-source` names the file, commit and
version). A legacy job must be a BackupRestoreJob, an Atlas v2 job a
DiskBackupSnapshotRestoreJob: every property the fake sends declared there, with the declared
type (and enum, pattern, format, bounds), the required ones present, nothing request-only.

Where a service sends what the definition lacks, the fake sends it too, and the field is
named below with the source that says so. A name that no longer matches anything fails.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.atlasv2 import ACCEPT, JOBS_V2, AtlasV2
from tests.conftest import Atlas
from tests.fake import jobs, service
from tests.fake.ids import BATCH
from tests.fake.pull import PullServer
from tests.fake.schema import Definition, Problem
from tests.support import JOBS_PATH, PRIVATE_KEY, PUBLIC_KEY, job_json, make_archive

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DEFINITION = FIXTURES / "atlas-openapi-restore-jobs.json"
LEGACY, V2 = "BackupRestoreJob", "DiskBackupSnapshotRestoreJob"

# Where MongoDB's definition and MongoDB's own example of the response disagree (the
# example: tests/fixtures/get-all-restore-jobs.json, verbatim from "Get All Restore Jobs").
# The fake follows the example; test_mongodbs_own_example_needs_exactly_these proves both.
EXAMPLE_GAPS: Mapping[tuple[str, str], str] = {
    ("pointInTime", "undeclared"): (
        "every job of MongoDB's example has pointInTime; neither BackupRestoreJob of the v2 "
        "definition nor of v1-deprecated/v1.json declares it (and fetcher reads it)"
    ),
    ("timestamp.increment", "minimum"): (
        "the definition bounds ApiBSONTimestampView.increment below by 1199145600, a time in "
        "seconds (oplogTs's bound); an increment is an ordinal within a second, 1 in the example"
    ),
}
# Ops Manager's link. Atlas's definition declares urlV2, authHeader and authValue, not
# authBearer; API-NOTES ("A restore job (fields that matter)") says Ops Manager sends urlV2 with
# authHeader (Authorization), authBearer (Bearer) and authValue (the token), and also that no
# MongoDB source it found names authBearer. So the Atlas-shaped fake never sends it; only the
# named Ops Manager variant does (jobs.link_fields(url, bearer=...): the tests'
# _add_ops_manager_job, scripts/fake_atlas.py --bearer), so that fetcher stays tested against
# the shape Ops Manager is said to send.
OPS_MANAGER_GAPS: Mapping[tuple[str, str], str] = {
    ("delivery.authBearer", "undeclared"): "Ops Manager's urlV2 link, per API-NOTES",
}


@pytest.fixture(scope="module")
def definition() -> Definition:
    return Definition.load(DEFINITION)


def unexpected(
    problems: list[Problem], allowed: Mapping[tuple[str, str], str], used: set[tuple[str, str]]
) -> list[str]:
    """The problems no allowance names; record the allowances used."""
    out = []
    for problem in problems:
        key = (problem.path, problem.keyword)
        if key in allowed:
            used.add(key)
        else:
            out.append(str(problem))
    return out


def assert_shapes(
    definition: Definition,
    name: str,
    documents: Mapping[str, dict[str, Any]],
    allowed: Mapping[tuple[str, str], str],
) -> None:
    """Each document is a `name`, but for `allowed`, and every allowance is needed."""
    used: set[tuple[str, str]] = set()
    found = {
        label: bad
        for label, doc in documents.items()
        if (bad := unexpected(definition.check(name, doc), allowed, used))
    }
    assert found == {}
    assert used == set(allowed), f"allowances no shape needs: {set(allowed) - used}"


# -- the definition and the checker -----------------------------------------------------------


def test_the_copy_names_its_source(definition: Definition) -> None:
    source = definition.document["x-source"]
    assert source["repository"] == "https://github.com/mongodb/openapi"
    assert source["path"] == "openapi/v2/openapi-2023-01-01.json"
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    assert source["info"]["version"] == "2.0" and source["resourceVersion"] == "2023-01-01"
    assert {LEGACY, "BackupRestoreJobDelivery", V2, "DiskBackupRestoreMember"} <= set(
        definition.schemas
    )


def test_every_ref_resolves_within_the_copy(definition: Definition) -> None:
    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    names = {ref.removeprefix("#/components/schemas/") for ref in refs(definition.schemas)}
    assert names <= set(definition.schemas)


def test_the_checker_finds_each_kind_of_problem() -> None:
    checker = Definition(
        {
            "components": {
                "schemas": {
                    "Base": {
                        "properties": {"id": {"type": "string", "pattern": "^[a-f0-9]{24}$"}},
                        "required": ["id"],
                        "type": "object",
                    },
                    "Thing": {
                        "allOf": [{"$ref": "#/components/schemas/Base"}],
                        "properties": {
                            "n": {"type": "integer", "minimum": 1, "format": "int32"},
                            "when": {"type": "string", "format": "date-time"},
                            "kind": {"type": "string", "enum": ["a", "b"]},
                            "secret": {"type": "string", "writeOnly": True},
                            "items": {"type": "array", "items": {"type": "boolean"}},
                        },
                        "type": "object",
                    },
                }
            }
        }
    )
    good = {"id": "a" * 24, "n": 3, "when": "2026-11-28T09:00:00Z", "kind": "a", "items": [True]}
    assert checker.check("Thing", good) == []
    bad = {
        "id": "nope",
        "n": True,
        "when": "yesterday",
        "kind": "c",
        "secret": "s",
        "items": [1],
        "extra": 1,
    }
    found = {(p.path, p.keyword) for p in checker.check("Thing", bad)}
    assert found == {
        ("id", "pattern"),
        ("n", "type"),
        ("when", "format"),
        ("kind", "enum"),
        ("secret", "writeOnly"),
        ("items[]", "type"),
        ("extra", "undeclared"),
    }
    missing = {(p.path, p.keyword) for p in checker.check("Thing", {"n": 0})}
    assert missing == {("id", "required"), ("n", "minimum")}


def test_the_checker_refuses_what_it_does_not_know() -> None:
    checker = Definition({"components": {"schemas": {"X": {"oneOf": [{"type": "string"}]}}}})
    with pytest.raises(ValueError, match="unsupported"):
        checker.check("X", "x")


def test_mongodbs_own_example_needs_exactly_these(definition: Definition) -> None:
    """MongoDB's example of Get All Restore Jobs breaks its definition where EXAMPLE_GAPS says,
    and nowhere else: the allowances are the service's, not the fake's."""
    example = json.loads((FIXTURES / "get-all-restore-jobs.json").read_text())
    documents = {f"example job {i}": job for i, job in enumerate(example["results"])}
    assert_shapes(definition, LEGACY, documents, EXAMPLE_GAPS)


# -- legacy jobs ------------------------------------------------------------------------------


def _legacy_shapes() -> dict[str, dict[str, Any]]:
    """support.job_json at every moment, with each link shape and without a batch."""
    url = "https://api-backup.example/backup/restore/v2/pull/ab/tok/rs0.tar.gz"
    out = {}
    for moment in jobs.MOMENTS:
        for sharded in (True, False):
            common: dict[str, Any] = {
                "file_name": "rs0.tar.gz",
                "sha1_hex": "0" * 40,
                "status": moment.status,
                "delivery_status": moment.delivery_status,
                "batch_id": BATCH if sharded else None,
            }
            label = f"{moment.name}, {'sharded' if sharded else 'replica set'}"
            out[f"{label}, url"] = job_json(url=url, **common)
            om: dict[str, Any] = jobs.link_fields(url, bearer="om-token")
            out[f"{label}, Ops Manager"] = job_json(**common, **om)
    out["ready, link not filled in yet"] = job_json(url=url, link=False)
    out["ready, hashes not published yet"] = job_json(url=url, with_hashes=False)
    return out


def test_a_legacy_job_lists_no_link_until_it_is_ready() -> None:
    for label, doc in _legacy_shapes().items():
        delivery = doc["delivery"]
        if jobs.has_link(doc["statusName"], delivery["statusName"]) and "not filled" not in label:
            assert {"url", "urlV2"} & delivery.keys(), label
            assert "expires" in delivery, label
        else:
            assert not set(jobs.LINK_FIELDS) & delivery.keys(), label
            assert doc["hashes"] == [], label


def test_the_tests_legacy_jobs_are_backup_restore_jobs(definition: Definition) -> None:
    shapes = _legacy_shapes()
    atlas = {k: v for k, v in shapes.items() if "Ops Manager" not in k}
    assert_shapes(definition, LEGACY, atlas, EXAMPLE_GAPS)
    om = {k: v for k, v in shapes.items() if "Ops Manager" in k}
    assert_shapes(definition, LEGACY, om, {**EXAMPLE_GAPS, **OPS_MANAGER_GAPS})


def test_what_the_atlas_fixture_serves_is_backup_restore_jobs(
    definition: Definition, atlas: Atlas
) -> None:
    ready = atlas.add("Cluster0-shard-0.tar.gz", make_archive("Cluster0-shard-0", 1024))
    waiting = atlas.add(
        "Cluster0-shard-1.tar.gz", status="IN_PROGRESS", delivery_status="NOT_STARTED"
    )
    atlas.add("Cluster0-config.tar.gz", status="BROKEN", delivery_status="FAILED")
    auth = httpx.DigestAuth(PUBLIC_KEY, PRIVATE_KEY)
    with httpx.Client(auth=auth) as client:
        listed = client.get(atlas.server.url_for(JOBS_PATH)).json()["results"]
        atlas.set_state(waiting)
        one = client.get(atlas.server.url_for(f"{JOBS_PATH}/{waiting['id']}")).json()
    assert listed[0]["id"] == ready["id"]
    documents = {f"listed {j['delivery']['statusName']}": j for j in listed}
    documents["read after set_state"] = one
    assert_shapes(definition, LEGACY, documents, EXAMPLE_GAPS)


# -- Atlas v2 jobs ----------------------------------------------------------------------------


def test_the_tests_v2_jobs_are_disk_backup_snapshot_restore_jobs(
    definition: Definition, atlas_v2: AtlasV2
) -> None:
    documents = {}
    for state in jobs.V2_STATES:
        for sharded in (True, False):
            names = ("Cluster1-shard-0", "Cluster1-config-0") if sharded else ("Cluster1-shard-0",)
            for kind in ("download", "automated"):
                job = atlas_v2.add(names, sharded=sharded, state=state, delivery_type=kind)
                label = f"{state}, {'sharded' if sharded else 'replica set'}, {kind}"
                documents[label] = atlas_v2.render(job)
    assert_shapes(definition, V2, documents, {})
    assert not any("createdAt" in doc for doc in documents.values())


def test_what_the_v2_fixture_serves_is_disk_backup_snapshot_restore_jobs(
    definition: Definition, atlas_v2: AtlasV2
) -> None:
    atlas_v2.add()
    atlas_v2.add(("Cluster1-shard-0",), sharded=False, state="running")
    auth = httpx.DigestAuth(PUBLIC_KEY, PRIVATE_KEY)
    with httpx.Client(auth=auth, headers={"Accept": ACCEPT}) as client:
        listed = client.get(atlas_v2.server.url_for(JOBS_V2)).json()["results"]
    assert len(listed) == 2
    assert_shapes(definition, V2, {f"listed {i}": j for i, j in enumerate(listed)}, {})


# -- the standalone server (scripts/fake_atlas.py) --------------------------------------------


class Clock:
    """Monotonic seconds and wall-clock time that move only when told."""

    def __init__(self) -> None:
        self.seconds = 1000.0
        self.wall = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return self.wall + timedelta(seconds=self.seconds - 1000.0)


def _standalone(tmp_path: Path, *options: str) -> tuple[service.State, Clock]:
    argv = ["--state-dir", str(tmp_path), "--size", "4096", "--shards", "2", "--ready-after", "10"]
    args = service.parse_args([*argv, "--v2-shards", "1", "--v2-replica-set", *options])
    clock = Clock()
    state = service.State(
        args, service.build_jobs(args), service.build_v2_jobs(args), clock=clock.monotonic,
        now=clock.now,
    )  # fmt: skip
    state.api_base, state.pull_base = "http://127.0.0.1:1/api/atlas/v1.0", "http://127.0.0.1:2"
    state.v2_base, state.download_base = "http://127.0.0.1:1/api/atlas/v2", "http://127.0.0.1:3"
    return state, clock


def _over_its_life(
    state: service.State, clock: Clock, render: Callable[[], dict[str, dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """`render()` when triggered, half-way, ready, and after the links expired."""
    out = {}
    for label, seconds in [("t0", 0.0), ("t+4", 4.0), ("t+11", 11.0), ("t+3h", 3 * 3600.0)]:
        clock.seconds = 1000.0 + seconds
        out.update({f"{label} {k}": v for k, v in render().items()})
    return out


@pytest.mark.parametrize("options", [(), ("--late-hashes",), ("--bearer",)], ids=str)
def test_the_standalone_servers_legacy_jobs_are_backup_restore_jobs(
    definition: Definition, tmp_path: Path, options: tuple[str, ...]
) -> None:
    state, clock = _standalone(tmp_path, *options)

    def render() -> dict[str, dict[str, Any]]:
        return {f"{j.file_name} {state.phase(j)}": state.render(j) for j in state.jobs}

    documents = _over_its_life(state, clock, render)
    state.jobs[0].delivery_status = "MAX_DOWNLOADS_EXCEEDED"
    documents["used up"] = state.render(state.jobs[0])
    moments = {(d["statusName"], d["delivery"]["statusName"]) for d in documents.values()}
    assert {("IN_PROGRESS", "NOT_STARTED"), ("IN_PROGRESS", "IN_PROGRESS")} <= moments
    assert {("FINISHED", "READY"), ("FINISHED", "EXPIRED")} <= moments
    allowed = {**EXAMPLE_GAPS, **(OPS_MANAGER_GAPS if "--bearer" in options else {})}
    assert_shapes(definition, LEGACY, documents, allowed)


def test_the_standalone_servers_v2_jobs_are_disk_backup_snapshot_restore_jobs(
    definition: Definition, tmp_path: Path
) -> None:
    state, clock = _standalone(tmp_path)

    def render() -> dict[str, dict[str, Any]]:
        return {f"{j.kind} {j.delivery_type} {j.id}": state.render_v2(j) for j in state.v2_jobs}

    documents = _over_its_life(state, clock, render)
    states = {
        "expired" if d["expired"] else "finished" if "finishedAt" in d else "running"
        for d in documents.values()
    }
    assert states == {"running", "finished", "expired"}
    assert_shapes(definition, V2, documents, {})
    assert not any("createdAt" in doc for doc in documents.values())


def test_the_standalone_server_takes_its_clock_as_given(tmp_path: Path) -> None:
    state, clock = _standalone(tmp_path)
    job = state.jobs[0]
    assert state.phase(job) == "NOT_STARTED"
    clock.seconds += 100
    assert state.phase(job) == "READY"


def test_one_pull_host_serves_ranges_for_every_fake() -> None:
    """The tests' PullServer answers Range, If-Range and suffix ranges, and 416 past the end,
    as pull.byte_range decides: the standalone server's pull and download hosts call it too."""
    server = PullServer()
    try:
        data = bytes(range(256)) * 4
        server.add("/a", data)
        with httpx.Client() as client:
            whole = client.get(server.url("/a"))
            part = client.get(server.url("/a"), headers={"Range": "bytes=1000-"})
            suffix = client.get(server.url("/a"), headers={"Range": "bytes=-24"})
            stale = client.get(server.url("/a"), headers={"Range": "bytes=10-", "If-Range": '"x"'})
            past = client.get(server.url("/a"), headers={"Range": "bytes=1024-"})
    finally:
        server.close()
    assert whole.status_code == 200 and whole.content == data
    assert part.status_code == 206 and part.headers["content-range"] == "bytes 1000-1023/1024"
    assert suffix.status_code == 206 and suffix.content == data[-24:]
    assert stale.status_code == 200 and stale.content == data
    assert past.status_code == 416 and past.headers["content-range"] == "bytes */1024"
