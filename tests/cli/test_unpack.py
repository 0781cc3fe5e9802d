"""`fetch --unpack-to ROOT` and `fetcher unpack DIR --to ROOT`: from archive to dbPath.

Against the fakes of the legacy API (the replica set known only from restoreInfo.txt) and of
Atlas v2 (named by the API), with real tar.gz archives; trees compared with what tarfile reads
in the archive, member by member.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import stat
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from fetcher.checks.unpack import STAGING_PREFIX
from fetcher.errors import EXIT_ERROR, EXIT_INTEGRITY, EXIT_OK
from fetcher.names import partial_name
from tests.atlasv2 import CLUSTER_V2, AtlasV2
from tests.conftest import (
    Atlas,
    add_batch,
    fetch_args,
    fetch_job,
    file_entry,
    job_entry,
    kill_9_when,
    loud,
    run_cli,
    spawn_fetch,
)
from tests.fake.pull import Fault
from tests.support import CONFIG, SHARDS, KiB, make_archive, with_member


def members(data: bytes) -> dict[str, bytes | None]:
    """What tar puts where, the one top-level directory stripped: path -> bytes (None: dir)."""
    found: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar.getmembers():
            rel = m.name.partition("/")[2]
            if not rel:
                continue
            f = tar.extractfile(m) if m.isfile() else None
            found[rel] = f.read() if f is not None else None
    return found


def tree(path: Path) -> dict[str, bytes | None]:
    """What is under path: rel -> bytes (None: dir), every mode checked on the way."""
    found: dict[str, bytes | None] = {}
    for p in sorted(path.rglob("*")):
        mode = p.lstat().st_mode
        rel = str(p.relative_to(path))
        if stat.S_ISDIR(mode):
            assert stat.S_IMODE(mode) == 0o700, rel
            found[rel] = None
        else:
            assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o600, rel
            found[rel] = p.read_bytes()
    return found


def names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def visible_only(root: Path) -> None:
    """ROOT holds the trees and their config files, and nothing hidden."""
    assert [n for n in names(root) if n.startswith(".")] == []


def test_a_sharded_batch_becomes_four_trees_each_with_its_mongod_config(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    jobs = add_batch(atlas)
    dest, root = tmp_path / "dl", tmp_path / "root"

    result = run_cli(*loud(fetch_args(atlas, dest, "--unpack-to", str(root))))

    assert result.exit_code == EXIT_OK, result.stderr
    sets = [*SHARDS, CONFIG]
    assert names(root) == sorted([*sets, *(f"{rs}.mongod.conf" for rs in sets)])
    visible_only(root)
    for rs in sets:
        data = atlas.archives[f"{rs}.tar.gz"]
        assert tree(root / rs) == members(data)  # stripped, byte for byte, 0700/0600
        assert stat.S_IMODE((root / rs).stat().st_mode) == 0o700
        config = yaml.safe_load((root / f"{rs}.mongod.conf").read_text())
        assert config["storage"]["dbPath"] == str(root / rs)
        assert config["replication"]["replSetName"] == rs
        entry = file_entry(dest, jobs[rs])
        assert entry["unpackedTo"] == str(root / rs) and Path(entry["unpackedTo"]).is_absolute()
        assert entry["mongodConfig"] == str(root / f"{rs}.mongod.conf")
        assert entry["unpackedFiles"] == sum(1 for v in members(data).values() if v is not None)
        line = f"unpacked  {rs}.tar.gz  into {root / rs}  ("
        assert line in result.stdout
        assert (dest / f"{rs}.tar.gz").read_bytes() == data  # the archive stays in DIR
    # The archives' mtimes are kept.
    with tarfile.open(fileobj=io.BytesIO(atlas.archives[f"{CONFIG}.tar.gz"])) as tar:
        info = tar.getmember(f"{CONFIG}/restoreInfo.txt")
    assert (root / CONFIG / "restoreInfo.txt").stat().st_mtime == info.mtime
    # The readiness table says where each dbPath is.
    table = result.stdout.splitlines()
    (header,) = [line for line in table if line.startswith("ARCHIVE")]
    assert header.split()[-1] == "DBPATH"
    assert any(line.endswith(str(root / CONFIG)) for line in table)


def test_several_connections_unpack_the_same_trees(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    """The archive check (and the unpack) follows the complete prefix of ranges written in
    place: the trees are the same as over one connection."""
    add_batch(atlas)
    dest, root = tmp_path / "dl", tmp_path / "root"
    args = fetch_args(atlas, dest, "--unpack-to", str(root), "--connections", "4")
    result = run_cli(*args)
    assert result.exit_code == EXIT_OK, result.stderr
    for rs in [*SHARDS, CONFIG]:
        ranged = [r for r in atlas.pull.log if rs in r.path and r.headers.get("range")]
        assert len(ranged) > 1  # several ranged requests each: the segmented engine ran
        assert tree(root / rs) == members(atlas.archives[f"{rs}.tar.gz"])
    visible_only(root)


def test_a_root_that_cannot_be_made_is_one_line(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    add_batch(atlas)
    (tmp_path / "file").write_text("not a directory")
    root = tmp_path / "file" / "root"
    result = run_cli(*fetch_args(atlas, tmp_path / "dl", "--unpack-to", str(root)))
    assert result.exit_code == EXIT_ERROR
    assert result.stderr == f"fetcher: error: --unpack-to {root}: Not a directory\n"
    assert not (tmp_path / "dl").exists()  # nothing fetched: the run stopped before


def test_a_rerun_finds_its_trees_and_writes_nothing(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    add_batch(atlas)
    dest, root = tmp_path / "dl", tmp_path / "root"
    assert run_cli(*fetch_args(atlas, dest, "--unpack-to", str(root))).exit_code == EXIT_OK
    before = {p: p.stat().st_ino for p in root.rglob("*")}
    # An operator's edit of a config file is theirs: kept, and said.
    (root / f"{CONFIG}.mongod.conf").write_text("# mine\n")

    again = run_cli(*loud(fetch_args(atlas, dest, "--unpack-to", str(root))))

    assert again.exit_code == EXIT_OK, again.stderr
    assert again.stdout.count("; unpacked earlier)") == 4
    assert {p: p.stat().st_ino for p in root.rglob("*")} == before
    assert (root / f"{CONFIG}.mongod.conf").read_text() == "# mine\n"
    assert "differs: kept as it is" in again.stderr


@pytest.mark.parametrize("damage", ["sha1-mismatch", "damaged-with-its-sha1"])
def test_an_archive_that_fails_leaves_no_tree(
    atlas: Atlas, creds: None, tmp_path: Path, damage: str
) -> None:
    bad = SHARDS[1]
    if damage == "sha1-mismatch":
        jobs = add_batch(atlas)
        atlas.jobs.remove(jobs[bad])
        atlas.add(f"{bad}.tar.gz", make_archive(bad, 32 * KiB), published_sha1="0" * 40)
    else:  # the API publishes the SHA1 of a truncated archive
        add_batch(atlas, **{bad: make_archive(bad, 32 * KiB)[:-200]})
    dest, root = tmp_path / "dl", tmp_path / "root"

    result = run_cli(*fetch_args(atlas, dest, "--unpack-to", str(root)))

    assert result.exit_code == EXIT_INTEGRITY
    assert bad not in names(root) and f"{bad}.mongod.conf" not in names(root)
    visible_only(root)  # no staging tree left behind
    assert SHARDS[0] in names(root)  # the others are unpacked


def _outward_link(rs: str) -> tarfile.TarInfo:
    link = tarfile.TarInfo(f"{rs}/escape")
    link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
    return link


def _climbing_file(rs: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(f"{rs}/../../outside/evil")


def _fifo(rs: str) -> tarfile.TarInfo:
    fifo = tarfile.TarInfo(f"{rs}/pipe")
    fifo.type = tarfile.FIFOTYPE
    return fifo


@pytest.mark.parametrize(
    "evil", [_outward_link, _climbing_file, _fifo], ids=["link", "member", "fifo"]
)
def test_a_member_or_link_out_of_the_tree_writes_nothing_outside(
    atlas: Atlas, creds: None, tmp_path: Path, evil: Any
) -> None:
    bad = SHARDS[0]
    atlas.add(f"{bad}.tar.gz", with_member(bad, evil(bad), b"evil\n"))
    dest, root = tmp_path / "dl", tmp_path / "a" / "root"
    outside = tmp_path / "a" / "outside"
    outside.mkdir(parents=True)

    result = run_cli(*fetch_args(atlas, dest, "--unpack-to", str(root)))

    assert result.exit_code == EXIT_INTEGRITY
    assert names(outside) == []
    assert names(root) == []


def test_a_target_that_holds_data_is_never_touched(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    jobs = add_batch(atlas)
    dest, root = tmp_path / "dl", tmp_path / "root"
    mine = root / SHARDS[2]
    mine.mkdir(parents=True)
    (mine / "WiredTiger.wt").write_bytes(b"the operator's data")
    (root / SHARDS[1]).mkdir()  # empty: taken

    result = run_cli(*fetch_args(atlas, dest, "--unpack-to", str(root)))

    assert result.exit_code == EXIT_ERROR
    lines = [line for line in result.stderr.splitlines() if SHARDS[2] in line]
    assert lines == [f"not unpacked  {SHARDS[2]}.tar.gz: {mine} holds data: not unpacked into it"]
    assert names(mine) == ["WiredTiger.wt"]
    assert (mine / "WiredTiger.wt").read_bytes() == b"the operator's data"
    assert f"{SHARDS[2]}.mongod.conf" not in names(root)
    visible_only(root)
    # The archive itself is downloaded and verified all the same.
    entry = file_entry(dest, jobs[SHARDS[2]])
    assert entry["outcome"] == "verified" and "holds data" in entry["unpackProblem"]
    assert (dest / f"{SHARDS[2]}.tar.gz").exists()
    assert tree(root / SHARDS[1]) == members(atlas.archives[f"{SHARDS[1]}.tar.gz"])


def test_an_atlas_v2_restore_is_unpacked_by_the_api_s_replica_set_names(
    atlas_v2: AtlasV2, creds: None, tmp_path: Path
) -> None:
    sets = (f"{CLUSTER_V2}-shard-0", f"{CLUSTER_V2}-config-0")
    job = atlas_v2.add(sets)
    dest, root = tmp_path / "dl", tmp_path / "root"

    result = run_cli(*fetch_job(atlas_v2, job, dest, "--unpack-to", str(root), "--quiet"))

    assert result.exit_code == EXIT_OK, result.stderr
    assert names(root) == sorted([*sets, *(f"{rs}.mongod.conf" for rs in sets)])
    for rs in sets:
        assert (root / rs / "restoreInfo.txt").is_file()
        config = yaml.safe_load((root / f"{rs}.mongod.conf").read_text())
        assert config["replication"]["replSetName"] == rs


def test_a_root_another_fetcher_unpacks_into_is_refused(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    add_batch(atlas)
    root = tmp_path / "root"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = run_cli(*fetch_args(atlas, tmp_path / "dl", "--unpack-to", str(root)))
    finally:
        os.close(fd)
    assert result.exit_code == EXIT_ERROR
    assert (
        result.stderr == f"fetcher: error: another fetcher is unpacking into {root}; wait for it\n"
    )
    assert names(root) == []


def test_root_may_not_be_the_fetch_directory(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    result = run_cli(*fetch_args(atlas, tmp_path, "--unpack-to", str(tmp_path)))
    assert result.exit_code == 2
    assert "must not be --dest" in result.stderr


# -- kill -9 ---------------------------------------------------------------------------------


@pytest.mark.slow  # a real process
def test_kill_9_mid_unpack_then_rerun_downloads_no_byte_twice(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    rs = SHARDS[0]
    name = f"{rs}.tar.gz"
    data = make_archive(rs, payload=2048 * KiB, level=1)
    held = threading.Event()
    first = len(data) // 2
    job = atlas.add(name, data)
    atlas.pull.resources[job["_path"]].faults = [Fault(stall_after=first, hold=held)]
    dest, root = tmp_path / "dl", tmp_path / "root"
    extra = ("--unpack-to", str(root), "--connections", "1")
    proc = spawn_fetch(atlas, dest, tmp_path, "killed", *extra)

    def midway() -> bool:
        staged = root.exists() and any(n.startswith(STAGING_PREFIX) for n in names(root))
        return staged and _size(dest / partial_name(name)) == first

    kill_9_when(midway, proc, tmp_path, "killed", held)
    assert rs not in names(root)  # only the hidden staging tree of the killed run

    result = run_cli(*fetch_args(atlas, dest, "--unpack-to", str(root)))

    assert result.exit_code == EXIT_OK, result.stderr
    assert names(root) == [rs, f"{rs}.mongod.conf"]  # the stale staging tree is gone
    assert tree(root / rs) == members(data)
    assert atlas.pull.bytes_sent(job["_path"]) == len(data)  # no byte twice
    assert file_entry(dest, job)["resumedBytes"] == first


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# -- fetcher unpack DIR --to ROOT ------------------------------------------------------------


@pytest.fixture
def fetched(atlas: Atlas, creds: None, tmp_path: Path) -> tuple[Atlas, Path, dict[str, Any]]:
    jobs = add_batch(atlas)
    dest = tmp_path / "dl"
    assert run_cli(*fetch_args(atlas, dest)).exit_code == EXIT_OK
    return atlas, dest, jobs


def test_unpack_offline_records_where_each_tree_is(
    fetched: tuple[Atlas, Path, dict[str, Any]], tmp_path: Path
) -> None:
    atlas, dest, jobs = fetched
    root = tmp_path / "root"
    requests = len(atlas.pull.log)

    result = run_cli("unpack", str(dest), "--to", str(root), "--only", "*shard-0*")

    assert result.exit_code == EXIT_OK, result.stderr
    assert len(atlas.pull.log) == requests  # offline
    assert names(root) == [SHARDS[0], f"{SHARDS[0]}.mongod.conf"]
    assert tree(root / SHARDS[0]) == members(atlas.archives[f"{SHARDS[0]}.tar.gz"])
    assert "1 of 1 archives unpacked (exit 0)" in result.stdout.splitlines()
    (row,) = [line for line in result.stdout.splitlines() if line.startswith(f"{SHARDS[0]}.")]
    assert row.split()[-1] == str(root / SHARDS[0])  # the readiness table's DBPATH
    assert file_entry(dest, jobs[SHARDS[0]])["unpackedTo"] == str(root / SHARDS[0])
    assert "unpackedTo" not in file_entry(dest, jobs[SHARDS[1]])

    every = run_cli("unpack", str(dest), "--to", str(root), "--json")

    assert every.exit_code == EXIT_OK, every.stderr
    doc = json.loads(every.stdout)
    assert [a["status"] for a in doc["archives"]] == ["unpacked"] * 4
    assert {a["unpackedTo"] for a in doc["archives"]} == {
        str(root / rs) for rs in [*SHARDS, CONFIG]
    }
    assert doc["exitCode"] == 0 and doc["manifestUpdated"] is True
    # A later fetch without --unpack-to keeps the trees on record.
    assert run_cli(*fetch_args(atlas, dest)).exit_code == EXIT_OK
    assert job_entry(dest, jobs[CONFIG])["files"][0]["unpackedTo"] == str(root / CONFIG)


@pytest.mark.parametrize("how", ["missing", "changed"])
def test_unpack_names_an_archive_missing_or_changed_and_unpacks_none_of_it(
    fetched: tuple[Atlas, Path, dict[str, Any]], tmp_path: Path, how: str
) -> None:
    _, dest, _ = fetched
    root = tmp_path / "root"
    name = f"{SHARDS[1]}.tar.gz"
    if how == "missing":
        (dest / name).unlink()
    else:
        data = bytearray((dest / name).read_bytes())
        data[-30] ^= 0x01
        (dest / name).write_bytes(bytes(data))

    result = run_cli("unpack", str(dest), "--to", str(root))

    assert result.exit_code == EXIT_INTEGRITY
    (line,) = [line for line in result.stderr.splitlines() if name in line]
    assert line.startswith(f"{how}  {name}: ")
    assert SHARDS[1] not in names(root)
    visible_only(root)
    assert SHARDS[0] in names(root)


def test_unpack_without_a_manifest_is_one_line(tmp_path: Path) -> None:
    result = run_cli("unpack", str(tmp_path), "--to", str(tmp_path / "root"))
    assert result.exit_code == EXIT_ERROR
    assert result.stderr == f"fetcher: error: no manifest.json in {tmp_path}\n"
