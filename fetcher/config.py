"""Frozen settings built from command-line options and the environment."""

from __future__ import annotations

import netrc
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from fetcher.errors import ConfigError
from fetcher.redact import bare_url

DEFAULT_BASE_URL = "https://cloud.mongodb.com/api/atlas/v1.0"

# The Atlas CLI's variable names first, then mongocli's: users already have one pair set.
CREDENTIAL_ENV_PAIRS = (
    ("MONGODB_ATLAS_PUBLIC_API_KEY", "MONGODB_ATLAS_PRIVATE_API_KEY"),
    ("MCLI_PUBLIC_API_KEY", "MCLI_PRIVATE_API_KEY"),
)
# A service account, as the Atlas CLI reads it; it wins over every API key pair.
SERVICE_ACCOUNT_ENV_PAIR = ("MONGODB_ATLAS_CLIENT_ID", "MONGODB_ATLAS_CLIENT_SECRET")
DEFAULT_PROFILE = "default"
# The keys of an Atlas CLI profile that fetcher reads; every one must be a string.
_PROFILE_KEYS = ("public_api_key", "private_api_key", "client_id", "client_secret", "project_id")


@dataclass(frozen=True)
class Credentials:
    """An API key pair for HTTP Digest auth; the private key never shows in a repr."""

    public_key: str
    private_key: str = field(repr=False)
    source: str = "environment"

    def __post_init__(self) -> None:
        check_credential("the public API key", self.public_key, self.source)
        check_credential("the private API key", self.private_key, self.source)


@dataclass(frozen=True)
class ServiceAccount:
    """An Atlas service account (OAuth 2.0 client credentials); the secret never shows in a repr."""

    client_id: str
    client_secret: str = field(repr=False)
    source: str = "environment"

    def __post_init__(self) -> None:
        check_credential("the client id", self.client_id, self.source)
        check_credential("the client secret", self.client_secret, self.source)


Auth = Credentials | ServiceAccount


@dataclass(frozen=True)
class Profile:
    """One profile of the Atlas CLI's config.toml: its credentials and its default project."""

    name: str
    auth: Auth | None  # None when the profile holds no credentials
    project_id: str | None  # the default --group
    source: str  # the path of config.toml and the profile name, for messages


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
    """Validate an API root and drop its trailing slash.

    No message quotes the user info of what was given: a password there stays off the screen.
    """
    if has_control(url) or any(c.isspace() for c in url):
        raise ConfigError(f"--base-url {bare_url(url)!r} holds a control character or a space")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ConfigError(
            f"--base-url {bare_url(url)!r} must not contain user info (a user or password):"
            " credentials come from the environment, a profile or ~/.netrc"
        )
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigError(f"--base-url {bare_url(url)!r} has a bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--base-url must be an http(s) URL, got {bare_url(url)!r}")
    return url.rstrip("/")


def has_control(value: str) -> bool:
    """Whether a value holds what no HTTP header may: a control character (CR, LF, NUL, a tab,
    DEL or a C1 code), all of which h11 refuses or splits on."""
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value)


def check_credential(name: str, value: str, source: str) -> str:
    """Refuse a credential that would break the request it goes into, before any request.

    A key read with `$(cat key)` from a file with CRLF endings ends in CR: h11 would refuse
    the header and quote it whole (with its Digest response) in its error. The message names
    the variable and where it came from, never the value.
    """
    if has_control(value) or value != value.strip():
        raise ConfigError(
            f"{name} from {source} holds a control character or white space at an end (a CR"
            " from a file with Windows line endings, say); remove it"
        )
    if not value.isascii():
        # Digest and Basic carry credentials as bytes the server decodes as ASCII: a key
        # pasted with a typographic quote or dash would fail later, less clearly.
        raise ConfigError(f"{name} from {source} holds a character that is not ASCII; remove it")
    return value


def load_credentials(
    env: Mapping[str, str],
    base_url: str,
    *,
    profile: str | None = None,
    netrc_path: Path | None = None,
) -> Auth:
    """Find credentials for the API; the first of these sources that has some wins.

    1. The Atlas CLI profile named by ``profile`` (--profile), which must exist and hold
       credentials: a flag on the command line beats what the environment says.
    2. MONGODB_ATLAS_CLIENT_ID and MONGODB_ATLAS_CLIENT_SECRET: a service account.
    3. MONGODB_ATLAS_PUBLIC_API_KEY/MONGODB_ATLAS_PRIVATE_API_KEY, then
       MCLI_PUBLIC_API_KEY/MCLI_PRIVATE_API_KEY: an API key pair.
    4. The ~/.netrc entry ($NETRC, or ``netrc_path``) for the host of ``base_url``.
    5. The Atlas CLI's ``default`` profile, if there is one and it holds credentials.

    A variable set to the empty string is not set; one variable of a pair without the other
    is a ConfigError.
    """
    if profile is not None:
        named = load_profile(env, profile, required=True)
        if named is None or named.auth is None:  # required=True: None cannot happen
            raise ConfigError(
                f"profile {profile} in {atlas_cli_config(env)} has no credentials (it needs"
                " client_id and client_secret, or public_api_key and private_api_key)"
            )
        return named.auth
    found = _from_env(env)
    if found is not None:
        return found
    host = urlsplit(base_url).hostname or ""
    from_netrc = _from_netrc(host, netrc_path or _default_netrc(env))
    if from_netrc is not None:
        return from_netrc
    default = load_profile(env, DEFAULT_PROFILE, required=False)
    if default is not None and default.auth is not None:
        return default.auth
    raise ConfigError(
        "no API credentials: set MONGODB_ATLAS_CLIENT_ID and MONGODB_ATLAS_CLIENT_SECRET"
        " (a service account) or MONGODB_ATLAS_PUBLIC_API_KEY and MONGODB_ATLAS_PRIVATE_API_KEY"
        " (or MCLI_PUBLIC_API_KEY/MCLI_PRIVATE_API_KEY), name a profile of"
        f" {atlas_cli_config(env)} with --profile, or add a ~/.netrc entry for {host}"
    )


def default_group(env: Mapping[str, str], profile: str | None) -> str | None:
    """The project_id of profile ``profile`` (which must exist), else of ``default``, if any.

    The ``default`` profile stands in only when the environment holds no credentials: a
    project of one account must not go with the keys of another. Reads config.toml only (no
    network). None when no profile applies or it has no project_id.
    """
    if profile is not None:
        found = load_profile(env, profile, required=True)
    elif _from_env(env) is not None:
        return None
    else:
        found = load_profile(env, DEFAULT_PROFILE, required=False)
    return found.project_id if found is not None else None


def atlas_cli_config(env: Mapping[str, str], *, platform: str = sys.platform) -> Path:
    """The Atlas CLI's config.toml, where the Atlas CLI keeps it (Go's os.UserConfigDir).

    On Linux and other Unixes: $XDG_CONFIG_HOME/atlascli/config.toml, else
    ~/.config/atlascli/config.toml (an empty or relative $XDG_CONFIG_HOME is ignored, as the
    XDG Base Directory specification asks). On macOS: ~/Library/Application Support/atlascli/.
    HOME comes from ``env``, else Path.home().
    """
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    xdg = env.get("XDG_CONFIG_HOME", "")
    if platform == "darwin":
        base = home / "Library" / "Application Support"
    elif xdg and Path(xdg).is_absolute():
        base = Path(xdg)
    else:
        base = home / ".config"
    return base / "atlascli" / "config.toml"


def load_profile(env: Mapping[str, str], name: str, *, required: bool) -> Profile | None:
    """Read profile ``name`` from the Atlas CLI's config.toml (see atlas_cli_config).

    A missing file or a missing profile is None when not ``required``, and a ConfigError that
    names the file and the profile when it is. A file that cannot be read or parsed, a profile
    that is not a table, a non-string value for a key fetcher reads, or half a pair is always a
    ConfigError; its message never quotes the file's contents, which may be secrets.

    client_id and client_secret make a ServiceAccount, which wins over public_api_key and
    private_api_key (Credentials); project_id is the profile's default group. An empty string
    is the same as a missing key.
    """
    path = atlas_cli_config(env)
    where = f"{path} [{name}]"
    table = _read_toml(path, name, required=required)
    if table is None:
        return None
    if name not in table:
        if required:
            raise ConfigError(f"no profile {name} in {path}")
        return None
    section = table[name]
    if not isinstance(section, dict):
        raise ConfigError(f"profile {name} in {path} is not a table")
    values: dict[str, str] = {}
    for key in _PROFILE_KEYS:
        value = section.get(key, "")
        if not isinstance(value, str):
            raise ConfigError(f"{key} in profile {name} of {path} is not a string")
        if value:
            values[key] = value
    account = _profile_pair(values, "client_id", "client_secret", name, path)
    keys = _profile_pair(values, "public_api_key", "private_api_key", name, path)
    auth: Auth | None = None
    if account is not None:
        auth = ServiceAccount(*account, source=where)
    elif keys is not None:
        auth = Credentials(*keys, source=where)
    return Profile(name=name, auth=auth, project_id=values.get("project_id"), source=where)


def _read_toml(path: Path, name: str, *, required: bool) -> dict[str, object] | None:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):  # no such file, or ~/.config is a file
        if required:
            raise ConfigError(f"no profile {name}: {path} does not exist") from None
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {path}: it is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # The message may quote a character or a key of the file: keep only where it is.
        at = _TOML_WHERE.search(str(exc))
        suffix = f" ({at.group(1)})" if at else ""
        raise ConfigError(f"cannot parse {path} as TOML{suffix}") from None


_TOML_WHERE = re.compile(r"\((at (?:line \d+, column \d+|end of document))\)$")


def _profile_pair(
    values: Mapping[str, str], first: str, second: str, name: str, path: Path
) -> tuple[str, str] | None:
    a, b = values.get(first), values.get(second)
    if a and b:
        return a, b
    if a or b:
        missing = second if a else first
        raise ConfigError(f"profile {name} in {path} has no {missing} (its pair is set)")
    return None


def _from_env(env: Mapping[str, str]) -> Auth | None:
    client_var, secret_var = SERVICE_ACCOUNT_ENV_PAIR
    pair = _env_pair(env, client_var, secret_var)
    if pair is not None:
        return ServiceAccount(*pair, source=f"{client_var}/{secret_var}")
    for public_var, private_var in CREDENTIAL_ENV_PAIRS:
        pair = _env_pair(env, public_var, private_var)
        if pair is not None:
            return Credentials(*pair, source=f"{public_var}/{private_var}")
    return None


def _env_pair(env: Mapping[str, str], first: str, second: str) -> tuple[str, str] | None:
    a, b = env.get(first, ""), env.get(second, "")
    if a and b:
        return a, b
    if a or b:
        missing = second if a else first
        raise ConfigError(f"{missing} is not set (its pair is); set both or neither")
    return None


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
