"""Restore archives as MongoDB's HTTP restores deliver them, and the restoreInfo.txt inside.

One layout for every fake (API-NOTES, "Inside a restore archive"): a gzip-compressed tar whose
members all sit under one top-level directory named after the replica set, restoreInfo.txt
first, then the data files. `make_archive` builds one in memory (the tests' archives: one data
file of random bytes); `write_archive` streams a large one to disk and reuses it while its
layout and restoreInfo.txt stay the same (the standalone server's and the benchmark's).
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Final, cast

from tests.fake.ids import hex_id

GROUP_NAME = "Project0"  # the project's name, as restoreInfo.txt gives it
MONGODB_VERSION = "7.0.12"
STORAGE_ENGINE = "wiredTiger"
WIREDTIGER_VERSION = "11.2.0"
INFO_NAME = "restoreInfo.txt"
CHUNK = 1 << 20
AUTO: Final = "auto"  # a role taken from the replica set's name
_DEFAULT: Final = object()


def snapshot_time(epoch: int) -> str:
    """A time as restoreInfo.txt writes it: Sat Nov 28 09:00:00 GMT 2026."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%a %b %d %H:%M:%S GMT %Y")


def cluster_role(replica_set: str) -> str:
    """The sharding.clusterRole of a sharded cluster's replica set, by its name."""
    return "configsvr" if "config" in replica_set else "shardsvr"


def startup_options(replica_set: str, role: str | None) -> dict[str, Any]:
    """The mongod options the snapshot's host ran with; `role` None: a replica set cluster's,
    whose options have no sharding section."""
    port = 27017 if role is None else 27019 if role == "configsvr" else 27018
    options: dict[str, Any] = {
        "net": {"bindIp": "0.0.0.0", "port": port},
        "replication": {"replSetName": replica_set},
        "sharding": {"clusterRole": role},
        "storage": {"dbPath": "/data/db", "engine": STORAGE_ENGINE},
    }
    if role is None:
        del options["sharding"]
    return options


def restore_info(
    replica_set: str,
    *,
    epoch: int,
    snapshot: str | None = None,
    role: str | None = AUTO,
    group_name: str = GROUP_NAME,
    cluster_id: str | None = None,
    cluster_name: str | None = None,
) -> str:
    """restoreInfo.txt as MongoDB documents it: one `Key: value` line each, then the mongod
    startup options (a JSON document over several lines) the restore must be started with.

    `epoch` is the restore point (snapshot, restore and last-oplog timestamps agree, as in
    every archive of one restore); `snapshot` replaces how its time is written. `role` AUTO
    takes the clusterRole from the name, None is a replica set cluster's. MongoDB documents a
    "Cluster ID (if applicable)" line: `cluster_id` writes it; `cluster_name` writes a
    "Cluster Name" line instead (what the tests' archives have always carried).
    """
    when = snapshot or snapshot_time(epoch)
    role = cluster_role(replica_set) if role == AUTO else role
    lines = ["Restore Information", f"Group Name: {group_name}", f"Replica Set: {replica_set}"]
    if cluster_id is not None:
        lines.append(f"Cluster Id: {cluster_id}")
    if cluster_name is not None:
        lines.append(f"Cluster Name: {cluster_name}")
    lines += [
        f"Snapshot timestamp: {when}",
        f"Restore timestamp: {when} ({epoch}, 1)",
        f"Last Oplog Applied: {when} ({epoch}, 1)",
        f"MongoDB Version: {MONGODB_VERSION}",
        f"Storage engine type: {STORAGE_ENGINE}",
        f"Startup Options: {json.dumps(startup_options(replica_set, role), indent=2)}",
    ]
    return "\n".join(lines) + "\n"


def member(name: str, mtime: int, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    """A tar member as mongod's host would have written it."""
    entry = tarfile.TarInfo(name)
    entry.size, entry.mtime = size, mtime
    entry.uname = entry.gname = "mongod"
    entry.uid = entry.gid = 999
    if directory:
        entry.type, entry.mode = tarfile.DIRTYPE, 0o700
    else:
        entry.mode = 0o600
    return entry


def head(
    replica_set: str, info: bytes | None, mtime: int, *, wiredtiger: bool = False
) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The members every archive starts with, in order: the directory, restoreInfo.txt (unless
    `info` is None) and, with `wiredtiger`, WiredTiger's version file; data files follow."""
    out = [(member(replica_set, mtime, directory=True), b"")]
    if info is not None:
        out.append((member(f"{replica_set}/{INFO_NAME}", mtime, len(info)), info))
    if wiredtiger:
        version = f"WiredTiger\nWiredTiger {WIREDTIGER_VERSION}: (fake-atlas)\n".encode()
        out.append((member(f"{replica_set}/WiredTiger", mtime, len(version)), version))
    return out


def make_archive(
    replica_set: str,
    payload: int = 64 * 1024,
    *,
    info: str | object | None = _DEFAULT,
    epoch: int = 0,
    level: int = 9,
    extra: Sequence[tarfile.TarInfo] = (),
    files: Sequence[tuple[str, bytes]] | None = None,
) -> bytes:
    """A restore tar.gz in memory: REPLICA_SET/, REPLICA_SET/restoreInfo.txt, then `files`
    (default: REPLICA_SET/data.bin of `payload` random bytes), gzip `level`.

    `info` replaces restoreInfo.txt (None: the archive has none; default: restore_info of the
    replica set at `epoch`); `extra` members (no data) go last.
    """
    text = restore_info(replica_set, epoch=epoch) if info is _DEFAULT else info
    members = head(replica_set, text.encode() if isinstance(text, str) else None, epoch)
    for name, data in [("data.bin", os.urandom(payload))] if files is None else files:
        members.append((member(f"{replica_set}/{name}", epoch, len(data)), data))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=level) as tar:
        for entry, data in members:
            tar.addfile(entry, io.BytesIO(data) if entry.isfile() else None)
        for entry in extra:
            tar.addfile(entry)
    return buf.getvalue()


def _shape(entry: tarfile.TarInfo) -> tuple[str, bytes, int]:
    return entry.name, entry.type, entry.size


def _starts_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> bool:
    """True when the archive at `path` starts with `members`: the layout and restoreInfo.txt
    this version writes. Reads a few KiB, not the file."""
    try:
        with tarfile.open(path, "r|gz") as tar:
            for want, data in members:
                got = tar.next()
                if got is None or _shape(got) != _shape(want):
                    return False
                if data and (f := tar.extractfile(got)) is not None and f.read() != data:
                    return False
    except (OSError, EOFError, tarfile.TarError, zlib.error):
        return False
    return True


def write_archive(path: Path, *, replica_set: str, info: str, epoch: int, size: int) -> None:
    """Write a restore tar.gz of about `size` bytes at `path`, unless it already holds one that
    starts the same way (an archive of an older layout or restoreInfo.txt is made again).

    After restoreInfo.txt and WiredTiger's version file come a collection and an index of
    random bytes, so the archive is mostly incompressible, as snappy-compressed WiredTiger
    files are. An interrupted run leaves only a temporary file, removed.
    """
    members = head(replica_set, info.encode(), epoch, wiredtiger=True)
    if path.exists() and _starts_with(path, members):
        return
    print(f"fake-atlas: generating {path.name} ({size} bytes)", file=sys.stderr, flush=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # The head, two more headers and the end-of-archive blocks; the data files fill the rest.
    overhead = sum(512 + -(-m.size // 512) * 512 for m, _ in members) + 2 * 512 + 1024
    data_len = max(0, size - overhead) // 512 * 512
    index_len = min(data_len // 16, 16 * CHUNK) // 512 * 512  # an index: a sliver of the data
    ident = int(hex_id("ident", replica_set), 16) % 10**19  # WiredTiger's idents are numbers
    data = [
        member(f"{replica_set}/collection-0-{ident}.wt", epoch, data_len - index_len),
        member(f"{replica_set}/index-1-{ident}.wt", epoch, index_len),
    ]
    # Level 0 (stored deflate blocks): random data does not compress anyway, and level 1
    # would make a 1 GiB bench archive take half a minute instead of a few seconds.
    try:
        # Naming the final path keeps the temp name out of the gzip header.
        with (
            tmp.open("wb") as raw,
            Path("/dev/urandom").open("rb") as rnd,
            tarfile.open(path, "w:gz", raw, compresslevel=0) as tar,
        ):
            # tarfile copies 16 KiB at a time by default; its typeshed stub lacks the knob.
            tar.copybufsize = CHUNK  # type: ignore[attr-defined]
            for entry, content in members:
                tar.addfile(entry, io.BytesIO(content) if entry.isfile() else None)
            for entry in data:
                tar.addfile(entry, cast(BinaryIO, rnd))  # tarfile copies in CHUNK blocks
        # Rename last so an interrupted run never leaves a half archive that later runs reuse.
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
