"""CLI commands for the service: serve, token."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import click


def _serve_processes(
    obj: Any, host: str, port: int, no_worker: bool, access_log: bool, workers: int, url: str
) -> None:
    """``serve --workers N``: uvicorn's process manager runs N processes of the service
    (:mod:`mediamirror.web.asgi`) on one socket and replaces any that dies. Each reads
    its settings from the environment, so the options given to this command are passed
    on there; the catalog is migrated here, once, before they start."""
    import uvicorn

    from mediamirror import logs
    from mediamirror.web.asgi import ACCESS_LOG_VAR
    from mediamirror.web.login import new_shared_code

    settings = obj.settings
    for name in ("home", "database_url", "config", "log_level"):
        value = getattr(settings, name)
        if value:
            os.environ[f"MEDIAMIRROR_{name.upper()}"] = str(value)
    os.environ[ACCESS_LOG_VAR] = "1" if access_log else "0"
    code = new_shared_code(obj.catalog)  # opens (and migrates) the catalog
    click.echo(f"mediamirror is running at {url}: {workers} processes  (API docs: {url}/api/docs)")
    click.echo(f"sign in: {url}/login/{code}  (valid 15 minutes, once)")
    click.echo("press Ctrl-C to stop")
    logs.server_loggers(access_log)
    factory = "api_app" if no_worker else "app"
    uvicorn.run(
        f"mediamirror.web.asgi:{factory}",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_config=None,
        log_level=None,
        access_log=access_log,
    )


def register(
    cli: click.Group, pass_ctx: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Add the service commands to the ``mediamirror`` group."""

    @cli.command()
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
    @click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
    @click.option("--no-worker", is_flag=True, help="Do not run jobs in this process.")
    @click.option("--access-log", is_flag=True, help="Log every request (URL tokens hidden).")
    @click.option(
        "--workers",
        default=1,
        show_default=True,
        type=click.IntRange(1, 64),
        help="Service processes behind the port (one scheduler and SQS consumer in all).",
    )
    @pass_ctx
    def serve(
        obj: Any, host: str, port: int, no_worker: bool, access_log: bool, workers: int
    ) -> None:
        """Run the REST API, the web UI, the push endpoints and a local worker."""
        import uvicorn

        from mediamirror.services import Services
        from mediamirror.web.app import create_app
        from mediamirror.web.login import new_code

        shown = "127.0.0.1" if host in {"0.0.0.0", "::"} else host
        url = f"http://{shown}:{port}"
        if workers > 1:
            _serve_processes(obj, host, port, no_worker, access_log, workers, url)
            return
        services = Services(obj.catalog, obj.settings, obj.env)
        app = create_app(services, worker=not no_worker)
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
