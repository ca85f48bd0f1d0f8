"""Real peers of the feed tests, all on 127.0.0.1 and a free port.

- ``cms``: a GraphQL CMS (tests/feeds/cms.py ``CmsServer``: ariadne + uvicorn in a thread)
  with cursor pagination, bearer-token auth and fault switches. One server for the whole
  session; every test gets it reset (no records, every switch off). See cms.py for its API.
- ``media``: files over HTTP (tests/feeds/media.py ``MediaServer``) with Range support and
  fault switches (404, 503 N times, bodies cut off half-way, Range ignored, a body held
  half-way). One server for the session; every test gets it with every switch off.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .cms import CmsServer
from .media import MediaServer


@pytest.fixture(scope="session")
def _cms_server() -> Iterator[CmsServer]:
    server = CmsServer()
    with server.running():
        yield server


@pytest.fixture
def cms(_cms_server: CmsServer) -> Iterator[CmsServer]:
    _cms_server.reset()
    yield _cms_server
    _cms_server.reset()


# -- media files over HTTP (helper of the download tests) --------------------------------------


@pytest.fixture(scope="session")
def _media_server() -> Iterator[MediaServer]:
    with MediaServer() as server:
        yield server


@pytest.fixture
def media(_media_server: MediaServer) -> Iterator[MediaServer]:
    """tests/feeds/media.py ``MediaServer``: files over HTTP with Range support and fault
    switches (404, cut-off bodies, ignored Range, a held body). One server for the session;
    every test gets it with every switch off and no requests recorded (files stay)."""
    _media_server.reset()
    yield _media_server
    _media_server.reset()
