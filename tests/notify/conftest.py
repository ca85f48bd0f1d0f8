"""Real peers of the notification tests: SMTP servers (aiosmtpd) and a webhook receiver.

Everything binds to 127.0.0.1 on a free port and is stopped after the test.

- ``smtp_server``: accepts every message, no login; ``smtp_login_server``: requires AUTH
  (PLAIN/LOGIN over plain text, user ``SMTP_USER`` / password ``SMTP_PASSWORD``);
  ``smtp_factory(...)``: any variant (``auth=True``, ``tls="starttls"|"implicit"``,
  ``started=False`` for a server that refuses connections until ``.start()``); a server can be
  ``.stop()``-ed and ``.start()``-ed again on the same port.
- ``webhook_receiver``: records every request (method, path, headers, body) and answers
  ``.status`` (or the next of ``.statuses``); ``webhook_factory()`` for more receivers.
- ``tls_files``: a self-signed certificate for 127.0.0.1/localhost; point ``SSL_CERT_FILE``
  at ``tls_files.cert`` so clients trust it.
- Waiting: ``server.wait_for(n)`` / ``receiver.wait_for(n)`` / ``wait_until(predicate)`` poll
  with a generous deadline and never assert on wall-clock time.

Other test modules import the classes with ``from .conftest import SmtpServer`` etc.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib
import hmac
import ipaddress
import os
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from helpers import Cli, free_port
from jobs.conftest import Lab
from mediamirror.catalog.db import Catalog

SMTP_USER = "pipeline@example.org"
SMTP_PASSWORD = "s3cret-smtp-pass"
#: Generous: the machine is small and shared; only a broken test ever waits this long.
DEADLINE = 30.0


def pytest_configure(config: pytest.Config) -> None:
    # The login-required server accepts AUTH over plain text on purpose (``security: none``).
    config.addinivalue_line(
        "filterwarnings", "ignore:Requiring AUTH while not requiring TLS:UserWarning"
    )


def wait_until(
    predicate: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- TLS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


def make_self_signed(directory: Path) -> TlsFiles:
    """A self-signed certificate valid for 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "cert.pem", directory / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


# -- SMTP --------------------------------------------------------------------------------------


@dataclass
class Received:
    """One message the SMTP server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    authenticated: bool
    tls: bool

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def part(self, content_type: str) -> str:
        """The decoded body of the ``text/plain`` or ``text/html`` part."""
        for sub in self.message.walk():
            if sub.get_content_type() == content_type:
                return str(sub.get_content())
        raise AssertionError(f"no {content_type} part in {self.subject!r}")


@dataclass
class Login:
    login: str
    password: str
    tls: bool
    ok: bool


def _is_tls(server: Any, session: Any) -> bool:
    """After STARTTLS (``session.ssl``) or on an implicit-TLS listener (the transport)."""
    if session.ssl is not None:
        return True
    transport = getattr(server, "transport", None)
    return transport is not None and transport.get_extra_info("ssl_object") is not None


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self.server.lock:
            self.server.ehlo_count += 1
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        with self.server.lock:
            self.server.messages.append(
                Received(
                    mail_from=str(envelope.mail_from),
                    rcpt_tos=list(envelope.rcpt_tos),
                    raw=raw,
                    authenticated=bool(session.authenticated),
                    tls=_is_tls(server, session),
                )
            )
        return "250 Message accepted for delivery"


class SmtpServer:
    """An aiosmtpd server on 127.0.0.1 that collects messages; can stop and start again."""

    def __init__(
        self,
        *,
        auth: bool = False,
        user: str = SMTP_USER,
        password: str = SMTP_PASSWORD,
        tls: str | None = None,
        tls_files: TlsFiles | None = None,
        port: int | None = None,
        started: bool = True,
    ) -> None:
        if tls is not None and tls_files is None:
            raise ValueError("tls needs tls_files")
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.auth = auth
        self.user = user
        self.password = password
        self.tls = tls
        self.tls_files = tls_files
        self.lock = threading.Lock()
        self.messages: list[Received] = []
        self.logins: list[Login] = []
        self.ehlo_count = 0
        self._controller: Controller | None = None
        if started:
            self.start()

    @property
    def running(self) -> bool:
        return self._controller is not None

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = False
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode()
            password = auth_data.password.decode()
            ok = login == self.user and password == self.password
            with self.lock:
                self.logins.append(Login(login, password, _is_tls(server, session), ok))
        return AuthResult(success=ok, handled=False)

    def start(self) -> None:
        """Listen (again) on the same port."""
        if self._controller is not None:
            return
        kwargs: dict[str, Any] = {}
        if self.auth:
            kwargs.update(
                authenticator=self._authenticate, auth_required=True, auth_require_tls=False
            )
        else:
            # Offer AUTH too, so a client that wrongly logs in over plain text is seen.
            kwargs.update(authenticator=self._authenticate, auth_require_tls=False)
        if self.tls == "starttls":
            assert self.tls_files is not None
            kwargs.update(tls_context=self.tls_files.server_context(), require_starttls=False)
        ssl_context = None
        if self.tls == "implicit":
            assert self.tls_files is not None
            ssl_context = self.tls_files.server_context()
        controller = Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            ssl_context=ssl_context,
            server_hostname="localhost",
            ready_timeout=DEADLINE,
            **kwargs,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop listening: connections are refused until ``start()``."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, n: int, timeout: float = DEADLINE) -> list[Received]:
        """Wait until at least ``n`` messages arrived; return all of them."""
        wait_until(lambda: len(self.messages) >= n, timeout, f"{n} message(s) on SMTP")
        with self.lock:
            return list(self.messages)

    def email_block(self, **extra: Any) -> dict[str, Any]:
        """An ``email:`` config block pointing here (PREMIERE-shaped)."""
        block: dict[str, Any] = {
            "from_addr": SMTP_USER,
            "to_addrs": ["me@example.org", "team@example.org"],
            "smtp_server": self.host,
            "smtp_port": self.port,
        }
        block.update(extra)
        return block


@pytest.fixture
def smtp_factory(tls_files: TlsFiles) -> Iterator[Callable[..., SmtpServer]]:
    servers: list[SmtpServer] = []

    def make(**options: Any) -> SmtpServer:
        if options.get("tls") and "tls_files" not in options:
            options["tls_files"] = tls_files
        server = SmtpServer(**options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def smtp_server(smtp_factory: Callable[..., SmtpServer]) -> SmtpServer:
    """Plain SMTP, no STARTTLS, no login required."""
    return smtp_factory()


@pytest.fixture
def smtp_login_server(smtp_factory: Callable[..., SmtpServer]) -> SmtpServer:
    """Plain SMTP that requires AUTH with ``SMTP_USER`` / ``SMTP_PASSWORD``."""
    return smtp_factory(auth=True)


@pytest.fixture
def smtp_down(smtp_factory: Callable[..., SmtpServer]) -> SmtpServer:
    """A server that refuses connections until the test calls ``.start()``."""
    return smtp_factory(started=False)


# -- webhook receiver --------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


def verify_signature(request: Request, secret: str) -> bool:
    """Check ``X-Mediamirror-Signature`` like a receiver would (HMAC over timestamp.body)."""
    timestamp = request.header("X-Mediamirror-Timestamp")
    signature = request.header("X-Mediamirror-Signature")
    if not timestamp or not signature or not signature.startswith("sha256="):
        return False
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(signature.removeprefix("sha256="), expected)


@dataclass
class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records requests and answers a configured status."""

    status: int = 204
    #: Answered first, one per POST, before falling back to ``status``.
    statuses: list[int] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> int:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver.lock:
                    receiver.requests.append(
                        Request(self.command, self.path, dict(self.headers.items()), body)
                    )
                    if self.command == "POST" and receiver.statuses:
                        return receiver.statuses.pop(0)
                    return receiver.status

            def _answer(self) -> None:
                status = self._record()
                body = b"" if self.command == "HEAD" else b"ok"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body and status not in (204, 304):
                    self.wfile.write(body)

            do_POST = do_GET = do_HEAD = do_OPTIONS = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url_for(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def url(self) -> str:
        return self.url_for()

    @property
    def posts(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == "POST"]

    def wait_for(self, n: int, timeout: float = DEADLINE) -> list[Request]:
        """Wait until at least ``n`` POSTs arrived; return all POSTs."""
        wait_until(lambda: len(self.posts) >= n, timeout, f"{n} webhook POST(s)")
        return self.posts

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook_factory() -> Iterator[Callable[..., WebhookReceiver]]:
    receivers: list[WebhookReceiver] = []

    def make(**options: Any) -> WebhookReceiver:
        receiver = WebhookReceiver(**options)
        receivers.append(receiver)
        return receiver

    yield make
    for receiver in receivers:
        receiver.stop()


@pytest.fixture
def webhook_receiver(webhook_factory: Callable[..., WebhookReceiver]) -> WebhookReceiver:
    return webhook_factory()


# -- workspaces and processes of the notification tests -------------------------------


@pytest.fixture
def lab(tmp_path: Path, catalog: Catalog, cli: Cli) -> Lab:
    """A workspace on SQLite, and on PostgreSQL when configured."""
    return Lab(tmp_path, catalog, cli)


@pytest.fixture
def sqlite_lab(tmp_path: Path, sqlite_url: str, sqlite_cli: Cli) -> Iterator[Lab]:
    catalog = Catalog(sqlite_url)
    yield Lab(tmp_path, catalog, sqlite_cli)
    catalog.close()


@pytest.fixture
def started() -> Iterator[Callable[[subprocess.Popen[str]], subprocess.Popen[str]]]:
    """Processes a test starts in their own session; killed with their group at the end."""
    procs: list[subprocess.Popen[str]] = []

    def register(proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
        procs.append(proc)
        return proc

    yield register
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
