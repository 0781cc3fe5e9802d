"""HTTP Digest as MongoDB's APIs speak it (RFC 2617: MD5, qop=auth, realm MMS Public API)."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Final

REALM: Final = "MMS Public API"
DIGEST_RE: Final = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]*))')


def md5(text: str) -> str:
    """Hex MD5, the only hash RFC 2617 Digest with algorithm=MD5 knows."""
    return hashlib.md5(text.encode()).hexdigest()


def parse_digest(header: str) -> dict[str, str] | None:
    """The fields of an `Authorization: Digest ...` header (names lower-case); None for any
    other scheme."""
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "digest":
        return None
    return {m[1].lower(): m[2] or m[3] for m in DIGEST_RE.finditer(rest)}


def digest_matches(fields: dict[str, str], *, user: str, password: str, method: str) -> bool:
    """Whether `fields` carry the response `user` with `password` would compute for a request
    of `method` to fields' uri, at fields' nonce."""
    ha1 = md5(f"{user}:{REALM}:{password}")
    ha2 = md5(f"{method}:{fields.get('uri', '')}")
    parts = [fields.get(k, "") for k in ("nonce", "nc", "cnonce", "qop")]
    expected = md5(":".join([ha1, *parts, ha2]))
    return fields.get("username") == user and hmac.compare_digest(
        expected, fields.get("response", "")
    )


def challenge(nonce: str, *, stale: bool = False) -> str:
    """A WWW-Authenticate header like MongoDB's."""
    return (
        f'Digest realm="{REALM}", domain="", nonce="{nonce}", algorithm=MD5, '
        f'qop="auth", stale={"true" if stale else "false"}'
    )
