"""One walk of a feed (stores/feed.py) in a thread of its own, and the walk a sync's CLI
starts early (stores/feed_early.py) until that sync takes it over.

The thread fetches each page with the store's client (one keep-alive connection), maps
its records, and queues one item per page; the reader (the sync's ``stream_pages``)
writes the pages before while the next ones come.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from mediamirror import interrupt

if TYPE_CHECKING:
    from mediamirror.stores.feed import FeedStore, Record

#: How long a walk started early waits to be taken over by its sync.
EARLY_SECONDS = 10.0

DONE = object()  # a walk's last item after a complete walk
_NOTHING = object()  # no item peeked yet


class Walk:
    """One walk of a feed: a thread fetches and maps its pages into a queue, one item per
    page (its objects), then :data:`DONE`, or the exception that ended it."""

    def __init__(self, store: FeedStore) -> None:
        self.store = store
        #: The store whose ``keepalive`` is called between pages (the one reading the walk).
        self.owner = store
        self.started = time.monotonic()
        self.ready: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.stop = threading.Event()
        self.warnings: list[str] = []
        self.found: dict[str, Record] = {}
        self._peeked: Any = _NOTHING
        run = contextvars.copy_context().run  # log lines keep the sync's source
        self.thread = threading.Thread(
            target=run, args=(self._produce,), name="feed-pages", daemon=True
        )
        self.thread.start()

    def _produce(self) -> None:
        from mediamirror.stores.feed import Record  # the module that started this walk

        ids: set[str] = set()
        store = self.store
        try:
            for page, records in store._pages(self):
                objects = []
                for index, record in enumerate(records, 1):
                    obj = store._object(record, (index, page), ids, self.warnings)
                    if obj is not None:
                        objects.append(obj)
                        assert obj.meta is not None
                        self.found[obj.key] = Record(str(obj.meta["source_url"]), obj.size or None)
                self.ready.put(objects)
            self.ready.put(DONE)
        except BaseException as exc:  # handed to the reader, raised there
            self.ready.put(exc)

    def peek(self) -> None:
        """Wait for the first page; raise its failure (the CMS down, a 401...)."""
        item = self.next(None)
        self._peeked = item
        if isinstance(item, BaseException):
            raise item

    def next(self, deadline: float | None) -> Any:
        """The next item (a page, the end, or a failure); None once ``deadline`` passed
        and nothing more is ready."""
        if self._peeked is not _NOTHING:
            item, self._peeked = self._peeked, _NOTHING
            return item
        while True:
            wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if wait <= 0:
                try:
                    return self.ready.get_nowait()
                except queue.Empty:
                    return None
            try:
                # Polled, so a stop request is seen while the CMS is slow to answer.
                return self.ready.get(timeout=wait)
            except queue.Empty:
                interrupt.check()


#: A walk started early (:meth:`FeedStore.start_early`), until a sync takes it over.
_EARLY: list[Walk] = []


def early(walk: Walk) -> None:
    """Keep ``walk`` for the sync that will take it over (one at a time)."""
    cancel_early()
    _EARLY.append(walk)


def take_early(store: FeedStore) -> Walk | None:
    """The walk started early for a feed with ``store``'s very settings (the same block,
    headers and timeouts), unless it waited too long (then it is stopped)."""
    if not _EARLY:
        return None
    walk = _EARLY[0]
    early = walk.store
    if time.monotonic() - walk.started > EARLY_SECONDS:
        cancel_early()
        return None
    if early.config != store.config or early.timeouts != store.timeouts:
        return None
    _EARLY.clear()
    return walk


def cancel_early() -> None:
    """Stop a walk started early that no sync took over (its thread ends after the page
    it is fetching)."""
    for walk in _EARLY:
        walk.stop.set()
    _EARLY.clear()
