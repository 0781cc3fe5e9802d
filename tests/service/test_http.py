"""fetcher.service.http: the API client, its Digest bound to its origin, no redirect followed."""

from __future__ import annotations

import httpx

from fetcher.config import Credentials, Settings
from fetcher.redact import origin
from fetcher.service.http import api_client
from tests.conftest import Atlas
from tests.pullserver import Fault, PullServer
from tests.support import JOBS_PATH, PRIVATE_KEY, PUBLIC_KEY

# == RestoreJobsClient against a local server speaking HTTP Digest =================================


def test_client_never_follows_a_redirect_by_itself(atlas: Atlas) -> None:
    settings = Settings(base_url=atlas.base_url)
    with api_client(settings, Credentials(PUBLIC_KEY, PRIVATE_KEY)) as http:
        assert http.follow_redirects is False
        assert isinstance(http.auth, httpx.DigestAuth)


# == hostile input and secrets (issue 4) ===========================================================


# -- credentials -----------------------------------------------------------------------------


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


def test_the_verbose_log_shows_no_user_info_of_an_api_url(atlas: Atlas) -> None:
    lines: list[str] = []
    settings = Settings(base_url=atlas.base_url)
    with api_client(settings, Credentials(PUBLIC_KEY, PRIVATE_KEY), log=lines.append) as http:
        url = atlas.server.url_for(JOBS_PATH).replace("://", "://admin:S3cretPW@")
        http.get(url, params={"pageNum": "2"})
    assert lines and all("S3cretPW" not in line and "admin" not in line for line in lines)
    assert any(f"{JOBS_PATH}?pageNum=2" in line for line in lines)  # path and query stay
