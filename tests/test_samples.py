"""The Quick-start sample generator: right media, deterministic, cheap to re-run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import pyvips

from helpers import entry_point
from mediamirror.processing.probe import probe
from mediamirror.processing.pyramid import tiff_compression
from mediamirror.processing.transcode import has_encoder, plan_video
from mediamirror.samples import generate_samples

SMALL = 256  # large_image_px for the fast tests


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    dest = tmp_path_factory.mktemp("samples")
    return dest, generate_samples(dest, large_image_px=SMALL)


def _rel(dest: Path, paths: list[Path]) -> set[str]:
    return {path.relative_to(dest).as_posix() for path in paths}


def test_tree(samples: tuple[Path, list[Path]]) -> None:
    dest, paths = samples
    webm = "videos/clip-vp9.webm" if has_encoder("libvpx-vp9") else None
    expected = {
        "videos/clip-h264.mp4",
        "videos/clip-h264.json",
        "videos/clip-mpeg4.avi",
        "videos/interview/clip-mjpeg.mov",
        "large/slide.tif",
        *(f"frames/frame_{index:04d}.png" for index in range(1, 11)),
    }
    if webm:
        expected.add(webm)
    assert expected <= _rel(dest, paths)
    assert len(paths) == 16
    # Only finished files: no temporary names or scratch folders left behind.
    on_disk = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert on_disk == _rel(dest, paths)
    assert all(not part.startswith(".") for name in on_disk for part in name.split("/"))


def test_h264_clip_is_already_web_ready(samples: tuple[Path, list[Path]]) -> None:
    dest, _ = samples
    result = probe(dest / "videos/clip-h264.mp4")
    assert (result.codec, result.pix_fmt, result.faststart) == ("h264", "yuv420p", True)
    assert (result.width, result.height, result.frames) == (320, 240, 50)
    assert result.has_audio
    assert plan_video(result, -1).action == "keep"


@pytest.mark.parametrize(
    ("relpath", "codec", "has_audio"),
    [
        ("videos/clip-mpeg4.avi", "mpeg4", False),
        ("videos/clip-vp9.webm", "vp9", False),
        ("videos/interview/clip-mjpeg.mov", "mjpeg", True),
    ],
)
def test_other_clips_need_transcoding(
    samples: tuple[Path, list[Path]], relpath: str, codec: str, has_audio: bool
) -> None:
    if codec == "vp9" and not has_encoder("libvpx-vp9"):
        pytest.skip("this ffmpeg has no libvpx-vp9")
    result = probe(samples[0] / relpath)
    assert result.codec == codec
    assert result.has_audio is has_audio
    assert result.duration == pytest.approx(2.0, abs=0.1)
    assert result.width <= 320 and result.height <= 240
    assert plan_video(result, -1).action == "transcode"


def test_frames_and_sidecar(samples: tuple[Path, list[Path]]) -> None:
    dest, _ = samples
    frames = sorted((dest / "frames").iterdir())
    assert len(frames) == 10
    first = pyvips.Image.new_from_file(str(frames[0]))
    assert (first.get("vips-loader"), first.width, first.height) == ("pngload", 320, 240)
    sidecar = json.loads((dest / "videos/clip-h264.json").read_text())
    assert sidecar["tracks"]["1"]["features"][0]["frame"] == 0


def test_large_image_is_uncompressed(samples: tuple[Path, list[Path]]) -> None:
    slide = samples[0] / "large/slide.tif"
    image = pyvips.Image.new_from_file(str(slide))
    assert (image.width, image.height, image.bands, image.format) == (SMALL, SMALL, 3, "uchar")
    assert tiff_compression(slide) == 1  # none
    assert slide.stat().st_size >= SMALL * SMALL * 3
    assert image.max() > image.min()  # a pattern, not a flat image


def test_rerun_creates_nothing(samples: tuple[Path, list[Path]]) -> None:
    dest, paths = samples
    stamps = {path: path.stat().st_mtime_ns for path in paths}
    assert generate_samples(dest, large_image_px=SMALL) == paths
    assert {path: path.stat().st_mtime_ns for path in paths} == stamps


def test_rerun_replaces_a_wrong_sized_slide(samples: tuple[Path, list[Path]]) -> None:
    dest, _ = samples
    generate_samples(dest, large_image_px=SMALL * 2)
    # revalidate: libvips would otherwise answer from its cache of the old file.
    slide = pyvips.Image.new_from_file(str(dest / "large/slide.tif"), revalidate=True)
    assert slide.width == SMALL * 2
    generate_samples(dest, large_image_px=SMALL)  # back, for the other tests' sake


def test_deterministic(samples: tuple[Path, list[Path]], tmp_path: Path) -> None:
    dest, paths = samples
    again = generate_samples(tmp_path, large_image_px=SMALL)
    assert _rel(tmp_path, again) == _rel(dest, paths)
    for path in again:
        assert path.read_bytes() == (dest / path.relative_to(tmp_path)).read_bytes(), path


def test_default_slide_is_over_16_mib(tmp_path: Path) -> None:
    slide = next(p for p in generate_samples(tmp_path) if p.name == "slide.tif")
    assert slide.stat().st_size > 16 * 1024 * 1024
    assert pyvips.Image.new_from_file(str(slide)).width == 4096


def test_demo_processes_every_sample_dataset(tmp_path: Path) -> None:
    """The Quick start's main job, through the real entry point and with the default
    settings (files of a local source are processed only once settled): every dataset the
    demo mirrors is processed, none is left waiting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMIRROR_")}
    env["MEDIAMIRROR_HOME"] = str(tmp_path / "data")
    done = subprocess.run(
        [*entry_point(), "demo", "--no-serve", "--large-image-px", "1024"],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert "wait for files still being written" not in done.stdout, done.stdout
    assert " pending" not in done.stdout, done.stdout
    assert "[video] ready" in done.stdout, done.stdout
