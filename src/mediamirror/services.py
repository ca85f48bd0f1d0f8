"""The shared objects a worker, the CLI or the API hand to processors and jobs."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import Source
from mediamirror.config import Settings
from mediamirror.errors import NotFoundError
from mediamirror.jobs.model import RetryPolicy
from mediamirror.stores import ReadOnlyStore
from mediamirror.stores.output import OutputStore


@dataclass
class Services:
    """Catalog, settings, environment and lazily opened stores (thread-safe caches)."""

    catalog: Catalog
    settings: Settings
    env: Mapping[str, str]
    _stores: dict[Any, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.settings.job_max_attempts, self.settings.retry_intervals)

    def _cached(self, key: Any, make: Any) -> Any:
        with self._lock:
            if key not in self._stores:
                self._stores[key] = make()
            return self._stores[key]

    def source(self, source_id: int) -> Source:
        def load() -> Source:
            with self.catalog.session(write=False) as session:
                src = session.get(Source, source_id)
            if src is None:
                raise NotFoundError(f"source {source_id} no longer exists")
            return src

        result: Source = self._cached(("source-row", source_id), load)
        return result

    def source_store(self, source_id: int) -> ReadOnlyStore:
        from mediamirror.sources import source_store

        src = self.source(source_id)
        store: ReadOnlyStore = self._cached(
            ("source", source_id), lambda: source_store(src, self.env)
        )
        return store

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
                endpoint_url=self.settings.output_endpoint_url,
                sources=self._source_specs(),
            ),
        )
        return store

    def results_store(self, url: str | None = None) -> OutputStore:
        url = url or self.settings.results_store
        if not url:
            return self.output_store()
        store: OutputStore = self._cached(
            ("results", url),
            lambda: OutputStore.from_url(
                url,
                self.env,
                endpoint_url=self.settings.output_endpoint_url,
                sources=self._source_specs(),
            ),
        )
        return store


__all__ = ["Services"]
