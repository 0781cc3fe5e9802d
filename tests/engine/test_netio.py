"""fetcher.engine.netio: the pull client's connections read in bulk, over local TLS servers."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpcore
import httpx
import pytest
import trustme

from fetcher.config import Settings
from fetcher.engine import netio, stream
from fetcher.service.http import pull_client
from fetcher.storage import Destination
from tests.conftest import server_context
from tests.pullserver import PullServer

PATH = "/backup/restore/v2/pull/job1/secret-token/rs0.tar.gz"
RECORD = 16 * 1024  # the most a TLS record carries, and so one TLS read without netio
GARBAGE = b"\x00" * 64  # not a TLS record: a stream corrupted on the way
# A well-formed record header and 32 bytes that do not decrypt: TLS reads all of it, so
# nothing is left on the socket to tell that the connection is broken.
BAD_RECORD = b"\x17\x03\x03\x00\x20" + bytes(range(32))


def settings(authority: tuple[trustme.CA, Path]) -> Settings:
    return Settings(ca_cert=authority[1], timeout=10.0)


def test_the_pull_client_reads_its_connections_in_bulk(
    https_pull: PullServer, authority: tuple[trustme.CA, Path]
) -> None:
    data = os.urandom(4 * 1024 * 1024)
    https_pull.add(PATH, data)
    with (
        pull_client(settings(authority)) as client,
        client.stream("GET", https_pull.url(PATH)) as response,
    ):
        assert isinstance(response.extensions["network_stream"], netio.Stream)
        time.sleep(0.3)  # records pile up at the client meanwhile
        chunks = [len(chunk) for chunk in response.iter_raw()]
    assert sum(chunks) == len(data)
    # httpcore's own read returns one TLS record: here one read took several.
    assert max(chunks) > RECORD


def test_connections_read_in_bulk_are_kept_open_for_the_next_request(
    https_pull: PullServer, authority: tuple[trustme.CA, Path]
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    https_pull.add(PATH, data)
    with pull_client(settings(authority)) as client:
        bodies = [client.get(https_pull.url(PATH)).content for _ in range(3)]
        ranged = client.get(https_pull.url(PATH), headers={"Range": "bytes=100-"}).content
    assert bodies == [data] * 3 and ranged == data[100:]
    # One TCP connection served all four: each body ended where h11 expected it to.
    assert len({served.client for served in https_pull.log}) == 1


def test_a_client_with_its_own_transport_is_left_alone() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(204))
    with httpx.Client(transport=transport) as client:
        assert not netio.read_in_bulk(client)
        assert client.get("https://pull.example/x").status_code == 204


Answer = Callable[[ssl.SSLSocket, int], None]


@contextlib.contextmanager
def tls_server(authority: tuple[trustme.CA, Path], answer: Answer) -> Iterator[str]:
    """A TLS server on this host whose connections `answer(tls, n)` serves (n from 0); yields
    its URL for PATH. Each connection has a thread of its own; all end with the server."""
    listener = socket.create_server(("127.0.0.1", 0))
    context = server_context(authority[0])

    def serve() -> None:
        with contextlib.suppress(OSError):
            for n in itertools.count():
                raw, _ = listener.accept()

                def one(raw: socket.socket = raw, n: int = n) -> None:
                    with (
                        contextlib.suppress(OSError),
                        context.wrap_socket(raw, server_side=True) as tls,
                    ):
                        answer(tls, n)

                threading.Thread(target=one, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}{PATH}"
    finally:
        listener.close()


@contextlib.contextmanager
def corrupted_tls(
    authority: tuple[trustme.CA, Path], good: bytes
) -> Iterator[httpcore.NetworkStream]:
    """A TLS connection (through netio's backend) whose peer sent `good`, then garbage.

    Both are in the client's socket buffer when this yields: `good` is kept small enough to
    fit the receive window of a new loopback connection.
    """
    sent = threading.Event()

    def answer(tls: ssl.SSLSocket, n: int) -> None:
        tls.sendall(good)
        os.write(tls.fileno(), GARBAGE)  # beside TLS, straight onto the TCP stream
        sent.set()
        tls.recv(1)  # until the client hangs up

    context = ssl.create_default_context(cafile=str(authority[1]))
    with tls_server(authority, answer) as url:
        port = httpx.URL(url).port
        assert port is not None
        connection = netio.Backend().connect_tcp("127.0.0.1", port, timeout=5.0)
        connection = connection.start_tls(context, "127.0.0.1", timeout=5.0)
        try:
            assert sent.wait(5.0)
            time.sleep(0.05)
            yield connection
        finally:
            connection.close()


def test_bytes_read_before_a_tls_error_are_returned_and_the_error_comes_next(
    authority: tuple[trustme.CA, Path],
) -> None:
    good = os.urandom(40 * 1024)  # three records: the first read waits, the rest are drained
    with corrupted_tls(authority, good) as connection:
        got = connection.read(65536, timeout=5.0)
        assert got == good  # not lost with the error that the drain met after them
        with pytest.raises(httpcore.ReadError):
            connection.read(65536, timeout=5.0)


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[stream.BodyWriter]:
    """The download engine's writer over DIR/part (read it back with `written(tmp_path)`)."""
    with Destination(tmp_path / "out") as dest:
        fd = dest.open_private("part")
        try:
            yield stream.BodyWriter(fd, hashlib.sha1(), 0, os.write)
        finally:
            os.close(fd)


def written(tmp_path: Path) -> bytes:
    return (tmp_path / "out" / "part").read_bytes()


def test_the_direct_body_read_keeps_the_bytes_before_a_tls_error(
    authority: tuple[trustme.CA, Path], writer: stream.BodyWriter, tmp_path: Path
) -> None:
    good = os.urandom(40 * 1024)
    request = httpx.Request("GET", "https://127.0.0.1/rs0.tar.gz")
    got: list[int] = []
    with corrupted_tls(authority, good) as connection:
        sock = connection.get_extra_info("socket")
        with pytest.raises(httpx.ReadError):
            got.extend(stream._read_socket(sock, writer, len(good) + 1000, request))
    writer.close()
    assert sum(got) == writer.written == len(good)
    assert len(got) < 3  # the records already there came in one read
    assert written(tmp_path) == good


def requests(tls: ssl.SSLSocket) -> Iterator[None]:
    """One item for each request head the client sends on this connection."""
    while True:
        head = b""
        while b"\r\n\r\n" not in head:
            if not (got := tls.recv(4096)):
                return
            head += got
        yield


@contextlib.contextmanager
def corked(tls: ssl.SSLSocket) -> Iterator[None]:
    """Hold back what is sent meanwhile, then send it in one piece: the client's first read
    then finds all of it already there."""
    tls.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    yield
    tls.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)


def head(length: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length


@pytest.mark.parametrize("then", ["a record that does not decrypt", "close_notify"])
def test_a_connection_that_ended_with_its_last_response_is_not_used_again(
    authority: tuple[trustme.CA, Path], then: str
) -> None:
    body = os.urandom(30 * 1024)
    done = threading.Event()
    connections: list[int] = []

    def answer(tls: ssl.SSLSocket, n: int) -> None:
        connections.append(n)
        for _ in requests(tls):
            with corked(tls):
                tls.sendall(head(len(body)) + body)
                if n == 0 and then == "close_notify":
                    tls.setblocking(False)
                    with contextlib.suppress(ssl.SSLWantReadError):
                        tls.unwrap()  # close_notify sent; TCP stays open
                elif n == 0:
                    os.write(tls.fileno(), BAD_RECORD)
            if n == 0:
                done.wait(10.0)
                return

    with tls_server(authority, answer) as url, pull_client(settings(authority)) as client:
        try:
            assert client.get(url).content == body
            # The sign that the first connection is over came with its last bytes, and left
            # nothing on its socket: the next requests go over a new connection.
            assert [client.get(url).content for _ in range(2)] == [body, body]
        finally:
            done.set()
    assert connections == [0, 1]


def test_the_direct_body_read_raises_the_error_met_with_the_first_bytes(
    authority: tuple[trustme.CA, Path], writer: stream.BodyWriter, tmp_path: Path
) -> None:
    part = os.urandom(40 * 1024)

    def answer(tls: ssl.SSLSocket, n: int) -> None:
        for _ in requests(tls):
            with corked(tls):  # the head, some of the body, then a broken record
                tls.sendall(head(1024 * 1024) + part)
                os.write(tls.fileno(), BAD_RECORD)
            return

    # httpx read the head, the bytes after it and met the broken record: the error that
    # reaches the caller is that one, not a body cut short.
    with (
        tls_server(authority, answer) as url,
        pull_client(settings(authority)) as client,
        client.stream("GET", url) as response,
        pytest.raises(httpx.ReadError),
    ):
        for _ in stream.read_body(response, writer):
            pass
    writer.close()
    assert writer.written == len(part)
    assert written(tmp_path) == part
