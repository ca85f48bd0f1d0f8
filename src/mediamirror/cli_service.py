"""CLI commands for the service: serve, token."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click


def register(
    cli: click.Group, pass_ctx: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Add the service commands to the ``mediamirror`` group."""

    @cli.command()
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
    @click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
    @click.option("--no-worker", is_flag=True, help="Do not run jobs in this process.")
    @click.option("--access-log", is_flag=True, help="Log every request (URL tokens hidden).")
    @pass_ctx
    def serve(obj: Any, host: str, port: int, no_worker: bool, access_log: bool) -> None:
        """Run the REST API, the web UI, the push endpoints and a local worker."""
        import uvicorn

        from mediamirror.services import Services
        from mediamirror.web.app import create_app
        from mediamirror.web.login import new_code

        services = Services(obj.catalog, obj.settings, obj.env)
        app = create_app(services, worker=not no_worker)
        shown = "127.0.0.1" if host in {"0.0.0.0", "::"} else host
        url = f"http://{shown}:{port}"
        click.echo(f"mediamirror is running at {url}  (API docs: {url}/api/docs)")
        click.echo(f"sign in: {url}/login/{new_code()}  (valid 15 minutes, once)")
        click.echo("press Ctrl-C to stop")
        from mediamirror import logs

        logs.server_loggers(access_log)
        # No logging set-up of uvicorn's own: its lines go through mediamirror's handlers,
        # redacted and tagged with the request id like every other line.
        uvicorn.run(
            app, host=host, port=port, log_config=None, log_level=None, access_log=access_log
        )

    @cli.command()
    @click.argument("name")
    @click.argument("cron", required=False)
    @click.option("--off", is_flag=True, help="Remove the schedule.")
    @pass_ctx
    def schedule(obj: Any, name: str, cron: str | None, off: bool) -> None:
        """Re-sync source NAME on a cron schedule while `serve` runs, e.g. '*/15 * * * *'."""
        from mediamirror.scheduler import set_schedule

        if not off and not cron:
            raise click.UsageError("give a cron expression, or --off")
        set_schedule(obj.catalog, name, None if off else cron)
        click.echo(f"{name}: " + ("schedule removed" if off else f"synced on '{cron}'"))

    @cli.group()
    def token() -> None:
        """Create, list and revoke API tokens (roles: admin, viewer)."""

    @token.command("create")
    @click.option(
        "--role", type=click.Choice(["admin", "viewer"]), default="viewer", show_default=True
    )
    @click.option("--name", default="api token", show_default=True, help="What it is for.")
    @pass_ctx
    def token_create(obj: Any, role: str, name: str) -> None:
        """Create a token and print it: the only time it is shown (it is stored hashed)."""
        from mediamirror import tokens

        click.echo(tokens.create(obj.catalog, role, name))

    @token.command("list")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @pass_ctx
    def token_list(obj: Any, as_json: bool) -> None:
        """List tokens (never their values)."""
        from mediamirror import tokens

        rows = tokens.listing(obj.catalog)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        for r in rows:
            state = " (revoked)" if r["revoked"] else ""
            click.echo(f"{r['id']:>4}  {r['role']:7} {r['name']}{state}")

    @token.command("revoke")
    @click.argument("token_id", type=int)
    @pass_ctx
    def token_revoke(obj: Any, token_id: int) -> None:
        """Revoke a token by id."""
        from mediamirror import tokens

        tokens.revoke(obj.catalog, token_id)
        click.echo(f"token {token_id} revoked")
