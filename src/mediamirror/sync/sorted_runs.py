"""Rows sorted by their first column on disk: an external merge sort for inputs of any size.

Arrow tables come in, in any order: every ``run_rows`` rows are sorted in Arrow and
written to a temporary Arrow IPC file (LZ4-compressed), a *run*. Reading merges the runs
with :func:`heapq.merge`, one batch of each in memory at a time. Memory then holds one run
being built, or one batch per run being merged, whatever the number of rows: more than
``fan_in`` runs are first merged into fewer, longer ones on disk.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

#: Rows sorted in memory at once: ~25 MB of Arrow for an inventory's four columns.
RUN_ROWS = 1 << 18
#: Rows of one batch of a run file, read at once while merging.
BATCH_ROWS = 4096
#: Runs merged at once (so one batch of each in memory).
FAN_IN = 32


class SortedRuns:
    """Tables added in any order, read back as one stream of row tuples in the order of
    the first column (byte order for strings, as Arrow sorts them)."""

    def __init__(
        self,
        folder: Path,
        schema: Any,  # pyarrow.Schema: the columns every added table has, in this order
        *,
        run_rows: int = RUN_ROWS,
        batch_rows: int = BATCH_ROWS,
        fan_in: int = FAN_IN,
    ) -> None:
        self.folder = folder
        self.schema = schema
        self.run_rows = run_rows
        self.batch_rows = batch_rows
        self.fan_in = max(2, fan_in)
        self.rows_added = 0
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._runs: list[Path] = []
        self._made = 0

    def add(self, table: Any) -> None:
        """Rows to sort (a ``pyarrow.Table`` with the schema's columns)."""
        if not table.num_rows:
            return
        self._pending.append(table.select(self.schema.names))
        self._pending_rows += table.num_rows
        self.rows_added += table.num_rows
        if self._pending_rows >= self.run_rows:
            self._flush()

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """Every row added, in order: tuples of the schema's columns."""
        self._flush()
        runs = self._runs
        while len(runs) > self.fan_in:
            runs = [
                self._merge_into_run(runs[i : i + self.fan_in])
                for i in range(0, len(runs), self.fan_in)
            ]
        self._runs = []
        if len(runs) == 1:
            return self._read(runs[0])
        return heapq.merge(*(self._read(path) for path in runs))

    # -- runs -------------------------------------------------------------------------------

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._pending:
            return
        table = pa.concat_tables(self._pending).cast(self.schema)
        self._pending, self._pending_rows = [], 0
        self._runs.append(
            self._write(table.sort_by(self.schema.names[0]).to_batches(self.batch_rows))
        )

    def _write(self, batches: Iterable[Any]) -> Path:
        import pyarrow as pa

        path = self.folder / f"run-{self._made:06d}.arrow"
        self._made += 1
        options = pa.ipc.IpcWriteOptions(compression="lz4")
        with (
            pa.OSFile(str(path), "wb") as sink,
            pa.ipc.new_file(sink, self.schema, options=options) as out,
        ):
            for batch in batches:
                out.write_batch(batch)
        return path

    def _read(self, path: Path) -> Iterator[tuple[Any, ...]]:
        """One run's rows, a batch at a time; the file is removed once read."""
        import pyarrow as pa

        try:
            with pa.OSFile(str(path)) as source:
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    batch = reader.get_batch(i)
                    yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)
        finally:
            path.unlink(missing_ok=True)

    def _merge_into_run(self, paths: list[Path]) -> Path:
        """Runs merged into one longer run (written batch by batch)."""
        import pyarrow as pa

        merged = heapq.merge(*(self._read(path) for path in paths))

        def batches() -> Iterator[Any]:
            while chunk := list(itertools.islice(merged, self.batch_rows)):
                columns = [list(column) for column in zip(*chunk, strict=True)]
                yield pa.record_batch(columns, schema=self.schema)

        return self._write(batches())
