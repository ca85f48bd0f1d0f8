"""Folder paths to ids, looked up and created in batches within a sync transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, insert, select

from mediamirror.catalog.models import FOLDERS, utcnow
from mediamirror.errors import SyncError
from mediamirror.paths import is_safe

_BATCH = 500
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

    def _inside(self, path: str) -> bool:
        return path == self.mount or path.startswith(self.mount + "/")

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
        for i in range(0, len(paths), _BATCH):
            chunk = paths[i : i + _BATCH]
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
        table = FOLDERS
        now = utcnow()
        for depth in sorted({p.count("/") for p in todo}):
            level = sorted(p for p in todo if p.count("/") == depth)
            rows = [
                {
                    "source_id": self.source_id if self._inside(p) else None,
                    "parent_id": self.ids[pp] if (pp := parent_path(p)) else None,
                    "name": folder_name(p),
                    "path": p,
                    "meta": new_meta.get(p, {}),
                    "state": "present",
                    "created_at": now,
                    "updated_at": now,
                }
                for p in level
            ]
            for fid, path in conn.execute(insert(table).returning(table.c.id, table.c.path), rows):
                self.ids[path] = fid
        return todo
