"""A local directory as a store (``file:///path``)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mediamirror.errors import NotFoundError, StoreError
from mediamirror.paths import check_relpath, join_under
from mediamirror.stores.base import ObjectInfo

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FLOAT_EXACT = 3_000_000_000 * 1_000_000  # microseconds: 2065-01-24
_fromtimestamp = datetime.fromtimestamp


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    # mtime and size stand in for a content hash: hashing every file would make a sync
    # of a million files read every byte of them.
    return ObjectInfo(
        key=key,
        size=st.st_size,
        etag=f"{st.st_mtime_ns:x}-{st.st_size:x}",
        last_modified=_mtime(st.st_mtime_ns),
    )


def _mtime(ns: int) -> datetime:
    """The modification time cut to the microsecond (not rounded), pre-1970 included."""
    micros = ns // 1000
    if 0 <= micros < _FLOAT_EXACT:
        # A whole number of microseconds over 1e6 is within 0.5 us of the float nearest to
        # it until 2065, so the C conversion (which rounds to the nearest) gives it exactly.
        return _fromtimestamp(micros / 1e6, UTC)
    seconds, micros = divmod(micros, 1_000_000)
    return _EPOCH + timedelta(0, seconds, micros)


#: A listed file before it becomes an :class:`ObjectInfo`: key, ``st_mtime_ns``, ``st_size``.
Stat = tuple[str, int, int]


def infos(page: list[Stat]) -> list[ObjectInfo]:
    """Listed files as the objects :meth:`LocalStore.list_pages` yields (see :func:`_info`)."""
    info, mtime = ObjectInfo, _mtime
    return [info(key, size, f"{ns:x}-{size:x}", mtime(ns)) for key, ns, size in page]


def catalog_rows(page: list[Stat], times: list[Any]) -> list[tuple[str, str, int, Any]]:
    """What the catalog holds for these files when none changed since it listed them:
    ``(key, etag, size, time)``, ``times`` giving each file's modification time in the
    form the caller compares (as the catalog stores it). No ObjectInfo is built: this
    runs for every file of a re-sync."""
    return [
        (key, f"{ns:x}-{size:x}", size, time)
        for (key, ns, size), time in zip(page, times, strict=True)
    ]


def _entries(path: str) -> list[tuple[str, os.DirEntry[str]]]:
    """A directory's entries in key order, a directory named ``name/``: ``a.txt`` comes
    before ``a/b`` exactly as an object store would list those keys (names are unique
    within a directory, so the sort never compares two entries)."""
    try:
        with os.scandir(path) as it:
            entries = [(e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e) for e in it]
    except OSError as exc:
        raise StoreError(f"cannot list {path}: {exc.strerror}") from exc
    entries.sort()
    return entries


def _utf8(key: str) -> bool:
    if key.isascii():
        return True
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False  # names that are not UTF-8 cannot be keys of any object store
    return True


class LocalStore:
    """Files under a root directory; keys are their relative POSIX paths."""

    scheme = "file"
    bucket = ""
    network = False  # listing is CPU work: no point prefetching it in a thread

    def __init__(self, root: Path, *, page_size: int = 1000) -> None:
        self.root = root.expanduser().resolve()
        self.prefix = ""
        self.page_size = page_size

    def object_url(self, key: str) -> str:
        return f"file://{self.root}/{key}"

    def check(self) -> None:
        if not self.root.exists():
            raise StoreError(f"directory {self.root} does not exist")
        if not self.root.is_dir():
            raise StoreError(f"{self.root} is not a directory")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise StoreError(f"directory {self.root} is not readable")

    def _walk(self, start_after: str | None, page_size: int) -> Iterator[list[Stat]]:
        """Depth-first walk yielding pages of files as ``(key, st_mtime_ns, st_size)`` in
        UTF-8 byte order of their relative path, after ``start_after``. One loop with a
        stack of open directories, not a generator per directory: a million files cost
        one ``stat`` each and little more.
        """
        root = str(self.root)
        stack = [("", iter(_entries(root)))]
        page: list[Stat] = []
        while stack:
            rel, entries = stack[-1]
            for sort_name, entry in entries:
                key = rel + sort_name
                if sort_name[-1] == "/":
                    if (
                        start_after is not None
                        and key < start_after
                        and not start_after.startswith(key)
                    ):
                        continue  # every key below sorts before start_after
                    if _utf8(key):
                        stack.append((key, iter(_entries(os.path.join(root, key)))))
                        break
                    continue
                if start_after is not None and key <= start_after:
                    continue
                # (Checks inlined in their cheap common case: this loop runs per file.)
                if not key.isascii() and not _utf8(key):
                    continue
                if not entry.is_file() or (entry.is_symlink() and not self._inside(entry)):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue  # removed while listing: the next sync sees it gone
                page.append((key, st.st_mtime_ns, st.st_size))
                if len(page) >= page_size:
                    yield page
                    page = []
            else:
                stack.pop()
        if page:
            yield page

    def _inside(self, entry: os.DirEntry[str]) -> bool:
        """False for a symbolic link leading out of the root. Reads refuse such a file
        (see :meth:`_path`), so the listing leaves it out too: the catalog never shows
        the size and dates of a file outside the source, and no job is queued that can
        only fail. A link to a file inside the root is listed like that file."""
        if not entry.is_symlink():
            return True
        return Path(entry.path).resolve().is_relative_to(self.root)

    def list_pages(self, start_after: str | None = None) -> Iterator[list[ObjectInfo]]:
        self.check()
        for page in self._walk(start_after, max(self.page_size, 1)):
            yield infos(page)

    def stat_pages(self, start_after: str | None = None) -> Iterator[list[Stat]]:
        """The pages of :meth:`list_pages` as raw ``(key, st_mtime_ns, st_size)`` tuples:
        the sync compares them with the catalog (:func:`catalog_rows`) and builds
        :class:`ObjectInfo` objects (:func:`infos`) only for a page that changed."""
        self.check()
        yield from self._walk(start_after, max(self.page_size, 1))

    def _path(self, key: str) -> Path:
        # "a/../b" would name b: a directory cannot hold such a key, so it is refused
        # outright; resolving then catches symbolic links that lead out of the root.
        path = join_under(self.root, key).resolve()
        if not path.is_relative_to(self.root):
            raise StoreError(f"key {key!r} points outside {self.root}")
        return path

    def head(self, key: str) -> ObjectInfo:
        try:
            check_relpath(key, str(self.root))
        except StoreError:
            # No directory can hold "a/../b" or "a//b": for an event naming one, the
            # object simply does not exist (reading b instead would catalog it twice).
            raise NotFoundError(f"{self.object_url(key)} does not exist") from None
        try:
            path = self._path(key)
        except StoreError:
            # A link leading out of the root: not an object of this store, as its
            # listing says (an event naming it must not catalog it either).
            raise NotFoundError(f"{self.object_url(key)} does not exist") from None
        try:
            return _info(key, path.stat())
        except FileNotFoundError as exc:
            raise NotFoundError(f"{self.object_url(key)} does not exist") from exc

    def read_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        # ``etag`` is not checked: a local file can change between any two reads anyway.
        try:
            with self._path(key).open("rb") as fh:
                fh.seek(start)
                return fh.read(length)
        except FileNotFoundError as exc:
            raise NotFoundError(f"{self.object_url(key)} does not exist") from exc

    def download(self, key: str, dest: Path) -> None:
        tmp = dest.with_name(dest.name + ".part")
        try:
            shutil.copyfile(self._path(key), tmp)
            os.replace(tmp, dest)
        except FileNotFoundError as exc:
            tmp.unlink(missing_ok=True)
            raise NotFoundError(f"{self.object_url(key)} does not exist") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full scratch disk keeps no half copy
            raise

    def put_file(self, key: str, src: Path, content_type: str | None = None) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Random per call: two threads writing one key must not share (or remove) a temp file.
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.part")
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)  # atomic: readers see the old file or the whole new one
        except BaseException:
            # A copy that failed half-way (disk full, source gone) leaves nothing behind:
            # a stray .part file would cost space and show up in listings of the store.
            tmp.unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path:
        """The file behind a key (tools read it directly instead of downloading)."""
        return self._path(key)
