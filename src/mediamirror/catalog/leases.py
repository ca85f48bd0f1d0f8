"""Named leases in the catalog: at most one holder at a time, lost when not renewed.

An owner is ``host:pid:token``. A lease whose owner process is gone on this very host is
taken over at once; otherwise a crashed holder gives the lease up when it expires.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta

import psutil
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import LEASES, utcnow
from mediamirror.errors import ConflictError

_HOST = socket.gethostname()


def new_owner() -> str:
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """True when the owner ran on this host and its process no longer exists."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid != os.getpid() and not psutil.pid_exists(pid)


def acquire(catalog: Catalog, name: str, owner: str, ttl: float) -> datetime | None:
    """Take the lease or raise ConflictError. Returns the previous holder's expiry if the
    lease was taken over from a crashed holder (so callers can clean up after it)."""
    table = LEASES
    now = utcnow()
    expires = now + timedelta(seconds=ttl)
    try:
        with catalog.write() as conn:
            row = conn.execute(
                select(table.c.owner, table.c.expires_at).where(table.c.name == name)
            ).first()
            if row is None:
                conn.execute(insert(table).values(name=name, owner=owner, expires_at=expires))
                return None
            if row.owner != owner and row.expires_at > now and not owner_is_dead(row.owner):
                raise ConflictError(
                    f"{name} is held by {row.owner} until {row.expires_at:%Y-%m-%d %H:%M:%S} UTC"
                )
            # Compare-and-swap on the owner we saw, so two contenders cannot both win.
            result = conn.execute(
                update(table)
                .where(table.c.name == name, table.c.owner == row.owner)
                .values(owner=owner, expires_at=expires)
            )
            if result.rowcount != 1:
                raise ConflictError(f"{name} was taken by another process")
            return row.expires_at if row.owner != owner else None
    except IntegrityError as exc:
        raise ConflictError(f"{name} was taken by another process") from exc


def renew(catalog: Catalog, name: str, owner: str, ttl: float) -> None:
    table = LEASES
    with catalog.write() as conn:
        result = conn.execute(
            update(table)
            .where(table.c.name == name, table.c.owner == owner)
            .values(expires_at=utcnow() + timedelta(seconds=ttl))
        )
    if result.rowcount != 1:
        raise ConflictError(f"lost the lease {name}: another process took it over")


def release(catalog: Catalog, name: str, owner: str) -> None:
    table = LEASES
    with catalog.write() as conn:
        conn.execute(delete(table).where(table.c.name == name, table.c.owner == owner))
