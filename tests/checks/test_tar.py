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
