"""fetcher.redact: secrets masked, origins compared, server text made printable."""

from __future__ import annotations

from fetcher.redact import MASK, Redactor, bare_url, display_url, origin, printable
from tests.support import new_id

# -- redaction -------------------------------------------------------------------------------


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


def test_bare_url_drops_user_info_and_query_even_from_what_does_not_parse() -> None:
    assert bare_url("htps://admin:S3cretPW@host/api?k=v") == "htps://host/api"
    assert bare_url("https://a:b@c@host:8443/api") == "https://host:8443/api"
    assert bare_url("https://host/api\x00\x1b") == "https://host/api??"
    assert bare_url("no scheme at all") == "no scheme at all"
    assert bare_url("https://host/" + "a" * 200).endswith("...")
