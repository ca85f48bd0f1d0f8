"""A GraphQL CMS feed seen as a store: its records are listed the way a bucket lists keys.

``feed://NAME`` walks every page of the query of the ``feeds: NAME:`` block (the cursor
of one page passed back as ``$after``), maps each record with the block's dotted paths
and lists it as one object, so the sync engine's diff, leases, deletion rule and layout
apply unchanged:

* key ``{id}/{name}`` (each part made safe by :mod:`mediamirror.paths`): stable, and two
  records with the same name never collide. ``name`` is the record's ``name`` path, else
  the last segment of its URL; a name without a media extension gets the URL's
  (``Interview`` + ``.../a1.mp4`` -> ``Interview.mp4``), so a video record becomes a
  ``Video {name}`` dataset in folder ``{mount}/{id}/``.
* etag = the record's ``version`` (a changed version is a changed item, processed again),
  size = ``size`` (0 when absent), last_modified = the version when it is a timestamp,
  else 1970-01-01 (stable: an unchanged re-walk writes nothing).
* ``ObjectInfo.meta``: ``cms_id``, ``cms_version``, ``source_url``, the ``metadata:`` fields
  and ``notify``; the sync engine copies it into the dataset's metadata.

A sync takes the records as the pages come (:meth:`FeedStore.stream_pages`, in the feed's
order: the engine's per-page diff is keyed by record, see sync/feed_meta.py), so its
writes overlap the walk; records gone are found from the set of keys a COMPLETE walk saw.
``mediamirror sync`` starts that walk before it has imported the catalog's modules
(:meth:`FeedStore.start_early`, stores/feed_early.py); the sync's check takes it over.
A page that fails (CMS down, timeout, 401, GraphQL ``errors``, not JSON) fails the sync
with one line and nothing is marked deleted (the records of the pages before it are
written: they are in the feed). :meth:`FeedStore.list_pages` (the store protocol, sorted
by key) is all or nothing: the whole walk first. A record without ``id`` or ``url`` is
skipped with a one-line warning (counted in :attr:`FeedStore.warning`); the walk still
counts as complete, so records gone from it are marked deleted: a record that has lost its
id could not be matched to its catalog item anyway.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx

from mediamirror.errors import ProcessingError, StoreError
from mediamirror.paths import safe_segment
from mediamirror.redact import redact
from mediamirror.stores.base import ObjectInfo
from mediamirror.stores.feed_config import FeedConfig
from mediamirror.stores.feed_walk import DONE, Walk, early, take_early
from mediamirror.stores.timeouts import StoreTimeouts
from mediamirror.sync.layout import (
    IMAGE_EXTENSIONS,
    LARGE_IMAGE_EXTENSIONS,
    SIDECAR_EXTENSIONS,
    VIDEO_EXTENSIONS,
)

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
URL_SCHEMES = ("http", "https", "s3", "gs")
#: Extensions a record's name keeps as they are (anything else gets the URL's extension).
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS | LARGE_IMAGE_EXTENSIONS | SIDECAR_EXTENSIONS
_WARN_LINES = 10
_FIRST_PAGE_SECONDS = 10.0
#: How long :meth:`FeedStore.stream_pages` gathers pages into one list (up to its size).
_GATHER_SECONDS = 0.25
#: How long a finished walk's thread is given to end (it has nothing left to do).
_JOIN_SECONDS = 5.0

#: key -> (url, size or None), found in the catalog (see :func:`catalog_lookup`).
Lookup = Callable[[str], tuple[str, int | None] | None]


def dig(value: Any, path: str) -> Any:
    """The value at a dotted path (``file.url``, ``files.0.url``), None when absent."""
    return dig_parts(value, tuple(path.split(".")))


def dig_parts(value: Any, parts: tuple[str, ...]) -> Any:
    for part in parts:
        if type(value) is dict or isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot + 1 :].lower() if dot > 0 else ""


def record_name(name: Any, url: str, fallback: str) -> str:
    """The file name a record is listed under (see the module docstring)."""
    rest = url.partition("://")[2].split("?", 1)[0].split("#", 1)[0]
    last = unquote(rest.rsplit("/", 1)[-1]) if "/" in rest else ""
    text = name.strip() if isinstance(name, str) and name.strip() else (last or fallback)
    text = text.replace("/", "_")
    ext = _extension(last)
    if ext and _extension(text) not in MEDIA_EXTENSIONS:
        text = f"{text}.{ext}"
    return text


def _timestamp(version: str) -> datetime:
    try:
        stamp = datetime.fromisoformat(version.strip())
    except ValueError:
        return EPOCH
    return stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Record:
    """One mapped record: where its file is and what it weighs (None: unknown)."""

    url: str
    size: int | None


class FeedStore:
    """The read side of the store protocol over one ``feeds:`` block."""

    scheme = "feed"
    prefix = ""
    network = True

    def __init__(
        self,
        config: FeedConfig,
        *,
        env: Mapping[str, str] | None = None,
        timeouts: StoreTimeouts | None = None,
        page_size: int = 1000,
        lookup: Lookup | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.config = config
        self.bucket = config.name
        self.env = env or {}
        self.timeouts = timeouts or StoreTimeouts()
        self.page_size = max(1, page_size)
        self.lookup = lookup
        self.max_bytes = max_bytes
        #: One line about the records the last walk skipped (None: none skipped).
        self.warning: str | None = None
        #: Called between pages of a walk (a sync renews its lease: a walk may be long).
        self.keepalive: Callable[[], None] | None = None
        self.skipped = 0
        self._records: dict[str, Record] = {}
        paths = {
            "id": config.id,
            "url": config.url,
            "name": config.name_path,
            "version": config.version,
            "size": config.size,
            "notify": config.notify,
        }
        self._paths = {k: tuple(v.split(".")) for k, v in paths.items() if v}
        self._metadata = [(k, tuple(v.split("."))) for k, v in config.metadata.items()]
        #: The first page as check() fetched it (and when), used once by the walk that
        #: follows at once (a sync checks, then walks): the CMS is asked once, not twice.
        self._first: tuple[float, Any] | None = None
        #: The walk check() took over (see start_early), continued by stream_pages().
        self._walk: Walk | None = None

    # -- the CMS ---------------------------------------------------------------------------

    def object_url(self, key: str) -> str:
        return f"feed://{self.bucket}/{key}"

    def _client(self) -> httpx.Client:
        read = self.config.page_timeout or self.timeouts.read
        timeout = httpx.Timeout(read, connect=self.timeouts.connect)
        return httpx.Client(
            timeout=timeout,
            headers=self.config.headers,
            follow_redirects=True,
            verify=_ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")),
        )

    def _fail(self, page: int, reason: str) -> StoreError:
        return StoreError(redact(f"feed {self.bucket}: page {page} of the CMS {reason}"))

    def _page(self, client: httpx.Client, after: str | None, page: int) -> Any:
        """The ``data`` of one page, retried on connection errors, timeouts and 5xx."""
        body = {"query": self.config.query, "variables": {"after": after}}
        attempts = max(1, self.timeouts.max_attempts)
        for attempt in range(1, attempts + 1):
            try:
                response = client.post(self.config.endpoint, json=body)
            except httpx.TimeoutException:
                reason = f"did not answer within {client.timeout.read:g} s"
            except httpx.TransportError as exc:
                reason = f"could not be reached ({type(exc).__name__}: {exc})"
            else:
                if response.status_code < 500:
                    return self._data(response, page)
                reason = f"answered HTTP {response.status_code}"
            if attempt == attempts:
                suffix = f" ({attempts} attempts)" if attempts > 1 else ""
                raise self._fail(page, reason + suffix)
            log.info("feed %s: page %d %s; retrying", self.bucket, page, reason)
            time.sleep(min(0.25 * 2 ** (attempt - 1), 5.0))
        raise AssertionError("unreachable")

    def _data(self, response: httpx.Response, page: int) -> Any:
        status = response.status_code
        if status in (401, 403):
            raise self._fail(page, f"refused the credentials (HTTP {status}): check headers")
        if status != 200:
            raise self._fail(page, f"answered HTTP {status}")
        try:
            answer = response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type").split(";")[0]
            raise self._fail(page, f"is not JSON ({kind})") from None
        if not isinstance(answer, Mapping):
            raise self._fail(page, "is not a GraphQL answer (no JSON object)")
        errors = answer.get("errors")
        if errors:
            first = errors[0] if isinstance(errors, list) and errors else errors
            message = first.get("message") if isinstance(first, Mapping) else first
            text = " ".join(str(message).split())[:300]
            raise self._fail(page, f"answered with GraphQL errors: {text}")
        data = answer.get("data")
        if not isinstance(data, Mapping):
            raise self._fail(page, "has no data")
        return data

    def check(self) -> None:
        """Fetch the first page: the CMS answers, accepts the headers and the query. A walk
        started early for this feed (:meth:`start_early`) is taken over instead: its first
        page is the check, and the sync's walk goes on from it."""
        early = take_early(self)
        if early is not None:
            self._walk, early.owner = early, self  # its keepalive is this store's
            early.peek()
            return
        with self._client() as client:
            data = self._page(client, None, 1)
        self._first = (time.monotonic(), data)
        if not isinstance(dig(data, self.config.records), list):
            raise self._fail(1, f"has no list of records at {self.config.records!r}")

    def _checked(self) -> Any:
        first, self._first = self._first, None
        if first is None or time.monotonic() - first[0] > _FIRST_PAGE_SECONDS:
            return None
        return first[1]

    def start_early(self) -> None:
        """Start this feed's walk now, for the sync that will open the same feed in this
        process soon (the CLI, while it is still importing the catalog's modules): the CMS
        answers the first pages meanwhile. Taken over by that sync's :meth:`check` or
        :meth:`stream_pages` within ``EARLY_SECONDS`` (stores/feed_walk.py); else stopped
        and not used."""
        early(Walk(self))

    def stream_pages(self, batch: int | None = None) -> Iterator[list[ObjectInfo]]:
        """The records as the pages come, mapped, in the feed's order (not sorted by key):
        a thread fetches and maps the pages while the caller writes the previous ones, and
        each list holds the pages that came within a quarter of a second of its first
        one, up to ``batch`` records (default ``page_size``; at least one page). The
        iterator ends normally only after a complete walk (then :attr:`skipped` and
        :attr:`warning` are set); any failure of a page is raised here, after the pages
        before it."""
        limit = max(1, batch or self.page_size)
        walk, self._walk = self._walk or take_early(self) or Walk(self), None
        walk.owner = self  # its keepalive is this store's
        try:
            finished = False
            while not finished:
                item = walk.next(None)
                # Pages gathered for a short while (fewer, larger transactions for the
                # caller: less work competing with the walk), then handed over.
                deadline = time.monotonic() + _GATHER_SECONDS
                chunk: list[ObjectInfo] = []
                failed: BaseException | None = None
                while item is not None:
                    if item is DONE:
                        finished = True
                        break
                    if isinstance(item, BaseException):
                        failed = item
                        break
                    chunk += item
                    if len(chunk) >= limit:
                        break
                    item = walk.next(deadline)
                if chunk:
                    yield chunk
                if failed is not None:
                    raise failed
        finally:
            walk.stop.set()
        # The thread has put its last item: let it end, so the process exits at once.
        walk.thread.join(_JOIN_SECONDS)
        self._note_skipped(walk.warnings)
        self._records = walk.found

    def _pages(self, walk: Walk) -> Iterator[tuple[int, list[Any]]]:
        after: str | None = None
        cursors: set[str] = set()
        page = 0
        c = self.config
        with self._client() as client:
            while not walk.stop.is_set():
                page += 1
                data = self._checked() if page == 1 else None
                if data is None:
                    data = self._page(client, after, page)
                keepalive = walk.owner.keepalive
                if keepalive is not None:
                    keepalive()
                records = dig(data, c.records)
                if not isinstance(records, list):
                    raise self._fail(page, f"has no list of records at {c.records!r}")
                yield page, records
                if c.has_next is None or not dig(data, c.has_next):
                    return
                cursor = dig(data, c.next_cursor or "")
                if cursor is None or str(cursor) in cursors:
                    raise self._fail(page, "says there is a next page but gives no new cursor")
                after = str(cursor)
                cursors.add(after)

    def walk(self) -> list[ObjectInfo]:
        """Every record of every page, mapped and sorted by key; raises on any failure."""
        objects: dict[str, ObjectInfo] = {}
        for chunk in self.stream_pages():
            for obj in chunk:
                objects[obj.key] = obj
        return [objects[k] for k in sorted(objects)]

    def _note_skipped(self, warnings: list[str]) -> None:
        self.skipped = len(warnings)
        for line in warnings[:_WARN_LINES]:
            log.warning("feed %s: %s", self.bucket, line)
        if len(warnings) > _WARN_LINES:
            log.warning(
                "feed %s: %d more records skipped", self.bucket, len(warnings) - _WARN_LINES
            )
        self.warning = (
            f"{len(warnings)} record{'s' if len(warnings) != 1 else ''} skipped: {warnings[0]}"
            if warnings
            else None
        )

    def _object(
        self, record: Any, at: tuple[int, int], ids: set[str], warnings: list[str]
    ) -> ObjectInfo | None:
        c, p = self.config, self._paths
        where = f"record {at[0]} of page {at[1]}"
        raw_id = dig_parts(record, p["id"])
        if raw_id is None or isinstance(raw_id, (dict, list, bool)) or str(raw_id).strip() == "":
            warnings.append(f"{where} has no id ({c.id})")
            return None
        rid = str(raw_id).strip()
        url = dig_parts(record, p["url"])
        if not isinstance(url, str) or not url.strip():
            warnings.append(f"record {rid} ({where}) has no url ({c.url})")
            return None
        url = url.strip()
        if url.partition(":")[0].lower() not in URL_SCHEMES:
            warnings.append(f"record {rid} ({where}) has an unsupported url scheme")
            return None
        if rid in ids:
            warnings.append(f"record {rid} ({where}) is listed twice; the first one is kept")
            return None
        ids.add(rid)
        name = record_name(dig_parts(record, p["name"]) if "name" in p else None, url, rid)
        raw_version = dig_parts(record, p["version"]) if "version" in p else None
        version = "" if raw_version is None else str(raw_version)
        etag = version if len(version) <= 200 else hashlib.sha256(version.encode()).hexdigest()
        size = _size(dig_parts(record, p["size"])) if "size" in p else 0
        meta: dict[str, Any] = {"cms_id": rid, "cms_version": version, "source_url": url}
        for field_name, parts in self._metadata:
            meta[field_name] = dig_parts(record, parts)
        notify = dig_parts(record, p["notify"]) if "notify" in p else None
        if isinstance(notify, str) and notify.strip():
            meta["notify"] = notify.strip()
        # One folder per id, whatever it holds: a "/" in an id is written %2F (a literal
        # "%2F" in an id is already "%252F": two ids never share a folder).
        key = f"{safe_segment(rid).replace('/', '%2F')}/{safe_segment(name)}"
        return ObjectInfo(key, size, etag, _timestamp(version) if version else EPOCH, meta)

    def list_pages(self, start_after: str | None = None) -> Iterator[list[ObjectInfo]]:
        """The whole walk first (all or nothing), then pages of ``page_size`` by key."""
        objects = self.walk()
        if start_after is not None:
            objects = [o for o in objects if o.key > start_after]
        for i in range(0, len(objects), self.page_size):
            yield objects[i : i + self.page_size]

    # -- one record ------------------------------------------------------------------------

    def record(self, key: str) -> Record:
        """Where a record's file is: from the catalog, else the last walk, else a walk."""
        if self.lookup is not None:
            found = self.lookup(key)
            if found is not None:
                return Record(*found)
        if key not in self._records:
            self.walk()
        if key not in self._records:
            raise StoreError(f"feed {self.bucket}: no record {key!r} in the feed")
        return self._records[key]

    def head(self, key: str) -> ObjectInfo:
        for obj in self.walk():
            if obj.key == key:
                return obj
        raise StoreError(f"feed {self.bucket}: no record {key!r} in the feed")

    def presigned_url(self, key: str, expires: int = 3600) -> str:
        url = self.record(key).url
        if not url.startswith(("http://", "https://")):
            store, object_key = self._object_store(url)
            return str(store.presigned_url(object_key, expires=expires))
        return url

    def _object_store(self, url: str) -> tuple[Any, str]:
        """An ``s3://`` or ``gs://`` record URL opened as a store (the block's ``s3:``
        options say how), and the object's key: written as the bucket has it, never
        percent-decoded (``s3://bucket/a/b c.mov``), like every store URL of mediamirror."""
        from mediamirror.stores import open_store, parse_spec

        scheme, _, rest = url.partition("://")
        bucket, _, key = rest.partition("/")
        spec = parse_spec(f"{scheme.lower()}://{bucket}/", env=self.env, **self.config.s3)
        return open_store(spec, self.env, timeouts=self.timeouts), key

    def download(
        self,
        key: str,
        dest: Path,
        *,
        progress: Callable[[int, int | None], None] | None = None,
        check: Callable[[], None] | None = None,
        partial: Path | None = None,
    ) -> None:
        """The record's file streamed to ``dest`` (resumed, retried, size-checked);
        ``partial``: where an unfinished HTTP download waits for the next attempt."""
        record = self.record(key)
        if not record.url.startswith(("http://", "https://")):
            self._download_object(record, dest)
            return
        from mediamirror.stores.http_fetch import fetch

        fetch(
            record.url,
            dest,
            headers=self.config.headers_for(record.url),
            expected_size=record.size,
            max_bytes=self.max_bytes,
            timeouts=self.timeouts,
            attempts=self.timeouts.max_attempts,
            progress=progress,
            check=check,
            partial=partial,
        )

    def _download_object(self, record: Record, dest: Path) -> None:
        """An ``s3://``/``gs://`` record: its store's download, with the same size checks
        as an HTTP one (``max_download_bytes`` before, the feed's ``size`` after)."""
        store, object_key = self._object_store(record.url)
        size = store.head(object_key).size
        if self.max_bytes is not None and size > self.max_bytes:
            raise ProcessingError(
                f"{record.url} is {size} bytes, more than max_download_bytes "
                f"({self.max_bytes}): not downloaded"
            )
        store.download(object_key, dest)
        got = dest.stat().st_size
        if record.size is not None and got != record.size:
            dest.unlink(missing_ok=True)
            raise ProcessingError(
                f"{record.url}: downloaded {got} bytes, the feed says {record.size}"
            )

    def read_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        """Bytes of a record's file: a Range request, streamed and cut where a server
        ignores the range (never the whole file in memory)."""
        record = self.record(key)
        if not record.url.startswith(("http://", "https://")):
            store, object_key = self._object_store(record.url)
            return bytes(store.read_range(object_key, start, length))
        headers = {
            **self.config.headers_for(record.url),
            "Range": f"bytes={start}-{start + length - 1}",
        }
        timeout = httpx.Timeout(self.timeouts.read, connect=self.timeouts.connect)
        try:
            with httpx.stream("GET", record.url, headers=headers, timeout=timeout) as response:
                if response.status_code not in (200, 206):
                    raise ProcessingError(
                        f"feed {self.bucket}: reading {key!r} answered HTTP {response.status_code}"
                    )
                skip = start if response.status_code == 200 else 0
                return _slice(response.iter_bytes(), skip, length)
        except httpx.HTTPError as exc:
            raise ProcessingError(f"feed {self.bucket}: reading {key!r} failed: {exc}") from exc


@functools.cache
def _ssl_context(_cert_file: str | None, _cert_dir: str | None) -> ssl.SSLContext:
    """httpx's default TLS context (certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), made
    once per process: loading the CA bundle costs tens of milliseconds per client, and a
    sync opens two (its check, its walk), ``serve`` one per poll."""
    return httpx.create_ssl_context()


def _slice(chunks: Iterator[bytes], skip: int, length: int) -> bytes:
    """``length`` bytes after the first ``skip`` of a stream, reading no further."""
    out = bytearray()
    for chunk in chunks:
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        out += chunk[skip : skip + length - len(out)]
        skip = 0
        if len(out) >= length:
            break
    return bytes(out)


def _size(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    try:
        size = int(value)
    except (TypeError, ValueError):
        return 0
    return max(size, 0)


def catalog_lookup(catalog: Any, source_id: int) -> Lookup:
    """Find a record's URL and size in the catalog: the ``source_url`` the sync copied into
    the metadata of the item's folder (its dataset), so a job never walks the feed."""
    from sqlalchemy import select

    from mediamirror.catalog.models import FOLDERS, ITEMS

    def lookup(key: str) -> tuple[str, int | None] | None:
        with catalog.read() as conn:
            row = conn.execute(
                select(FOLDERS.c.meta, ITEMS.c.size)
                .join(FOLDERS, FOLDERS.c.id == ITEMS.c.folder_id)
                .where(ITEMS.c.source_id == source_id, ITEMS.c.key == key)
            ).first()
        if row is None or not isinstance(row.meta, Mapping):
            return None
        url = row.meta.get("source_url")
        if not isinstance(url, str) or not url:
            return None
        return url, (int(row.size) or None)

    return lookup
