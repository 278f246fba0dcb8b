"""A small real HTTP server on loopback that serves feeds the way a good publisher does.

Every document has a strong ``ETag`` and a ``Last-Modified`` date, and a
conditional request (``If-None-Match`` / ``If-Modified-Since``) for an unchanged
document is answered ``304 Not Modified`` with no body. The demo serves its
bundled sample feeds with it, the polling benchmark a thousand feeds, and the
tests script other answers (redirects, 429, 410, stalls) through ``routes``. A request whose path and
query match no document or route is served by the one registered for its path alone (an API endpoint
answers whatever its query parameters).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """A scripted answer: status, headers and a body (bytes, or chunks sent one after another)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""


@dataclass
class Document:
    """A served document and its validators."""

    body: bytes
    content_type: str = "application/rss+xml"
    modified: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args) -> None:  # the tests and the demo read the request log instead
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.requests.append((self.path, dict(self.headers)))
        route = self.server.routes.get(self.path) or self.server.routes.get(self.path.split("?", 1)[0])
        reply = route(self) if route else self._document_reply()
        try:
            self._send(reply)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a cap, a timeout): its choice
            self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802 (an API's token endpoint; the body is read and left to the route)
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def _document_reply(self) -> Reply:
        document = self.server.documents.get(self.path) or self.server.documents.get(self.path.split("?", 1)[0])
        if document is None:
            return Reply(404, body=b"not found")
        validators = {"ETag": document.etag, "Last-Modified": format_datetime(document.modified, usegmt=True)}
        if _not_modified(self.headers, document):
            return Reply(304, validators)
        return Reply(200, {**validators, "Content-Type": document.content_type}, document.body)

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if isinstance(reply.body, bytes):
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            return
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for chunk in reply.body:
            self.wfile.write(chunk)
            self.wfile.flush()


def _not_modified(headers, document: Document) -> bool:
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        return document.etag in [tag.strip() for tag in if_none_match.split(",")] or if_none_match.strip() == "*"
    if_modified_since = headers.get("If-Modified-Since")
    if if_modified_since:
        try:
            return document.modified <= parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
    return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    documents: dict[str, Document]
    routes: dict[str, Callable[[BaseHTTPRequestHandler], Reply]]
    requests: list[tuple[str, dict[str, str]]]


class FeedServer:
    """Serves ``documents`` (path → :class:`Document`) and scripted ``routes`` on ``host``, port chosen
    by the kernel; a context manager that starts and stops the server thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        if not host.startswith("127."):
            raise ValueError("the feed server binds loopback addresses only")
        self._server = _Server((host, port), _Handler)
        self._server.documents, self._server.routes, self._server.requests = {}, {}, []
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def documents(self) -> dict[str, Document]:
        return self._server.documents

    @property
    def routes(self) -> dict[str, Callable[[BaseHTTPRequestHandler], Reply]]:
        return self._server.routes

    @property
    def requests(self) -> list[tuple[str, dict[str, str]]]:
        """Every request received: (path, headers)."""
        return self._server.requests

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self) -> FeedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
