"""S3 Inventory reports as a sync's listing, for buckets too big to list quickly.

Amazon S3 writes an inventory report as ``<prefix>/<source-bucket>/<config-id>/
<YYYY-MM-DDTHH-MMZ>/manifest.json`` (plus ``manifest.checksum``, the MD5 of the manifest)
next to data files (``data/*.csv.gz`` or ``*.parquet``) that the manifest lists with their
MD5 checksums. A report is a complete listing of the bucket as of its date: fed to
:class:`~mediamirror.sync.engine.SyncEngine` through its ``listing`` parameter, it is
merged exactly like a listing (same filters, same deletion rule); a normal incremental
sync then catches what changed since the report. The report is sorted on disk
(:mod:`~mediamirror.sync.sorted_runs`), so memory does not grow with it; items the
catalog wrote after the report began are left to that follow-up sync
(:mod:`~mediamirror.sync.inventory_overlay`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from mediamirror import interrupt
from mediamirror.catalog.db import Catalog
from mediamirror.config import Settings
from mediamirror.errors import ConfigError, NotFoundError, SyncError
from mediamirror.stores import ReadOnlyStore, StoreSpec, open_store
from mediamirror.stores.base import ObjectInfo, Store
from mediamirror.stores.timeouts import StoreTimeouts
from mediamirror.sync.engine import SyncSummary
from mediamirror.sync.inventory_overlay import catalog_wins, last_listing, newer_items
from mediamirror.sync.sorted_runs import FAN_IN, RUN_ROWS, SortedRuns

#: The folder of one report: ``YYYY-MM-DDTHH-MMZ``.
_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}Z$")
_MANIFEST = "manifest.json"
#: Fields a listing needs, by normalized name (CSV ``LastModifiedDate``, Parquet
#: ``last_modified_date``: lower case, letters only).
_NEEDED = {"key": "Key", "size": "Size", "lastmodifieddate": "LastModifiedDate", "etag": "ETag"}
_READ_LIMIT = 1 << 30
_DOWNLOADS = 4
#: Bytes of CSV parsed at once, rows of Parquet read at once: what memory holds of a file.
_CSV_BLOCK = 4 << 20
_PARQUET_BATCH = 1 << 16
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DataFile:
    """One data file of a report, as its manifest lists it."""

    key: str
    md5: str


@dataclass(frozen=True)
class Report:
    """The manifest of one inventory report."""

    url: str  # of manifest.json
    stamp: str  # YYYY-MM-DDTHH-MMZ: the report's folder
    created: datetime  # the manifest's creationTimestamp: when the report's scan began
    source_bucket: str
    file_format: str  # "CSV" or "Parquet"
    columns: tuple[str, ...]  # CSV only: the fileSchema field names, in order
    files: tuple[DataFile, ...]


def split_url(url: str) -> tuple[str, str, str]:
    """``s3://bucket/prefix/`` -> (scheme, bucket, prefix ending in ``/`` or empty)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in {"s3", "gs"} or not parts.netloc:
        raise ConfigError(f"inventory URL {url!r} must look like s3://bucket/prefix/")
    prefix = url.split("://", 1)[1][len(parts.netloc) :].lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return parts.scheme.lower(), parts.netloc, prefix


def find_report(store: Store, source_bucket: str) -> str:
    """The key of the newest report's manifest for ``source_bucket`` under the store's
    prefix (any destination prefix and configuration id below it)."""
    found: dict[str, list[tuple[str, str]]] = {}
    for page in store.list_pages():
        for obj in page:
            parts = obj.key.split("/")
            if len(parts) >= 4 and parts[-1] == _MANIFEST and _STAMP.match(parts[-2]):
                found.setdefault(parts[-4], []).append((parts[-2], obj.key))
    where = store.object_url(store.prefix)
    if not found:
        raise NotFoundError(
            f"no S3 Inventory report under {where} "
            "(looked for <bucket>/<config-id>/<YYYY-MM-DDTHH-MMZ>/manifest.json)"
        )
    if source_bucket not in found:
        others = ", ".join(sorted(found))
        raise ConfigError(
            f"the inventory reports under {where} are for bucket {others}, "
            f"not the source's bucket {source_bucket!r}"
        )
    return max(found[source_bucket])[1]


def read_report(store: Store, key: str, source_bucket: str) -> Report:
    """Read and check one manifest: its checksum, its bucket, its format and fields."""
    url = store.object_url(key)
    body = store.read_range(key, 0, _READ_LIMIT)
    _check_manifest_checksum(store, key, body)
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{url} is not a valid S3 Inventory manifest: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{url} is not a valid S3 Inventory manifest: not a JSON object")
    bucket = _text(doc, "sourceBucket", url)
    if bucket != source_bucket:
        raise ConfigError(
            f"inventory report {url} lists bucket {bucket!r}, "
            f"not the source's bucket {source_bucket!r}"
        )
    fmt = _text(doc, "fileFormat", url)
    if fmt.upper() not in {"CSV", "PARQUET"}:
        raise ConfigError(
            f"inventory report {url} is in {fmt} format: mediamirror reads CSV and "
            "Parquet inventories (choose one in the inventory configuration)"
        )
    schema = _text(doc, "fileSchema", url)
    columns: tuple[str, ...] = ()
    if fmt.upper() == "CSV":
        columns = tuple(name.strip() for name in schema.split(","))
        _check_fields({_norm(c) for c in columns}, url)
    files = doc.get("files")
    if not isinstance(files, list) or not all(
        isinstance(f, dict)
        and isinstance(f.get("key"), str)
        and isinstance(f.get("MD5checksum"), str)
        for f in files
    ):
        raise ConfigError(
            f"{url} is not a valid S3 Inventory manifest: 'files' must list "
            "{key, MD5checksum} objects"
        )
    return Report(
        url=url,
        stamp=key.split("/")[-2],
        created=_created(doc, key.split("/")[-2]),
        source_bucket=bucket,
        file_format="CSV" if fmt.upper() == "CSV" else "Parquet",
        columns=columns,
        files=tuple(DataFile(f["key"], f["MD5checksum"].lower()) for f in files),
    )


def _text(doc: Mapping[str, Any], name: str, url: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{url} is not a valid S3 Inventory manifest: no {name!r}")
    return value


def _created(doc: Mapping[str, Any], stamp: str) -> datetime:
    """The manifest's ``creationTimestamp`` (milliseconds since the epoch, as text); the
    folder's date (to the minute) where a manifest has none."""
    value = doc.get("creationTimestamp")
    try:
        return _EPOCH + timedelta(milliseconds=int(str(value)))
    except (ValueError, OverflowError):
        return datetime.strptime(stamp, "%Y-%m-%dT%H-%MZ").replace(tzinfo=UTC)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def _check_fields(names: set[str], url: str) -> None:
    missing = [shown for n, shown in _NEEDED.items() if n not in names]
    if missing:
        raise ConfigError(
            f"inventory report {url} has no {', '.join(missing)} field: add Size, "
            "Last modified and ETag to the inventory configuration's fields"
        )


def _check_manifest_checksum(store: Store, key: str, body: bytes) -> None:
    checksum_key = key[: -len(_MANIFEST)] + "manifest.checksum"
    try:
        expected = store.read_range(checksum_key, 0, 1024).decode("ascii", "replace").strip()
    except NotFoundError:
        return  # written after the manifest: a report being published has none yet
    actual = hashlib.md5(body, usedforsecurity=False).hexdigest()  # AWS chose MD5
    if expected.lower() != actual:
        raise SyncError(
            f"{store.object_url(key)} does not match its manifest.checksum "
            f"(expected {expected}, got {actual})"
        )


# -- data files ---------------------------------------------------------------------------


def _download(store: Store, report: Report, workdir: Path) -> Iterator[Path]:
    """Every data file of the report, fetched (a few at once, handed over in the
    manifest's order as each arrives) and checked against its MD5 checksum."""

    def fetch(pair: tuple[int, DataFile]) -> Path:
        i, f = pair
        dest = workdir / f"{i:06d}-{f.key.rsplit('/', 1)[-1]}"
        try:
            store.download(f.key, dest)
        except NotFoundError:
            raise SyncError(
                f"inventory report {report.url} lists {store.object_url(f.key)}, which does "
                "not exist (removed since, or the report is still being written)"
            ) from None
        digest = hashlib.md5(usedforsecurity=False)
        with dest.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != f.md5:
            raise SyncError(
                f"inventory file {store.object_url(f.key)} does not match its MD5 checksum "
                f"in {report.url} (expected {f.md5}, got {digest.hexdigest()})"
            )
        return dest

    pool = ThreadPoolExecutor(_DOWNLOADS)
    try:
        yield from pool.map(fetch, enumerate(report.files))
    finally:  # refused or stopped: the files not yet fetched are not fetched at all
        pool.shutdown(cancel_futures=True)


def _csv_batches(path: Path, report: Report) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [_norm(c) for c in report.columns]
    try:
        reader = pacsv.open_csv(
            pa.input_stream(str(path), compression="gzip" if path.suffix == ".gz" else None),
            read_options=pacsv.ReadOptions(column_names=names, block_size=_CSV_BLOCK),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
            ),
        )
        for batch in reader:
            yield pa.Table.from_batches([batch])
    except (pa.ArrowInvalid, OSError) as exc:
        if str(exc).startswith("Empty CSV file"):  # a bucket with nothing to list
            return
        raise SyncError(f"cannot read inventory file {path.name}: {_first_line(exc)}") from None


def _parquet_batches(path: Path) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        data = pq.ParquetFile(str(path))
        names = [_norm(n) for n in data.schema_arrow.names]
        for batch in data.iter_batches(batch_size=_PARQUET_BATCH):
            yield pa.Table.from_batches([batch]).rename_columns(names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SyncError(f"cannot read inventory file {path.name}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _current(table: Any, name: str, report: Report) -> Any:
    """The table's current objects: latest versions that are not delete markers, with
    columns key (decoded), size, etag and ms (last modified, milliseconds since the epoch)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    _check_fields(set(table.column_names), f"{report.url} ({name})")
    cols = set(table.column_names)

    def flag(column: str) -> Any:
        values = table[column]
        if pa.types.is_boolean(values.type):
            return pc.fill_null(values, False)
        return pc.equal(pc.utf8_lower(pc.cast(values, pa.string())), "true")

    mask = None
    if "islatest" in cols:
        mask = flag("islatest")
    if "isdeletemarker" in cols:
        live = pc.invert(flag("isdeletemarker"))
        mask = live if mask is None else pc.and_(mask, live)
    if mask is not None:
        table = table.filter(mask)
    try:
        size = pc.cast(table["size"], pa.int64())
        modified = table["lastmodifieddate"]
        if pa.types.is_timestamp(modified.type):
            # Parquet inventories hold UTC instants (TIMESTAMP_MILLIS); listings have
            # milliseconds too, so anything finer is dropped.
            modified = pc.cast(modified, pa.timestamp("ms"), safe=False)
        else:
            modified = pc.cast(modified, pa.timestamp("ms", tz="UTC"))
        millis = pc.cast(modified, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SyncError(
            f"inventory file {name} of {report.url} has a bad row: {_first_line(exc)}"
        ) from None
    keys = table["key"]
    if report.file_format == "CSV":
        # CSV inventories URL-encode keys (form encoding: a space is "+"). Every "/" is
        # "%2F": decoded in Arrow at once, the rest key by key only where needed.
        keys = pc.replace_substring(pc.cast(keys, pa.string()), "%2F", "/")
        keys = pa.array(
            [unquote_plus(k) if "%" in k or "+" in k else k for k in keys.to_pylist()],
            pa.string(),
        )
    etags = pc.utf8_trim(pc.cast(table["etag"], pa.string()), '"')
    return pa.table({"key": keys, "size": size, "etag": etags, "ms": millis})


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [("key", pa.string()), ("size", pa.int64()), ("etag", pa.string()), ("ms", pa.int64())]
    )


def sort_report(
    store: Store,
    report: Report,
    prefix: str,
    workdir: Path,
    *,
    run_rows: int = RUN_ROWS,
    fan_in: int = FAN_IN,
) -> SortedRuns:
    """The report's current objects under ``prefix``, sorted by key (UTF-8 byte order,
    the order of an S3 listing) on disk in ``workdir``: data files are read batch by
    batch and removed once read, so memory does not grow with the report
    (:class:`SortedRuns` sizes: ``run_rows``, ``fan_in``)."""
    import pyarrow.compute as pc

    runs = SortedRuns(workdir, _schema(), run_rows=run_rows, fan_in=fan_in)
    for path in _download(store, report, workdir):
        reader = (
            _csv_batches(path, report) if report.file_format == "CSV" else _parquet_batches(path)
        )
        for raw in reader:
            interrupt.check()
            table = _current(raw, path.name, report)
            if prefix:
                table = table.filter(pc.starts_with(table["key"], prefix))
            runs.add(table)
        path.unlink()
    return runs


def objects(rows: Iterable[tuple[str, int, str, int]], report: Report) -> Iterator[ObjectInfo]:
    """Sorted report rows as objects; a key listed twice is refused: the merge would take
    it for a listing out of order."""
    prev: str | None = None
    for key, size, etag, millis in rows:
        if key == prev:
            raise SyncError(f"inventory report {report.url} lists {key!r} twice")
        prev = key
        # From milliseconds since the epoch: exact, and far cheaper than Arrow's datetimes.
        yield ObjectInfo(key, size, etag, _EPOCH + timedelta(milliseconds=millis))


def pages(
    objs: Iterable[ObjectInfo], page_size: int = 1000, start_after: str | None = None
) -> Iterator[list[ObjectInfo]]:
    """Sorted objects as listing pages (keys after ``start_after``)."""
    if start_after is not None:
        objs = (o for o in objs if o.key > start_after)
    it = iter(objs)
    while page := list(itertools.islice(it, page_size)):
        yield page


@dataclass
class Inventory:
    """A report read for one source: a ``listing`` for :class:`SyncEngine`.

    Given the catalog and the source's id, the catalog's items written after the report's
    creation stand in for the report's entries (:func:`catalog_wins`)."""

    store: Store
    report: Report
    prefix: str
    page_size: int = 1000
    catalog: Catalog | None = None
    source_id: int | None = None
    keys: int = 0  # rows of the report under the prefix, once read
    _sorted: SortedRuns | None = dataclasses.field(default=None, repr=False)

    def sort(self, workdir: Path) -> None:
        """Download, check and sort the report into ``workdir`` now, before the sync
        (which holds the source's lease) begins: the listing then only streams. Without
        it, the listing does this itself, in a temporary folder."""
        self._sorted = sort_report(self.store, self.report, self.prefix, workdir)
        self.keys = self._sorted.rows_added

    def __call__(self, start_after: str | None) -> Iterable[list[ObjectInfo]]:
        if self._sorted is None:
            with tempfile.TemporaryDirectory(prefix="mediamirror-inventory-") as tmp:
                self.sort(Path(tmp))
                yield from self._pages(start_after)
        else:
            yield from self._pages(start_after)

    def _pages(self, start_after: str | None) -> Iterator[list[ObjectInfo]]:
        runs, self._sorted = self._sorted, None  # read once: the runs go as they are read
        assert runs is not None
        objs: Iterable[ObjectInfo] = objects(runs.rows(), self.report)
        if self.catalog is not None and self.source_id is not None:
            newer = newer_items(self.catalog, self.source_id, self.report.created)
            objs = catalog_wins(objs, newer)
        yield from pages(objs, self.page_size, start_after)


def inventory_spec(spec: StoreSpec, url: str) -> StoreSpec:
    """The source's store spec (endpoint, credentials) pointed at the inventory's bucket."""
    scheme, bucket, prefix = split_url(url)
    if scheme != spec.scheme:
        raise ConfigError(f"inventory URL {url!r} must use {spec.scheme}:// like the source")
    return dataclasses.replace(spec, bucket=bucket, prefix=prefix)


@dataclass
class InventorySync:
    """What ``sync NAME --from-inventory URL`` did: the report, the sync from it (None: the
    report was older than the catalog's last full listing, so not read) and the
    incremental sync that followed."""

    report: Report
    from_report: SyncSummary | None
    since: SyncSummary
    listed_at: datetime | None = None  # when the last full listing before it began

    def lines(self) -> list[str]:
        if self.from_report is None:
            when = f"{self.listed_at:%Y-%m-%d %H:%M:%S} UTC" if self.listed_at else "?"
            first = (
                f"{self.since.source}: the inventory report of {self.report.stamp} is older "
                f"than the catalog's last full listing ({when}): not read, listed instead"
            )
        else:
            first = f"{self.from_report.line()} [from the inventory report of {self.report.stamp}]"
        return [first, f"{self.since.line()} [changes since the report]"]


def sync_from_inventory(
    catalog: Catalog,
    settings: Settings,
    name: str,
    env: Mapping[str, str],
    url: str,
    progress: Callable[[int], None] | None = None,
) -> InventorySync:
    """Sync source ``name`` from the newest inventory report under ``url``, then list it
    incrementally to catch what changed since the report.

    The report's data files are downloaded, checked and sorted on disk (in the system's
    temporary folder, ``TMPDIR``) before the sync from it starts. A report older than the
    source's last full listing would only take the catalog back in time: it is not read,
    the source is listed instead. Items written after the report began (by events, or a
    sync cut short) are left to the follow-up listing."""
    from mediamirror.sources import get_source, spec_of, sync_source

    source = get_source(catalog, name)
    if source.kind != "s3":
        raise ConfigError(f"--from-inventory needs a bucket source; {name!r} is {source.url}")
    spec = inventory_spec(spec_of(source), url)
    timeouts = StoreTimeouts.from_settings(settings)
    store = ReadOnlyStore(open_store(spec, env, timeouts=timeouts))
    report = read_report(store, find_report(store, source.bucket), source.bucket)
    listed_at = last_listing(catalog, source.id)
    first: SyncSummary | None = None
    if listed_at is None or listed_at < report.created:
        listing = Inventory(
            store, report, source.prefix, settings.sync_page_size, catalog, source.id
        )
        with tempfile.TemporaryDirectory(prefix="mediamirror-inventory-") as tmp:
            listing.sort(Path(tmp))  # checked and sorted before the sync starts
            first = sync_source(catalog, settings, name, env, progress, listing=listing)
    then = sync_source(catalog, settings, name, env, progress)
    return InventorySync(report, first, then, listed_at)
