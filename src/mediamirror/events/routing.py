"""Which source an event is about, and who may send events: per-source push tokens.

A push token belongs to one source and is stored only as its SHA-256 in
``sources.options["push_token_sha256"]``. It lets its sender report changes of that
source's *bucket*: an event is applied to every source mirroring that bucket on the same
endpoint whose prefix holds the key (sources sharing a bucket under different prefixes
each get the keys under their own prefix), with each source's include/exclude filters.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import SOURCES, Source
from mediamirror.errors import ConfigError, NotFoundError

PUSH_PREFIX = "mmp_"
OPTION = "push_token_sha256"
RELOAD_SECONDS = 2.0


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def scheme_of(source: Source) -> str:
    return source.url.split("://", 1)[0]


@dataclass(frozen=True)
class Route:
    """One source as events see it."""

    source: Source
    include: re.Pattern[str] | None
    exclude: re.Pattern[str] | None

    @classmethod
    def of(cls, source: Source) -> Route:
        return cls(
            source,
            re.compile(source.include) if source.include else None,
            re.compile(source.exclude) if source.exclude else None,
        )

    @property
    def id(self) -> int:
        return self.source.id

    @property
    def store_identity(self) -> tuple[str, str, str]:
        """Sources with the same identity mirror the same bucket of the same service."""
        return (scheme_of(self.source), self.source.endpoint_url or "", self.source.bucket)

    def covers(self, bucket: str, key: str) -> bool:
        return bucket == self.source.bucket and key.startswith(self.source.prefix)

    def wanted(self, key: str) -> bool:
        """What a sync would keep (the same rule as the sync engine's filter)."""
        rel = key[len(self.source.prefix) :]
        if not rel or rel.endswith("/"):
            return False
        if self.include is not None and not self.include.search(rel):
            return False
        return not (self.exclude is not None and self.exclude.search(rel))

    def is_marker(self, key: str) -> bool:
        return key.endswith("/") and len(key) > len(self.source.prefix)


class SourceTable:
    """Every source as a :class:`Route`, re-read every few seconds and whenever a token
    is not recognised (so a token made a moment ago by the CLI works at once)."""

    def __init__(self, catalog: Catalog, reload_seconds: float = RELOAD_SECONDS) -> None:
        self.catalog = catalog
        self.reload_seconds = reload_seconds
        self._lock = threading.Lock()
        self._routes: list[Route] = []
        self._tokens: dict[str, Route] = {}
        self._loaded = 0.0

    def _load(self) -> None:
        with self.catalog.session(write=False) as session:
            sources = list(session.scalars(select(Source).order_by(Source.id)))
        routes = [Route.of(s) for s in sources]
        tokens = {
            str(r.source.options[OPTION]): r
            for r in routes
            if isinstance(r.source.options, dict) and r.source.options.get(OPTION)
        }
        with self._lock:
            self._routes, self._tokens, self._loaded = routes, tokens, time.monotonic()

    def routes(self, *, fresh: bool = False) -> list[Route]:
        """Every source; ``fresh`` re-reads them now (a source added a moment ago)."""
        if fresh or time.monotonic() - self._loaded > self.reload_seconds:
            self._load()
        with self._lock:
            return list(self._routes)

    def by_token(self, token: str, *, confirm: bool = True) -> Route | None:
        """The source whose push token this is. The table may be a few seconds old: with
        ``confirm`` the catalog is asked whether the token is still the source's (a
        replaced token must stop working at once); without, the caller must ask it with
        :func:`holds_token` before it acts (the push endpoints do, in the transaction
        that records the delivery)."""
        if not token.startswith(PUSH_PREFIX) or len(token) > 200:
            return None
        hashed = digest(token)
        self.routes()
        with self._lock:
            found = self._tokens.get(hashed)
        if found is None:
            self._load()
            with self._lock:
                found = self._tokens.get(hashed)
        if found is None or not confirm:
            return found
        with self.catalog.read() as conn:
            held = holds_token(conn, found.id, hashed)
        if not held:
            self.forget()
            return None
        return found

    def forget(self) -> None:
        """Re-read every source on the next look-up (a token was found replaced)."""
        with self._lock:
            self._loaded = float("-inf")

    def siblings(self, route: Route, *, fresh: bool = False) -> list[Route]:
        """Sources on the same bucket of the same service as ``route`` (itself included)."""
        return [r for r in self.routes(fresh=fresh) if r.store_identity == route.store_identity]

    def by_bucket(self, names: Iterable[str] = (), *, fresh: bool = False) -> list[Route]:
        """Sources that an SQS queue may feed: S3-kind sources, optionally only ``names``."""
        wanted = set(names)
        return [
            r
            for r in self.routes(fresh=fresh)
            if r.source.kind == "s3" and (not wanted or r.source.name in wanted)
        ]


_OPTIONS_OF = select(SOURCES.c.options).where(SOURCES.c.id == bindparam("source_id"))


def holds_token(conn: Connection, source_id: int, hashed: str) -> bool:
    """Whether the source still has the push token of SHA-256 ``hashed`` (one indexed
    read, in the caller's transaction)."""
    options = conn.execute(_OPTIONS_OF, {"source_id": source_id}).scalar()
    return isinstance(options, dict) and options.get(OPTION) == hashed


def targets(routes: Iterable[Route], bucket: str, key: str) -> list[Route]:
    """Routes whose bucket and prefix hold ``key``."""
    return [r for r in routes if r.covers(bucket, key)]


def create_push_token(catalog: Catalog, name: str) -> tuple[Source, str]:
    """A new push token for source ``name`` (replacing any previous one); the only time
    its value exists outside the sender's configuration."""
    token = PUSH_PREFIX + secrets.token_urlsafe(32)
    with catalog.session() as session:
        source = session.scalar(select(Source).where(Source.name == name))
        if source is None:
            raise NotFoundError(f"no source named {name!r} (see: mediamirror source list)")
        if source.kind == "local":
            raise ConfigError(
                f"source {name!r} is a local directory: only buckets send notifications"
            )
        source.options = {**(source.options or {}), OPTION: digest(token)}
        session.commit()
    return source, token


def endpoint_kind(source: Source) -> str:
    return "gcs" if scheme_of(source) == "gs" else "s3"


def push_url(base_url: str, source: Source, token: str) -> str:
    """The full URL a bucket (or SNS, or Pub/Sub) should POST events of ``source`` to."""
    base = base_url.rstrip("/")
    return f"{base}/api/v1/bucket_notifications/{endpoint_kind(source)}?token={token}"
