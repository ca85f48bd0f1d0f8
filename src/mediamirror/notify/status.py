"""What ``notify list``, ``notify test``, the API and the web UI show about notifications.

``listing`` reads recent notifications with their deliveries (a digest delivery is shown
under every notification it covers) and each delivery's attempts. ``send_test`` sends a
test message through every configured channel, right now and once (no retries: the user
is waiting for the answer), and keeps it in the outbox as a ``test`` notification whose
deliveries and attempts record what happened, so ``notify list`` shows it too.
"""

from __future__ import annotations

import html
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import utcnow
from mediamirror.errors import ConfigError, DeliveryError, MediamirrorError
from mediamirror.notify.message import Message, base_url, payload
from mediamirror.notify.model import DELIVERIES, DELIVERY_ATTEMPTS, NOTIFICATIONS
from mediamirror.redact import redact
from mediamirror.services import Services

TEST_KIND = "test"
SAYS = "This is a test message from mediamirror: this channel works."
HOWTO = (
    "no notification channel is configured: add an `email:` block (from_addr, to_addrs, "
    "smtp_server, smtp_port, password) or `notify: {webhooks: [{url: ...}]}` to config.yaml "
    "(see docs/configuration.md, Notifications)"
)
#: Digest deliveries are read newest first, this many per query, when a page needs them.
_DIGEST_BATCH = 200


# -- listing -------------------------------------------------------------------------------------


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _row_dict(row: Any) -> dict[str, Any]:
    return {key: _iso(value) for key, value in row._mapping.items()}


def _delivery_dict(row: Any, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    out = _row_dict(row)
    covered = out.get("digest_of")
    out["digest"] = covered is not None
    out["digest_size"] = len(covered) if covered is not None else None
    out["attempt_log"] = attempts
    return out


def listing(
    catalog: Catalog, *, kind: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[int, list[dict[str, Any]]]:
    """Notifications newest first (with the total matching), each with ``deliveries``."""
    conds = [NOTIFICATIONS.c.kind == kind] if kind else []
    with catalog.read() as conn:
        count = select(func.count()).select_from(NOTIFICATIONS).where(*conds)
        total = int(conn.execute(count).scalar_one())
        query = select(NOTIFICATIONS).where(*conds).order_by(NOTIFICATIONS.c.id.desc())
        rows = [_row_dict(r) for r in conn.execute(query.limit(limit).offset(offset))]
        by_notification = _deliveries_of(conn, [r["id"] for r in rows])
    for row in rows:
        row["deliveries"] = by_notification.get(row["id"], [])
    return total, rows


def _deliveries_of(conn: Connection, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    if not ids:
        return {}
    direct = list(conn.execute(select(DELIVERIES).where(DELIVERIES.c.notification_id.in_(ids))))
    found = direct + _digests_covering(conn, set(ids))
    attempts = _attempts_of(conn, [d.id for d in found])
    out: dict[int, list[dict[str, Any]]] = {}
    for d in sorted(found, key=lambda d: d.id):
        shown = _delivery_dict(d, attempts.get(d.id, []))
        covered = d.digest_of if d.digest_of is not None else [d.notification_id]
        for nid in set(covered) & set(ids):
            out.setdefault(nid, []).append(shown)
    return out


def _digests_covering(conn: Connection, ids: set[int]) -> list[Any]:
    """Digest deliveries holding any of ``ids``. The sender fills each channel's digests in
    order, so once a channel's digest covers only notifications older than the page, its
    older digests do too: the scan stops there instead of reading every digest ever sent."""
    oldest = min(ids)
    digests = DELIVERIES.c.notification_id.is_(None)  # as the sender tells them apart
    channels = set(conn.execute(select(DELIVERIES.c.channel).where(digests).distinct()).scalars())
    done: set[str] = set()
    found: list[Any] = []
    before: int | None = None
    while done < channels:
        query = select(DELIVERIES).where(digests)
        if before is not None:
            query = query.where(DELIVERIES.c.id < before)
        batch = list(conn.execute(query.order_by(DELIVERIES.c.id.desc()).limit(_DIGEST_BATCH)))
        for d in batch:
            covered = [int(n) for n in d.digest_of or []]
            if d.channel in done:
                continue
            if covered and max(covered) < oldest:
                done.add(d.channel)
            elif ids.intersection(covered):
                found.append(d)
        if len(batch) < _DIGEST_BATCH:
            break
        before = batch[-1].id
    return found


def _attempts_of(conn: Connection, delivery_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    if not delivery_ids:
        return {}
    query = select(DELIVERY_ATTEMPTS).where(DELIVERY_ATTEMPTS.c.delivery_id.in_(delivery_ids))
    out: dict[int, list[dict[str, Any]]] = {}
    for a in conn.execute(query.order_by(DELIVERY_ATTEMPTS.c.id)):
        out.setdefault(a.delivery_id, []).append(_row_dict(a))
    return out


# -- the test message ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelResult:
    """What sending the test message on one channel did, and the line that says so."""

    channel: str
    ok: bool
    line: str
    seconds: float
    status: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _email_target(conf: Any) -> str:
    count = len(conf.to_addrs)
    recipients = f"{count} recipient{'s' if count != 1 else ''}"
    # The configured security: with none configured, STARTTLS is used when the server
    # offers it (and a password is never sent without it).
    shown = {"ssl": "SSL", "starttls": "STARTTLS", "none": "no TLS"}.get(
        conf.mode or "", "STARTTLS when offered"
    )
    return f"sent to {recipients} via {conf.smtp_server}:{conf.smtp_port} ({shown})"


def _webhook_target(conf: Any) -> str:
    return f"delivered to {conf.url} ({conf.format})"


def _success_line(channel: Any) -> str:
    conf = getattr(channel, "config", None)
    if conf is None:
        return "sent"
    return _email_target(conf) if channel.name == "email" else _webhook_target(conf)


def _one_line(exc: BaseException) -> str:
    # A channel's own errors are redacted already; anything else may quote a URL or a
    # secret from the environment, and this line is printed, answered and stored.
    text = " ".join(redact(str(exc)).split()) or type(exc).__name__
    return text if isinstance(exc, MediamirrorError) else f"{type(exc).__name__}: {text}"


def _send_one(channel: Any, message: Message) -> ChannelResult:
    started = time.monotonic()
    try:
        channel.send(message)
    except Exception as exc:  # any failure is this channel's answer, never the command's end
        seconds = time.monotonic() - started
        status = exc.status if isinstance(exc, DeliveryError) else None
        reason = _one_line(exc)
        line = f"{channel.name}: failed after {seconds:.1f} s: {reason}"
        return ChannelResult(channel.name, False, line, seconds, status, reason)
    seconds = time.monotonic() - started
    line = f"{channel.name}: {_success_line(channel)} in {seconds:.1f} s"
    return ChannelResult(channel.name, True, line, seconds)


def probe_message(notification: Mapping[str, Any], public_url: str | None) -> Message:
    """A message shaped like every other one: subject, text, HTML, and the JSON payload
    webhooks get for any notification (``kind: test``)."""
    link = f"{base_url(public_url)}/ui/notifications"
    subject = "[mediamirror] test message"
    text = f"{SAYS}\n\nNotifications: {link}\n"
    body = f"<html><body><p>{html.escape(SAYS)}</p><p>{_link(link)}</p></body></html>"
    data = {**payload(notification, public_url), "subject": subject}
    data["links"] = {"notifications": link}
    return Message(subject, text, body, data)


def _link(url: str) -> str:
    return f'<a href="{html.escape(url, quote=True)}">Notifications</a>'


def _record_test(catalog: Catalog) -> dict[str, Any]:
    from mediamirror.notify.outbox import record

    key = f"test:{secrets.token_hex(8)}"
    facts = {"test": True}
    with catalog.write() as conn:
        record(conn, TEST_KIND, facts=facts, dedupe_key=key)
        row = conn.execute(select(NOTIFICATIONS).where(NOTIFICATIONS.c.dedupe_key == key)).one()
    return dict(row._mapping)


def _record_results(
    catalog: Catalog, notification_id: int, results: Iterable[ChannelResult]
) -> None:
    now = utcnow()
    with catalog.write() as conn:
        for r in results:
            delivery = {
                "notification_id": notification_id,
                "channel": r.channel,
                "state": "sent" if r.ok else "failed",
                "attempts": 1,
                "next_attempt_at": now,
                "last_error": r.error,
                "last_status": r.status,
                "sent_at": now if r.ok else None,
                "created_at": now,
            }
            added = insert(DELIVERIES).values(delivery).returning(DELIVERIES.c.id)
            attempt = {"delivery_id": conn.execute(added).scalar_one(), "at": now, "ok": r.ok}
            attempt.update(status=r.status, error=r.error)
            conn.execute(insert(DELIVERY_ATTEMPTS).values(attempt))


def send_test(services: Services) -> list[ChannelResult]:
    """Send a test message on every configured channel (one after the other) and record
    the outcome; raises ConfigError, saying how to configure one, when there is none."""
    from mediamirror.notify.channels import configured

    channels = list(configured(services.settings, services.env))
    if not channels:
        raise ConfigError(HOWTO)
    notification = _record_test(services.catalog)
    message = probe_message(notification, services.settings.public_url)
    results = [_send_one(c, message) for c in channels]
    _record_results(services.catalog, int(notification["id"]), results)
    return results
