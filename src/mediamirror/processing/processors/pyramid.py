"""The ``pyramid`` processor: large images to pyramidal tiled TIFFs (the Notre Dame
pipeline), named after the whole source key in the output store (``pyramids/<source>/
<key>.tif``, the key made safe): ``scan.svs`` and ``scan.ndpi`` never share a pyramid."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediamirror.paths import safe_relpath
from mediamirror.processing.processors.base import Dataset, ItemRef, Processor
from mediamirror.processing.pyramid import make_pyramid
from mediamirror.sync.layout import Kind

if TYPE_CHECKING:
    from mediamirror.jobs.context import JobContext
    from mediamirror.services import Services


def local_input(ctx: JobContext, services: Services, source_id: int, item: ItemRef) -> Path:
    """A local file of the item: the file itself for a local source, else a download."""
    store = services.source_store(source_id)
    media = store.media_input(item.key)
    if not media.startswith(("http://", "https://")):
        return Path(media)
    dest = ctx.scratch(f"input-{item.id}-{item.name}")
    store.download(item.key, dest)
    return dest


class PyramidProcessor(Processor):
    name = "pyramid"
    dataset_types = frozenset({"large-image"})

    def __init__(self, max_dimension: int = 0) -> None:
        self.max_dimension = max_dimension or None

    def inputs(self, dataset: Dataset) -> list[ItemRef]:
        return dataset.items_of(Kind.LARGE_IMAGE, Kind.IMAGE, large_image_bytes=0)[:1]

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        image = self.require(self.inputs(dataset), "image")[0]
        assert dataset.source_id is not None
        ctx.progress(1.0, "reading")
        src = local_input(ctx, services, dataset.source_id, image)
        ctx.check()
        ctx.progress(10.0, "building pyramid")
        tmp = ctx.workdir / "pyramid.tif"
        info = make_pyramid(src, tmp, max_dimension=self.max_dimension)
        ctx.check()
        ctx.progress(90.0, "uploading")
        source = services.source(dataset.source_id)
        out = services.output_store()
        key = out.put_file(
            f"pyramids/{source.name}/{safe_relpath(image.key)}.tif", tmp, "image/tiff"
        )
        # The IIIF cache names its copy after this version, so a pyramid made again is
        # fetched again, without asking the store for every tile.
        version = out.version(key)
        ctx.log(f"pyramid {key}: {info.width}x{info.height}, {info.levels} levels")
        return {
            "width": info.width,
            "height": info.height,
            "levels": info.levels,
            "annotate": True,
            "MarkForPostProcess": False,
            "outputs": {"pyramid": key},
            "pyramid": {
                "compression": str(info.compression),
                "bigtiff": info.bigtiff,
                "tile": 256,
                "version": version,
            },
        }
