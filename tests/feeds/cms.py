"""A real GraphQL CMS for the feed tests: ariadne's executor behind a Starlette app that
uvicorn serves in a thread of the test process, on 127.0.0.1 and a free port.

API (``CmsServer``; the ``cms`` fixture of tests/feeds/conftest.py yields one, reset):

- ``cms.graphql_url``: the endpoint (``http://127.0.0.1:PORT/graphql``); ``cms.url`` the base.
- ``cms.token``: the bearer token it requires (``Authorization: Bearer TOKEN``); any other
  or no Authorization header gets ``401`` with a JSON body ``{"error": "unauthorized"}``.
- Schema: ``videos(first: Int, after: String): {nodes: [Video], pageInfo: {endCursor,
  hasNextPage}}``; ``Video {id title updatedAt kind file {url size} owner {email}}``
  (every field nullable, so a test can leave ``id`` or ``file.url`` out). ``size`` is a
  ``Long`` scalar (sizes above 2^31 survive). ``first`` is capped at ``cms.max_first``
  (100; a test may lower it for several pages from the issue's ``first: 100`` query).
  Cursors are opaque strings; ``after=null`` is the first page.
- ``QUERY`` (module constant): the issue's example query; ``cms.feed_block(**over)`` gives
  a ``feeds:`` block (dict) for it pointing at this server with
  ``headers: {Authorization: "Bearer ${CMS_TOKEN}"}``; ``cms.env`` = ``{"CMS_TOKEN": token}``.
- Records: ``cms.records`` is a plain mutable list of dicts shaped like the schema
  (``{"id", "title", "updatedAt", "kind", "file": {"url", "size"}, "owner": {"email"}}``);
  missing keys read as null. Helpers: ``cms.add(id, title, url, *, size=None,
  version="v1", owner=None, **extra)`` appends and returns one; ``cms.remove(id)``;
  ``cms.set_version(id, version)``; ``cms.record(id)``; ``make_record(...)`` builds one
  without adding it (for bulk lists: ``cms.records = [make_record(...) for ...]``).
- Fault switches (all off after ``reset()``; the fixture resets before each test):
  ``down`` -> every request gets ``503``; ``errors = "message"`` -> ``200`` with
  ``{"data": null, "errors": [{"message": ...}]}``; ``not_json`` -> ``200`` with an HTML
  body; ``slow = seconds`` -> the answer waits that long (asyncio, other requests still
  served); ``fault_from = N`` -> the switches above only hit requests for pages starting at
  record offset >= N (``fault_from = 100`` with pages of 100: the first page is fine, the
  second fails: a partial walk). ``with cms.refused():`` stops listening (connection
  refused) and serves again on the same port afterwards.
- Observation: ``cms.requests`` lists every request as ``CmsRequest(authorized, after_offset,
  first, status)``; ``cms.page_requests()`` counts the answered (200) ones.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
import yaml
from ariadne import ObjectType, QueryType, ScalarType, graphql, make_executable_schema
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from helpers import free_port

#: The issue's example query, as the PREMIERE team would write it.
QUERY = """query Videos($after: String) {
  videos(first: 100, after: $after) {
    nodes { id title updatedAt file { url size } owner { email } }
    pageInfo { endCursor hasNextPage }
  }
}
"""

SCHEMA = """
scalar Long

type Query {
  videos(first: Int, after: String): VideoConnection!
}

type VideoConnection {
  nodes: [Video]!
  pageInfo: PageInfo!
}

type PageInfo {
  endCursor: String
  hasNextPage: Boolean!
}

type Video {
  id: ID
  title: String
  updatedAt: String
  kind: String
  file: File
  owner: Owner
}

type File {
  url: String
  size: Long
}

type Owner {
  email: String
}
"""


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        kind, _, number = text.partition(":")
        if kind != "offset":
            raise ValueError(cursor)
        return max(0, int(number))
    except ValueError as exc:
        raise ValueError(f"bad cursor {cursor!r}") from exc


def make_record(
    id: str | None,
    title: str | None,
    url: str | None,
    *,
    size: int | None = None,
    version: str | None = "v1",
    owner: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One CMS record shaped like the schema; ``None`` leaves a field out."""
    record: dict[str, Any] = {}
    if id is not None:
        record["id"] = id
    if title is not None:
        record["title"] = title
    if version is not None:
        record["updatedAt"] = version
    file: dict[str, Any] = {}
    if url is not None:
        file["url"] = url
    if size is not None:
        file["size"] = size
    record["file"] = file
    if owner is not None:
        record["owner"] = {"email": owner}
    record.update(extra)
    return record


@dataclass(frozen=True)
class CmsRequest:
    authorized: bool
    after_offset: int | None
    first: int | None
    status: int


class CmsServer:
    """See the module docstring."""

    def __init__(self) -> None:
        self.port = free_port()
        self.token = "cms-" + secrets.token_hex(16)
        self.records: list[dict[str, Any]] = []
        self.requests: list[CmsRequest] = []
        self._lock = threading.Lock()
        self.reset()
        self.schema = self._schema()
        self.app = Starlette(routes=[Route("/graphql", self._endpoint, methods=["POST"])])
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- switches and records -------------------------------------------------------------

    def reset(self) -> None:
        self.records = []
        self.requests = []
        self.down = False
        self.errors: str | None = None
        self.not_json = False
        self.slow = 0.0
        self.fault_from = 0
        self.max_first = 100

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    @property
    def env(self) -> dict[str, str]:
        return {"CMS_TOKEN": self.token}

    def feed_block(self, **overrides: Any) -> dict[str, Any]:
        block: dict[str, Any] = {
            "endpoint": self.graphql_url,
            "headers": {"Authorization": "Bearer ${CMS_TOKEN}"},
            "query": QUERY,
            "records": "videos.nodes",
            "next_cursor": "videos.pageInfo.endCursor",
            "has_next": "videos.pageInfo.hasNextPage",
            "id": "id",
            "url": "file.url",
            "name": "title",
            "version": "updatedAt",
            "size": "file.size",
            "metadata": {"owner": "owner.email"},
            "notify": "owner.email",
            "poll_seconds": 60,
        }
        block.update(overrides)
        return block

    def add(
        self,
        id: str | None,
        title: str | None,
        url: str | None,
        *,
        size: int | None = None,
        version: str | None = "v1",
        owner: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        record = make_record(id, title, url, size=size, version=version, owner=owner, **extra)
        self.records.append(record)
        return record

    def record(self, id: str) -> dict[str, Any]:
        for record in self.records:
            if record.get("id") == id:
                return record
        raise KeyError(id)

    def remove(self, id: str) -> None:
        self.records = [r for r in self.records if r.get("id") != id]

    def set_version(self, id: str, version: str) -> None:
        self.record(id)["updatedAt"] = version

    def page_requests(self) -> int:
        return sum(1 for r in self.requests if r.status == 200)

    # -- GraphQL --------------------------------------------------------------------------

    def _schema(self) -> Any:
        query = QueryType()
        long = ScalarType("Long")

        @long.serializer
        def serialize_long(value: Any) -> int:
            return int(value)

        @long.value_parser
        def parse_long(value: Any) -> int:
            return int(value)

        @query.field("videos")
        def resolve_videos(_: Any, info: Any, first: int | None = None, after: str | None = None):  # type: ignore[no-untyped-def]
            offset = decode_cursor(after)
            size = min(first if first is not None and first > 0 else self.max_first, self.max_first)
            records = list(self.records)
            nodes = records[offset : offset + size]
            end = offset + len(nodes)
            return {
                "nodes": nodes,
                "pageInfo": {
                    "endCursor": encode_cursor(end) if nodes else after,
                    "hasNextPage": end < len(records),
                },
            }

        return make_executable_schema(SCHEMA, query, long, ObjectType("Video"))

    async def _endpoint(self, request: Request) -> Response:
        authorized = request.headers.get("authorization") == f"Bearer {self.token}"
        try:
            body = json.loads(await request.body())
            variables = body.get("variables") or {}
            after_offset: int | None = decode_cursor(variables.get("after"))
        except (ValueError, AttributeError):
            body, variables, after_offset = None, {}, None
        first = variables.get("first") if isinstance(variables, dict) else None
        status, response = await self._answer(authorized, body, after_offset)
        with self._lock:
            self.requests.append(CmsRequest(authorized, after_offset, first, status))
        return response

    async def _answer(
        self, authorized: bool, body: Any, after_offset: int | None
    ) -> tuple[int, Response]:
        if not authorized:
            return 401, JSONResponse({"error": "unauthorized"}, status_code=401)
        faulty = after_offset is None or after_offset >= self.fault_from
        if faulty and self.slow:
            await asyncio.sleep(self.slow)
        if faulty and self.down:
            return 503, PlainTextResponse("Service Unavailable", status_code=503)
        if faulty and self.not_json:
            return 200, Response("<html><body>Maintenance</body></html>", media_type="text/html")
        if faulty and self.errors:
            payload = {"data": None, "errors": [{"message": self.errors}]}
            return 200, JSONResponse(payload)
        if not isinstance(body, dict):
            return 400, JSONResponse({"errors": [{"message": "body is not JSON"}]}, 400)
        success, result = await graphql(self.schema, body)
        status = 200 if success else 400
        return status, JSONResponse(result, status_code=status)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="cms", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test CMS server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(15)
        self._server = None
        self._thread = None

    @contextmanager
    def refused(self) -> Iterator[None]:
        """Connections are refused inside the block; served again on the same port after."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    @contextmanager
    def running(self) -> Iterator[CmsServer]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


def add_feed_source(cms: CmsServer, cli: Any) -> Any:
    """``cli`` (a tests/helpers.Cli on a new home) with config.yaml holding ``cms``'s feed
    block and a source ``premiere`` on it, mounted at /premiere."""
    cli.home.mkdir(parents=True)
    config = {"feeds": {"premiere": cms.feed_block()}}
    (cli.home / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    cli.env.update(cms.env)
    cli.run("source", "add", "premiere", "feed://premiere", "--mount", "/premiere")
    return cli
