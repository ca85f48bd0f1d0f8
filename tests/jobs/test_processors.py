"""The built-in processors over a matrix of sample media, in one real batch.

One local source holds every sample; one ``postprocess`` queues the batch and one
``mediamirror worker --burst`` runs it with real ffmpeg, PyAV and libvips. Each test then
reads what that batch left: job rows, dataset metadata and files in the output store.
A bad file must end its own job in error with a one-line reason while the rest of the batch
goes on.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
import pyvips

from helpers import Cli
from mediamirror.catalog.db import Catalog

from .conftest import Lab, MediaKit, assert_web_mp4

pytestmark = pytest.mark.timeout(300)

LARGE_IMAGE_BYTES = "1000000"
MOUNT = "/m"


@dataclass(frozen=True)
class Case:
    """One sample video and what post-processing must make of it."""

    media: str
    key: str
    action: str | None = None  # keep | remux | transcode when the job succeeds
    error: str | None = None  # a fragment of the one-line reason when it fails

    @property
    def path(self) -> str:
        folder, _, name = self.key.rpartition("/")
        return f"{MOUNT}/{folder}/Video {name}"


CASES = {
    "h264-faststart": Case("h264-faststart", "videos/web-ready.mp4", action="keep"),
    "moov-at-end": Case("h264-moov-end", "videos/moov-end.mp4", action="remux"),
    "mpeg4-avi": Case("mpeg4-avi", "videos/mpeg4.avi", action="transcode"),
    "vp9-webm": Case("vp9-webm", "videos/vp9.webm", action="transcode"),
    "anamorphic": Case("anamorphic", "videos/anamorphic.mp4", action="transcode"),
    "odd-321x241": Case("odd-size", "videos/odd-321x241.mp4", action="transcode"),
    "rotated": Case("rotated", "videos/rotated.mp4", action="transcode"),
    "ten-bit": Case("ten-bit", "videos/ten-bit.mp4", action="transcode"),
    "single-frame": Case("single-frame", "videos/single-frame.mp4", action="remux"),
    # web-ready but for its timing (33 ms frames, then 100 ms): made constant at 30 fps
    "variable-rate": Case("vfr", "videos/vfr.mp4", action="transcode"),
    "audio-only": Case("audio-only", "videos/audio-only.mp4", error="no video stream"),
    "zero-bytes": Case("zero-bytes", "videos/zero.mp4", error="empty file (0 bytes)"),
    "truncated": Case("truncated", "videos/truncated.mp4", error="truncated.mp4"),
    "text-as-mp4": Case("text-as-mp4", "videos/notes.mp4", error="not a readable media file"),
}
FPS10 = Case("h264-faststart", "fps10/clip25.mp4", action="keep")


@dataclass
class Batch:
    lab: Lab
    worker_line: str
    postprocess_line: str
    missing: dict[str, str]  # case -> why this ffmpeg could not make its sample

    def meta(self, path: str) -> dict[str, Any]:
        return dict(self.lab.dataset(path).meta)

    def only_job(self, path: str, processor: str) -> Any:
        jobs = [j for j in self.lab.jobs_of(path) if j.processor == processor]
        assert len(jobs) == 1, jobs
        return jobs[0]


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, media: MediaKit) -> Any:
    root = tmp_path_factory.mktemp("matrix")
    url = f"sqlite:///{root / 'catalog.db'}"
    catalog = Catalog(url)
    lab = Lab(root, catalog, Cli(home=root / "home", database_url=url))
    lab.cli.env["MEDIAMIRROR_LARGE_IMAGE_BYTES"] = LARGE_IMAGE_BYTES
    missing = {}
    for name, case in CASES.items():
        why = media.unavailable(case.media)
        if why:
            missing[name] = why
        else:
            lab.put(case.key, media[case.media])
    lab.put(FPS10.key, media[FPS10.media])
    lab.put("audio/tone.m4a", media["audio-only"])
    lab.put("large/slide.tif", media["large-tif"])
    lab.put("broken/scan.tif", media["corrupt-tif"])
    for rel, sample in [
        ("frames/f001.png", "frame-png"),
        ("frames/f002.tif", "frame-tif"),
        ("frames/f003.png", "frame-png"),
        ("bad-frames/f001.png", "frame-png"),
        ("bad-frames/f002.jpg", "corrupt-jpg"),
        ("bad-frames/f003.png", "frame-png"),
    ]:
        lab.put(rel, media[sample])
    lab.add_local_source("m")
    lab.sync("m")
    lab.set_meta(FPS10.path, fps=10)

    queued = lab.run("postprocess", MOUNT, "--recursive")
    worker = lab.worker("--concurrency", "2", timeout=240)
    yield Batch(lab, worker.stdout.strip(), queued.stdout.strip(), missing)
    catalog.close()


def test_the_whole_batch_ran_and_every_job_ended(batch: Batch) -> None:
    jobs = batch.lab.jobs()
    datasets = batch.lab.datasets()
    # every dataset got exactly its processor's job, and none is left queued or running
    assert len(jobs) == len(datasets) == len(CASES) - len(batch.missing) + 5
    assert batch.postprocess_line == f"queued {len(jobs)} job(s) for {len(jobs)} dataset(s)"
    assert {j.state for j in jobs} <= {"success", "error"}
    failed = [j for j in jobs if j.state == "error"]
    assert batch.worker_line == (
        f"worker ran {len(jobs)} job(s): {len(failed)} error, {len(jobs) - len(failed)} success"
    )
    for job in failed:
        assert job.error and "\n" not in job.error and "Traceback" not in job.error, job.error
        assert job.attempts == 1, "a bad input is not retried"
    for meta in (dict(d.meta) for d in datasets.values()):
        assert meta["MarkForPostProcess"] is False


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.action])
def test_video_made_playable(batch: Batch, name: str) -> None:
    case = CASES[name]
    if name in batch.missing:
        pytest.skip(batch.missing[name])
    job = batch.only_job(case.path, "video")
    assert (job.state, job.error) == ("success", None), batch.lab.job(job.id).log_tail
    meta = batch.meta(case.path)
    assert meta["annotate"] is True
    assert meta["MarkForPostProcess"] is False
    if name == "variable-rate":  # frame N is at N / 30; the source's average is kept
        assert meta["fps"] == 30 and meta["originalFps"] == meta["probe"]["avg_fps"] < 29
        assert meta["probe"]["variable_frame_rate"] is True
        assert "variable frame rate" in meta["transcode"]["reasons"][0]
    else:
        assert meta["fps"] > 0 and meta["fps"] == meta["originalFps"]
        assert meta["probe"]["variable_frame_rate"] is not True
    assert meta["codec"] == meta["probe"]["codec"]
    assert meta["probe"]["width"] > 0
    assert meta["transcode"]["action"] == case.action, meta["transcode"]
    assert meta["processing"]["video"]["state"] == "success"
    outputs = meta["outputs"]
    poster = batch.lab.outputs / outputs["poster"]
    assert pyvips.Image.new_from_file(str(poster)).width > 0
    if case.action == "keep":
        assert "video" not in outputs and meta["media"]["transcoded"] is False
        return
    video = batch.lab.outputs / outputs["video"]
    assert video.name == Path(case.key).stem + ".mp4"
    assert outputs["video"].startswith(case.path.lstrip("/") + "/")
    info = assert_web_mp4(video)
    if name == "odd-321x241":
        assert (info["width"], info["height"]) == (320, 240)
    if name == "anamorphic":  # 160x120 at SAR 4:3 is shown 213x120: stretched, made even
        assert (info["width"], info["height"]) == (212, 120)
    if name == "rotated":  # the turn is baked into the pixels
        assert (info["width"], info["height"]) == (120, 160)
    if name == "variable-rate":
        assert frame_durations(video) == {Fraction(1, 30)}


def frame_durations(path: Path) -> set[Fraction]:
    """The distinct intervals (s) between a video's presentation timestamps."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        stamps = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
        return {(b - a) * stream.time_base for a, b in itertools.pairwise(stamps)}


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.error])
def test_bad_video_fails_alone_with_one_line(batch: Batch, name: str) -> None:
    case = CASES[name]
    job = batch.only_job(case.path, "video")
    assert job.state == "error"
    assert case.error is not None and case.error in job.error, job.error
    assert "\n" not in job.error
    meta = batch.meta(case.path)
    assert meta["processing"]["video"]["state"] == "error"
    assert meta["processing"]["video"]["error"] == job.error
    assert "annotate" not in meta and meta["fps"] == -1
    assert not (batch.lab.outputs / case.path.lstrip("/")).exists()


def test_requested_fps_below_native_is_kept_with_the_original_rate(batch: Batch) -> None:
    meta = batch.meta(FPS10.path)
    assert (meta["fps"], meta["originalFps"]) == (10, 25)
    assert meta["annotate"] is True


def test_an_m4a_is_not_a_video_dataset(batch: Batch) -> None:
    assert not any("tone.m4a" in path for path in batch.lab.datasets())


def test_large_image_becomes_a_pyramid_in_the_output_store(batch: Batch) -> None:
    path = f"{MOUNT}/large/Large image slide.tif"
    job = batch.only_job(path, "pyramid")
    assert job.state == "success", job.error
    meta = batch.meta(path)
    assert (meta["width"], meta["height"]) == (800, 700)
    assert meta["levels"] >= 2 and meta["annotate"] is True
    assert meta["outputs"]["pyramid"] == "pyramids/m/large/slide.tif.tif"
    pyramid = batch.lab.outputs / meta["outputs"]["pyramid"]
    image = pyvips.Image.new_from_file(str(pyramid))
    assert (image.width, image.height) == (800, 700)
    assert image.get("n-pages") == meta["levels"]
    assert image.get_typeof("tile-width") == 0 or image.get("tile-width") == 256


def test_corrupt_large_image_is_an_error(batch: Batch) -> None:
    path = f"{MOUNT}/broken/Large image scan.tif"
    job = batch.only_job(path, "pyramid")
    assert job.state == "error" and "scan.tif" in job.error and "\n" not in job.error
    assert batch.meta(path)["processing"]["pyramid"]["state"] == "error"
    assert not (batch.lab.outputs / "pyramids/m/broken").exists()


def test_image_sequence_is_checked_and_converted(batch: Batch) -> None:
    path = f"{MOUNT}/frames"
    job = batch.only_job(path, "images")
    assert job.state == "success", job.error
    meta = batch.meta(path)
    assert meta["fps"] == 1 and meta["annotate"] is True and meta["MarkForPostProcess"] is False
    assert (meta["frames"], meta["width"], meta["height"]) == (3, 64, 48)
    converted = meta["outputs"]["frames"]
    assert converted == {"frames/f002.tif": "m/frames/frames/f002.tif.jpg"}
    web = pyvips.Image.new_from_file(str(batch.lab.outputs / converted["frames/f002.tif"]))
    assert (web.width, web.height) == (64, 48)
    assert web.get("vips-loader") == "jpegload"


def test_corrupt_frame_fails_the_sequence_naming_it(batch: Batch) -> None:
    path = f"{MOUNT}/bad-frames"
    job = batch.only_job(path, "images")
    assert job.state == "error"
    assert job.error == "1 of 3 frames cannot be read (first: f002.jpg)"
    assert "f002.jpg" in batch.lab.job(job.id).log_tail
    assert batch.meta(path)["processing"]["images"]["state"] == "error"


def test_bmp_frame_is_converted(sqlite_lab: Lab, media: MediaKit) -> None:
    probe = sqlite_lab.root / "probe.bmp"
    probe.write_bytes(media["frame-bmp"].read_bytes())
    try:
        pyvips.Image.new_from_file(str(probe))
    except pyvips.Error:
        pytest.skip("the libvips of pyvips-binary has no BMP loader (capability gap)")
    sqlite_lab.put("seq/a.bmp", media["frame-bmp"])
    sqlite_lab.add_local_source()
    sqlite_lab.sync()
    sqlite_lab.run("postprocess", "/src", "-r")
    sqlite_lab.worker()
    meta = dict(sqlite_lab.dataset("/src/seq").meta)
    assert meta["outputs"]["frames"] == {"seq/a.bmp": "src/seq/frames/a.bmp.jpg"}


def test_configured_rate_for_variable_rate_video(sqlite_lab: Lab, media: MediaKit) -> None:
    sqlite_lab.cli.env["MEDIAMIRROR_TRANSCODE_VFR_FPS"] = "25"
    sqlite_lab.put("clips/vfr.mp4", media["vfr"])
    sqlite_lab.add_local_source()
    sqlite_lab.sync()
    sqlite_lab.run("postprocess", "/src", "-r")
    sqlite_lab.worker()
    meta = dict(sqlite_lab.dataset("/src/clips/Video vfr.mp4").meta)
    assert meta["processing"]["video"]["state"] == "success", meta["processing"]
    assert meta["transcode"]["action"] == "transcode"
    assert meta["transcode"]["reasons"][0].endswith("made constant at 25 fps")
    assert meta["fps"] == 25 and meta["originalFps"] == meta["probe"]["avg_fps"]
    assert frame_durations(sqlite_lab.outputs / meta["outputs"]["video"]) == {Fraction(1, 25)}


def test_each_settings_object_gets_its_own_processors() -> None:
    """Settings objects come and go (one per API request or test); the processors built
    for one must never be handed to another that happens to reuse its id()."""
    from mediamirror.config import Settings
    from mediamirror.processing.processors import registry

    for n in range(30):
        settings = Settings(sections={"processors": {f"p{n}": {"command": "echo {input}"}}})
        assert f"p{n}" in registry(settings)
        del settings
