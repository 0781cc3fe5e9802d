"""The tree an archive builds as GNU tar extracts it, member by member, and where its links land.

Each path is a node of a trie of path components, so a member costs the length of its path and
a link the length of its target: linear time over the archive, whatever the links. A symbolic
link's node points at the node its target lands on (through every link already seen, with
'..' taken physically); a path a link names before any member makes it is a spot that a later
member may fill, and a path a link goes through is a directory that no later member may turn
into a link or a file. A link that lands outside the tree, or is absolute, is refused; so is
a member below a symbolic link, a path seen twice, and a hard link to what is not there yet.
"""

from __future__ import annotations

from fetcher.checks.tar import MAX_PATH, Damaged, shown

_DIR, _IMPLICIT, _FILE, _LINK, _SPOT = range(5)  # _IMPLICIT: a directory no member made
# The paths a tree may hold (members, the directories they imply, the spots links name): a
# restore of a million collections holds about two million files. Past this an archive is
# refused, so that a small hostile one (deep paths, dangling links) cannot cost the host
# gigabytes while the download streams.
MAX_NODES = 3_000_000
# And at most this many paths a member, with some slack: a restore's members lie a few
# directories deep, while a hostile archive's thousands of 2,000-component paths would cost
# a node each component.
NODES_PER_MEMBER, NODES_SLACK = 8, 65_536


class _Node:
    __slots__ = ("kids", "kind", "parent", "text", "to")

    def __init__(self, parent: _Node | None, kind: int) -> None:
        self.kids: dict[str, _Node] = {}
        self.kind = kind
        self.parent = parent
        self.to: _Node | None = None  # a symbolic link: the node its target lands on
        self.text = ""  # a symbolic link: its target as written


class Tree:
    """Members added in archive order; add() raises Damaged for one tar would put elsewhere."""

    def __init__(self, *, max_nodes: int = MAX_NODES) -> None:
        self._root = _Node(None, _IMPLICIT)
        self._nodes, self._max_nodes, self._members = 1, max_nodes, 0
        # The directory of the last member: most members are in the one before them. A
        # directory a member went through stays one (no later member can make it anything else).
        self._last_dir: list[str] = []
        self._last_node = self._root
        self._climbed_to_root = False  # a symbolic link resolved through the archive's root

    def add(self, name: str, kind: str, link: str = "") -> tuple[list[str], str, str]:
        """A member: kind is "file", "dir", "symlink" or "hardlink"; link its target.

        Return what tar makes of it: its path's components, its kind and its link (a hard
        link to a symbolic link is that symbolic link again).
        """
        self._members += 1
        parts = member_parts(name)
        if parts[:-1] == self._last_dir:
            parent = self._last_node
        else:
            parent = self._root
            for i in range(len(parts) - 1):
                parent = self._into(parent, parts, i, name)
            self._last_dir, self._last_node = parts[:-1], parent
        landing: _Node | None = None
        text = link
        if kind == "hardlink":
            target = self._hard_target(link, name)
            if target.kind == _LINK:  # a hard link to a symbolic link is that link again
                text = target.text
                kind = "symlink"
        if kind == "symlink":
            landing = self._resolve(parent, text, name)
        node = self._place(parent, parts, kind, name)
        if landing is not None:
            if landing is node:
                raise Damaged(f"{shown(name)} is a symbolic link to itself")
            node.kind, node.to, node.text = _LINK, landing, text
        return parts, kind, text

    def top_dir(self) -> str | None:
        """The one directory every member lies under, when stripping it (as
        `tar --strip-components 1`) changes where no link lands; else None."""
        if len(self._root.kids) != 1 or self._climbed_to_root:
            return None
        ((name, node),) = self._root.kids.items()
        return name if node.kind in (_DIR, _IMPLICIT) else None

    def _into(self, node: _Node, parts: list[str], i: int, name: str) -> _Node:
        """The directory parts[i] in `node`, on the way to member `name`."""
        part = parts[i]
        child = node.kids.get(part)
        if child is None:
            child = self._new(node, part, _IMPLICIT)
        elif child.kind == _LINK:
            where = "/".join(parts[: i + 1])
            raise Damaged(f"{shown(name)} is below the symbolic link {shown(where)}")
        elif child.kind == _FILE:
            raise Damaged(f"{shown(name)} is below a member that is a file")
        elif child.kind == _SPOT:
            child.kind = _IMPLICIT
        return child

    def _place(self, parent: _Node, parts: list[str], kind: str, name: str) -> _Node:
        if not parts:  # "./": the tree's root
            if kind != "dir" or self._root.kind == _DIR:
                raise Damaged(f"a member {shown(name)} at the root of the archive")
            self._root.kind = _DIR
            return self._root
        node = parent.kids.get(parts[-1])
        if node is None:
            node = self._new(parent, parts[-1], _SPOT)
        if node.kind == _IMPLICIT and kind == "dir":
            node.kind = _DIR
        elif node.kind == _IMPLICIT:
            raise Damaged(f"{shown(name)} is a directory of the members before it")
        elif node.kind != _SPOT:
            raise Damaged(f"the member path {shown(name)} is in the archive twice")
        else:
            node.kind = _DIR if kind == "dir" else _FILE
        return node

    def _hard_target(self, link: str, name: str) -> _Node:
        """What a hard link links to: a file or a symbolic link already extracted."""
        check_link_text(link, name)
        if link.endswith(("/", "/.")) or link == ".":  # tar: "Not a directory"
            raise Damaged(_not_before(name, link))
        if ".." in link.split("/"):  # GNU tar strips leading '../' from these: another path
            if climbs_out(link):
                raise Damaged(f"{shown(name)} links to {shown(link)}, outside the archive")
            raise Damaged(f"{shown(name)} is a hard link through '..': {shown(link)}")
        parts = member_parts(link)
        node = self._root
        for part in parts[:-1]:
            child = node.kids.get(part)
            if child is None:  # nothing of it is there: no file to link to
                raise Damaged(
                    f"{shown(name)} is a hard link to {shown(link)}, not a file before it"
                )
            if child.kind == _LINK:  # tar may not have made it yet: it delays some links
                raise Damaged(
                    f"{shown(name)} is a hard link through a symbolic link: {shown(link)}"
                )
            node = self._through(child, name)
        target = node.kids.get(parts[-1]) if parts else None
        if target is None or target.kind not in (_FILE, _LINK):
            raise Damaged(_not_before(name, link))
        return target

    def _resolve(self, start: _Node, text: str, name: str) -> _Node:
        """Where symbolic link `name` in directory `start` lands, through every link seen."""
        check_link_text(text, name)
        parts = [p for p in text.split("/") if p not in ("", ".")]
        node = start
        for i, part in enumerate(parts):
            if part == "..":
                if node.parent is None:
                    raise Damaged(f"{shown(name)} links to {shown(text)}, outside the archive")
                node = node.parent
                self._climbed_to_root |= node is self._root
                continue
            last = i == len(parts) - 1
            child = node.kids.get(part) or self._new(node, part, _SPOT if last else _IMPLICIT)
            child = _follow(child)
            if last:
                return child
            node = self._through(child, name)
        return node

    def _new(self, node: _Node, part: str, kind: int) -> _Node:
        self._nodes += 1
        budget = min(self._max_nodes, NODES_PER_MEMBER * self._members + NODES_SLACK)
        if self._nodes > budget:
            raise Damaged(
                f"the archive's {self._members} members name more than {budget} paths"
                " (directories, and the paths their links name, included)"
            )
        child = node.kids[part] = _Node(node, kind)
        return child

    @staticmethod
    def _through(node: _Node, name: str) -> _Node:
        """`node` (links followed) as a directory a path goes through."""
        if node.kind == _LINK:
            node = _follow(node)
        if node.kind == _FILE:
            raise Damaged(f"{shown(name)} goes through a member that is a file")
        if node.kind == _SPOT:
            node.kind = _IMPLICIT
        return node


def _not_before(name: str, link: str) -> str:
    return f"{shown(name)} is a hard link to {shown(link)}, not a file before it"


def _follow(node: _Node) -> _Node:
    """The end of a chain of symbolic links (the chain shortened for the next time)."""
    end = node
    while end.kind == _LINK and end.to is not None:
        end = end.to
    while node.kind == _LINK and node.to is not end and node.to is not None:
        node.to, node = end, node.to
    return end


def member_parts(name: str) -> list[str]:
    """A member path's components, checked: relative, inside, no '..', at most PATH_MAX."""
    if len(name.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise Damaged(f"a member path longer than {MAX_PATH} bytes: {shown(name)}")
    if name.startswith("/"):
        raise Damaged(f"a member has an absolute path: {shown(name)}")
    parts = name.split("/")
    if "" in parts or "." in parts:
        parts = [p for p in parts if p not in ("", ".")]
    if ".." in parts:
        if climbs_out(name):
            raise Damaged(f"a member path climbs out of the archive with '..': {shown(name)}")
        raise Damaged(f"a member path goes through '..': {shown(name)}")  # GNU tar refuses it
    return parts


def check_link_text(link: str, name: str) -> None:
    if not link:
        raise Damaged(f"{shown(name)} is a link with no target")
    if len(link.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise Damaged(f"{shown(name)} links to a path longer than {MAX_PATH} bytes")
    if link.startswith("/"):
        raise Damaged(f"{shown(name)} links to {shown(link)}, outside the archive")


def climbs_out(path: str) -> bool:
    depth = 0
    for part in path.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False
