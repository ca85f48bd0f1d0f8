"""Fixtures of the API tests: one deployment per catalog backend, built once per session.

A deployment is the Quick-start sample tree (``generate_samples`` with a 1024 px slide,
which ``MEDIAMIRROR_LARGE_IMAGE_BYTES=1000000`` makes a large-image dataset) plus a corrupt
``bad.mp4`` whose video job ends in error. The real CLI adds it as source ``sample``, syncs
it, runs ``worker --burst`` and creates admin, viewer and revoked tokens; then
``mediamirror serve --no-worker`` serves it on a free localhost port.

``api`` is the SQLite deployment. ``any_api`` runs a test on SQLite and on PostgreSQL when
``MEDIAMIRROR_TEST_DATABASE_URL`` is set (a schema of its own for the session, dropped at
the end); without the URL the PostgreSQL cases are skipped on a laptop and fail in CI.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url

from helpers import Cli
from mediamirror.catalog.db import Catalog
from mediamirror.samples import generate_samples
from mediamirror.web.models import TOKENS

from .support import BASE_ENV, Deployment

PG_ENV = "MEDIAMIRROR_TEST_DATABASE_URL"
PG_HOWTO = (
    f"PostgreSQL API tests need {PG_ENV}, e.g. "
    f"{PG_ENV}=postgresql://postgres@127.0.0.1:5432/test pytest tests/api"
)
#: Not a video, whatever its name says: its video job fails for good.
CORRUPT_MP4 = b"meeting notes, not a video\n" * 40


@pytest.fixture(scope="session")
def sample_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample tree with a 1024 px slide, and ``bad.mp4`` at its top."""
    media = tmp_path_factory.mktemp("api-media") / "sample"
    generate_samples(media, large_image_px=1024)
    (media / "bad.mp4").write_bytes(CORRUPT_MP4)
    return media


def build(root: Path, database_url: str, media: Path, backend: str) -> Deployment:
    """Catalog through the real CLI, then ``serve`` on a free port. Steps that do not
    depend on each other run at once (each CLI start opens and checks the catalog)."""
    cli = Cli(home=root / "home", database_url=database_url, env=dict(BASE_ENV))
    # The CLI migrates the catalog; migrating here too would run Alembic in two threads of
    # this process at once (the builds run side by side), which its globals do not allow.
    dep = Deployment(backend, root, media, cli, Catalog(database_url, migrate=False))
    try:
        cli.run("source", "add", "sample", f"file://{media}")
        cli.run("sync", "sample", env={"MEDIAMIRROR_AUTO_POSTPROCESS": "true"})
        with ThreadPoolExecutor(5) as pool:
            steps = [
                pool.submit(cli.run, "worker", "--burst", timeout=180),
                pool.submit(dep.serve),
                pool.submit(_token, cli, "admin", "t-admin"),
                pool.submit(_token, cli, "viewer", "t-viewer"),
                pool.submit(_revoked_token, dep),
            ]
            _, _, dep.admin_token, dep.viewer_token, dep.revoked_token = (
                step.result() for step in steps
            )
    except BaseException:
        dep.stop()
        raise
    return dep


def _token(cli: Cli, role: str, name: str) -> str:
    token = cli.run("token", "create", "--role", role, "--name", name).stdout.strip()
    assert token.startswith("mm_"), token
    return token


def _revoked_token(dep: Deployment) -> str:
    """An admin token made by ``token create``, then revoked by ``token revoke``."""
    token = _token(dep.cli, "admin", "t-gone")
    with dep.catalog.read() as conn:
        token_id = conn.execute(select(TOKENS.c.id).where(TOKENS.c.name == "t-gone")).scalar_one()
    dep.cli.run("token", "revoke", str(token_id))
    dep.token_listing = dep.cli.run("token", "list", "--json").stdout
    return token


def _pg_schema(base: str) -> tuple[Engine, str, str]:
    """(admin engine, schema, URL whose connections live in the new schema)."""
    schema = f"api_{secrets.token_hex(6)}"
    admin_url = make_url(base)
    if admin_url.drivername in {"postgresql", "postgres"}:
        admin_url = admin_url.set(drivername="postgresql+psycopg")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return admin, schema, url.render_as_string(hide_password=False)


def _drop_schema(admin: Engine, schema: str) -> None:
    with admin.connect() as conn:
        conn.execute(text("SET lock_timeout = '20s'"))
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="session")
def deployments(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sample_media: Path,
) -> Iterator[dict[str, Future[Deployment]]]:
    """Both deployments, built side by side: SQLite always, PostgreSQL when the URL is
    set and a collected test runs on both catalogs."""
    base = os.environ.get(PG_ENV)
    wants_pg = any("any_api" in item.fixturenames for item in request.session.items)
    pg: tuple[Engine, str, str] | None = _pg_schema(base) if base and wants_pg else None
    pool = ThreadPoolExecutor(2)
    futures = {
        "sqlite": pool.submit(
            lambda root: build(root, f"sqlite:///{root / 'catalog.db'}", sample_media, "sqlite"),
            tmp_path_factory.mktemp("api-sqlite"),
        )
    }
    if pg is not None:
        futures["postgresql"] = pool.submit(
            build, tmp_path_factory.mktemp("api-pg"), pg[2], sample_media, "postgresql"
        )
    try:
        yield futures
    finally:
        pool.shutdown(wait=True)
        for future in futures.values():
            if future.exception() is None:
                future.result().stop()
        if pg is not None:
            _drop_schema(pg[0], pg[1])


@pytest.fixture(scope="session")
def api(deployments: dict[str, Future[Deployment]]) -> Deployment:
    """The deployment on a SQLite catalog."""
    return deployments["sqlite"].result()


@pytest.fixture(scope="session")
def pg_api(deployments: dict[str, Future[Deployment]]) -> Deployment:
    """The deployment on PostgreSQL, in a schema of its own for this session."""
    if "postgresql" not in deployments:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set in CI: the PostgreSQL API tests cannot run")
        pytest.skip(PG_HOWTO)
    return deployments["postgresql"].result()


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def any_api(request: pytest.FixtureRequest) -> Deployment:
    """The same test on the SQLite and the PostgreSQL deployment."""
    name = "api" if request.param == "sqlite" else "pg_api"
    dep: Deployment = request.getfixturevalue(name)
    return dep
