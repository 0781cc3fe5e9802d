"""The archive check against GNU tar: it refuses an archive, or tar extracts what it reported.

Every archive here is built from bytes: a small restore tree, then headers crafted the way an
attacker would (each class of issue 19), then mutants of those headers from a seeded generator.
For each, either the check refuses it, or `tar -xzf --no-same-owner` extracts exactly the
members, sizes and link targets the check listed (no more, no fewer), with every link landing
inside the directory, and `tar -tvzf` lists the same members with the same sizes; and the
unpacker writes, in the check's pass, the very tree tar wrote: the same paths, bytes, links and
modification times, with directories 0700 and files 0600.
"""

from __future__ import annotations

import gzip
import os
import random
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fetcher.checks.archive import ArchiveCheck, ArchiveReport, TarEntry, check_bytes
from fetcher.checks.unpack import Unpacker

BLOCK = 512
TOP = "rs0"
INFO = b"Replica Set: rs0\nMongoDB Version: 7.0.12\n"
DATA = bytes(range(256)) * 7  # 1792 bytes


def _gnu_tar() -> bool:
    if shutil.which("tar") is None:
        return False
    done = subprocess.run(["tar", "--version"], capture_output=True, check=False)
    return b"GNU tar" in done.stdout


pytestmark = pytest.mark.skipif(not _gnu_tar(), reason="needs GNU tar")


# --- headers from bytes -------------------------------------------------------------------------


def header(
    name: bytes,
    kind: bytes = b"0",
    size: int | bytes = 0,
    link: bytes = b"",
    *,
    magic: bytes = b"ustar\x0000",
    prefix: bytes = b"",
    fields: dict[int, bytes] | None = None,
    checksum: bytes | None = None,
) -> bytes:
    """One 512-byte header; `fields` writes raw bytes at offsets before the checksum is made."""
    h = bytearray(BLOCK)
    h[0 : len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = b"0001750\0"
    h[116:124] = b"0001750\0"
    h[124:136] = size if isinstance(size, bytes) else f"{size:011o}\0".encode()
    h[136:148] = b"14524715500\0"
    h[156:157] = kind
    h[157 : 157 + len(link)] = link
    h[257:265] = magic
    h[345 : 345 + len(prefix)] = prefix
    for at, value in (fields or {}).items():
        h[at : at + len(value)] = value
    h[148:156] = b" " * 8
    h[148:156] = checksum if checksum is not None else f"{sum(h):06o}\0 ".encode()
    return bytes(h)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def reg(name: str, data: bytes = b"", **kw: object) -> bytes:
    return header(name.encode(), b"0", len(data), **kw) + padded(data)  # type: ignore[arg-type]


def folder(name: str) -> bytes:
    return header(name.encode(), b"5", fields={100: b"0000755\0"})


def symlink(name: str, target: str) -> bytes:
    return header(name.encode(), b"2", 0, target.encode())


def hardlink(name: str, target: str) -> bytes:
    return header(name.encode(), b"1", 0, target.encode())


def records(pairs: dict[str, str]) -> bytes:
    out = b""
    for key, value in pairs.items():
        body = f" {key}={value}\n".encode()
        n = len(body) + 1
        while len(str(n)) + len(body) != n:
            n += 1
        out += str(n).encode() + body
    return out


def pax(pairs: dict[str, str], kind: bytes = b"x") -> bytes:
    data = records(pairs)
    return header(b"PaxHeaders/x", kind, len(data)) + padded(data)


def gnu_long(kind: bytes, value: str) -> bytes:
    data = value.encode() + b"\0"
    return header(b"././@LongLink", kind, len(data), magic=b"ustar  \0") + padded(data)


def base() -> list[bytes]:
    return [folder(f"{TOP}/"), reg(f"{TOP}/restoreInfo.txt", INFO), reg(f"{TOP}/c-0.wt", DATA)]


def tar_of(*parts: bytes) -> bytes:
    return b"".join([*base(), *parts]) + bytes(2 * BLOCK)


def archive(tar: bytes) -> bytes:
    return gzip.compress(tar, mtime=0)


# --- the corpus ---------------------------------------------------------------------------------


def _hidden_by(kind: bytes, key: str = "size") -> bytes:
    """A pax record tar applies sizes the member after it over the next header: a hidden one."""
    hidden = reg(f"{TOP}/hidden", b"h" * 10)
    return tar_of(pax({key: str(len(hidden))}, kind), reg(f"{TOP}/cover"), hidden)


def _checksum_with_underscore() -> bytes:
    h = bytearray(header(f"{TOP}/skipped".encode(), b"0", 0))
    h[148:156] = b" " * 8
    value = f"{sum(h):o}"
    h[148:156] = f"{value[:2]}_{value[2:]}\0".encode().ljust(8, b" ")[:8]
    return tar_of(bytes(h), reg(f"{TOP}/after", b"a"))


def _sparse_flag_in_ustar() -> bytes:
    h = header(f"{TOP}/s".encode(), b"S", 0, prefix=b"x" * 137 + b"\x01")
    return tar_of(h, reg(f"{TOP}/after", b"a"))


def _ustar0_prefix() -> bytes:
    return tar_of(header(b"name", b"0", 0, magic=b"ustar000", prefix=TOP.encode()))


def _two_infos() -> bytes:
    return tar_of(reg("restoreInfo.txt", b"Replica Set: other\n"))


def _hardlink_to_chain() -> bytes:
    return tar_of(
        folder(f"{TOP}/a/"), folder(f"{TOP}/a/b/"), symlink(f"{TOP}/a/b/s", "../.."),
        hardlink(f"{TOP}/h", f"{TOP}/a/b/s"),
    )  # fmt: skip


def _through_a_later_link() -> bytes:
    return tar_of(
        folder(f"{TOP}/a/"), symlink(f"{TOP}/s", "a/c/../../.."), symlink(f"{TOP}/a/c", "."),
    )  # fmt: skip


def _numbers(size: bytes) -> Callable[[], bytes]:
    return lambda: tar_of(header(f"{TOP}/n".encode(), b"0", size) + padded(b"n" * 8))


CORPUS: dict[str, Callable[[], bytes]] = {
    "plain": lambda: tar_of(),
    "solaris-x-size": lambda: _hidden_by(b"X"),
    "pax-x-size": lambda: _hidden_by(b"x"),
    "global-size": lambda: _hidden_by(b"g"),
    "global-path": lambda: tar_of(pax({"path": f"{TOP}/g"}, b"g"), reg(f"{TOP}/x", b"x")),
    "global-linkpath": lambda: tar_of(pax({"linkpath": "/etc"}, b"g"), symlink(f"{TOP}/l", "a")),
    "global-comment": lambda: tar_of(pax({"comment": "hi"}, b"g"), reg(f"{TOP}/x", b"x")),
    "checksum-underscore": _checksum_with_underscore,
    "sparse-flag-in-ustar": _sparse_flag_in_ustar,
    "ustar0-prefix": _ustar0_prefix,
    "ustar-prefix": lambda: tar_of(header(b"p", b"0", 0, prefix=TOP.encode())),
    "gnu-sparse-name": lambda: tar_of(pax({"GNU.sparse.name": f"{TOP}/n"}), reg(f"{TOP}/x")),
    "two-restore-infos": _two_infos,
    "x-linkpath-absolute": lambda: tar_of(pax({"linkpath": "/etc"}), symlink(f"{TOP}/l", "a")),
    "X-linkpath-absolute": lambda: tar_of(
        pax({"linkpath": "/etc"}, b"X"), symlink(f"{TOP}/l", "a")
    ),
    "hardlink-to-symlink-chain": _hardlink_to_chain,
    "symlink-through-a-later-link": _through_a_later_link,
    "pax-uid-unreadable": lambda: tar_of(pax({"uid": "12x"}), reg(f"{TOP}/x", b"x")),
    "pax-uid-too-big": lambda: tar_of(pax({"uid": str(2**32)}), reg(f"{TOP}/x", b"x")),
    "pax-times": lambda: tar_of(
        pax({"mtime": "1700000000.123456789", "atime": "-5", "uid": "4294967295"}),
        reg(f"{TOP}/x", b"x"),
    ),
    "pax-path": lambda: tar_of(pax({"path": f"{TOP}/long/" + "n" * 150}), reg(f"{TOP}/x", b"x")),
    "gnu-long-name": lambda: tar_of(gnu_long(b"L", f"{TOP}/" + "l" * 150), reg(f"{TOP}/s", b"1")),
    "gnu-long-link": lambda: tar_of(gnu_long(b"K", "c-0.wt"), symlink(f"{TOP}/k", "x")),
    "pax-over-gnu": lambda: tar_of(
        gnu_long(b"L", f"{TOP}/gnu"), pax({"path": f"{TOP}/pax"}), reg(f"{TOP}/u", b"2")
    ),
    "links-inside": lambda: tar_of(
        symlink(f"{TOP}/up", ".."),
        symlink(f"{TOP}/i", "restoreInfo.txt"),
        hardlink(f"{TOP}/h", f"{TOP}/c-0.wt"),
        hardlink(f"{TOP}/hs", f"{TOP}/i"),
    ),
    "hardlink-to-a-delayed-symlink": lambda: tar_of(
        symlink(f"{TOP}/u", f"../{TOP}/c-0.wt"), hardlink(f"{TOP}/h", f"{TOP}/u")
    ),
    "hardlink-through-a-symlink": lambda: tar_of(
        folder(f"{TOP}/d/"),
        reg(f"{TOP}/d/f", b"f"),
        symlink(f"{TOP}/l", f"../{TOP}/d"),
        hardlink(f"{TOP}/h", f"{TOP}/l/f"),
    ),
    "link-then-target": lambda: tar_of(
        symlink(f"{TOP}/l", "d/f"), folder(f"{TOP}/d/"), reg(f"{TOP}/d/f", b"f")
    ),
    "duplicate": lambda: tar_of(reg(f"{TOP}/c-0.wt", b"again")),
    "dot-slash-duplicate": lambda: tar_of(reg(f"./{TOP}/c-0.wt", b"again")),
    "unknown-type-with-data": lambda: tar_of(
        header(f"{TOP}/u".encode(), b"Q", 5) + padded(b"q" * 5)
    ),
    "size-with-spaces": _numbers(b"  10 34\0    "),
    "size-leading-nul": _numbers(b"\x0000000000010"),
    "size-underscore": _numbers(b"0000_0000010"),
    "size-plus": _numbers(b"+0000000010\0"),
    "size-base256": _numbers(b"\x80" + (8).to_bytes(11, "big")),
    "old-gnu": lambda: tar_of(reg(f"{TOP}/o", b"o" * 3, magic=b"ustar  \0")),
    "v7": lambda: tar_of(reg(f"{TOP}/v", b"v", magic=bytes(8))),
    "dir-with-data": lambda: tar_of(header(f"{TOP}/dd/".encode(), b"5", 3) + padded(b"ddd")),
    "file-with-slash": lambda: tar_of(header(f"{TOP}/f/".encode(), b"0", 0)),
    "symlink-loop": lambda: tar_of(symlink(f"{TOP}/p", "q"), symlink(f"{TOP}/q", "p")),
    "below-a-symlink": lambda: tar_of(symlink(f"{TOP}/j", "."), reg(f"{TOP}/j/x", b"x")),
}


def real_sparse(tmp: Path) -> bytes:
    """An old GNU sparse member as GNU tar writes it (more regions than one header holds)."""
    top = tmp / "src" / TOP
    top.mkdir(parents=True)
    (top / "restoreInfo.txt").write_bytes(INFO)
    with (top / "sparse.wt").open("wb") as f:
        for i in range(6):
            f.seek(i * 65536)
            f.write(b"x" * 4096)
        f.truncate(7 * 65536)
    out = tmp / "sparse.tar.gz"
    subprocess.run(
        ["tar", "--format=gnu", "-S", "-czf", str(out), "-C", str(tmp / "src"), TOP], check=True
    )
    return out.read_bytes()


# --- what GNU tar does with it ------------------------------------------------------------------


def on_disk(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every path under root: its kind, its size (files) and its target (links)."""
    found: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("symlink", 0, os.readlink(path))  # noqa: PTH115 - Path drops a final /
                real = Path(os.path.realpath(path))
                assert real == root or root in real.parents, f"{rel} resolves outside: {real}"
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", 0, "")
            else:
                assert stat.S_ISREG(st.st_mode), rel
                found[rel] = ("file", st.st_size, "")
    return found


def in_full(root: Path, listing: tuple[TarEntry, ...]) -> dict[str, tuple[object, ...]]:
    """Every path under root with what an unpack must keep: kind, bytes, link, mtime (of a
    directory made on the way to a member, not one itself, the time it was made: not kept)."""
    members = {"/".join(p for p in e.path.split("/") if p not in ("", ".")) for e in listing}
    found: dict[str, tuple[object, ...]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                what: tuple[object, ...] = ("symlink", os.readlink(path))  # noqa: PTH115
            elif stat.S_ISDIR(st.st_mode):
                what = ("dir",)
            else:
                what = ("file", path.read_bytes(), st.st_nlink > 1)
            rel = str(path.relative_to(root))
            found[rel] = (*what, st.st_mtime_ns if rel in members else None)
    return found


def unpacked_by_us(data: bytes, root: Path) -> Path:
    """The tree the unpacker writes for `data`, fed in uneven blocks as a download feeds it."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sink = Unpacker(fd, label="diff")
        check = ArchiveCheck(sink=sink)
        for start in range(0, len(data), 977):
            check.update(data[start : start + 977])
        assert check.finish().passed
        staged = sink.close()
    finally:
        os.close(fd)
    assert staged.problem is None, staged.problem
    for dirpath, dirs, files in os.walk(root / sink.staging):
        for name in dirs + files:
            mode = Path(dirpath, name).lstat().st_mode
            if not stat.S_ISLNK(mode):
                assert stat.S_IMODE(mode) == (0o700 if stat.S_ISDIR(mode) else 0o600), name
    return root / sink.staging


def expected(listing: tuple[TarEntry, ...]) -> dict[str, tuple[str, int, str]]:
    """What the check's listing says the disk will hold, directories made on the way included."""
    want: dict[str, tuple[str, int, str]] = {}
    for entry in listing:
        parts = [p for p in entry.path.split("/") if p not in ("", ".")]
        for i in range(1, len(parts)):
            want.setdefault("/".join(parts[:i]), ("dir", 0, ""))
        if not parts:
            continue
        path = "/".join(parts)
        if entry.kind == "hardlink":
            target = "/".join(p for p in entry.link.split("/") if p not in ("", "."))
            want[path] = want[target]
        elif entry.kind == "symlink":
            want[path] = ("symlink", 0, entry.link)
        else:
            want[path] = (entry.kind, entry.size, "")
    return want


def listed_by_tar(path: Path) -> list[tuple[str, int]]:
    """Each member tar lists: its name (escaped as tar escapes it) and the size it shows."""
    done = subprocess.run(
        ["tar", "--quoting-style=escape", "--numeric-owner", "-tvzf", str(path)],
        capture_output=True, check=True, env={**os.environ, "LC_ALL": "C", "TZ": "UTC"},
    )  # fmt: skip
    rows = []
    for line in done.stdout.decode("utf-8", "surrogateescape").splitlines():
        match = re.fullmatch(r"\S+ \S+ +(\d+) \S+ \S+ (.*)", line)
        assert match, line
        size, rest = match[1], match[2]
        for sep in (" -> ", " link to "):
            rest = rest.split(sep, 1)[0] if sep in rest else rest
        rows.append((rest, int(size)))
    return rows


def agrees_with_tar(data: bytes, report: ArchiveReport, work: Path) -> None:
    """The check passed `data`: GNU tar must extract exactly what it listed."""
    work.mkdir()
    path, out = work / "a.tar.gz", work / "out"
    out.mkdir()
    path.write_bytes(data)
    began = time.time_ns()
    done = subprocess.run(
        ["tar", "-xzf", str(path), "--no-same-owner", "-C", str(out)],
        capture_output=True, check=False, env={**os.environ, "LC_ALL": "C"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert on_disk(out) == expected(report.listing)
    rows = listed_by_tar(path)
    assert len(rows) == len(report.listing)
    for (name, size), entry in zip(rows, report.listing, strict=True):
        if entry.kind == "file":
            assert size == entry.size, (name, entry)
        plain = entry.path.isascii() and entry.path.isprintable() and "\\" not in entry.path
        if plain and " -> " not in entry.path and " link to " not in entry.path:
            assert name == entry.path
    assert report.content_bytes == sum(e.size for e in report.listing if e.kind == "file")
    if not any(entry.kind == "file" and "sparse" in entry.path for entry in report.listing):
        ours = in_full(unpacked_by_us(data, work / "ours"), report.listing)
        theirs = in_full(out, report.listing)
        for rel, what in theirs.items():
            # tar sets a directory's time when it leaves it; a later member put back in it
            # changes it again (to the time of the extraction): not the archive's to compare
            if what[0] == "dir" and isinstance(what[-1], int) and what[-1] >= began:
                ours[rel] = theirs[rel] = ("dir", None)
        assert ours == theirs


REFUSED = {
    "global-size", "global-path", "global-linkpath", "checksum-underscore",
    "sparse-flag-in-ustar", "gnu-sparse-name", "two-restore-infos", "x-linkpath-absolute",
    "X-linkpath-absolute", "hardlink-to-symlink-chain", "symlink-through-a-later-link",
    "duplicate", "dot-slash-duplicate", "unknown-type-with-data", "size-underscore",
    "size-plus", "dir-with-data", "hardlink-through-a-symlink", "file-with-slash",
    "symlink-loop", "below-a-symlink", "pax-uid-unreadable", "pax-uid-too-big",
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_the_corpus_is_refused_or_read_as_tar_reads_it(case: str, tmp_path: Path) -> None:
    data = archive(CORPUS[case]())
    report = check_bytes(data)
    assert (report.problem is not None) == (case in REFUSED), report.problem
    if report.passed:
        agrees_with_tar(data, report, tmp_path / "x")


def test_a_sparse_member_written_by_gnu_tar_is_read_as_tar_reads_it(tmp_path: Path) -> None:
    data = real_sparse(tmp_path)
    report = check_bytes(data)
    assert report.passed, report.problem
    assert [e.size for e in report.listing if e.path.endswith("sparse.wt")] == [7 * 65536]
    agrees_with_tar(data, report, tmp_path / "x")


# --- mutants ------------------------------------------------------------------------------------


def header_offsets(tar: bytes) -> list[int]:
    """Where each header starts, reading sizes as plain octal (good enough for the corpus)."""
    offsets, pos = [], 0
    while pos + BLOCK <= len(tar) and tar[pos : pos + BLOCK] != bytes(BLOCK):
        offsets.append(pos)
        try:
            size = int(tar[pos + 124 : pos + 136].strip(b"\0 ") or b"0", 8)
        except ValueError:
            break
        if tar[pos + 156 : pos + 157] in (b"1", b"2", b"5"):
            size = 0
        pos += BLOCK + -(-size // BLOCK) * BLOCK
    return offsets


FIELDS = [(0, 100), (100, 8), (124, 12), (148, 8), (156, 1), (157, 100), (257, 8), (345, 155)]
NOISE = [b"0", b"7", b" ", b"\0", b"_", b"+", b"-", b"/", b".", b"..", b"\x80", b"\xff", b"x"]
KINDS = [b"0", b"\0", b"1", b"2", b"5", b"7", b"x", b"X", b"g", b"L", b"K", b"S", b"D", b"V"]


RECORD_NOISE = [b"0", b"9", b" ", b"\n", b"=", b"\0", b"/", b"..", b"+", b"path", b"size", b"link"]


def mutate_record(tar: bytes, rng: random.Random) -> bytes | None:
    """A pax record or GNU long name changed in its data (its length kept)."""
    metas = [at for at in header_offsets(tar) if tar[at + 156 : at + 157] in b"xXgLK"]
    if not metas:
        return None
    at = rng.choice(metas) + BLOCK
    size = int(tar[at - BLOCK + 124 : at - BLOCK + 136].strip(b"\0 "), 8)
    value = rng.choice(RECORD_NOISE)
    pos = at + rng.randrange(max(1, size - len(value) + 1))
    return tar[:pos] + value + tar[pos + len(value) :]


def mutate(tar: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.2 and (changed := mutate_record(tar, rng)) is not None:
        return changed
    offsets = header_offsets(tar)
    at = rng.choice(offsets)
    h = bytearray(tar[at : at + BLOCK])
    start, length = rng.choice(FIELDS)
    choice = rng.random()
    if choice < 0.3 and start != 148:
        h[156:157] = rng.choice(KINDS)
    elif choice < 0.6:
        value = b"".join(rng.choice(NOISE) for _ in range(rng.randint(1, 4)))
        pos = start + rng.randrange(length)
        h[pos : pos + len(value)] = value
        del h[BLOCK:]
    else:
        h[start + rng.randrange(length)] = rng.randrange(256)
    if start != 148 or choice >= 0.6:  # most mutants keep a valid checksum, to get further
        h[148:156] = b" " * 8
        h[148:156] = f"{sum(h):06o}\0 ".encode()
    return tar[:at] + bytes(h) + tar[at + BLOCK :]


def test_mutants_are_refused_or_read_as_tar_reads_them(tmp_path: Path) -> None:
    rng = random.Random(19)  # noqa: S311 - a seeded generator, for a reproducible corpus
    seeds = [CORPUS[name]() for name in sorted(CORPUS)]
    passed = 0
    for i in range(600):
        data = archive(mutate(rng.choice(seeds), rng))
        report = check_bytes(data)
        if report.passed:
            passed += 1
            agrees_with_tar(data, report, tmp_path / str(i))
    assert passed >= 20  # the generator reaches archives the check reads, not only refusals
