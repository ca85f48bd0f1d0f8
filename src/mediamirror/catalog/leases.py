"""Named leases in the catalog: at most one holder at a time, lost when not renewed.

An owner is ``host:pid:token:machine:start``: ``machine`` is this kernel's boot id plus
the PID namespace (two containers on one host share a boot id and a host name, not a PID
namespace), ``start`` the process's start time in clock ticks since boot. A lease whose
owner ran in this very machine and namespace and whose process is gone (or is another
process that reused the PID: a different start time) is taken over at once; any other
holder, an owner of the older ``host:pid:token`` form included, keeps the lease until
it expires.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import LEASES, utcnow
from mediamirror.errors import ConflictError

_HOST = socket.gethostname()


def _machine() -> str | None:
    """Who can see our PIDs: boot id plus PID namespace, or None where unknown."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
        namespace = os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        return None
    return f"{boot}.{namespace}"


def start_time(pid: int) -> str | None:
    """The process's start time (``/proc/<pid>/stat`` field 22), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in {"Z", "X"}:
        return None  # it has exited; only its parent has not collected it yet (a zombie)
    return fields[19]


_MACHINE = _machine()


def new_owner() -> str:
    pid = os.getpid()
    return f"{_HOST}:{pid}:{uuid.uuid4().hex[:8]}:{_MACHINE or '-'}:{start_time(pid) or '-'}"


def owner_is_dead(owner: str) -> bool:
    """True only when the owner is known to be gone: it ran in this machine and PID
    namespace, and its PID is gone or now belongs to a process started at another time.
    Anything else (another machine, an older owner format, no /proc) cannot be told
    apart from a live holder: its lease is left to expire."""
    parts = owner.split(":")
    if len(parts) != 5 or _MACHINE is None or parts[3] != _MACHINE or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    return pid != os.getpid() and start_time(pid) != parts[4]


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
