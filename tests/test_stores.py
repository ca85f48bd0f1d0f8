"""Store backends: URL parsing and presets, S3 against moto's server, local directories."""

from __future__ import annotations

import os
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from helpers import S3Bucket, S3Server, closed_port
from mediamirror.errors import ConfigError, NotFoundError, StoreError
from mediamirror.stores import ReadOnlyStore, Store, WritableStore, open_store, parse_spec
from mediamirror.stores.local import LocalStore
from mediamirror.stores.s3 import S3Store

# -- URLs and presets ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://bkt", "bkt", ""),
        ("s3://bkt/", "bkt", ""),
        ("s3://bkt/videos", "bkt", "videos/"),
        ("s3://bkt/a/b/", "bkt", "a/b/"),
        ("S3://bkt/x", "bkt", "x/"),
    ],
)
def test_s3_urls(url: str, bucket: str, prefix: str) -> None:
    spec = parse_spec(url)
    assert (spec.kind, spec.bucket, spec.prefix, spec.preset) == ("s3", bucket, prefix, "aws")
    assert spec.url == f"s3://{bucket}/{prefix}"
    assert spec.credentials == {}


def test_file_url() -> None:
    spec = parse_spec("file:///data/media%20files")
    assert (spec.kind, spec.prefix, spec.url) == (
        "local",
        "/data/media files",
        "file:///data/media files",
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3:/x", "unsupported store URL"),
        ("ftp://x/y", "unsupported store URL"),
        ("bucket/key", "unsupported store URL"),
        ("s3://", "names no bucket"),
        ("file://host/path", "needs an absolute path"),
        ("file:relative", "unsupported store URL"),
    ],
)
def test_malformed_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_spec(url)


def test_presets() -> None:
    gcs = parse_spec("gs://bkt/p")
    assert (gcs.preset, gcs.endpoint_url, gcs.addressing) == (
        "gcs",
        "https://storage.googleapis.com",
        "path",
    )
    assert gcs.credentials == {
        "access_key_env": "GS_ACCESS_KEY_ID",
        "secret_key_env": "GS_SECRET_ACCESS_KEY",
    }
    assert gcs.url == "gs://bkt/p/"

    env = {"DO_SPACES_REGION": "ams3", "DO_SPACES_BUCKET": "from-env"}
    do = parse_spec("s3:///in", preset="do-spaces", env=env)
    assert (do.bucket, do.prefix, do.region) == ("from-env", "in/", "ams3")
    assert do.endpoint_url == "https://ams3.digitaloceanspaces.com"
    assert do.credentials == {
        "access_key_env": "DO_SPACES_KEY",
        "secret_key_env": "DO_SPACES_SECRET",
    }
    detected = parse_spec("s3://b", endpoint_url="https://fra1.digitaloceanspaces.com")
    assert detected.preset == "do-spaces"

    minio = parse_spec("s3://b", preset="minio", endpoint_url="http://127.0.0.1:9000")
    assert (minio.addressing, minio.region) == ("path", "us-east-1")

    custom = parse_spec("s3://b", access_key_env="MY_KEY", secret_key_env="MY_SECRET")
    assert custom.credentials == {"access_key_env": "MY_KEY", "secret_key_env": "MY_SECRET"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "do-spaces"}, "needs DO_SPACES_REGION or --region"),
        ({"preset": "minio"}, "MinIO needs --endpoint-url"),
        ({"preset": "nope"}, "unknown preset 'nope'"),
        ({"endpoint_url": "ftp://x"}, "must start with http"),
        ({"addressing": "sideways"}, "addressing must be auto, path or virtual"),
    ],
)
def test_bad_store_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_spec("s3://b", **kwargs)


def test_credential_variable_not_set_is_a_clear_error() -> None:
    spec = parse_spec("s3://b", preset="do-spaces", region="nyc3")
    with pytest.raises(StoreError, match=r"environment variable DO_SPACES_KEY \(access key\)"):
        open_store(spec, env={})
    with pytest.raises(StoreError, match="DO_SPACES_SECRET"):
        open_store(spec, env={"DO_SPACES_KEY": "k"})


# -- S3 API ----------------------------------------------------------------------------------


def s3_store(bucket: S3Bucket, prefix: str = "", page_size: int = 1000) -> S3Store:
    return S3Store(bucket.name, prefix, endpoint_url=bucket.server.endpoint, page_size=page_size)


def test_s3_lists_pages_in_byte_order_under_the_prefix(bucket: S3Bucket) -> None:
    inside = ["p/a", "p/a.txt", "p/a/b", "p/b/", "p/é", "p/日本", "p/🎉", "p/Z", "p/0"]
    for key in [*inside, "p2/no", "pa", "o"]:
        bucket.put(key)
    store = s3_store(bucket, "p/", page_size=4)

    pages = list(store.list_pages())

    assert [len(p) for p in pages] == [4, 4, 1]
    keys = [o.key for p in pages for o in p]
    assert keys == sorted(inside, key=lambda k: k.encode())
    assert "p/b/" in keys  # folder markers are listed; the sync decides what they mean
    after = [o.key for p in store.list_pages(start_after="p/a/b") for o in p]
    assert after == keys[keys.index("p/a/b") + 1 :]
    info = pages[0][0]
    assert info.last_modified.tzinfo is not None
    assert info.last_modified.utcoffset() == UTC.utcoffset(None)
    assert isinstance(store, Store)


def test_s3_head_read_download(bucket: S3Bucket, tmp_path: Path) -> None:
    bucket.put("dir/blob.bin", bytes(range(256)))
    bucket.put("dir/empty", b"")
    store = ReadOnlyStore(s3_store(bucket))

    info = store.head("dir/blob.bin")
    assert (info.key, info.size) == ("dir/blob.bin", 256)
    listed = next(iter(store.list_pages()))[0]
    assert (listed.etag, listed.size) == (info.etag, info.size)
    assert store.read_range("dir/blob.bin", 10, 5) == bytes(range(10, 15))
    assert store.read_range("dir/blob.bin", 250, 100) == bytes(range(250, 256))
    assert store.read_range("dir/blob.bin", 300, 10) == b""
    assert store.read_range("dir/blob.bin", 0, 0) == b""
    assert store.head("dir/empty").size == 0
    store.download("dir/blob.bin", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == bytes(range(256))
    assert not (tmp_path / "copy.part").exists()
    with pytest.raises(NotFoundError, match=f"s3://{bucket.name}/dir/missing does not exist"):
        store.head("dir/missing")
    with pytest.raises(NotFoundError):
        store.read_range("dir/missing", 0, 10)
    assert store.object_url("a b/c") == f"s3://{bucket.name}/a b/c"


def test_sources_are_read_only(bucket: S3Bucket) -> None:
    inner = s3_store(bucket)
    assert isinstance(inner, WritableStore)
    store = ReadOnlyStore(inner)
    assert not isinstance(store, WritableStore)
    assert not hasattr(store, "put_file") and not hasattr(store, "delete")


def test_s3_output_store_writes(bucket: S3Bucket, tmp_path: Path) -> None:
    src = tmp_path / "out.mp4"
    src.write_bytes(b"mp4")
    store = s3_store(bucket)
    store.put_file("derived/out.mp4", src, content_type="video/mp4")
    head = bucket.client.head_object(Bucket=bucket.name, Key="derived/out.mp4")
    assert head["ContentType"] == "video/mp4" and head["ContentLength"] == 3
    store.delete("derived/out.mp4")
    store.delete("derived/out.mp4")  # already gone: no error
    assert bucket.keys() == []


def test_s3_errors_are_one_clear_line(
    bucket: S3Bucket, s3_server: S3Server, s3_auth_server: S3Server
) -> None:
    missing = S3Store("no-such-bucket-x", endpoint_url=s3_server.endpoint)
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-x' does not exist"):
        missing.check()
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-x' does not exist"):
        list(missing.list_pages())
    denied = S3Store(bucket.name, endpoint_url=s3_auth_server.endpoint, credentials_hint="K and S")
    with pytest.raises(StoreError, match=r"access denied .* \(credentials from K and S\)"):
        denied.check()
    port = closed_port()
    unreachable = S3Store(bucket.name, endpoint_url=f"http://127.0.0.1:{port}")
    with pytest.raises(StoreError, match=f"cannot reach http://127.0.0.1:{port} to list"):
        unreachable.check()


# -- local directories -----------------------------------------------------------------------


def test_local_lists_files_in_the_order_of_an_object_store(tmp_path: Path) -> None:
    root = tmp_path / "root"
    names = ["a", "a.txt", "a-b", "a0", "b/c", "é/x", "日本.txt", "🎉", "Z", "a/b/c.mov", "a/b.d"]
    for name in names:
        if name == "a":
            continue  # "a" is a directory here (a/b/c.mov), a file cannot share its name
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (root / "empty-dir").mkdir()
    store = LocalStore(root, page_size=3)

    pages = list(store.list_pages())

    keys = [o.key for p in pages for o in p]
    expected = sorted((n for n in names if n != "a"), key=lambda k: k.encode())
    assert keys == expected
    assert all(len(p) == 3 for p in pages[:-1])
    assert [o.key for p in store.list_pages(start_after="a/b/c.mov") for o in p] == expected[
        expected.index("a/b/c.mov") + 1 :
    ]


def test_local_skips_names_that_are_not_utf8(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.txt").write_bytes(b"x")
    try:
        with open(os.path.join(os.fsencode(root), b"bad-\xff.txt"), "wb") as fh:
            fh.write(b"x")
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    assert [o.key for p in LocalStore(root).list_pages() for o in p] == ["ok.txt"]


def test_local_etag_follows_content_and_time(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    path = root / "f.bin"
    path.write_bytes(b"12345")
    store = LocalStore(root)
    first = store.head("f.bin")
    assert first.size == 5 and first.last_modified.tzinfo is not None
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second = store.head("f.bin")
    assert second.etag != first.etag
    assert (second.last_modified - first.last_modified).total_seconds() == pytest.approx(1)
    assert next(iter(store.list_pages()))[0] == second


def test_local_reads_and_stays_inside_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f.bin").write_bytes(b"0123456789")
    (tmp_path / "secret.txt").write_text("outside")
    store = LocalStore(root)
    assert store.read_range("d/f.bin", 3, 4) == b"3456"
    assert store.read_range("d/f.bin", 8, 100) == b"89"
    store.download("d/f.bin", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"0123456789"
    with pytest.raises(StoreError, match="points outside"):
        store.read_range("../secret.txt", 0, 10)
    with pytest.raises(NotFoundError):
        store.head("d/missing")
    assert store.object_url("d/f.bin") == f"file://{root.resolve()}/d/f.bin"


def test_local_directory_problems(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        LocalStore(tmp_path / "missing").check()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is not a directory"):
        list(LocalStore(tmp_path / "file").list_pages())


def test_local_output_store_writes_atomically(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "out")
    src = tmp_path / "src.bin"
    src.write_bytes(b"data")
    store.put_file("a/b/c.bin", src)
    assert (tmp_path / "out" / "a" / "b" / "c.bin").read_bytes() == b"data"
    assert [p.name for p in (tmp_path / "out" / "a" / "b").iterdir()] == ["c.bin"]
    store.delete("a/b/c.bin")
    store.delete("a/b/c.bin")
    assert not (tmp_path / "out" / "a" / "b" / "c.bin").exists()
