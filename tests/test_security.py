"""Issue 4: hostile input and secrets. Nothing escapes DIR, nothing leaks, bad input is one line.

Each test names the defence it exercises; each fails when that defence is taken out.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trustme
from click.testing import Result
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from fetcher.config import Credentials, Settings, load_credentials
from fetcher.errors import ApiError, ConfigError
from fetcher.names import MANIFEST_NAME, partial_name, state_name
from fetcher.redact import MASK, Redactor, display_url, origin, printable
from fetcher.retry import RetryPolicy
from fetcher.service.client import RateLimiter, RestoreJobsClient
from fetcher.service.http import api_client, tls_context
from fetcher.storage import LOCK_NAME
from tests.conftest import Atlas, fetch_args, run_cli, server_context
from tests.pullserver import Fault, PullServer
from tests.support import (
    API_ROOT,
    BATCH,
    CLUSTER,
    GROUP,
    JOBS_PATH,
    PRIVATE_KEY,
    PUBLIC_KEY,
    job_json,
    make_archive,
    new_id,
    page,
    sha1,
)

BEARER = "om-bearer-5ecret-token-77"
PRECIOUS = b"precious bytes outside DIR\n"

# -- helpers ---------------------------------------------------------------------------------


def _one_line_error(result: Result, code: int = 1) -> str:
    """The CLI failed the documented way: this exit code, one line on stderr, no traceback."""
    text = result.stdout + result.stderr
    assert result.exit_code == code, text
    assert "Traceback" not in text and "internal error" not in text, text
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fetcher: error: ")
    return lines[0]


def _manifest_jobs(dest: Path) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = json.loads((dest / MANIFEST_NAME).read_text())["jobs"]
    return jobs


def _add_job(
    atlas: Atlas,
    segment: str,
    *,
    file_name: str | None = None,
    data: bytes | None = None,
    token: str | None = None,
    query: str = "",
    **kwargs: Any,
) -> dict[str, Any]:
    """List a READY job whose pull URL ends in `segment` (raw, percent-encoding and all)."""
    data = make_archive(f"rs-{new_id()}") if data is None else data  # a replica set of its own
    job_id = new_id()
    path = f"/backup/restore/v2/pull/{job_id}/{token or secrets.token_urlsafe(24)}/{segment}"
    atlas.pull.add(path, data)
    job = job_json(
        job_id=job_id,
        url=atlas.pull.url(path) + query,
        file_name=file_name,
        sha1_hex=sha1(data),
        **kwargs,
    )
    job["_path"], job["_data"] = path, data
    atlas.jobs.append(job)
    return job


def _add_ops_manager_job(atlas: Atlas, name: str, *, faults: list[Fault] | None = None) -> Any:
    """A job whose link needs `Authorization: Bearer`, given as urlV2 + authValue."""
    data = make_archive("om")
    job_id = new_id()
    path = f"/backup/restore/v2/pull/{job_id}/{secrets.token_urlsafe(24)}/{name}"
    atlas.pull.add(path, data, faults=faults or [])
    job = job_json(
        job_id=job_id,
        file_name=name,
        sha1_hex=sha1(data),
        urlV2=atlas.pull.url(path),
        authHeader="Authorization",
        authBearer="Bearer",
        authValue=BEARER,
    )
    job["_path"], job["_data"] = path, data
    atlas.jobs.append(job)
    return job


def _snapshot(root: Path, skip: Path | None = None) -> dict[str, bytes | str]:
    """Every entry under root (not under skip): file bytes, link targets, directories."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        key = str(path.relative_to(root))
        if path.is_symlink():
            out[key] = f"link:{path.readlink()}"
        elif path.is_dir():
            out[key] = "dir"
        else:
            out[key] = path.read_bytes()
    return out


def _everything_in(dest: Path) -> str:
    """Every byte of every file in DIR, hidden ones included, as text."""
    return "".join(
        p.read_bytes().decode("latin-1")
        for p in dest.rglob("*")
        if p.is_file() and not p.is_symlink()
    )


def _list_args(base_url: str, *extra: str) -> list[str]:
    return ["list", "--base-url", base_url, "--group", GROUP, "--cluster", CLUSTER, *extra]


def _fetch_batch_args(base_url: str, dest: Path, *extra: str) -> list[str]:
    return ["fetch", *_list_args(base_url)[1:], "--batch", BATCH, "--dest", str(dest), *extra]


def _api_base(server: HTTPServer) -> str:
    return server.url_for(API_ROOT)


@pytest.fixture
def other() -> Iterator[PullServer]:
    """A second host: where a redirect or a next link would take credentials."""
    server = PullServer()
    yield server
    server.close()


def _within(seconds: float, call: Callable[[], Result], fifo: Path) -> Result:
    """Run call on a thread; a call blocked opening the FIFO is released, and the test fails."""
    box: dict[str, Result] = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", call()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # lets the blocked reader go
        os.close(fd)
        thread.join(5)
        pytest.fail(f"blocked opening the FIFO {fifo.name}")
    return box["result"]


# -- file names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "segment"),
    [
        ("../escape.tar.gz", "..%2Fescape.tar.gz"),
        ("ABSOLUTE", "ABSOLUTE"),
        ("%2e%2e%2fescape.tar.gz", "%252e%252e%252fescape.tar.gz"),
        ("manifest.json", "manifest.json"),
        (".fetcher.lock", ".fetcher.lock"),
        ("esc\x00ape.tar.gz", "esc%00ape.tar.gz"),
        ("C:escape.tar.gz", "C:escape.tar.gz"),
        ("x" * 300, "y" * 300),
    ],
)
def test_a_job_with_only_unsafe_names_fails_and_nothing_leaves_dir(
    atlas: Atlas, creds: None, tmp_path: Path, file_name: str, segment: str
) -> None:
    area = tmp_path / "area"
    dest = area / "dest"
    if file_name == "ABSOLUTE":
        file_name = str(area / "escape.tar.gz")
        segment = quote(file_name, safe="")
    safe = atlas.add("fine.tar.gz")
    bad = _add_job(atlas, segment, file_name=file_name)
    result = run_cli(*fetch_args(atlas, dest))
    assert result.exit_code == 1, result.stderr
    by_id = {j["id"]: j for j in _manifest_jobs(dest)}
    assert by_id[safe["id"]]["outcome"] == "verified"  # the batch goes on
    failed = by_id[bad["id"]]
    assert failed["outcome"] == "failed" and failed["failure"] == "error"
    assert failed["reason"].startswith("unsafe file name")
    assert not atlas.pull.requests_for(bad["_path"])  # not even downloaded
    assert _snapshot(area, skip=dest) == {}  # nothing beside DIR
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [LOCK_NAME, MANIFEST_NAME, "fine.tar.gz"]
    )


def test_an_unsafe_hash_name_with_a_safe_url_segment_uses_the_segment(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    area = tmp_path / "area"
    dest = area / "dest"
    job = _add_job(atlas, "good.tar.gz", file_name="../escape.tar.gz")
    result = run_cli(*fetch_args(atlas, dest))
    assert result.exit_code == 0, result.stderr
    assert (dest / "good.tar.gz").read_bytes() == job["_data"]
    (entry,) = _manifest_jobs(dest)
    assert entry["files"][0]["name"] == "good.tar.gz"
    assert _snapshot(area, skip=dest) == {}


# Where a symlink is planted, and whether fetch then succeeds (0) or refuses clearly (1).
PLANTS: dict[str, tuple[Callable[[str], str], int, str]] = {
    "final": (lambda n: n, 0, ""),
    "partial": (partial_name, 1, "is a symbolic link"),
    "state": (state_name, 0, ""),
    "manifest": (lambda n: MANIFEST_NAME, 0, ""),
    "lock": (lambda n: LOCK_NAME, 1, "is a symbolic link"),
}


@pytest.mark.parametrize("target", ["file", "missing", "directory"])
@pytest.mark.parametrize("where", list(PLANTS))
def test_a_planted_symlink_never_leads_outside_dir(
    atlas: Atlas, creds: None, tmp_path: Path, where: str, target: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(PRECIOUS)
    link_to = {"file": outside / "precious", "missing": outside / "new", "directory": outside}
    dest = tmp_path / "dest"
    dest.mkdir()
    name = "Cluster0-shard-0.tar.gz"
    atlas.add(name)
    planted, code, message = PLANTS[where]
    (dest / planted(name)).symlink_to(link_to[target])
    before = _snapshot(outside)

    result = run_cli(*fetch_args(atlas, dest))

    assert _snapshot(outside) == before  # not written, not truncated, nothing created
    assert (outside / "precious").read_bytes() == PRECIOUS
    assert result.exit_code == code, result.stdout + result.stderr
    if code == 0:
        assert not (dest / name).is_symlink()
        assert (dest / name).read_bytes() == atlas.archives[name]
    elif where == "partial":
        (entry,) = _manifest_jobs(dest)
        assert entry["outcome"] == "failed" and message in entry["reason"]
    else:
        assert message in _one_line_error(result)


@pytest.mark.parametrize("where", ["partial", "manifest-temp"])
def test_a_planted_hard_link_is_not_written_through(
    atlas: Atlas, creds: None, tmp_path: Path, where: str
) -> None:
    # O_NOFOLLOW does not see a hard link: writing or truncating through one changes the
    # file it shares an inode with, wherever that is on the file system.
    precious = tmp_path / "precious"
    precious.write_bytes(PRECIOUS)
    dest = tmp_path / "dest"
    dest.mkdir()
    name = "rs0.tar.gz"
    atlas.add(name)
    # The manifest's temporary name is predictable: pid and thread of whoever writes it last.
    planted = {
        "partial": partial_name(name),
        "manifest-temp": f".{MANIFEST_NAME}.tmp.{os.getpid()}.{threading.get_ident()}",
    }[where]
    os.link(precious, dest / planted)
    result = run_cli(*fetch_args(atlas, dest))
    assert precious.read_bytes() == PRECIOUS
    assert result.exit_code == 0, result.stderr
    assert (dest / name).read_bytes() == atlas.archives[name]
    assert json.loads((dest / MANIFEST_NAME).read_text())["complete"] is True


def test_a_planted_fifo_does_not_hang_verify_or_fetch(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    name = "rs0.tar.gz"
    atlas.add(name)
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0
    (tmp_path / name).unlink()
    os.mkfifo(tmp_path / name)
    result = _within(10, lambda: run_cli("verify", str(tmp_path)), tmp_path / name)
    assert result.exit_code == 4 and "missing" in result.stdout
    (tmp_path / MANIFEST_NAME).unlink()
    os.mkfifo(tmp_path / MANIFEST_NAME)
    result = _within(10, lambda: run_cli(*fetch_args(atlas, tmp_path)), tmp_path / MANIFEST_NAME)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / name).read_bytes() == atlas.archives[name]


# -- credentials -----------------------------------------------------------------------------


def test_a_pull_host_asking_for_digest_gets_no_authorization(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("rs0.tar.gz")
    atlas.pull.resources[job["_path"]].faults = [Fault(digest_challenge=True) for _ in range(3)]
    result = run_cli(*fetch_args(atlas, tmp_path))
    assert atlas.gate.accepted > 0  # the API client did hold a digest session to offer
    assert result.exit_code == 1
    (request,) = atlas.pull.requests_for(job["_path"])  # the challenge was not answered
    assert "authorization" not in request.headers
    (entry,) = _manifest_jobs(tmp_path)
    assert entry["outcome"] == "failed" and "answered 401" in entry["reason"]


@pytest.mark.parametrize("to", ["other-host", "same-host-by-another-name"])
def test_the_bearer_goes_to_its_own_origin_only(
    atlas: Atlas, creds: None, tmp_path: Path, other: PullServer, to: str
) -> None:
    moved = "/moved/om.tar.gz"
    job = _add_ops_manager_job(atlas, "om.tar.gz")
    if to == "other-host":
        other.add(moved, job["_data"])
        target, log = other.url(moved), other
    else:
        atlas.pull.add(moved, job["_data"])
        target, log = atlas.pull.url(moved).replace("//127.0.0.1:", "//localhost:"), atlas.pull
    atlas.pull.resources[job["_path"]].faults = [Fault(redirect_to=target)]
    plain = atlas.add("plain.tar.gz", make_archive("Cluster0-config"))  # the batch's config server

    result = run_cli(*fetch_args(atlas, tmp_path, "--json"))

    assert result.exit_code == 0, result.stderr
    (first,) = atlas.pull.requests_for(job["_path"])
    assert first.headers["authorization"] == f"Bearer {BEARER}"
    (redirected,) = log.requests_for(moved)
    assert "authorization" not in redirected.headers
    (unrelated,) = atlas.pull.requests_for(plain["_path"])
    assert "authorization" not in unrelated.headers
    assert (tmp_path / "om.tar.gz").read_bytes() == job["_data"]
    assert BEARER not in result.stdout + result.stderr + _everything_in(tmp_path)


def test_the_api_digest_never_answers_another_origin(atlas: Atlas, other: PullServer) -> None:
    other.add("/x", b"{}", faults=[Fault(digest_challenge=True)])
    settings = Settings(base_url=atlas.base_url)
    with api_client(settings, Credentials(PUBLIC_KEY, PRIVATE_KEY)) as http:
        assert http.get(atlas.server.url_for(JOBS_PATH)).status_code == 200
        # httpx's own DigestAuth would now send Authorization to any host, unasked.
        assert http.get(other.url("/x")).status_code == 401
        (request,) = other.requests_for("/x")
        assert "authorization" not in request.headers
        # The API itself, by another name, is another origin too.
        alias = atlas.server.url_for(JOBS_PATH).replace("//localhost:", "//127.0.0.1:")
        assert origin(alias) != origin(atlas.base_url)
        challenges = atlas.gate.challenges
        assert http.get(alias).status_code == 401
        assert atlas.gate.challenges == challenges + 1  # asked once, not answered
        (last_request, _) = atlas.server.log[-1]
        assert "Authorization" not in last_request.headers


def _redirect(to: str) -> Callable[[Request], Response]:
    return lambda request: Response(status=302, headers={"Location": to})


def _next_link(to: str) -> Callable[[Request], Response]:
    return lambda request: Response(json.dumps(page([], next_href=to)), 200, mimetype="text/json")


@pytest.mark.parametrize("how", [_redirect, _next_link])
@pytest.mark.parametrize("to", ["other-host", "same-host-by-another-name"])
def test_the_api_never_follows_to_another_origin(
    httpserver: HTTPServer,
    other: PullServer,
    creds: None,
    how: Callable[[str], Callable[[Request], Response]],
    to: str,
) -> None:
    if to == "other-host":
        other.add(JOBS_PATH, b'{"results": []}')
        target = other.url(JOBS_PATH)
    else:
        target = httpserver.url_for(JOBS_PATH).replace("//localhost:", "//127.0.0.1:")
    httpserver.expect_request(JOBS_PATH).respond_with_handler(how(target))
    result = run_cli(*_list_args(_api_base(httpserver)))
    assert "another host" in _one_line_error(result)
    assert not other.log
    assert len(httpserver.log) == 1


def _netrc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "netrc"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_netrc_is_the_third_source_of_credentials(tmp_path: Path) -> None:
    base = "https://api.example/api/public/v1.0"
    path = _netrc(tmp_path, "machine api.example login netrc-user password netrc-secret-1\n")
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


def test_fetch_with_netrc_credentials_only(
    atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MONGODB_ATLAS_PUBLIC_API_KEY")
    monkeypatch.delenv("MONGODB_ATLAS_PRIVATE_API_KEY")
    path = _netrc(tmp_path, f"machine localhost\n  login {PUBLIC_KEY}\n  password {PRIVATE_KEY}\n")
    monkeypatch.setenv("NETRC", str(path))
    atlas.add("rs0.tar.gz")
    result = run_cli(*fetch_args(atlas, tmp_path / "dest"))
    assert result.exit_code == 0, result.stderr
    assert PRIVATE_KEY not in result.stdout + result.stderr


def test_a_netrc_parse_error_does_not_echo_the_file(
    atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MONGODB_ATLAS_PUBLIC_API_KEY")
    monkeypatch.delenv("MONGODB_ATLAS_PRIVATE_API_KEY")
    text = "machine localhost login u password Pw-SECRET-one\nSECRET-two-token extra\n"
    monkeypatch.setenv("NETRC", str(_netrc(tmp_path, text)))
    result = run_cli(*_list_args(atlas.base_url))
    line = _one_line_error(result, code=2)
    assert "line 2" in line
    assert "SECRET" not in result.stdout + result.stderr


# -- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize("pull_fault", ["none", "403", "500", "redirect-loop", "dropped"])
def test_tokens_bearers_and_keys_never_show_or_persist(
    atlas: Atlas, creds: None, tmp_path: Path, pull_fault: str
) -> None:
    plain = atlas.add("plain.tar.gz", make_archive("Cluster0-config"))  # the config server
    om = _add_ops_manager_job(atlas, "om.tar.gz")
    signed = _add_job(
        atlas, "signed.tar.gz", file_name="signed.tar.gz", query="?X-Signature=s1gnature-d34db33f"
    )
    hexed = _add_job(atlas, "hex.tar.gz", file_name="hex.tar.gz", token=secrets.token_hex(12))
    jobs = [plain, om, signed, hexed]
    tokens = [str(j["_path"]).split("/")[-2] for j in jobs]
    for job in jobs:
        fault = {
            "none": None,
            "403": Fault(status=403),
            "500": Fault(status=500),
            "redirect-loop": Fault(redirect_to=atlas.pull.url(job["_path"])),
            "dropped": Fault(drop_after=1000),  # leaves .part and .part.json behind
        }[pull_fault]
        if fault is not None:
            atlas.pull.resources[job["_path"]].faults = [fault] * 100

    shown = ""
    for extra in (["--json"], []):
        args = fetch_args(atlas, tmp_path / "dest", "--retries", "0", *extra)
        if not extra:
            args.remove("--quiet")
        result = run_cli(*args)
        assert result.exit_code == (0 if pull_fault == "none" else 1), result.stderr
        shown += result.stdout + result.stderr
    for extra in ([], ["--json"]):
        result = run_cli(*_list_args(atlas.base_url, *extra))
        assert result.exit_code == 0
        shown += result.stdout + result.stderr
    stored = _everything_in(tmp_path / "dest")
    if pull_fault == "dropped":
        assert (tmp_path / "dest" / state_name("om.tar.gz")).is_file()

    for secret in [*tokens, BEARER, PRIVATE_KEY, "s1gnature-d34db33f"]:
        assert secret not in shown, secret
        assert secret not in stored, secret
    if pull_fault != "none":
        # The failure still says which archive it was about.
        assert "om.tar.gz" in shown and "plain.tar.gz" in shown
    for job in jobs:
        assert job["id"] in shown  # ids are not secrets, even when a URL holds them


def test_an_api_error_that_echoes_the_key_is_masked(
    httpserver: HTTPServer, creds: None, tmp_path: Path
) -> None:
    body = {
        "error": 400,
        "reason": "Bad Request",
        "errorCode": "INVALID_KEY",
        "detail": f"key {PUBLIC_KEY}:{PRIVATE_KEY} is not valid\x1b[2J\nfetcher: all good",
    }
    httpserver.expect_request(JOBS_PATH).respond_with_json(body, status=400)
    for args in (
        _list_args(_api_base(httpserver), "--json"),
        _fetch_batch_args(_api_base(httpserver), tmp_path / "dest", "--json"),
    ):
        line = _one_line_error(run_cli(*args))
        assert PRIVATE_KEY not in line and MASK in line and "INVALID_KEY" in line
        assert "\x1b" not in line  # the server does not get to clear the operator's screen


def test_server_text_cannot_drive_the_terminal(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    job = atlas.add("rs0.tar.gz", status="IN_PROGRESS")
    job["statusName"] = "IN_PROGRESS\x1b]0;pwned\x07\r\nverified   fake.tar.gz"
    for args in (_list_args(atlas.base_url), fetch_args(atlas, tmp_path)):
        if "--quiet" in args:
            args.remove("--quiet")
        result = run_cli(*args)
        assert "\x1b" not in result.stdout + result.stderr
        assert "\x07" not in result.stdout + result.stderr
        assert not any(line.startswith("verified") for line in result.stdout.splitlines())


def test_redactor_treats_an_object_id_shaped_token_as_a_secret() -> None:
    job_id, token = new_id(), new_id()  # both 24 hex digits
    url = f"https://pull.example/backup/restore/v2/pull/{job_id}/{token}/rs0.tar.gz?sig=s1gnature"
    redactor = Redactor()
    redactor.add_url(url, public=[job_id, None])
    text = redactor.scrub(f"job {job_id}: {url}")
    assert token not in text and "s1gnature" not in text
    assert text.startswith(f"job {job_id}: ") and text.count(MASK) >= 2
    assert display_url(url) == "https://pull.example/…/rs0.tar.gz"


def test_origin_is_total_and_normalised() -> None:
    assert origin("https://H.example:443/a") == origin("https://h.example/b") == "https://h.example"
    assert origin("http://u:pw@h.example:8080/a") == "http://h.example:8080"
    assert origin("http://127.0.0.1:8080/") != origin("http://localhost:8080/")
    # Unreadable URLs have an origin equal to no other, rather than an exception.
    for url in ("http://h.example:99999/", "http://[::1/", "no scheme", ""):
        assert origin(url) == ""


def test_printable_keeps_one_line_and_no_escapes() -> None:
    assert printable("a\x1b[2Jb\r\nc\u202ed\ud800") == "a?[2Jb  c?d?"


# -- TLS ---------------------------------------------------------------------------------------


def _https_server(ca: trustme.CA, *names: str) -> HTTPServer:
    context = server_context(ca, *names)
    server = HTTPServer(host="localhost", port=0, ssl_context=context)
    server.start()
    return server


@pytest.fixture(scope="module")
def https_server(authority: tuple[trustme.CA, Path]) -> Iterator[HTTPServer]:
    """One HTTPS server for the module: stopping one takes half a second."""
    server = _https_server(authority[0])
    yield server
    server.stop()


@pytest.fixture
def ca(authority: tuple[trustme.CA, Path], tmp_path: Path) -> trustme.CA:
    shutil.copy(authority[1], tmp_path / "ca.pem")
    return authority[0]


@pytest.fixture
def https_atlas(https_server: HTTPServer, ca: trustme.CA, pull: PullServer) -> Iterator[Atlas]:
    atlas = Atlas(https_server, pull)
    atlas.add("rs0.tar.gz")
    yield atlas
    https_server.clear()


def test_tls_without_the_ca_fails_at_once_with_a_hint(
    https_atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    assert https_atlas.base_url.startswith("https://")
    started = time.monotonic()
    result = run_cli(*fetch_args(https_atlas, tmp_path / "dest"))
    line = _one_line_error(result)
    assert "not trusted" in line and "--ca-cert" in line
    # A refused certificate is refused again on every retry: no backoff (>= 7.75 s) first.
    assert time.monotonic() - started < 5
    assert not (tmp_path / "dest" / "rs0.tar.gz").exists()


def test_tls_with_ca_cert_option(https_atlas: Atlas, creds: None, tmp_path: Path) -> None:
    result = run_cli(
        *fetch_args(https_atlas, tmp_path / "dest", "--ca-cert", str(tmp_path / "ca.pem"))
    )
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "dest" / "rs0.tar.gz").read_bytes() == https_atlas.archives["rs0.tar.gz"]


def test_tls_with_ssl_cert_file(
    https_atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    result = run_cli(*fetch_args(https_atlas, tmp_path / "dest"))
    assert result.exit_code == 0, result.stderr


def test_tls_checks_the_host_name_even_with_the_ca(
    ca: trustme.CA, pull: PullServer, creds: None, tmp_path: Path
) -> None:
    server = _https_server(ca, "api.example.org")
    try:
        atlas = Atlas(server, pull)
        result = run_cli(
            *fetch_args(atlas, tmp_path / "dest", "--ca-cert", str(tmp_path / "ca.pem"))
        )
        line = _one_line_error(result)
        assert "not trusted" in line and "mismatch" in line.lower()
    finally:
        server.clear()
        server.stop()


def test_a_tls_pull_host_with_an_unknown_ca_fails_the_job_at_once(
    atlas: Atlas, https_server: HTTPServer, ca: trustme.CA, creds: None, tmp_path: Path
) -> None:
    data = make_archive("rs0")
    pull = https_server
    try:
        path = f"/backup/restore/v2/pull/{new_id()}/{secrets.token_urlsafe(24)}/rs0.tar.gz"
        pull.expect_request(path).respond_with_data(data)
        atlas.jobs.append(
            job_json(url=pull.url_for(path), file_name="rs0.tar.gz", sha1_hex=sha1(data))
        )
        started = time.monotonic()
        result = run_cli(*fetch_args(atlas, tmp_path / "a"))
        assert result.exit_code == 1
        (entry,) = _manifest_jobs(tmp_path / "a")
        assert "TLS certificate not trusted" in entry["reason"]
        assert time.monotonic() - started < 5
        ok = run_cli(*fetch_args(atlas, tmp_path / "b", "--ca-cert", str(tmp_path / "ca.pem")))
        assert ok.exit_code == 0, ok.stderr
    finally:
        pull.clear()


def test_there_is_no_switch_that_turns_verification_off(tmp_path: Path) -> None:
    for command in ("fetch", "list"):
        text = run_cli(command, "--help").stdout.lower()
        for word in ("insecure", "no-verify", "verify-ssl", "skip-tls", "no-check"):
            assert word not in text
    assert run_cli("fetch", "--insecure", "--group", GROUP, "--cluster", CLUSTER).exit_code == 2
    context = tls_context(Settings())
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_an_unreadable_ca_file_is_a_usage_error(creds: None, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    result = run_cli(*_list_args("https://api.example/api/atlas/v1.0", "--ca-cert", str(bad)))
    assert "cannot load CA certificates" in _one_line_error(result, code=2)


# -- bad API input -----------------------------------------------------------------------------


def _job(**changes: Any) -> dict[str, Any]:
    job = job_json(
        url="https://pull.example/p/tok3n-abcdef/rs0.tar.gz",
        file_name="rs0.tar.gz",
        sha1_hex="a" * 40,
    )
    for key, value in changes.items():
        if key.startswith("delivery_"):
            job["delivery"][key.removeprefix("delivery_")] = value
        elif value is None:
            job.pop(key)
        else:
            job[key] = value
    return job


def _body(results: Any) -> bytes:
    return json.dumps({"results": results, "links": []}).encode()


BAD_ANSWERS: dict[str, tuple[int, bytes, str, str]] = {
    "html": (200, b"<html><body>Sign in</body></html>", "text/html", "not JSON (text/html)"),
    "truncated": (200, b'{"results": [{"id": "5f0c', "application/json", "not JSON"),
    "not-utf8": (200, b'{"results": ["\xff\xfe"]}', "application/json", "not JSON"),
    "nested-deep": (200, b"[" * 100_000, "application/json", "not JSON"),
    "huge-integer": (
        200,
        b'{"results": [], "totalCount": 1' + b"0" * 5000 + b"}",
        "application/json",
        "not JSON",
    ),
    "results-not-a-list": (200, b'{"results": {"id": "x"}}', "application/json", "no results list"),
    "links-not-a-list": (
        200,
        b'{"results": [], "links": "next"}',
        "application/json",
        "links is not a list",
    ),
    "job-not-an-object": (200, _body(["x"]), "application/json", "not a JSON object"),
    "job-without-id": (200, _body([_job(id=None)]), "application/json", "no valid id"),
    "job-id-not-a-string": (200, _body([_job(id=5)]), "application/json", "no valid id"),
    "hash-too-short": (
        200,
        _body([_job(hashes=[{"fileName": "a", "hash": "abc", "typeName": "SHA1"}])]),
        "application/json",
        "not SHA1",
    ),
    "hash-not-hex": (
        200,
        _body([_job(hashes=[{"fileName": "a", "hash": "z" * 40, "typeName": "SHA1"}])]),
        "application/json",
        "not SHA1",
    ),
    "hashes-not-a-list": (200, _body([_job(hashes="a" * 40)]), "application/json", "not a list"),
    "status-not-a-string": (
        200,
        _body([_job(statusName=["FINISHED"])]),
        "application/json",
        "not a string",
    ),
    "expiry-unreadable": (
        200,
        _body([_job(delivery_expires="soon")]),
        "application/json",
        "expiry",
    ),
    "url-bad-port": (
        200,
        _body([_job(delivery_url="https://pull.example:99999/p/t/rs0.tar.gz")]),
        "application/json",
        "cannot be parsed",
    ),
    "url-bad-ipv6": (
        200,
        _body([_job(delivery_url="https://[::1/p/t/rs0.tar.gz")]),
        "application/json",
        "cannot be parsed",
    ),
    "url-with-userinfo": (
        200,
        _body([_job(delivery_url="https://u:pw@pull.example/p/t/rs0.tar.gz")]),
        "application/json",
        "credentials",
    ),
    "url-not-http": (
        200,
        _body([_job(delivery_url="file:///etc/passwd")]),
        "application/json",
        "not HTTP",
    ),
    "url-no-host": (
        200,
        _body([_job(delivery_url="https:///p/t/rs0.tar.gz")]),
        "application/json",
        "no host",
    ),
    "bearer-with-crlf": (
        200,
        _body(
            [
                _job(
                    delivery_urlV2="https://om.example/p/t/rs0.tar.gz",
                    delivery_authValue="tok\r\nX-Evil: 1",
                )
            ]
        ),
        "application/json",
        "authValue",
    ),
    "next-link-bad-port": (
        200,
        json.dumps(page([], next_href="http://localhost:99999/x")).encode(),
        "application/json",
        "another host",
    ),
    "error-body-nested-deep": (500, b"[" * 100_000, "application/json", "API answered 500"),
    "gzip-not-decodable": (200, b"not gzip at all", "application/json;gzip", "does not decompress"),
    "unknown-encoding": (200, b"{}", "application/json;br", "unsupported content encoding"),
}


# `fetch` reads the API through the same code as `list`: a few cases are enough for it.
_ALSO_FETCH = ("html", "nested-deep", "huge-integer", "url-bad-port", "bearer-with-crlf")


@pytest.mark.parametrize(
    ("case", "command"),
    [(case, "list") for case in BAD_ANSWERS] + [(case, "fetch") for case in _ALSO_FETCH],
)
def test_bad_api_answers_are_one_line_errors(
    httpserver: HTTPServer, creds: None, tmp_path: Path, case: str, command: str
) -> None:
    status, body, kind, message = BAD_ANSWERS[case]
    content_type, _, encoding = kind.partition(";")
    headers = {"Content-Encoding": encoding} if encoding else {}
    httpserver.expect_request(JOBS_PATH).respond_with_response(
        Response(body, status, headers, content_type=content_type)
    )
    args = _list_args(_api_base(httpserver), "--retries", "0")
    if command == "fetch":
        args = _fetch_batch_args(_api_base(httpserver), tmp_path / "dest", "--retries", "0")
    line = _one_line_error(run_cli(*args))
    assert message in line
    assert "tok3n" not in line and "pw@" not in line  # no URL quoted


def test_an_enormous_api_answer_is_cut_off(httpserver: HTTPServer, creds: None) -> None:
    # 17 MiB, streamed with no length: over the CLI's 16 MiB cap only once read.
    chunks = (b" " * (1024 * 1024) for _ in range(17))
    httpserver.expect_request(JOBS_PATH).respond_with_response(
        Response(chunks, 200, content_type="application/json")
    )
    assert "larger than 16 MiB" in _one_line_error(run_cli(*_list_args(_api_base(httpserver))))


def test_an_announced_enormous_answer_is_refused_unread(other: PullServer, creds: None) -> None:
    other.add(JOBS_PATH, b'{"results": []}', faults=[Fault(content_length=str(10**12))])
    line = _one_line_error(run_cli(*_list_args(other.url(API_ROOT))))
    assert "larger than 16 MiB" in line


def _library_client(base_url: str, **kwargs: Any) -> Iterator[RestoreJobsClient]:
    settings = Settings(base_url=base_url)
    with api_client(settings, Credentials(PUBLIC_KEY, PRIVATE_KEY)) as http:
        yield RestoreJobsClient(
            http,
            base_url,
            policy=RetryPolicy(retries=0, sleep=lambda s: None),
            limiter=RateLimiter(limit=10**6),
            **kwargs,
        )


def test_max_body_caps_what_the_client_reads(httpserver: HTTPServer) -> None:
    httpserver.expect_request(JOBS_PATH).respond_with_data(
        _body([_job()] * 2), content_type="application/json"
    )
    for client in _library_client(_api_base(httpserver), max_body=1024):
        with pytest.raises(ApiError, match="larger than 1024 bytes"):
            client.list_jobs(GROUP, CLUSTER)


def test_a_gzip_bomb_is_cut_off_before_it_inflates(httpserver: HTTPServer) -> None:
    bomb = gzip.compress(b" " * (64 * 1024 * 1024), compresslevel=9)  # ~64 KiB on the wire
    httpserver.expect_request(JOBS_PATH).respond_with_response(
        Response(bomb, 200, {"Content-Encoding": "gzip"}, content_type="application/json")
    )
    for client in _library_client(_api_base(httpserver), max_body=1024 * 1024):
        tracemalloc.start()
        try:
            with pytest.raises(ApiError, match="larger than 1 MiB"):
                client.list_jobs(GROUP, CLUSTER)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 16 * 1024 * 1024  # httpx alone would hold the 64 MiB it inflates


def test_gzip_within_the_cap_is_read(httpserver: HTTPServer) -> None:
    body = gzip.compress(_body([_job()]))
    httpserver.expect_request(JOBS_PATH).respond_with_response(
        Response(body, 200, {"Content-Encoding": "gzip"}, content_type="application/json")
    )
    for client in _library_client(_api_base(httpserver)):
        (job,) = client.list_jobs(GROUP, CLUSTER)
        assert job.archives[0].sha1 == "a" * 40


def test_a_next_link_loop_is_an_error(httpserver: HTTPServer, creds: None) -> None:
    url = httpserver.url_for(JOBS_PATH) + "?pageNum=1&itemsPerPage=100"
    httpserver.expect_request(JOBS_PATH).respond_with_json(page([_job()], next_href=url))
    assert "loops" in _one_line_error(run_cli(*_list_args(_api_base(httpserver))))


def test_pagination_that_never_ends_stops_at_max_pages(httpserver: HTTPServer) -> None:
    served: list[int] = []

    def endless(request: Request) -> Response:
        served.append(1)
        # A fresh URL every time, so only the page count can stop it; after 50 pages the
        # server gives up itself, which keeps this test short even if the bound is gone.
        href = httpserver.url_for(JOBS_PATH) + f"?pageNum={len(served) + 1}"
        body = page([], next_href=href if len(served) < 50 else None)
        return Response(json.dumps(body), 200, content_type="application/json")

    httpserver.expect_request(JOBS_PATH).respond_with_handler(endless)
    for client in _library_client(_api_base(httpserver), max_pages=3):
        with pytest.raises(ApiError, match="did not end after 3 pages"):
            client.list_jobs(GROUP, CLUSTER)
    assert len(served) == 3


def test_a_next_link_loop_is_caught_on_its_second_lap(httpserver: HTTPServer) -> None:
    url = httpserver.url_for(JOBS_PATH) + "?pageNum=1&itemsPerPage=100"
    httpserver.expect_request(JOBS_PATH).respond_with_json(page([_job()], next_href=url))
    for client in _library_client(_api_base(httpserver), max_pages=20):
        with pytest.raises(ApiError, match="loops"):
            client.list_jobs(GROUP, CLUSTER)
    assert len(httpserver.log) == 2


# -- absurd sizes from the pull host -----------------------------------------------------------


def test_an_absurd_content_length_is_refused_not_blamed_on_the_disk(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    job = atlas.add("rs0.tar.gz")
    atlas.pull.resources[job["_path"]].faults = [Fault(content_length=str(2**60))]
    result = run_cli(*fetch_args(atlas, tmp_path, "--retries", "0"))
    assert result.exit_code == 1
    (entry,) = _manifest_jobs(tmp_path)
    assert "claims the archive is 1152921504606846976 bytes" in entry["reason"]
    assert "space" not in entry["reason"]
    assert atlas.pull.requests_for(job["_path"])[0].sent < len(atlas.archives["rs0.tar.gz"]) + 1


@pytest.mark.parametrize("value", ["-5", "²", "9" * 5000, "12abc"])
def test_a_malformed_content_length_is_a_clean_failure(
    atlas: Atlas, creds: None, tmp_path: Path, value: str
) -> None:
    job = atlas.add("rs0.tar.gz")
    atlas.pull.resources[job["_path"]].faults = [Fault(content_length=value)]
    result = run_cli(*fetch_args(atlas, tmp_path, "--retries", "0"))
    assert result.exit_code == 1 and "internal error" not in result.stderr, result.stderr
    (entry,) = _manifest_jobs(tmp_path)
    assert entry["outcome"] == "failed" and "giving up" in entry["reason"]


def _plant_partial(atlas: Atlas, job: dict[str, Any], dest: Path, part: bytes, state: Any) -> None:
    """Leave a .part and its state file as an earlier run would have."""
    name = str(job["_path"]).rsplit("/", 1)[-1]
    dest.mkdir(exist_ok=True)
    (dest / partial_name(name)).write_bytes(part)
    text = state if isinstance(state, str) else json.dumps(state)
    (dest / state_name(name)).write_text(text)


def _state(job: dict[str, Any], atlas: Atlas, **changes: Any) -> dict[str, Any]:
    url = job["delivery"]["url"]
    state = {
        "version": 1,
        "jobId": job["id"],
        "source": display_url(url),
        "etag": atlas.pull.resources[job["_path"]].etag,
        "lastModified": None,
        "size": None,
        "sha1": job["hashes"][0]["hash"],
    }
    state.update(changes)
    return state


@pytest.mark.parametrize(
    ("status", "content_range"),
    [
        (206, "bytes 1000-{end}/" + "9" * 5000),
        (206, "bytes 1000-{end}/" + str(2**60)),
        (206, "bytes 1000-{end}/-5"),
        (416, "bytes */" + "9" * 5000),
    ],
)
def test_an_absurd_content_range_is_a_clean_failure(
    atlas: Atlas, creds: None, tmp_path: Path, status: int, content_range: str
) -> None:
    job = atlas.add("rs0.tar.gz")
    data = atlas.archives["rs0.tar.gz"]
    have = data if status == 416 else data[:1000]
    _plant_partial(atlas, job, tmp_path, have, _state(job, atlas))
    header = {"Content-Range": content_range.format(end=len(data) - 1)}
    fault = Fault(status=416, headers=header) if status == 416 else Fault(headers=header)
    atlas.pull.resources[job["_path"]].faults = [fault]
    result = run_cli(*fetch_args(atlas, tmp_path, "--retries", "0"))
    assert result.exit_code == 1 and "internal error" not in result.stderr, result.stderr
    (entry,) = _manifest_jobs(tmp_path)
    assert entry["outcome"] == "failed"
    assert "giving up" in entry["reason"] or "over 1 PiB" in entry["reason"]
    (request,) = atlas.pull.requests_for(job["_path"])
    assert request.headers["range"] == f"bytes={len(have)}-"  # the planted state was used


# -- bad local state -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "broken",
    [
        "{not json",
        "[" * 100_000,
        '{"manifestVersion": 1, "groupId": "g", "cluster": "c", "jobs": [{"id": "j",'
        ' "outcome": "verified", "reason": "", "files": [{"name": "../precious", "size": 1,'
        ' "sha1": "' + "a" * 40 + '"}]}]}',
    ],
    ids=["invalid-json", "nested-deep", "names-a-file-outside"],
)
def test_a_broken_manifest_is_kept_aside_and_rebuilt(
    atlas: Atlas, creds: None, tmp_path: Path, broken: str
) -> None:
    dest = tmp_path / "dest"
    atlas.add("rs0.tar.gz")
    assert run_cli(*fetch_args(atlas, dest)).exit_code == 0
    (dest / MANIFEST_NAME).write_text(broken)

    line = _one_line_error(run_cli("verify", str(dest)))
    assert str(dest / MANIFEST_NAME) in line and len(line) < 300

    before = len(atlas.pull.log)
    result = run_cli(*fetch_args(atlas, dest))
    assert result.exit_code == 0, result.stderr
    assert "kept it as" in result.stderr
    assert len(atlas.pull.log) == before  # the verified archive was not fetched again
    (aside,) = dest.glob(f".{MANIFEST_NAME}.unreadable-*")
    assert aside.read_text() == broken  # the operator's file is not lost
    assert (dest / "rs0.tar.gz").read_bytes() == atlas.archives["rs0.tar.gz"]
    assert run_cli("verify", str(dest)).exit_code == 0


LYING_STATES: dict[str, Callable[[dict[str, Any], Atlas], Any]] = {
    "wrong-job-id": lambda job, atlas: _state(job, atlas, jobId=new_id(), size=10**6),
    "size-smaller-than-part": lambda job, atlas: _state(job, atlas, size=10),
    "negative-size": lambda job, atlas: _state(job, atlas, size=-5),
    "other-version": lambda job, atlas: _state(job, atlas, version=99),
    "garbage-json": lambda job, atlas: "{{{ not json",
    "nested-deep": lambda job, atlas: "[" * 100_000,
    "right-ids-wrong-bytes": lambda job, atlas: _state(job, atlas),
}


@pytest.mark.parametrize("lie", list(LYING_STATES))
def test_a_lying_part_state_means_start_over(
    atlas: Atlas, creds: None, tmp_path: Path, lie: str
) -> None:
    job = atlas.add("rs0.tar.gz")
    data = atlas.archives["rs0.tar.gz"]
    _plant_partial(atlas, job, tmp_path, os.urandom(1000), LYING_STATES[lie](job, atlas))
    result = run_cli(*fetch_args(atlas, tmp_path, "--retries", "0"))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert sha1((tmp_path / "rs0.tar.gz").read_bytes()) == sha1(data)
    asked = [r.headers.get("range") for r in atlas.pull.requests_for(job["_path"])]
    if lie == "right-ids-wrong-bytes":
        # Nothing in the state gives it away: the SHA1 does, and the retry starts from zero.
        assert asked == ["bytes=1000-", None]
    else:
        assert asked == [None]  # the state was not believed: one whole download
    assert not (tmp_path / partial_name("rs0.tar.gz")).exists()
    assert not (tmp_path / state_name("rs0.tar.gz")).exists()


def test_a_dir_that_is_a_file(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    atlas.add("rs0.tar.gz")
    plain = tmp_path / "plain"
    plain.write_bytes(PRECIOUS)
    result = run_cli(*fetch_args(atlas, plain))  # click refuses it as a usage error
    assert result.exit_code == 2 and "is a file" in result.stderr
    assert "Traceback" not in result.stderr
    assert "not a directory" in _one_line_error(run_cli(*fetch_args(atlas, plain / "sub")))
    assert "not a directory" in _one_line_error(run_cli("verify", str(plain)))
    assert plain.read_bytes() == PRECIOUS
    assert not atlas.pull.log


def test_a_lock_that_cannot_be_opened_is_a_clear_error(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    # A real OSError from the lock, whoever runs the test (root included): the same mapping
    # a read-only DIR goes through.
    atlas.add("rs0.tar.gz")
    (tmp_path / LOCK_NAME).mkdir()
    line = _one_line_error(run_cli(*fetch_args(atlas, tmp_path)))
    assert f"cannot write {tmp_path / LOCK_NAME}: Is a directory" in line


def _run_without_privilege(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI where permission bits apply: as is, or in a user namespace when root.

    Root ignores permission bits. In a new user namespace our uid maps to nobody, keeps no
    capability over files outside it, and so meets the bits like any user.
    """
    command = [sys.executable, "-m", "fetcher.cli", *args]
    if os.geteuid() == 0:
        unshare = shutil.which("unshare")
        probe = (
            subprocess.run([unshare, "--user", "true"], capture_output=True) if unshare else None
        )
        if probe is None or probe.returncode != 0:
            pytest.skip("running as root without user namespaces: a read-only DIR cannot bite")
        command = [str(unshare), "--user", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=dict(os.environ))


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    made: list[Path] = []

    def make(path: Path) -> None:
        path.chmod(0o555)
        made.append(path)

    yield make
    for path in made:
        path.chmod(0o755)


def test_a_read_only_dir_is_a_clear_error_and_loses_nothing(
    atlas: Atlas, creds: None, tmp_path: Path, read_only: Callable[[Path], None]
) -> None:
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    job = atlas.add("rs0.tar.gz")
    assert run_cli(*fetch_args(atlas, full)).exit_code == 0
    manifest = (full / MANIFEST_NAME).read_bytes()
    read_only(empty)
    read_only(full)

    result = _run_without_privilege(fetch_args(atlas, empty))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        f"fetcher: error: cannot write {empty / LOCK_NAME}: Permission denied"
    )
    assert list(empty.iterdir()) == []

    # Reading still works; writing the manifest fails, and nothing already there is lost.
    assert _run_without_privilege(["verify", str(full)]).returncode == 0
    result = _run_without_privilege(fetch_args(atlas, full))
    assert result.returncode == 1, result.stderr
    assert "Permission denied" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (full / "rs0.tar.gz").read_bytes() == atlas.archives["rs0.tar.gz"]
    assert (full / MANIFEST_NAME).read_bytes() == manifest
    assert job["id"] in manifest.decode()


@pytest.mark.parametrize("why", ["read-only", "another user's lock file"])
def test_verify_deep_checks_a_dir_it_cannot_write_and_says_it_wrote_nothing(
    atlas: Atlas, creds: None, tmp_path: Path, read_only: Callable[[Path], None], why: str
) -> None:
    # Archives gathered on read-only storage (or another user's) are checked before a restore.
    full = tmp_path / "full"
    atlas.add("rs0.tar.gz")
    assert run_cli(*fetch_args(atlas, full)).exit_code == 0
    manifest = (full / MANIFEST_NAME).read_bytes()
    names = sorted(p.name for p in full.iterdir())
    if why == "read-only":
        read_only(full)
    else:  # a shared directory: anyone may write in it, but the lock is the other user's
        if os.geteuid() != 0:
            pytest.skip("giving the lock file to another user needs root")
        full.chmod(0o777)
        os.chown(full / LOCK_NAME, 54321, 54321)

    result = _run_without_privilege(["verify", "--deep", str(full)])
    assert result.returncode == 0, result.stderr
    assert "1 of 1 archives intact (exit 0)" in result.stdout
    assert result.stderr.strip() == (
        f"fetcher: {full} is not writable: checked, but its manifest was not updated"
    )
    assert (full / MANIFEST_NAME).read_bytes() == manifest
    assert sorted(p.name for p in full.iterdir()) == names
