"""fetcher.cli's failures: one line on stderr and the documented exit code, whatever the command."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from fetcher.cli import handle_errors
from fetcher.redact import MASK
from tests.atlasv2 import AtlasV2
from tests.conftest import Atlas, api_args, fetch_args, run_cli, v2_args
from tests.pullserver import Fault, PullServer
from tests.support import (
    API_ROOT,
    BATCH,
    JOBS_PATH,
    PRIVATE_KEY,
    PUBLIC_KEY,
    api_base,
    api_job,
    list_args,
    one_line_error,
    only_line,
    page,
    results_body,
    write_netrc,
)

# == a batch end to end, in-process ================================================================


def test_exit_code_precedence_integrity_over_error_over_incomplete(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    atlas.add("mismatch.tar.gz", published_sha1="0" * 40)
    gone = atlas.add("gone.tar.gz")
    atlas.pull.resources.pop(str(gone["_path"]))  # the pull host answers 404
    atlas.add("expired.tar.gz", delivery_status="EXPIRED")
    assert run_cli(*fetch_args(atlas, tmp_path / "a")).exit_code == 4
    atlas.jobs.pop(0)
    result = run_cli(*fetch_args(atlas, tmp_path / "b"))
    assert result.exit_code == 1
    atlas.jobs.pop(0)
    assert run_cli(*fetch_args(atlas, tmp_path / "c")).exit_code == 3


def test_missing_credentials(
    atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MONGODB_ATLAS_PRIVATE_API_KEY")
    monkeypatch.delenv("MONGODB_ATLAS_PUBLIC_API_KEY")
    result = run_cli(*fetch_args(atlas, tmp_path))
    assert result.exit_code == 2
    assert "MONGODB_ATLAS_PUBLIC_API_KEY" in only_line(result.stderr)
    monkeypatch.setenv("MCLI_PUBLIC_API_KEY", "testpublic")
    monkeypatch.setenv("MCLI_PRIVATE_API_KEY", PRIVATE_KEY)
    atlas.add("a.tar.gz")
    assert run_cli(*fetch_args(atlas, tmp_path)).exit_code == 0


def test_wrong_credentials_exit_1_without_traceback(
    atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONGODB_ATLAS_PRIVATE_API_KEY", "not-the-key")
    atlas.add("a.tar.gz")
    result = run_cli(*fetch_args(atlas, tmp_path))
    assert result.exit_code == 1
    assert "401" in only_line(result.stderr)
    assert "not-the-key" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["fetch", "--group", "g", "--cluster", "c"],
        ["fetch", "--group", "g", "--cluster", "c", "--batch", "b", "--job", "j"],
        ["fetch", "--group", "g", "--cluster", "c", "--batch", "b", "--parallel", "0"],
        ["list", "--cluster", "c"],
        ["fetch", "--group", "g", "--cluster", "c", "--batch", "b", "--base-url", "ftp://x"],
    ],
)
def test_usage_errors_exit_2(args: list[str], creds: None) -> None:
    assert run_cli(*args).exit_code == 2


# == while a restore runs: readiness first, --wait, maxDownloads, ids, the journal =================


# -- ids are checked before any request --------------------------------------------------------


_BAD_IDS = [
    ("--group", "my-project"),
    ("--group", "5f0c0ffee0000000000000a"),  # 23 digits
    ("--batch", "6a1b2c3d4e5f60718293a4b5z"),
    ("--batch", "../../etc"),
]


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [("list", *bad) for bad in _BAD_IDS]
    + [("fetch", *bad) for bad in _BAD_IDS]
    + [("fetch", "--job", "6a1b2c3d4e5f60718293a4g5")],
)
def test_ids_that_are_not_object_ids_are_usage_errors(
    atlas: Atlas, creds: None, tmp_path: Path, command: str, option: str, value: str
) -> None:
    args = api_args(atlas, command)
    if command == "fetch":
        args += ["--dest", str(tmp_path / "d")]
    if option == "--group":
        args[args.index("--group") + 1] = value
        if command == "fetch":
            args += ["--batch", BATCH]
    else:
        args += [option, value]

    result = run_cli(*args)

    assert result.exit_code == 2
    assert option in result.stderr and "24 hexadecimal digits" in result.stderr
    assert "Traceback" not in result.stderr
    assert atlas.gate.challenges == 0 and atlas.gate.accepted == 0  # not one request
    assert not (tmp_path / "d").exists()


# == Atlas Cloud Backup (Admin API v2): an archive per replica set, no hash ========================


def test_batch_is_a_usage_error_that_points_to_job(atlas_v2: AtlasV2, creds: None) -> None:
    result = run_cli(*v2_args(atlas_v2, "fetch", "--batch", "6a1b2c3d4e5f60718293a4b5"))
    assert result.exit_code == 2
    assert "--job JOB-ID" in result.stderr
    assert not atlas_v2.api_requests


def test_a_refused_service_account_is_one_line_without_the_secret(
    atlas_v2: AtlasV2, service_account: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONGODB_ATLAS_CLIENT_SECRET", "mdb_sa_sk_wrong-secret-9876")
    result = run_cli(*v2_args(atlas_v2, "list"))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "wrong-secret" not in result.stderr + result.output


# == hostile input and secrets (issue 4) ===========================================================


PRECIOUS = b"precious bytes outside DIR\n"


# -- helpers ---------------------------------------------------------------------------------


def _fetch_batch_args(base_url: str, dest: Path, *extra: str) -> list[str]:
    return ["fetch", *list_args(base_url)[1:], "--batch", BATCH, "--dest", str(dest), *extra]


# -- credentials -----------------------------------------------------------------------------


def test_a_netrc_parse_error_does_not_echo_the_file(
    atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MONGODB_ATLAS_PUBLIC_API_KEY")
    monkeypatch.delenv("MONGODB_ATLAS_PRIVATE_API_KEY")
    text = "machine localhost login u password Pw-SECRET-one\nSECRET-two-token extra\n"
    monkeypatch.setenv("NETRC", str(write_netrc(tmp_path, text)))
    result = run_cli(*list_args(atlas.base_url))
    line = one_line_error(result, code=2)
    assert "line 2" in line
    assert "SECRET" not in result.stdout + result.stderr


# -- redaction -------------------------------------------------------------------------------


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
        list_args(api_base(httpserver), "--json"),
        _fetch_batch_args(api_base(httpserver), tmp_path / "dest", "--json"),
    ):
        line = one_line_error(run_cli(*args))
        assert PRIVATE_KEY not in line and MASK in line and "INVALID_KEY" in line
        assert "\x1b" not in line  # the server does not get to clear the operator's screen


# -- TLS ---------------------------------------------------------------------------------------


def test_an_unreadable_ca_file_is_a_usage_error(creds: None, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    result = run_cli(*list_args("https://api.example/api/atlas/v1.0", "--ca-cert", str(bad)))
    assert "cannot load CA certificates" in one_line_error(result, code=2)


# -- bad API input -----------------------------------------------------------------------------


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
    "job-not-an-object": (200, results_body(["x"]), "application/json", "not a JSON object"),
    "job-without-id": (200, results_body([api_job(id=None)]), "application/json", "no valid id"),
    "job-id-not-a-string": (200, results_body([api_job(id=5)]), "application/json", "no valid id"),
    "hash-too-short": (
        200,
        results_body([api_job(hashes=[{"fileName": "a", "hash": "abc", "typeName": "SHA1"}])]),
        "application/json",
        "not SHA1",
    ),
    "hash-not-hex": (
        200,
        results_body([api_job(hashes=[{"fileName": "a", "hash": "z" * 40, "typeName": "SHA1"}])]),
        "application/json",
        "not SHA1",
    ),
    "hashes-not-a-list": (
        200,
        results_body([api_job(hashes="a" * 40)]),
        "application/json",
        "not a list",
    ),
    "status-not-a-string": (
        200,
        results_body([api_job(statusName=["FINISHED"])]),
        "application/json",
        "not a string",
    ),
    "expiry-unreadable": (
        200,
        results_body([api_job(delivery_expires="soon")]),
        "application/json",
        "expiry",
    ),
    "url-bad-port": (
        200,
        results_body([api_job(delivery_url="https://pull.example:99999/p/t/rs0.tar.gz")]),
        "application/json",
        "cannot be parsed",
    ),
    "url-bad-ipv6": (
        200,
        results_body([api_job(delivery_url="https://[::1/p/t/rs0.tar.gz")]),
        "application/json",
        "cannot be parsed",
    ),
    "url-with-userinfo": (
        200,
        results_body([api_job(delivery_url="https://u:pw@pull.example/p/t/rs0.tar.gz")]),
        "application/json",
        "credentials",
    ),
    "url-not-http": (
        200,
        results_body([api_job(delivery_url="file:///etc/passwd")]),
        "application/json",
        "not HTTP",
    ),
    "url-no-host": (
        200,
        results_body([api_job(delivery_url="https:///p/t/rs0.tar.gz")]),
        "application/json",
        "no host",
    ),
    "bearer-with-crlf": (
        200,
        results_body(
            [
                api_job(
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
    args = list_args(api_base(httpserver), "--retries", "0")
    if command == "fetch":
        args = _fetch_batch_args(api_base(httpserver), tmp_path / "dest", "--retries", "0")
    line = one_line_error(run_cli(*args))
    assert message in line
    assert "tok3n" not in line and "pw@" not in line  # no URL quoted


def test_an_enormous_api_answer_is_cut_off(httpserver: HTTPServer, creds: None) -> None:
    # 17 MiB, streamed with no length: over the CLI's 16 MiB cap only once read.
    chunks = (b" " * (1024 * 1024) for _ in range(17))
    httpserver.expect_request(JOBS_PATH).respond_with_response(
        Response(chunks, 200, content_type="application/json")
    )
    assert "larger than 16 MiB" in one_line_error(run_cli(*list_args(api_base(httpserver))))


def test_an_announced_enormous_answer_is_refused_unread(other: PullServer, creds: None) -> None:
    other.add(JOBS_PATH, b'{"results": []}', faults=[Fault(content_length=str(10**12))])
    line = one_line_error(run_cli(*list_args(other.url(API_ROOT))))
    assert "larger than 16 MiB" in line


def test_a_next_link_loop_is_an_error(httpserver: HTTPServer, creds: None) -> None:
    url = httpserver.url_for(JOBS_PATH) + "?pageNum=1&itemsPerPage=100"
    httpserver.expect_request(JOBS_PATH).respond_with_json(page([api_job()], next_href=url))
    assert "loops" in one_line_error(run_cli(*list_args(api_base(httpserver))))


# -- bad local state -----------------------------------------------------------------------------


def test_a_dir_that_is_a_file(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    atlas.add("rs0.tar.gz")
    plain = tmp_path / "plain"
    plain.write_bytes(PRECIOUS)
    result = run_cli(*fetch_args(atlas, plain))  # click refuses it as a usage error
    assert result.exit_code == 2 and "is a file" in result.stderr
    assert "Traceback" not in result.stderr
    assert "not a directory" in one_line_error(run_cli(*fetch_args(atlas, plain / "sub")))
    assert "not a directory" in one_line_error(run_cli("verify", str(plain)))
    assert plain.read_bytes() == PRECIOUS
    assert not atlas.pull.log


# -- control characters and user info are refused before any request (issue 19) ------------------


@pytest.mark.parametrize("suffix", ["\r", "\n", "\t", "\x7f"])  # NUL: no env holds one
def test_a_private_key_with_a_control_character_is_a_usage_error_before_any_request(
    atlas: Atlas, creds: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    # `$(cat key)` of a file with CRLF endings: h11 refused the Digest header and quoted it.
    atlas.add("a.tar.gz")
    monkeypatch.setenv("MONGODB_ATLAS_PRIVATE_API_KEY", PRIVATE_KEY + suffix)
    result = run_cli(*fetch_args(atlas, tmp_path / "d"))
    line = one_line_error(result, code=2)
    assert "MONGODB_ATLAS_PRIVATE_API_KEY" in line and "control character" in line
    assert "Digest" not in result.stderr and PRIVATE_KEY not in result.stderr
    assert atlas.gate.challenges == 0 and atlas.gate.accepted == 0  # not one request


def test_a_public_key_with_a_line_feed_is_a_usage_error(
    atlas: Atlas, creds: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONGODB_ATLAS_PUBLIC_API_KEY", PUBLIC_KEY + "\nX-Injected: 1")
    line = one_line_error(run_cli(*list_args(atlas.base_url)), code=2)
    assert "public API key" in line and "X-Injected" not in line
    assert atlas.gate.challenges == 0 and atlas.gate.accepted == 0


def test_a_base_url_with_a_control_character_is_a_usage_error(atlas: Atlas, creds: None) -> None:
    line = one_line_error(run_cli(*list_args(atlas.base_url + "\r\nHost: evil")), code=2)
    assert "--base-url" in line and "control character" in line
    assert atlas.gate.challenges == 0 and atlas.gate.accepted == 0


@pytest.mark.parametrize(
    "url",
    [
        "htps://admin:S3cretPW@host/api",
        "https://admin:S3cretPW@host/api",
        "http://admin:S3cretPW@h:x/",
    ],
)
def test_a_base_url_is_never_echoed_with_its_password(creds: None, url: str) -> None:
    result = run_cli(*list_args(url))
    line = one_line_error(result, code=2)
    assert "--base-url" in line
    assert "S3cretPW" not in result.stdout + result.stderr
    assert "admin" not in result.stdout + result.stderr


def test_user_info_in_the_api_root_is_refused_and_says_where_credentials_go(
    atlas: Atlas, creds: None
) -> None:
    root = atlas.base_url.replace("://", "://admin:S3cretPW@")
    line = one_line_error(run_cli(*list_args(root)), code=2)
    assert "user info" in line and "environment" in line and "S3cretPW" not in line
    assert atlas.gate.challenges == 0 and atlas.gate.accepted == 0


def test_an_http_error_that_escapes_is_one_line_that_quotes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # What h11 says of a header it refuses: the whole header, a Digest response and all.
    quoted = 'Illegal header value b\'Digest username="pub\\r", response="664515e6ab"\''

    @handle_errors
    def command() -> None:
        raise httpx.LocalProtocolError(quoted)

    with pytest.raises(SystemExit) as exited:
        command()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "LocalProtocolError" in err
    assert "Digest" not in err and "664515e6ab" not in err
