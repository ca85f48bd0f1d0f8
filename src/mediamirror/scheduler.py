"""Scheduled re-syncs: each source may carry a cron expression (``options.schedule``);
``serve`` checks every few seconds and syncs the sources that are due, then queues their
post-processing. One sync per source still holds, across every process.

Due means: the latest cron slot at or before now came after the source's last sync run
(whoever ran it: this scheduler, `sync`, `sync --process` from crontab). So slots missed
while `serve` was down are caught up with one run when it starts, never one per missed
slot, and a source synced in the meantime by other means is not synced again."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter

from mediamirror.catalog.models import Source
from mediamirror.catalog.singleton import Singleton
from mediamirror.errors import ConfigError, ConflictError, MediamirrorError

log = logging.getLogger(__name__)
#: The lease of the scheduler role: one scheduler runs across every ``serve`` process.
LEASE = "scheduler"


def validate(expression: str) -> str:
    """A cron expression (5 fields), or ConfigError with one clear line."""
    expression = expression.strip()
    if not croniter.is_valid(expression):
        raise ConfigError(f"{expression!r} is not a valid cron expression (e.g. '*/15 * * * *')")
    return expression


def next_due(expression: str, after: datetime) -> datetime:
    nxt: datetime = croniter(expression, after).get_next(datetime)
    return nxt if nxt.tzinfo else nxt.replace(tzinfo=UTC)


def previous_slot(expression: str, now: datetime) -> datetime:
    """The latest slot of ``expression`` at or before ``now``."""
    # croniter's get_prev is strictly before its start: start a microsecond later.
    prev: datetime = croniter(expression, now + timedelta(microseconds=1)).get_prev(datetime)
    return prev if prev.tzinfo else prev.replace(tzinfo=UTC)


class Scheduler:
    """A thread started by ``serve``; ``stop`` ends it."""

    def __init__(self, services: Any, interval: float = 5.0, *, single: bool = False) -> None:
        self.services = services
        self.interval = interval
        self.stop = threading.Event()
        #: With ``single``, this scheduler runs only while this process holds the
        #: scheduler lease (several ``serve`` processes on one catalog run one scheduler).
        self.role = Singleton(services.catalog, LEASE, stop=self.stop) if single else None
        self.started = datetime.now(UTC)
        self.thread = threading.Thread(target=self._loop, name="mediamirror-scheduler", daemon=True)

    def due_sources(self, now: datetime) -> list[str]:
        from mediamirror.sources import list_sources

        due = []
        for src in list_sources(self.services.catalog):
            expression = (src.options or {}).get("schedule")
            if expression:
                if self._last_sync(src) < previous_slot(expression, now):
                    due.append(src.name)
            elif src.kind == "feed" and self._feed_due(src, now):
                due.append(src.name)
        return due

    def _feed_due(self, src: Source, now: datetime) -> bool:
        """A feed without a cron schedule is polled every ``poll_seconds`` of its block
        (0: never), counted from its last sync run; the first poll is at once."""
        from mediamirror.sources import recent_runs
        from mediamirror.stores.feed_config import feed_config

        try:
            feeds = self.services.settings.sections.get("feeds") or {}
            poll = feed_config(src.bucket, feeds).poll_seconds
        except ConfigError as exc:
            log.warning("feed source %s is not polled: %s", src.name, exc)
            return False
        if poll <= 0:
            return False
        runs = recent_runs(self.services.catalog, src.id, limit=1)
        return not runs or datetime.fromisoformat(runs[0]["started_at"]) <= now - timedelta(
            seconds=poll
        )

    def _last_sync(self, src: Source) -> datetime:
        """When the source was last synced. Never synced: when it was added, or when
        this scheduler started if that is earlier (added while the service ran)."""
        from mediamirror.sources import recent_runs

        runs = recent_runs(self.services.catalog, src.id, limit=1)
        if runs:
            return datetime.fromisoformat(runs[0]["started_at"])
        created = src.created_at  # aware UTC (catalog.models.UTCDateTime)
        return min(created, self.started)

    def tick(self) -> list[str]:
        """Sync every due source once; returns their names."""
        from mediamirror.postprocess import postprocess
        from mediamirror.sources import get_source, sync_source

        ran = []
        for name in self.due_sources(datetime.now(UTC)):
            if self.role is not None and not self.role.held():
                break  # another process runs the scheduler now
            try:
                summary = sync_source(
                    self.services.catalog, self.services.settings, name, self.services.env
                )
                log.info("scheduled %s", summary.line())
                if self.services.settings.auto_postprocess:
                    postprocess(self.services, get_source(self.services.catalog, name).mount)
                ran.append(name)
            except ConflictError:
                log.info("scheduled sync of %s skipped: already running", name)
            except MediamirrorError as exc:
                log.warning("scheduled sync of %s failed: %s", name, exc)
        return ran

    def _loop(self) -> None:
        if self.role is not None:
            self.role.thread.start()
        try:
            while not self.stop.wait(self.interval):
                if self.role is not None and not self.role.held():
                    continue
                try:
                    self.tick()
                except Exception:  # keep the service's scheduler alive through a bad tick
                    log.exception("scheduler tick failed")
        finally:
            if self.role is not None:
                self.role.thread.join(timeout=10)  # it releases the lease on its way out


def start(services: Any) -> Scheduler:
    """The scheduler of a ``serve`` process: it runs while this process holds the lease."""
    scheduler = Scheduler(services, single=True)
    scheduler.thread.start()
    return scheduler


def set_schedule(catalog: Any, name: str, expression: str | None) -> None:
    """Set or clear a source's schedule."""
    from sqlalchemy import update

    from mediamirror.catalog.models import SOURCES
    from mediamirror.sources import get_source

    src = get_source(catalog, name)
    options = dict(src.options or {})
    if expression:
        options["schedule"] = validate(expression)
    else:
        options.pop("schedule", None)
    with catalog.write() as conn:
        conn.execute(update(SOURCES).where(SOURCES.c.id == src.id).values(options=options))
