"""The ``feeds:`` block of config.yaml: one validated :class:`FeedConfig` per feed name.

A feed is a GraphQL query walked page by page; every other key of the block is a dotted
path into one record (``file.url``) or into the answer's ``data`` (``videos.nodes``).
``${VAR}`` values were expanded when config.yaml was read; the expanded ``headers`` are
registered as secrets here too (whole values), so a token never shows in a message or log.

Loading settings registers the blocks (:func:`configure`), so a ``feed://NAME`` store can
be opened wherever settings were loaded, without passing them down every call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mediamirror.errors import ConfigError
from mediamirror.redact import remember, secret_name

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_PATH = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
REQUIRED = ("endpoint", "query", "records", "id", "url")
PATHS = ("records", "next_cursor", "has_next", "id", "url", "name", "version", "size", "notify")
KNOWN = frozenset(
    {*REQUIRED, *PATHS, "headers", "file_headers", "metadata", "poll_seconds", "page_timeout", "s3"}
)
#: Dataset metadata keys a ``metadata:`` field may not overwrite.
RESERVED = frozenset(
    "type fps originalFps codec annotate import_path import_source MarkForPostProcess "
    "outputs cms_id cms_version source_url notify".split()
)
S3_OPTIONS = frozenset(
    {
        "preset",
        "endpoint_url",
        "region",
        "profile",
        "addressing",
        "access_key_env",
        "secret_key_env",
    }
)


@dataclass(frozen=True)
class FeedConfig:
    """One ``feeds: NAME:`` block, checked."""

    name: str
    endpoint: str
    query: str
    records: str
    id: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    next_cursor: str | None = None
    has_next: str | None = None
    name_path: str | None = None
    version: str | None = None
    size: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    notify: str | None = None
    poll_seconds: int = 60
    #: Seconds one page may take (overrides store_read_timeout for the CMS), 0: the setting.
    page_timeout: float = 0.0
    #: How s3:// record URLs are opened (parse_spec options: preset, endpoint_url, ...).
    s3: dict[str, str] = field(default_factory=dict)
    #: Headers sent with every download of a record's file, wherever it is.
    file_headers: dict[str, str] = field(default_factory=dict)

    def headers_for(self, url: str) -> dict[str, str]:
        """The headers a download of ``url`` carries: ``headers`` when the file is on the
        CMS's own origin (scheme, host and port of ``endpoint``; the CMS's token never goes
        to another host, such as a CDN or a presigned link), then ``file_headers``."""
        same = _origin(url) == _origin(self.endpoint)
        return {**(self.headers if same else {}), **self.file_headers}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port


def _text(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value


def _path(where: str, key: str, value: Any) -> str:
    text = _text(where, key, value).strip()
    if not _PATH.match(text):
        raise ConfigError(f"{where}: {key} {text!r} is not a dotted path like file.url")
    return text


def _mapping(where: str, key: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"{where}: {key} must be a mapping of names to strings")
    return {str(k): str(v) for k, v in value.items()}


def parse_feed(name: str, block: Any) -> FeedConfig:
    """One block, or ConfigError with one line naming the feed and the key."""
    where = f"feeds: {name}"
    if not _NAME.match(str(name)):
        raise ConfigError(f"feeds: name {name!r} must use letters, digits, '.', '_' and '-'")
    if not isinstance(block, Mapping):
        raise ConfigError(f"{where}: expected a mapping (endpoint, query, records, id, url...)")
    unknown = sorted(str(k) for k in block if k not in KNOWN)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(KNOWN))})"
        )
    missing = [k for k in REQUIRED if block.get(k) in (None, "")]
    if missing:
        raise ConfigError(f"{where}: missing {missing[0]!r} (required: {', '.join(REQUIRED)})")
    endpoint = _text(where, "endpoint", block["endpoint"]).strip()
    parts = urlsplit(endpoint)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{where}: endpoint {endpoint!r} must be an http:// or https:// URL")
    paths = {k: _path(where, k, block[k]) for k in PATHS if block.get(k) is not None}
    if ("next_cursor" in paths) != ("has_next" in paths):
        raise ConfigError(f"{where}: next_cursor and has_next go together (cursor pagination)")
    metadata = _mapping(where, "metadata", block.get("metadata"))
    for field_name, path in metadata.items():
        if field_name in RESERVED:
            raise ConfigError(f"{where}: metadata field {field_name!r} is reserved (DIVE or cms)")
        _path(where, f"metadata.{field_name}", path)
    headers = _mapping(where, "headers", block.get("headers"))
    file_headers = _mapping(where, "file_headers", block.get("file_headers"))
    for key, section in (("headers", headers), ("file_headers", file_headers)):
        for header, value in section.items():
            # ${VAR} parts were registered as the file was read; a credential header is
            # hidden whole too (a literal token), a Content-Type is not (it would mask
            # every mention).
            if header.lower() in {"authorization", "cookie", "proxy-authorization"} or (
                secret_name(header.replace("-", "_"))
            ):
                remember(value, f"feeds.{name}.{key}.{header}")
    s3 = _mapping(where, "s3", block.get("s3"))
    if set(s3) - S3_OPTIONS:
        bad = sorted(set(s3) - S3_OPTIONS)[0]
        raise ConfigError(f"{where}: unknown s3 option {bad!r} ({', '.join(sorted(S3_OPTIONS))})")
    return FeedConfig(
        name=str(name),
        endpoint=endpoint,
        query=_text(where, "query", block["query"]),
        records=paths["records"],
        id=paths["id"],
        url=paths["url"],
        headers=headers,
        next_cursor=paths.get("next_cursor"),
        has_next=paths.get("has_next"),
        name_path=paths.get("name"),
        version=paths.get("version"),
        size=paths.get("size"),
        metadata=metadata,
        notify=paths.get("notify"),
        poll_seconds=_number(where, "poll_seconds", block.get("poll_seconds", 60), int),
        page_timeout=float(_number(where, "page_timeout", block.get("page_timeout", 0), float)),
        s3=s3,
        file_headers=file_headers,
    )


def _number(where: str, key: str, value: Any, kind: type[int] | type[float]) -> Any:
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key} must be a number, not {value!r}") from None
    if number < 0:
        raise ConfigError(f"{where}: {key} must not be negative")
    return number


def parse_feeds(section: Any) -> dict[str, FeedConfig]:
    """The whole ``feeds:`` block."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError("feeds: expected a mapping of feed names to blocks")
    return {str(name): parse_feed(str(name), block) for name, block in section.items()}


_CONFIGURED: dict[str, FeedConfig] = {}


def configure(section: Any) -> dict[str, FeedConfig]:
    """Validate the ``feeds:`` block and make it the one ``feed://NAME`` stores open with."""
    feeds = parse_feeds(section)
    _CONFIGURED.clear()
    _CONFIGURED.update(feeds)
    return feeds


def feed_config(name: str, section: Any = None) -> FeedConfig:
    """The block of feed ``name``: from ``section`` (a ``feeds:`` block) when given, else
    from the block the settings of this process registered."""
    feeds = parse_feeds(section) if section is not None else _CONFIGURED
    if name not in feeds:
        raise ConfigError(
            f"feed {name!r} is not declared: add a 'feeds: {name}:' block to config.yaml"
        )
    return feeds[name]
