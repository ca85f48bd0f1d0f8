"""Folder paths to ids, looked up and created in batches within a sync transaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, insert, select

from mediamirror.catalog.bulk import sqlite_datetime
from mediamirror.catalog.models import FOLDERS, utcnow
from mediamirror.errors import SyncError
from mediamirror.paths import is_safe

_BATCH = 500
_COLUMNS = ("source_id", "parent_id", "name", "path", "meta", "state", "created_at", "updated_at")
#: On SQLite, folders are read and created straight through the driver, in the form
#: SQLAlchemy stores them (``meta`` as ``json.dumps`` text, times as naive UTC text): a
#: feed's first sync creates two folders per record, and SQLAlchemy's per-value processing
#: cost more than SQLite's insert.
_SQLITE_LOOKUP = "SELECT id, path FROM folders WHERE path IN ({})"
_SQLITE_INSERT = f"INSERT INTO folders ({', '.join(_COLUMNS)}) VALUES {{}} RETURNING id, path"
_SQLITE_ROW = "(" + ", ".join("?" * len(_COLUMNS)) + ")"
#: Checked folder paths kept (most keys of a listing share their folder with the last).
_FULL_CACHE = 4096


def parent_path(path: str) -> str | None:
    cut = path.rfind("/")
    return path[:cut] if cut > 0 else None


def folder_name(path: str) -> str:
    return path[path.rfind("/") + 1 :]


class FolderIndex:
    """Caches ``path -> id`` for one source's sync; bounded so memory stays flat."""

    def __init__(self, source_id: int, mount: str, limit: int = 100_000) -> None:
        self.source_id = source_id
        self.mount = mount
        self.limit = limit
        self.ids: dict[str, int] = {}
        self._full: dict[str, str] = {}

    def full(self, rel: str) -> str:
        """The catalog path of ``rel`` (a safe path from the layout) under the mount.

        Checked again here, where folders are created: a ``..`` or empty segment would
        make a folder outside the mount, in another source's tree."""
        if not rel:
            return self.mount
        path = self._full.get(rel)
        if path is None:
            if not is_safe(rel):
                raise SyncError(f"folder path {rel!r} would leave the mount {self.mount}")
            if len(self._full) >= _FULL_CACHE:
                self._full.clear()
            path = self._full[rel] = f"{self.mount}/{rel}"
        return path

    def resolve(
        self, conn: Connection, paths: Iterable[str], new_meta: Mapping[str, dict[str, Any]]
    ) -> tuple[dict[str, int], set[str]]:
        """Ids of full ``paths``, creating missing folders (and their parents) with
        ``new_meta[path]`` as metadata. Returns the ids and the set of paths created."""
        wanted = set(paths)
        missing = {p for p in wanted if p not in self.ids}
        created: set[str] = set()
        if missing:
            if len(self.ids) > self.limit:
                self.ids.clear()
                missing = set(wanted)
            created = self._load_or_create(conn, missing, new_meta)
        return {p: self.ids[p] for p in wanted}, created

    def _lookup(self, conn: Connection, paths: list[str]) -> None:
        table = FOLDERS
        sqlite = conn.dialect.name == "sqlite"
        for i in range(0, len(paths), _BATCH):
            chunk = paths[i : i + _BATCH]
            if sqlite:
                sql = _SQLITE_LOOKUP.format(", ".join("?" * len(chunk)))
                self.ids.update((path, fid) for fid, path in _driver_rows(conn, sql, chunk))
                continue
            for fid, path in conn.execute(
                select(table.c.id, table.c.path).where(table.c.path.in_(chunk))
            ):
                self.ids[path] = fid

    def _load_or_create(
        self, conn: Connection, missing: set[str], new_meta: Mapping[str, dict[str, Any]]
    ) -> set[str]:
        self._lookup(conn, sorted(missing))
        todo = {p for p in missing if p not in self.ids}
        # Parents of folders to create may be missing too: walk up until a known one.
        frontier = set(todo)
        while frontier:
            parents = {pp for p in frontier if (pp := parent_path(p)) and pp not in self.ids}
            parents -= todo
            if parents:
                self._lookup(conn, sorted(parents))
                parents = {p for p in parents if p not in self.ids}
            todo |= parents
            frontier = parents
        now = utcnow()
        by_depth: dict[int, list[str]] = {}
        for p in todo:
            by_depth.setdefault(p.count("/"), []).append(p)
        for depth in sorted(by_depth):
            level = sorted(by_depth[depth])
            for i in range(0, len(level), _BATCH):
                self._create(conn, level[i : i + _BATCH], new_meta, now)
        return todo

    def _create(
        self, conn: Connection, paths: list[str], new_meta: Mapping[str, dict[str, Any]], now: Any
    ) -> None:
        """Insert folders whose parents all have ids, and keep their ids (a folder is the
        source's when it is its mount or below it: the mount's ancestors belong to none)."""
        inside, mount = self.mount + "/", self.mount
        rows = [
            (
                self.source_id if p == mount or p.startswith(inside) else None,
                self.ids[pp] if (pp := parent_path(p)) else None,
                folder_name(p),
                p,
                new_meta.get(p, {}),
            )
            for p in paths
        ]
        if conn.dialect.name == "sqlite":
            stamp = sqlite_datetime(now)
            params: list[Any] = []
            for sid, parent, name, path, meta in rows:
                params += (sid, parent, name, path, json.dumps(meta), "present", stamp, stamp)
            sql = _SQLITE_INSERT.format(", ".join([_SQLITE_ROW] * len(rows)))
            self.ids.update((path, fid) for fid, path in _driver_rows(conn, sql, params))
            return
        table = FOLDERS
        values = [dict(zip(_COLUMNS, (*row, "present", now, now), strict=True)) for row in rows]
        for fid, path in conn.execute(insert(table).returning(table.c.id, table.c.path), values):
            self.ids[path] = fid


def _driver_rows(conn: Connection, sql: str, params: list[Any]) -> list[Any]:
    """All rows of one statement given to the driver as it is (no per-value processing)."""
    return list(conn.exec_driver_sql(sql, tuple(params)).all())
