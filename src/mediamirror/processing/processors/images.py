"""The ``images`` processor: check the frames of an image sequence, convert frames that
browsers cannot show to web images, and settle the frame rate (-1 becomes 1)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediamirror.errors import ProcessingError
from mediamirror.processing.failures import is_disk_full
from mediamirror.processing.images import WEB_FORMATS, check_image, to_web_image
from mediamirror.processing.large_frames import split_large_frames
from mediamirror.processing.originals import with_original
from mediamirror.processing.outputs import output_for
from mediamirror.processing.processors.base import Dataset, ItemRef, Processor
from mediamirror.processing.processors.pyramid import local_input
from mediamirror.processing.thumbnails import (
    Thumbnail,
    thumbnail_in_scratch,
    upload_thumbnail,
)
from mediamirror.sync.layout import Kind

if TYPE_CHECKING:
    from mediamirror.jobs.context import JobContext
    from mediamirror.services import Services


class ImagesProcessor(Processor):
    name = "images"
    dataset_types = frozenset({"image-sequence"})

    def inputs(self, dataset: Dataset) -> list[ItemRef]:
        return dataset.items_of(Kind.IMAGE, Kind.LARGE_IMAGE, large_image_bytes=1 << 62)

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        # Frames of too many pixels leave for large-image datasets of their own first.
        remaining = split_large_frames(ctx, services, dataset)
        if remaining is None:
            return {}  # no frame left: the folder is no longer an image sequence
        dataset = remaining
        frames = self.require(self.inputs(dataset), "images")
        assert dataset.source_id is not None
        out, names = output_for(services, dataset.source_id)
        converted: dict[str, str] = {}
        bad: list[str] = []
        size: tuple[int, int] | None = None
        thumb: Thumbnail | None = None
        tried = False  # a thumbnail is tried once, on the first readable frame
        for n, frame in enumerate(frames, 1):
            ctx.check()
            path = local_input(ctx, services, dataset.source_id, frame)
            try:
                dims = check_image(path)
                size = size or dims
                if not tried:  # while the frame is on disk
                    tried, thumb = True, thumbnail_in_scratch(ctx, frame, path)
                if Path(frame.name).suffix.lower() not in WEB_FORMATS:
                    web = to_web_image(path, ctx.scratch(f"{frame.name}.jpg"))
                    converted[frame.key] = out.put_file(names.frame(dataset, frame), web)
                    web.unlink(missing_ok=True)
            except ProcessingError as exc:
                if is_disk_full(exc):
                    raise  # the scratch disk's fault, not the frame's: see jobs/runner.py
                bad.append(frame.name)
                ctx.log(f"{frame.name}: {exc}")
            finally:
                if path.is_relative_to(ctx.workdir):
                    path.unlink(missing_ok=True)
            ctx.progress(100.0 * n / len(frames), f"frame {n}/{len(frames)}")
        if bad:
            raise ProcessingError(
                f"{len(bad)} of {len(frames)} frames cannot be read (first: {bad[0]})"
            )
        fps = float(dataset.meta.get("fps") or -1)
        made, thumb_meta = upload_thumbnail(ctx, out, names, dataset, thumb)
        if converted:
            made["frames"] = converted
        return {
            "fps": 1 if fps <= 0 else fps,
            "annotate": True,
            "MarkForPostProcess": False,
            "frames": len(frames),
            "width": size[0] if size else None,
            "height": size[1] if size else None,
            "outputs": with_original(services, dataset.id, made),
            **thumb_meta,
        }
