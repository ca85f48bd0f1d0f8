"""A request id for every HTTP request: on its log lines and in its ``X-Request-Id``.

A client (or a proxy in front) may send its own ``X-Request-Id`` so that its logs and
ours can be matched; it is kept when it looks like an id, replaced otherwise (a header
is the client's text, and it ends up in log files).
"""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mediamirror.logs import REQUEST_ID

HEADER = "X-Request-Id"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(scope: Scope) -> str:
    """The client's id when it is a plausible one, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = bytes(value).decode("latin-1")
            if _VALID.fullmatch(text):
                return text
    return uuid.uuid4().hex[:16]


class RequestIds:
    """Pure ASGI (no task or thread of its own), so the id is in the context of the
    route, of the threads Starlette runs sync routes in, and of uvicorn's access line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        # Not reset afterwards: each request runs in a task (and context) of its own, and
        # an error uvicorn logs after the app returned should still carry the id.
        REQUEST_ID.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = rid
            await send(message)

        await self.app(scope, receive, send_with_id)


def tag_response(headers: MutableHeaders) -> None:
    """The id on a response rendered outside the middleware (a 500)."""
    rid = REQUEST_ID.get()
    if rid is not None and HEADER not in headers:
        headers[HEADER] = rid
