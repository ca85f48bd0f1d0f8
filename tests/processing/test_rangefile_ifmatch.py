"""A probe's range reads come from one version of the object: an object replaced between
two reads fails with a clear, retried error instead of mixing old and new bytes."""

from __future__ import annotations

import pytest

from helpers import S3Bucket
from mediamirror.errors import TransientProcessingError
from mediamirror.processing.rangefile import RangeFile
from mediamirror.stores.s3 import S3Store

OLD = bytes(range(256)) * 64  # 16 KiB
NEW = bytes(reversed(range(256))) * 64


def s3_store(bucket: S3Bucket) -> S3Store:
    return S3Store(bucket.name, "", endpoint_url=bucket.server.endpoint)


def test_an_object_replaced_between_two_range_reads_is_not_mixed(bucket: S3Bucket) -> None:
    bucket.put("clip.bin", OLD)
    store = s3_store(bucket)
    [listed] = next(iter(store.list_pages()))
    remote = RangeFile(store, "clip.bin", listed.size, block_size=1024, etag=listed.etag)
    assert remote.read(1024) == OLD[:1024]

    bucket.put("clip.bin", NEW)  # same size, other bytes: only the etag tells
    remote.seek(8192)
    with pytest.raises(TransientProcessingError, match="changed while it was being read"):
        remote.read(1024)


def test_range_reads_of_an_unchanged_object_pass_the_etag_check(bucket: S3Bucket) -> None:
    bucket.put("clip.bin", OLD)
    store = s3_store(bucket)
    [listed] = next(iter(store.list_pages()))
    remote = RangeFile(store, "clip.bin", listed.size, block_size=1024, etag=listed.etag)
    remote.seek(4096)
    assert remote.read(2048) == OLD[4096:6144]
    assert store.read_range("clip.bin", 0, 10, etag=listed.etag) == OLD[:10]
