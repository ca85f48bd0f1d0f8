"""A fault-injecting HTTP proxy between mediamirror and the S3 API server of the tests.

It listens on 127.0.0.1, forwards every request to the real (moto) server and, when told
at run time, answers matching requests with a 500 or 503 and an S3 XML error body, resets
the connection (before answering, or half-way through the body), or stalls (holds the
request longer than the client's read timeout). Only the proxy is fake: the store behind
it and mediamirror in front of it are the real things.

    with FaultProxy(s3_server.endpoint) as proxy:
        proxy.fail(503, times=2, query=r"list-type=2")   # the next two listing pages
        proxy.reset(method="GET", header=("Range", r"bytes="))
        proxy.stall(seconds=5, times=1, method="PUT")
"""

from __future__ import annotations

import http.client
import re
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"}

_ERRORS = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}


@dataclass
class Request:
    """One request as the proxy received it."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]
    body: bytes

    @property
    def query(self) -> str:
        return urlsplit(self.path).query


@dataclass
class Fault:
    """What to do to matching requests, and how many more times (None: every time)."""

    action: str  # "status", "reset", "reset-body", "stall"
    times: int | None = 1
    status: int = 503
    seconds: float = 0.0
    method: str | None = None
    path: str | None = None  # regular expression searched in the path (no query)
    query: str | None = None  # regular expression searched in the query string
    header: tuple[str, str] | None = None  # (name, regular expression of its value)
    every: int = 1  # fault one matching request in ``every`` (the 1st, the 1+every-th...)
    hits: int = 0
    matched: int = 0

    def matches(self, req: Request) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method and req.method != self.method.upper():
            return False
        if self.path and not re.search(self.path, urlsplit(req.path).path):
            return False
        if self.query and not re.search(self.query, req.query):
            return False
        if self.header:
            name, pattern = self.header
            value = req.headers.get(name.lower())
            if value is None or not re.search(pattern, value):
                return False
        self.matched += 1
        return (self.matched - 1) % self.every == 0


@dataclass
class _State:
    upstream: tuple[str, int]
    faults: list[Fault] = field(default_factory=list)
    seen: list[Request] = field(default_factory=list)
    faulted: list[tuple[Request, Fault]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closing: threading.Event = field(default_factory=threading.Event)

    def pick(self, req: Request) -> Fault | None:
        with self.lock:
            self.seen.append(req)
            for fault in self.faults:
                if fault.matches(req):
                    fault.hits += 1
                    self.faulted.append((req, fault))
                    return fault
        return None


def _read_request(rfile: Any) -> Request | None:
    line = rfile.readline(65537)
    if not line or not line.strip():
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        raw = rfile.readline(65537)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _read_chunked(rfile)
    elif headers.get("content-length"):
        body = rfile.read(int(headers["content-length"]))
    if headers.get("expect", "").lower() == "100-continue":
        headers.pop("expect")
    return Request(method.upper(), target, headers, body)


def _read_chunked(rfile: Any) -> bytes:
    out = bytearray()
    while True:
        size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return bytes(out)
        out += rfile.read(size)
        rfile.readline()


def _error_body(status: int, req: Request) -> bytes:
    code, message = _ERRORS.get(status, ("InternalError", "Injected error."))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{urlsplit(req.path).path}</Resource><RequestId>fault</RequestId></Error>"
    ).encode()


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        state = self.server.state
        while not state.closing.is_set():
            try:
                req = _read_request(self.rfile)
            except (OSError, ValueError):
                return
            if req is None:
                return
            if not self._serve(state, req):
                return

    def _serve(self, state: _State, req: Request) -> bool:
        """Answer one request; False when the connection must end."""
        fault = state.pick(req)
        if fault is not None and fault.action == "stall":
            state.closing.wait(fault.seconds)
            return False  # the client gave up long ago: close without an answer
        if fault is not None and fault.action == "reset":
            self._reset()
            return False
        if fault is not None and fault.action == "status":
            body = _error_body(fault.status, req)
            head = {"Content-Type": "application/xml", "Content-Length": str(len(body))}
            self._answer(fault.status, "Injected", head, body)
            return True
        status, reason, headers, body = self._forward(state, req)
        if fault is not None and fault.action == "reset-body" and len(body) > 1:
            self._answer(status, reason, headers, body[: len(body) // 2])
            self._reset()
            return False
        self._answer(status, reason, headers, body)
        return True

    def _forward(self, state: _State, req: Request) -> tuple[int, str, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(*state.upstream, timeout=60)
        try:
            headers = {k: v for k, v in req.headers.items() if k not in _HOP}
            headers["content-length"] = str(len(req.body))
            conn.request(req.method, req.path, body=req.body, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            out = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
            out = {k: v for k, v in out.items() if k.lower() != "content-length"}
            if req.method != "HEAD":
                out["Content-Length"] = str(len(body))
            else:
                length = resp.getheader("Content-Length")
                if length is not None:
                    out["Content-Length"] = length
            return resp.status, resp.reason, out, body
        finally:
            conn.close()

    def _answer(self, status: int, reason: str, headers: dict[str, str], body: bytes) -> None:
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        self.wfile.flush()

    def _reset(self) -> None:
        """Close with RST (SO_LINGER 0), as a crashed or overloaded endpoint does."""
        self.wfile.flush()
        self.connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        self.connection.close()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: _State) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class FaultProxy:
    """The proxy, started at construction; ``endpoint`` is what mediamirror talks to."""

    def __init__(self, upstream_endpoint: str) -> None:
        parts = urlsplit(upstream_endpoint)
        self.state = _State((parts.hostname or "127.0.0.1", parts.port or 80))
        self.server = _Server(self.state)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    # -- telling it what to do ---------------------------------------------------------------

    def add(self, fault: Fault) -> Fault:
        with self.state.lock:
            self.state.faults.append(fault)
        return fault

    def fail(self, status: int = 503, times: int | None = 1, **match: Any) -> Fault:
        """Answer the next ``times`` matching requests (None: all) with ``status``."""
        return self.add(Fault("status", times, status=status, **match))

    def reset(self, times: int | None = 1, *, mid_body: bool = False, **match: Any) -> Fault:
        """Reset the connection of matching requests, before or half-way through the body."""
        return self.add(Fault("reset-body" if mid_body else "reset", times, **match))

    def stall(self, seconds: float, times: int | None = 1, **match: Any) -> Fault:
        """Hold matching requests for ``seconds`` without answering, then close."""
        return self.add(Fault("stall", times, seconds=seconds, **match))

    def clear(self) -> None:
        """No more faults: every request is forwarded."""
        with self.state.lock:
            self.state.faults.clear()

    # -- what happened -----------------------------------------------------------------------

    @property
    def seen(self) -> list[Request]:
        with self.state.lock:
            return list(self.state.seen)

    @property
    def faulted(self) -> list[tuple[Request, Fault]]:
        with self.state.lock:
            return list(self.state.faulted)

    def close(self) -> None:
        self.state.closing.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def fault_proxy(upstream_endpoint: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream_endpoint)
    try:
        yield proxy
    finally:
        proxy.close()
