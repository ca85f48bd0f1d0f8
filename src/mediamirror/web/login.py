"""One-time login links printed by ``serve``: a short-lived code, exchanged once for a
browser session, so no long-lived token ever appears on the console."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import delete, select

from mediamirror import tokens
from mediamirror.catalog import leases
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import LEASES, utcnow
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


# -- codes every process accepts (serve --workers): a row of the catalog's leases table --


def _shared_name(code: str) -> str:
    return "login:" + hashlib.sha256(code.encode()).hexdigest()


def new_shared_code(catalog: Catalog, ttl: float = 900.0) -> str:
    """A code that any service process on ``catalog`` accepts, once: kept (hashed) as a
    lease row until it expires, taken by deleting that row."""
    code = secrets.token_urlsafe(24)
    with catalog.write() as conn:  # links never used, from earlier starts
        conn.execute(
            delete(LEASES).where(LEASES.c.name.like("login:%"), LEASES.c.expires_at < utcnow())
        )
    leases.acquire(catalog, _shared_name(code), "login-link", ttl)
    return code


def _take_shared(catalog: Catalog, code: str) -> bool:
    if len(code) > 100:
        return False
    name = _shared_name(code)
    with catalog.read() as conn:  # a wrong code (anyone may send one) takes no write lock
        if conn.execute(select(LEASES.c.name).where(LEASES.c.name == name)).first() is None:
            return False
    with catalog.write() as conn:
        result = conn.execute(
            delete(LEASES).where(LEASES.c.name == name, LEASES.c.expires_at > utcnow())
        )
    return result.rowcount == 1


@router.get("/login/{code}")
def login_link(code: str, request: Request, svc: Svc) -> RedirectResponse:
    if not _take(code) and not _take_shared(svc.catalog, code):
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
