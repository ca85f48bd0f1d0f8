"""Shared fixtures: a real S3 API server, catalogs on SQLite and PostgreSQL, the CLI.

PostgreSQL runs when ``MEDIAMIRROR_TEST_DATABASE_URL`` is set (for example
``postgresql://postgres@127.0.0.1:5432/test``); each test gets its own schema, dropped
afterwards. Without it the PostgreSQL cases are skipped on a laptop and fail in CI.

The suite runs in two pytest-xdist worker processes, each test file on one of them; single
tests named on the command line (``tests/x.py::test_y``) run in this process, and
``MEDIAMIRROR_TEST_WORKERS=0`` (or ``-n 0``) runs everything here, for a debugger.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from helpers import AWS_ENV, Cli, LocalBucket, S3Bucket, S3Server
from mediamirror.catalog.db import Catalog

PG_ENV = "MEDIAMIRROR_TEST_DATABASE_URL"
PG_HOWTO = (
    f"PostgreSQL catalog tests need {PG_ENV}, e.g. "
    f"{PG_ENV}=postgresql://postgres@127.0.0.1:5432/test pytest"
)


# -- parallel runs (pytest-xdist; pyproject.toml asks for ``-n auto --dist loadfile``) ---------

WORKERS_ENV = "MEDIAMIRROR_TEST_WORKERS"
#: Much of the suite waits on subprocesses and servers, so two workers gain on two cores.
WORKERS = 2
#: Test files that share an expensive session fixture: one unit of work for one worker, so
#: it is built once (the API deployments of tests/api/conftest.py).
SHARED_UNITS = ("tests/api/",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: WORKERS processes, or ``MEDIAMIRROR_TEST_WORKERS`` (0: this process
    alone); none when the command line names single tests (``file.py::test``)."""
    if os.environ.get(WORKERS_ENV):
        return int(os.environ[WORKERS_ENV])
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own variable
    named = [arg for arg in config.args if not arg.startswith("-")]
    if named and all("::" in arg for arg in named):
        return 0
    return WORKERS


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile``, with each of SHARED_UNITS as one unit instead of its files."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            unit = next((u for u in SHARED_UNITS if nodeid.startswith(u)), None)
            return unit or super()._split_scope(nodeid)

    return SharedFixtureScheduling(config, log)


# -- the browser: one Playwright session for the whole run (two cannot share a thread) --

CHROMIUM_ENV = "MEDIAMIRROR_TEST_CHROMIUM"
CHROMIUM_HOWTO = (
    "the web UI tests need Debian's Chromium: apt-get install chromium "
    f"(or set {CHROMIUM_ENV} to a Chromium binary)"
)
PLAYWRIGHT_HOWTO = "the web UI tests need Playwright's Python package: pip install playwright"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--mute-audio",
]


def _missing(howto: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"not installed in CI: {howto}")
    pytest.skip(howto)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    candidates = [os.environ.get(CHROMIUM_ENV), "/usr/bin/chromium", shutil.which("chromium")]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    _missing(CHROMIUM_HOWTO)
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing(PLAYWRIGHT_HOWTO)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session", autouse=True)
def aws_env() -> Iterator[None]:
    """Credentials moto accepts, for this process and every subprocess it starts."""
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_auth_server() -> Iterator[S3Server]:
    """A second S3 server with IAM auth on: it rejects every key it has not issued."""
    server = S3Server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_server: S3Server) -> Any:
    return s3_server.client()


@pytest.fixture
def bucket(s3_server: S3Server, s3_client: Any) -> S3Bucket:
    """A fresh, empty bucket for this test."""
    return S3Bucket(s3_server, s3_client)


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> S3Bucket | LocalBucket:
    """The same test on the S3 API server and on the local-directory backend."""
    if request.param == "s3":
        return S3Bucket(request.getfixturevalue("s3_server"), request.getfixturevalue("s3_client"))
    return LocalBucket(tmp_path / "store")


# -- catalogs ----------------------------------------------------------------------------------


def _pg_admin_url(base: str) -> Any:
    url = make_url(base)
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    return url


def pg_schema_url(base: str) -> Iterator[str]:
    """A URL whose connections live in a fresh schema; the schema is dropped afterwards."""
    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(_pg_admin_url(base), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text("SET lock_timeout = '20s'"))
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A catalog URL on SQLite, and on PostgreSQL when configured."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} not set in CI")
        pytest.skip(PG_HOWTO)
    yield from pg_schema_url(base)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'catalog.db'}"


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    cat = Catalog(catalog_url)
    yield cat
    cat.close()


@pytest.fixture
def cli(catalog_url: str, tmp_path: Path) -> Cli:
    """The CLI as a subprocess on this test's catalog (SQLite and PostgreSQL)."""
    return Cli(home=tmp_path / "home", database_url=catalog_url)


@pytest.fixture
def sqlite_cli(sqlite_url: str, tmp_path: Path) -> Cli:
    """The CLI on a SQLite catalog only, for tests where the backend does not matter."""
    return Cli(home=tmp_path / "home", database_url=sqlite_url)
