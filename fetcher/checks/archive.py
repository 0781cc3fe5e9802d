"""The archive check: a restore tar.gz inflated and walked as it streams, in the same pass.

A matching SHA1 says the bytes are the ones the service published; this says they open: every
gzip member's CRC32 and ISIZE (zlib checks both), nothing after the last member but zero
padding, every tar header's checksum, a tar stream that ends where it says, no member path that
is absolute or climbs out of the archive, and no link that points outside it. On the way it
keeps restoreInfo.txt, which tells the operator which replica set the archive restores and how
to start it. It is a sink, like hashlib's objects: update(block) in order, then finish().
"""

from __future__ import annotations

import posixpath
import re
import zlib
from dataclasses import dataclass
from typing import Any, cast

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


INFO_NAME = "restoreInfo.txt"
MAX_INFO = 64 * 1024  # restoreInfo.txt is a few hundred bytes; keep at most this much of it
MAX_META = 1024 * 1024  # a pax or GNU long-name record larger than this is not a real one
# Inflate at most this much at a time, from at most this much input: a zip bomb stays one
# small buffer, and so does every output buffer. With 1 MiB of output per call, glibc handed
# each freed buffer back to the kernel and faulted it in again: twice the system time of the
# whole transfer.
INFLATE_CHUNK = 256 * 1024
BLOCK = 512
MAX_PATH = 4096  # PATH_MAX: a longer member name or link target is no file system's
MAX_LINKS = 65536  # symbolic links kept to check the members below them
_OCTAL = re.compile(rb"[0-7]+")
_ZERO_BLOCK = bytes(BLOCK)
_REGULAR = (b"0", b"\0", b"7", b"S")  # a file, an old-style file, a contiguous or sparse file
_META = (b"x", b"g", b"L", b"K")  # pax (local, global) and GNU long name, long link
_KEY = re.compile(r"([A-Za-z][^:]{0,100}?):(?:\s+(.*))?$")
_REPLICA_SET_KEYS = ("replica set", "replica set name")


@dataclass(frozen=True)
class ArchiveReport:
    """What the check found in one archive."""

    problem: str | None  # None when the archive passed
    restore_info: dict[str, str] | None  # restoreInfo.txt's lines; None when there is none
    content_bytes: int  # the sizes of the regular files: the disk needed to unpack it
    members: int  # tar entries (pax and GNU long-name records not counted)

    @property
    def passed(self) -> bool:
        """True when nothing is wrong with the archive as an archive."""
        return self.problem is None

    @property
    def replica_set(self) -> str | None:
        """The replica set restoreInfo.txt names, if it does."""
        return info_value(self.restore_info, *_REPLICA_SET_KEYS)


class Damaged(Exception):
    """The archive cannot be restored from as it is; the message says why."""


class ArchiveCheck:
    """Inflate and walk a .tar.gz fed in order, in blocks of any size; never raises on bad data."""

    def __init__(self) -> None:
        self._inflater = _gzip_inflater()
        self._in_member = False  # inside a gzip member (its header seen, its trailer not yet)
        self._members = 0  # gzip members begun
        self._padding = False  # after the last member, zero bytes were seen
        self._seen = 0  # compressed bytes fed
        self._tar = _TarWalk()
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
        return ArchiveReport(
            problem=None,
            restore_info=parse_restore_info(tar.info_text()) if tar.info is not None else None,
            content_bytes=tar.content_bytes,
            members=tar.members,
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


class _TarWalk:
    """Walks tar headers in inflated bytes, passing over member data without keeping it."""

    def __init__(self) -> None:
        self._header = bytearray()  # a header being gathered (it may straddle two chunks)
        self._skip = 0  # bytes of member data and padding still to pass over
        self._keep: bytearray | None = None  # the member data being kept, if any
        self._keep_left = 0
        self._kept_as = b""  # the type of what is being kept: INFO, or a pax/GNU record
        self._zero_blocks = 0
        self._ended = False
        self._pax: dict[str, str] = {}  # a pax header's overrides for the next member
        self._long: dict[bytes, str] = {}  # GNU long name (L) and long link (K) for the next
        self._current = ""  # the member whose data is being passed over, for messages
        self._links: set[str] = set()  # symbolic links seen, as normalised paths
        self._sparse_blocks = False  # old GNU sparse extension headers follow
        self._pending_skip = 0  # the data of that member, to pass over after them
        self.members = 0
        self.content_bytes = 0
        self.info: bytearray | None = None

    def info_text(self) -> str:
        """restoreInfo.txt as text (undecodable bytes replaced)."""
        return bytes(self.info or b"").decode("utf-8", errors="replace")

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        pos, size = 0, len(view)
        while pos < size:
            if self._skip:
                n = min(self._skip, size - pos)
                if self._keep is not None and self._keep_left:
                    take = min(n, self._keep_left)
                    self._keep += view[pos : pos + take]
                    self._keep_left -= take
                pos += n
                self._skip -= n
                if not self._skip and self._keep is not None:
                    self._kept()
                continue
            if self._ended:
                if bytes(view[pos:]).count(0) != size - pos:
                    raise Damaged("data after the end of the tar archive")
                return
            take = min(BLOCK - len(self._header), size - pos)
            self._header += view[pos : pos + take]
            pos += take
            if len(self._header) == BLOCK:
                block = bytes(self._header)
                self._header.clear()
                self._take_header(block)

    def end(self) -> None:
        if self._skip or self._header:
            what = f"inside {_shown(self._current)}" if self._skip else "inside a header"
            raise Damaged(f"truncated: the tar archive ends {what}")
        if not self._ended and self._zero_blocks == 0:
            raise Damaged("truncated: the tar archive has no end-of-archive blocks")
        if self.members == 0:
            raise Damaged("the tar archive holds no files")

    def _take_header(self, block: bytes) -> None:
        if self._sparse_blocks:
            # An old GNU sparse member's extension header: 21 (offset, size) pairs and a flag
            # saying whether another one follows. Its data comes after the last one.
            self._sparse_blocks = block[504] != 0
            if not self._sparse_blocks:
                self._skip, self._pending_skip = self._pending_skip, 0
            return
        if block == _ZERO_BLOCK:
            self._zero_blocks += 1
            self._ended = self._zero_blocks >= 2
            return
        if self._zero_blocks:
            raise Damaged(f"a zero block inside the tar archive, after {_shown(self._current)}")
        _check_checksum(block, self._current)
        kind = block[156:157]
        size = _size(block, self._current)
        if kind in _META:
            if size > MAX_META:
                raise Damaged(
                    f"a tar metadata record of {size} bytes after {_shown(self._current)}"
                )
            self._keep, self._keep_left, self._kept_as = bytearray(), size, kind
        else:
            # A pax header or a GNU long name before this header overrides its fields.
            pax, self._pax = self._pax, {}
            long, self._long = self._long, {}
            name = pax.get("path") or long.get(b"L") or _name(block)
            link = pax.get("linkpath") or long.get(b"K") or _text(block[157:257])
            if "size" in pax:
                size = _pax_size(pax["size"], name)
            self.members += 1
            self._current = name
            _check_path(name)
            self._check_through_links(name, name)
            if kind == b"2":
                target = posixpath.join(posixpath.dirname(name), link)
                _check_link(target, name, link)
                self._check_through_links(target, name)
                if len(self._links) >= MAX_LINKS:
                    raise Damaged(f"more than {MAX_LINKS} symbolic links in the archive")
                self._links.add(_normal(name))
            elif kind == b"1":
                _check_link(link, name, link)
                self._check_through_links(link, name)
            elif kind in _REGULAR:
                real = _octal(block[483:495]) if kind == b"S" else None
                self.content_bytes += real if real is not None else size
                if kind == b"S" and block[482]:
                    self._sparse_blocks = True  # its data comes after the extension headers
                if self.info is None and _is_info(name):
                    self.info = bytearray()
                    self._keep, self._keep_left = self.info, min(size, MAX_INFO)
                    self._kept_as = b"info"
            if kind in (b"1", b"2", b"3", b"4", b"5", b"6"):
                size = 0  # links, devices, directories and FIFOs carry no data in the archive
        skip = -(-size // BLOCK) * BLOCK  # data, padded to whole blocks
        if self._sparse_blocks:
            self._pending_skip = skip
        else:
            self._skip = skip
        if not self._skip and not self._sparse_blocks and self._keep is not None:
            self._kept()

    def _check_through_links(self, path: str, member: str) -> None:
        """A member (or a link's target) below a symbolic link goes wherever the link points."""
        if not self._links:
            return
        prefix = ""
        for part in path.split("/")[:-1]:
            if part in ("", "."):
                continue
            prefix = f"{prefix}/{part}" if prefix else part
            if prefix in self._links:
                what = "" if path == member else f" links to {_shown(path)}, which"
                raise Damaged(f"{_shown(member)}{what} is below the symbolic link {_shown(prefix)}")

    def _kept(self) -> None:
        """A kept member's data is complete: use it."""
        data, kind = bytes(self._keep or b""), self._kept_as
        self._keep, self._keep_left, self._kept_as = None, 0, b""
        if kind == b"x":
            self._pax = _pax_records(data, self._current)
        elif kind in (b"L", b"K"):
            self._long[kind] = _text(data)
        # b"g" (global pax) changes nothing a check needs; b"info" was kept in place.


def _check_checksum(block: bytes, after: str) -> None:
    field = block[148:156]
    try:
        stored = int(field.replace(b"\0", b" ").strip() or b"-1", 8)
    except ValueError:
        stored = -1
    unsigned = sum(block) - sum(field) + 8 * 0x20
    # Some old tars summed signed bytes; accept either, as tar itself does.
    signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b >= 0x80)
    if stored not in (unsigned, signed):
        where = f"after {_shown(after)}" if after else "of the first member"
        raise Damaged(f"tar header checksum mismatch {where}")


def _size(block: bytes, after: str) -> int:
    field = block[124:136]
    if field[0] & 0x80:  # GNU base-256, for members of 8 GiB and more
        if field[0] != 0x80:
            raise Damaged(f"a negative tar member size after {_shown(after)}")
        return int.from_bytes(field[1:], "big")
    digits = field.replace(b"\0", b" ").strip() or b"0"
    if not _OCTAL.fullmatch(digits):  # int() would take a sign, spaces or underscores
        raise Damaged(f"an unreadable tar member size after {_shown(after)}")
    return int(digits, 8)


def _octal(field: bytes) -> int | None:
    """An octal number field, or None when it holds something else."""
    digits = field.replace(b"\0", b" ").strip()
    return int(digits, 8) if _OCTAL.fullmatch(digits) else None


def _name(block: bytes) -> str:
    name = _text(block[0:100])
    if block[257:263] in (b"ustar\0", b"ustar0"):  # not GNU's "ustar  ": 345.. is its atime
        prefix = _text(block[345:500])
        if prefix:
            return f"{prefix}/{name}"
    return name


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", errors="surrogateescape")


def _pax_records(data: bytes, after: str) -> dict[str, str]:
    """Parse 'LEN key=value\\n' records."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break  # padding some writers leave
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise Damaged(f"a malformed pax header after {_shown(after)}") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or space < 0 or not record.endswith(b"\n") or b"=" not in record:
            raise Damaged(f"a malformed pax header after {_shown(after)}")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _pax_size(value: str, name: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise Damaged(f"an unreadable pax size for {_shown(name)}")
    return int(value)


def _check_path(name: str) -> None:
    if len(name.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise Damaged(f"a member path longer than {MAX_PATH} bytes: {_shown(name)}")
    if name.startswith("/"):
        raise Damaged(f"a member has an absolute path: {_shown(name)}")
    if _climbs_out(name):
        raise Damaged(f"a member path climbs out of the archive with '..': {_shown(name)}")
    if ".." in name.split("/"):  # GNU tar refuses these too: the restore would fail
        raise Damaged(f"a member path goes through '..': {_shown(name)}")


def _check_link(target: str, name: str, link: str) -> None:
    if len(link.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise Damaged(f"{_shown(name)} links to a path longer than {MAX_PATH} bytes")
    if link.startswith("/") or _climbs_out(target):
        raise Damaged(f"{_shown(name)} links to {_shown(link)}, outside the archive")


def _climbs_out(path: str) -> bool:
    depth = 0
    for part in path.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _normal(path: str) -> str:
    """A member path without '.', empty parts or '..' (which _check_path keeps inside)."""
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


def _is_info(name: str) -> bool:
    """restoreInfo.txt at the root of the archive or in its top directory."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return 1 <= len(parts) <= 2 and parts[-1] == INFO_NAME


def _shown(name: str) -> str:
    return repr(name) if len(name) <= 120 else f"{name[:100]!r}… ({len(name)} characters)"


def parse_restore_info(text: str) -> dict[str, str]:
    """Every 'Key: value' line, keys as written; other lines continue the value before them."""
    info: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        match = _KEY.match(line)
        if match and not line[:1].isspace():
            last = match[1].strip()
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
    """Check a whole archive held in memory, fed `block` bytes at a time."""
    check = ArchiveCheck()
    for start in range(0, len(data), block):
        check.update(data[start : start + block])
    return check.finish()
