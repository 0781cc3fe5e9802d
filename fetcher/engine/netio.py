"""The pull client's connections: httpcore's own sockets, read in bulk.

httpcore reads a connection 64 KiB at a time, and a TLS socket gives one record (16 KiB at
most) per read whatever is asked. Every read then goes through h11, httpcore and httpx in
Python, so a body that arrives through httpx (the pieces of --connections, chunked bodies)
cost several CPU-seconds a GiB over HTTPS on top of the decryption. A Stream here waits for
the first bytes as httpcore's would, then takes every record already received without waiting
again, up to READ_BYTES: 1 GiB over HTTPS on two connections from the bench's nginx took
7.7-10 s before, 2.9-3.4 s after, about what one connection takes (2 vCPUs, nginx on them).

Everything else (connecting, TLS, the socket the single-connection engine reads directly, the
checks httpcore makes before reusing a connection) is httpcore's SyncBackend, unchanged.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from fetcher.engine.stream import direct_socket, drain

# The most one read returns. h11 takes any amount, so this is not httpcore's 64 KiB: up to
# four TLS records a read saved 40% of the time above, up to sixteen another quarter.
READ_BYTES = 256 * 1024
# Where a read lands before its bytes are copied out: one buffer per thread that reads (a
# connection is read by one thread at a time), so that idle connections in the pool hold none.
_scratch = threading.local()


class Backend(httpcore.NetworkBackend):
    """httpcore's sync backend, whose streams read in bulk (see Stream)."""

    def __init__(self, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner if inner is not None else httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        return Stream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return Stream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class Stream(httpcore.NetworkStream):
    """A connection whose reads return every byte already received, up to READ_BYTES.

    The first read waits (up to `timeout`) as httpcore's does; over TLS, further records are
    then read without waiting until none is left. An error met after some bytes were read is
    kept for the next read, so that those bytes are not lost with it.
    """

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner
        self._sock = direct_socket(inner)  # None: TLS in TLS (an HTTPS proxy), httpcore reads
        self._error: OSError | None = None  # met after the bytes the last read returned
        self._ended = False  # the peer's close_notify was read with the last bytes

    def take_error(self) -> OSError | None:
        """The error met after the bytes the last read returned, for a caller that reads the
        socket itself from here on (fetcher.engine.stream.read_body): it is no longer kept here."""
        error, self._error = self._error, None
        return error

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        sock = self._sock
        if sock is None:
            return self._inner.read(max_bytes, timeout)
        try:
            if (error := self.take_error()) is not None:
                raise error
            buffer = getattr(_scratch, "buffer", None)
            if buffer is None:
                buffer = _scratch.buffer = bytearray(READ_BYTES)
            view = memoryview(buffer)
            sock.settimeout(timeout)
            n = sock.recv_into(view)
            if n and isinstance(sock, ssl.SSLSocket):
                more, self._error, self._ended = drain(sock, view[n:])
                n += more
                sock.settimeout(timeout)
            return bytes(view[:n])
        except TimeoutError as exc:  # the names and kinds httpcore's own read raises
            raise httpcore.ReadTimeout(exc) from exc
        except OSError as exc:
            raise httpcore.ReadError(exc) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return Stream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and (self._error is not None or self._ended):
            # httpcore asks this of an idle connection before reusing it. One whose next read
            # can only fail or end (the peer reset it, closed TLS, or its TLS broke after the
            # last response) is dropped, as one the server closed would be: the sign of it
            # was read with the last bytes, so the socket itself shows nothing.
            return True
        return self._inner.get_extra_info(info)


def read_in_bulk(client: httpx.Client) -> bool:
    """Have the client's direct connections read through Stream; False when it cannot.

    httpx has no public way to give its default transport a network backend (a `transport=`
    would turn off the proxies from the environment), so this replaces the backend of the
    transport's connection pool. An httpx or httpcore that names these differently leaves the
    client as it was: correct, slower over HTTPS (tests/engine/test_netio.py then fails).
    """
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    if type(pool) is not httpcore.ConnectionPool:
        return False
    inner = getattr(pool, "_network_backend", None)
    if not isinstance(inner, httpcore.NetworkBackend):
        return False
    pool._network_backend = Backend(inner)
    return True
