"""Helpers of the API tests: a deployment (catalog built with the real CLI, served by a
``mediamirror serve`` subprocess), an in-process uvicorn server, and error-body checks.

Nothing here mocks mediamirror: requests go over HTTP to uvicorn on localhost, the catalog
is built by the installed ``mediamirror`` entry point, and catalog probes read the database
the server writes.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import select

from helpers import Cli, catalog_folders, entry_point, free_port
from mediamirror.catalog.db import Catalog
from mediamirror.config import load_settings
from mediamirror.jobs.model import JOBS
from mediamirror.services import Services
from mediamirror.web.app import create_app

#: Distinctive credential values: they must never show in a response or in the catalog.
ACCESS_KEY = "AKIAMMAPITEST0000001"
SECRET_KEY = "mm-api-test-secret-7f3c9a1e5b"
ACCESS_KEY_ENV = "MM_API_TEST_ACCESS_KEY"
SECRET_KEY_ENV = "MM_API_TEST_SECRET_KEY"

#: Settings of every CLI command and of the server: tiny, fast, deterministic.
BASE_ENV = {
    "MEDIAMIRROR_LARGE_IMAGE_BYTES": "1000000",  # the 1024 px slide.tif is a large image
    "MEDIAMIRROR_TRANSCODE_PRESET": "ultrafast",
    "MEDIAMIRROR_WORKERS": "4",
    "MEDIAMIRROR_JOB_RETRY_INTERVALS": "0.1,0.1",
    ACCESS_KEY_ENV: ACCESS_KEY,
    SECRET_KEY_ENV: SECRET_KEY,
}


def wait_http(
    url: str, timeout: float = 30.0, process: subprocess.Popen[Any] | None = None
) -> None:
    """Until ``url`` answers HTTP at all (any status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered {url} within {timeout} s")


@dataclass
class Deployment:
    """One catalog (SQLite or PostgreSQL) with the sample tree, served on localhost."""

    backend: str
    root: Path
    media: Path
    cli: Cli
    catalog: Catalog
    admin_token: str = ""
    viewer_token: str = ""
    revoked_token: str = ""
    #: What ``token list --json`` printed once the three tokens existed.
    token_listing: str = ""
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _clients: list[httpx.Client] = field(default_factory=list)
    _named_clients: dict[str, httpx.Client] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.cli.home

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "serve.log"

    # the server

    def serve(self) -> None:
        """``mediamirror serve --no-worker`` on a free port; jobs the tests queue stay
        queued, so the tests drive their states."""
        self.port = free_port()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [*entry_point(), "serve", "--port", str(self.port), "--no-worker"],
                env=self.cli.environ(),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_http(self.url + "/api/v1/health", process=self.process)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n--- serve.log\n{self.server_log()}") from None

    def server_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.catalog.close()

    # clients

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """An HTTP client on the server, with ``token`` as Bearer when given."""
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **kwargs)
        self._clients.append(client)
        return client

    @property
    def admin(self) -> httpx.Client:
        return self._named("admin", self.admin_token)

    @property
    def viewer(self) -> httpx.Client:
        return self._named("viewer", self.viewer_token)

    @property
    def anon(self) -> httpx.Client:
        return self._named("anon", None)

    def _named(self, name: str, token: str | None) -> httpx.Client:
        if name not in self._named_clients:
            self._named_clients[name] = self.client(token)
        return self._named_clients[name]

    # catalog probes

    def folder_id(self, path: str) -> int:
        """Id of the catalog folder at ``path`` (read from the catalog)."""
        return int(catalog_folders(self.catalog)[path].id)

    def jobs_of(self, folder_id: int) -> list[Any]:
        with self.catalog.read() as conn:
            query = select(JOBS).where(JOBS.c.target_type == "folder")
            return list(conn.execute(query.where(JOBS.c.target_id == folder_id)).all())


class InProcessServer:
    """An app served by uvicorn in a thread of the test process (for what only works
    in-process, such as one-time login codes)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextmanager
    def running(self) -> Iterator[InProcessServer]:
        self.thread.start()
        try:
            deadline = time.monotonic() + 30
            while not self.server.started:
                if not self.thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the in-process uvicorn server did not start")
                time.sleep(0.02)
            yield self
        finally:
            self.server.should_exit = True
            self.thread.join(15)


@contextmanager
def serve_copy(dep: Deployment, root: Path) -> Iterator[tuple[str, Path]]:
    """The SQLite deployment's catalog and outputs copied under ``root`` and served by an
    in-process uvicorn, for a test that changes them (the others read the originals).
    Yields (base URL, the copy's home directory)."""
    home = root / "home"
    shutil.copytree(dep.home / "outputs", home / "outputs")
    live, copy = sqlite3.connect(dep.root / "catalog.db"), sqlite3.connect(root / "catalog.db")
    try:
        live.backup(copy)
    finally:
        live.close()
        copy.close()
    url = f"sqlite:///{root / 'catalog.db'}"
    env = {**dep.cli.environ(), "MEDIAMIRROR_HOME": str(home), "MEDIAMIRROR_DATABASE_URL": url}
    catalog = Catalog(url)
    app = create_app(Services(catalog, load_settings(env=env), env), worker=False)
    try:
        with InProcessServer(app).running() as server:
            yield server.url, home
    finally:
        catalog.close()


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """The response is ``status`` with the one error shape: ``{"error": <one line>,
    "status": N}``; returns the message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error", "status"}, body
    assert body["status"] == status, body
    message = body["error"]
    assert isinstance(message, str) and message.strip(), body
    assert "\n" not in message and "Traceback" not in message, body
    for fragment in fragments:
        assert fragment in message, body
    return str(message)


def wait_for(check: Any, timeout: float = 30.0, what: str = "the condition") -> Any:
    """Poll ``check()`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def finished_run(dep: Deployment, name: str, after: int = 0) -> dict[str, Any]:
    """The newest sync run of source ``name`` with an id above ``after``, once finished."""

    def check() -> dict[str, Any] | None:
        runs = dep.viewer.get(f"/api/v1/sources/{name}/runs").json()
        if runs and runs[0]["id"] > after and runs[0]["finished_at"]:
            return dict(runs[0])
        return None

    run: dict[str, Any] = wait_for(check, what=f"a finished sync run of {name}")
    return run
