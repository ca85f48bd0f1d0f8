"""HTTP hardening shared by every route: the security headers of every response, the
policy of the API docs page, and how stored bytes are served (inline only when a browser
cannot run them).

Stored bytes come from buckets and folders that people other than the viewer fill: an
``.html`` or ``.svg`` object served inline on the app's origin would run script with the
viewer's session. So only media types a browser merely displays are served inline; every
other type is an attachment, and no response may be sniffed into something else.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import re
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The web UI's policy, sent on every response that sets none of its own. No inline script
#: or style; images and video may come from a bucket (S3 outputs are served by redirecting
#: to a presigned URL on the bucket's origin).
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob: https: http:",
        "media-src 'self' blob: https: http:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
#: Headers every response carries (unless the route set its own value).
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
#: Raster images a browser only displays (SVG is a document that can hold script).
_SAFE_IMAGES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"}
)
#: Text shown as plain text (never parsed as HTML), with nosniff.
_AS_TEXT = frozenset({"text/plain", "text/csv", "application/json"})


@dataclass(frozen=True)
class Disposition:
    """How stored bytes named ``name`` are served: their type, and inline or not."""

    media_type: str
    inline: bool


def disposition(name: str) -> Disposition:
    """The one rule for serving stored bytes: media inline with their own type; JSON, CSV
    and text inline as plain text; anything else (HTML, SVG, XML, scripts, PDF, unknown)
    as an attachment of type ``application/octet-stream``, which no browser renders."""
    guessed = mimetypes.guess_type(name)[0] or ""
    if guessed.startswith(("video/", "audio/")) or guessed in _SAFE_IMAGES:
        return Disposition(guessed, inline=True)
    if guessed in _AS_TEXT:
        return Disposition("text/plain; charset=utf-8", inline=True)
    return Disposition("application/octet-stream", inline=False)


class SecurityHeaders:
    """ASGI middleware: adds :data:`HEADERS` to every HTTP response that lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_headers(MutableHeaders(scope=message))
            await send(message)

        await self.app(scope, receive, send_with_headers)


def add_headers(headers: MutableHeaders) -> None:
    for name, value in HEADERS.items():
        headers.setdefault(name, value)


def mount_docs(app: FastAPI, path: str, openapi_url: str) -> None:
    """The Swagger UI page, with a policy of its own: FastAPI's page loads Swagger UI from
    the jsDelivr CDN and starts it with one inline script, allowed by its hash only."""
    page = get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} - API docs")
    body = bytes(page.body)
    scripts = re.findall(rb"<script>(.*?)</script>", body, flags=re.S)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'" for s in scripts
    )
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src https://cdn.jsdelivr.net {hashes}",
            "style-src https://cdn.jsdelivr.net 'unsafe-inline'",
            "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.jsdelivr.net",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )

    @app.get(path, include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(body, headers={"Content-Security-Policy": policy})
