"""The mongod configuration file a restored archive is started with, written from restoreInfo.txt.

An archive's data files only open in a mongod started the way the snapshot's host ran: its
restoreInfo.txt carries those startup options as JSON, with the MongoDB version and the storage
engine beside them. This turns them into a YAML config file for the restore host: the dbPath
where the archive was unpacked, the replica set kept (restoreInfo.txt is authoritative), and
every option that names a file of the source host kept but marked for review, since the file
is unlikely to be at that path here. A header says which mongod to start, from which restore
point, and which master key an encrypted snapshot needs.

YAML is written by a small emitter of its own, not a new dependency: block mappings and lists,
every string double-quoted (json.dumps), so YAML 1.1 readers do not turn "on", "yes" or "0755"
into booleans and numbers. Pure: values in, text out; nothing here raises on a bad restoreInfo.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fetcher.checks.archive import info_value

__all__ = ["REVIEW", "is_host_file", "mongod_config", "to_yaml"]

REVIEW = "review: a file of the host the snapshot came from"
MISSING = "not in restoreInfo.txt"
_STARTUP_KEYS = ("Startup Options", "startupOptions", "Startup Option")
_VERSION_KEYS = ("MongoDB Version", "mongodbVersion", "Version")
_ENGINE_KEYS = ("Storage engine type", "Storage engine", "storageEngine")
_MASTER_KEY_KEYS = ("Master Key UUID", "masterKeyUUID", "Master Key")
_ENCRYPTION_KEYS = ("Encryption", "Encrypted")
_RESTORE_POINT_KEYS = (
    ("Restore timestamp", None),
    ("Last Oplog Applied", "last oplog applied"),
    ("Snapshot timestamp", "snapshot timestamp"),
)
# mongod options that name a file of the host that ran them (what is under net.tls, net.ssl and
# security.kmip and ends in "File" is one too).
_HOST_FILES = frozenset(
    {
        "systemLog.path",
        "processManagement.pidFilePath",
        "security.keyFile",
        "security.encryptionKeyFile",
        "security.kmip.serverCAFile",
        "security.kmip.clientCertificateFile",
        "auditLog.path",
        "net.tls.certificateKeyFile",
        "net.tls.CAFile",
        "net.tls.CRLFile",
        "net.tls.clusterFile",
        "net.tls.PEMKeyFile",
        "net.ssl.PEMKeyFile",
        "net.ssl.CAFile",
        "net.ssl.CRLFile",
        "net.ssl.clusterFile",
    }
)
_FILE_SECTIONS = ("net.tls.", "net.ssl.", "security.kmip.")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
# Plain words YAML 1.1 reads as booleans or null: quoted even as keys.
_YAML11_WORDS = frozenset(["y", "n", "yes", "no", "on", "off", "true", "false", "null"])
# What a YAML reader would refuse or read as a line break inside a quoted scalar; json.dumps
# with ensure_ascii=False leaves these as they are.
_UNPRINTABLE = re.compile(
    "[^\t\n\r\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)


def mongod_config(restore_info: dict[str, str] | None, *, db_path: str, replica_set: str) -> str:
    """The text of a YAML mongod config file that starts the archive's data at `db_path`."""
    options, problem = _startup_options(restore_info)
    comments: dict[str, str] = {}

    storage = options.get("storage")
    if not isinstance(storage, dict):
        storage = options["storage"] = {}
    old_path = storage.get("dbPath")
    storage["dbPath"] = db_path
    if old_path is not None and old_path != db_path:
        comments["storage.dbPath"] = f"the snapshot's host had {_quote(old_path)}"

    replication = options.get("replication")
    if not isinstance(replication, dict):
        replication = options["replication"] = {}
    archive_set = replication.get("replSetName")
    if isinstance(archive_set, str) and archive_set:
        effective = archive_set
        if archive_set != replica_set:
            comments["replication.replSetName"] = (
                f"restoreInfo.txt's replica set (authoritative); fetcher was given"
                f" {_quote(replica_set)}"
            )
    else:
        effective = replica_set
        replication["replSetName"] = replica_set

    header = _header(restore_info, options, effective, replica_set, problem)
    body = to_yaml(options, comments=comments, review=is_host_file)
    return "\n".join(header) + "\n\n" + body


def is_host_file(path: str) -> bool:
    """True when the option at dotted `path` names a file of the snapshot's host."""
    if path in _HOST_FILES:
        return True
    section, _, leaf = path.rpartition(".")
    return f"{section}." in _FILE_SECTIONS and leaf.endswith("File")


def to_yaml(
    document: Mapping[str, object],
    *,
    comments: Mapping[str, str] | None = None,
    review: Callable[[str], bool] | None = None,
) -> str:
    """A mapping as block YAML, with trailing comments on the options at the given paths.

    `comments` maps a dotted path to its comment; `review` marks the options whose dotted path
    it is true for with REVIEW. Paths stop at lists: what is inside one gets no comment.
    """
    lines: list[str] = []
    _mapping(document, "", 0, lines, comments or {}, review)
    return "".join(f"{line}\n" for line in lines)


def _startup_options(info: dict[str, str] | None) -> tuple[dict[str, object], str | None]:
    """The Startup Options document, or an empty one and why it could not be read."""
    text = info_value(info, *_STARTUP_KEYS)
    if text is None:
        return {}, "restoreInfo.txt has none"
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return {}, "not JSON"
    if not isinstance(document, dict):
        return {}, "not a JSON object"
    return document, None


def _header(
    info: dict[str, str] | None,
    options: Mapping[str, object],
    effective_set: str,
    given_set: str,
    problem: str | None,
) -> list[str]:
    """The comment lines that open the file: what it is, which mongod, and how to start it."""
    storage = options.get("storage")
    engine = info_value(info, *_ENGINE_KEYS)
    if engine is None and isinstance(storage, dict) and isinstance(storage.get("engine"), str):
        engine = storage["engine"]
    version = info_value(info, *_VERSION_KEYS)
    if info is None:
        lines = ["mongod configuration written by fetcher: the archive has no restoreInfo.txt"]
    else:
        lines = ["mongod configuration generated by fetcher from the archive's restoreInfo.txt"]
    lines += [
        f"MongoDB version: {version} (start this version of mongod)"
        if version
        else f"MongoDB version: {MISSING}",
        f"storage engine: {engine or MISSING}",
        f"restore point: {_restore_point(info)}",
        f"replica set: {effective_set}"
        + (
            ""
            if effective_set == given_set
            else f" (restoreInfo.txt's; fetcher was given {given_set})"
        ),
    ]
    sharding = options.get("sharding")
    role = sharding.get("clusterRole") if isinstance(sharding, dict) else None
    if isinstance(role, str) and role:
        lines.append(
            f"cluster role: {role} (one replica set of a sharded cluster: follow MongoDB's"
            " procedure for restoring a sharded cluster)"
        )
    encryption = info_value(info, *_ENCRYPTION_KEYS)
    if encryption is not None:
        lines.append(f"encryption: {encryption}")
    master_key = info_value(info, *_MASTER_KEY_KEYS)
    if master_key is not None:
        lines.append(
            f"master key UUID: {master_key} (the snapshot is encrypted: mongod needs this key)"
        )
    if problem is not None:
        lines.append(
            f"the startup options could not be read ({problem}): only storage.dbPath and"
            " replication.replSetName are set; add the other options the snapshot's host ran with"
        )
    lines.append("start it with: mongod --config THIS-FILE")
    # Wrapped so a long value or note stays readable; continuation lines are indented.
    return [
        f"# {part}"
        for line in lines
        for part in textwrap.wrap(_comment_text(line), 96, subsequent_indent="  ")
    ]


def _restore_point(info: dict[str, str] | None) -> str:
    """The restore timestamp, else the last oplog applied, else the snapshot's time."""
    for key, said in _RESTORE_POINT_KEYS:
        value = info_value(info, key)
        if value is not None:
            return value if said is None else f"{value} ({said})"
    return MISSING


def _mapping(
    mapping: Mapping[Any, object],
    path: str | None,
    indent: int,
    lines: list[str],
    comments: Mapping[str, str],
    review: Callable[[str], bool] | None,
) -> None:
    """Append a non-empty mapping's block lines at `indent`."""
    pad = " " * indent
    for raw_key, value in mapping.items():
        key = str(raw_key)
        here = f"{path}{key}" if path is not None else None
        notes: list[str] = []
        if here is not None:
            if here in comments:
                notes.append(comments[here])
            if review is not None and review(here):
                notes.append(REVIEW)
        trailer = f"  # {_comment_text('; '.join(notes))}" if notes else ""
        head = f"{pad}{_key(key)}:"
        if isinstance(value, Mapping) and value:
            lines.append(head + trailer)
            child = f"{here}." if here is not None else None
            _mapping(value, child, indent + 2, lines, comments, review)
        elif isinstance(value, list | tuple) and value:
            lines.append(head + trailer)
            _sequence(value, indent + 2, lines)
        else:
            lines.append(f"{head} {_scalar(value)}{trailer}")


def _sequence(items: Sequence[object], indent: int, lines: list[str]) -> None:
    """Append a non-empty list's "- " items at `indent`; a nested block starts on the dash."""
    pad = " " * indent
    for item in items:
        if isinstance(item, Mapping | list | tuple) and item:
            start = len(lines)
            if isinstance(item, Mapping):
                _mapping(item, None, indent + 2, lines, {}, None)
            else:
                _sequence(item, indent + 2, lines)
            lines[start] = f"{pad}- {lines[start][indent + 2 :]}"
        else:
            lines.append(f"{pad}- {_scalar(item)}")


def _scalar(value: object) -> str:
    """A scalar in a form YAML 1.1 and 1.2 readers both take as the JSON value it was."""
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list | tuple):
        return "[]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        # YAML 1.1 reads 1e+100 as a string: its floats have a dot.
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    return _quote(str(value))


def _quote(text: object) -> str:
    """A double-quoted YAML string: JSON's quoting, with what YAML refuses escaped too."""
    quoted = json.dumps(text if isinstance(text, str) else str(text), ensure_ascii=False)
    return _UNPRINTABLE.sub(_escape, quoted)


def _escape(match: re.Match[str]) -> str:
    """A character as a \\u escape (\\U for one beyond the BMP)."""
    code = ord(match[0])
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _key(key: str) -> str:
    """A mapping key: plain when it can only read as the string it is, else quoted."""
    if _PLAIN_KEY.fullmatch(key) and key.casefold() not in _YAML11_WORDS:
        return key
    return _quote(key)


def _comment_text(text: str) -> str:
    """Text made safe for a comment: one line, nothing a YAML reader refuses."""
    return _UNPRINTABLE.sub("?", " ".join(text.split()))
