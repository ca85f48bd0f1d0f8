"""Check a source's connection before anything is saved: the store is built exactly as
``source add`` builds it (:func:`mediamirror.sources.plan_source`), checked as
``source add`` checks it, and its first page is listed with short timeouts.

The answer is one line either way: ``N keys seen in 0.4 s`` or the exact reason (bucket
missing, access denied, endpoint unreachable, bad regex, unknown environment variable,
feed block missing...). Nothing is written to the catalog.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import Source
from mediamirror.config import Settings
from mediamirror.errors import MediamirrorError
from mediamirror.redact import redact
from mediamirror.sources import get_source, plan_source, source_store
from mediamirror.stores.timeouts import StoreTimeouts

#: The whole check gives up after this many seconds (a black-holed endpoint).
DEADLINE_SECONDS = 15.0
#: Keys shown as a sample of what the first page holds.
SAMPLE = 5
PAGE_SIZE = 1000


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check, as the API answers it."""

    ok: bool
    message: str
    keys: int | None = None
    matching: int | None = None
    seconds: float | None = None
    sample: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        if not self.ok:
            return {"ok": False, "message": self.message}
        return {
            "ok": True,
            "keys": self.keys,
            "matching": self.matching,
            "seconds": self.seconds,
            "message": self.message,
            "sample": self.sample,
        }


def check_new_source(
    catalog: Catalog,
    name: str,
    url: str,
    *,
    env: Mapping[str, str],
    settings: Settings,
    deadline: float = DEADLINE_SECONDS,
    **options: Any,
) -> CheckResult:
    """What ``add_source(catalog, name, url, **options)`` would meet, without saving:
    every refusal of the values, then the store's answer."""
    try:
        source = plan_source(catalog, name, url, env=env, settings=settings, **options)
    except MediamirrorError as exc:
        return CheckResult(False, str(exc))
    return probe(source, env, settings, deadline=deadline)


def check_existing_source(
    catalog: Catalog,
    name: str,
    *,
    env: Mapping[str, str],
    settings: Settings,
    deadline: float = DEADLINE_SECONDS,
) -> CheckResult:
    """The same check for a source already added (its credentials may have changed)."""
    try:
        source = get_source(catalog, name)
    except MediamirrorError as exc:
        return CheckResult(False, str(exc))
    return probe(source, env, settings, deadline=deadline)


def short_timeouts(settings: Settings) -> StoreTimeouts:
    """A check must answer while someone waits: a few seconds, two attempts."""
    return StoreTimeouts(
        connect=min(float(settings.store_connect_timeout), 5.0),
        read=min(float(settings.store_read_timeout), 10.0),
        max_attempts=min(settings.store_max_attempts, 2),
    )


def probe(
    source: Source,
    env: Mapping[str, str],
    settings: Settings,
    *,
    deadline: float = DEADLINE_SECONDS,
) -> CheckResult:
    """Open the source's store, check it as ``source add`` does, list its first page.
    Runs in a thread so that a store that never answers costs ``deadline`` at most."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = _first_page(source, env, settings)
        except MediamirrorError as exc:
            box["result"] = CheckResult(False, str(exc))
        except Exception as exc:  # a library error not translated: still one line
            text = " ".join(str(exc).split()) or type(exc).__name__
            box["result"] = CheckResult(False, redact(f"the store could not be listed: {text}"))

    thread = threading.Thread(target=run, name=f"check-{source.name}", daemon=True)
    thread.start()
    thread.join(deadline)
    if "result" not in box:
        where = source.endpoint_url or source.url
        return CheckResult(False, f"{where} did not answer within {deadline:g} s")
    result: CheckResult = box["result"]
    return result


def _first_page(source: Source, env: Mapping[str, str], settings: Settings) -> CheckResult:
    started = time.perf_counter()
    store = source_store(source, env, PAGE_SIZE, short_timeouts(settings), settings=settings)
    store.check()  # exactly what `source add` does: its refusals read the same
    page: list[Any] = []
    if source.kind != "feed":  # a feed's listing walks every page: its check read page 1
        page = next(iter(store.list_pages(None)), [])
    seconds = round(time.perf_counter() - started, 2)
    if source.kind == "feed":
        return _feed_result(store, seconds)
    keys = [o.key for o in page]
    wanted = [k for k in keys if _wanted(source, k)]
    return CheckResult(
        True,
        _message(source, len(keys), len(wanted), seconds),
        keys=len(keys),
        matching=len(wanted),
        seconds=seconds,
        sample=(wanted or keys)[:SAMPLE],
    )


def _wanted(source: Source, key: str) -> bool:
    """The sync engine's filter: relative to the prefix, not a folder marker."""
    rel = key[len(source.prefix) :] if key.startswith(source.prefix) else key
    if not rel or rel.endswith("/"):
        return False
    if source.include and not re.search(source.include, rel):
        return False
    return not (source.exclude and re.search(source.exclude, rel))


def _seconds(seconds: float) -> str:
    """``0.4``, ``1.25``, ``12``: two decimals at most, never ``0`` (a local store answers
    within a millisecond)."""
    return f"{max(seconds, 0.01):.2f}".rstrip("0").rstrip(".")


def _message(source: Source, keys: int, wanted: int, seconds: float) -> str:
    noun = "key" if keys == 1 else "keys"
    line = f"{keys:,} {noun} seen in {_seconds(seconds)} s"
    if keys >= PAGE_SIZE:
        line += " (the first page; there are more)"
    if keys == 0:
        return line + ": the store answered, but nothing is there yet (is the prefix right?)"
    if (source.include or source.exclude) and wanted != keys:
        line += f"; {wanted:,} of them pass the include/exclude filters"
    return line


def _feed_result(store: Any, seconds: float) -> CheckResult:
    """A feed's check fetched its first page: count its records."""
    from mediamirror.stores.feed import dig

    inner = getattr(store, "_inner", None)
    first = getattr(inner, "_first", None)
    records = None
    if first is not None and inner is not None:
        found = dig(first[1], inner.config.records)
        records = len(found) if isinstance(found, list) else None
    if records is None:
        return CheckResult(
            True, f"the CMS answered its first page in {seconds:g} s", seconds=seconds
        )
    noun = "record" if records == 1 else "records"
    return CheckResult(
        True,
        f"{records:,} {noun} seen in {_seconds(seconds)} s (the CMS's first page)",
        keys=records,
        matching=records,
        seconds=seconds,
    )
