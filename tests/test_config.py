"""fetcher.config: credentials from the environment, --profile, ~/.netrc and Atlas CLI config.

Every test writes real files under tmp_path and passes its environment explicitly: HOME and
NETRC always point into tmp_path, so nothing of the user running the suite can leak in.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fetcher.config import (
    Credentials,
    Profile,
    ServiceAccount,
    atlas_cli_config,
    default_group,
    load_credentials,
    load_profile,
    normalise_base_url,
)
from fetcher.errors import ConfigError
from tests.support import write_netrc

BASE = "https://cloud.example/api/atlas/v2"

DEFAULT_PRIVATE = "12345678-abcd-ef01-2345-6789abcdef01"
SVC_SECRET = "mdb_sa_sk_abcdef"
CONFIG = f"""\
telemetry_enabled = false

[default]
  org_id = "5e2211c17a3e5a48f5497de3"
  private_api_key = "{DEFAULT_PRIVATE}"
  public_api_key = "abcdefgh"
  project_id = "5e2211c17a3e5a48f5497de4"
  service = "cloud"

[svc]
  client_id = "mdb_sa_id_1234"
  client_secret = "{SVC_SECRET}"
  project_id = "5e2211c17a3e5a48f5497de5"

[nocreds]
  org_id = "5e2211c17a3e5a48f5497de3"
  project_id = "5e2211c17a3e5a48f5497de6"
"""

CLIENT_ENV = {"MONGODB_ATLAS_CLIENT_ID": "env-client", "MONGODB_ATLAS_CLIENT_SECRET": "env-cs"}
KEY_ENV = {"MONGODB_ATLAS_PUBLIC_API_KEY": "env-pub", "MONGODB_ATLAS_PRIVATE_API_KEY": "env-pk"}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A HOME of its own and no netrc, plus ``extra``."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "NETRC": str(tmp_path / "no-netrc"), **extra}


def _write(env: dict[str, str], text: str | bytes) -> Path:
    """Write the Atlas CLI config file where ``env`` says it is."""
    path = atlas_cli_config(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _profile(env: dict[str, str], name: str) -> Profile:
    found = load_profile(env, name, required=True)
    assert found is not None
    return found


# -- where config.toml is ----------------------------------------------------------------------


def test_config_path_is_under_xdg_config_home_else_home(tmp_path: Path) -> None:
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    expected_home = home / ".config" / "atlascli" / "config.toml"
    assert atlas_cli_config({"HOME": str(home)}) == expected_home
    both = {"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)}
    assert atlas_cli_config(both) == xdg / "atlascli" / "config.toml"
    # Empty or relative: not a base directory (XDG Base Directory specification).
    assert atlas_cli_config({"HOME": str(home), "XDG_CONFIG_HOME": ""}) == expected_home
    assert atlas_cli_config({"HOME": str(home), "XDG_CONFIG_HOME": "rel/dir"}) == expected_home
    # No HOME in the mapping: the process's home directory.
    assert atlas_cli_config({}) == Path.home() / ".config" / "atlascli" / "config.toml"
    # macOS: where Go's os.UserConfigDir puts it, whatever XDG_CONFIG_HOME says.
    mac = home / "Library" / "Application Support" / "atlascli" / "config.toml"
    assert atlas_cli_config(both, platform="darwin") == mac


def test_profiles_are_read_from_xdg_config_home_not_home(tmp_path: Path) -> None:
    env = _env(tmp_path)
    _write(env, '[default]\nproject_id = "from-home"\n')
    assert default_group(env, None) == "from-home"
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    _write(env, '[default]\nproject_id = "from-xdg"\n')
    assert default_group(env, None) == "from-xdg"


# -- what a profile holds ----------------------------------------------------------------------


def test_profile_with_api_keys(tmp_path: Path) -> None:
    env = _env(tmp_path)
    path = _write(env, CONFIG)
    profile = _profile(env, "default")
    assert profile.name == "default"
    assert profile.project_id == "5e2211c17a3e5a48f5497de4"
    assert isinstance(profile.auth, Credentials)
    assert (profile.auth.public_key, profile.auth.private_key) == ("abcdefgh", DEFAULT_PRIVATE)
    for source in (profile.source, profile.auth.source):
        assert str(path) in source
        assert "default" in source
    assert DEFAULT_PRIVATE not in repr(profile)


def test_service_account_from_profile_wins_over_api_keys(tmp_path: Path) -> None:
    env = _env(tmp_path)
    _write(env, CONFIG)
    svc = _profile(env, "svc")
    assert svc.auth == ServiceAccount("mdb_sa_id_1234", SVC_SECRET, source=svc.source)
    assert svc.project_id == "5e2211c17a3e5a48f5497de5"
    assert SVC_SECRET not in repr(svc)
    _write(
        env,
        '[both]\npublic_api_key = "pub"\nprivate_api_key = "pk"\n'
        'client_id = "cid"\nclient_secret = "cs"\n',
    )
    both = _profile(env, "both")
    assert isinstance(both.auth, ServiceAccount)
    assert both.auth.client_id == "cid"


def test_profile_without_credentials_still_has_a_project(tmp_path: Path) -> None:
    env = _env(tmp_path)
    _write(env, CONFIG)
    profile = _profile(env, "nocreds")
    assert profile.auth is None
    assert profile.project_id == "5e2211c17a3e5a48f5497de6"


# -- missing file, missing profile -------------------------------------------------------------


def test_missing_file_is_silent_for_default_and_an_error_for_a_named_profile(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    path = atlas_cli_config(env)
    assert load_profile(env, "default", required=False) is None
    assert default_group(env, None) is None
    with pytest.raises(ConfigError) as info:
        load_profile(env, "svc", required=True)
    assert str(path) in str(info.value)
    assert "svc" in str(info.value)
    with pytest.raises(ConfigError, match="svc") as info:
        load_credentials(env, BASE, profile="svc")
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="svc"):
        default_group(env, "svc")
    # ~/.config is a file, not a directory: there is no config.toml either.
    (tmp_path / "home" / ".config").write_text("")
    assert load_profile(env, "default", required=False) is None
    with pytest.raises(ConfigError, match="does not exist"):
        load_profile(env, "svc", required=True)


def test_missing_profile(tmp_path: Path) -> None:
    env = _env(tmp_path)
    path = _write(env, CONFIG)
    assert load_profile(env, "other", required=False) is None
    with pytest.raises(ConfigError) as info:
        load_profile(env, "other", required=True)
    assert "other" in str(info.value)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="other"):
        load_credentials(env, BASE, profile="other")
    # Without a [default] table, default_group has nothing to say.
    _write(env, '[svc]\nproject_id = "p"\n')
    assert default_group(env, None) is None


# -- files fetcher cannot use ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        # The parser's own messages would quote these (a table name, an inline-table key).
        (f"[default]\n[{SVC_SECRET}]\n[{SVC_SECRET}]\n", "line 3"),
        (f'default = {{{SVC_SECRET} = "a", {SVC_SECRET} = "b"}}\n', "line 1"),
        (f'[default]\nprivate_api_key = "{SVC_SECRET}\n', "line 2"),
        (f"[default]\nprivate_api_key = {SVC_SECRET}\n", "line 2"),
    ],
)
def test_malformed_toml_is_one_line_that_shows_no_secret(
    tmp_path: Path, text: str, where: str
) -> None:
    env = _env(tmp_path)
    path = _write(env, text)
    # Even where a missing file would be silent: the user has a file and it is broken.
    for call in (
        lambda: load_profile(env, "default", required=False),
        lambda: load_credentials(env, BASE),
        lambda: default_group(env, None),
    ):
        with pytest.raises(ConfigError) as info:
            call()
        message = str(info.value)
        assert SVC_SECRET not in message
        assert "\n" not in message
        assert str(path) in message
        assert where in message


def test_unreadable_file_is_an_error_even_for_default(tmp_path: Path) -> None:
    env = _env(tmp_path)
    atlas_cli_config(env).mkdir(parents=True)  # a directory where the file should be
    with pytest.raises(ConfigError, match="cannot read"):
        load_profile(env, "default", required=False)
    atlas_cli_config(env).rmdir()
    _write(env, b'[default]\nprivate_api_key = "\xff\xfe-secret"\n')
    with pytest.raises(ConfigError, match="UTF-8") as info:
        load_profile(env, "default", required=False)
    assert "secret" not in str(info.value)


def test_profile_that_is_not_a_table(tmp_path: Path) -> None:
    env = _env(tmp_path)
    _write(env, f'default = "{SVC_SECRET}"\n')
    with pytest.raises(ConfigError, match="not a table") as info:
        load_profile(env, "default", required=False)
    assert SVC_SECRET not in str(info.value)


@pytest.mark.parametrize(
    "line",
    [
        "private_api_key = 12345678901",
        'public_api_key = ["12345678901"]',
        "client_secret = 12345678901",
        "client_id = { id = 12345678901 }",
        "project_id = 12345678901",
    ],
)
def test_non_string_values(tmp_path: Path, line: str) -> None:
    env = _env(tmp_path)
    _write(env, f"[default]\n{line}\n")
    key = line.split(" ", 1)[0]
    with pytest.raises(ConfigError, match=f"{key} .*not a string") as info:
        load_profile(env, "default", required=False)
    assert "12345678901" not in str(info.value)


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ('public_api_key = "pub"', "private_api_key"),
        (f'private_api_key = "{DEFAULT_PRIVATE}"', "public_api_key"),
        ('client_id = "cid"', "client_secret"),
        (f'client_secret = "{SVC_SECRET}"', "client_id"),
        # Half a service account is an error even next to a whole key pair, and vice versa.
        ('client_id = "cid"\npublic_api_key = "pub"\nprivate_api_key = "pk"', "client_secret"),
        ('client_id = "cid"\nclient_secret = "cs"\npublic_api_key = "pub"', "private_api_key"),
        # An empty string is a missing value.
        ('public_api_key = "pub"\nprivate_api_key = ""', "private_api_key"),
    ],
)
def test_half_a_pair_in_a_profile(tmp_path: Path, body: str, missing: str) -> None:
    env = _env(tmp_path)
    _write(env, f"[default]\n{body}\n")
    with pytest.raises(ConfigError, match=missing) as info:
        load_profile(env, "default", required=False)
    assert DEFAULT_PRIVATE not in str(info.value)
    assert SVC_SECRET not in str(info.value)


def test_empty_project_id_is_none(tmp_path: Path) -> None:
    env = _env(tmp_path)
    _write(env, '[default]\nproject_id = ""\n')
    assert default_group(env, None) is None


# -- load_credentials --------------------------------------------------------------------------


def test_half_a_service_account_in_the_environment(tmp_path: Path) -> None:
    env = _env(tmp_path, **KEY_ENV)
    with pytest.raises(ConfigError, match="MONGODB_ATLAS_CLIENT_SECRET is not set"):
        load_credentials({**env, "MONGODB_ATLAS_CLIENT_ID": "cid"}, BASE)
    with pytest.raises(ConfigError, match="MONGODB_ATLAS_CLIENT_ID is not set"):
        load_credentials({**env, "MONGODB_ATLAS_CLIENT_SECRET": "cs"}, BASE)


def test_service_account_from_the_environment(tmp_path: Path) -> None:
    found = load_credentials(_env(tmp_path, **CLIENT_ENV), BASE)
    assert found == ServiceAccount(
        "env-client", "env-cs", source="MONGODB_ATLAS_CLIENT_ID/MONGODB_ATLAS_CLIENT_SECRET"
    )
    assert "env-cs" not in repr(found)


def test_precedence_of_the_sources(tmp_path: Path) -> None:
    """--profile, client env, key env, netrc, default profile: each step removes the winner."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine cloud.example login netrc-user password netrc-pw\n")
    netrc.chmod(0o600)
    env = _env(tmp_path, **CLIENT_ENV, **KEY_ENV, NETRC=str(netrc))
    path = _write(env, CONFIG)

    # 1. The profile the user named wins over everything: a flag beats the environment.
    found = load_credentials(env, BASE, profile="svc")
    assert isinstance(found, ServiceAccount)
    assert (found.client_id, found.client_secret) == ("mdb_sa_id_1234", SVC_SECRET)
    assert str(path) in found.source
    # 2. Without --profile, a service account in the environment.
    found = load_credentials(env, BASE)
    assert isinstance(found, ServiceAccount)
    assert found.client_id == "env-client"
    # 3. Then an API key pair in the environment.
    for var in CLIENT_ENV:
        del env[var]
    found = load_credentials(env, BASE)
    assert isinstance(found, Credentials)
    assert found.public_key == "env-pub"
    for var in KEY_ENV:
        del env[var]
    # 4. Then ~/.netrc for the host, over [default].
    found = load_credentials(env, BASE)
    assert isinstance(found, Credentials)
    assert (found.public_key, found.source) == ("netrc-user", str(netrc))
    # 5. Then [default].
    found = load_credentials(env, BASE, netrc_path=tmp_path / "no-such-netrc")
    assert isinstance(found, Credentials)
    assert (found.public_key, found.private_key) == ("abcdefgh", DEFAULT_PRIVATE)
    assert "default" in found.source
    # 6. Then nothing: the error lists every source.
    path.unlink()
    with pytest.raises(ConfigError, match="no API credentials") as info:
        load_credentials(env, BASE, netrc_path=tmp_path / "no-such-netrc")
    message = str(info.value)
    for name in ("MONGODB_ATLAS_CLIENT_ID", "MONGODB_ATLAS_CLIENT_SECRET", "--profile"):
        assert name in message
    assert str(path) in message


def test_named_profile_without_credentials_is_an_error(tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine cloud.example login netrc-user password netrc-pw\n")
    netrc.chmod(0o600)
    env = _env(tmp_path, NETRC=str(netrc))
    path = _write(env, CONFIG)
    # Not a fallback to netrc or [default]: the user asked for this profile.
    with pytest.raises(ConfigError, match=r"profile nocreds in .* has no credentials") as info:
        load_credentials(env, BASE, profile="nocreds")
    assert str(path) in str(info.value)


def test_default_profile_without_credentials_falls_through(tmp_path: Path) -> None:
    env = _env(tmp_path)
    _write(env, '[default]\nproject_id = "p"\n[svc]\nclient_id = "cid"\nclient_secret = "cs"\n')
    with pytest.raises(ConfigError, match="no API credentials"):
        load_credentials(env, BASE)


def test_default_group(tmp_path: Path) -> None:
    env = _env(tmp_path)
    _write(env, CONFIG)
    assert default_group(env, None) == "5e2211c17a3e5a48f5497de4"
    assert default_group(env, "svc") == "5e2211c17a3e5a48f5497de5"
    with pytest.raises(ConfigError, match="other"):
        default_group(env, "other")
    _write(env, '[default]\nservice = "cloud"\n[svc]\nclient_id = "cid"\nclient_secret = "cs"\n')
    assert default_group(env, None) is None
    assert default_group(env, "svc") is None


def test_the_default_profile_gives_no_project_to_credentials_from_elsewhere(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    _write(env, CONFIG)
    own = default_group(env, None)
    assert own is not None  # [default] has a project_id, and its keys are the ones used
    # Keys from the environment belong to some account: [default]'s project is not theirs.
    assert default_group({**env, **KEY_ENV}, None) is None
    assert default_group({**env, **CLIENT_ENV}, None) is None
    # A profile named on the command line still gives its project, whatever the environment.
    assert default_group({**env, **KEY_ENV}, "svc") is not None


# == hostile input and secrets (issue 4) ===========================================================


# -- credentials -----------------------------------------------------------------------------


def test_netrc_is_the_third_source_of_credentials(tmp_path: Path) -> None:
    base = "https://api.example/api/public/v1.0"
    path = write_netrc(tmp_path, "machine api.example login netrc-user password netrc-secret-1\n")
    env = {"NETRC": str(path), "HOME": str(tmp_path)}  # no Atlas CLI profile either
    found = load_credentials(env, base)
    assert isinstance(found, Credentials)
    assert (found.public_key, found.private_key, found.source) == (
        "netrc-user",
        "netrc-secret-1",
        str(path),
    )
    assert "netrc-secret-1" not in repr(found)
    # The environment wins, even over a netrc entry for the host.
    pair = {"MONGODB_ATLAS_PUBLIC_API_KEY": "env-user", "MONGODB_ATLAS_PRIVATE_API_KEY": "env-pw"}
    assert load_credentials({**env, **pair}, base) == Credentials(
        "env-user", "env-pw", source="MONGODB_ATLAS_PUBLIC_API_KEY/MONGODB_ATLAS_PRIVATE_API_KEY"
    )
    # An empty variable is not set.
    empty = {"MONGODB_ATLAS_PUBLIC_API_KEY": "", "MONGODB_ATLAS_PRIVATE_API_KEY": ""}
    assert load_credentials({**env, **empty}, base) == found
    # An entry for another host is not for us.
    with pytest.raises(ConfigError, match="no API credentials"):
        load_credentials(env, "https://other.example/api/public/v1.0")


@pytest.mark.parametrize("value", ["secret\r", "sec\x00ret", "secret\n", " secret", "sec\x85ret"])
def test_a_credential_with_a_control_character_is_refused_from_every_source(
    tmp_path: Path, value: str
) -> None:
    base = "https://api.example/api/public/v1.0"
    toml = value.encode("unicode_escape").decode().replace("\\x", "\\u00")
    env = _env(tmp_path)
    _write(env, f'[default]\npublic_api_key = "pub"\nprivate_api_key = "{toml}"\n')
    with pytest.raises(ConfigError, match=r"private API key from .*control character") as caught:
        load_credentials(env, base)
    assert "secret" not in str(caught.value)
    pair = {"MONGODB_ATLAS_CLIENT_ID": "mdb_sa_id_1", "MONGODB_ATLAS_CLIENT_SECRET": value}
    if "\x00" not in value:  # no environment holds a NUL
        with pytest.raises(ConfigError, match="MONGODB_ATLAS_CLIENT_SECRET"):
            load_credentials({**env, **pair}, base)
    if not any(c.isspace() for c in value):  # netrc splits on white space
        path = write_netrc(tmp_path, f"machine api.example login user password {value}\n")
        with pytest.raises(ConfigError, match=re.escape(str(path))):
            load_credentials({"NETRC": str(path), "HOME": str(tmp_path / "none")}, base)


def test_a_base_url_is_shown_without_its_user_info() -> None:
    for url in ("htps://admin:S3cretPW@host/api", "https://admin:S3cretPW@host/api"):
        with pytest.raises(ConfigError, match="--base-url") as caught:
            normalise_base_url(url)
        assert "S3cretPW" not in str(caught.value) and "admin" not in str(caught.value)
    assert normalise_base_url("https://host/api/") == "https://host/api"


def test_a_credential_that_is_not_ascii_is_refused_without_quoting_it(tmp_path: Path) -> None:
    base = "https://api.example/api/public/v1.0"
    pair = {"MONGODB_ATLAS_PUBLIC_API_KEY": "pub", "MONGODB_ATLAS_PRIVATE_API_KEY": "s3cr\u2013t"}
    with pytest.raises(ConfigError, match=r"MONGODB_ATLAS_PRIVATE_API_KEY .*not ASCII") as caught:
        load_credentials({**_env(tmp_path), **pair}, base)
    assert "s3cr" not in str(caught.value)
