"""Request dependencies: the shared services and the caller's identity."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request

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


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE)


def viewer(request: Request, svc: Annotated[Services, Depends(services)]) -> Principal:
    """Any valid token (viewer or admin)."""
    principal = tokens.verify(svc.catalog, bearer(request))
    if principal is None:
        raise HTTPException(401, "a valid API token is required (Authorization: Bearer ...)")
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
