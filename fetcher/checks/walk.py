"""The walk of an inflated tar stream: headers read as GNU tar reads them, data passed over.

It keeps restoreInfo.txt, the metadata records (pax, GNU long names) for the member they
precede, and the tree the members build (fetcher.checks.tree); nothing else of the data. Given
a MemberSink, it tells it each member the tree accepted, with its data: what tar extracts.
"""

from __future__ import annotations

from typing import Protocol

from fetcher.checks import tar
from fetcher.checks.tar import BLOCK, KINDS, MAX_META, META, ZERO_BLOCK, Damaged, TarEntry, shown
from fetcher.checks.tree import Tree, member_parts

INFO_NAME = "restoreInfo.txt"
MAX_INFO = 64 * 1024  # restoreInfo.txt is a few hundred bytes; keep at most this much of it


class MemberSink(Protocol):
    """What a walk tells of each member it accepted, in archive order (fetcher.checks.unpack).

    `parts` are the member path's components ('.' and empty ones dropped); `mtime` is in
    nanoseconds. A file's data follows its file() call in data() calls, then end_file().
    """

    def directory(self, parts: list[str], mtime: int) -> None:
        """A directory member."""

    def file(self, parts: list[str], mtime: int) -> None:
        """A regular file begins."""

    def data(self, chunk: memoryview) -> None:
        """The next bytes of the file begun (a view of bytes that no one changes)."""

    def end_file(self) -> None:
        """The file begun is complete."""

    def hardlink(self, parts: list[str], target: list[str]) -> None:
        """A hard link to a file already told."""

    def symlink(self, parts: list[str], text: str, mtime: int) -> None:
        """A symbolic link (its landing checked inside the tree)."""

    def refuse(self, reason: str) -> None:
        """A member that can be checked but is not extracted here (a sparse file)."""


class TarWalk:
    """Walks tar headers in inflated bytes, passing over member data without keeping it."""

    def __init__(self, *, listing: bool = False, sink: MemberSink | None = None) -> None:
        self._header = bytearray()  # a header being gathered (it may straddle two chunks)
        self._skip = 0  # bytes of member data and padding still to pass over
        self._keep: bytearray | None = None  # the member data being kept, if any
        self._keep_left = 0
        self._kept_as = b""  # the type of what is being kept: INFO, or a pax/GNU record
        self._zero_blocks = 0
        self._ended = False
        self._pax: dict[str, str] | None = None  # a pax header's records for the next member
        self._long: dict[bytes, str] = {}  # GNU long name (L) and long link (K) for the next
        self._current = ""  # the member whose data is being passed over, for messages
        self._tree = Tree()
        self._sparse: tar.SparseMap | None = None  # old GNU sparse extension headers follow
        self._sparse_size = 0  # the data of that member, to pass over after them
        self.members = 0
        self.content_bytes = 0
        self.info: bytearray | None = None
        self.listing: list[TarEntry] = []  # kept only when asked for (tests compare it with tar)
        self._list = listing
        self._sink = sink
        self._data_left = 0  # bytes of the current file still to hand to the sink

    def top_dir(self) -> str | None:
        """The one top-level directory that can be stripped (Tree.top_dir)."""
        return self._tree.top_dir()

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
                if self._data_left:
                    self._give(view[pos : pos + min(n, self._data_left)])
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
        if self._skip or self._header or self._sparse is not None:
            what = f"inside {shown(self._current)}" if self._skip else "inside a header"
            raise Damaged(f"truncated: the tar archive ends {what}")
        if not self._ended and self._zero_blocks == 0:
            raise Damaged("truncated: the tar archive has no end-of-archive blocks")
        if self._pax is not None or self._long:
            raise Damaged("a pax or GNU long-name header with no member after it")
        if self.members == 0:
            raise Damaged("the tar archive holds no files")

    def _take_header(self, block: bytes) -> None:
        if self._sparse is not None:
            self._sparse_extension(block)
            return
        if block == ZERO_BLOCK:
            self._zero_blocks += 1
            self._ended = self._zero_blocks >= 2
            return
        if self._zero_blocks:
            raise Damaged(f"a zero block inside the tar archive, after {shown(self._current)}")
        tar.check_checksum(block, self._current)
        kind = block[156:157]
        size = tar.header_size(block, self._current)
        if kind in META:
            self._meta(kind, size)
        else:
            size = self._member(block, kind, size)
        self._skip = -(-size // BLOCK) * BLOCK  # data, padded to whole blocks
        if not self._skip and self._keep is not None:
            self._kept()

    def _meta(self, kind: bytes, size: int) -> None:
        if size > MAX_META:
            raise Damaged(f"a tar metadata record of {size} bytes after {shown(self._current)}")
        if (kind in b"xX" and self._pax is not None) or kind in self._long:
            raise Damaged(
                f"two {kind.decode()!r} headers for one member after {shown(self._current)}"
            )
        self._keep, self._keep_left, self._kept_as = bytearray(), size, kind

    def _member(self, block: bytes, kind: bytes, size: int) -> int:
        """A member's header: checked, added to the tree; the size of its data in the archive."""
        pax, self._pax = self._pax or {}, None
        long, self._long = self._long, {}
        name = pax.get("path") or long.get(b"L") or tar.header_name(block)
        link = pax.get("linkpath") or long.get(b"K") or tar.text(block[157:257])
        if "size" in pax:
            size = tar.pax_size(pax["size"], name)
        if not name:
            raise Damaged(f"a tar member with no name after {shown(self._current)}")
        self._current = name
        what = KINDS.get(kind)
        if what is None:
            raise Damaged(f"a tar member of type {kind!r} (not in a restore): {shown(name)}")
        if what != "file" and size:
            raise Damaged(f"a {what} with {size} bytes of data: {shown(name)}")
        if what != "dir" and (name.endswith(("/", "/.")) or name == "."):
            # tar makes (or wants) a directory of it
            raise Damaged(f"a {what} whose name ends in '/' or '/.': {shown(name)}")
        self.members += 1
        parts, made, made_link = self._tree.add(name, what, link)
        content = size
        if kind == b"S":
            content = self._sparse_member(block, name, size)
        if self._sink is not None:
            self._tell(parts, made, made_link, kind, tar.mtime_ns(block, pax), content)
        if self._list:
            self.listing.append(TarEntry(name, what, content, link if what != "file" else ""))
        if what == "file":
            self.content_bytes += content
        if _is_info(name):
            if self.info is not None or what != "file" or kind == b"S":
                raise Damaged(f"a second {INFO_NAME}, or one that is not a file: {shown(name)}")
            if size > MAX_INFO:  # the disk would hold lines the check did not read
                raise Damaged(f"{shown(name)} of {size} bytes, more than {MAX_INFO} read")
            self.info = bytearray()
            self._keep, self._keep_left = self.info, size
            self._kept_as = b"info"
        return 0 if self._sparse is not None else size

    def _tell(
        self, parts: list[str], made: str, link: str, kind: bytes, mtime: int, size: int
    ) -> None:
        """Tell the sink of a member the tree accepted."""
        sink = self._sink
        assert sink is not None
        if kind == b"S":
            sink.refuse(f"{shown('/'.join(parts))} is a sparse file, which is not unpacked")
        elif made == "file":
            sink.file(parts, mtime)
            self._data_left = size
            if not size:
                sink.end_file()
        elif made == "dir":
            sink.directory(parts, mtime)
        elif made == "symlink":
            sink.symlink(parts, link, mtime)
        else:
            sink.hardlink(parts, member_parts(link))

    def _give(self, chunk: memoryview) -> None:
        """Hand the next bytes of a file to the sink; end the file after its last."""
        assert self._sink is not None
        self._sink.data(chunk)
        self._data_left -= len(chunk)
        if not self._data_left:
            self._sink.end_file()

    def _sparse_member(self, block: bytes, name: str, size: int) -> int:
        if not tar.is_old_gnu(block):  # only old GNU headers have a sparse map where tar reads
            raise Damaged(f"a sparse member without the old GNU magic: {shown(name)}")
        sparse = tar.SparseMap(block, name)
        if sparse.more:
            self._sparse, self._sparse_size = sparse, size  # its data after its extensions
            return sparse.real
        return sparse.content(size)

    def _sparse_extension(self, block: bytes) -> None:
        """An old GNU sparse member's extension header: 21 more regions and a flag."""
        sparse = self._sparse
        assert sparse is not None
        if not sparse.read(block[:504], block[504]):
            self._sparse = None
            sparse.content(self._sparse_size)
            self._skip = -(-self._sparse_size // BLOCK) * BLOCK

    def _kept(self) -> None:
        """A kept member's data is complete: use it."""
        data, kind = bytes(self._keep or b""), self._kept_as
        self._keep, self._keep_left, self._kept_as = None, 0, b""
        if kind in (b"x", b"X"):
            self._pax = tar.pax_records(data, self._current)
        elif kind == b"g":
            tar.global_records(data, self._current)
        elif kind in (b"L", b"K"):
            self._long[kind] = tar.text(data)
            if not self._long[kind]:
                raise Damaged(f"an empty GNU long name or link after {shown(self._current)}")
        # b"info" was kept in place.


def _is_info(name: str) -> bool:
    """restoreInfo.txt at the root of the archive or in its top directory."""
    if INFO_NAME not in name:
        return False
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return 1 <= len(parts) <= 2 and parts[-1] == INFO_NAME
