"""fetcher.checks.archive: the restore-archive check, fed real tar.gz archives made in memory.

Every archive here is made by `tarfile` and `gzip`/`zlib`, then damaged the way a broken
transfer, a broken producer or a hostile server would damage it. Big archives (the zip bombs)
are never held inflated: their deflate stream is assembled from one compressed MiB of zeros
repeated, so the test stays small while the check has to inflate hundreds of MiB.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import itertools
import json
import shutil
import struct
import subprocess
import tarfile
import tracemalloc
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import pytest

from fetcher.checks.archive import ArchiveCheck, ArchiveReport, check_bytes, parse_restore_info

BLOCK = 512
MiB = 1024 * 1024
ZERO_MIB = bytes(MiB)
TOP = "Cluster0-shard-0"
EPOCH = 1_700_000_000
WHEN = "Tue Nov 14 22:13:20 GMT 2023"  # EPOCH, as restoreInfo.txt writes it
STARTUP_LINES = [
    "{",
    '  "net": { "bindIp": "0.0.0.0", "port": 27017 },',
    f'  "replication": {{ "replSetName": "{TOP}" }},',
    '  "storage": { "dbPath": "/data/db", "engine": "wiredTiger" }',
    "}",
]
INFO_TEXT = (
    "Restore Information\n"
    "Cluster Name: Cluster0\n"
    f"Replica Set: {TOP}\n"
    f"Snapshot timestamp: {WHEN}\n"
    f"Last Oplog Applied: {WHEN} ({EPOCH}, 1)\n"
    "MongoDB Version: 7.0.12\n"
    "Storage engine type: wiredTiger\n"
    "Startup Options: " + "\n".join(STARTUP_LINES) + "\n"
)
INFO = INFO_TEXT.encode()
INFO_FIELDS = {  # every key of INFO_TEXT but "Startup Options", which startup_ok() checks
    "Cluster Name": "Cluster0",
    "Replica Set": TOP,
    "Snapshot timestamp": WHEN,
    "Last Oplog Applied": f"{WHEN} ({EPOCH}, 1)",
    "MongoDB Version": "7.0.12",
    "Storage engine type": "wiredTiger",
}
GZ_HEAD = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"  # no flags, no mtime, Unix


def noise(n: int, seed: str) -> bytes:
    """`n` incompressible bytes, the same on every run."""
    return hashlib.shake_256(seed.encode()).digest(n)


DATA_WT = noise(5000, "collection")
DATA_LOG = noise(3000, "journal")


# --- building tar streams ---------------------------------------------------------------------


Entry = tuple[tarfile.TarInfo, bytes]
Format = Literal[0, 1, 2]  # tarfile.USTAR_FORMAT, GNU_FORMAT, PAX_FORMAT


def _info(name: str, kind: bytes, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    info.mtime, info.mode, info.uname, info.gname = EPOCH, 0o600, "mongod", "mongod"
    if kind == tarfile.DIRTYPE:
        info.mode = 0o700
    return info


def reg(name: str, data: bytes) -> Entry:
    return _info(name, tarfile.REGTYPE, len(data)), data


def folder(name: str) -> Entry:
    return _info(name, tarfile.DIRTYPE), b""


def symlink(name: str, target: str) -> Entry:
    return _info(name, tarfile.SYMTYPE, link=target), b""


def hardlink(name: str, target: str) -> Entry:
    return _info(name, tarfile.LNKTYPE, link=target), b""


def make_tar(
    entries: Sequence[Entry],
    fmt: int = tarfile.PAX_FORMAT,
    pax_headers: dict[str, str] | None = None,
) -> bytes:
    """The tar stream tarfile writes: headers, data, two zero blocks, zero-padded records."""
    buf = io.BytesIO()
    with tarfile.TarFile(fileobj=buf, mode="w", format=fmt, pax_headers=pax_headers) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def good_entries() -> list[Entry]:
    """A restore archive of one replica set: a top directory, restoreInfo.txt, data files."""
    return [
        folder(TOP),
        reg(f"{TOP}/restoreInfo.txt", INFO),
        reg(f"{TOP}/collection-0-{EPOCH}.wt", DATA_WT),
        folder(f"{TOP}/journal"),
        reg(f"{TOP}/journal/WiredTigerLog.0000000001", DATA_LOG),
    ]


GOOD_MEMBERS = 5
GOOD_CONTENT = len(INFO) + len(DATA_WT) + len(DATA_LOG)


def gz(data: bytes) -> bytes:
    """One gzip member, as gzip(1) writes it."""
    return gzip.compress(data, mtime=0)


@functools.cache
def good_tar() -> bytes:
    return make_tar(good_entries())


@functools.cache
def good_gz() -> bytes:
    return gz(good_tar())


def with_entries(*extra: Entry) -> bytes:
    """The good archive with more members at its end, gzipped."""
    return gz(make_tar([*good_entries(), *extra]))


def members_of(tar: bytes) -> list[tarfile.TarInfo]:
    """What tarfile reads back: to find offsets, and to prove a crafted stream means what we say."""
    with tarfile.TarFile(fileobj=io.BytesIO(tar)) as reader:
        return reader.getmembers()


def header_at(tar: bytes, name: str) -> int:
    """Offset of the ustar header of member `name` (after any pax or GNU meta headers)."""
    (member,) = [m for m in members_of(tar) if m.name == name]
    return member.offset_data - BLOCK


def end_of_members(tar: bytes) -> int:
    """Where the end-of-archive zero blocks start."""
    last = members_of(tar)[-1]
    return last.offset_data + -(-last.size // BLOCK) * BLOCK


def with_checksum(header: bytearray) -> bytes:
    """`header` with its checksum recomputed: 6 octal digits, NUL, space."""
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def patch_header(tar: bytes, at: int, field: int, value: bytes) -> bytes:
    """Rewrite bytes `field`.. of the header at `at`, with a correct checksum."""
    header = bytearray(tar[at : at + BLOCK])
    header[field : field + len(value)] = value
    return tar[:at] + with_checksum(header) + tar[at + BLOCK :]


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0xFF
    return bytes(out)


def gzip_member(
    data: bytes,
    *,
    level: int = 6,
    name: bytes | None = None,
    comment: bytes | None = None,
    extra: bytes | None = None,
    header_crc: bool = False,
) -> bytes:
    """A gzip member with the optional header fields other tools write (FEXTRA, FNAME, ...)."""
    flags, optional = 0, b""
    if extra is not None:
        flags |= 0x04
        optional += struct.pack("<H", len(extra)) + extra
    if name is not None:
        flags |= 0x08
        optional += name + b"\0"
    if comment is not None:
        flags |= 0x10
        optional += comment + b"\0"
    if header_crc:
        flags |= 0x02
    head = b"\x1f\x8b\x08" + bytes([flags]) + GZ_HEAD[4:] + optional
    if header_crc:
        head += struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    comp = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = comp.compress(data) + comp.flush()
    return head + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


@functools.cache
def zero_mib_deflate() -> bytes:
    """One MiB of zeros as self-contained, non-final deflate blocks (about a KiB)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    return comp.compress(ZERO_MIB) + comp.flush(zlib.Z_FULL_FLUSH)


def gzip_with_zeros(pieces: Sequence[bytes | int]) -> bytes:
    """A gzip member of `pieces` in order: bytes as they are, an int as that many MiB of zeros.

    A full flush resets the compressor, so the blocks of one compressed MiB of zeros can be
    repeated between flushes: hundreds of MiB inflate from a few hundred KiB, never built.
    """
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = bytearray()
    crc = size = 0
    for piece in pieces:
        if isinstance(piece, int):
            body += comp.flush(zlib.Z_FULL_FLUSH)
            body += zero_mib_deflate() * piece
            for _ in range(piece):
                crc = zlib.crc32(ZERO_MIB, crc)
            size += piece * MiB
        else:
            body += comp.compress(piece)
            crc = zlib.crc32(piece, crc)
            size += len(piece)
    body += comp.flush()
    return GZ_HEAD + bytes(body) + struct.pack("<II", crc, size & 0xFFFFFFFF)


def header(info: tarfile.TarInfo, fmt: Format = tarfile.USTAR_FORMAT) -> bytes:
    return info.tobuf(fmt, "utf-8", "surrogateescape")


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


# --- feeding ----------------------------------------------------------------------------------


def feed(data: bytes, block: int, kind: str = "memoryview") -> ArchiveReport:
    """Feed `data` to a fresh ArchiveCheck in blocks of `block` bytes, as `kind` objects."""
    check = ArchiveCheck()
    view = memoryview(data)
    scratch = bytearray(block)
    for start in range(0, len(data), block):
        piece = view[start : start + block]
        if kind == "bytes":
            check.update(bytes(piece))
        elif kind == "bytearray":
            check.update(bytearray(piece))
        elif kind == "reused":  # one buffer, overwritten after each call, as a reader's ring is
            scratch[: len(piece)] = piece
            check.update(memoryview(scratch)[: len(piece)])
            scratch[:] = b"\xa5" * block
        else:
            check.update(piece)
    return check.finish()


def checked_with_peak(data: bytes, block: int) -> tuple[ArchiveReport, int]:
    """The report, and the most memory Python allocated during update/finish."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        check = ArchiveCheck()
        view = memoryview(data)
        for start in range(0, len(data), block):
            check.update(view[start : start + block])
        report = check.finish()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return report, peak


def startup_ok(value: str) -> bool:
    """The multi-line Startup Options value: its lines in order (indentation aside), valid JSON."""
    lines = [line.strip() for line in value.split("\n")]
    return lines == [line.strip() for line in STARTUP_LINES] and json.loads(value) == json.loads(
        "\n".join(STARTUP_LINES)
    )


def assert_fails(report: ArchiveReport, expected: str) -> None:
    assert not report.passed, report
    assert report.problem is not None
    assert expected in report.problem, report.problem


# --- 1. a good archive ------------------------------------------------------------------------


def test_good_archive_passes_with_its_restore_info() -> None:
    report = check_bytes(good_gz())

    assert report.problem is None
    assert report.passed
    assert report.restore_info is not None
    assert set(report.restore_info) == {*INFO_FIELDS, "Startup Options"}
    assert {k: v for k, v in report.restore_info.items() if k in INFO_FIELDS} == INFO_FIELDS
    assert startup_ok(report.restore_info["Startup Options"])
    assert report.replica_set == TOP
    assert report.content_bytes == GOOD_CONTENT
    assert report.members == GOOD_MEMBERS


def test_archive_report_properties() -> None:
    def report(info: dict[str, str] | None, problem: str | None = None) -> ArchiveReport:
        return ArchiveReport(problem=problem, restore_info=info, content_bytes=0, members=0)

    assert report({"Replica Set": "rs0"}).replica_set == "rs0"
    assert report({"Replica Set Name": "rs1"}).replica_set == "rs1"
    assert report({"replica set": "rs2"}).replica_set == "rs2"
    assert report({"REPLICA SET NAME": "rs3"}).replica_set == "rs3"
    assert report({"Cluster Name": "Cluster0"}).replica_set is None
    assert report(None).replica_set is None
    assert report(None).passed
    assert not report(None, "broken").passed


# --- 2. the verdict does not depend on how the bytes are split ---------------------------------


def _no_end_blocks() -> bytes:
    tar = good_tar()
    return gz(tar[: end_of_members(tar)])


SPLIT_ARCHIVES: list[tuple[str, Callable[[], bytes]]] = [
    ("good", good_gz),
    ("bad-crc32", lambda: flip(good_gz(), -8)),
    ("no-end-of-archive", _no_end_blocks),
    ("garbage-after-gzip", lambda: good_gz() + b"garbage!"),
]


@pytest.mark.parametrize(("name", "build"), SPLIT_ARCHIVES, ids=[n for n, _ in SPLIT_ARCHIVES])
@pytest.mark.parametrize(
    "block", [1, 511, 512, 513, 64 * 1024, 0], ids=["1", "511", "512", "513", "64KiB", "whole"]
)
def test_split_does_not_change_the_report(
    name: str, build: Callable[[], bytes], block: int
) -> None:
    data = build()
    assert len(data) < 20_000  # small enough to feed one byte at a time
    whole = check_bytes(data, block=len(data))
    assert whole.passed == (name == "good")
    assert feed(data, block or len(data)) == whole


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "reused"])
@pytest.mark.parametrize(("name", "build"), SPLIT_ARCHIVES, ids=[n for n, _ in SPLIT_ARCHIVES])
def test_any_buffer_type_gives_the_same_report(
    name: str, build: Callable[[], bytes], kind: str
) -> None:
    data = build()
    assert feed(data, 1000, kind) == check_bytes(data)


# --- 3. damage, each built for real ------------------------------------------------------------


def _corrupt_header(name: str, field: int) -> Callable[[], bytes]:
    def build() -> bytes:
        tar = good_tar()
        return gz(flip(tar, header_at(tar, name) + field))  # the checksum is left as it was

    return build


def _tar_cut(name: str, past_header: int) -> Callable[[], bytes]:
    def build() -> bytes:
        tar = good_tar()
        return gz(tar[: header_at(tar, name) + past_header])

    return build


def _after_end_blocks() -> bytes:
    tar = good_tar()
    return gz(tar[: end_of_members(tar) + 2 * BLOCK] + noise(BLOCK, "after"))


def _dirty_record_padding() -> bytes:
    tar = bytearray(good_tar())
    index = end_of_members(bytes(tar)) + 2 * BLOCK + 100
    assert index < len(tar)  # inside the zero padding tarfile writes up to a full record
    tar[index] = 1
    return gz(bytes(tar))


WT = f"{TOP}/collection-0-{EPOCH}.wt"
INFO_NAME = f"{TOP}/restoreInfo.txt"

DAMAGE = [
    pytest.param(lambda: flip(good_gz(), -8), "CRC32", id="gzip-crc32"),
    pytest.param(lambda: flip(good_gz(), -5), "CRC32", id="gzip-crc32-high-byte"),
    pytest.param(lambda: flip(good_gz(), -4), "ISIZE", id="gzip-isize"),
    pytest.param(lambda: flip(good_gz(), -1), "ISIZE", id="gzip-isize-high-byte"),
    pytest.param(lambda: good_gz()[:12], "truncated", id="gz-cut-after-header"),
    pytest.param(lambda: good_gz()[: len(good_gz()) // 2], "truncated", id="gz-cut-in-deflate"),
    pytest.param(lambda: good_gz()[:-8], "truncated", id="gz-cut-before-trailer"),
    pytest.param(lambda: good_gz()[:-3], "truncated", id="gz-cut-in-trailer"),
    pytest.param(
        lambda: good_gz() + b"garbage!", "after the end of the gzip data", id="garbage-after-gz"
    ),
    pytest.param(
        lambda: good_gz() + bytes(600) + b"\x01",
        "after the end of the gzip data",
        id="garbage-after-zero-padding",
    ),
    pytest.param(good_tar, "not a gzip", id="plain-tar"),
    pytest.param(lambda: noise(5000, "random"), "not a gzip", id="random-bytes"),
    pytest.param(
        lambda: b"<html><body>403 Forbidden</body></html>\n", "not a gzip", id="html-page"
    ),
    pytest.param(lambda: b"", "empty", id="empty"),
    pytest.param(_corrupt_header(INFO_NAME, 0), "header checksum", id="tar-header-name-byte"),
    pytest.param(_corrupt_header(WT, 136), "header checksum", id="tar-header-mtime-byte"),
    pytest.param(_corrupt_header(TOP, 100), "header checksum", id="first-header-mode"),
    pytest.param(_tar_cut(WT, BLOCK + 100), "truncated", id="tar-cut-in-member-data"),
    pytest.param(_tar_cut(WT, 100), "truncated", id="tar-cut-in-header"),
    pytest.param(_no_end_blocks, "end-of-archive", id="tar-without-end-blocks"),
    pytest.param(_after_end_blocks, "after the end of the tar archive", id="tar-data-after-end"),
    pytest.param(
        _dirty_record_padding, "after the end of the tar archive", id="tar-dirty-record-padding"
    ),
    pytest.param(
        lambda: with_entries(reg("/etc/cron.d/evil", b"x")), "absolute path", id="absolute"
    ),
    pytest.param(
        lambda: with_entries(reg(f"/{TOP}/x", b"x")), "absolute path", id="absolute-top-dir"
    ),
    pytest.param(lambda: with_entries(reg("a/../../x", b"x")), "climbs out", id="a-dotdot-dotdot"),
    pytest.param(lambda: with_entries(reg("../x", b"x")), "climbs out", id="dotdot"),
    pytest.param(
        lambda: with_entries(reg(f"{TOP}/journal/../../../x", b"x")), "climbs out", id="deep"
    ),
    pytest.param(lambda: with_entries(folder("../outside")), "climbs out", id="directory"),
    pytest.param(
        lambda: with_entries(symlink(f"{TOP}/passwd", "/etc/passwd")),
        "outside the archive",
        id="symlink-absolute",
    ),
    pytest.param(
        lambda: with_entries(symlink(f"{TOP}/evil", "../../x")),
        "outside the archive",
        id="symlink-dotdot",
    ),
    pytest.param(
        lambda: with_entries(symlink(f"{TOP}/journal/evil", "../../../etc/passwd")),
        "outside the archive",
        id="symlink-deep",
    ),
    pytest.param(
        # A hard link's target is a path from the archive root, not from the link's directory.
        lambda: with_entries(hardlink(f"{TOP}/journal/h", "../x")),
        "outside the archive",
        id="hardlink-dotdot",
    ),
    pytest.param(
        lambda: with_entries(hardlink(f"{TOP}/h", "/etc/passwd")),
        "outside the archive",
        id="hardlink-absolute",
    ),
]


@pytest.mark.parametrize(("build", "expected"), DAMAGE)
def test_damage_is_named(build: Callable[[], bytes], expected: str) -> None:
    assert_fails(check_bytes(build()), expected)


def test_the_crafted_tar_damage_is_what_tarfile_sees() -> None:
    """The builders above make what they say (so a pass or fail is the check's own)."""
    tar = good_tar()
    assert tar[end_of_members(tar) :] == bytes(len(tar) - end_of_members(tar))
    assert len(tar) - end_of_members(tar) >= 2 * BLOCK
    names = [m.name for m in members_of(make_tar([symlink(f"{TOP}/evil", "../../x")]))]
    assert names == [f"{TOP}/evil"]
    with pytest.raises(tarfile.ReadError, match="checksum"):
        members_of(flip(tar, 0))


INSIDE = [
    pytest.param(
        lambda: with_entries(folder(f"{TOP}/data"), symlink(f"{TOP}/data/x", "../restoreInfo.txt")),
        id="symlink-to-restoreInfo",
    ),
    pytest.param(lambda: with_entries(symlink(f"{TOP}/journal/up", "..")), id="symlink-to-top"),
    pytest.param(
        lambda: with_entries(hardlink(f"{TOP}/h", INFO_NAME)), id="hardlink-to-restoreInfo"
    ),
    pytest.param(lambda: with_entries(reg(f"./{TOP}/extra", b"x")), id="dot-slash-prefix"),
    pytest.param(lambda: good_gz() + b"\0", id="one-zero-after-gzip"),
    pytest.param(lambda: good_gz() + bytes(10_000), id="zeros-after-gzip"),
    pytest.param(lambda: gzip_member(good_tar(), level=0), id="stored-deflate-blocks"),
    pytest.param(lambda: gzip_member(good_tar(), level=9), id="deflate-level-9"),
    pytest.param(
        lambda: gzip_member(
            good_tar(), name=b"shard.tar", comment=b"made by hand", extra=b"AB\x02\x00hi"
        ),
        id="gzip-optional-header-fields",
    ),
    pytest.param(
        lambda: gzip_member(good_tar(), name=b"shard.tar", header_crc=True), id="gzip-fhcrc"
    ),
    pytest.param(lambda: _tarfile_gz(), id="tarfile-w-gz-with-fname"),
    pytest.param(
        lambda: gz(make_tar(good_entries(), pax_headers={"comment": "global"})),
        id="pax-global-header",
    ),
]


def _tarfile_gz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(name="Cluster0-shard-0.tar.gz", mode="w:gz", fileobj=buf) as tar:
        for info, data in good_entries():
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


@pytest.mark.parametrize("build", INSIDE)
def test_harmless_variants_pass(build: Callable[[], bytes]) -> None:
    report = check_bytes(build())
    assert report.problem is None
    assert report.replica_set == TOP


def test_pax_global_header_is_not_a_member() -> None:
    report = check_bytes(gz(make_tar(good_entries(), pax_headers={"comment": "global"})))
    assert report.passed
    assert report.members == GOOD_MEMBERS
    assert report.content_bytes == GOOD_CONTENT


NOT_GZIP_EITHER = [
    pytest.param(lambda: b"\x1f\x8b\x07" + good_gz()[3:], id="gzip-method-not-deflate"),
    pytest.param(lambda: good_gz()[:3] + b"\xe0" + good_gz()[4:], id="gzip-reserved-flags"),
    pytest.param(
        lambda: flip(gzip_member(good_tar(), name=b"shard.tar", header_crc=True), 20),
        id="gzip-bad-fhcrc",
    ),
    pytest.param(lambda: flip(good_gz(), 40), id="deflate-data-flipped"),
]


@pytest.mark.parametrize("build", NOT_GZIP_EITHER)
def test_other_gzip_damage_fails(build: Callable[[], bytes]) -> None:
    assert not check_bytes(build()).passed


# --- 4. multi-member gzip ---------------------------------------------------------------------


def _members(cuts: Sequence[int]) -> list[bytes]:
    tar = good_tar()
    bounds = [0, *cuts, len(tar)]
    return [gz(tar[a:b]) for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize(
    "cuts",
    [[1000], [BLOCK], [100, 3000, 7000], [1000, 1000]],  # [1000, 1000]: an empty middle member
    ids=["two", "two-at-block", "four", "with-empty-member"],
)
def test_multi_member_gzip_passes(cuts: list[int]) -> None:
    data = b"".join(_members(cuts))
    for report in (check_bytes(data), feed(data, 1)):
        assert report.problem is None
        assert report.restore_info is not None
        assert report.content_bytes == GOOD_CONTENT
        assert report.members == GOOD_MEMBERS
    assert check_bytes(data + bytes(100)).passed


def test_multi_member_damage() -> None:
    first, second = _members([1000])
    assert_fails(check_bytes(flip(first, -8) + second), "CRC32")
    assert_fails(check_bytes(first + flip(second, -4)), "ISIZE")
    assert_fails(check_bytes(first + second[:-3]), "truncated")
    assert_fails(check_bytes(first), "truncated")  # a complete member, but the tar is cut
    assert_fails(check_bytes(first + second + b"junk"), "after the end of the gzip data")


# --- 5. PAX and GNU formats -------------------------------------------------------------------


LONG_DIR = f"{TOP}/" + "d" * 120


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_long_names_pass(fmt: int) -> None:
    long_file = f"{LONG_DIR}/collection-7-{EPOCH}.wt"
    entries = [
        folder(TOP),
        reg(INFO_NAME, INFO),
        folder(LONG_DIR),
        reg(long_file, DATA_WT),
        symlink(f"{TOP}/link", "../" + TOP + "/" + "d" * 120 + f"/collection-7-{EPOCH}.wt"),
    ]
    tar = make_tar(entries, fmt)
    assert [m.name for m in members_of(tar)][3] == long_file
    assert (b"././@LongLink" if fmt == tarfile.GNU_FORMAT else b" path=") in tar  # meta headers

    report = check_bytes(gz(tar))

    assert report.problem is None
    assert report.members == len(entries)
    assert report.content_bytes == len(INFO) + len(DATA_WT)
    assert report.replica_set == TOP


def _pax_path(path: str) -> bytes:
    info, data = reg(f"{TOP}/harmless", b"x")
    info.pax_headers = {"path": path}
    tar = make_tar([*good_entries(), (info, data)], tarfile.PAX_FORMAT)
    at = header_at(tar, path)
    assert tar[at : at + 100].rstrip(b"\0") == f"{TOP}/harmless".encode()  # ustar name harmless
    return gz(tar)


def _pax_linkpath() -> bytes:
    info, data = symlink(f"{TOP}/link", "restoreInfo.txt")
    info.pax_headers = {"linkpath": "/etc/passwd"}
    tar = make_tar([*good_entries(), (info, data)], tarfile.PAX_FORMAT)
    assert members_of(tar)[-1].linkname == "/etc/passwd"
    return gz(tar)


def _gnu(*extra: Entry) -> bytes:
    tar = make_tar([*good_entries(), *extra], tarfile.GNU_FORMAT)
    assert b"././@LongLink" in tar
    return gz(tar)


PAX_GNU_DAMAGE = [
    pytest.param(lambda: _pax_path("../evil"), "climbs out", id="pax-path-dotdot"),
    pytest.param(lambda: _pax_path(f"{TOP}/../../evil"), "climbs out", id="pax-path-deep"),
    pytest.param(lambda: _pax_path("/etc/evil"), "absolute path", id="pax-path-absolute"),
    pytest.param(_pax_linkpath, "outside the archive", id="pax-linkpath"),
    pytest.param(
        lambda: gz(make_tar([*good_entries(), reg(f"{TOP}/" + "../" * 40 + "x", b"x")])),
        "climbs out",
        id="pax-long-path-dotdot",
    ),
    pytest.param(
        lambda: _gnu(reg(f"{LONG_DIR}/../../../x", b"x")), "climbs out", id="gnu-longname"
    ),
    pytest.param(
        lambda: _gnu(symlink(f"{TOP}/link", "/" + "e" * 120)),
        "outside the archive",
        id="gnu-longlink",
    ),
]


@pytest.mark.parametrize(("build", "expected"), PAX_GNU_DAMAGE)
def test_pax_and_gnu_paths_are_checked(build: Callable[[], bytes], expected: str) -> None:
    assert_fails(check_bytes(build()), expected)


def test_pax_size_record_overrides_the_ustar_size() -> None:
    """Members over 8 GiB in pax format carry their size in the pax record only."""
    info, data = reg(WT, DATA_WT)
    info.pax_headers = {"size": str(len(DATA_WT))}
    entries = good_entries()
    entries[2] = (info, data)
    tar = make_tar(entries, tarfile.PAX_FORMAT)
    tar = patch_header(tar, header_at(tar, WT), 124, b"00000000000\0")
    assert members_of(tar)[2].size == len(DATA_WT)

    report = check_bytes(gz(tar))

    assert report.problem is None
    assert report.content_bytes == GOOD_CONTENT
    assert report.members == GOOD_MEMBERS


# --- 6. base-256 size field -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_base256_size_field_passes(fmt: int) -> None:
    tar = make_tar(good_entries(), fmt)
    at = header_at(tar, WT)
    tar = patch_header(tar, at, 124, b"\x80" + len(DATA_WT).to_bytes(11, "big"))
    assert tar[at + 124] == 0x80
    assert [m.size for m in members_of(tar) if m.name == WT] == [len(DATA_WT)]

    report = check_bytes(gz(tar))

    assert report.problem is None
    assert report.content_bytes == GOOD_CONTENT
    assert report.members == GOOD_MEMBERS


# --- 7. zip bombs and memory ------------------------------------------------------------------


PEAK_BOUND = 16 * MiB


def test_gzip_with_zeros_helper_is_a_real_gzip() -> None:
    assert gzip.decompress(gzip_with_zeros([b"abc", 2, b"def"])) == b"abc" + bytes(2 * MiB) + b"def"


def _bomb(bomb_mib: int, trailing_mib: int = 0) -> bytes:
    dir_head = header(_info(TOP, tarfile.DIRTYPE))
    bomb_head = header(_info(f"{TOP}/collection-9-{EPOCH}.wt", tarfile.REGTYPE, bomb_mib * MiB))
    info_member = header(_info(INFO_NAME, tarfile.REGTYPE, len(INFO))) + padded(INFO)
    return gzip_with_zeros(
        [dir_head + bomb_head, bomb_mib, info_member + bytes(2 * BLOCK), trailing_mib]
    )


@pytest.mark.parametrize(
    ("bomb_mib", "trailing_mib"), [(200, 0), (1, 32)], ids=["member-200MiB", "trailing-32MiB"]
)
def test_zip_bomb_passes_in_bounded_memory(bomb_mib: int, trailing_mib: int) -> None:
    data = _bomb(bomb_mib, trailing_mib)
    assert len(data) < 300 * 1024

    report, peak = checked_with_peak(data, len(data))  # all of it in one update()

    assert report.problem is None
    assert report.content_bytes == bomb_mib * MiB + len(INFO)
    assert report.members == 3
    assert report.replica_set == TOP
    assert peak < PEAK_BOUND, f"peak {peak / MiB:.1f} MiB"


def _huge_meta(kind: bytes, fmt: Format) -> bytes:
    meta = header(_info("././@LongLink", kind, 32 * MiB), fmt)
    tail = header(_info(f"{TOP}/x", tarfile.REGTYPE)) + bytes(2 * BLOCK)
    return gzip_with_zeros([meta, 32, tail])


@pytest.mark.parametrize(
    ("kind", "fmt"),
    [(tarfile.GNUTYPE_LONGNAME, tarfile.GNU_FORMAT), (tarfile.XHDTYPE, tarfile.USTAR_FORMAT)],
    ids=["gnu-longname-32MiB", "pax-header-32MiB"],
)
def test_huge_meta_header_is_not_buffered(kind: bytes, fmt: Format) -> None:
    data = _huge_meta(kind, fmt)
    report, peak = checked_with_peak(data, 64 * 1024)
    assert isinstance(report, ArchiveReport)
    assert peak < PEAK_BOUND, f"peak {peak / MiB:.1f} MiB"


# --- never raises ------------------------------------------------------------------------------


def _weird_size() -> bytes:
    tar = good_tar()
    return gz(patch_header(tar, header_at(tar, WT), 124, b"zzzzzzzzzzz\0"))


def _weird_checksum() -> bytes:
    tar = bytearray(good_tar())
    at = header_at(bytes(tar), WT)
    tar[at + 148 : at + 156] = b"garbage!"
    return gz(bytes(tar))


def _claims_too_much() -> bytes:
    tar = good_tar()
    return gz(patch_header(tar, header_at(tar, WT), 124, b"77777777777\0"))


def _negative_base256() -> bytes:
    tar = good_tar()
    return gz(patch_header(tar, header_at(tar, WT), 124, b"\xff" * 12))


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(_weird_size, id="non-octal-size"),
        pytest.param(_weird_checksum, id="non-octal-checksum"),
        pytest.param(_claims_too_much, id="size-past-the-end"),
        pytest.param(_negative_base256, id="negative-base256-size"),
    ],
)
def test_unreadable_headers_fail_without_raising(build: Callable[[], bytes]) -> None:
    assert not check_bytes(build()).passed


def test_malformed_pax_record_does_not_raise() -> None:
    meta = b"garbage without a length\n"
    head = header(_info(f"{TOP}/PaxHeaders/x", tarfile.XHDTYPE, len(meta)))
    tail = header(_info(f"{TOP}/x", tarfile.REGTYPE)) + bytes(2 * BLOCK)
    report = check_bytes(gz(head + padded(meta) + tail))
    assert isinstance(report, ArchiveReport)


def test_restore_info_that_is_not_utf8_does_not_raise() -> None:
    entries = [folder(TOP), reg(INFO_NAME, b"Replica Set: \xff\xfe\n\x00\x80"), reg(WT, DATA_WT)]
    report = check_bytes(gz(make_tar(entries)))
    assert report.passed


def test_flipped_bytes_never_raise() -> None:
    data = good_gz()
    for index in range(0, len(data), max(1, len(data) // 97)):
        assert isinstance(check_bytes(flip(data, index)), ArchiveReport)
    tar = good_tar()
    for index in range(0, end_of_members(tar), 61):
        assert isinstance(check_bytes(gz(flip(tar, index))), ArchiveReport)


def test_finish_without_update_is_empty() -> None:
    assert_fails(ArchiveCheck().finish(), "empty")


# --- 8. where restoreInfo.txt is looked for ---------------------------------------------------


def test_no_restore_info() -> None:
    report = check_bytes(gz(make_tar([folder(TOP), reg(WT, DATA_WT)])))
    assert report.problem is None
    assert report.restore_info is None
    assert report.replica_set is None
    assert report.content_bytes == len(DATA_WT)
    assert report.members == 2


def test_restore_info_two_directories_down_is_not_the_archives() -> None:
    entries = [folder("a"), folder("a/b"), reg("a/b/restoreInfo.txt", INFO), reg("a/x", b"x")]
    report = check_bytes(gz(make_tar(entries)))
    assert report.problem is None
    assert report.restore_info is None
    assert report.content_bytes == len(INFO) + 1
    assert report.members == 4


@pytest.mark.parametrize(
    "entries",
    [
        pytest.param([reg("restoreInfo.txt", INFO), reg("data.wt", DATA_WT)], id="at-root"),
        pytest.param([reg(WT, DATA_WT), reg(INFO_NAME, INFO)], id="after-the-data"),
        pytest.param(
            [folder(f"./{TOP}"), reg(f"./{TOP}/restoreInfo.txt", INFO)], id="dot-slash-prefix"
        ),
    ],
)
def test_restore_info_is_found(entries: list[Entry]) -> None:
    report = check_bytes(gz(make_tar(entries)))
    assert report.problem is None
    assert report.restore_info is not None
    assert report.restore_info["MongoDB Version"] == "7.0.12"
    assert report.replica_set == TOP


# --- 9. parse_restore_info ---------------------------------------------------------------------


def test_parse_restore_info_whole_file() -> None:
    info = parse_restore_info(INFO_TEXT)
    assert set(info) == {*INFO_FIELDS, "Startup Options"}
    assert {k: v for k, v in info.items() if k in INFO_FIELDS} == INFO_FIELDS
    assert startup_ok(info["Startup Options"])
    assert "Restore Information" not in info


def test_parse_restore_info_value_with_colons() -> None:
    text = f"Last Oplog Applied: {WHEN} ({EPOCH}, 1)\n"
    assert parse_restore_info(text) == {"Last Oplog Applied": f"{WHEN} ({EPOCH}, 1)"}


def test_parse_restore_info_keys_as_written() -> None:
    text = (
        "Restore Information\n"
        "Group Name: Project0\n"
        "Replica Set Name: rs0\n"
        "MongoDB Version: 4.4.18\n"
        "Storage engine type: wiredTiger\n"
        "Master Key UUID: 0a1b2c3d-0000-4000-8000-000000000000\n"
    )
    assert parse_restore_info(text) == {
        "Group Name": "Project0",
        "Replica Set Name": "rs0",
        "MongoDB Version": "4.4.18",
        "Storage engine type": "wiredTiger",
        "Master Key UUID": "0a1b2c3d-0000-4000-8000-000000000000",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", {}, id="empty"),
        pytest.param("Restore Information\n", {}, id="title-only"),
        pytest.param(
            "Restore Information\n  stray\nReplica Set: rs0\n", {"Replica Set": "rs0"}, id="title"
        ),
        pytest.param("Replica Set:   rs0   \n", {"Replica Set": "rs0"}, id="stripped"),
        pytest.param(
            "Replica Set: rs0\r\nMongoDB Version: 7.0.12\r\n",
            {"Replica Set": "rs0", "MongoDB Version": "7.0.12"},
            id="crlf",
        ),
        pytest.param(
            "Startup Options: {\n}\nMongoDB Version: 7.0.12",
            {"Startup Options": "{\n}", "MongoDB Version": "7.0.12"},
            id="continuation-then-key",
        ),
        pytest.param(
            'Startup Options: {\n"storage": { "dbPath": "/data/db" }\n}\nMongoDB Version: 7.0.12\n',
            {
                "Startup Options": '{\n"storage": { "dbPath": "/data/db" }\n}',
                "MongoDB Version": "7.0.12",
            },
            id="unindented-json-continues",
        ),
        pytest.param("Replica Set: rs0\n\n", {"Replica Set": "rs0"}, id="trailing-blank-line"),
    ],
)
def test_parse_restore_info_cases(text: str, expected: dict[str, str]) -> None:
    assert parse_restore_info(text) == expected


@pytest.mark.parametrize(
    "entries",
    [
        # Each link stays inside on its own; through the first, the second lands outside.
        [symlink("Cluster0-shard-0/a", ".."), symlink("Cluster0-shard-0/a/b", "../..")],
        [symlink("Cluster0-shard-0/j", "."), reg("Cluster0-shard-0/j/x", b"x")],
        [symlink("Cluster0-shard-0/d", "."), reg("Cluster0-shard-0/./d/x", b"x")],
    ],
    ids=["chain-of-links", "file-below-a-link", "dot-spelled"],
)
def test_a_member_below_a_symbolic_link_is_caught(entries: list[Entry]) -> None:
    assert_fails(check_bytes(with_entries(*entries)), "below the symbolic link")


def test_a_path_through_dotdot_is_refused_even_inside() -> None:
    # GNU tar refuses to extract it ("Member name contains '..'"): the restore would fail.
    assert_fails(check_bytes(with_entries(reg(f"{TOP}/a/../b", b"x"))), "goes through '..'")


def _raw_member(name: bytes, size_field: bytes, magic: bytes = b"ustar\x0000") -> bytes:
    """One tar header written by hand (valid checksum), then its data padded, then the end."""
    header = bytearray(512)
    header[0 : len(name)] = name
    header[100:108] = b"0000644\0"
    header[124:136] = size_field
    header[156:157] = b"0"
    header[257:265] = magic
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    return bytes(header)


def test_a_negative_size_is_damage_not_a_loop() -> None:
    tar = _raw_member(b"Cluster0-shard-0/x", b"-0001000000\0") + bytes(1024)
    assert_fails(check_bytes(gz(tar)), "unreadable tar member size")


def test_a_pax_size_of_thousands_of_digits_is_damage_not_an_exception() -> None:
    record = b"size=" + b"1" * 5000 + b"\n"
    body = f"{len(record) + 5} ".encode() + record  # the length counts its own 5 characters
    pax = _raw_member(b"PaxHeaders/x", f"{len(body):011o}\0".encode())
    pax = pax[:156] + b"x" + pax[157:]
    pax = pax[:148] + b" " * 8 + pax[156:]
    pax = pax[:148] + f"{sum(pax):06o}\0 ".encode() + pax[156:]
    member = _raw_member(b"Cluster0-shard-0/x", b"00000000000\0")
    tar = pax + body + bytes(-len(body) % 512) + member + bytes(1024)
    assert_fails(check_bytes(gz(tar)), "unreadable pax size")  # int() would raise on it


def test_an_old_gnu_header_has_no_prefix_field() -> None:
    # GNU's "ustar  " magic: bytes 345.. are its atime, not a prefix to put before the name.
    header = _raw_member(b"../../etc/cron.d/evil", b"00000000000\0", magic=b"ustar  \0")
    header = header[:345] + b"a/b/c" + header[350:]
    header = header[:148] + b" " * 8 + header[156:]
    header = header[:148] + f"{sum(header):06o}\0 ".encode() + header[156:]
    assert_fails(check_bytes(gz(header + bytes(1024))), "climbs out")


def test_a_link_through_another_link_is_caught() -> None:
    entries = [symlink(f"{TOP}/x", "."), symlink(f"{TOP}/y", "x/../..")]
    assert_fails(check_bytes(with_entries(*entries)), "outside the archive")


def test_names_past_path_max_are_refused() -> None:
    long = "/".join(["d"] * 3000)  # 5999 bytes
    assert_fails(check_bytes(with_entries(reg(f"{TOP}/{long}", b"x"))), "longer than 4096")


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
def test_an_old_gnu_sparse_member_passes_with_its_real_size(tmp_path: Path) -> None:
    top = tmp_path / "rs"
    top.mkdir()
    (top / "restoreInfo.txt").write_text("Replica Set: rs\n")
    with (top / "sparse.wt").open("wb") as f:  # more data regions than one header holds
        for i in range(8):
            f.seek(i * 1024 * 1024)
            f.write(b"x" * 4096)
        f.truncate(9 * 1024 * 1024)
    out = tmp_path / "a.tar.gz"
    done = subprocess.run(
        ["tar", "--format=gnu", "-S", "-czf", str(out), "-C", str(tmp_path), "rs"],
        capture_output=True,
        check=False,
    )
    if (
        done.returncode != 0
        or b"GNU"
        not in subprocess.run(["tar", "--version"], capture_output=True, check=False).stdout
    ):
        pytest.skip("no GNU tar with --format=gnu")
    report = check_bytes(out.read_bytes())
    assert report.passed, report.problem
    assert report.content_bytes == 9 * 1024 * 1024 + len("Replica Set: rs\n")
    assert report.replica_set == "rs"
