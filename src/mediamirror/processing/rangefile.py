"""A seekable, read-only file object over one object of a store.

Probing a video only needs its container header and index (a few hundred KiB, even for a
file of gigabytes), so instead of downloading the object we hand PyAV a file object whose
reads become ``store.read_range`` calls. Reads are rounded up to fixed-size blocks kept in a
small LRU cache: demuxers read in small pieces and seek back and forth between the header
and the index, and without the cache each piece would be its own HTTP request.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from typing import TYPE_CHECKING

from mediamirror.errors import StoreError
from mediamirror.stores.base import Store

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

DEFAULT_BLOCK_SIZE = 256 * 1024
DEFAULT_CACHE_BLOCKS = 8


class RangeFile(io.RawIOBase):
    """Read ``key`` of ``store`` as a local, seekable binary file.

    ``bytes_fetched`` and ``requests`` count what actually went over the wire, so callers
    (and benchmarks) can show how little of an object a probe needed. One instance is meant
    for one reader at a time; it is not thread-safe.

    A failed fetch raises the store's error once; after that the file reads as empty (EOF),
    because PyAV retries reads and would report every further exception as "dropped" while
    re-raising the first. Open a new RangeFile to try again.
    """

    def __init__(
        self,
        store: Store,
        key: str,
        size: int | None = None,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        cache_blocks: int = DEFAULT_CACHE_BLOCKS,
        etag: str | None = None,
    ) -> None:
        """Open ``key``; ``size`` saves a ``store.head`` call when the catalog knows it.
        With ``etag`` (the version the catalog knows), every range comes from that version:
        an object replaced during the read fails (TransientProcessingError, retried)
        instead of mixing old and new bytes."""
        super().__init__()
        if block_size <= 0 or cache_blocks <= 0:
            raise ValueError("block_size and cache_blocks must be positive")
        self.store = store
        self.key = key
        self.etag = etag
        self.name = key  # lets probe() see the file name, as with a real file
        self.size = store.head(key).size if size is None else size
        self.block_size = block_size
        self.cache_blocks = cache_blocks
        self.bytes_fetched = 0
        self.requests = 0
        self._pos = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._failure: BaseException | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the read position; seeking past the end is allowed, reads there return b""."""
        if self.closed:
            raise ValueError("seek on a closed RangeFile")
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Fill ``buffer`` from the current position; fewer bytes only at the end."""
        if self.closed:
            raise ValueError("read from a closed RangeFile")
        view = memoryview(buffer).cast("B")
        count = min(len(view), self.size - self._pos)
        if count <= 0 or self._failure is not None:
            # After a failed fetch, report EOF instead of raising again: PyAV keeps the
            # first exception and re-raises it, but retries reads and prints every further
            # exception as "dropped".
            return 0
        first = self._pos // self.block_size
        last = (self._pos + count - 1) // self.block_size
        try:
            blocks = self._blocks(first, last)
        except Exception as exc:
            self._failure = exc
            raise
        written = 0
        for index in range(first, last + 1):
            block = blocks[index]
            start = self._pos + written - index * self.block_size
            piece = block[start : start + count - written]
            view[written : written + len(piece)] = piece
            written += len(piece)
        self._pos += written
        return written

    def _blocks(self, first: int, last: int) -> dict[int, bytes]:
        """Blocks ``first..last``, fetching each run of missing blocks in one request."""
        found: dict[int, bytes] = {}
        missing: list[int] = []
        for index in range(first, last + 1):
            cached = self._cache.get(index)
            if cached is None:
                missing.append(index)
            else:
                self._cache.move_to_end(index)
                found[index] = cached
        for run in _runs(missing):
            found.update(self._fetch(run[0], run[-1]))
        return found

    def _fetch(self, first: int, last: int) -> dict[int, bytes]:
        start = first * self.block_size
        length = min((last + 1) * self.block_size, self.size) - start
        if self.etag is None:
            data = self.store.read_range(self.key, start, length)
        else:
            data = self.store.read_range(self.key, start, length, etag=self.etag)
        self.requests += 1
        self.bytes_fetched += len(data)
        if len(data) != length:
            # The catalog's size no longer matches the object: it changed under us.
            raise StoreError(
                f"{self.key}: expected {length} bytes at offset {start}, got {len(data)}"
                " (object changed while reading?)"
            )
        fetched: dict[int, bytes] = {}
        for index in range(first, last + 1):
            offset = (index - first) * self.block_size
            fetched[index] = data[offset : offset + self.block_size]
            self._cache[index] = fetched[index]
        while len(self._cache) > self.cache_blocks:
            self._cache.popitem(last=False)
        return fetched


def _runs(indices: list[int]) -> list[list[int]]:
    """Split sorted block indices into runs of consecutive numbers."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and runs[-1][-1] == index - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return runs
