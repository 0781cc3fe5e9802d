"""Frozen settings built from command-line options and the environment."""

from __future__ import annotations

import netrc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from fetcher.errors import ConfigError

DEFAULT_BASE_URL = "https://cloud.mongodb.com/api/atlas/v1.0"

# The Atlas CLI's variable names first, then mongocli's: users already have one pair set.
CREDENTIAL_ENV_PAIRS = (
    ("MONGODB_ATLAS_PUBLIC_API_KEY", "MONGODB_ATLAS_PRIVATE_API_KEY"),
    ("MCLI_PUBLIC_API_KEY", "MCLI_PRIVATE_API_KEY"),
)


@dataclass(frozen=True)
class Credentials:
    """An API key pair for HTTP Digest auth; the private key never shows in a repr."""

    public_key: str
    private_key: str = field(repr=False)
    source: str = "environment"


@dataclass(frozen=True)
class Settings:
    """Everything a fetch needs to know that does not come from the API."""

    base_url: str = DEFAULT_BASE_URL
    timeout: float = 60.0
    connect_timeout: float = 15.0
    retries: int = 5
    parallel: int = 4
    ca_cert: Path | None = None
    verbose: bool = False  # log every request and answer on stderr, secrets left out


def normalise_base_url(url: str) -> str:
    """Validate an API root and drop its trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--base-url must be an http(s) URL, got {url!r}")
    if parts.username or parts.password:
        raise ConfigError("--base-url must not contain credentials; use the environment")
    return url.rstrip("/")


def load_credentials(
    env: Mapping[str, str], base_url: str, *, netrc_path: Path | None = None
) -> Credentials:
    """Find an API key pair: Atlas CLI variables, then mongocli's, then ~/.netrc for the host."""
    for public_var, private_var in CREDENTIAL_ENV_PAIRS:
        public, private = env.get(public_var, ""), env.get(private_var, "")
        if public and private:
            return Credentials(public, private, source=f"{public_var}/{private_var}")
        if public or private:
            missing = private_var if public else public_var
            raise ConfigError(f"{missing} is not set (its pair is); set both or neither")
    host = urlsplit(base_url).hostname or ""
    found = _from_netrc(host, netrc_path or _default_netrc(env))
    if found is not None:
        return found
    raise ConfigError(
        "no API credentials: set MONGODB_ATLAS_PUBLIC_API_KEY and MONGODB_ATLAS_PRIVATE_API_KEY"
        f" (or MCLI_PUBLIC_API_KEY/MCLI_PRIVATE_API_KEY, or a ~/.netrc entry for {host})"
    )


def _default_netrc(env: Mapping[str, str]) -> Path:
    if env.get("NETRC"):
        return Path(env["NETRC"])
    return (Path(env["HOME"]) if env.get("HOME") else Path.home()) / ".netrc"


def _from_netrc(host: str, path: Path) -> Credentials | None:
    if not host or not path.is_file():
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError) as exc:
        # The parse error quotes the offending line, which may hold a password.
        lineno = getattr(exc, "lineno", None)
        where = f" (line {lineno})" if lineno else ""
        raise ConfigError(f"cannot read {path}{where}") from None
    if entry is None:
        return None
    login, _account, password = entry
    if not login or not password:
        return None
    return Credentials(login, password, source=str(path))
