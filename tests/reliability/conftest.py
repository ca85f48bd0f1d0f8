"""Fixtures of the reliability tests: the job tests' workspace and media kit, and a
fault-injecting proxy in front of the session's S3 API server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from faults import FaultProxy
from helpers import S3Server
from jobs.conftest import lab, media, reaper, sqlite_lab

__all__ = ["lab", "media", "proxy", "reaper", "sqlite_lab"]


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    """A proxy forwarding to the S3 server; a test tells it which requests to break."""
    with FaultProxy(s3_server.endpoint) as p:
        yield p
