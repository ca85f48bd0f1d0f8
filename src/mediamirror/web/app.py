"""The FastAPI application: API v1, push endpoints, IIIF, the web UI, and a local worker."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError

from mediamirror import __version__
from mediamirror.errors import MediamirrorError
from mediamirror.redact import redact
from mediamirror.services import Services
from mediamirror.web.request_ids import RequestIds, tag_response
from mediamirror.web.security import SecurityHeaders, add_headers, mount_docs

log = logging.getLogger(__name__)
UI = Path(__file__).parent / "ui"


def _error(status: int, message: str) -> JSONResponse:
    # One line, whatever a message quotes from the request, and no secret in it.
    message = redact(" ".join(message.splitlines()))
    response = JSONResponse({"error": message, "status": status}, status_code=status)
    # A 500 is rendered outside the middleware stack: the headers are added here too.
    add_headers(response.headers)
    tag_response(response.headers)
    return response


def _validation_message(exc: RequestValidationError) -> str:
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "JSON decode error")
        return f"invalid request: the body is not valid JSON ({reason})"
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return (
        f"invalid request: {where}: {first.get('msg', 'bad value')}"
        if where
        else (f"invalid request: {first.get('msg', 'bad value')}")
    )


class BackgroundWorker:
    """The embedded local worker that ``serve`` runs beside the API."""

    def __init__(self, services: Services, concurrency: int) -> None:
        from mediamirror.jobs.executors.local import LocalExecutor

        self.executor = LocalExecutor(
            services, concurrency, lease_seconds=services.settings.job_lease_seconds
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mediamirror-worker", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.executor.run(stop=self.stop)
            except Exception:  # a database hiccup must not end the service's worker
                log.exception("worker loop failed; restarting in 2 s")
                self.stop.wait(2)


def create_app(services: Services, *, worker: bool = True) -> FastAPI:
    """The whole service for one catalog."""
    background: list[Any] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # With the celery executor, Celery workers run the jobs (serve dispatches them).
        if worker and services.settings.executor == "local":
            bw = BackgroundWorker(services, services.settings.worker_count)
            bw.thread.start()
            background.append(bw)
        for starter in app.state.starters:
            background.append(starter(services))
        yield
        for item in background:
            item.stop.set()
        for item in background:
            thread = getattr(item, "thread", None)
            if thread is not None:
                thread.join(timeout=10)

    app = FastAPI(
        title="mediamirror",
        version=__version__,
        docs_url=None,  # mounted below, with a policy of its own
        openapi_url="/api/openapi.json",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.services = services
    push_routes = _push_routes()
    if push_routes is not None:
        # Innermost: bucket deliveries skip the router, still inside the headers and ids.
        app.add_middleware(push_routes)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestIds)  # outermost: its id is on every line of the request
    mount_docs(app, "/api/docs", "/api/openapi.json")
    from mediamirror import scheduler
    from mediamirror.jobs import dispatch  # celery executor: sends job ids to the broker
    from mediamirror.notify import sender

    app.state.starters = [scheduler.start, sender.start, dispatch.start]

    @app.exception_handler(MediamirrorError)
    async def _mm_error(_: Request, exc: MediamirrorError) -> JSONResponse:
        # A DeliveryError's status is the peer's (a webhook's 404), not this API's answer.
        return _error(getattr(exc, "http_status", exc.status), str(exc))

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _validation_message(exc))

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(DataError)
    async def _bad_value(_: Request, exc: DataError) -> JSONResponse:
        # The database refused a value the request carried (a NUL character, a string
        # longer than its column, a number out of range): the client's error, not ours.
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "value not accepted"
        return _error(400, f"invalid request: {reason}")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # A bug, not a user error: same JSON shape, no traceback to the client (the server
        # still logs it).
        return _error(500, "internal server error")

    from mediamirror.web import iiif, login
    from mediamirror.web.api import (
        browse,
        bulk,
        jobs,
        overview,
        search,
        source_setup,
        sources,
        system,
        thumbnails,
    )

    for module in (system, sources, source_setup, browse, thumbnails, search, overview, bulk, jobs):
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(iiif.router)
    app.include_router(login.router)
    from mediamirror.notify import api as notify_api

    app.include_router(notify_api.router, prefix="/api/v1")
    _mount_optional(app)

    if (UI / "static").is_dir():
        app.mount("/static", StaticFiles(directory=UI / "static"), name="static")

    @app.get("/", include_in_schema=False)
    @app.get("/ui/{rest:path}", include_in_schema=False)
    def index(rest: str = "") -> FileResponse:
        return FileResponse(UI / "index.html", headers={"Cache-Control": "no-cache"})

    return app


def _push_routes() -> Any:
    """The push endpoints' shortcut ahead of the router (events), when present."""
    try:
        from mediamirror.events.push import PushRoutes
    except ImportError:
        return None
    return PushRoutes


def _mount_optional(app: FastAPI) -> None:
    """Routers that live in their own packages (events) when present."""
    try:
        from mediamirror.events import api as events_api  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return
    app.include_router(events_api.router, prefix="/api/v1")
    starter = getattr(events_api, "start_consumers", None)
    if starter is not None:
        app.state.starters.append(starter)
