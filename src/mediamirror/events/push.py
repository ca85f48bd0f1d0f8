"""The push endpoints served ahead of the app's router.

A bucket may send hundreds of deliveries a second. Their handler needs no dependency
injection, no route matching over every API route and no exception middleware of its
own, which together cost about as much as recording a delivery. :class:`PushRoutes`
sits inside the app's own middlewares (request ids, security headers and the server
error handler still wrap every answer) and hands a ``POST`` to one of the push paths
straight to its handler; everything else goes on to the router. The routes declared in
:mod:`mediamirror.events.api` stay the documented ones (OpenAPI) and answer the same.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mediamirror.events import api

PREFIX = "/api/v1/bucket_notifications/"
#: path -> (channel, handler) of every push endpoint
ENDPOINTS: Mapping[str, tuple[str, api.Handler]] = {
    **{PREFIX + name: (name, api._handle_s3) for name in api.S3_PATHS},
    PREFIX + "gcs": ("gcs", api._handle_gcs),
}


class PushRoutes:
    """Pure ASGI middleware: ``POST`` to a push path is answered here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = _endpoint(scope)
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        channel, handle = endpoint
        request = Request(scope, receive)
        app = scope["app"]
        try:
            response: Response = await api._push(request, app.state.services, channel, handle)
        except Exception as exc:
            response = await _handled(app, request, exc)
        await response(scope, receive, send)


def _endpoint(scope: Scope) -> tuple[str, api.Handler] | None:
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return ENDPOINTS.get(path)


async def _handled(app: Any, request: Request, exc: Exception) -> Response:
    """What the app's exception handlers answer (as its exception middleware would:
    the closest class first); an unexpected error is left to the server error handler."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            break
        handler = handlers.get(cls)
        if handler is not None:
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
            assert isinstance(response, Response)
            return response
    raise exc
