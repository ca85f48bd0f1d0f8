"""Prefix-parallel listing of S3 stores, in global key order.

The sync engine merges a listing that is sorted: each chunk covers the key range after the
previous chunk's last key, which is what makes its writes batched, its resume free and
its deletions exact. This module keeps that contract and only makes the listing faster:

0. The **first page** is listed as a sequential listing lists it; a listing that fits in
   one page is done (a small bucket costs no more requests than before).
1. **Discover** folders with delimiter listings (``Delimiter="/"``), level by level, while
   there are fewer than ``4 x width`` of them: a bucket with one or a few big top folders
   is split at the next level (up to :data:`MAX_DEPTH` levels below the source prefix).
2. **Cut** the key space at those folder names into ranges ``(after, upto]``. Any set of
   cuts is exact: every key falls in one range, so no folder structure is trusted for
   correctness, only for balance. At most :data:`RANGES_PER_WIDTH` x ``width`` ranges.
3. **List** the ranges concurrently (``width`` threads, each a plain ``StartAfter``
   listing cut at the range's end), each into a small queue, and hand the pages on in
   range order, re-cut to the store's page size: the engine sees the same pages, in the
   same order, as from a sequential listing. At most ``2 x width`` ranges are started and
   not yet consumed, each holding at most :data:`QUEUE_PAGES` pages: memory is bounded.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mediamirror import interrupt
from mediamirror.stores.base import ObjectInfo

log = logging.getLogger(__name__)

#: Folder levels below the source prefix that discovery may descend.
MAX_DEPTH = 3
#: Delimiter listing pages read per folder during discovery (1000 entries each).
DISCOVERY_PAGES = 2
#: Ranges per unit of width: enough to keep every thread busy when folders differ in size.
RANGES_PER_WIDTH = 4
#: Pages a range's queue holds before its thread waits for the consumer.
QUEUE_PAGES = 4
_POLL = 0.2


@runtime_checkable
class RangeStore(Protocol):
    """What a store offers for parallel listing (:class:`~mediamirror.stores.s3.S3Store`)."""

    prefix: str
    page_size: int

    def list_range(
        self, prefix: str, after: str | None, upto: str | None
    ) -> Iterator[list[ObjectInfo]]: ...

    def list_folders(self, prefix: str, max_pages: int) -> list[str]: ...


def range_store(store: Any) -> RangeStore | None:
    """The store's range-listing side, or None when it has none (local, feed)."""
    inner = store.range_lister() if hasattr(store, "range_lister") else store
    return inner if isinstance(inner, RangeStore) else None


@dataclass
class KeyRange:
    """Keys ``k`` under ``prefix`` with ``after < k <= upto`` (None: unbounded)."""

    prefix: str
    after: str | None
    upto: str | None
    pages: queue.Queue[Any] = field(
        default_factory=lambda: queue.Queue(maxsize=QUEUE_PAGES), repr=False
    )


def discover(store: RangeStore, width: int) -> list[str]:
    """Folder names under the store's prefix to cut the key space at, sorted."""
    target = 4 * width
    found: list[str] = []
    frontier = [store.prefix]
    for _ in range(MAX_DEPTH):
        children = sorted(
            itertools.chain.from_iterable(
                _concurrently(lambda p: store.list_folders(p, DISCOVERY_PAGES), frontier, width)
            )
        )
        found += children
        if not children or len(found) >= target:
            break
        frontier = children  # fewer than `target`: one request each is cheap
    found.sort()
    limit = RANGES_PER_WIDTH * width - 1
    if len(found) > limit:  # evenly spaced cuts; each range then spans several folders
        found = [found[i * len(found) // limit] for i in range(limit)]
    return found


def key_ranges(base: str, cuts: list[str], start_after: str | None = None) -> list[KeyRange]:
    """The ranges between sorted ``cuts`` under prefix ``base``, those after ``start_after``."""
    bounds: list[str | None] = [None, *cuts, None]
    ranges = []
    for after, upto in itertools.pairwise(bounds):
        if start_after is not None:
            if upto is not None and upto <= start_after:
                continue
            after = start_after if after is None or after < start_after else after
        prefix = base
        if after is not None and upto is not None:
            # Every key between two strings starts with what they have in common.
            prefix = max(base, _common_start(after, upto), key=len)
        ranges.append(KeyRange(prefix, after, upto))
    return ranges


def _common_start(a: str, b: str) -> str:
    """The longest string both ``a`` and ``b`` start with (character by character)."""
    n = min(len(a), len(b))
    i = next((i for i in range(n) if a[i] != b[i]), n)
    return a[:i]


def parallel_pages(
    store: RangeStore, width: int, start_after: str | None = None
) -> Iterator[list[ObjectInfo]]:
    """The store's listing after ``start_after``, as :meth:`list_pages` yields it, fetched
    by ``width`` concurrent requests."""
    return _recut(_pages(store, width, start_after), store.page_size)


def _pages(store: RangeStore, width: int, start_after: str | None) -> Iterator[list[ObjectInfo]]:
    # The first page as a sequential listing has it: a listing that fits needs nothing more
    # (the paginator asks for a next page only when the store says there is one).
    sequential = store.list_range(store.prefix, start_after, None)
    page = next(sequential, [])
    if len(page) < store.page_size:
        yield page
        yield from sequential
        return
    getattr(sequential, "close", lambda: None)()  # no request for its second page
    yield page
    cuts = discover(store, width)
    ranges = key_ranges(store.prefix, cuts, page[-1].key)
    log.debug("listing %s in %d ranges, %d at once", store.prefix or "/", len(ranges), width)
    yield from _ordered(store, ranges, width)


def _ordered(store: RangeStore, ranges: list[KeyRange], width: int) -> Iterator[list[ObjectInfo]]:
    """The ranges' pages, listed ``width`` at a time, handed on in range order."""
    stop = threading.Event()
    window = threading.Semaphore(2 * width)  # started and not yet consumed
    todo = iter(ranges)
    take = threading.Lock()

    def stopped() -> bool:
        return stop.is_set() or interrupt.STOP.is_set()

    def put(rng: KeyRange, item: Any) -> bool:
        while not stopped():
            try:
                rng.pages.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        while not stopped():
            if not window.acquire(timeout=_POLL):
                continue
            with take:  # in order: a range starts before every range after it
                rng = next(todo, None)
            if rng is None:
                return
            try:
                for page in store.list_range(rng.prefix, rng.after, rng.upto):
                    if not put(rng, page):
                        return
                put(rng, None)
            except BaseException as exc:  # handed to the consumer, raised there
                put(rng, exc)

    # In the sync's context (one copy each): the store's log lines name the source too.
    for _ in range(min(width, len(ranges))):
        run = contextvars.copy_context().run
        name = "mediamirror-list-range"
        threading.Thread(target=run, args=(work,), name=name, daemon=True).start()
    try:
        for rng in ranges:
            while True:
                try:
                    item = rng.pages.get(timeout=_POLL)
                except queue.Empty:
                    interrupt.check()
                    continue
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
            window.release()
    finally:
        stop.set()


def _concurrently(fn: Callable[[str], list[str]], items: list[str], width: int) -> list[list[str]]:
    """``fn`` of each item, ``width`` at a time, in the items' order."""
    if len(items) == 1:
        return [fn(items[0])]
    ctx = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="mediamirror-discover") as pool:
        return list(pool.map(lambda item: ctx.copy().run(fn, item), items))


def _recut(pages: Iterable[list[ObjectInfo]], size: int) -> Iterator[list[ObjectInfo]]:
    """Pages of exactly ``size`` keys (the last one shorter), like a sequential listing;
    one empty page when there are no keys at all."""
    buf: list[ObjectInfo] = []
    empty = True
    for page in pages:
        buf += page
        while len(buf) >= size:
            empty = False
            yield buf[:size]
            buf = buf[size:]
    if buf or empty:
        yield buf
