"""Store backends behind one small protocol, and the factory that opens them.

URLs: ``s3://bucket/prefix`` (AWS S3, MinIO, DigitalOcean Spaces, any S3 API),
``gs://bucket/prefix`` (Google Cloud Storage through its S3-interoperable endpoint with
HMAC keys), ``file:///path`` and ``feed://NAME`` (a GraphQL CMS declared under ``feeds:``
in config.yaml: stores/feed.py). Credentials are *references*: names of environment
variables or of an AWS profile, resolved only when the store is opened.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from mediamirror.errors import ConfigError, StoreError
from mediamirror.redact import remember
from mediamirror.stores.base import ObjectInfo, Store, WritableStore
from mediamirror.stores.timeouts import StoreTimeouts

__all__ = [
    "PRESETS",
    "ObjectInfo",
    "Store",
    "StoreSpec",
    "WritableStore",
    "open_store",
    "parse_spec",
]


@dataclass(frozen=True)
class Preset:
    """Defaults of a known S3-compatible service."""

    endpoint_url: str | None = None
    region: str | None = None
    addressing: str = "auto"
    access_key_env: str | None = None
    secret_key_env: str | None = None
    region_env: str | None = None
    endpoint_env: str | None = None
    bucket_env: str | None = None


PRESETS: dict[str, Preset] = {
    "aws": Preset(),
    "minio": Preset(region="us-east-1", addressing="path"),
    "do-spaces": Preset(
        addressing="virtual",
        access_key_env="DO_SPACES_KEY",
        secret_key_env="DO_SPACES_SECRET",
        region_env="DO_SPACES_REGION",
        endpoint_env="DO_SPACES_ENDPOINT",
        bucket_env="DO_SPACES_BUCKET",
    ),
    "gcs": Preset(
        endpoint_url="https://storage.googleapis.com",
        region="auto",
        addressing="path",
        access_key_env="GS_ACCESS_KEY_ID",
        secret_key_env="GS_SECRET_ACCESS_KEY",
    ),
}


@dataclass(frozen=True)
class StoreSpec:
    """Everything needed to open a store, with credentials as references only."""

    kind: str  # "s3" or "local"
    scheme: str
    bucket: str
    prefix: str
    preset: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing: str = "auto"
    credentials: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        if self.kind == "local":
            return f"file://{self.prefix}"
        if self.kind == "feed":
            return f"feed://{self.bucket}"
        return f"{self.scheme}://{self.bucket}/{self.prefix}"


def _split_url(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in {"s3", "gs", "file"} or "://" not in url:
        raise ConfigError(
            f"unsupported store URL {url!r}: use s3://bucket/prefix, gs://bucket/prefix "
            "or file:///path"
        )
    if scheme == "file":
        path = unquote(parts.path) if parts.netloc in {"", "localhost"} else ""
        if not path.startswith("/"):
            raise ConfigError(f"file URL {url!r} needs an absolute path: file:///path")
        return scheme, "", path
    bucket = parts.netloc
    prefix = url.split("://", 1)[1][len(bucket) :].lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"  # a prefix names a folder: "videos" must not match "videos2/..."
    return scheme, bucket, prefix


def _printable(what: str, value: str) -> None:
    """Control characters (a NUL above all) in a URL or path are refused: no file system,
    database or HTTP library accepts them, and each fails in its own way."""
    bad = next((c for c in value if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ConfigError(f"{what} {value!r} contains the control character {bad!r}")


def _check_endpoint(endpoint_url: str) -> None:
    _printable("endpoint URL", endpoint_url)
    try:
        parts = urlsplit(endpoint_url)
        parts.port  # noqa: B018  (parsing the port is the check: "port out of range")
    except ValueError as exc:
        raise ConfigError(f"endpoint URL {endpoint_url!r} is malformed: {exc}") from None
    if parts.scheme not in {"http", "https"}:
        raise ConfigError(f"endpoint URL {endpoint_url!r} must start with http:// or https://")
    if not parts.hostname:
        raise ConfigError(f"endpoint URL {endpoint_url!r} names no host")


def parse_spec(
    url: str,
    *,
    preset: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    addressing: str | None = None,
    access_key_env: str | None = None,
    secret_key_env: str | None = None,
    env: Mapping[str, str] | None = None,
) -> StoreSpec:
    """Validate a store URL and options; resolve the non-secret preset values.

    Every refusal is a :class:`ConfigError` with one line, so the CLI and the API say
    what is wrong instead of failing on a malformed URL deep inside a backend."""
    env = env or {}
    _printable("store URL", url)
    if url.lower().startswith("feed:"):
        return _feed_spec(url, preset, endpoint_url, region, profile, addressing)
    try:
        scheme, bucket, prefix = _split_url(url)
    except ValueError as exc:  # urlsplit: "Invalid IPv6 URL", a bad port...
        raise ConfigError(f"store URL {url!r} is malformed: {exc}") from None
    _printable("the path of store URL", prefix)  # a file:// path is percent-decoded
    if scheme == "file":
        return StoreSpec(kind="local", scheme="file", bucket="", prefix=prefix)
    if scheme == "gs":
        preset = preset or "gcs"
    if preset is None and endpoint_url and "digitaloceanspaces.com" in endpoint_url:
        preset = "do-spaces"
    preset = preset or "aws"
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
    p = PRESETS[preset]
    if not bucket and p.bucket_env:
        bucket = env.get(p.bucket_env, "")
    if not bucket:
        raise ConfigError(f"store URL {url!r} names no bucket")
    region = region or (env.get(p.region_env) if p.region_env else None) or p.region
    endpoint_url = endpoint_url or (env.get(p.endpoint_env) if p.endpoint_env else None)
    endpoint_url = endpoint_url or p.endpoint_url
    if preset == "do-spaces" and not endpoint_url:
        if not region:
            raise ConfigError("DigitalOcean Spaces needs DO_SPACES_REGION or --region")
        endpoint_url = f"https://{region}.digitaloceanspaces.com"
    if preset == "minio" and not endpoint_url:
        raise ConfigError("MinIO needs --endpoint-url (e.g. http://127.0.0.1:9000)")
    if endpoint_url:
        _check_endpoint(endpoint_url)
    addressing = addressing or p.addressing
    if addressing not in {"auto", "path", "virtual"}:
        raise ConfigError(f"addressing must be auto, path or virtual, not {addressing!r}")
    credentials = {}
    if access_key_env or p.access_key_env:
        credentials["access_key_env"] = access_key_env or p.access_key_env or ""
    if secret_key_env or p.secret_key_env:
        credentials["secret_key_env"] = secret_key_env or p.secret_key_env or ""
    return StoreSpec(
        kind="s3",
        scheme=scheme,
        bucket=bucket,
        prefix=prefix,
        preset=preset,
        endpoint_url=endpoint_url,
        region=region,
        profile=profile,
        addressing=addressing,
        credentials=credentials,
    )


_FEED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _feed_spec(url: str, *options: str | None) -> StoreSpec:
    """``feed://NAME``: the ``feeds: NAME:`` block of config.yaml (stores/feed.py)."""
    if not url.startswith("feed://"):
        raise ConfigError(f"feed URL {url!r} must look like feed://NAME")
    name = url[len("feed://") :].rstrip("/")
    if not _FEED_NAME.match(name):
        raise ConfigError(
            f"feed URL {url!r} must be feed://NAME, NAME a block of 'feeds:' in config.yaml"
        )
    if any(options):
        raise ConfigError("a feed:// source takes no store options: its feeds: block has them")
    return StoreSpec(kind="feed", scheme="feed", bucket=name, prefix="")


def _open_feed(
    spec: StoreSpec,
    env: Mapping[str, str],
    page_size: int,
    timeouts: StoreTimeouts | None,
    feeds: Any,
    lookup: Any,
    max_bytes: int | None,
) -> Any:
    from mediamirror.stores.feed import FeedStore
    from mediamirror.stores.feed_config import feed_config

    return FeedStore(
        feed_config(spec.bucket, feeds),
        env=env,
        timeouts=timeouts,
        page_size=page_size,
        lookup=lookup,
        max_bytes=max_bytes,
    )


def _secret(env: Mapping[str, str], name: str | None, what: str) -> str | None:
    if not name:
        return None
    value = env.get(name)
    if not value:
        raise StoreError(f"environment variable {name} ({what}) is not set")
    remember(value, name)  # a credential never shows in a message, whatever its name
    return value


def open_store(
    spec: StoreSpec,
    env: Mapping[str, str],
    *,
    page_size: int = 1000,
    timeouts: StoreTimeouts | None = None,
    feeds: Any = None,
    lookup: Any = None,
    max_bytes: int | None = None,
) -> Any:
    """Open the store a spec describes, reading credential references from ``env``.

    A ``feed://NAME`` store takes its block from ``feeds`` (the ``feeds:`` section), else
    from the one the loaded settings registered; ``lookup`` finds a record's URL in the
    catalog at job time and ``max_bytes`` caps its downloads (stores/feed.py)."""
    if spec.kind == "feed":
        return _open_feed(spec, env, page_size, timeouts, feeds, lookup, max_bytes)
    # Backends are imported here: boto3 alone costs half a second of start-up.
    if spec.kind == "local":
        from mediamirror.stores.local import LocalStore

        return LocalStore(Path(spec.prefix), page_size=page_size)
    from mediamirror.stores.s3 import S3Store

    access_env = spec.credentials.get("access_key_env")
    secret_env = spec.credentials.get("secret_key_env")
    hint = " and ".join(n for n in (access_env, secret_env) if n)
    if spec.profile:
        hint = hint or f"the AWS profile {spec.profile!r}"
    return S3Store(
        spec.bucket,
        spec.prefix,
        scheme=spec.scheme,
        endpoint_url=spec.endpoint_url,
        region=spec.region,
        profile=spec.profile,
        addressing=spec.addressing,
        access_key=_secret(env, access_env, "access key"),
        secret_key=_secret(env, secret_env, "secret key"),
        page_size=page_size,
        credentials_hint=hint,
        timeouts=timeouts,
    )


class ReadOnlyStore:
    """A store seen as a source: only the read side exists, so nothing can write to it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.scheme: str = inner.scheme
        self.bucket: str = inner.bucket
        self.prefix: str = inner.prefix
        self.network: bool = getattr(inner, "network", True)

    def object_url(self, key: str) -> str:
        return str(self._inner.object_url(key))

    def check(self) -> None:
        self._inner.check()

    def list_pages(self, start_after: str | None = None) -> Any:
        return self._inner.list_pages(start_after)

    def range_lister(self) -> Any:
        """The store's listings by key range and folder (S3 stores: ``list_range``,
        ``list_folders``; read-only) for parallel listing, else None."""
        return self._inner if hasattr(self._inner, "list_range") else None

    def stat_lister(self) -> Any:
        """The store's raw listing (local directories: ``stat_pages``), else None."""
        return self._inner if hasattr(self._inner, "stat_pages") else None

    def head(self, key: str) -> ObjectInfo:
        info: ObjectInfo = self._inner.head(key)
        return info

    def read_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        return bytes(self._inner.read_range(key, start, length, etag))

    def download(self, key: str, dest: Path, **options: Any) -> None:
        """``options`` (progress, check) are for stores that take them (feeds)."""
        self._inner.download(key, dest, **options)

    def set_keepalive(self, keepalive: Any) -> None:
        """Called between the pages of a feed's walk (a sync renews its lease there)."""
        if hasattr(self._inner, "keepalive"):
            self._inner.keepalive = keepalive

    @property
    def warning(self) -> str | None:
        """One line about records the last listing skipped (feeds), else None."""
        warning: str | None = getattr(self._inner, "warning", None)
        return warning

    def locate(self, key: str) -> tuple[str, str]:
        """How to serve an object: ("file", local path) or ("url", presigned URL)."""
        inner = self._inner
        if hasattr(inner, "local_path"):
            return "file", str(inner.local_path(key))
        return "url", str(inner.presigned_url(key))

    def media_input(self, key: str) -> str:
        """What ffmpeg should read: a local path, or a presigned HTTP URL (no download)."""
        inner = self._inner
        if hasattr(inner, "local_path"):
            return str(inner.local_path(key))
        return str(inner.presigned_url(key, expires=24 * 3600))
