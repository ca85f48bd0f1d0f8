"""Fixtures of the web UI tests: a real deployment driven by headless Chromium.

The deployment is the Quick-start sample tree (``generate_samples`` with a 2048 px slide,
which ``MEDIAMIRROR_LARGE_IMAGE_BYTES=1000000`` makes a large-image dataset), a corrupt
``videos/bad.mp4`` whose video job fails, and a ``misc`` folder with more sub-folders and
files than fit on one page. The real CLI adds it as source ``sample``, syncs it,
post-processes it with ``worker --burst`` and creates an admin and a viewer token; then
``mediamirror serve --no-worker`` serves it on a free localhost port (no worker, so a job
queued by a test stays queued where the test can see it).

Chromium is Debian's (``apt-get install chromium``), driven by Playwright's Python API
with the system executable; Playwright's own browser downloads are never used. Without
Chromium or Playwright the tests are skipped on a laptop and fail in CI (the browser
fixtures live in tests/conftest.py: one Playwright session for every test that drives a page).
"""

from __future__ import annotations

import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers import Cli, free_port
from mediamirror.samples import generate_samples

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
VIEWPORT = {"width": 1360, "height": 900}
#: Not a video, whatever its name says: its video job fails for good.
CORRUPT_MP4 = b"meeting notes, not a video\n" * 40
#: A file name that is markup: the UI must show it as text.
MARKUP_NAME = "<img src=x onerror=window.__xss=1>.txt"
MISC_FOLDERS = 53
MISC_FILES = 52
ENV = {
    "MEDIAMIRROR_LARGE_IMAGE_BYTES": "1000000",
    "MEDIAMIRROR_TRANSCODE_PRESET": "ultrafast",
    "MEDIAMIRROR_WORKERS": "4",
}


# -- the deployment ----------------------------------------------------------------------------


@dataclass
class Deployment:
    """The served catalog: its URL, tokens, CLI and the ``serve`` process."""

    root: Path
    media: Path
    cli: Cli
    port: int = field(default_factory=free_port)
    admin_token: str = ""
    viewer_token: str = ""
    process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self) -> None:
        log = (self.root / "serve.log").open("w")
        self.process = subprocess.Popen(
            [*_entry(), "serve", "--port", str(self.port), "--no-worker"],
            env=self.cli.environ({"PYTHONUNBUFFERED": "1"}),  # its sign-in link, at once
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited early:\n{self.server_log()}")
            try:
                with urllib.request.urlopen(self.url + "/api/v1/health", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"serve did not answer on {self.url} in 60 s:\n{self.server_log()}")

    def login_link(self) -> str:
        """The one-time sign-in link ``serve`` printed."""
        found = re.search(r"sign in: (http://\S+/login/\S+)", self.server_log())
        assert found, self.server_log()
        return found.group(1)

    def server_log(self) -> str:
        path = self.root / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _entry() -> list[str]:
    from helpers import entry_point

    return entry_point()


def _media(root: Path) -> Path:
    media = root / "media"
    generate_samples(media, large_image_px=2048)
    (media / "videos" / "bad.mp4").write_bytes(CORRUPT_MP4)
    misc = media / "misc"
    for i in range(1, MISC_FOLDERS + 1):
        (misc / f"box-{i:02d}").mkdir(parents=True, exist_ok=True)
        (misc / f"box-{i:02d}" / "notes.txt").write_text(f"box {i}\n")
    for i in range(1, MISC_FILES + 1):
        (misc / f"file-{i:02d}.txt").write_text("x" * (i * 100))
    (misc / MARKUP_NAME).write_text("markup in a file name\n")
    return media


def _token(cli: Cli, role: str, name: str) -> str:
    token = cli.run("token", "create", "--role", role, "--name", name).stdout.strip()
    assert token.startswith("mm_"), token
    return token


@pytest.fixture(scope="session")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("web")
    media = _media(root)
    cli = Cli(home=root / "home", database_url=f"sqlite:///{root / 'catalog.db'}", env=ENV)
    dep = Deployment(root, media, cli)
    try:
        cli.run("source", "add", "sample", media.as_uri())
        cli.run("sync", "sample", "--quiet")
        cli.run("postprocess", "/sample", "--recursive")
        with ThreadPoolExecutor(4) as pool:
            worker = pool.submit(cli.run, "worker", "--burst", timeout=240)
            served = pool.submit(dep.serve)
            admin = pool.submit(_token, cli, "admin", "Ada Admin")
            viewer = pool.submit(_token, cli, "viewer", "Vic Viewer")
            worker.result()
            served.result()
            dep.admin_token, dep.viewer_token = admin.result(), viewer.result()
        yield dep
    finally:
        dep.stop()


# -- pages -------------------------------------------------------------------------------------


@pytest.fixture
def open_page(browser: Any, app: Deployment) -> Iterator[Callable[..., Any]]:
    """``open_page(token=None, viewport=None)``: a new browser context (its own cookies)
    and page; signed in through the sign-in form when a token is given."""
    contexts: list[Any] = []
    errors: list[str] = []  # uncaught JavaScript exceptions and server errors fail the test

    def open_(token: str | None = None, viewport: dict[str, int] | None = None) -> Any:
        context = browser.new_context(base_url=app.url, viewport=viewport or VIEWPORT)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "response",
            lambda r: r.status >= 500 and errors.append(f"HTTP {r.status} from {r.url}"),
        )
        if token:
            sign_in(page, token)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, f"errors in the page: {errors}"


def sign_in(page: Any, token: str) -> None:
    page.goto("/ui/sign-in")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/overview")  # the home page
    page.wait_for_selector(".shell .who")


def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=full_page, animations="disabled")
    return path
