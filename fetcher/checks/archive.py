"""The archive check: a restore tar.gz inflated and walked as it streams, in the same pass.

A matching SHA1 says the bytes are the ones the service published; this says they open: every
gzip member's CRC32 and ISIZE (zlib checks both), nothing after the last member but zero
padding, every tar header's checksum, a tar stream that ends where it says, no member path that
is absolute or climbs out of the archive, and no link that points outside it. The tar is read
as GNU tar reads it (fetcher.checks.tar), and what tar would read another way is damage; links
are resolved as the tree is built (fetcher.checks.tree). On the way it keeps restoreInfo.txt,
which tells the operator which replica set the archive restores and how to start it, and the
list of members. It is a sink, like hashlib's objects: update(block) in order, then finish().
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Any, cast

from fetcher.checks.tar import Damaged, TarEntry, shown
from fetcher.checks.walk import INFO_NAME, MAX_INFO, MemberSink, TarWalk

__all__ = [
    "INFO_NAME",
    "MAX_INFO",
    "ArchiveCheck",
    "ArchiveReport",
    "Damaged",
    "TarEntry",
    "check_bytes",
    "info_value",
    "parse_restore_info",
]

try:
    # zlib-ng inflates and checks CRC32 in less than half the time of the zlib most systems
    # ship (0.3 s against 0.7 s a GiB here): CPU a fetch needs for the network and SHA1.
    from zlib_ng import zlib_ng as _inflate_lib
except ImportError:  # pragma: no cover - a platform without its wheels: same API, slower
    _inflate_lib = cast(Any, zlib)
_ZLIB_ERRORS: tuple[type[Exception], ...] = (zlib.error, cast(type[Exception], _inflate_lib.error))


def _gzip_inflater() -> Any:
    """A decompressor that takes gzip framing only and checks each member's CRC32 and ISIZE."""
    return _inflate_lib.decompressobj(16 + zlib.MAX_WBITS)


# Inflate at most this much at a time, from at most this much input: a zip bomb stays one
# small buffer, and so does every output buffer. With 1 MiB of output per call, glibc handed
# each freed buffer back to the kernel and faulted it in again: twice the system time of the
# whole transfer.
INFLATE_CHUNK = 256 * 1024
_KEY = re.compile(r"([A-Za-z][^:]{0,100}?):(?:\s+(.*))?$")
_REPLICA_SET_KEYS = ("replica set", "replica set name")


@dataclass(frozen=True)
class ArchiveReport:
    """What the check found in one archive."""

    problem: str | None  # None when the archive passed
    restore_info: dict[str, str] | None  # restoreInfo.txt's lines; None when there is none
    content_bytes: int  # the sizes of the regular files: the disk needed to unpack it
    members: int  # tar entries (pax and GNU long-name records not counted)
    # With ArchiveCheck(listing=True): every member, in order (not part of what a report says).
    listing: tuple[TarEntry, ...] = field(default=(), compare=False)
    # The one top-level directory an unpack strips (as tar --strip-components 1); None: none.
    top_dir: str | None = field(default=None, compare=False)

    @property
    def passed(self) -> bool:
        """True when nothing is wrong with the archive as an archive."""
        return self.problem is None

    @property
    def replica_set(self) -> str | None:
        """The replica set restoreInfo.txt names, if it does."""
        return info_value(self.restore_info, *_REPLICA_SET_KEYS)


class ArchiveCheck:
    """Inflate and walk a .tar.gz fed in order, in blocks of any size; never raises on bad data."""

    def __init__(self, *, listing: bool = False, sink: MemberSink | None = None) -> None:
        """`listing`: keep every member in the report (its memory grows with the archive);
        `sink`: told every member with its data, as tar would extract it (an unpack)."""
        self._inflater = _gzip_inflater()
        self._in_member = False  # inside a gzip member (its header seen, its trailer not yet)
        self._members = 0  # gzip members begun
        self._padding = False  # after the last member, zero bytes were seen
        self._seen = 0  # compressed bytes fed
        self._tar = TarWalk(listing=listing, sink=sink)
        self._problem: str | None = None

    def update(self, block: bytes | bytearray | memoryview) -> None:
        """Take the next bytes of the archive."""
        if self._problem is not None or not block:
            return
        self._seen += len(block)
        view = memoryview(block)  # zlib reads any buffer: slices of it, and no copy
        try:
            for start in range(0, len(view), INFLATE_CHUNK):
                self._feed(view[start : start + INFLATE_CHUNK])
        except Damaged as exc:
            self._problem = str(exc)
        except (ValueError, OverflowError, MemoryError) as exc:  # bytes no walk foresaw
            self._problem = f"an unreadable archive ({type(exc).__name__})"

    def finish(self) -> ArchiveReport:
        """Say whether the archive passed, with what it holds."""
        if self._problem is None:
            try:
                self._end()
            except Damaged as exc:
                self._problem = str(exc)
        if self._problem is not None:
            # What was walked before the damage depends on where zlib noticed it (an error
            # drops the output of the call that found it): a damaged archive holds nothing.
            return ArchiveReport(
                problem=self._problem, restore_info=None, content_bytes=0, members=0
            )
        tar = self._tar
        try:
            info = parse_restore_info(tar.info_text()) if tar.info is not None else None
        except Damaged as exc:
            return ArchiveReport(problem=str(exc), restore_info=None, content_bytes=0, members=0)
        return ArchiveReport(
            problem=None,
            restore_info=info,
            content_bytes=tar.content_bytes,
            members=tar.members,
            listing=tuple(tar.listing),
            top_dir=tar.top_dir(),
        )

    def _feed(self, data: bytes | bytearray | memoryview) -> None:
        while data:
            if not self._in_member:
                data = self._between_members(data)
                if not data:
                    return
            try:
                out = self._inflater.decompress(data, INFLATE_CHUNK)
                while True:
                    if out:
                        self._tar.feed(out)
                    if self._inflater.eof:
                        break
                    tail = self._inflater.unconsumed_tail
                    if not tail:
                        return  # everything fed is inflated; wait for more
                    out = self._inflater.decompress(tail, INFLATE_CHUNK)
            except _ZLIB_ERRORS as exc:
                raise Damaged(_gzip_problem(exc, self._members)) from None
            # The member ended: its CRC32 and ISIZE matched. What follows is another member,
            # padding, or garbage.
            data = self._inflater.unused_data
            self._in_member = False

    def _between_members(
        self, data: bytes | bytearray | memoryview
    ) -> bytes | bytearray | memoryview:
        """After a member (or at the start): begin the next member, or take padding."""
        if self._padding or data[0] == 0:
            if self._members == 0:
                raise Damaged("not a gzip file (it starts with a zero byte)")
            self._padding = True
            if bytes(data).count(0) != len(data):
                raise Damaged("data after the end of the gzip data (not zero padding)")
            return b""
        if data[0] != 0x1F:
            if self._members == 0:
                raise Damaged("not a gzip file")
            raise Damaged("data after the end of the gzip data (not another gzip member)")
        self._inflater = _gzip_inflater()
        self._in_member = True
        self._members += 1
        return data

    def _end(self) -> None:
        if self._seen == 0:
            raise Damaged("empty file, not a tar.gz archive")
        if self._in_member:
            try:
                rest = self._inflater.flush()
            except _ZLIB_ERRORS as exc:
                raise Damaged(_gzip_problem(exc, self._members)) from None
            if rest:
                self._tar.feed(rest)
            if not self._inflater.eof:
                raise Damaged(f"truncated: the gzip data ends inside member {self._members}")
        self._tar.end()


def _gzip_problem(exc: Exception, member: int) -> str:
    text = str(exc)
    where = f" of gzip member {member}" if member > 1 else ""
    if "incorrect data check" in text:
        return f"CRC32 mismatch{where}: the inflated data is not what was compressed"
    if "incorrect length check" in text:
        return f"ISIZE mismatch{where}: the inflated length is not the one recorded"
    if "incorrect header check" in text or "unknown compression method" in text:
        if member == 1:
            return "not a gzip file (bad gzip header)"
        return f"data after the end of the gzip data (a bad header for member {member})"
    return (
        f"gzip data is damaged{where} ({text.removeprefix('Error -3 while decompressing data: ')})"
    )


def parse_restore_info(text: str) -> dict[str, str]:
    """Every 'Key: value' line, keys as written; other lines continue the value before them.

    Damaged when a key is there twice (whatever its case): which one a reader takes would
    decide which replica set the archive restores.
    """
    info: dict[str, str] = {}
    seen: set[str] = set()
    last: str | None = None
    for line in text.splitlines():
        match = _KEY.match(line)
        if match and not line[:1].isspace():
            last = match[1].strip()
            if last.casefold() in seen:
                raise Damaged(f"{INFO_NAME} says {shown(last)} twice")
            seen.add(last.casefold())
            info[last] = (match[2] or "").strip()
        elif last is not None and line.strip():
            # The mongod startup options are often a JSON document over several lines.
            info[last] = f"{info[last]}\n{line.rstrip()}".strip()
    return info


def info_value(info: dict[str, str] | None, *keys: str) -> str | None:
    """The value of the first of `keys` (compared case-insensitively) that `info` has."""
    if not info:
        return None
    folded = {k.casefold(): v for k, v in info.items()}
    for key in keys:
        if key.casefold() in folded:
            return folded[key.casefold()] or None
    return None


def check_bytes(data: bytes, *, block: int = 65536) -> ArchiveReport:
    """Check a whole archive held in memory, fed `block` bytes at a time, with its listing."""
    check = ArchiveCheck(listing=True)
    for start in range(0, len(data), block):
        check.update(data[start : start + block])
    return check.finish()
