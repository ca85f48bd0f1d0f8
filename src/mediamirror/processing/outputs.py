"""The names of derived files in an output store, one function per kind of file.

Two layouts, chosen per source by its profile (``--output-layout``):

``catalog`` (the default; the names mediamirror has always used)
    ============  =====================================================
    pyramid       ``pyramids/<source name>/<whole key>.tif``
    transcode     ``<dataset path>/<video name without extension>.mp4``
    poster        ``<dataset path>/poster.jpg``
    thumbnail     ``<dataset path>/thumbnail.jpg``
    frame         ``<dataset path>/frames/<frame name>.jpg``
    result set    ``results/<dataset path>/<processor>/<set>/`` (results store)
    ============  =====================================================

``mirror`` (the output store mirrors the source: ``K`` is the key relative to the
source's prefix, ``S`` the same with its extension removed)
    ============  =====================================================
    pyramid       ``S.tif``           (``isaac_gala/lantern.png`` -> ``isaac_gala/lantern.tif``)
    transcode     ``S.mp4``           (``a/clip.mov`` -> ``a/clip.mp4``)
    poster        ``S.poster.jpg``    (``a/clip.mov`` -> ``a/clip.poster.jpg``)
    thumbnail     ``S.thumb.jpg``     (``a/lantern.png`` -> ``a/lantern.thumb.jpg``; an image
                                      sequence's is named after its first frame)
    frame         ``K.jpg``           (``seq/f.tif`` -> ``seq/f.tif.jpg``)
    result set    as in ``catalog``, in the results store
    ============  =====================================================

Mirror names of different kinds never meet: a pyramid ends in ``.tif``, a transcode in
``.mp4``, a poster in ``.poster.jpg``, a thumbnail in ``.thumb.jpg`` and a frame in
``.<image extension>.jpg`` (a frame is an image, so its name never ends in ``.poster`` or
``.thumb``). Two keys of one source that differ
only by extension (``scan.svs``, ``scan.ndpi``) share a mirror name: see
:func:`mirror_clash`. Result sets are folders of many files per run, found through the
dataset's ``results.<processor>`` metadata rather than predicted, so they keep their
catalog names in the results store whatever the layout.

Kind folders are not repeated: when the store's URL already ends with the folder of a
kind (an output store ``s3://bucket/pyramids``, a results store ``s3://bucket/results``),
that folder is left out of the name (``pyramids/<source>/<key>.tif`` in the bucket, not
``pyramids/pyramids/...``).

Every name is made with :mod:`mediamirror.paths`: keys through :func:`safe_relpath` or
:func:`safe_segment`, catalog paths (already safe) checked with :func:`check_relpath`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS, ITEMS
from mediamirror.paths import check_relpath, safe_relpath, safe_segment
from mediamirror.profiles import profile_of
from mediamirror.stores import StoreSpec
from mediamirror.sync.layout import extension

if TYPE_CHECKING:
    from mediamirror.processing.processors.base import Dataset, ItemRef
    from mediamirror.services import Services
    from mediamirror.stores.output import OutputStore


def stem(name: str) -> str:
    """A file name without its extension (a leading dot is not an extension)."""
    dot = name.rfind(".")
    return name[:dot] if dot > 0 else name


def _last_folder(spec: StoreSpec) -> str:
    return spec.prefix.rstrip("/").rsplit("/", 1)[-1]


def kind_folder(spec: StoreSpec, kind: str) -> str:
    """``"<kind>/"``, or ``""`` when the store's URL already ends with that folder."""
    return "" if _last_folder(spec) == kind else f"{kind}/"


@dataclass(frozen=True)
class OutputNames:
    """How one source's derived files are named in its output store."""

    layout: str  # "catalog" or "mirror"
    source_name: str
    key_prefix: str  # the source's key prefix: "" or ending in "/"
    store: StoreSpec  # the output store the names are for

    @classmethod
    def of(cls, source: Any, store: StoreSpec) -> OutputNames:
        """The names for a source row (its profile's layout) in ``store``."""
        return cls(
            layout=profile_of(source).output_layout,
            source_name=source.name,
            key_prefix="" if source.kind == "local" else source.prefix,
            store=store,
        )

    @property
    def mirror(self) -> bool:
        return self.layout == "mirror"

    def relative(self, key: str) -> str:
        """A key of the source relative to the source's prefix, made safe."""
        if self.key_prefix and key.startswith(self.key_prefix):
            key = key[len(self.key_prefix) :]
        return safe_relpath(key)

    def mirror_name(self, key: str, suffix: str) -> str:
        """A key relative to the source's prefix with its extension replaced by ``suffix``."""
        folder, _, name = self.relative(key).rpartition("/")
        return (folder + "/" if folder else "") + stem(name) + suffix

    def pyramid(self, dataset: Dataset, item: ItemRef) -> str:
        if self.mirror:
            return self.mirror_name(item.key, ".tif")
        folder = kind_folder(self.store, "pyramids")
        return f"{folder}{safe_segment(self.source_name)}/{safe_relpath(item.key)}.tif"

    def transcode(self, dataset: Dataset, item: ItemRef) -> str:
        if self.mirror:
            return self.mirror_name(item.key, ".mp4")
        # Each video has its own dataset folder: the name without extension is enough.
        return f"{dataset_base(dataset)}/{safe_segment(stem(item.name))}.mp4"

    def poster(self, dataset: Dataset, item: ItemRef) -> str:
        if self.mirror:
            return self.mirror_name(item.key, ".poster.jpg")
        return f"{dataset_base(dataset)}/poster.jpg"

    def thumbnail(self, dataset: Dataset, item: ItemRef) -> str:
        """A large image's or image sequence's thumbnail (``item``: the image it is of)."""
        if self.mirror:
            return self.mirror_name(item.key, ".thumb.jpg")
        return f"{dataset_base(dataset)}/thumbnail.jpg"

    def frame(self, dataset: Dataset, item: ItemRef) -> str:
        # Named after the whole name: f.tif and f.tiff get frames of their own.
        if self.mirror:
            return self.relative(item.key) + ".jpg"
        return f"{dataset_base(dataset)}/frames/{safe_segment(item.name)}.jpg"


def output_for(services: Services, source_id: int) -> tuple[OutputStore, OutputNames]:
    """A source's output store (its profile's, else the installation's) and its names."""
    store = services.output_store_for(source_id)
    return store, OutputNames.of(services.source(source_id), store.spec)


def dataset_base(dataset: Dataset) -> str:
    """A dataset's catalog path without the leading ``/``: the folder of its catalog-layout
    outputs. Catalog paths are made safe when synced; an old one that is not is refused."""
    return check_relpath(dataset.path.lstrip("/"), "the output store")


def result_set_prefix(store: StoreSpec, dataset: Dataset, processor: str, run: str) -> str:
    """Where one run's result set goes in the results store ``store``."""
    folder = kind_folder(store, "results")
    return f"{folder}{dataset_base(dataset)}/{safe_segment(processor)}/{safe_segment(run)}/"


def mirror_clash(
    catalog: Catalog,
    names: OutputNames,
    source_id: int,
    item: ItemRef,
    dataset_type: str,
    extensions: Collection[str],
) -> str | None:
    """Another present key of the source with the same mirror name as ``item`` (e.g.
    ``scan.ndpi`` beside ``scan.svs``, both ``scan.tif``), with one of ``extensions`` and
    in a dataset of ``dataset_type``: it makes this kind of output too. None in the catalog
    layout. Such a job fails rather
    than overwrite the other key's output."""
    if not names.mirror:
        return None
    folder, _, name = item.key.rpartition("/")
    like = (folder + "/" if folder else "") + stem(name) + "."
    escaped = like.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    with catalog.read() as conn:
        rows = conn.execute(
            select(ITEMS.c.key, ITEMS.c.name, FOLDERS.c.meta)
            .join(FOLDERS, FOLDERS.c.id == ITEMS.c.folder_id)
            .where(
                ITEMS.c.source_id == source_id,
                ITEMS.c.state == "present",
                ITEMS.c.key.like(escaped + "%", escape="\\"),
                ITEMS.c.key != item.key,
            )
            .order_by(ITEMS.c.key)
        ).all()
    mine = names.mirror_name(item.key, "")
    for key, other, meta in rows:
        same = (meta or {}).get("type") == dataset_type and extension(other) in extensions
        if same and names.mirror_name(key, "") == mine:
            return str(key)
    return None
