"""What a pull host's answers to ranged requests say: Content-Range, 416's length, If-Range."""

from __future__ import annotations

import re

# ASCII digits, at most 19 (< 2**63): "\d" would take any script's digits, and int() of
# thousands of digits raises ValueError rather than parsing.
_CONTENT_RANGE = re.compile(
    r"^\s*bytes\s+([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)\s*$", re.IGNORECASE
)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/([0-9]{1,19})\s*$", re.IGNORECASE)


def if_range(etag: str | None, last_modified: str | None) -> str | None:
    """The validator for If-Range: a strong ETag, else Last-Modified (weak ones are refused)."""
    if etag and not etag.startswith("W/"):
        return etag
    return last_modified


def content_range(value: str | None) -> tuple[int | None, int | None]:
    """Parse 'bytes START-END/TOTAL'; (None, None) when absent or malformed."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None
    start, end, total = int(match[1]), int(match[2]), match[3]
    if total == "*" or end < start or end >= int(total):
        return None, None
    return start, int(total)


def range_size(value: str | None) -> int | None:
    """The number of bytes 'bytes START-END/TOTAL' says the body holds; None when malformed.

    A body longer than this is cut here: what lies past the range's end is not the file's.
    """
    start, _ = content_range(value)
    match = _CONTENT_RANGE.match(value or "")
    return int(match[2]) - start + 1 if start is not None and match else None


def unsatisfied_range(value: str | None) -> int | None:
    """Parse a 416's 'bytes */TOTAL' into TOTAL."""
    match = _UNSATISFIED_RANGE.match(value or "")
    return int(match[1]) if match else None
