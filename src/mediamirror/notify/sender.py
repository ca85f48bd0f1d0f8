"""The sender: plans deliveries from the outbox and sends them, with retries.

One sender at a time across every process on the catalog (the lease ``notify-sender``):
planning "which notifications has this channel not seen yet" is then never raced, and a
notification is never sent twice by two processes. The sender runs in its own daemon
thread (``serve``, ``worker``) or is called directly (crontab mode); jobs never wait for
it, and nothing it does raises into a job.

Grouping, per channel, of the notifications it has not seen yet:

- ``digest_minutes > 0``: one digest once the oldest waited that long (one per window);
- otherwise they wait until none arrived for ``notify_quiet_seconds`` (at most
  :data:`MAX_WAIT`), so a burst is counted first: more than ``storm_threshold`` become one
  digest, fewer are sent one by one. After a storm digest the channel collects for
  :data:`STORM_GAP` before it sends again, and what collected goes as one digest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, exists, func, insert, or_, select, update

from mediamirror.catalog import leases
from mediamirror.catalog.models import utcnow
from mediamirror.errors import ConflictError, DeliveryError, MediamirrorError
from mediamirror.notify.model import DELIVERIES, DELIVERY_ATTEMPTS, NOTIFICATIONS
from mediamirror.redact import redact
from mediamirror.services import Services

log = logging.getLogger(__name__)

LEASE = "notify-sender"
LEASE_SECONDS = 120.0
#: A burst that never pauses is still sent (as a digest when big) after this long.
MAX_WAIT = timedelta(seconds=60)
#: After a storm digest a channel collects this long before it sends again.
STORM_GAP = timedelta(minutes=5)
#: Notifications older than this are never planned: a channel added today does not get
#: last month's news.
HORIZON = timedelta(days=1)
#: Deliveries sent per pass (the lease is renewed between them).
BATCH = 100
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
#: The longest the background sender sleeps while a burst settles or nothing waits
#: (well inside the lease, which it renews on its passes).
IDLE_MAX = 10.0


@dataclass(frozen=True)
class SendSummary:
    """What a pass did: deliveries sent, deliveries given up, and what still waits
    (planned deliveries not yet sent plus notifications not yet planned)."""

    sent: int = 0
    failed: int = 0
    pending: int = 0


@dataclass
class _Waiting:
    """What waits on one channel: how many, the oldest and newest ``created_at``, and
    (only when asked for, to plan them) their ids."""

    count: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None
    ids: list[int] = field(default_factory=list)


class Sender:
    """Delivers the outbox of ``services.catalog`` on the configured channels."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.owner = leases.new_owner()
        self._held = False
        self._renewed = 0.0
        #: Seconds from the last pass until it can have something to do (0: at once).
        self.idle_for = 0.0

    # -- one pass ------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> SendSummary:
        """Plan and send what is due at ``now`` (default: the current time)."""
        now = now or utcnow()
        setup = self._setup()
        if setup is None:
            return SendSummary()
        cfg, channels = setup
        names = list(dict.fromkeys(c.name for c in channels))
        kinds = _kinds(cfg)
        self.idle_for = 0.0
        if not self._take_lease():
            waiting = self._survey(names, kinds, now)
            return SendSummary(pending=self._planned(names) + _count(waiting))
        waiting = self._survey(names, kinds, now)
        ready: list[datetime] = []
        for name in names:
            planned, ready_at = self._plan(name, cfg, kinds, now, waiting[name])
            if planned:  # what still waits there is only what arrived meanwhile
                with self.services.catalog.read() as conn:
                    waiting[name] = _waiting(conn, name, kinds, now)
            elif ready_at is not None:
                ready.append(ready_at)
        sent, failed = self._deliver({c.name: c for c in channels}, now)
        planned_left = self._planned(names)
        if not (sent or failed or planned_left):
            # Nothing to send: the next pass can wait until a burst settles. A notification
            # arriving later is not due before the quiet time has passed after it.
            soonest = min(ready, default=now + min(self._quiet(), MAX_WAIT))
            self.idle_for = max(0.0, (soonest - now).total_seconds())
        return SendSummary(sent, failed, planned_left + _count(waiting))

    def run_forever(self, stop: threading.Event, interval: float = 2.0) -> None:
        """Pass after pass until ``stop`` is set; a failing pass is logged and retried."""
        try:
            while not stop.is_set():
                try:
                    self.run_once()
                except Exception:  # a database hiccup must not end the sender
                    log.exception("notification sender pass failed; trying again")
                stop.wait(min(max(interval, self.idle_for), max(interval, IDLE_MAX)))
        finally:
            self.release()

    def release(self) -> None:
        """Give the lease up (another process's sender may take over at once)."""
        self._held = False
        try:
            leases.release(self.services.catalog, LEASE, self.owner)
        except Exception:
            log.warning("could not release the notification sender lease", exc_info=True)

    # -- set-up --------------------------------------------------------------------------

    def _setup(self) -> tuple[Any, list[Any]] | None:
        from mediamirror.notify import channels as channels_mod
        from mediamirror.notify.config import notify_config

        settings = self.services.settings
        try:
            cfg = notify_config(settings)
            channels = list(channels_mod.configured(settings, self.services.env))
        except MediamirrorError as exc:  # validated at start; an edit since is logged
            log.error("notifications not sent: %s", exc)
            return None
        return (cfg, channels) if channels else None

    def _take_lease(self) -> bool:
        # Held and renewed a moment ago: nobody can have taken it before it expires, so
        # the pass need not take the catalog's write lock only to find that out.
        if self._held and time.monotonic() - self._renewed < LEASE_SECONDS / 4:
            return True
        try:
            leases.acquire(self.services.catalog, LEASE, self.owner, LEASE_SECONDS)
        except ConflictError:
            self._held = False
            return False  # another process sends
        self._held, self._renewed = True, time.monotonic()
        return True

    def _renew(self) -> None:
        if time.monotonic() - self._renewed > LEASE_SECONDS / 4:
            leases.renew(self.services.catalog, LEASE, self.owner, LEASE_SECONDS)
            self._renewed = time.monotonic()

    # -- planning ------------------------------------------------------------------------

    def _survey(self, channels: list[str], kinds: list[str], now: datetime) -> dict[str, _Waiting]:
        """What waits on each channel (counts and times only), in one read transaction."""
        with self.services.catalog.read() as conn:
            return {c: _waiting(conn, c, kinds, now) for c in channels}

    def _plan(
        self, channel: str, cfg: Any, kinds: list[str], now: datetime, seen: _Waiting
    ) -> tuple[bool, datetime | None]:
        """Plan the deliveries that are due on ``channel``. Returns whether some were
        planned and, when what waits must wait longer, the moment it can be planned.

        The decision is taken on aggregates read without the write lock (most passes
        during a burst only find that it has not settled yet). Only when something is due
        is the write transaction taken, and the decision taken again there on the ids
        themselves, so what is planned is exactly what waits at that moment."""
        if not seen.count:
            return False, None
        with self.services.catalog.read() as conn:
            last_digest = _last_digest(conn, channel)
        if _grouping(cfg, seen, last_digest, now, self._quiet()) == "wait":
            return False, _ready_at(cfg, seen, last_digest, self._quiet())
        with self.services.catalog.write() as conn:
            waiting = _waiting(conn, channel, kinds, now, with_ids=True)
            if not waiting.count:
                return False, None
            last_digest = _last_digest(conn, channel)
            grouping = _grouping(cfg, waiting, last_digest, now, self._quiet())
            if grouping == "digest":
                _add_digest(conn, channel, waiting.ids, now)
            elif grouping == "single":
                _add_singles(conn, channel, waiting.ids, now)
            return grouping != "wait", None

    def _quiet(self) -> timedelta:
        return timedelta(seconds=max(0, self.services.settings.notify_quiet_seconds))

    def _planned(self, channels: list[str]) -> int:
        """Planned deliveries not sent yet, on every channel in one count."""
        with self.services.catalog.read() as conn:
            planned = conn.execute(
                select(func.count()).where(
                    DELIVERIES.c.state == "pending", DELIVERIES.c.channel.in_(channels)
                )
            ).scalar_one()
        return int(planned)

    # -- sending -------------------------------------------------------------------------

    def _deliver(self, channels: dict[str, Any], now: datetime) -> tuple[int, int]:
        sent = failed = 0
        for delivery in self._due(list(channels), now):
            self._renew()
            ok, gave_up = self._attempt(channels[delivery.channel], delivery, now)
            sent += ok
            failed += gave_up
        return sent, failed

    def _due(self, channels: Sequence[str], now: datetime) -> list[Any]:
        with self.services.catalog.read() as conn:
            return list(
                conn.execute(
                    select(DELIVERIES)
                    .where(
                        DELIVERIES.c.state == "pending",
                        DELIVERIES.c.next_attempt_at <= now,
                        DELIVERIES.c.channel.in_(list(channels)),
                    )
                    .order_by(DELIVERIES.c.id)
                    .limit(BATCH)
                ).all()
            )

    def _attempt(self, channel: Any, delivery: Any, now: datetime) -> tuple[bool, bool]:
        """Send one delivery and record the attempt. Returns (sent, given up)."""
        status: int | None = None
        error: str | None = None
        try:
            channel.send(self._message(delivery))
        except DeliveryError as exc:
            status, error = exc.status, redact(str(exc))
        except Exception as exc:  # a channel's bug must not stop the other deliveries
            log.exception("delivery %s on %s failed unexpectedly", delivery.id, channel.name)
            error = redact(f"internal error: {exc}")
        return self._record(delivery, now, status, error)

    def _message(self, delivery: Any) -> Any:
        from mediamirror.notify import message

        public_url = (self.services.settings.public_url or DEFAULT_PUBLIC_URL).rstrip("/")
        ids = [delivery.notification_id] if delivery.digest_of is None else delivery.digest_of
        with self.services.catalog.read() as conn:
            rows = conn.execute(
                select(NOTIFICATIONS)
                .where(NOTIFICATIONS.c.id.in_(list(ids)))
                .order_by(NOTIFICATIONS.c.id)
            ).all()
        notes = [dict(r._mapping) for r in rows]
        if delivery.digest_of is None:
            return message.single(notes[0], public_url)
        return message.digest(notes, public_url)

    def _record(
        self, delivery: Any, now: datetime, status: int | None, error: str | None
    ) -> tuple[bool, bool]:
        attempts = delivery.attempts + 1
        backoff = self.services.settings.notify_backoff
        values: dict[str, Any] = {"attempts": attempts, "last_status": status}
        if error is None:
            values.update(state="sent", sent_at=utcnow(), last_error=None)
        elif attempts > len(backoff):
            values.update(state="failed", last_error=error)
        else:
            wait = timedelta(seconds=backoff[attempts - 1])
            values.update(last_error=error, next_attempt_at=now + wait)
        with self.services.catalog.write() as conn:
            conn.execute(update(DELIVERIES).where(DELIVERIES.c.id == delivery.id).values(values))
            conn.execute(
                insert(DELIVERY_ATTEMPTS).values(
                    delivery_id=delivery.id,
                    at=utcnow(),
                    ok=error is None,
                    status=status,
                    error=error,
                )
            )
        if error is not None:
            log.warning("notification delivery %s on %s: %s", delivery.id, delivery.channel, error)
        return error is None, values.get("state") == "failed"


# -- planning helpers ------------------------------------------------------------------------


def _kinds(cfg: Any) -> list[str]:
    return [str(getattr(k, "value", k)) for k in cfg.on]


def _waiting(
    conn: Connection, channel: str, kinds: list[str], now: datetime, *, with_ids: bool = False
) -> _Waiting:
    """Notifications of ``kinds`` that ``channel`` has no delivery for yet.

    A digest lists the notifications it covers, so "not in a digest" cannot be a join.
    But a digest covers everything that waited when it was planned: notifications above
    the highest id any digest lists are counted by one aggregate query. Below it only the
    ids are read (no row is converted), to find the rare one a digest left out (its
    transaction committed after the digest was planned)."""
    recent = and_(
        NOTIFICATIONS.c.kind.in_(kinds),
        NOTIFICATIONS.c.created_at >= now - HORIZON,
        ~exists().where(
            and_(
                DELIVERIES.c.notification_id == NOTIFICATIONS.c.id,
                DELIVERIES.c.channel == channel,
            )
        ),
    )
    covered = _in_digests(conn, channel, now)
    top = max(covered, default=0)
    left_out: list[int] = []
    if covered:
        below = conn.execute(
            select(NOTIFICATIONS.c.id).where(recent, NOTIFICATIONS.c.id <= top)
        ).scalars()
        left_out = [i for i in below if i not in covered]
    ids_of = or_(NOTIFICATIONS.c.id > top, NOTIFICATIONS.c.id.in_(left_out))
    created = NOTIFICATIONS.c.created_at
    count, oldest, newest = conn.execute(
        select(func.count(), func.min(created), func.max(created)).where(recent, ids_of)
    ).one()
    if not count:
        return _Waiting()
    ids: list[int] = []
    if with_ids:
        ids = list(
            conn.execute(
                select(NOTIFICATIONS.c.id).where(recent, ids_of).order_by(NOTIFICATIONS.c.id)
            ).scalars()
        )
    # MIN and MAX keep the column's type: aware UTC datetimes on every backend.
    return _Waiting(int(count), oldest, newest, ids)


def _in_digests(conn: Connection, channel: str, now: datetime) -> set[int]:
    lists = conn.execute(
        select(DELIVERIES.c.digest_of).where(
            DELIVERIES.c.channel == channel,
            DELIVERIES.c.notification_id.is_(None),
            DELIVERIES.c.created_at >= now - HORIZON,
        )
    ).scalars()
    return {int(i) for ids in lists for i in (ids or [])}


def _last_digest(conn: Connection, channel: str) -> datetime | None:
    value: datetime | None = conn.execute(
        select(func.max(DELIVERIES.c.created_at)).where(
            DELIVERIES.c.channel == channel, DELIVERIES.c.notification_id.is_(None)
        )
    ).scalar()
    return value


def _grouping(
    cfg: Any, waiting: _Waiting, last_digest: datetime | None, now: datetime, quiet: timedelta
) -> str:
    """``digest``, ``single`` or ``wait`` for what waits on one channel."""
    assert waiting.oldest is not None and waiting.newest is not None
    if cfg.digest_minutes > 0:
        window = timedelta(minutes=cfg.digest_minutes)
        if now - waiting.oldest < window:
            return "wait"
        if last_digest is not None and now - last_digest < window:
            return "wait"
        return "digest"
    if last_digest is not None and now - last_digest < STORM_GAP:
        return "wait"  # a storm just went out as a digest: collect the rest of it
    settled = now - waiting.newest >= quiet or now - waiting.oldest >= MAX_WAIT
    if not settled:
        return "wait"
    storm_tail = last_digest is not None and waiting.oldest < last_digest + STORM_GAP
    if waiting.count > cfg.storm_threshold or (storm_tail and waiting.count > 1):
        return "digest"
    return "single"


def _ready_at(
    cfg: Any, waiting: _Waiting, last_digest: datetime | None, quiet: timedelta
) -> datetime:
    """The first moment :func:`_grouping` stops answering ``wait`` for what waits now
    (notifications arriving meanwhile can only put it later)."""
    assert waiting.oldest is not None and waiting.newest is not None
    if cfg.digest_minutes > 0:
        window = timedelta(minutes=cfg.digest_minutes)
        at = waiting.oldest + window
        return at if last_digest is None else max(at, last_digest + window)
    settled = min(waiting.newest + quiet, waiting.oldest + MAX_WAIT)
    return settled if last_digest is None else max(settled, last_digest + STORM_GAP)


def _count(waiting: dict[str, _Waiting]) -> int:
    return sum(w.count for w in waiting.values())


def _new_delivery(channel: str, now: datetime) -> dict[str, Any]:
    return {
        "channel": channel,
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def _add_digest(conn: Connection, channel: str, ids: list[int], now: datetime) -> None:
    conn.execute(
        insert(DELIVERIES).values(
            notification_id=None, digest_of=list(ids), **_new_delivery(channel, now)
        )
    )


def _add_singles(conn: Connection, channel: str, ids: list[int], now: datetime) -> None:
    # digest_of left out, so it is SQL NULL (not JSON null) for a single delivery.
    rows = [{"notification_id": i, **_new_delivery(channel, now)} for i in ids]
    conn.execute(insert(DELIVERIES), rows)


# -- the background thread -------------------------------------------------------------------


class BackgroundSender:
    """A :class:`Sender` in a daemon thread; ``stop`` ends it (the app's starter shape)."""

    def __init__(self, services: Services, interval: float = 2.0) -> None:
        self.sender = Sender(services)
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self.sender.run_forever,
            args=(self.stop, interval),
            name="mediamirror-notify",
            daemon=True,
        )


def start(services: Services) -> BackgroundSender:
    """Start sending notifications in the background (``serve``, ``worker``)."""
    background = BackgroundSender(services)
    background.thread.start()
    return background
