"""Health and the browser session (a token kept in a secure, http-only cookie)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel

from mediamirror import __version__, tokens
from mediamirror.web.deps import COOKIE, Svc, Viewer, refuse_foreign

router = APIRouter(tags=["system"])


@router.get("/health")
def health(svc: Svc) -> dict[str, Any]:
    """Liveness and catalog reachability; needs no token."""
    from mediamirror.jobs import queue

    return {"status": "ok", "version": __version__, "jobs": queue.counts(svc.catalog)}


class Login(BaseModel):
    token: str


@router.post("/session")
def login(body: Login, request: Request, response: Response, svc: Svc) -> dict[str, str]:
    """Exchange an API token for a session cookie (secure, http-only, same-site strict)."""
    refuse_foreign(request)
    principal = tokens.verify(svc.catalog, body.token.strip())
    if principal is None:
        raise HTTPException(401, "unknown or revoked token")
    host = request.url.hostname or ""
    secure = request.url.scheme == "https" or host in {"localhost", "127.0.0.1", "::1"}
    response.set_cookie(
        COOKIE,
        body.token.strip(),
        httponly=True,
        secure=secure,
        samesite="strict",
        max_age=30 * 24 * 3600,
        path="/",
    )
    return {"name": principal.name, "role": principal.role}


@router.get("/session")
def whoami(principal: Viewer) -> dict[str, str]:
    return {"name": principal.name, "role": principal.role}


@router.delete("/session")
def logout(request: Request, response: Response, svc: Svc) -> dict[str, str]:
    """Clear the session cookie; a session made by a login link is revoked too (an API
    token pasted by hand stays valid: it may be in use elsewhere)."""
    refuse_foreign(request)
    tokens.revoke_login_session(svc.catalog, request.cookies.get(COOKIE))
    response.delete_cookie(COOKIE, path="/")
    return {"status": "logged out"}
