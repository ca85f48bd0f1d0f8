"""CLI command ``config check``: validate config.yaml and test what it connects to."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click

from mediamirror.config import Settings
from mediamirror.errors import MediamirrorError
from mediamirror.redact import redact


@dataclass(frozen=True)
class Check:
    """One line of ``config check``."""

    ok: bool
    name: str
    text: str

    @property
    def line(self) -> str:
        # Whatever a server answered or a value quoted: never a secret on the terminal.
        return redact(f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.text}")


def _attempt(name: str, run: Callable[[], str]) -> Check:
    try:
        return Check(True, name, run())
    except MediamirrorError as exc:
        return Check(False, name, str(exc))


def _describe_notify(settings: Settings) -> str:
    from mediamirror.notify.config import notify_config

    conf = notify_config(settings)
    grouping = (
        f"one digest every {conf.digest_minutes} min"
        if conf.digest_minutes
        else "one message per event"
    )
    hooks = len(conf.webhooks)
    return (
        f"on {', '.join(conf.on) or 'nothing'}; {grouping}, a digest above "
        f"{conf.storm_threshold} waiting; {hooks} webhook{'s' if hooks != 1 else ''}"
    )


def _describe_email(settings: Settings) -> str:
    from mediamirror.notify.config import email_config

    conf = email_config(settings)
    if conf is None:
        return "not configured (no email: block)"
    count = len(conf.to_addrs)
    return f"from {conf.from_addr} to {count} recipient{'s' if count != 1 else ''}"


def checks(settings: Settings, env: dict[str, str], *, connect: bool) -> Iterator[Check]:
    """Every check, in order: the file, each typed block, then each channel's connection."""
    path = settings.config_path
    found = "read" if path.exists() else "not found, defaults in force"
    yield Check(True, "config", f"{path} {found}")
    email = _attempt("email", lambda: _describe_email(settings))
    notify = _attempt("notify", lambda: _describe_notify(settings))
    yield email
    yield notify
    if "feeds" in settings.sections:  # the feeds: block, and each CMS's first page
        from mediamirror.stores.feed_check import feed_checks

        for name, ok, text in feed_checks(settings, env, connect=connect):
            yield Check(ok, name, text)
    if not connect or not (email.ok and notify.ok):
        return
    from mediamirror.notify.channels import configured

    for channel in configured(settings, env):
        yield _attempt(channel.name, channel.check)


def register(
    cli: click.Group, pass_ctx: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Add the ``config`` commands to the ``mediamirror`` group."""

    @cli.group("config")
    def config_group() -> None:
        """Check config.yaml."""

    @config_group.command("check")
    @click.option(
        "--no-connect", is_flag=True, help="Only validate; contact no SMTP server or webhook."
    )
    @pass_ctx
    def config_check(obj: Any, no_connect: bool) -> None:
        """Validate config.yaml (email, notify, settings) and test the connections it
        configures: SMTP (connect, EHLO, STARTTLS, login) and each webhook URL (HEAD or
        OPTIONS), sending no message and posting no event. One line per check; exit 1 when
        one failed."""
        failed = False
        for check in checks(obj.settings, obj.env, connect=not no_connect):
            click.echo(check.line)
            failed = failed or not check.ok
        if failed:
            sys.exit(1)
