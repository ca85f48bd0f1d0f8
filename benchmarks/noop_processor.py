"""A processor that does nothing, for measuring the job machinery alone (jobs_bench.py).

Declared in the benchmark's config.yaml as::

    processors:
      noop: {python: "noop_processor:NoopProcessor", applies_to: [video], auto: false}

with ``benchmarks/`` on ``PYTHONPATH``. Its input is the dataset's video item, so the
runner's bookkeeping (input version, ``needs_processing``, metadata) runs as for a real one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mediamirror.processing.processors.base import Dataset, ItemRef, Processor
from mediamirror.sync.layout import Kind

if TYPE_CHECKING:
    from mediamirror.jobs.context import JobContext
    from mediamirror.services import Services


class NoopProcessor(Processor):
    """Returns no metadata updates; everything measured is the job machinery."""

    def __init__(self, name: str, conf: dict[str, Any]) -> None:
        self.name = name  # type: ignore[misc]
        self.dataset_types = frozenset(conf.get("applies_to", ["video"]))  # type: ignore[misc]
        self.auto = bool(conf.get("auto", False))

    def inputs(self, dataset: Dataset) -> list[ItemRef]:
        return dataset.items_of(Kind.VIDEO)[:1]

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        return {}


class ReadyNoopProcessor(NoopProcessor):
    """Does nothing, then clears the dataset's MarkForPostProcess as a real post-processor
    does: each job completes its dataset, so each one records a ``dataset.ready``
    notification (notify_bench.py)."""

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        return {"MarkForPostProcess": False}
