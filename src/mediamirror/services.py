"""The shared objects a worker, the CLI or the API hand to processors and jobs."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import SOURCES, Source
from mediamirror.config import Settings
from mediamirror.errors import NotFoundError
from mediamirror.jobs.model import RetryPolicy
from mediamirror.profiles import profile_of
from mediamirror.redact import remember_env
from mediamirror.stores import ReadOnlyStore
from mediamirror.stores.output import OutputStore, check_apart, profile_output_spec
from mediamirror.stores.timeouts import StoreTimeouts


@dataclass
class Services:
    """Catalog, settings, environment and lazily opened stores (thread-safe caches)."""

    catalog: Catalog
    settings: Settings
    env: Mapping[str, str]
    _stores: dict[Any, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # Jobs and the API run with this environment: its secrets never leave in a message.
        remember_env(self.env)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.settings.job_max_attempts, self.settings.retry_intervals)

    def _cached(self, key: Any, make: Any) -> Any:
        with self._lock:
            if key not in self._stores:
                self._stores[key] = make()
            return self._stores[key]

    def source(self, source_id: int) -> Source:
        """The source's row as it is now: read on every call (one primary-key lookup),
        never cached. Another process may have removed, edited or re-added it, and on
        SQLite a new source can get the id of a removed one."""
        with self.catalog.read() as conn:
            row = conn.execute(select(SOURCES).where(SOURCES.c.id == source_id)).first()
        if row is None:
            raise NotFoundError(f"source {source_id} no longer exists")
        return Source(**row._mapping)

    def source_store(self, source_id: int) -> ReadOnlyStore:
        """The source's store, cached by the source's never-reused uid and by what the
        store is opened from, so a re-added or edited source never gets the old one."""
        from mediamirror.sources import source_store, spec_of

        src = self.source(source_id)
        key = ("source", src.uid, repr(spec_of(src)))
        with self._lock:
            cached: ReadOnlyStore | None = self._stores.get(key)
        if cached is not None:
            return cached
        store = source_store(
            src,
            self.env,
            timeouts=StoreTimeouts.from_settings(self.settings),
            settings=self.settings,  # a feed source: its feeds: block, max_download_bytes
            catalog=self.catalog,  # a feed source: its records' URLs
        )
        self._forget_stale_sources(src.uid)
        with self._lock:
            result: ReadOnlyStore = self._stores.setdefault(key, store)
        return result

    def _forget_stale_sources(self, uid: str) -> None:
        """Drop the stores of removed sources and the older stores of ``uid`` (edited)."""
        with self.catalog.read() as conn:
            alive = set(conn.execute(select(SOURCES.c.uid)).scalars())
        with self._lock:
            for key in [k for k in self._stores if isinstance(k, tuple) and k[0] == "source"]:
                if key[1] == uid or key[1] not in alive:
                    del self._stores[key]

    def _source_specs(self) -> list[Any]:
        from mediamirror.sources import spec_of

        with self.catalog.session(write=False) as session:
            return [spec_of(s) for s in session.scalars(select(Source))]

    def output_store(self) -> OutputStore:
        store: OutputStore = self._cached(
            "output",
            lambda: OutputStore.from_url(
                self.settings.output_url,
                self.env,
                timeouts=StoreTimeouts.from_settings(self.settings),
                endpoint_url=self.settings.output_endpoint_url,
                sources=self._source_specs(),
            ),
        )
        return store

    def output_store_for(self, source_id: int | None) -> OutputStore:
        """Where a source's derived files go: its profile's output store, else the
        installation's (:meth:`output_store`). Cached by the source's uid and by what the
        store is opened from, so an edited profile gets a new store, and a profile with
        the installation's store shares :meth:`output_store`'s."""
        if source_id is None:
            return self.output_store()
        return self._output_store_of(self.source(source_id))

    def _output_store_of(self, src: Source) -> OutputStore:
        """:meth:`output_store_for` of a source row already read."""
        profile = profile_of(src)
        if not profile.output_url:
            return self.output_store()
        spec = profile_output_spec(profile, self.settings, self.env)
        key = ("source-output", src.uid, repr(spec))

        def make() -> OutputStore:
            for source in self._source_specs():
                check_apart(source, [spec])
            # The source's store as it was before an edit is not needed any more.
            for old in [k for k in self._stores if k[:2] == ("source-output", src.uid)]:
                del self._stores[old]
            return OutputStore(spec, self.env, StoreTimeouts.from_settings(self.settings))

        store: OutputStore = self._cached(key, make)
        return store

    def results_store_for(self, source_id: int | None, url: str | None = None) -> OutputStore:
        """Where a command processor's results for a source's dataset go: ``url`` (the
        processor's ``results_store``), else the ``results_store`` setting, else the
        source's output store in the catalog layout; a mirror-layout output store holds
        mirrored names only, so such a source's results go to the installation's."""
        if url or self.settings.results_store or source_id is None:
            return self.results_store(url)
        src = self.source(source_id)  # one read of the row for both decisions
        if profile_of(src).output_layout == "mirror":
            return self.output_store()
        return self._output_store_of(src)

    def results_store(self, url: str | None = None) -> OutputStore:
        url = url or self.settings.results_store
        if not url:
            return self.output_store()
        store: OutputStore = self._cached(
            ("results", url),
            lambda: OutputStore.from_url(
                url,
                self.env,
                timeouts=StoreTimeouts.from_settings(self.settings),
                endpoint_url=self.settings.output_endpoint_url,
                sources=self._source_specs(),
            ),
        )
        return store


__all__ = ["Services"]
