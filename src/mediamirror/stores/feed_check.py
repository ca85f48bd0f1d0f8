"""``config check`` lines for the ``feeds:`` block: the block itself, then (connecting)
each feed's first page, fetched with its headers as a sync would."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mediamirror.errors import MediamirrorError
from mediamirror.stores.timeouts import StoreTimeouts

if TYPE_CHECKING:
    from mediamirror.config import Settings


def feed_checks(
    settings: Settings, env: Mapping[str, str], *, connect: bool
) -> Iterator[tuple[str, bool, str]]:
    """(name, ok, text) per line: ``feeds`` (the block), then ``feed:NAME`` per feed."""
    from mediamirror.stores.feed import FeedStore
    from mediamirror.stores.feed_config import configure

    try:
        feeds = configure(settings.sections.get("feeds"))
    except MediamirrorError as exc:
        yield "feeds", False, str(exc)
        return
    names = ", ".join(f"{n} (every {c.poll_seconds} s)" for n, c in feeds.items())
    yield "feeds", True, names or "none"
    if not connect:
        return
    for name, conf in feeds.items():
        store = FeedStore(conf, env=env, timeouts=StoreTimeouts.from_settings(settings))
        try:
            store.check()
        except MediamirrorError as exc:
            yield f"feed:{name}", False, str(exc)
            continue
        host = urlsplit(conf.endpoint).netloc
        yield f"feed:{name}", True, f"{host} answered the first page (nothing synced)"
