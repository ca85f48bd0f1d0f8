"""S3 Inventory reports as a sync's listing, for buckets too big to list quickly.

Amazon S3 writes an inventory report as ``<prefix>/<source-bucket>/<config-id>/
<YYYY-MM-DDTHH-MMZ>/manifest.json`` (plus ``manifest.checksum``, the MD5 of the manifest)
next to data files (``data/*.csv.gz`` or ``*.parquet``) that the manifest lists with their
MD5 checksums. A report is a complete listing of the bucket as of its date: fed to
:class:`~mediamirror.sync.engine.SyncEngine` through its ``listing`` parameter, it is
merged exactly like a listing (same filters, same deletion rule); a normal incremental
sync then catches what changed since the report.
"""

from __future__ import annotations

import dataclasses
import hashlib
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

#: The folder of one report: ``YYYY-MM-DDTHH-MMZ``.
_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}Z$")
_MANIFEST = "manifest.json"
#: Fields a listing needs, by normalized name (CSV ``LastModifiedDate``, Parquet
#: ``last_modified_date``: lower case, letters only).
_NEEDED = {"key": "Key", "size": "Size", "lastmodifieddate": "LastModifiedDate", "etag": "ETag"}
_READ_LIMIT = 1 << 30
_DOWNLOADS = 4
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
    stamp: str  # YYYY-MM-DDTHH-MMZ: when the report's scan began
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


def _download(store: Store, report: Report, workdir: Path) -> list[Path]:
    """Every data file of the report, fetched and checked against its MD5 checksum."""

    def fetch(pair: tuple[int, DataFile]) -> Path:
        i, f = pair
        dest = workdir / f"{i:06d}-{f.key.rsplit('/', 1)[-1]}"
        store.download(f.key, dest)
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

    with ThreadPoolExecutor(_DOWNLOADS) as pool:
        return list(pool.map(fetch, enumerate(report.files)))


def _read_csv(path: Path, report: Report) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [_norm(c) for c in report.columns]
    try:
        return pacsv.read_csv(
            pa.input_stream(str(path), compression="gzip" if path.suffix == ".gz" else None),
            read_options=pacsv.ReadOptions(column_names=names),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        if str(exc).startswith("Empty CSV file"):  # a bucket with nothing to list
            return pa.table({n: pa.array([], pa.string()) for n in names})
        raise SyncError(f"cannot read inventory file {path.name}: {_first_line(exc)}") from None


def _read_parquet(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(str(path))
    except (pa.ArrowInvalid, OSError) as exc:
        raise SyncError(f"cannot read inventory file {path.name}: {_first_line(exc)}") from None
    return table.rename_columns([_norm(n) for n in table.column_names])


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _current(table: Any, name: str, report: Report) -> Any:
    """The table's current objects: latest versions that are not delete markers, with
    columns key (decoded), size, etag and last_modified (UTC, milliseconds)."""
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
            modified = pc.assume_timezone(modified, "UTC")
        else:
            modified = pc.cast(modified, pa.timestamp("ms", tz="UTC"))
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
    return pa.table({"key": keys, "size": size, "etag": etags, "last_modified": modified})


def load(store: Store, report: Report, prefix: str) -> Any:
    """The report's current objects under ``prefix``, sorted by key (UTF-8 byte order):
    one Arrow table, about a hundred bytes a key."""
    import pyarrow as pa
    import pyarrow.compute as pc

    tables = []
    with tempfile.TemporaryDirectory(prefix="mediamirror-inventory-") as tmp:
        for path in _download(store, report, Path(tmp)):
            interrupt.check()
            raw = _read_csv(path, report) if report.file_format == "CSV" else _read_parquet(path)
            table = _current(raw, path.name, report)
            if prefix:
                table = table.filter(pc.starts_with(table["key"], prefix))
            tables.append(table)
            path.unlink()
    if not tables:
        return pa.table(
            {
                "key": pa.array([], pa.string()),
                "size": pa.array([], pa.int64()),
                "etag": pa.array([], pa.string()),
                "last_modified": pa.array([], pa.timestamp("ms", tz="UTC")),
            }
        )
    # Arrow compares strings byte by byte: the order of an S3 listing.
    return pa.concat_tables(tables).sort_by("key")


def pages(
    table: Any, report: Report, page_size: int = 1000, start_after: str | None = None
) -> Iterator[list[ObjectInfo]]:
    """A sorted table as listing pages (keys after ``start_after``); a key listed twice
    is refused: the merge would take it for a listing out of order."""
    import pyarrow as pa

    prev: str | None = None
    for offset in range(0, table.num_rows, page_size):
        part = table.slice(offset, page_size)
        page: list[ObjectInfo] = []
        for key, size, etag, millis in zip(
            part["key"].to_pylist(),
            part["size"].to_pylist(),
            part["etag"].to_pylist(),
            # Milliseconds since the epoch: exact, and far cheaper than Arrow's datetimes.
            part["last_modified"].cast(pa.int64()).to_pylist(),
            strict=True,
        ):
            if key == prev:
                raise SyncError(f"inventory report {report.url} lists {key!r} twice")
            prev = key
            if start_after is None or key > start_after:
                page.append(ObjectInfo(key, size, etag, _EPOCH + timedelta(milliseconds=millis)))
        if page:
            yield page


@dataclass
class Inventory:
    """A report read for one source: a ``listing`` for :class:`SyncEngine`."""

    store: Store
    report: Report
    prefix: str
    page_size: int = 1000
    keys: int = 0

    def __call__(self, start_after: str | None) -> Iterable[list[ObjectInfo]]:
        table = load(self.store, self.report, self.prefix)
        self.keys = table.num_rows
        return pages(table, self.report, self.page_size, start_after)


def inventory_spec(spec: StoreSpec, url: str) -> StoreSpec:
    """The source's store spec (endpoint, credentials) pointed at the inventory's bucket."""
    scheme, bucket, prefix = split_url(url)
    if scheme != spec.scheme:
        raise ConfigError(f"inventory URL {url!r} must use {spec.scheme}:// like the source")
    return dataclasses.replace(spec, bucket=bucket, prefix=prefix)


@dataclass
class InventorySync:
    """What ``sync NAME --from-inventory URL`` did: the report, the sync from it and the
    incremental sync that followed."""

    report: Report
    from_report: SyncSummary
    since: SyncSummary

    def lines(self) -> list[str]:
        return [
            f"{self.from_report.line()} [from the inventory report of {self.report.stamp}]",
            f"{self.since.line()} [changes since the report]",
        ]


def sync_from_inventory(
    catalog: Catalog,
    settings: Settings,
    name: str,
    env: Mapping[str, str],
    url: str,
    progress: Callable[[int], None] | None = None,
) -> InventorySync:
    """Sync source ``name`` from the newest inventory report under ``url``, then list it
    incrementally to catch what changed since the report."""
    from mediamirror.sources import get_source, spec_of, sync_source

    source = get_source(catalog, name)
    if source.kind != "s3":
        raise ConfigError(f"--from-inventory needs a bucket source; {name!r} is {source.url}")
    spec = inventory_spec(spec_of(source), url)
    timeouts = StoreTimeouts.from_settings(settings)
    store = ReadOnlyStore(open_store(spec, env, timeouts=timeouts))
    report = read_report(store, find_report(store, source.bucket), source.bucket)
    listing = Inventory(store, report, source.prefix, settings.sync_page_size)
    first = sync_source(catalog, settings, name, env, progress, listing=listing)
    then = sync_source(catalog, settings, name, env, progress)
    return InventorySync(report, first, then)
