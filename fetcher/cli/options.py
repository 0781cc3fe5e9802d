"""The options the commands that talk to the API share, and the one step from them to clients.

`@api_options` declares them once and hands the command one `ApiOptions`; `connect` turns
that into the group, the API client and the restore-jobs client, in the order the checks must
come: usage first, then the project, then credentials.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import click

from fetcher.cli.progress import log_line
from fetcher.cli.render import REDACTOR
from fetcher.config import (
    DEFAULT_BASE_URL,
    Credentials,
    Settings,
    default_group,
    load_credentials,
    normalise_base_url,
)
from fetcher.redact import printable

# httpx (and the modules built on it) is imported by `connect`: `fetcher verify` needs none.
if TYPE_CHECKING:
    import httpx

    from fetcher.retry import RetryPolicy
    from fetcher.service.client import RestoreJobsClient

P = ParamSpec("P")
R = TypeVar("R")

_OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")


@dataclass(frozen=True)
class Runtime:
    """What a command takes from the process around it: the pauses between retries and polls,
    the clock and the writes of downloads. Tests pass their own:
    `CliRunner().invoke(main, args, obj=Runtime(...))`."""

    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)  # --wait-timeout's
    # How a download writes its .part file (a test's full disk).
    write: Callable[[int, bytes | memoryview], int] = field(default=os.write, repr=False)

    def policy(self, retries: int) -> RetryPolicy:
        """A retry policy that pauses with this runtime's sleep."""
        from fetcher.retry import RetryPolicy

        return RetryPolicy(retries=retries, sleep=self.sleep)


def runtime() -> Runtime:
    """The Runtime the command was invoked with (`obj`), else the process's own."""
    obj = click.get_current_context().obj
    return obj if isinstance(obj, Runtime) else Runtime()


def object_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Accept a MongoDB ObjectId (24 hex digits) before anything is requested with it."""
    if value is None or _OBJECT_ID.fullmatch(value):
        return value
    shown = printable(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise click.BadParameter(f"{shown!r} is not a MongoDB id (24 hexadecimal digits)")


@dataclass(frozen=True)
class ApiOptions:
    """The options every command that talks to the API shares, as given."""

    group: str | None
    profile: str | None
    cluster: str
    base_url: str
    ca_cert: Path | None
    timeout: float
    verbose: bool
    retries: int

    def settings(self, *, parallel: int = 4) -> Settings:
        """The settings of the run (the API root checked and normalised)."""
        return Settings(
            base_url=normalise_base_url(self.base_url),
            timeout=self.timeout,
            retries=self.retries,
            parallel=parallel,
            ca_cert=self.ca_cert,
            verbose=self.verbose,
        )


_API_OPTIONS = [
    click.option(
        "--group",
        "group",
        metavar="GROUP-ID",
        callback=object_id,
        help="Project (group) id [default: the profile's project_id].",
    ),
    click.option(
        "--profile",
        metavar="NAME",
        help="Atlas CLI profile for credentials and project (config.toml) [default: default].",
    ),
    click.option(
        "--cluster",
        required=True,
        metavar="CLUSTER",
        help="Cluster name (Atlas) or cluster id (Cloud Manager, Ops Manager).",
    ),
    click.option(
        "--base-url",
        envvar="FETCHER_BASE_URL",
        default=DEFAULT_BASE_URL,
        show_default=True,
        help="API root; env FETCHER_BASE_URL.",
    ),
    click.option(
        "--ca-cert",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Extra CA certificates (PEM), e.g. a private CA; env SSL_CERT_FILE.",
    ),
    click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=60.0,
        show_default=True,
        help="Seconds a connection may deliver nothing before the attempt is cut and retried.",
    ),
    click.option(
        "--verbose",
        "-v",
        is_flag=True,
        help="Log every request and answer on stderr (no secrets: safe to share).",
    ),
    click.option(
        "--retries",
        type=click.IntRange(min=0, max=100),
        default=5,
        show_default=True,
        help="Consecutive failed attempts retried (the count resets whenever bytes arrive).",
    ),
]
_API_FIELDS = tuple(f.name for f in fields(ApiOptions))


def api_options(func: Callable[Concatenate[ApiOptions, P], R]) -> Callable[..., R]:
    """Add the shared options before the command's own, and pass them as one ApiOptions."""

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> R:
        shared = ApiOptions(**{name: kwargs.pop(name) for name in _API_FIELDS})
        return func(shared, *args, **kwargs)

    for option in reversed(_API_OPTIONS):
        command = option(command)
    return command


def batch_option(help: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """--batch BATCH-ID, with the command's own words for what it does with it."""
    return click.option("--batch", "batch_id", metavar="BATCH-ID", callback=object_id, help=help)


def only_option() -> Callable[[Callable[P, R]], Callable[P, R]]:
    """--only PATTERN (repeatable): the archives of this host (fetch, unpack)."""
    return click.option(
        "--only",
        "only",
        multiple=True,
        metavar="PATTERN",
        help="Only the archives whose file name or replica set matches this shell pattern"
        " (repeatable).",
    )


@dataclass(frozen=True)
class Connection:
    """What a command that talks to the API works with, built once from its options."""

    group: str
    settings: Settings
    http: httpx.Client  # the API's: close it (`with connection.http:`)
    api: RestoreJobsClient
    log: Callable[[str], None] | None  # the --verbose log, for the pull client too
    runtime: Runtime

    def policy(self) -> RetryPolicy:
        """A retry policy for the run (--retries)."""
        return self.runtime.policy(self.settings.retries)


def connect(options: ApiOptions, *, batch_id: str | None, parallel: int = 4) -> Connection:
    """The group, and the API's HTTP client and restore-jobs client, after the usage checks."""
    from fetcher.service.client import RestoreJobsClient
    from fetcher.service.dialects import dialect_for
    from fetcher.service.http import api_client

    settings = options.settings(parallel=parallel)
    refusal = dialect_for(settings.base_url).no_batches
    if batch_id and refusal:
        raise click.UsageError(refusal)  # before any credentials are looked for
    group = _group(options.group, options.profile)
    credentials = load_credentials(os.environ, settings.base_url, profile=options.profile)
    REDACTOR.add(
        credentials.private_key
        if isinstance(credentials, Credentials)
        else credentials.client_secret
    )
    log = log_line if settings.verbose else None
    http = api_client(settings, credentials, log=log, redactor=REDACTOR)
    current = runtime()
    api = RestoreJobsClient(http, settings.base_url, policy=current.policy(settings.retries))
    return Connection(group, settings, http, api, log, current)


def _group(group: str | None, profile: str | None) -> str:
    """--group, else the project_id of the Atlas CLI profile."""
    if group is not None:
        return group
    found = default_group(os.environ, profile)
    if found is None:
        raise click.UsageError("give --group GROUP-ID (or a project_id in the Atlas CLI profile)")
    if not _OBJECT_ID.fullmatch(found):
        raise click.UsageError(
            "the Atlas CLI profile's project_id is not a MongoDB id (24 hexadecimal digits)"
        )
    return found
