"""Request dependencies: the shared services and the caller's identity."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Path, Query, Request

from mediamirror import tokens
from mediamirror.services import Services
from mediamirror.tokens import Principal

COOKIE = "mm_session"
#: Catalog ids are INTEGER columns (32-bit on PostgreSQL): a bigger id or offset in a URL
#: is a 400, not a database error (a 500: "integer out of range", or SQLite's OverflowError).
MAX_ID = 2**31 - 1


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def _from_header(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


#: Methods a browser may send cross-site without changing anything.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _origin(url: str) -> str | None:
    """``scheme://host:port`` of a URL (default ports spelled out), or None if unusable."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or port is None:
        return None
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}"


def claimed_origin(request: Request) -> str | None:
    """Where the browser says the request comes from: ``Origin``, else ``Referer``."""
    claimed = request.headers.get("origin") or request.headers.get("referer") or ""
    return _origin(claimed) if claimed and claimed != "null" else None


def own_origins(request: Request) -> set[str]:
    """This service's origins: the one the request was sent to, and ``public_url``
    (behind a proxy that terminates TLS the two differ in scheme)."""
    svc: Services = request.app.state.services
    found = {_origin(str(request.base_url)), _origin(svc.settings.public_url or "")}
    return {o for o in found if o}


def check_csrf(request: Request) -> None:
    """A browser attaches the session cookie to requests that other sites (other ports
    and subdomains are the same *site*) make it send: a cookie-authenticated change must
    come from one of our own pages. Requests with an Authorization header are not sent by
    browsers on their own, so they need no such check."""
    if request.method in SAFE_METHODS or claimed_origin(request) in own_origins(request):
        return
    raise HTTPException(
        403,
        "cross-site request refused: a change made with the session cookie must come "
        "from this service's own pages (or send an Authorization header)",
    )


def refuse_foreign(request: Request) -> None:
    """For what needs no session (signing in, out): a browser page of another origin
    must not sign a user in as someone else, or out (scripts without ``Origin`` may)."""
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if claimed:
        check_csrf(request)


def viewer(request: Request, svc: Annotated[Services, Depends(services)]) -> Principal:
    """Any valid token (viewer or admin); a session cookie only for same-origin changes."""
    token = _from_header(request)
    by_cookie = token is None
    principal = tokens.verify(svc.catalog, request.cookies.get(COOKIE) if by_cookie else token)
    if principal is None:
        raise HTTPException(401, "a valid API token is required (Authorization: Bearer ...)")
    if by_cookie:
        check_csrf(request)
    return principal


def admin(principal: Annotated[Principal, Depends(viewer)]) -> Principal:
    """An admin token: needed for every change."""
    if not principal.is_admin:
        raise HTTPException(403, "this needs an admin token")
    return principal


Svc = Annotated[Services, Depends(services)]
Viewer = Annotated[Principal, Depends(viewer)]
Admin = Annotated[Principal, Depends(admin)]
Id = Annotated[int, Path(ge=-MAX_ID - 1, le=MAX_ID)]
#: A page's start: bounded like an id, so a huge number is a 400, not an overflow.
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]
