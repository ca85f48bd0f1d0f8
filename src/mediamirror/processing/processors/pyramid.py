"""The ``pyramid`` processor: large images to pyramidal tiled TIFFs (the Notre Dame
pipeline), written to the source's output store. In the catalog layout a pyramid is
named after the whole source key (``pyramids/<source>/<key>.tif``, the key made safe):
``scan.svs`` and ``scan.ndpi`` never share a pyramid; in the mirror layout after the key
with its extension replaced (``a/lantern.png`` -> ``a/lantern.tif``), and a second key
with that name fails. See :mod:`mediamirror.processing.outputs`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediamirror.errors import ProcessingError
from mediamirror.processing.originals import local_original, with_original
from mediamirror.processing.outputs import mirror_clash, output_for
from mediamirror.processing.processors.base import Dataset, ItemRef, Processor
from mediamirror.processing.pyramid import make_pyramid
from mediamirror.processing.thumbnails import thumbnail_in_scratch, upload_thumbnail
from mediamirror.sync.layout import IMAGE_EXTENSIONS, LARGE_IMAGE_EXTENSIONS, Kind

if TYPE_CHECKING:
    from mediamirror.jobs.context import JobContext
    from mediamirror.services import Services

#: The keys a pyramid is made of, for the mirror layout's name check.
_RASTER = IMAGE_EXTENSIONS | LARGE_IMAGE_EXTENSIONS


def local_input(ctx: JobContext, services: Services, source_id: int, item: ItemRef) -> Path:
    """A local file of the item: the file itself for a local source, else a download."""
    original = local_original(ctx, services, source_id, item)  # a feed's: kept once
    if original is not None:
        return original
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
        out, names = output_for(services, dataset.source_id)
        name = names.pyramid(dataset, image)
        clash = mirror_clash(
            services.catalog, names, dataset.source_id, image, "large-image", _RASTER
        )
        if clash is not None:
            raise ProcessingError(
                f"{clash} would have the same pyramid {name} as {image.key}: rename one, "
                "or use the catalog output layout"
            )
        ctx.progress(1.0, "reading")
        src = local_input(ctx, services, dataset.source_id, image)
        ctx.check()
        ctx.progress(10.0, "building pyramid")
        tmp = ctx.workdir / "pyramid.tif"
        info = make_pyramid(src, tmp, max_dimension=self.max_dimension)
        ctx.check()
        # From the pyramid just built: libvips reads its smallest level big enough.
        thumb = thumbnail_in_scratch(ctx, image, tmp)
        ctx.progress(90.0, "uploading")
        key = out.put_file(name, tmp, "image/tiff")
        # The IIIF cache names its copy after this version, so a pyramid made again is
        # fetched again, without asking the store for every tile.
        version = out.version(key)
        ctx.log(f"pyramid {key}: {info.width}x{info.height}, {info.levels} levels")
        made, thumb_meta = upload_thumbnail(ctx, out, names, dataset, thumb)
        return {
            "width": info.width,
            "height": info.height,
            "levels": info.levels,
            "annotate": True,
            "MarkForPostProcess": False,
            "outputs": with_original(services, dataset.id, {"pyramid": key, **made}),
            "pyramid": {
                "compression": str(info.compression),
                "bigtiff": info.bigtiff,
                "tile": 256,
                "version": version,
            },
            **thumb_meta,
        }
