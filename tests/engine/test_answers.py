"""fetcher.engine.answers: what a pull host's Content-Range, 416 and validators say."""

from __future__ import annotations

import pytest

from fetcher.engine.answers import content_range, if_range, range_size, unsatisfied_range


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("bytes 0-9/10", (0, 10)),
        ("BYTES  100-199/1000 ", (100, 1000)),
        ("bytes 0-9/*", (None, None)),  # no total: nothing to check the length against
        ("bytes 9-0/10", (None, None)),
        ("bytes 0-10/10", (None, None)),  # the end is past the last byte
        ("bytes \u0660-\u0669/\u0661\u0660", (None, None)),  # Arabic-Indic digits are not
        ("bytes 0-9/" + "9" * 30, (None, None)),
        ("items 0-9/10", (None, None)),
        (None, (None, None)),
    ],
)
def test_content_range(value: str | None, parsed: tuple[int | None, int | None]) -> None:
    assert content_range(value) == parsed


def test_a_416_says_the_length_and_if_range_takes_only_a_strong_etag() -> None:
    assert unsatisfied_range("bytes */4096") == 4096
    assert unsatisfied_range("bytes 0-1/2") is None
    assert if_range('"abc"', "Tue, 01 Dec 2026 10:00:00 GMT") == '"abc"'
    assert if_range('W/"abc"', "Tue, 01 Dec 2026 10:00:00 GMT") == "Tue, 01 Dec 2026 10:00:00 GMT"
    assert if_range(None, None) is None


def test_range_size_is_what_the_content_range_covers() -> None:
    assert range_size("bytes 0-9/10") == 10
    assert range_size("bytes 5-9/2000000") == 5
    assert range_size("bytes 9-5/10") is None and range_size("bytes */10") is None
    assert range_size(None) is None
