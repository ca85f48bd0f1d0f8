"""Writes S3 Inventory reports the way Amazon S3 publishes them (tests and benchmarks).

Layout: ``<dest-prefix><source-bucket>/<config-id>/<YYYY-MM-DDTHH-MMZ>/manifest.json``
and ``manifest.checksum`` (MD5 of the manifest), data files under
``<dest-prefix><source-bucket>/<config-id>/data/``, and the Hive ``symlink.txt``.
CSV data files are gzipped, unquoted-header-less, every field quoted, keys URL-encoded
(form encoding); Parquet data files use AWS's snake_case column names.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

CSV_FIELDS = ("Bucket", "Key", "VersionId", "IsLatest", "IsDeleteMarker", "Size",
              "LastModifiedDate", "ETag", "StorageClass")  # fmt: skip
PARQUET_SCHEMA = (
    "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); "
    "optional binary version_id (UTF8); optional boolean is_latest; "
    "optional boolean is_delete_marker; optional int64 size; "
    "optional int64 last_modified_date (TIMESTAMP_MILLIS); optional binary e_tag (UTF8); "
    "optional binary storage_class (UTF8);}"
)


@dataclass(frozen=True)
class Row:
    key: str
    size: int | None
    etag: str
    last_modified: datetime
    version_id: str = ""
    is_latest: bool = True
    is_delete_marker: bool = False


def listing_rows(client: Any, bucket: str) -> list[Row]:
    """The bucket's objects as an inventory would list them."""
    rows: list[Row] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", ()):
            rows.append(Row(obj["Key"], obj["Size"], obj["ETag"].strip('"'), obj["LastModified"]))
    return rows


def _iso(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def csv_bytes(bucket: str, rows: Sequence[Row]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for r in rows:
        writer.writerow(
            [
                bucket,
                quote_plus(r.key),
                r.version_id,
                "true" if r.is_latest else "false",
                "true" if r.is_delete_marker else "false",
                "" if r.size is None else str(r.size),
                _iso(r.last_modified),
                r.etag,
                "STANDARD",
            ]
        )
    return gzip.compress(text.getvalue().encode(), compresslevel=1)


def parquet_bytes(bucket: str, rows: Sequence[Row]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "bucket": pa.array([bucket] * len(rows), pa.string()),
            "key": pa.array([r.key for r in rows], pa.string()),
            "version_id": pa.array([r.version_id or None for r in rows], pa.string()),
            "is_latest": pa.array([r.is_latest for r in rows], pa.bool_()),
            "is_delete_marker": pa.array([r.is_delete_marker for r in rows], pa.bool_()),
            "size": pa.array([r.size for r in rows], pa.int64()),
            "last_modified_date": pa.array(
                [r.last_modified.astimezone(UTC) for r in rows], pa.timestamp("ms", tz="UTC")
            ),
            "e_tag": pa.array([r.etag for r in rows], pa.string()),
            "storage_class": pa.array(["STANDARD"] * len(rows), pa.string()),
        }
    )
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def write_report(
    client: Any,
    inventory_bucket: str,
    source_bucket: str,
    rows: Sequence[Row],
    *,
    dest_prefix: str = "inventory/",
    fmt: str = "CSV",
    config_id: str = "daily",
    stamp: str = "2026-11-29T00-00Z",
    files: int = 2,
    seed: int = 7,
    manifest: dict[str, Any] | None = None,
    created: datetime | None = None,
) -> str:
    """Publish one report (rows shuffled over ``files`` data files); its manifest's key.
    ``created``: its creationTimestamp (default: now, as AWS writes it once its scan
    began); ``manifest``: fields to override in manifest.json."""
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    base = f"{dest_prefix}{source_bucket}/{config_id}"
    ext = "csv.gz" if fmt == "CSV" else "parquet"
    entries = []
    for i in range(files):
        part = shuffled[i::files]
        body = (
            csv_bytes(source_bucket, part) if fmt == "CSV" else parquet_bytes(source_bucket, part)
        )
        key = f"{base}/data/{uuid.uuid4()}.{ext}"
        client.put_object(Bucket=inventory_bucket, Key=key, Body=body)
        entries.append(
            {"key": key, "size": len(body), "MD5checksum": hashlib.md5(body).hexdigest()}
        )
    doc: dict[str, Any] = {
        "sourceBucket": source_bucket,
        "destinationBucket": f"arn:aws:s3:::{inventory_bucket}",
        "version": "2016-11-30",
        "creationTimestamp": str(int((created or datetime.now(UTC)).timestamp() * 1000)),
        "fileFormat": fmt,
        "fileSchema": ", ".join(CSV_FIELDS) if fmt == "CSV" else PARQUET_SCHEMA,
        "files": entries,
    }
    doc.update(manifest or {})
    body = json.dumps(doc, indent=2).encode()
    key = f"{base}/{stamp}/manifest.json"
    client.put_object(Bucket=inventory_bucket, Key=key, Body=body)
    checksum = hashlib.md5(body).hexdigest().encode()
    client.put_object(
        Bucket=inventory_bucket, Key=f"{base}/{stamp}/manifest.checksum", Body=checksum
    )
    hive = stamp[:10] + "-" + stamp[11:16]
    symlink = "\n".join(f"s3://{inventory_bucket}/{e['key']}" for e in entries).encode()
    client.put_object(
        Bucket=inventory_bucket, Key=f"{base}/hive/dt={hive}/symlink.txt", Body=symlink
    )
    return key
