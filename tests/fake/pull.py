"""Serving restore archives: Range, If-Range, 206 and 416, once for every fake pull host.

`byte_range` decides what a GET gets, `range_headers` and `UNSATISFIABLE` say it; the
standalone server's pull and download hosts (tests.fake.service) and PullServer, the tests'
threaded pull host that misbehaves on purpose, both use them. Pre-signed links are refused the
way S3 refuses them (`presigned_refusal`, `s3_error`).

pytest-httpserver answers whole responses; faults inside a streaming body (a dropped
connection, a stall, a short body) need a server that writes the bytes itself: PullServer.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import secrets
import ssl
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs

CHUNK = 256 * 1024
HOLD_LIMIT = 60.0  # a held stream lets go by itself after this long, so no test hangs
RANGE_RE: Final = re.compile(r"^bytes=(\d*)-(\d*)$")
LAST_MODIFIED: Final = "Wed, 21 Oct 2026 07:28:00 GMT"


# -- ranges -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """The bytes to send: [start, end) of a file of `total` bytes; `partial`: a 206."""

    start: int
    end: int
    total: int
    partial: bool


def etag_of(data: bytes) -> str:
    """A strong ETag for a file's bytes."""
    return f'"{hashlib.sha1(data).hexdigest()}"'


def http_date(mtime: float) -> str:
    """A Last-Modified value."""
    return email.utils.formatdate(mtime, usegmt=True)


def byte_range(
    range_header: str | None, if_range: str | None, total: int, validators: Collection[str]
) -> Span | None:
    """What a GET of a `total`-byte file gets (RFC 9110): None when the range is not
    satisfiable (a 416); else the span, a 206 for one satisfiable range.

    The whole file (a 200) answers no Range, a malformed or multi-range one (which a server may
    ignore), and an If-Range that matches none of `validators` (the client's partial file is
    another version). A suffix range (bytes=-N) is the last N bytes.
    """
    whole = Span(0, total, total, partial=False)
    match = RANGE_RE.match(range_header.replace(" ", "")) if range_header else None
    if match is None or (if_range is not None and if_range not in validators):
        return whole
    first, last = match[1], match[2]
    if not first:
        if not last or int(last) == 0:
            return None
        return Span(max(0, total - int(last)), total, total, partial=True)
    start = int(first)
    end = min(int(last) + 1, total) if last else total
    if start >= total or end <= start:
        return None
    return Span(start, end, total, partial=True)


def range_headers(span: Span, etag: str, last_modified: str) -> dict[str, str]:
    """The headers of a 200 or 206 that carries `span` (Content-Length apart)."""
    headers = {"ETag": etag, "Last-Modified": last_modified, "Accept-Ranges": "bytes"}
    if span.partial:
        headers["Content-Range"] = f"bytes {span.start}-{span.end - 1}/{span.total}"
    return headers


def unsatisfiable(total: int) -> dict[str, str]:
    """The headers of a 416."""
    return {"Content-Range": f"bytes */{total}"}


# -- pre-signed links -------------------------------------------------------------------------

ONE_AUTH_ONLY: Final = (
    "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
    "Signature query string parameter or the Authorization header should be specified"
)
BAD_SIGNATURE: Final = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)


def s3_error(code: str, message: str) -> bytes:
    """An error body in S3's XML shape."""
    request_id = secrets.token_hex(8).upper()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{request_id}</RequestId></Error>"
    ).encode()


def presigned_refusal(
    headers: Mapping[str, str],
    query: Mapping[str, str],
    signed: Callable[[Mapping[str, str]], bool],
    *,
    required: Collection[str] = (),
) -> tuple[int, str, str] | None:
    """How S3 refuses a pre-signed link, as (status, code, message): any Authorization header
    besides the signature (400), a query without the `required` parameters or the signature
    (403), or one that `signed` rejects (403). None: the link may be served. `headers` have
    lower-case names."""
    if "authorization" in headers:
        return 400, "InvalidArgument", ONE_AUTH_ONLY
    wanted = [*required, "X-Amz-Signature"]
    if any(key not in query for key in wanted):
        message = f"Query-string authentication requires {', '.join(wanted)}"
        return 403, "AccessDenied", message
    if not signed(query):
        return 403, "SignatureDoesNotMatch", BAD_SIGNATURE
    return None


# -- the tests' pull host ---------------------------------------------------------------------


@dataclass
class Fault:
    """What to do wrong on one request (each field off by default)."""

    status: int | None = None  # answer this status with a short body instead of the file
    headers: dict[str, str] = field(default_factory=dict)
    drop_after: int | None = None  # close the connection after this many body bytes
    stall_after: int | None = None  # stop sending (but keep the socket) after this many bytes
    stall_seconds: float = 0.0
    hold: threading.Event | None = None  # stall until this is set (instead of stall_seconds)
    continue_after_stall: bool = False  # after the stall, send the rest instead of hanging up
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request
    range_start_shift: int = 0  # claim (and send) a range starting this far from the asked one
    digest_challenge: bool = False  # 401 with a Digest challenge, like an API would
    redirect_to: str | None = None  # answer 302 with this Location instead of the file
    content_length: str | None = None  # announce this Content-Length (the body stays the file)
    rate: int | None = None  # send at most this many bytes a second (a slow connection)
    delay: float = 0.0  # wait this long before answering (a server far away)
    # A 206 that goes on past its range: this many 0xEE bytes after the range's own (its
    # Content-Length counts them, its Content-Range does not).
    overlong: int = 0
    chunked: bool = False  # send the body with Transfer-Encoding: chunked, no Content-Length


@dataclass
class Served:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    status: int
    sent: int
    client: tuple[str, int] = ("", 0)  # the client's address: one per TCP connection


@dataclass
class Resource:
    """A file the server serves, with its validators."""

    data: bytes
    etag: str
    last_modified: str = LAST_MODIFIED
    content_encoding: str | None = None
    faults: list[Fault] = field(default_factory=list)
    # A pre-signed link's: the query must carry this X-Amz-Signature, and no Authorization.
    signature: str | None = None
    # Faults for the requests whose Range starts at a given byte (before `faults` is used).
    by_start: dict[int, list[Fault]] = field(default_factory=dict)
    rate: int | None = None  # every connection sends at most this many bytes a second


class QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-reply is what the faults are for, not an error to print."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class PullServer:
    """Serves registered paths on 127.0.0.1 and logs every request."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.resources: dict[str, Resource] = {}
        self.scheme = "https" if tls is not None else "http"  # real pull links are HTTPS
        self.log: list[Served] = []
        self._lock = threading.Lock()
        self.on_request: Callable[[Served], None] | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                server._handle(self)

        self._httpd = QuietServer(("127.0.0.1", 0), Handler)
        if tls is not None:  # the handshake happens in the handler's thread, on its first read
            self._httpd.socket = tls.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def base(self) -> str:
        """The server's origin."""
        host, port = self._httpd.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"

    def url(self, path: str) -> str:
        """Absolute URL of a path on this server."""
        return self.base + path

    def add(self, path: str, data: bytes, *, etag: str | None = None, **kwargs: Any) -> Resource:
        """Serve `data` at `path`."""
        resource = Resource(data=data, etag=etag or etag_of(data), **kwargs)
        self.resources[path] = resource
        return resource

    def requests_for(self, path: str) -> list[Served]:
        """Every logged request for a path."""
        with self._lock:
            return [s for s in self.log if s.path == path]

    def bytes_sent(self, path: str) -> int:
        """Body bytes sent for a path, over every request."""
        return sum(s.sent for s in self.requests_for(path))

    def close(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        headers = {k.lower(): v for k, v in h.headers.items()}
        path, _, raw_query = h.path.partition("?")
        resource = self.resources.get(path)
        served = Served(path=path, headers=headers, status=0, sent=0, client=h.client_address)
        with self._lock:
            self.log.append(served)
        if self.on_request is not None:
            self.on_request(served)
        if resource is None:
            self._reply(h, served, 404, b"not found")
            return
        if resource.signature is not None:
            query = {k: v[-1] for k, v in parse_qs(raw_query).items()}
            signature = resource.signature
            refused = presigned_refusal(
                headers, query, lambda q: q.get("X-Amz-Signature") == signature
            )
            if refused is not None:
                status, code, message = refused
                self._reply(h, served, status, s3_error(code, message))
                return
        fault = self._fault_for(resource, headers.get("range"))
        if fault.delay:
            time.sleep(fault.delay)
        if fault.redirect_to is not None:
            self._reply(h, served, 302, b"", {"Location": fault.redirect_to})
            return
        if fault.digest_challenge:
            challenge = 'Digest realm="MMS Public API", nonce="abc", qop="auth", algorithm=MD5'
            self._reply(h, served, 401, b"{}", {"WWW-Authenticate": challenge})
            return
        if fault.status is not None:
            self._reply(h, served, fault.status, b"fault", fault.headers)
            return
        total = len(resource.data)
        asked = None if fault.ignore_range else headers.get("range")
        validators = (resource.etag, resource.last_modified)
        span = byte_range(asked, headers.get("if-range"), total, validators)
        if span is None:
            self._reply(h, served, 416, b"", unsatisfiable(total))
            return
        if span.partial and fault.range_start_shift:
            span = Span(span.start + fault.range_start_shift, span.end, total, partial=True)
        extra = range_headers(span, resource.etag, resource.last_modified)
        if resource.content_encoding:
            extra["Content-Encoding"] = resource.content_encoding
        extra.update(fault.headers)
        body = resource.data[span.start : span.end]
        if span.partial and fault.overlong:
            body += b"\xee" * fault.overlong
        served.status = 206 if span.partial else 200
        h.send_response(served.status)
        for k, v in extra.items():
            h.send_header(k, v)
        if fault.chunked:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header("Content-Length", fault.content_length or str(len(body)))
        h.end_headers()
        limit = len(body) if fault.drop_after is None else min(fault.drop_after, len(body))
        stall = fault.stall_after
        sent = 0
        try:
            while sent < limit:
                if stall is not None and sent >= stall:
                    h.wfile.flush()
                    _stall(fault)
                    stall = None
                    if fault.continue_after_stall:
                        continue
                    break
                rate = fault.rate or resource.rate
                step = CHUNK if rate is None else max(1, min(CHUNK, rate // 20))
                end = min(limit, sent + step, stall if stall is not None else limit)
                piece = body[sent:end]
                h.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece) if fault.chunked else piece)
                if rate is not None:
                    h.wfile.flush()
                    time.sleep((end - sent) / rate)
                sent = end
                with self._lock:
                    served.sent = sent
            if fault.chunked and sent == len(body):
                h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except OSError:
            pass
        if sent < len(body) or fault.content_length is not None:
            h.close_connection = True  # a client waiting for the announced length sees the end

    def _fault_for(self, resource: Resource, asked: str | None) -> Fault:
        with self._lock:
            if asked and resource.by_start:
                first = asked.removeprefix("bytes=").partition("-")[0]
                queued = resource.by_start.get(int(first)) if first.isdigit() else None
                if queued:
                    return queued.pop(0)
            return resource.faults.pop(0) if resource.faults else Fault()

    def _reply(
        self,
        h: BaseHTTPRequestHandler,
        served: Served,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        served.status = status
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


def _stall(fault: Fault) -> None:
    if fault.hold is not None:
        fault.hold.wait(fault.stall_seconds or HOLD_LIMIT)
    else:
        time.sleep(fault.stall_seconds)
