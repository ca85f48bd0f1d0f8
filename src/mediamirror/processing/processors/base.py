"""The processor contract, and the dataset it works on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import Connection, select

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS, ITEMS
from mediamirror.errors import NotFoundError, ProcessingError
from mediamirror.sync.layout import Kind, classify

if TYPE_CHECKING:
    from mediamirror.jobs.context import JobContext
    from mediamirror.services import Services


@dataclass(frozen=True)
class ItemRef:
    id: int
    key: str
    name: str
    size: int
    etag: str


@dataclass
class Dataset:
    """A dataset folder with its present items."""

    id: int
    path: str
    source_id: int | None
    meta: dict[str, Any]
    items: list[ItemRef] = field(default_factory=list)

    @property
    def type(self) -> str | None:
        value = self.meta.get("type")
        return str(value) if value is not None else None

    def items_of(self, *kinds: Kind, large_image_bytes: int = 1 << 62) -> list[ItemRef]:
        return [i for i in self.items if classify(i.name, i.size, large_image_bytes) in kinds]


def load_dataset(catalog: Catalog, folder_id: int) -> Dataset:
    with catalog.read() as conn:
        return load_dataset_in(conn, folder_id)


def load_dataset_in(conn: Connection, folder_id: int) -> Dataset:
    """:func:`load_dataset` inside the caller's transaction."""
    row = conn.execute(select(FOLDERS).where(FOLDERS.c.id == folder_id)).first()
    if row is None:
        raise NotFoundError(f"folder {folder_id} no longer exists")
    items = conn.execute(
        select(ITEMS.c.id, ITEMS.c.key, ITEMS.c.name, ITEMS.c.size, ITEMS.c.etag)
        .where(ITEMS.c.folder_id == folder_id, ITEMS.c.state == "present")
        .order_by(ITEMS.c.key)
    ).all()
    return Dataset(
        id=row.id,
        path=row.path,
        source_id=row.source_id,
        meta=dict(row.meta or {}),
        items=[ItemRef(i.id, i.key, i.name, i.size, i.etag) for i in items],
    )


def version_of(items: list[ItemRef]) -> str:
    """An input version: the etag of a single input, else a digest of (key, etag) pairs."""
    if len(items) == 1:
        return items[0].etag or "none"
    digest = hashlib.sha1(usedforsecurity=False)
    for item in items:
        digest.update(f"{item.key}\0{item.etag}\0".encode())
    return digest.hexdigest()[:20]


class Processor:
    """A named step run on a dataset. Subclasses set ``name`` and ``dataset_types`` and
    implement :meth:`inputs` and :meth:`run`; ``run`` returns metadata to merge into the
    dataset on success and raises ProcessingError (bad input) or
    TransientProcessingError (worth a retry) otherwise."""

    name: ClassVar[str] = ""
    dataset_types: ClassVar[frozenset[str]] = frozenset()
    #: Queued by ``postprocess`` (and after a sync); otherwise only by ``reprocess``.
    auto: bool = True
    #: Seconds a job of this processor may run; None means the job_timeout setting.
    timeout: float | None = None
    #: Metadata keys whose dict values are merged into the dataset's instead of replacing
    #: them (several processors write their own entry under ``results``).
    merge_keys: ClassVar[frozenset[str]] = frozenset()

    def inputs(self, dataset: Dataset) -> list[ItemRef]:
        return dataset.items

    def input_version(self, dataset: Dataset) -> str:
        return version_of(self.inputs(dataset))

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def require(items: list[ItemRef], what: str) -> list[ItemRef]:
        if not items:
            raise ProcessingError(f"the dataset holds no {what}")
        return items


def output_base(dataset: Dataset) -> str:
    """Relative output key prefix of a dataset: its catalog path without the leading /."""
    return dataset.path.lstrip("/")
