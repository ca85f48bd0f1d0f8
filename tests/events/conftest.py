"""Fixtures of the bucket-notification tests.

``service`` is the app on this test's catalog (SQLite, and PostgreSQL when
``MEDIAMIRROR_TEST_DATABASE_URL`` is set: a schema of its own, dropped afterwards; in CI a
missing URL fails, never skips) served by uvicorn on 127.0.0.1, with moto's S3/SQS server
(``s3_server`` of tests/conftest.py, started once per session) as the store. ``sns`` is a
local SNS stand-in whose certificate URL the app is configured to trust.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import S3Bucket, S3Server

from .support import Service, SnsPeer, start_service


@pytest.fixture(scope="session")
def sns() -> Iterator[SnsPeer]:
    peer = SnsPeer()
    yield peer
    peer.stop()


@pytest.fixture
def start(tmp_path: Path, sns: SnsPeer) -> Iterator[Callable[..., Service]]:
    """Start the app on a catalog URL with extra settings; stopped after the test."""
    started: list[Service] = []

    def run(database_url: str, **settings: Any) -> Service:
        root = tmp_path / f"svc{len(started)}"
        svc = start_service(root, database_url, sns_url_pattern=sns.url_pattern, **settings)
        started.append(svc)
        return svc

    yield run
    for svc in started:
        svc.stop()


@pytest.fixture
def service(catalog_url: str, start: Callable[..., Service]) -> Service:
    """The app on this test's catalog (SQLite, and PostgreSQL when configured)."""
    return start(catalog_url)


@pytest.fixture
def sqlite_service(sqlite_url: str, start: Callable[..., Service]) -> Service:
    """The app on a SQLite catalog, for tests where the backend does not matter."""
    return start(sqlite_url)


@pytest.fixture
def s3_bucket(s3_server: S3Server, s3_client: Any) -> S3Bucket:
    return S3Bucket(s3_server, s3_client)
