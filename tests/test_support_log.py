"""`--verbose`: every request and answer on stderr, with every kind of secret left out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from fetcher.cli import main
from tests.conftest import Atlas, api_args, fetch_args, run_cli
from tests.pullserver import Fault
from tests.support import PRIVATE_KEY, make_archive, new_id, sha1
from tests.test_security import BEARER, _add_job, _add_ops_manager_job

SIGNATURE = "s1gnature-d34db33f-9f8e7d"


def _planted(atlas: Atlas) -> list[str]:
    """A batch whose links carry every kind of secret; return the secrets."""
    plain = atlas.add("Cluster0-config.tar.gz")
    atlas.pull.resources[plain["_path"]].faults = [Fault(drop_after=20_000)]  # a resume
    om = _add_ops_manager_job(atlas, "Cluster0-shard-0.tar.gz")
    signed = _add_job(
        atlas,
        "Cluster0-shard-1.tar.gz",
        file_name="Cluster0-shard-1.tar.gz",
        data=make_archive("Cluster0-shard-1"),
        query=f"?X-Amz-Signature={SIGNATURE}&X-Amz-Credential=AKIAEXAMPLE",
    )
    tokens = [str(job["_path"]).split("/")[-2] for job in (plain, om, signed)]
    return [*tokens, BEARER, PRIVATE_KEY, SIGNATURE, "AKIAEXAMPLE"]


def test_verbose_logs_every_request_and_no_secret(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    secrets = _planted(atlas)

    result = run_cli(*fetch_args(atlas, tmp_path, "--verbose"))

    assert result.exit_code == 0, result.stderr
    log = [line for line in result.stderr.splitlines() if line.startswith("fetcher: ")]
    sent = [line for line in log if line.startswith("fetcher: > ")]
    answered = [line for line in log if line.startswith("fetcher: < ")]
    served = len(atlas.pull.log)
    api_requests = atlas.gate.challenges + atlas.gate.accepted
    assert len(sent) == len(answered) == served + api_requests
    # The API's Digest dance, shown as what it is, with neither the key nor the response.
    assert any(
        re.search(r"< 401 unauthorized for GET \S+/restoreJobs\?", line, re.IGNORECASE)
        for line in log
    ), "\n".join(log)
    assert any("WWW-Authenticate: Digest (challenge)" in line for line in log)
    assert any("Authorization: Digest (hidden)" in line for line in log)
    # The pull side: the Ops Manager bearer by its scheme only, the resume with its Range.
    assert any("Authorization: Bearer (hidden)" in line for line in log)
    assert any("Range: bytes=20000-" in line for line in log)
    assert any(re.search(r"< 206 Partial Content .* in \d+\.\d{3} s", line) for line in log)
    assert any("Content-Range: bytes 20000-" in line for line in log)
    assert any("/…/Cluster0-shard-1.tar.gz [" in line for line in sent)  # origin and name only
    everything = result.stdout + result.stderr
    for secret in secrets:
        assert secret not in everything, secret
    for digest_field in ("response=", "cnonce=", 'nonce="', "username="):
        assert digest_field not in everything, digest_field  # no Digest header, either way
    for word in ("response=", "cnonce", "nonce=", "X-Amz", "?"):
        assert not any(word in line for line in sent + answered if "/restoreJobs" not in line), word


def test_verbose_on_list_and_quiet_without_it(atlas: Atlas, creds: None, tmp_path: Path) -> None:
    secrets = _planted(atlas)

    listed = run_cli(*api_args(atlas, "list", "--verbose"))
    silent = run_cli(*fetch_args(atlas, tmp_path))

    assert listed.exit_code == 0
    assert "fetcher: > GET" in listed.stderr and "fetcher: < 200 OK" in listed.stderr
    assert "fetcher: >" not in silent.stderr  # no log unless asked for
    for secret in secrets:
        assert secret not in listed.stdout + listed.stderr


def test_a_redirect_is_logged_without_the_token_it_leads_to(
    atlas: Atlas, creds: None, tmp_path: Path
) -> None:
    data = make_archive("rs0")
    token = new_id()
    moved = f"/backup/restore/v2/pull/{new_id()}/{token}/rs0.tar.gz"
    atlas.pull.add(moved, data)
    job = atlas.add("rs0.tar.gz", data, batch_id=None)
    atlas.pull.resources[job["_path"]].faults = [Fault(redirect_to=atlas.pull.url(moved))]

    result = run_cli(*api_args(atlas, "fetch", "--job", job["id"], "--dest", str(tmp_path), "-v"))

    assert result.exit_code == 0, result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if "Location:" in ln]
    assert "rs0.tar.gz" in line and token not in line
    assert sha1((tmp_path / "rs0.tar.gz").read_bytes()) == sha1(data)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_is_click_s_own(shell: str) -> None:
    result = CliRunner().invoke(
        main, [], prog_name="fetcher", env={"_FETCHER_COMPLETE": f"{shell}_source"}
    )
    assert result.exit_code == 0
    assert "_FETCHER_COMPLETE" in result.output and "fetcher" in result.output


def test_completion_offers_the_commands_and_their_options() -> None:
    env = {"_FETCHER_COMPLETE": "bash_complete", "COMP_WORDS": "fetcher f", "COMP_CWORD": "1"}
    words = CliRunner().invoke(main, [], prog_name="fetcher", env=env).output
    assert "plain,fetch" in words
    env.update(COMP_WORDS="fetcher verify --d", COMP_CWORD="2")
    assert "plain,--deep" in CliRunner().invoke(main, [], prog_name="fetcher", env=env).output
