"""fetcher.names: the server-given file name checker, as a table: what may be created inside DIR."""

from __future__ import annotations

import os
from pathlib import PurePosixPath

import pytest

from fetcher.errors import UnsafeNameError
from fetcher.names import MAX_NAME_BYTES, check_name, choose_name, partial_name, state_name
from fetcher.service.legacy import parse_job
from tests.support import job_json

UNSAFE = [
    ("../x", "path separator"),
    ("..", "dot-dot"),
    (".", "dot-dot"),
    ("a/b", "path separator"),
    ("a\\b", "path separator"),
    ("%2e%2e%2fx", "path separator"),
    ("..%2Fetc", "hidden name"),
    ("x%2F..%2F..%2Fetc", "path separator"),
    ("a%5Cb", "path separator"),
    ("%252e%252e%252fx", "path separator"),  # decoded twice by a proxy and a tool
    ("%2525252525", "percent-encoded too many times"),
    ("/etc/passwd", "path separator"),
    ("C:foo", "drive path"),
    ("c:\\windows", "path separator"),
    ("a\x00b", "control"),
    ("%00x.tar.gz", "control"),
    ("a\nb", "control"),
    ("a\rb", "control"),
    ("\x1b[31mred.tar.gz", "control"),
    ("evil\u202egz.rat", "control"),  # right-to-left override shows it as "evil.tar.gz"
    ("zero\u200bwidth", "control"),
    ("line\u2028sep", "control"),
    ("a\ud800b", "control"),  # a lone surrogate: JSON carries it, no file system names it
    (".hidden", "hidden name"),
    (".x.tar.gz.part", "hidden name"),
    (" x.tar.gz", "space"),
    ("x.tar.gz ", "space"),
    ("a" * (MAX_NAME_BYTES + 1), "longer than"),
    ("é" * (MAX_NAME_BYTES // 2 + 1), "longer than"),  # counted in UTF-8 bytes
    ("manifest.json", "manifest"),
    ("MANIFEST.JSON", "manifest"),  # the same file on a case-insensitive file system
    ("", "empty"),
]

SAFE = [
    "Cluster0-shard-0.tar.gz",
    "rs0-5f0c0ffee0000000000000dd-1700000000.tar.gz",
    "a..b.tar.gz",
    "x..",
    "100%.tar.gz",
    "x%41.tar.gz",  # kept literally: nothing on a POSIX file system decodes it
    "café.tar.gz",
    "my archive.tar.gz",
    "manifest.json.tar.gz",
    "a" * MAX_NAME_BYTES,
]


@pytest.mark.parametrize(("name", "reason"), UNSAFE)
def test_unsafe_names_are_refused_with_a_reason(name: str, reason: str) -> None:
    with pytest.raises(UnsafeNameError, match=reason) as caught:
        check_name(name)
    message = str(caught.value)
    # One short line, and the name in it is escaped: no control character reaches a terminal.
    assert "\n" not in message and "\x1b" not in message and "\x00" not in message
    assert len(message) < 200


@pytest.mark.parametrize("name", SAFE)
def test_safe_names_stay_inside_the_directory(name: str) -> None:
    assert check_name(name) == name
    for stored in (name, partial_name(name), state_name(name)):
        path = PurePosixPath("/dest") / stored
        assert path.parent == PurePosixPath("/dest")
        assert os.path.normpath(path) == str(path)
        assert len(stored.encode()) <= 255  # NAME_MAX, with the .part.json suffix


def test_choose_name_takes_the_first_safe_candidate() -> None:
    assert choose_name(["../evil.tar.gz", "good.tar.gz", "other.tar.gz"]) == "good.tar.gz"


def test_choose_name_names_every_rejected_candidate() -> None:
    with pytest.raises(UnsafeNameError) as caught:
        choose_name(["../a", ".b"])
    assert "'../a'" in str(caught.value) and "'.b'" in str(caught.value)


def test_choose_name_without_candidates() -> None:
    with pytest.raises(UnsafeNameError, match="no file name"):
        choose_name([])


def test_an_unsafe_hash_name_yields_to_a_safe_url_segment() -> None:
    job = parse_job(
        job_json(
            url="https://pull.example/backup/restore/v2/pull/j/tok3n-abcdef/good.tar.gz",
            file_name="../../evil.tar.gz",
            sha1_hex="a" * 40,
        )
    )
    assert list(job.archives[0].names) == ["../../evil.tar.gz", "good.tar.gz"]
    assert choose_name(list(job.archives[0].names)) == "good.tar.gz"


def test_a_percent_encoded_url_segment_is_decoded_before_the_check() -> None:
    job = parse_job(
        job_json(
            url="https://pull.example/backup/restore/v2/pull/j/tok3n-abcdef/..%2F..%2Fevil.tar.gz",
            file_name=None,
            sha1_hex="a" * 40,
        )
    )
    assert list(job.archives[0].names) == ["../../evil.tar.gz"]
    with pytest.raises(UnsafeNameError):
        choose_name(list(job.archives[0].names))
