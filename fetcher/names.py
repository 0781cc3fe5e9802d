"""Decide which server-given file names are safe to create inside the destination."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

from fetcher.errors import UnsafeNameError

MANIFEST_NAME = "manifest.json"
MAX_NAME_BYTES = 200  # leaves room for the ".part" and ".state" suffixes under NAME_MAX (255)
MAX_DECODINGS = 4
# Cc control, Cf format (bidi overrides, zero-width), Cs lone surrogates (JSON can carry
# them, and no file system can name them), Zl/Zp line and paragraph separators.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_DRIVE = re.compile(r"^[A-Za-z]:")


def check_name(name: str) -> str:
    """Return name if it is a plain file name that stays inside a directory, else raise."""
    reason = _unsafe_reason(name)
    decoded = name
    for _ in range(MAX_DECODINGS):
        if reason is not None:
            break
        # A percent-encoded separator or dot-dot is an escape waiting for a decoder; some
        # decode twice (a proxy, then a tool), so decode until nothing changes.
        decoded, previous = unquote(decoded), decoded
        if decoded == previous:
            break
        reason = _unsafe_reason(decoded)
    else:
        reason = "percent-encoded too many times"
    if reason is not None:
        raise UnsafeNameError(f"unsafe file name {_shown(name)}: {reason}")
    return name


def _shown(name: str) -> str:
    # repr() escapes control characters; the cut keeps an absurd name to one short line.
    return repr(name) if len(name) <= 80 else f"{name[:60]!r}… ({len(name)} characters)"


def _unsafe_reason(name: str) -> str | None:
    if not name:
        return "empty"
    if any(unicodedata.category(c) in _BAD_CATEGORIES for c in name):
        return "control or invisible character"
    if "/" in name or "\\" in name:
        return "path separator"
    if name in (".", ".."):
        return "dot-dot"
    if name.startswith("."):
        return "hidden name"
    if _DRIVE.match(name):
        return "drive path"
    if name.strip() != name:
        return "leading or trailing space"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    if name.casefold() == MANIFEST_NAME:  # case-insensitive file systems (macOS) too
        return "would overwrite the manifest"
    return None


def choose_name(candidates: list[str]) -> str:
    """Return the first safe candidate; raise naming every rejected one when none is safe."""
    reasons = []
    for candidate in candidates:
        try:
            return check_name(candidate)
        except UnsafeNameError as exc:
            reasons.append(exc.message)
    if not reasons:
        raise UnsafeNameError("no file name in the job (no hashes[].fileName, no URL file)")
    raise UnsafeNameError("; ".join(reasons))


def partial_name(name: str) -> str:
    """Name of the file that holds an archive's bytes until its SHA1 matches."""
    return f".{name}.part"


def state_name(name: str) -> str:
    """Name of the small file that records what a partial file belongs to."""
    return f".{name}.part.json"
