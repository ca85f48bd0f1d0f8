"""The channels notifications go out on, as configured: ``email`` and one per webhook.

A channel's name is stored with each of its deliveries (``deliveries.channel``), so it is
stable: ``email``, and ``webhook:<host>`` for a webhook (``webhook:<host><path>`` when two
webhooks share a host, then ``#2``, ``#3`` in the order of config.yaml).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from mediamirror.notify.config import email_config, notify_config
from mediamirror.notify.email import EmailChannel
from mediamirror.notify.message import Message
from mediamirror.notify.webhook import WebhookChannel

if TYPE_CHECKING:
    from mediamirror.config import Settings


class Channel(Protocol):
    """Where messages go. ``send`` raises DeliveryError; ``check`` connects without
    sending and returns one line saying what worked (or raises DeliveryError)."""

    name: str

    def send(self, m: Message) -> None: ...

    def check(self) -> str: ...


def configured(settings: Settings, env: Mapping[str, str] | None = None) -> list[Channel]:
    """Every channel config.yaml configures, email first.

    ``env`` is accepted for channels that would read the environment; today every secret
    comes in through a ``${VAR}`` of config.yaml, expanded when settings load.
    """
    channels: list[Channel] = []
    email = email_config(settings)
    if email is not None:
        channels.append(EmailChannel(email))
    taken: set[str] = set()
    for hook in notify_config(settings).webhooks:
        name = _webhook_name(hook.url, taken)
        taken.add(name)
        channels.append(WebhookChannel(hook, name))
    return channels


def _webhook_name(url: str, taken: set[str]) -> str:
    parts = urlsplit(url)
    name = f"webhook:{parts.hostname}"
    if name in taken:
        name = f"webhook:{parts.hostname}{parts.path}"
    base, n = name, 2
    while name in taken:
        name, n = f"{base}#{n}", n + 1
    return name
