"""fetcher.checks.tar and fetcher.checks.tree: fields read as GNU tar reads them, links resolved."""

from __future__ import annotations

import gzip
import io
import tarfile
import time

import pytest

from fetcher.checks.archive import check_bytes
from fetcher.checks.tar import Damaged, tar_number
from fetcher.checks.tree import Tree


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (b"0000644\0", 0o644),
        (b"    644 ", 0o644),  # old tars padded with leading spaces
        (b"\x000000644", 0o644),  # one leading NUL, from a tar whose previous field overflowed
        (b"644 junk", 0o644),  # tar stops at white space; what follows is not read
        (b"12 34\0\0\0", 0o12),  # so this is 10, where int() would refuse and a reader might join
        (bytes(8), 0),
        (b"\x80" + (5).to_bytes(11, "big"), 5),  # GNU base-256
        (b"\xff" * 12, -1),
    ],
)
def test_numbers_tar_accepts(field: bytes, value: int) -> None:
    assert tar_number(field) == value


@pytest.mark.parametrize(
    "field", [b"00_644\0 ", b"+0000644", b"-0000644", b"0000648\0", b"        ", b"\0       "]
)
def test_numbers_tar_refuses(field: bytes) -> None:
    assert tar_number(field) is None


def test_a_checksum_is_octal_only() -> None:
    assert tar_number(b"\x80" + bytes(7), octal_only=True) is None


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ([("a/b/s", "symlink", "../.."), ("h", "hardlink", "a/b/s")], "outside"),  # h -> ../..
        ([("a/", "dir", ""), ("s", "symlink", "a/c/../.."), ("a/c", "symlink", ".")], "directory"),
        ([("x", "symlink", "."), ("y", "symlink", "x/x/x/../..")], "outside"),
        ([("p", "symlink", "q"), ("q", "symlink", "p")], "to itself"),
        ([("f", "file", ""), ("f/x", "file", "")], "a file"),
        ([("f", "file", ""), ("s", "symlink", "f/x")], "a file"),
        ([("h", "hardlink", "later")], "not a file before it"),
        ([("d/", "dir", ""), ("h", "hardlink", "d")], "not a file before it"),
        ([("x", "file", ""), ("./x", "file", "")], "twice"),
        ([("s", "symlink", "d/x"), ("d", "symlink", ".")], "directory"),
    ],
)
def test_links_are_resolved_as_the_tree_is_built(
    members: list[tuple[str, str, str]], problem: str
) -> None:
    tree = Tree()
    *before, (name, kind, link) = members
    for earlier in before:
        tree.add(*earlier)
    with pytest.raises(Damaged, match=problem):
        tree.add(name, kind, link)


def test_links_that_stay_inside_pass() -> None:
    tree = Tree()
    for name, kind, link in [
        ("top/", "dir", ""),
        ("top/up", "symlink", ".."),  # the extraction directory itself
        ("top/l", "symlink", "d/f"),  # named before it exists
        ("top/d/", "dir", ""),
        ("top/d/f", "file", ""),
        ("top/x", "symlink", "l"),  # through another link
        ("top/h", "hardlink", "top/x"),  # a hard link to a symbolic link
        ("top/g", "symlink", "up/top/d/../d/f"),
    ]:
        tree.add(name, kind, link)


def _deep_archive(with_link: bool, members: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if with_link:
            info = tarfile.TarInfo("rs/l")
            info.type, info.linkname = tarfile.SYMTYPE, "."
            tar.addfile(info)
        deep = "rs/" + "/".join(["d"] * 2040)  # 4 KiB paths
        for n in range(members):
            tar.addfile(tarfile.TarInfo(f"{deep}/{n % 7}/f{n}"), io.BytesIO(b""))
    return gzip.compress(buf.getvalue(), 1)


def test_links_cost_the_same_whatever_the_paths() -> None:
    """One symbolic link does not make each member's check cost more (it was 10 times)."""
    timings = []
    for with_link in (False, True):
        data = _deep_archive(with_link, 300)
        start = time.perf_counter()
        assert check_bytes(data).passed
        timings.append(time.perf_counter() - start)
    assert timings[1] < 2 * timings[0] + 0.05


def _deep_paths_archive(members: int, *, links: bool) -> bytes:
    """Members whose paths (or symbolic link targets) are 2,040 directories deep."""
    deep = "x/" * 2040
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for i in range(members):
            if links:
                info = tarfile.TarInfo(f"rs0/l{i}")
                info.type, info.linkname = tarfile.SYMTYPE, f"y{i}/{deep}f"
                tar.addfile(info)
            else:
                tar.addfile(tarfile.TarInfo(f"rs0/y{i}/{deep}f"), io.BytesIO(b""))
    return buffer.getvalue()


@pytest.mark.parametrize("links", [False, True], ids=["deep-paths", "deep-dangling-links"])
def test_an_archive_whose_paths_cost_a_node_each_component_is_refused(links: bool) -> None:
    # About 30 KB of gzip that would hold 800,000 nodes (gigabytes for a few thousand more).
    report = check_bytes(_deep_paths_archive(400, links=links))
    assert report.problem is not None and "members name more than" in report.problem


def test_a_tree_holds_at_most_max_nodes() -> None:
    tree = Tree(max_nodes=50)

    def add_files() -> None:
        for i in range(60):
            tree.add(f"rs0/f{i}", "file")

    with pytest.raises(Damaged, match="more than 50 paths"):
        add_files()


def _archive_of(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _file(name: str, data: bytes = b"data") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info, b""


@pytest.mark.parametrize(
    "members",
    [
        # tar makes a directory of a file named "f/." (and then fails): the check says no.
        (_file("rs0/f/."),),
        # Hard links to "f/" or "f/.": tar says "Not a directory" and makes nothing.
        (_file("rs0/c-0.wt"), _hardlink("rs0/h", "rs0/c-0.wt/")),
        (_file("rs0/c-0.wt"), _hardlink("rs0/h", "rs0/c-0.wt/.")),
    ],
    ids=["file-named-dot", "hardlink-slash", "hardlink-slash-dot"],
)
def test_names_tar_reads_as_directories_are_refused(
    members: tuple[tuple[tarfile.TarInfo, bytes], ...],
) -> None:
    assert check_bytes(_archive_of(*members)).problem is not None


def test_a_restore_info_the_check_cannot_read_whole_or_that_says_a_key_twice_is_refused() -> None:
    info = b"Replica Set: rs0\nMongoDB Version: 7.0.12\n"
    assert check_bytes(_archive_of(_file("rs0/restoreInfo.txt", info))).problem is None
    padded = info + b"Comment: " + b"x" * (64 * 1024) + b"\nReplica Set: other\n"
    big = check_bytes(_archive_of(_file("rs0/restoreInfo.txt", padded))).problem
    assert big is not None and "restoreInfo.txt" in big
    twice = info + b"replica set: other\n"
    said = check_bytes(_archive_of(_file("rs0/restoreInfo.txt", twice))).problem
    assert said is not None and "twice" in said
