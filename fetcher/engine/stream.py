"""The download engine: an HTTP body received into a ring of buffers, written and hashed beside.

transfer.py decides what to ask for and what the answer means; this module only moves bytes
from the socket to the disk and the digest as fast as the hardware allows.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from fetcher.engine.ring import Ring, Sink, Stage, feed

# The body goes through a ring of BLOCKS buffers of BLOCK bytes (see BodyWriter): one socket fill,
# one write and one hash update each. The ring is all a download holds, whatever the size.
BLOCK = 1024 * 1024
BLOCKS = 6
# Start the kernel writing the file out every so often, so that the disk works during the
# transfer and the final fsync has little left to do (see _start_writeback).
WRITEBACK_EVERY = 16 * 1024 * 1024
PAUSE_FLUSH = 0.05  # seconds a stream may pause before what it sent so far is written
_FADVISE = getattr(os, "posix_fadvise", None)  # Linux and most Unixes; not macOS
_SIZE = re.compile(r"[0-9]{1,19}")  # ASCII digits only, and few enough for int()

Write = Callable[[int, bytes | memoryview], int]


class BodyWriter:
    """Writes, hashes and (given a sink) checks the body on threads of its own, beside the read.

    The body moves through a ring of BLOCKS buffers of BLOCK bytes (see ring.Ring), so memory
    stays the same whatever the archive's size: the network side fills a free buffer (straight
    from the socket when it can, see `read_body`), one thread writes it whole, the next hashes
    it, and the next (the archive check) reads it before it comes back. Hashing follows writing,
    so the digest covers exactly the bytes on disk, even after a failed write; `written` counts
    them. hashlib, zlib and os.write release the GIL, so the read, the write, the hash and the
    check of four buffers overlap on separate cores.
    """

    def __init__(
        self, fd: int, digest: Any, offset: int, write: Write, sink: Sink | None = None
    ) -> None:
        self._fd, self._digest, self._write = fd, digest, write
        self.written = offset  # on disk and hashed; final once close() returns
        self._offset = self._flushed = offset  # written by the write stage; writeback started
        stages: list[Stage] = [self._write_block, self._hash_block]
        if sink is not None:
            stages.append(feed(sink))
        self._ring = Ring(stages, blocks=BLOCKS, size=BLOCK, name="fetcher-body")
        self._current: int | None = None  # the buffer being filled, and how full it is
        self._filled = 0

    def space(self) -> memoryview:
        """The free part of the buffer being filled (waiting for one when all are busy)."""
        if self._current is None:
            self._current, self._filled = self._ring.get(), 0
        return memoryview(self._ring.buffers[self._current])[self._filled :]

    def commit(self, n: int) -> None:
        """Count `n` bytes just put into `space()`; a full buffer goes to be written."""
        self._filled += n
        if self._filled == BLOCK:
            self.flush()

    def put(self, chunk: bytes | memoryview) -> None:
        """Copy a chunk in (for bodies that do not come straight from the socket)."""
        view = memoryview(chunk)
        while view:
            room = self.space()
            n = min(len(room), len(view))
            room[:n] = view[:n]
            self.commit(n)
            view = view[n:]

    @property
    def holding(self) -> bool:
        """True when bytes wait in a buffer that is not full yet."""
        return self._current is not None and self._filled > 0

    def flush(self) -> None:
        """Send the buffer being filled to be written now, full or not."""
        if self._current is not None:
            self._ring.put(self._current, self._filled)
            self._current = None

    def close(self) -> None:
        """Write, hash and check what was filled, stop the threads; re-raise a write error."""
        self.flush()
        self._ring.close()

    def _write_block(self, block: memoryview) -> int:
        if self._ring.error is not None:
            return 0  # nothing is written after a failed write
        done = 0
        try:
            while done < len(block):
                done += self._write(self._fd, block[done:])
        except BaseException as exc:  # noqa: BLE001 -- raised again by close()
            self._ring.fail(exc)
        self._offset += done
        if self._offset - self._flushed >= WRITEBACK_EVERY:
            _start_writeback(self._fd, self._flushed, self._offset - self._flushed)
            self._flushed = self._offset
        return done  # the hash covers what reached the disk, no more

    def _hash_block(self, block: memoryview) -> int:
        self._digest.update(block)
        self.written += len(block)
        return len(block)


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing these pages out now, without waiting for it.

    On Linux, POSIX_FADV_DONTNEED starts asynchronous writeback of the dirty pages in the range
    (and drops the clean ones). The disk then works during the transfer instead of after it,
    and the final fsync, which stays, has little left to do.
    """
    if _FADVISE is not None:
        with contextlib.suppress(OSError):  # advice only; a file system may refuse it
            _FADVISE(fd, offset, length, os.POSIX_FADV_DONTNEED)


class OverlongBody(Exception):
    """The body went on past the bytes its headers promised; what came after was not kept."""


def read_body(
    response: httpx.Response, writer: BodyWriter, limit: int | None = None
) -> Iterator[int]:
    """Move the body into the writer's buffers; yield the size of each piece as it arrives.

    At most `limit` bytes (what a 206's Content-Range covers) reach the writer: a body that
    goes on past them raises OverlongBody once they are in, and its rest is never read.

    Through httpx, every socket read is copied three times in Python (into h11's buffer, out
    of it, into bytes). For an HTTP/1.1 body of known length only the first piece comes that
    way: it holds what h11 had read past the headers, after which h11 holds nothing of the
    body. The rest is read from the connection's socket straight into the writer's buffers
    (see `_read_socket`). h11 never sees the end of such a body, so httpcore closes the
    connection instead of reusing it.
    """
    raw = response.iter_raw()
    sock = body_socket(response)
    length = content_length(response)
    room = limit
    if sock is not None and length is not None:
        first = next(raw, b"")
        if room is not None and len(first) > room:
            first = first[:room]
            length = room + 1  # whatever the rest, it is too long: no socket read
        if first:
            writer.put(first)
            yield len(first)
        if room is not None and length > room:
            if room > len(first):
                yield from _body_socket(response, sock, writer, room - len(first))
            raise OverlongBody()
        if length > len(first):
            yield from _body_socket(response, sock, writer, length - len(first))
            return
        room = None if room is None else room - len(first)
    for chunk in raw:  # all of the body, or (when the first piece was all) its end
        if room is not None and len(chunk) > room:
            if room:
                writer.put(chunk[:room])
                writer.flush()
                yield room
            raise OverlongBody()
        writer.put(chunk)
        writer.flush()  # no telling when the next chunk comes: write this one now
        yield len(chunk)
        room = None if room is None else room - len(chunk)


def _body_socket(
    response: httpx.Response, sock: socket.socket, writer: BodyWriter, remaining: int
) -> Iterator[int]:
    # An error the connection met after the bytes httpx returned comes first.
    take_error = getattr(response.extensions.get("network_stream"), "take_error", None)
    error = take_error() if take_error is not None else None
    yield from _read_socket(sock, writer, remaining, response.request, error)


def _read_socket(
    sock: socket.socket,
    writer: BodyWriter,
    remaining: int,
    request: httpx.Request,
    error: OSError | None = None,
) -> Iterator[int]:
    """Receive `remaining` body bytes into the writer's buffers, as httpx would have.

    Same read timeout, and the same exceptions as httpx raises for a timeout, a failed read
    and a body cut short. What arrived is written as soon as the stream pauses, not only when
    a buffer fills, so a stalled or killed transfer keeps every byte it received. `error` is
    one the connection met after the bytes read before this (see fetcher.engine.netio): raised
    first.
    """
    timeout = request.extensions.get("timeout", {}).get("read")
    current: float | None = -1.0  # no timeout set on the socket by us yet
    tls = sock if isinstance(sock, ssl.SSLSocket) else None
    while remaining > 0:
        room = writer.space()
        if len(room) > remaining:
            room = room[:remaining]
        holding = writer.holding
        wait = PAUSE_FLUSH if holding else timeout
        if wait != current:
            sock.settimeout(wait)
            current = wait
        try:
            if error is not None:
                met, error = error, None
                raise met
            n = sock.recv_into(room)
        except TimeoutError as exc:
            if holding:
                writer.flush()
                continue
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc), request=request) from exc
        if n and tls is not None and n < len(room):
            more, error, _ = drain(tls, room[n:])
            n, current = n + more, 0.0
        if n == 0:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body"
                f" ({remaining} bytes missing)",
                request=request,
            )
        writer.commit(n)
        remaining -= n
        yield n


def drain(sock: ssl.SSLSocket, view: memoryview) -> tuple[int, OSError | None, bool]:
    """Read the TLS records already received into `view`, without waiting for more.

    A TLS socket gives one record (16 KiB at most) per read, and each read costs Python's
    overhead, and h11's and httpx's for a body read through them. Returns how many bytes came,
    the error that stopped the reads (for the caller to raise after using the bytes), and
    whether the peer closed TLS (its close_notify is read here, and no longer on the socket).
    Leaves the socket non-blocking.
    """
    n = 0
    sock.settimeout(0)
    try:
        while n < len(view):
            got = sock.recv_into(view[n:])
            if not got:
                return n, None, True  # the next read says so too
            n += got
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        pass
    except OSError as exc:
        return n, exc, False
    return n, None, False


def body_socket(response: httpx.Response) -> socket.socket | None:
    """The socket an HTTP/1.x body can be read from directly, or None to go through httpx."""
    if response.http_version not in ("HTTP/1.1", "HTTP/1.0"):
        return None  # HTTP/2 multiplexes streams over its connection
    if "transfer-encoding" in response.headers:
        return None  # chunked framing: h11 must unwrap it
    return direct_socket(response.extensions.get("network_stream"))


def direct_socket(network_stream: object) -> socket.socket | None:
    """The socket whose reads give a connection's bytes (decrypted over TLS), or None."""
    get_extra_info = getattr(network_stream, "get_extra_info", None)
    if get_extra_info is None:
        return None  # a transport without a network stream (a mock, say)
    sock = get_extra_info("socket")
    tls = get_extra_info("ssl_object")
    if not isinstance(sock, socket.socket) or isinstance(tls, ssl.SSLObject):
        return None  # TLS in TLS (an HTTPS proxy) decrypts in memory, not on this socket
    if tls is not None and not isinstance(sock, ssl.SSLSocket):
        return None
    return sock


def content_length(response: httpx.Response) -> int | None:
    """The Content-Length a response announces, or None when absent or not a plain number."""
    value = response.headers.get("content-length", "").strip()
    # Not str.isdigit(): it says yes to "²", which int() then refuses.
    return int(value) if _SIZE.fullmatch(value) else None
