"""A local directory as a store (``file:///path``)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from mediamirror.errors import NotFoundError, StoreError
from mediamirror.paths import check_relpath, join_under
from mediamirror.stores.base import ObjectInfo

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    # mtime and size stand in for a content hash: hashing every file would make a sync
    # of a million files read every byte of them.
    micros = st.st_mtime_ns // 1000
    return ObjectInfo(
        key=key,
        size=st.st_size,
        etag=f"{st.st_mtime_ns:x}-{st.st_size:x}",
        last_modified=datetime.fromtimestamp(micros // 1_000_000, UTC).replace(
            microsecond=micros % 1_000_000
        ),
    )


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

    def _walk(self, rel: str) -> Iterator[ObjectInfo]:
        """Depth-first walk yielding files in UTF-8 byte order of their relative path.

        A directory sorts as ``name/`` so that ``a.txt`` comes before ``a/b`` exactly as
        an object store would list those keys.
        """
        path = os.path.join(self.root, rel) if rel else str(self.root)
        try:
            with os.scandir(path) as it:
                entries = [
                    (e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e) for e in it
                ]
        except OSError as exc:
            raise StoreError(f"cannot list {path}: {exc.strerror}") from exc
        entries.sort(key=lambda pair: pair[0])
        for sort_name, entry in entries:
            key = rel + sort_name
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                continue  # names that are not UTF-8 cannot be keys of any object store
            if sort_name.endswith("/"):
                yield from self._walk(key)
            elif entry.is_file() and self._inside(entry):
                try:
                    yield _info(key, entry.stat())
                except FileNotFoundError:
                    continue  # removed while listing: the next sync sees it gone

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
        page: list[ObjectInfo] = []
        for info in self._walk(""):
            if start_after is not None and info.key <= start_after:
                continue
            page.append(info)
            if len(page) >= self.page_size:
                yield page
                page = []
        if page:
            yield page

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
