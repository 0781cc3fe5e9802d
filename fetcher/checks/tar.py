"""Tar headers read as GNU tar 1.34 reads them (src/list.c, src/xheader.c, src/sparse.c).

The dialects: ustar (its prefix joined only under the "ustar\\0" magic), old GNU and GNU (long
names and links, `L` and `K`; old GNU sparse members, `S`, with their extension headers), pax
extended headers (`x`, and Solaris `X`, which tar reads the same way) with GNU tar's precedence:
a pax record over a GNU long name over the header's own field. What tar would read another way,
or complain about, is damage here: a number field tar does not accept, a global pax header (`g`)
that sets a path, a link or a size, pax sparse members, a member type a restore does not hold.
"""

from __future__ import annotations

import re
from typing import NamedTuple

BLOCK = 512
MAX_META = 1024 * 1024  # a pax or GNU long-name record larger than this is not a real one
MAX_PATH = 4096  # PATH_MAX: a longer member name or link target is no file system's
ZERO_BLOCK = bytes(BLOCK)
META = (b"x", b"X", b"g", b"L", b"K")  # pax (local, Solaris, global), GNU long name and link
KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"S": "file"}
KINDS.update({b"1": "hardlink", b"2": "symlink", b"5": "dir"})
_SPACES = b" \t\n\v\f\r"
_OLDGNU = b"ustar  \0"
_GLOBAL_REFUSED = ("path", "linkpath", "size")
_ANY = re.compile(rb".*", re.DOTALL)
_TIME = re.compile(rb"-?[0-9]{1,19}(\.[0-9]{1,30})?")
_ID = re.compile(rb"[0-9]{1,10}")
_PAX_NUMBER = {b"uid": _ID, b"gid": _ID, b"mtime": _TIME, b"atime": _TIME, b"ctime": _TIME}


class Damaged(Exception):
    """The archive cannot be restored from as it is; the message says why."""


class TarEntry(NamedTuple):
    """One member as GNU tar extracts it."""

    path: str  # as written in the archive (pax and GNU long names applied)
    kind: str  # "file", "dir", "symlink" or "hardlink"
    size: int  # the bytes tar writes for it (a sparse file's real size; 0 but for files)
    link: str  # a link's target as written; "" for others


def shown(name: str) -> str:
    return repr(name) if len(name) <= 120 else f"{name[:100]!r}… ({len(name)} characters)"


def tar_number(field: bytes, *, octal_only: bool = False) -> int | None:
    """A number field as GNU tar's from_header reads it; None where tar would complain.

    One leading NUL and leading white space are passed over, octal digits read up to the end
    of the field, a NUL or white space (what follows is ignored); base-256 (a first byte of
    0x80 or 0xff) unless octal_only. Python's int(…, 8) would also take '_', a sign, and
    trailing white space between digits; tar takes none of those.
    """
    i, end = (1 if field[:1] == b"\0" else 0), len(field)
    if not octal_only and field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value if field[0] == 0x80 else value - 256 ** (len(field) - 1)
    while i < end and field[i] in _SPACES:
        i += 1
    if i == end:
        return None  # a blank field
    start = i
    while i < end and 0x30 <= field[i] <= 0x37:
        i += 1
    if i < end and field[i] != 0 and field[i] not in _SPACES:
        return None
    return int(field[start:i], 8) if i > start else 0


def check_checksum(block: bytes, after: str) -> None:
    """The header's checksum, as tar_checksum: unsigned or signed byte sums both accepted."""
    field = block[148:156]
    stored = tar_number(field, octal_only=True)
    unsigned = sum(block) - sum(field) + 8 * 0x20
    if stored == unsigned:
        return
    signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b >= 0x80)
    if stored is None or stored != signed:
        where = f"after {shown(after)}" if after else "of the first member"
        raise Damaged(f"tar header checksum mismatch {where}")


# The number fields tar decodes for every header, with the range of the type it decodes into.
_NUMBERS = (
    (100, 108, "mode", -(2**63), 2**64 - 1),
    (108, 116, "uid", 0, 2**32 - 1),
    (116, 124, "gid", 0, 2**32 - 1),
    (136, 148, "mtime", -(2**63), 2**63 - 1),
    (124, 136, "member size", 0, 2**63 - 1),  # last: the value returned
)


def header_size(block: bytes, after: str) -> int:
    """The size field, and every other number field tar decodes checked on the way."""
    value = 0
    for start, end, what, low, high in _NUMBERS:
        value_or_none = tar_number(block[start:end])
        if value_or_none is None or not low <= value_or_none <= high:
            raise Damaged(f"an unreadable tar {what} field after {shown(after)}")
        value = value_or_none
    return value


def mtime_ns(block: bytes, pax: dict[str, str]) -> int:
    """A member's modification time in nanoseconds: the pax record's, else the header's."""
    value = pax.get("mtime")
    if value is None:
        return (tar_number(block[136:148]) or 0) * 1_000_000_000
    whole, _, fraction = value.partition(".")  # checked by _PAX_NUMBER: -?digits[.digits]
    ns = abs(int(whole)) * 1_000_000_000 + int((fraction + "000000000")[:9])
    return -ns if whole.startswith("-") else ns


def header_name(block: bytes) -> str:
    """The name field, with the prefix before it under the POSIX magic (not "ustar0")."""
    name = text(block[0:100])
    if block[257:263] == b"ustar\0" and block[345]:
        return f"{text(block[345:500])}/{name}"
    return name


def is_old_gnu(block: bytes) -> bool:
    return block[257:265] == _OLDGNU


def text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", errors="surrogateescape")


def pax_records(data: bytes, after: str) -> dict[str, str]:
    """Parse 'LEN key=value\\n' records, strictly (tar's strtoumax would take a sign)."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break  # tar stops reading records here too
        space = data.find(b" ", pos)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit() or digits[:1] == b"0" or len(digits) > 8:
            raise Damaged(f"a malformed pax header after {shown(after)}")
        length = int(digits)
        record = data[space + 1 : pos + length]
        if pos + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise Damaged(f"a malformed pax header after {shown(after)}")
        key, _, value = record[:-1].partition(b"=")
        if not key or b"\0" in key:  # tar stops with an error on these
            raise Damaged(f"a malformed pax header after {shown(after)}")
        if key.startswith((b"GNU.sparse.", b"GNU.volume.")):
            raise Damaged(f"a pax sparse or multi-volume member after {shown(after)}")
        if key in (b"path", b"linkpath") and (not value or b"\0" in value):
            raise Damaged(f"an empty or NUL-holding pax {key.decode()} after {shown(after)}")
        number = _PAX_NUMBER.get(key, _ANY).fullmatch(value)
        if not number or (key in (b"uid", b"gid") and int(value) >= 2**32):  # tar: an error
            raise Damaged(f"an unreadable pax {key.decode()} after {shown(after)}")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def global_records(data: bytes, after: str) -> None:
    """A `g` header: tar applies it to every member after it; refused where that matters."""
    for key in pax_records(data, after):
        if key in _GLOBAL_REFUSED:
            raise Damaged(f"a global pax header sets {key!r} after {shown(after)}")


def pax_size(value: str, name: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise Damaged(f"an unreadable pax size for {shown(name)}")
    return int(value)


class SparseMap:
    """An old GNU sparse member's map, read as oldgnu_get_sparse_info reads it, checked."""

    def __init__(self, block: bytes, name: str) -> None:
        self.name = name
        self.stored = 0  # the data the archive holds for it: what the map must add up to
        real = tar_number(block[483:495])
        if real is None or real < 0:
            raise Damaged(f"an unreadable sparse size for {shown(name)}")
        self.real = real
        self._end = 0  # where the last region ends
        self._regions = 0
        self.more = self.read(block[386:482], block[482])

    def read(self, entries: bytes, extended: int) -> bool:
        """Take the (offset, size) pairs of a header; True when an extension header follows."""
        for at in range(0, len(entries), 24):
            if entries[at + 12] == 0:  # tar's end of the map: what follows is not read
                if extended:
                    raise Damaged(f"a sparse map of {shown(self.name)} ends before its headers")
                return False
            offset, size = tar_number(entries[at : at + 12]), tar_number(entries[at + 12 : at + 24])
            if offset is None or size is None or offset < self._end or size < 0:
                raise Damaged(f"an unreadable sparse map for {shown(self.name)}")
            if offset + size > self.real:
                raise Damaged(f"a sparse map past the size of {shown(self.name)}")
            self._end, self._regions = offset + size, self._regions + 1
            self.stored += size
        return extended != 0

    def content(self, size: int) -> int:
        """The bytes tar writes for it: checked that the map and the data agree."""
        if not self._regions or self.stored != size or self._end != self.real:
            raise Damaged(f"a sparse map that does not match the data of {shown(self.name)}")
        return self.real
