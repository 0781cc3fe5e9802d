"""One exception root; each subclass carries its data and its exit code."""

from __future__ import annotations

# Exit codes, documented in the README. Only fetcher.cli turns them into a process status.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
EXIT_INTEGRITY = 4


class FetcherError(Exception):
    """Root of every error fetcher reports to a user as one line."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(FetcherError):
    """Settings or credentials are missing or invalid."""

    exit_code = EXIT_USAGE


class ApiError(FetcherError):
    """The restore-jobs API answered with an error or something unreadable."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthError(ApiError):
    """The API refused the credentials (401/403)."""


class NotFoundError(ApiError):
    """The group, cluster or job does not exist (404)."""


class TransferError(FetcherError):
    """An archive could not be downloaded (after retries, or not retryable)."""


class DiskSpaceError(TransferError):
    """The destination is short of space, before or during a transfer."""


class UnsafeNameError(FetcherError):
    """A server-given file name could escape the destination directory."""


class IntegrityError(FetcherError):
    """Bytes on disk do not match the SHA1 they must have."""

    exit_code = EXIT_INTEGRITY


class LockedError(FetcherError):
    """Another fetch holds the destination directory."""


class ManifestError(FetcherError):
    """The manifest is missing, unreadable or of an unknown shape."""
