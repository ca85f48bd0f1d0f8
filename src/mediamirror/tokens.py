"""API tokens with roles. Only a SHA-256 of each token is stored: tokens are long random
strings, so a fast hash is enough and lookups stay a single indexed query."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import utcnow
from mediamirror.errors import ConfigError, NotFoundError
from mediamirror.web.models import TOKENS

ROLES = ("admin", "viewer")
PREFIX = "mm_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name and role."""

    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(catalog: Catalog, role: str, name: str) -> str:
    """A new token; the only time its value is shown."""
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    token = PREFIX + secrets.token_urlsafe(32)
    with catalog.write() as conn:
        conn.execute(
            insert(TOKENS).values(
                name=name, role=role, token_hash=digest(token), created_at=utcnow(), revoked=False
            )
        )
    return token


def verify(catalog: Catalog, token: str | None) -> Principal | None:
    if not token or not token.startswith(PREFIX) or len(token) > 200:
        return None
    with catalog.read() as conn:
        row = conn.execute(
            select(TOKENS.c.name, TOKENS.c.role).where(
                TOKENS.c.token_hash == digest(token), TOKENS.c.revoked.is_(False)
            )
        ).first()
    return Principal(row.name, row.role) if row is not None else None


LOGIN_LINK_NAME = "browser login link"


def revoke_login_session(catalog: Catalog, token: str | None) -> None:
    """Revoke a token created by a one-time login link (and only such a token)."""
    if not token:
        return
    with catalog.write() as conn:
        conn.execute(
            update(TOKENS)
            .where(TOKENS.c.token_hash == digest(token), TOKENS.c.name == LOGIN_LINK_NAME)
            .values(revoked=True)
        )


def listing(catalog: Catalog) -> list[dict[str, Any]]:
    with catalog.read() as conn:
        rows = conn.execute(select(TOKENS).order_by(TOKENS.c.id)).all()
    return [
        {
            "id": r.id,
            "name": r.name,
            "role": r.role,
            "revoked": r.revoked,
            "created_at": r.created_at.isoformat(),
        }
        for r in rows
    ]


def revoke(catalog: Catalog, token_id: int) -> None:
    with catalog.write() as conn:
        result = conn.execute(update(TOKENS).where(TOKENS.c.id == token_id).values(revoked=True))
    if result.rowcount != 1:
        raise NotFoundError(f"no token {token_id}")
