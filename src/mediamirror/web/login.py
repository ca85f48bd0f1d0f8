"""One-time login links printed by ``serve``: a short-lived code, exchanged once for a
browser session, so no long-lived token ever appears on the console."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from mediamirror import tokens
from mediamirror.web.deps import COOKIE, Svc

router = APIRouter(include_in_schema=False)
_codes: dict[str, float] = {}
_lock = threading.Lock()


def new_code(ttl: float = 900.0) -> str:
    code = secrets.token_urlsafe(24)
    with _lock:
        _codes[hashlib.sha256(code.encode()).hexdigest()] = time.monotonic() + ttl
    return code


def _take(code: str) -> bool:
    digest = hashlib.sha256(code.encode()).hexdigest()
    with _lock:
        expires = _codes.pop(digest, None)
    return expires is not None and expires > time.monotonic()


@router.get("/login/{code}")
def login_link(code: str, request: Request, svc: Svc) -> RedirectResponse:
    if not _take(code):
        # A browser follows this link: send it to the sign-in page, not a JSON error.
        return RedirectResponse("/ui/sign-in?link_expired=1", status_code=303)
    token = tokens.create(svc.catalog, "admin", tokens.LOGIN_LINK_NAME)
    response = RedirectResponse("/", status_code=303)
    host = request.url.hostname or ""
    secure = request.url.scheme == "https" or host in {"localhost", "127.0.0.1", "::1"}
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        secure=secure,
        samesite="strict",
        max_age=30 * 24 * 3600,
        path="/",
    )
    return response
