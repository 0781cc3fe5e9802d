"""fetcher.engine.stream: socket reads, their fallback through httpx, and the writer.

Bodies here are bigger than the writer's ring of buffers, so every buffer is reused, and the
socket path is watched to make sure it is the one taken (an httpx upgrade that hid the
connection's socket would quietly fall back: correct, but slow)."""

from __future__ import annotations

import hashlib
import os
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from fetcher.engine import stream
from fetcher.engine.stream import BLOCK, BLOCKS
from fetcher.engine.transfer import PartResult
from fetcher.names import partial_name
from fetcher.storage import Destination
from tests.pullserver import Fault, PullServer
from tests.support import download, enospc_after, sha1

MiB = 1024 * 1024
NAME = "Cluster0-shard-0.tar.gz"
PATH = f"/backup/restore/v2/pull/job1/token/{NAME}"
BIG = BLOCK * BLOCKS + 3 * MiB + 12345  # more than the ring holds, not a multiple of a block


class BodyServer:
    """One body over HTTP/1.1, plain or TLS, with a Content-Length or chunked."""

    def __init__(
        self, data: bytes, *, chunked: bool = False, tls: ssl.SSLContext | None = None
    ) -> None:
        self.peers: set[tuple[str, int]] = set()  # one per connection served
        peers = self.peers

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                peers.add(self.client_address)
                self.send_response(200)
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                for start in range(0, len(data), 300_000):
                    piece = data[start : start + 300_000]
                    if chunked:
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    else:
                        self.wfile.write(piece)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._httpd.server_port}{PATH}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def data() -> bytes:
    return os.urandom(BIG)


@pytest.fixture
def socket_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record each use of the direct socket path (the number of bytes it was asked for)."""
    calls: list[int] = []
    real = stream._read_socket

    def spy(
        sock: Any, writer: Any, remaining: int, request: httpx.Request, error: Any = None
    ) -> Iterator[int]:
        calls.append(remaining)
        return real(sock, writer, remaining, request, error)

    monkeypatch.setattr(stream, "_read_socket", spy)
    return calls


def fetch(client: httpx.Client, dest: Destination, url: str, **kwargs: Any) -> PartResult:
    return download(client, dest, url, retries=3, display="pull host", name=NAME, **kwargs).run()


def fetch_from(server: BodyServer, dest: Destination, **client: Any) -> PartResult:
    """Download the server's body with a client built from `client`, then stop the server."""
    try:
        with httpx.Client(timeout=5.0, **client) as http:
            return fetch(http, dest, server.url)
    finally:
        server.close()


def on_disk(dest: Destination) -> bytes:
    return (dest.path / partial_name(NAME)).read_bytes()


def test_plain_body_is_read_from_the_socket(
    dest: Destination, data: bytes, socket_reads: list[int]
) -> None:
    result = fetch_from(BodyServer(data), dest)

    assert (result.size, result.sha1) == (len(data), sha1(data))
    assert on_disk(dest) == data
    assert len(socket_reads) == 1
    assert 0 < socket_reads[0] <= len(data)  # what h11 had not buffered already


def test_tls_body_is_read_from_the_tls_socket(
    dest: Destination, data: bytes, socket_reads: list[int]
) -> None:
    ca = trustme.CA()
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server_side)
    client_side = ssl.create_default_context()
    ca.configure_trust(client_side)
    result = fetch_from(BodyServer(data, tls=server_side), dest, verify=client_side)

    assert (result.size, result.sha1) == (len(data), sha1(data))
    assert on_disk(dest) == data
    assert len(socket_reads) == 1


def test_chunked_body_goes_through_httpx(
    dest: Destination, data: bytes, socket_reads: list[int]
) -> None:
    result = fetch_from(BodyServer(data, chunked=True), dest)

    assert (result.size, result.sha1) == (len(data), sha1(data))
    assert on_disk(dest) == data
    assert socket_reads == []


@pytest.mark.parametrize(("size", "connections"), [(1000, 1), (BIG, 2)], ids=["small", "big"])
def test_connection_is_reused_only_after_a_body_h11_saw_whole(
    tmp_path: Path, size: int, connections: int
) -> None:
    data = os.urandom(size)
    server = BodyServer(data)
    try:
        with httpx.Client(timeout=5.0) as client:
            for n in range(2):
                with Destination(tmp_path / str(n)) as dest:
                    assert fetch(client, dest, server.url).sha1 == sha1(data)
    finally:
        server.close()

    # A body read in one piece through h11 leaves the connection to the pool; one read past
    # h11 leaves h11 mid-body, so httpcore closes that connection and opens another.
    assert len(server.peers) == connections


def test_a_pause_in_the_stream_puts_what_arrived_on_disk(
    dest: Destination, data: bytes, socket_reads: list[int]
) -> None:
    pull = PullServer()
    held = threading.Event()
    first = 300 * 1024 + 7  # less than a buffer: only the pause can send it to disk
    pull.add(PATH, data).faults = [Fault(stall_after=first, hold=held, continue_after_stall=True)]
    results: list[PartResult] = []
    try:
        with httpx.Client(timeout=5.0) as client:
            worker = threading.Thread(
                target=lambda: results.append(fetch(client, dest, pull.url(PATH)))
            )
            worker.start()
            deadline = time.monotonic() + 5
            part = dest.path / f".{NAME}.part"
            while not (part.exists() and part.stat().st_size == first):
                assert time.monotonic() < deadline, (
                    "what arrived before the pause never hit the disk"
                )
                time.sleep(0.01)
            held.set()
            worker.join(10)
    finally:
        held.set()
        pull.close()

    assert [r.sha1 for r in results] == [sha1(data)]
    assert len(pull.log) == 1  # a pause is not a failure: no second request
    assert socket_reads


def feed(writer: stream.BodyWriter, data: bytes) -> None:
    """Put `data` in pieces the way httpx hands them over, then close."""
    for start in range(0, len(data), 100_000):
        writer.put(data[start : start + 100_000])
    writer.close()


def test_writer_hashes_exactly_what_reached_the_disk_when_a_write_fails(tmp_path: Path) -> None:
    data = os.urandom(4 * BLOCK + 1000)
    limit = 2 * BLOCK + 777  # the disk fills in the middle of the third block
    fd = os.open(tmp_path / "part", os.O_RDWR | os.O_CREAT)
    digest = hashlib.sha1()
    try:
        writer = stream.BodyWriter(fd, digest, 0, enospc_after(limit))
        with pytest.raises(OSError, match="No space left"):
            feed(writer, data)
        with pytest.raises(OSError, match="No space left"):
            writer.close()  # as _receive's finally does: waits for the threads, raises again
    finally:
        os.close(fd)

    assert writer.written == limit
    assert (tmp_path / "part").read_bytes() == data[:limit]
    assert digest.hexdigest() == sha1(data[:limit])


def test_writer_continues_a_digest_from_an_offset(tmp_path: Path) -> None:
    data = os.urandom(3 * BLOCK + 5)
    head, tail = data[: BLOCK + 3], data[BLOCK + 3 :]
    path = tmp_path / "part"
    path.write_bytes(head)
    fd = os.open(path, os.O_RDWR)
    digest = hashlib.sha1(head)
    try:
        os.lseek(fd, len(head), os.SEEK_SET)
        writer = stream.BodyWriter(fd, digest, len(head), os.write)
        feed(writer, tail)
    finally:
        os.close(fd)

    assert writer.written == len(data)
    assert path.read_bytes() == data
    assert digest.hexdigest() == sha1(data)
