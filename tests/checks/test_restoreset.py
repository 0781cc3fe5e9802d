"""fetcher.checks.restoreset: judging the archives of a batch as one restore set."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fetcher.checks.restoreset import Member, RestoreSet, judge

SNAP = "Mon Jan 22 22:44:54 GMT 2018"
ISO = "2018-01-22T22:44:54Z"
SHARDS = ("shard-0", "shard-1", "shard-2")

JSON_CONFIGSVR = (
    '{\n  "net": { "port": 27017 },\n  "sharding": { "clusterRole": "configsvr" },\n'
    '  "storage": { "dbPath": "/data/db" }\n}'
)
JSON_SHARDSVR = '{\n  "sharding": { "clusterRole": "shardsvr" }\n}'
YAML_CONFIGSVR = "net:\n  port: 27017\nsharding:\n  clusterRole: configsvr\n"
FLAG_CONFIGSVR = "mongod --configsvr --replSet csrs --dbpath /data/db"
NO_ROLE = '{\n  "storage": { "dbPath": "/data/db", "engine": "wiredTiger" }\n}'


def info(rs: str | None = "shard-0", options: str = NO_ROLE, **extra: str | None) -> dict[str, str]:
    """Return restoreInfo.txt's lines as the parser gives them; `extra` adds, replaces or drops."""
    lines = {
        "Group Name": "Project0",
        "Replica Set": rs,
        "Cluster Id": "5a66659ba4b3a00c8bab1d53",
        "Snapshot timestamp": SNAP,
        "Restore timestamp": SNAP,
        "Last Oplog Applied": f"{SNAP} (1516661094, 1)",
        "MongoDB Version": "7.0.12",
        "Storage engine type": "wiredTiger",
        "Startup Options": options,
    }
    lines.update({k.replace("_", " "): v for k, v in extra.items()})
    return {k: v for k, v in lines.items() if v is not None}


def member(rs: str, options: str = NO_ROLE, **extra: str | None) -> Member:
    """Return the archive of replica set `rs`, named after it."""
    return Member(archive=f"{rs}.tar.gz", replica_set=rs, restore_info=info(rs, options, **extra))


def batch(config: Member, **extra: str | None) -> list[Member]:
    """Return three shards and `config`, shards first as the API lists them."""
    return [member(rs, JSON_SHARDSVR, **extra) for rs in SHARDS] + [config]


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(member("csrs", JSON_CONFIGSVR), id="json-clusterRole"),
        pytest.param(member("csrs", YAML_CONFIGSVR), id="yaml-clusterRole"),
        pytest.param(member("csrs", FLAG_CONFIGSVR), id="command-line"),
        pytest.param(
            Member(
                "csrs.tar.gz",
                "csrs",
                {"Replica Set": "csrs", "startup options (mongod)": YAML_CONFIGSVR},
            ),
            id="key-starts-with-startup-options",
        ),
        pytest.param(member("myConfigRS"), id="by-name"),
    ],
)
def test_good_sharded_batch(config: Member) -> None:
    got = judge(batch(config), sharded=True)
    assert got.problems == ()
    assert got.config_server == config.replica_set
    assert got.replica_sets == (*SHARDS, config.replica_set)
    assert got.restore_point == SNAP
    assert got.verdict() == f"ready to restore: 3 shards + config server, restore point {SNAP}"


def test_config_server_is_last_whatever_its_name_sorts_as() -> None:
    got = judge([member("zzz"), member("aaa", JSON_CONFIGSVR), member("mmm")], sharded=True)
    assert got.replica_sets == ("mmm", "zzz", "aaa")
    assert got.config_server == "aaa"


def test_startup_options_beat_the_name() -> None:
    # "configshard" says shardsvr: it is a shard whatever its name, and csrs is the config server.
    members = [member("configshard", JSON_SHARDSVR), member("csrs", FLAG_CONFIGSVR)]
    got = judge(members, sharded=True)
    assert got.config_server == "csrs"
    assert got.problems == ()
    assert got.verdict() == f"ready to restore: 1 shard + config server, restore point {SNAP}"


def test_the_name_counts_only_when_no_startup_options_name_the_config_server() -> None:
    got = judge([member("configdump"), member("csrs", YAML_CONFIGSVR)], sharded=True)
    assert got.config_server == "csrs"
    assert got.replica_sets == ("configdump", "csrs")
    assert got.problems == ()


def test_a_shard_that_says_shardsvr_is_never_the_config_server_by_name() -> None:
    got = judge([member("configshard", JSON_SHARDSVR), member("shard-1")], sharded=True)
    assert got.config_server is None
    assert got.problems == ("no config server archive among 2 archives (configshard, shard-1)",)


def test_configsvr_elsewhere_than_the_role_is_not_a_config_server() -> None:
    options = '{"replication": {"replSetName": "configsvr-like"}, "note": "configsvr"}'
    got = judge([member("shard-0", options)], sharded=True)
    assert got.config_server is None


def test_replica_set_restore() -> None:
    got = judge([member("rs0")], sharded=False)
    assert got == RestoreSet(
        replica_sets=("rs0",), config_server=None, problems=(), restore_point=SNAP
    )
    assert got.verdict() == f"ready to restore: replica set rs0, restore point {SNAP}"


def test_replica_set_restore_ignores_a_config_looking_name() -> None:
    got = judge([member("config", JSON_CONFIGSVR)], sharded=False)
    assert got.config_server is None
    assert got.problems == ()


def test_no_members() -> None:
    got = judge([], sharded=True)
    assert got == RestoreSet(replica_sets=(), config_server=None, problems=(), restore_point=None)
    assert got.to_json() == {
        "replicaSets": [],
        "configServer": None,
        "restorePoint": None,
        "problems": [],
    }


CONFIG = member("csrs", JSON_CONFIGSVR)
OTHER = "Tue Jan 23 22:44:54 GMT 2018"
EARLIER = "Fri Jan 19 22:44:54 GMT 2018"  # sorts before SNAP


def shards(*members: Member) -> list[Member]:
    """Return a sharded batch: `members` and the config server."""
    return [*members, CONFIG]


@pytest.mark.parametrize(
    ("members", "sharded", "problems"),
    [
        pytest.param(
            [Member("rs0-a.tar.gz", None, None), member("rs0")],
            False,
            ["rs0-a.tar.gz holds no restoreInfo.txt"],
            id="no-restoreInfo",
        ),
        pytest.param(
            [Member("rs0-a.tar.gz", None, info(None)), member("rs0")],
            False,
            ["rs0-a.tar.gz: restoreInfo.txt names no replica set"],
            id="no-replica-set-line",
        ),
        pytest.param(
            [Member("rs0-a.tar.gz", " ", info(" "))],
            False,
            ["rs0-a.tar.gz: restoreInfo.txt names no replica set"],
            id="blank-replica-set",
        ),
        pytest.param(
            [Member("b.tar.gz", "rs0", info("rs0")), Member("a.tar.gz", "rs0", info("rs0"))],
            False,
            ["replica set rs0 is in more than one archive: a.tar.gz, b.tar.gz"],
            id="one-replica-set-twice",
        ),
        pytest.param(
            shards(member("rs0", Restore_timestamp=EARLIER), member("rs1")),
            True,
            [
                # The value most archives share comes first, the odd one out last.
                f"different restore points: Restore timestamp is {SNAP} in csrs.tar.gz, "
                f"rs1.tar.gz and {EARLIER} in rs0.tar.gz"
            ],
            id="restore-timestamp",
        ),
        pytest.param(
            [
                Member("a.tar.gz", "rs0", {"Replica Set": "rs0", "snapshot TIMESTAMP": SNAP}),
                Member("b.tar.gz", "rs0", {"Replica Set": "rs0", "Snapshot Timestamp": OTHER}),
            ],
            False,
            [
                "replica set rs0 is in more than one archive: a.tar.gz, b.tar.gz",
                f"different restore points: snapshot TIMESTAMP is {SNAP} in a.tar.gz and {OTHER} "
                "in b.tar.gz",
            ],
            id="key-as-the-first-archive-writes-it",
        ),
        pytest.param(
            shards(member("rs0"), member("rs1", Snapshot_timestamp=OTHER)),
            True,
            [
                f"different restore points: Snapshot timestamp is {SNAP} in csrs.tar.gz, "
                f"rs0.tar.gz and {OTHER} in rs1.tar.gz"
            ],
            id="snapshot-timestamp",
        ),
        pytest.param(
            shards(member("rs0"), member("rs1", Last_Oplog_Applied=f"{SNAP} (1516661094, 2)")),
            True,
            [
                f"different restore points: Last Oplog Applied is {SNAP} (1516661094, 1) in "
                f"csrs.tar.gz, rs0.tar.gz and {SNAP} (1516661094, 2) in rs1.tar.gz"
            ],
            id="last-oplog-applied",
        ),
        pytest.param(
            shards(
                Member("rs0.tar.gz", "rs0", info("rs0"), ISO),
                Member("rs1.tar.gz", "rs1", info("rs1"), "2018-01-22T22:44:55Z"),
            ),
            True,
            [
                f"different restore points: API timestamp is {ISO} in rs0.tar.gz and "
                "2018-01-22T22:44:55Z in rs1.tar.gz"
            ],
            id="api-timestamp",
        ),
        pytest.param(
            shards(member("rs0", Cluster_Id="5a66659ba4b3a00c8bab1d99"), member("rs1")),
            True,
            [
                "different clusters: Cluster Id is 5a66659ba4b3a00c8bab1d53 in csrs.tar.gz, "
                "rs1.tar.gz and 5a66659ba4b3a00c8bab1d99 in rs0.tar.gz"
            ],
            id="cluster-id",
        ),
        pytest.param(
            shards(member("rs0", Cluster_Name="Cluster0"), member("rs1", Cluster_Name="Cluster1")),
            True,
            [
                "different clusters: Cluster Name is Cluster0 in rs0.tar.gz and Cluster1 "
                "in rs1.tar.gz"
            ],
            id="cluster-name",
        ),
        pytest.param(
            [member("rs0"), member("rs1"), Member("x.tar.gz", None, None)],
            True,
            [
                "x.tar.gz holds no restoreInfo.txt",
                "no config server archive among 3 archives (rs0, rs1)",
            ],
            id="sharded-without-config-server",
        ),
        pytest.param(
            [Member("x.tar.gz", None, None)],
            True,
            [
                "x.tar.gz holds no restoreInfo.txt",
                "no config server archive among 1 archive",
            ],
            id="sharded-without-any-replica-set",
        ),
        pytest.param(
            shards(member("rs0"), member("csrs2", YAML_CONFIGSVR)),
            True,
            ["more than one config server: csrs, csrs2"],
            id="two-config-servers",
        ),
        pytest.param(
            [CONFIG],
            True,
            ["no shard archive among 1 archive (csrs)"],
            id="config-server-alone",
        ),
        pytest.param(
            [member("rs0"), member("rs1")],
            False,
            ["2 replica sets in a replica set restore: rs0, rs1"],
            id="replica-set-restore-of-two-replica-sets",
        ),
    ],
)
def test_each_problem(members: list[Member], sharded: bool, problems: list[str]) -> None:
    got = judge(members, sharded=sharded)
    assert list(got.problems) == problems
    assert got.verdict().startswith("not ready to restore: ")


@pytest.mark.parametrize(
    "members",
    [
        pytest.param(
            shards(member("rs0"), Member("rs1.tar.gz", "rs1", {"Replica Set": "rs1"})),
            id="a-member-without-the-keys",
        ),
        pytest.param(
            shards(
                member("rs0", Restore_timestamp=f"  {SNAP} "),
                Member("rs1.tar.gz", "rs1", {"restore TIMESTAMP": SNAP, "Replica Set": "rs1"}),
            ),
            id="keys-and-spacing-differ",
        ),
        pytest.param(
            shards(
                Member("rs0.tar.gz", "rs0", info("rs0"), ISO),
                Member("rs1.tar.gz", "rs1", info("rs1"), "2018-01-22T23:44:54+01:00"),
                Member("rs2.tar.gz", "rs2", info("rs2")),
            ),
            id="one-instant-two-spellings",
        ),
        pytest.param(
            [Member("rs0.tar.gz", None, {"replica set": "rs0", **info(None)})],
            id="replica-set-only-in-restoreInfo",
        ),
    ],
)
def test_no_problem(members: list[Member]) -> None:
    got = judge(members, sharded=len(members) > 1)
    assert got.problems == ()


def test_problems_come_out_in_one_order_whatever_the_order_in() -> None:
    members = [
        Member("d.tar.gz", None, None),
        Member("c.tar.gz", None, info(None)),
        Member("b.tar.gz", "rs1", info("rs1", Cluster_Name="A")),
        Member("a.tar.gz", "rs1", info("rs1", Cluster_Name="B", Snapshot_timestamp=OTHER)),
        Member("e.tar.gz", "rs0", info("rs0", Cluster_Name="A")),
    ]
    want = (
        "c.tar.gz: restoreInfo.txt names no replica set",
        "d.tar.gz holds no restoreInfo.txt",
        "replica set rs1 is in more than one archive: a.tar.gz, b.tar.gz",
        f"different restore points: Snapshot timestamp is {SNAP} in b.tar.gz, c.tar.gz, "
        f"e.tar.gz and {OTHER} in a.tar.gz",
        "different clusters: Cluster Name is A in b.tar.gz, e.tar.gz and B in a.tar.gz",
        "no config server archive among 5 archives (rs0, rs1)",
    )
    assert judge(members, sharded=True).problems == want
    assert judge(members[::-1], sharded=True).problems == want


def test_text_from_an_archive_cannot_break_a_problem_line() -> None:
    members = shards(
        member("rs0", Cluster_Name="Cluster0"), member("rs1", Cluster_Name="evil\x1b[2J\nfake line")
    )
    (problem,) = judge(members, sharded=True).problems
    assert "\n" not in problem and "\x1b" not in problem
    assert "evil?[2J fake line" in problem


@pytest.mark.parametrize(
    ("members", "point"),
    [
        pytest.param(
            [Member("a", "rs0", info("rs0"), ISO), Member("b", "rs1", info("rs1"), ISO)],
            ISO,
            id="api-timestamp-first",
        ),
        pytest.param(
            [Member("a", "rs0", info("rs0"), ISO), Member("b", "rs1", info("rs1"))],
            SNAP,
            id="not-every-member-has-an-api-timestamp",
        ),
        pytest.param(
            [
                Member("a", "rs0", info("rs0"), ISO),
                Member("b", "rs1", info("rs1"), "2018-01-22T22:44:55Z"),
            ],
            SNAP,
            id="api-timestamps-differ",
        ),
        pytest.param(
            [
                Member("a", "rs0", info("rs0", Restore_timestamp="R", Snapshot_timestamp="S1")),
                Member("b", "rs1", info("rs1", Restore_timestamp=None, Snapshot_timestamp="S2")),
                Member("c", "rs2", info("rs2", Restore_timestamp="R", Snapshot_timestamp="S3")),
            ],
            "R",
            id="restore-timestamp-before-snapshot-timestamp",
        ),
        pytest.param(
            [
                Member("a", "rs0", info("rs0", Restore_timestamp="R1", Snapshot_timestamp="S")),
                Member("b", "rs1", info("rs1", Restore_timestamp="R2", Snapshot_timestamp="S")),
            ],
            "S",
            id="restore-timestamps-differ",
        ),
        pytest.param(
            [Member("a", "rs0", {"Replica Set": "rs0", "snapshot timestamp": "S"})],
            "S",
            id="snapshot-timestamp-only",
        ),
        pytest.param(
            [
                Member("a", "rs0", info("rs0", Restore_timestamp="R1", Snapshot_timestamp="S1")),
                Member("b", "rs1", info("rs1", Restore_timestamp="R2", Snapshot_timestamp="S2")),
            ],
            None,
            id="nothing-agrees",
        ),
        pytest.param([Member("a", "rs0", {"Replica Set": "rs0"})], None, id="nothing-known"),
        pytest.param([Member("a", None, None)], None, id="no-restoreInfo"),
    ],
)
def test_restore_point(members: list[Member], point: str | None) -> None:
    assert judge(members, sharded=True).restore_point == point


def _set(
    *names: str, config: str | None = None, problems: int = 0, point: str | None = ISO
) -> RestoreSet:
    """Return a restore set of `names` with `problems` made-up problems."""
    return RestoreSet(
        replica_sets=names,
        config_server=config,
        problems=tuple(f"problem {i}" for i in range(problems)),
        restore_point=point,
    )


@pytest.mark.parametrize(
    ("restore_set", "missing", "verdict"),
    [
        (_set("rs0", problems=1), 0, "not ready to restore: 1 problem"),
        (_set("rs0", problems=2), 3, "not ready to restore: 2 problems"),
        (_set("rs0"), 1, "not ready to restore: 1 archive missing"),
        (_set("s0", "c", config="c"), 2, "not ready to restore: 2 archives missing"),
        (
            _set("s0", "s1", "s2", "c", config="c"),
            0,
            f"ready to restore: 3 shards + config server, restore point {ISO}",
        ),
        (
            _set("s0", "c", config="c"),
            0,
            f"ready to restore: 1 shard + config server, restore point {ISO}",
        ),
        (_set("s0", "c", config="c", point=None), 0, "ready to restore: 1 shard + config server"),
        (_set("rs0"), 0, f"ready to restore: replica set rs0, restore point {ISO}"),
        (_set("rs0", point=None), 0, "ready to restore: replica set rs0"),
        (_set(), 0, "not ready to restore: no archives"),
    ],
)
def test_verdict(restore_set: RestoreSet, missing: int, verdict: str) -> None:
    assert restore_set.verdict(missing=missing) == verdict


def test_verdict_of_a_judged_set_with_missing_archives() -> None:
    got = judge(batch(CONFIG), sharded=True)
    assert got.verdict(missing=1) == "not ready to restore: 1 archive missing"
    assert got.verdict() == f"ready to restore: 3 shards + config server, restore point {SNAP}"


@pytest.mark.parametrize(
    "restore_set",
    [
        judge(batch(CONFIG), sharded=True),
        judge(
            shards(member("rs0", Cluster_Name="A"), member("rs1", Cluster_Name="B")), sharded=True
        ),
        judge([member("rs0")], sharded=False),
        judge([], sharded=False),
    ],
)
def test_json_round_trip(restore_set: RestoreSet) -> None:
    doc = json.loads(json.dumps(restore_set.to_json()))
    assert RestoreSet.from_json(doc) == restore_set


def test_to_json_shape() -> None:
    got = judge(batch(CONFIG), sharded=True).to_json()
    assert got == {
        "replicaSets": [*SHARDS, "csrs"],
        "configServer": "csrs",
        "restorePoint": SNAP,
        "problems": [],
    }


GOOD: dict[str, Any] = {
    "replicaSets": ["s0", "c"],
    "configServer": "c",
    "restorePoint": ISO,
    "problems": [],
}


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ([], TypeError),
        (None, TypeError),
        ({k: v for k, v in GOOD.items() if k != "problems"}, ValueError),
        ({**GOOD, "replicaSets": "s0"}, TypeError),
        ({**GOOD, "replicaSets": ["s0", 1]}, TypeError),
        ({**GOOD, "problems": [None]}, TypeError),
        ({**GOOD, "configServer": 3}, TypeError),
        ({**GOOD, "restorePoint": {"date": ISO}}, TypeError),
        ({**GOOD, "configServer": "elsewhere"}, ValueError),
    ],
)
def test_from_json_refuses_another_shape(doc: Any, error: type[Exception]) -> None:
    assert RestoreSet.from_json(GOOD).config_server == "c"  # the table's base is valid
    with pytest.raises(error):
        RestoreSet.from_json(doc)
