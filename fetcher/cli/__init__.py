"""The `fetcher` command: click only. One module per command (list, fetch, unpack, verify), the
options they share and the step to clients (options.py), what they print (render.py), the
terminal reporter (progress.py). Every error becomes one line and its exit code here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import click

from fetcher import __version__
from fetcher.cli.fetch import fetch_command
from fetcher.cli.list import list_command
from fetcher.cli.options import Runtime
from fetcher.cli.progress import TerminalReporter
from fetcher.cli.render import shown, silence_stdout
from fetcher.cli.unpack import unpack_command
from fetcher.cli.verify import verify_command
from fetcher.errors import FetcherError

__all__ = ["Runtime", "TerminalReporter", "handle_errors", "main"]

P = ParamSpec("P")
R = TypeVar("R")


# httpx is not imported here (`fetcher verify` needs none): its errors are known by module.
_HTTP_MODULES = frozenset({"httpx", "httpcore", "h11"})


def _fail(message: str, code: int) -> None:
    click.echo(f"fetcher: error: {shown(message)}", err=True)
    sys.exit(code)


def _interrupted() -> NoReturn:
    """Say so and end the process now, as kill -9 would, which every transfer survives.

    Worker threads may sit in a socket read for up to --timeout; waiting for them would keep
    the user waiting, and releasing the lock before they stop would let a second fetch in.
    Ending the process drops the lock and stops them at the same instant.
    """
    with contextlib.suppress(OSError):
        click.echo("fetcher: interrupted; run the same command again to resume", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(130)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn every error into one line on stderr and its documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise  # click prints usage errors itself, with exit 2
        except FetcherError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _interrupted()
        except BrokenPipeError:
            silence_stdout()
            sys.exit(1)
        except OSError as exc:
            _fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), 1)
        except Exception as exc:
            if os.environ.get("FETCHER_DEBUG"):
                raise
            if type(exc).__module__.split(".")[0] in _HTTP_MODULES:
                # h11's protocol errors quote the header or line they refuse: the class alone.
                _fail(f"the connection failed ({type(exc).__name__})", 1)
            _fail(
                f"internal error ({type(exc).__name__}: {exc}); set FETCHER_DEBUG=1 for details", 1
            )
        raise AssertionError("unreachable")

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fetcher")
def main() -> None:
    """Download and verify MongoDB restore archives (Atlas, Cloud Manager, Ops Manager).

    Credentials come from the environment, never from the command line: a service account
    (MONGODB_ATLAS_CLIENT_ID, MONGODB_ATLAS_CLIENT_SECRET) or an API key pair
    (MONGODB_ATLAS_PUBLIC_API_KEY, MONGODB_ATLAS_PRIVATE_API_KEY; or MCLI_*), else an Atlas
    CLI profile (--profile) or ~/.netrc. An API root ending in /api/atlas/v2 speaks Atlas
    Cloud Backup's API; any other, the legacy restore-jobs API.
    Exit codes: 0 all verified, 1 error, 2 usage, 3 incomplete, 4 integrity failure.
    """


def _register(command: click.Command) -> None:
    """Add a command to `main`, its every error mapped to one line and an exit code."""
    assert command.callback is not None
    command.callback = handle_errors(command.callback)
    main.add_command(command)


for _command in (list_command, fetch_command, unpack_command, verify_command):
    _register(_command)
