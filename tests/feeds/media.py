"""Media files served over HTTP by the tests, with the faults a download meets in the wild.

``MediaServer`` serves ``files`` (path -> bytes) on 127.0.0.1 with ``Range`` support
(``206`` with ``Content-Range``) and these switches, each changeable while it runs:

- ``missing``: paths answered with 404 (a record whose file was removed from the CMS);
- ``status``: path -> an HTTP status answered instead of the file (401, 403, 503...);
  ``fail_times``: path -> how many of the next requests get 503 before the file is served;
- ``cut``: path -> how many of the next answers stop half-way through the body (the
  connection is closed after half of the promised bytes);
- ``ignore_range``: answer every request with 200 and the whole file (a server that does
  not honour ``Range``);
- ``hold``: path -> an event; the answer sends half its body, then waits until the event is
  set (a download caught mid-way, for kill tests); ``held`` tells how many answers wait.

Every answer carries a strong ``ETag`` of the file's bytes; a ``Range`` request whose
``If-Range`` names another version gets the whole file (200), as HTTP says.
``requests`` records each request's path, ``Range`` and ``If-Range`` headers; ``served``
counts the body bytes sent per path. Everything binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from helpers import free_port


@dataclass(frozen=True)
class MediaRequest:
    path: str
    range: str | None
    if_range: str | None = None
    #: Authorization and X-* headers, lower-cased names.
    headers: tuple[tuple[str, str], ...] = ()


def etag_of(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:20] + '"'


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` as (start, end inclusive); None when absent or unusable."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].partition("-")
    try:
        if not first:  # a suffix: the last N bytes
            n = int(last)
            return (max(size - n, 0), size - 1) if n > 0 else None
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


class MediaServer:
    """An HTTP file server for download tests (see the module docstring)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.missing: set[str] = set()
        self.status: dict[str, int] = {}
        self.fail_times: Counter[str] = Counter()
        self.cut: Counter[str] = Counter()
        self.hold: dict[str, threading.Event] = {}
        self.ignore_range = False
        self.requests: list[MediaRequest] = []
        self.served: Counter[str] = Counter()
        self.held = 0
        self.lock = threading.Lock()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def add(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path``; returns its URL."""
        self.files[path.lstrip("/")] = data
        return self.url(path)

    def reset(self) -> None:
        """Every switch off and the records emptied (the files stay)."""
        with self.lock:
            self.missing.clear()
            self.status.clear()
            self.fail_times.clear()
            self.cut.clear()
            for event in self.hold.values():
                event.set()
            self.hold.clear()
            self.ignore_range = False
            self.requests.clear()
            self.served.clear()

    def requests_for(self, path: str) -> list[MediaRequest]:
        with self.lock:
            return [r for r in self.requests if r.path == path.lstrip("/")]

    def close(self) -> None:
        for event in list(self.hold.values()):
            event.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> MediaServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _fail(self, status: int) -> None:
                payload = f"{status} {self.responses.get(status, ('',))[0]}\n".encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _answer(self, body: bool) -> None:
                path = self.path.split("?", 1)[0].lstrip("/")
                header = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                with server.lock:
                    sent = tuple(
                        (k.lower(), v)
                        for k, v in self.headers.items()
                        if k.lower() == "authorization" or k.lower().startswith("x-")
                    )
                    server.requests.append(MediaRequest(path, header, if_range, sent))
                    data = server.files.get(path)
                    status = server.status.get(path)
                    if status is None and server.fail_times[path] > 0:
                        server.fail_times[path] -= 1
                        status = 503
                    if path in server.missing or data is None:
                        status = 404
                    cut = body and server.cut[path] > 0
                    if cut:
                        server.cut[path] -= 1
                    hold = server.hold.get(path) if body else None
                    ranged = None if server.ignore_range else _parse_range(header, len(data or b""))
                    etag = etag_of(data or b"")
                    if if_range is not None and if_range != etag:
                        ranged = None  # another version than the client holds: all of it
                if status is not None or data is None:
                    self._fail(status or 404)
                    return
                start, end = ranged if ranged else (0, len(data) - 1)
                chunk = data[start : end + 1]
                self.send_response(206 if ranged else 200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Accept-Ranges", "none" if server.ignore_range else "bytes")
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("ETag", etag)
                if ranged:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                if cut or hold is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                if not body:
                    return
                half = len(chunk) // 2
                if cut:
                    self._send(path, chunk[:half])
                    self._hang_up()
                    return
                if hold is not None:
                    self._send(path, chunk[:half])
                    with server.lock:
                        server.held += 1
                    try:
                        hold.wait()
                    finally:
                        with server.lock:
                            server.held -= 1
                    self._send(path, chunk[half:])
                    self.close_connection = True
                    return
                self._send(path, chunk)

            def _hang_up(self) -> None:
                """End the connection mid-body, gracefully: our side is shut down and we
                wait for the client to close, so every byte sent arrives (a plain close with
                unread input may reset the connection and drop bytes still in flight)."""
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_WR)
                    self.connection.settimeout(10)
                    while self.connection.recv(65536):
                        pass
                except OSError:
                    pass

            def _send(self, path: str, data: bytes) -> None:
                try:
                    self.wfile.write(data)
                    self.wfile.flush()
                except OSError:  # the client went away (a killed worker): nothing to do
                    self.close_connection = True
                    return
                with server.lock:
                    server.served[path] += len(data)

        return Handler
