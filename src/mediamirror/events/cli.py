"""CLI commands for bucket notifications: ``source push-token`` and ``events list``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from mediamirror.events.model import Outcome


def register(
    cli: click.Group, pass_ctx: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Add the event commands to the ``mediamirror`` group (and its ``source`` group)."""
    source = cli.commands["source"]
    assert isinstance(source, click.Group)

    @source.command("push-token")
    @click.argument("name")
    @click.option(
        "--base-url", metavar="URL", help="Where senders reach the service [setting public_url]."
    )
    @pass_ctx
    def push_token(obj: Any, name: str, base_url: str | None) -> None:
        """Create the push token of source NAME (replacing any previous one) and print the
        endpoint URL to give its bucket, SNS subscription or Pub/Sub push subscription.
        Shown once: only a hash of the token is stored."""
        from mediamirror.events.routing import create_push_token, push_url

        source, token = create_push_token(obj.catalog, name)
        base = base_url or obj.settings.public_url or "http://127.0.0.1:8000"
        click.echo(push_url(base, source, token))

    @cli.group()
    def events() -> None:
        """Bucket notifications received (push endpoints and SQS)."""

    @events.command("list")
    @click.option("--source", "source_name", metavar="NAME", help="Only events of this source.")
    @click.option("--outcome", type=click.Choice([o.value for o in Outcome]))
    @click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
    @click.option("--offset", default=0, type=click.IntRange(min=0))
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @pass_ctx
    def events_list(
        obj: Any,
        source_name: str | None,
        outcome: str | None,
        limit: int,
        offset: int,
        as_json: bool,
    ) -> None:
        """List received events, newest first, then the refused pushes (counted per
        source, channel and reason)."""
        from mediamirror.events.record import listing, refusals

        total, rows = listing(
            obj.catalog, source=source_name, outcome=outcome, limit=limit, offset=offset
        )
        refused = refusals(obj.catalog, source=source_name)
        if as_json:
            click.echo(json.dumps({"total": total, "events": rows, "refusals": refused}, indent=2))
            return
        if not rows:
            click.echo("no events received yet")
        _echo_events(rows)
        _echo_refusals(refused)


def _echo_events(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        where = f"{r['bucket'] or ''}/{r['key'] or ''}".strip("/")
        detail = f"  {r['detail']}" if r["detail"] else ""
        click.echo(
            f"{r['received_at'][:19]}  {r['source'] or '-':14} {r['channel']:5} "
            f"{r['outcome']:9} {r['event_type'] or '':28} {where}{detail}"
        )


def _echo_refusals(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    click.echo("refused pushes (counted, not kept one by one):")
    for r in rows:
        click.echo(
            f"{r['last_at'][:19]}  {r['source'] or '-':14} {r['channel']:5} "
            f"{r['count']:>7}x {r['reason']:20} first {r['first_at'][:19]}  last: {r['detail']}"
        )
