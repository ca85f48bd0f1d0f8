"""Generate the Quick-start sample media: a small tree that exercises every processor.

Everything is synthesised (ffmpeg lavfi sources, pyvips arithmetic), deterministic and fast,
so the README's Quick start needs no downloads::

    videos/clip-h264.mp4            H.264/yuv420p/AAC, faststart: kept as is
    videos/clip-h264.json           a sidecar annotation file
    videos/clip-mpeg4.avi           MPEG-4 part 2: transcoded
    videos/clip-vp9.webm            VP9 (VP8 / MPEG-4 in .mkv if the ffmpeg lacks libvpx-vp9)
    videos/interview/clip-mjpeg.mov Motion JPEG with a PCM tone: transcoded
    frames/frame_0001..0010.png     an image sequence
    large/slide.tif                 an uncompressed strip TIFF, large enough for a pyramid

Every file is written under a temporary name and renamed when complete, so a file that
exists is whole; re-running only creates what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pyvips

from mediamirror.errors import ProcessingError
from mediamirror.processing.transcode import ffmpeg_exe, has_encoder

CLIP_SECONDS = 2
CLIP_SIZE = "320x240"
CLIP_RATE = 25
FRAME_COUNT = 10
# Bit-exact flags and one thread keep the bytes identical from run to run.
DETERMINISTIC = ["-fflags", "+bitexact", "-flags", "+bitexact", "-map_metadata", "-1"]
DETERMINISTIC += ["-threads", "1"]
QUIET = ["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
VIDEO_IN = ["-f", "lavfi", "-i", f"testsrc2=size={CLIP_SIZE}:rate={CLIP_RATE}:d={CLIP_SECONDS}"]
TONE_IN = ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:d={CLIP_SECONDS}"]


def generate_samples(
    dest: Path, *, large_image_px: int = 4096, ffmpeg: str | None = None
) -> list[Path]:
    """Create the sample tree under ``dest`` and return the paths of all its files.

    ``large_image_px`` is the side of the square ``large/slide.tif`` (4096 gives a 48 MiB
    RGB file). ``ffmpeg`` defaults to :func:`~mediamirror.processing.transcode.ffmpeg_exe`.
    """
    exe = ffmpeg or ffmpeg_exe()
    paths = [_clip(dest, relpath, args, exe) for relpath, args in _clip_specs(exe)]
    paths.append(_sidecar(dest / "videos" / "clip-h264.json"))
    paths.extend(_frames(dest / "frames", exe))
    paths.append(_large_image(dest / "large" / "slide.tif", large_image_px))
    return paths


def _clip_specs(ffmpeg: str) -> list[tuple[str, list[str]]]:
    h264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    h264 += ["-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", "-f", "mp4"]
    mjpeg = ["-c:v", "mjpeg", "-q:v", "5", "-pix_fmt", "yuvj420p", "-c:a", "pcm_s16le"]
    return [
        ("videos/clip-h264.mp4", [*VIDEO_IN, *TONE_IN, *h264]),
        ("videos/clip-mpeg4.avi", [*VIDEO_IN, "-c:v", "mpeg4", "-q:v", "5", "-f", "avi"]),
        _webm_spec(ffmpeg),
        ("videos/interview/clip-mjpeg.mov", [*VIDEO_IN, *TONE_IN, *mjpeg, "-f", "mov"]),
    ]


def _webm_spec(ffmpeg: str) -> tuple[str, list[str]]:
    realtime = ["-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k", "-f", "webm"]
    if has_encoder("libvpx-vp9", ffmpeg):
        return "videos/clip-vp9.webm", [*VIDEO_IN, "-c:v", "libvpx-vp9", *realtime]
    if has_encoder("libvpx", ffmpeg):
        return "videos/clip-vp8.webm", [*VIDEO_IN, "-c:v", "libvpx", *realtime]
    return "videos/clip-mpeg4.mkv", [*VIDEO_IN, "-c:v", "mpeg4", "-q:v", "5", "-f", "matroska"]


def _clip(dest: Path, relpath: str, args: list[str], ffmpeg: str) -> Path:
    out = dest / relpath
    if _complete(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_name(out)
    try:
        _run([ffmpeg, *QUIET, *args, *DETERMINISTIC, str(partial)])
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def _frames(folder: Path, ffmpeg: str) -> list[Path]:
    names = [f"frame_{index:04d}.png" for index in range(1, FRAME_COUNT + 1)]
    wanted = [folder / name for name in names]
    if all(_complete(path) for path in wanted):
        return wanted
    folder.mkdir(parents=True, exist_ok=True)
    # Render into a hidden scratch folder next to the target, then move frame by frame.
    scratch = Path(tempfile.mkdtemp(prefix=".frames-", dir=folder.parent))
    try:
        source = ["-f", "lavfi", "-i", f"testsrc=size={CLIP_SIZE}:rate=10"]
        frames = ["-frames:v", str(FRAME_COUNT), "-f", "image2", str(scratch / "frame_%04d.png")]
        _run([ffmpeg, *QUIET, *source, *DETERMINISTIC, *frames])
        for name in names:
            os.replace(scratch / name, folder / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return wanted


def _sidecar(out: Path) -> Path:
    """A DIVE-style annotation file: one box track moving across the clip."""
    last = CLIP_SECONDS * CLIP_RATE - 1
    track = {
        "id": 1,
        "begin": 0,
        "end": last,
        "confidencePairs": [["box", 1.0]],
        "attributes": {},
        "features": [
            {"frame": 0, "bounds": [10, 10, 60, 60], "keyframe": True, "interpolate": True},
            {"frame": last, "bounds": [250, 170, 300, 220], "keyframe": True},
        ],
    }
    text = json.dumps({"version": 2, "tracks": {"1": track}, "groups": {}}, indent=2) + "\n"
    if out.exists() and out.read_text(encoding="utf-8") == text:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_name(out)
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def _large_image(out: Path, side: int) -> Path:
    if _large_image_complete(out, side):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_name(out)
    try:
        _pattern(side).tiffsave(str(partial), compression="none", tile=False)
        os.replace(partial, out)
    except pyvips.Error as exc:
        raise ProcessingError(f"cannot write {out.name}: {exc.message}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return out


def _pattern(side: int) -> pyvips.Image:
    """A smooth RGB image: horizontal and vertical ramps, and a zone plate in blue."""
    coords = pyvips.Image.xyz(side, side)
    red = coords[0] * (255.0 / side)
    green = coords[1] * (255.0 / side)
    blue = (pyvips.Image.zone(side, side) + 1) * 127.5
    return red.bandjoin([green, blue]).cast("uchar").copy(interpretation="srgb")


def _large_image_complete(path: Path, side: int) -> bool:
    if not path.exists() or path.stat().st_size < side * side * 3:
        return False
    try:
        # revalidate: libvips caches opened files by name and would answer for the old file.
        header = pyvips.Image.new_from_file(str(path), revalidate=True)
    except pyvips.Error:
        return False
    return bool(header.width == side and header.height == side and header.bands == 3)


def _complete(path: Path) -> bool:
    # Files are only ever renamed into place when whole, so a non-empty one is complete.
    return path.is_file() and path.stat().st_size > 0


def _partial_name(out: Path) -> Path:
    return out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.part")


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit {result.returncode}"
        raise ProcessingError(f"ffmpeg could not generate a sample: {reason}")
