"""The archives of one batch judged as one restore set: which replica sets, which restore point."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fetcher.redact import printable

# restoreInfo.txt keys, as MongoDB writes them; looked up case-insensitively.
REPLICA_SET = "Replica Set"
STARTUP_OPTIONS = "Startup Options"
# Keys that every archive of one restore point shares, strongest first.
RESTORE_POINT_KEYS = ("Restore timestamp", "Snapshot timestamp", "Last Oplog Applied")
CLUSTER_KEYS = ("Cluster Id", "Cluster Name")
API_TIMESTAMP = "API timestamp"

# JSON ("clusterRole": "configsvr"), YAML (clusterRole: configsvr), a flattened dotted key.
_CLUSTER_ROLE = re.compile(r"""\bclusterRole["']?\s*[:=]\s*["']?(\w+)""")
# Command-line shape: mongod spells the role as a flag of its own.
_ROLE_FLAG = re.compile(r"--(configsvr|shardsvr)\b")


@dataclass(frozen=True)
class Member:
    """One archive of a batch, with what its restoreInfo.txt and its job say."""

    archive: str
    replica_set: str | None
    restore_info: Mapping[str, str] | None
    timestamp: str | None = None


@dataclass(frozen=True)
class RestoreSet:
    """What the archives of a batch make together, and what keeps them from being restored."""

    replica_sets: tuple[str, ...]
    config_server: str | None
    problems: tuple[str, ...]
    restore_point: str | None

    def to_json(self) -> dict[str, Any]:
        """Return the restore set as a JSON object."""
        return {
            "replicaSets": list(self.replica_sets),
            "configServer": self.config_server,
            "restorePoint": self.restore_point,
            "problems": list(self.problems),
        }

    @classmethod
    def from_json(cls, obj: Any) -> RestoreSet:
        """Build a RestoreSet from `to_json`'s object; ValueError or TypeError on another shape."""
        if not isinstance(obj, dict):
            raise TypeError("a restore set is not a JSON object")
        missing = {"replicaSets", "configServer", "restorePoint", "problems"} - obj.keys()
        if missing:
            raise ValueError(f"a restore set lacks {', '.join(sorted(missing))}")
        replica_sets = _texts(obj["replicaSets"], "replicaSets")
        config_server = _optional_text(obj["configServer"], "configServer")
        if config_server is not None and config_server not in replica_sets:
            raise ValueError("configServer is not one of replicaSets")
        return cls(
            replica_sets=replica_sets,
            config_server=config_server,
            problems=_texts(obj["problems"], "problems"),
            restore_point=_optional_text(obj["restorePoint"], "restorePoint"),
        )

    def verdict(self, *, missing: int = 0) -> str:
        """Say in one line whether the set can be restored, given how many archives are missing."""
        if self.problems:
            return f"not ready to restore: {_count(len(self.problems), 'problem')}"
        if missing > 0:
            return f"not ready to restore: {_count(missing, 'archive')} missing"
        if not self.replica_sets:
            return "not ready to restore: no archives"
        if self.config_server is not None:
            shards = _count(len(self.replica_sets) - 1, "shard")
            what = f"{shards} + config server"
        else:
            what = f"replica set {printable(self.replica_sets[0])}"
        point = f", restore point {self.restore_point}" if self.restore_point else ""
        return f"ready to restore: {what}{point}"


def judge(members: Sequence[Member], *, sharded: bool, complete: bool = True) -> RestoreSet:
    """Judge the archives of one batch as one restore set.

    `complete` says every job of the batch has its archive here; while some are missing, a
    config server (or shard) not found among the rest may just be one of them.
    """
    # By archive name: the problems come out in the same order whatever order the jobs came in.
    members = sorted(members, key=lambda m: m.archive)
    problems: list[str] = []
    named = [(member, _replica_set(member)) for member in members]
    archives_of: dict[str, list[str]] = {}
    for member, name in named:
        if member.restore_info is None:
            problems.append(f"{printable(member.archive)} holds no restoreInfo.txt")
        elif name is None:
            problems.append(f"{printable(member.archive)}: restoreInfo.txt names no replica set")
        if name is not None:
            archives_of.setdefault(name, []).append(member.archive)
    for name, archives in sorted(archives_of.items()):
        if len(archives) > 1:
            problems.append(
                f"replica set {printable(name)} is in more than one archive: {_archives(archives)}"
            )
    for key in RESTORE_POINT_KEYS:
        problems.extend(_disagreement("different restore points", key, members, _info(key)))
    problems.extend(
        _disagreement("different restore points", API_TIMESTAMP, members, _api_timestamp)
    )
    for key in CLUSTER_KEYS:
        problems.extend(_disagreement("different clusters", key, members, _info(key)))

    names = sorted(archives_of)
    config_server = None
    if sharded and members:
        config_server = _shards_and_config(named, names, problems, complete=complete)
    elif len(names) > 1:
        # One archive restores one replica set: several would be restored as if they were one.
        problems.append(f"{len(names)} replica sets in a replica set restore: {_names(names)}")
    return RestoreSet(
        replica_sets=tuple(names),
        config_server=config_server,
        problems=tuple(problems),
        restore_point=_restore_point(members),
    )


def _shards_and_config(
    named: Sequence[tuple[Member, str | None]],
    names: list[str],
    problems: list[str],
    *,
    complete: bool,
) -> str | None:
    """Find a sharded restore's config server among `names` (moved to their end) and say
    what is wrong with the set: two of them, none, or no shard beside it."""
    members = len(named)
    candidates = _config_candidates(named)
    if len(candidates) > 1:
        problems.append(f"more than one config server: {_names(candidates)}")
    if not candidates:
        if complete:
            listed = f" ({_names(names)})" if names else ""
            problems.append(f"no config server archive among {_count(members, 'archive')}{listed}")
        return None
    config_server = candidates[0]
    names.remove(config_server)
    if not names and complete:
        problems.append(
            f"no shard archive among {_count(members, 'archive')} ({printable(config_server)})"
        )
    names.append(config_server)
    return config_server


Reader = Callable[[Member], tuple[str, str] | None]


def _info(key: str) -> Reader:
    """Return a reader of `key` from a member's restoreInfo.txt: (key as written, value)."""

    def read(member: Member) -> tuple[str, str] | None:
        if member.restore_info is None:
            return None
        wanted = key.casefold()
        for written, value in member.restore_info.items():
            if written.strip().casefold() == wanted:
                # Spacing is layout, not meaning; and an empty value says nothing.
                value = " ".join(value.split())
                return (written.strip(), value) if value else None
        return None

    return read


def _api_timestamp(member: Member) -> tuple[str, str] | None:
    """Return the job's snapshot time, normalised so that one instant has one spelling."""
    if not member.timestamp:
        return None
    value = member.timestamp.strip()
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return (API_TIMESTAMP, value)
    if when.tzinfo is None:
        return (API_TIMESTAMP, value)  # no zone: not comparable with an instant, keep as given
    return (API_TIMESTAMP, when.astimezone(UTC).isoformat().replace("+00:00", "Z"))


def _disagreement(what: str, key: str, members: Sequence[Member], read: Reader) -> list[str]:
    """Return the problem line when the members that have `key` do not share its value."""
    label = key
    by_value: dict[str, list[str]] = {}
    for member in members:
        found = read(member)
        if found is None:
            continue
        if not by_value:
            label = found[0]  # the key as the first archive writes it
        by_value.setdefault(found[1], []).append(member.archive)
    if len(by_value) < 2:
        return []
    # The value most archives share first: the odd ones out read last.
    groups = sorted(by_value.items(), key=lambda item: (-len(item[1]), item[0]))
    said = " and ".join(
        f"{printable(value)} in {_archives(archives)}" for value, archives in groups
    )
    return [f"{what}: {printable(label)} is {said}"]


def _restore_point(members: Sequence[Member]) -> str | None:
    """Return the API time all members share, else the restore or snapshot time they agree on."""
    times = {found[1] if (found := _api_timestamp(m)) else None for m in members}
    if len(times) == 1 and None not in times:
        return times.pop()
    for key in RESTORE_POINT_KEYS[:2]:
        read = _info(key)
        values = {found[1] for m in members if (found := read(m))}
        if len(values) == 1:
            return values.pop()
    return None


def _config_candidates(named: Sequence[tuple[Member, str | None]]) -> list[str]:
    """Return the replica sets that look like the config server, by the strongest evidence."""
    by_role: set[str] = set()
    by_name: set[str] = set()
    for member, name in named:
        if name is None:
            continue
        role = _cluster_role(member.restore_info)
        if role == "configsvr":
            by_role.add(name)
        elif role is None and "config" in name.casefold():
            # The name is only a hint: a shard whose options say shardsvr is a shard.
            by_name.add(name)
    return sorted(by_role or by_name)


def _cluster_role(info: Mapping[str, str] | None) -> str | None:
    """Return the clusterRole the startup options give, or None if they give none."""
    if info is None:
        return None
    wanted = STARTUP_OPTIONS.casefold()
    for key, value in info.items():
        if not key.strip().casefold().startswith(wanted):
            continue
        match = _CLUSTER_ROLE.search(value) or _ROLE_FLAG.search(value)
        if match:
            return match.group(1)
    return None


def _replica_set(member: Member) -> str | None:
    """Return the member's replica set name, from the caller or else from restoreInfo.txt."""
    name = member.replica_set.strip() if member.replica_set else None
    if not name:
        found = _info(REPLICA_SET)(member)
        name = found[1] if found else None
    return name or None


# Names and values come from inside the archives: printable() keeps each problem one clean line.
def _archives(archives: Sequence[str]) -> str:
    return ", ".join(printable(a) for a in sorted(archives))


def _names(names: Sequence[str]) -> str:
    return ", ".join(printable(n) for n in names)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _texts(value: Any, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{field} is not a list of strings")
    return tuple(value)


def _optional_text(value: Any, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{field} is neither a string nor null")
    return value
