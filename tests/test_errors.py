"""fetcher.errors: each error's documented exit code."""

from __future__ import annotations

import pytest

from fetcher import errors


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.FetcherError, 1),
        (errors.ConfigError, 2),
        (errors.ApiError, 1),
        (errors.AuthError, 1),
        (errors.NotFoundError, 1),
        (errors.TransferError, 1),
        (errors.UnsafeNameError, 1),
        (errors.IntegrityError, 4),
        (errors.ManifestError, 1),
    ],
)
def test_exit_codes_are_the_documented_ones(error: type[errors.FetcherError], code: int) -> None:
    assert error("what went wrong").exit_code == code
    assert str(error("what went wrong")) == "what went wrong"
