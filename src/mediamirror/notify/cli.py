"""CLI commands for notifications: ``notify test`` and ``notify list``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

KINDS = ["dataset.ready", "job.failed", "sync.failed", "sync.finished", "test"]


def register(
    cli: click.Group, pass_ctx: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Add the ``notify`` group to the ``mediamirror`` group."""

    @cli.group()
    def notify() -> None:
        """Email and webhook notifications: test the channels, list what was sent."""

    @notify.command("test")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @pass_ctx
    def notify_test(obj: Any, as_json: bool) -> None:
        """Send a test message on every configured channel (email, each webhook) now and
        print one line per channel: where it went and how long it took, or why it failed.
        Exit code 1 when a channel failed."""
        from mediamirror.notify.status import send_test
        from mediamirror.services import Services

        results = send_test(Services(obj.catalog, obj.settings, obj.env))
        if as_json:
            click.echo(json.dumps([r.as_dict() for r in results], indent=2))
        else:
            for r in results:
                click.echo(r.line)
        if not all(r.ok for r in results):
            sys.exit(1)

    @notify.command("list")
    @click.option("--kind", type=click.Choice(KINDS), help="Only notifications of this kind.")
    @click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
    @click.option("--offset", default=0, type=click.IntRange(min=0))
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @pass_ctx
    def notify_list(obj: Any, kind: str | None, limit: int, offset: int, as_json: bool) -> None:
        """Recent notifications, newest first, each with its deliveries (channel, state,
        attempts, last status or error)."""
        from mediamirror.notify.status import listing

        total, rows = listing(obj.catalog, kind=kind, limit=limit, offset=offset)
        if as_json:
            click.echo(json.dumps({"total": total, "notifications": rows}, indent=2))
            return
        if not rows:
            click.echo("no notifications yet")
        for row in rows:
            _echo_notification(row)


def _echo_notification(row: dict[str, Any]) -> None:
    facts = row.get("facts") or {}
    what = row.get("path") or facts.get("source") or ""
    reason = facts.get("reason") or facts.get("error")
    click.echo(f"{str(row['created_at'])[:19]}  #{row['id']:<6} {row['kind']:14} {what}")
    if reason:
        click.echo(f"    reason: {' '.join(str(reason).split())[:200]}")
    if not row["deliveries"]:
        click.echo("    no delivery yet")
    for d in row["deliveries"]:
        click.echo(f"    {_delivery_line(d)}")


def _delivery_line(d: dict[str, Any]) -> str:
    digest = f" (digest of {d['digest_size']})" if d.get("digest") else ""
    parts = [f"{d['channel']}{digest}: {d['state']}", f"{d['attempts']} attempt(s)"]
    if d.get("last_status") is not None:
        parts.append(f"last status {d['last_status']}")
    if d.get("last_error"):
        parts.append(f"last error: {' '.join(str(d['last_error']).split())[:200]}")
    if d["state"] == "sent" and d.get("sent_at"):
        parts.append(f"sent {str(d['sent_at'])[:19]}")
    elif d["state"] == "pending" and d.get("next_attempt_at"):
        parts.append(f"next attempt {str(d['next_attempt_at'])[:19]}")
    return ", ".join(parts)
