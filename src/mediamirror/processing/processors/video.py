"""The ``video`` processor: probe without downloading, transcode only when needed (DIVE)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mediamirror.errors import ProcessingError
from mediamirror.processing.originals import input_store, with_original
from mediamirror.processing.outputs import mirror_clash, output_for
from mediamirror.processing.probe import probe
from mediamirror.processing.processors.base import Dataset, ItemRef, Processor
from mediamirror.processing.rangefile import RangeFile
from mediamirror.processing.transcode import ffmpeg_exe, make_poster, plan_video, transcode_video
from mediamirror.sync.layout import VIDEO_EXTENSIONS, Kind

if TYPE_CHECKING:
    from mediamirror.jobs.context import JobContext
    from mediamirror.services import Services


class VideoProcessor(Processor):
    name = "video"
    dataset_types = frozenset({"video"})

    def __init__(self, preset: str = "medium", crf: int = 22, vfr_fps: float = 0.0) -> None:
        self.preset = preset
        self.crf = crf
        self.vfr_fps = vfr_fps  # 0: a variable-rate video becomes its real rate

    def inputs(self, dataset: Dataset) -> list[ItemRef]:
        return dataset.items_of(Kind.VIDEO)[:1]

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        video = self.require(self.inputs(dataset), "video")[0]
        assert dataset.source_id is not None
        # A feed record's file is downloaded (once) and kept: see processing/originals.py.
        store, video = input_store(ctx, services, dataset.source_id, video)
        ctx.progress(1.0, "probing")
        with RangeFile(store, video.key, video.size, etag=video.etag) as fh:
            info = probe(fh, name=video.name)
            ctx.log(f"probed {video.key}: {fh.bytes_fetched} bytes in {fh.requests} requests")
        requested = float(dataset.meta.get("fps") or -1)
        plan = plan_video(info, requested, filename=video.name, vfr_fps=self.vfr_fps)
        ctx.log(f"plan: {plan.action} ({'; '.join(plan.reasons) or 'web-ready'})")
        action = "keep" if ctx.args.get("skip_transcoding") else plan.action
        out, names = output_for(services, dataset.source_id)
        clash = mirror_clash(
            services.catalog, names, dataset.source_id, video, "video", VIDEO_EXTENSIONS
        )
        if clash is not None:  # its transcode and poster would replace this one's
            raise ProcessingError(
                f"{clash} would have the same outputs ({names.poster(dataset, video)}...) "
                f"as {video.key}: rename one, or use the catalog output layout"
            )
        source_input = store.media_input(video.key)
        # A stalled store fails ffmpeg's read after this, as any other store request.
        read_timeout = float(services.settings.store_read_timeout)
        outputs: dict[str, str] = {}
        playable = source_input
        if action != "keep":
            ctx.check()
            tmp = ctx.workdir / "video.mp4"
            ctx.log(f"ffmpeg: {action} ({self.preset}, crf {self.crf})")
            ctx.progress(2.0, "transcoding" if action == "transcode" else "remuxing")
            done = transcode_video(
                source_input,
                tmp,
                plan,
                ffmpeg=ffmpeg_exe(),
                preset=self.preset,
                crf=self.crf,
                on_progress=lambda pct: ctx.progress(2.0 + pct * 0.9, None),
                cancel=ctx.cancel,
                timeout=ctx.remaining(),
                log=ctx.log,
                read_timeout=read_timeout,
            )
            action = done.action
            ctx.check()
            outputs["video"] = out.put_file(names.transcode(dataset, video), tmp, "video/mp4")
            playable = str(tmp)
        ctx.progress(95.0, "poster")
        poster = ctx.workdir / "poster.jpg"
        try:
            at = min(1.0, (plan.duration or 0.0) / 2)
            make_poster(playable, poster, at, ffmpeg=ffmpeg_exe(), read_timeout=read_timeout)
            name = names.poster(dataset, video)
            outputs["poster"] = out.put_file(name, poster, "image/jpeg")
        except Exception as exc:  # a missing thumbnail must not fail a playable video
            ctx.log(f"no poster: {exc}")
        return {
            "fps": plan.fps,
            "originalFps": plan.original_fps,
            "codec": info.codec,
            "annotate": True,
            "MarkForPostProcess": False,
            "probe": info.to_metadata(),
            "transcode": {"action": action, "reasons": list(plan.reasons)},
            "outputs": with_original(services, dataset.id, outputs),
            "media": {"item": video.key, "transcoded": "video" in outputs},
        }
