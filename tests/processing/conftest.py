"""Tiny media generated once per session with the real ffmpeg binary and pyvips.

Each fixture documents the values its file was generated with; the tests assert that
probing / processing finds exactly those values.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import pyvips

from mediamirror.processing.rangefile import RangeFile
from mediamirror.processing.transcode import ffmpeg_exe, has_encoder

QUIET = ["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


class LocalRangeStore:
    """Test-only store: serves ``read_range`` from local files and counts the traffic."""

    scheme = "file"
    bucket = ""
    prefix = ""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[tuple[str, int, int]] = []

    def read_range(self, key: str, start: int, length: int) -> bytes:
        self.calls.append((key, start, length))
        with (self.root / key).open("rb") as fileobj:
            fileobj.seek(start)
            return fileobj.read(length)


def ffmpeg(*args: str) -> None:
    """Run the ffmpeg binary; fail the test session loudly if it cannot make a fixture."""
    result = subprocess.run(
        [ffmpeg_exe(), *QUIET, *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def lavfi(source: str) -> list[str]:
    return ["-f", "lavfi", "-i", source]


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture
def range_file() -> Callable[[Path], RangeFile]:
    """Factory: a RangeFile over a local file, through :class:`LocalRangeStore`."""

    def make(path: Path, **kwargs: int) -> RangeFile:
        store = LocalRangeStore(path.parent)
        return RangeFile(store, path.name, path.stat().st_size, **kwargs)  # type: ignore[arg-type]

    return make


# --- videos -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def h264_faststart(media_dir: Path) -> Path:
    """320x240, 25 fps, 2 s (50 frames), H.264 yuv420p + AAC tone, moov first."""
    out = media_dir / "h264-faststart.mp4"
    ffmpeg(
        *lavfi("testsrc2=size=320x240:rate=25:d=2"),
        *lavfi("sine=frequency=440:d=2"),
        *H264,
        "-c:a",
        "aac",
        "-movflags",
        "+faststart",
        str(out),
    )
    return out


@pytest.fixture(scope="session")
def h264_moov_end(media_dir: Path) -> Path:
    """320x240, 25 fps, 2 s, H.264 yuv420p, no audio, moov after mdat."""
    out = media_dir / "h264-moov-end.mp4"
    ffmpeg(*lavfi("testsrc2=size=320x240:rate=25:d=2"), *H264, str(out))
    return out


@pytest.fixture(scope="session")
def mpeg4_avi(media_dir: Path) -> Path:
    """176x144, 15 fps, 2 s (30 frames), MPEG-4 part 2 in AVI."""
    out = media_dir / "mpeg4.avi"
    ffmpeg(*lavfi("testsrc2=size=176x144:rate=15:d=2"), "-c:v", "mpeg4", "-q:v", "5", str(out))
    return out


@pytest.fixture(scope="session")
def webm(media_dir: Path) -> tuple[Path, str]:
    """160x120, 30 fps, 1 s, VP9 (or VP8) in WebM; returns the path and the codec name."""
    out = media_dir / "clip.webm"
    encoder, codec = ("libvpx-vp9", "vp9") if has_encoder("libvpx-vp9") else ("libvpx", "vp8")
    if not has_encoder(encoder):
        pytest.skip("this ffmpeg has no libvpx encoder")
    ffmpeg(
        *lavfi("testsrc2=size=160x120:rate=30:d=1"),
        "-c:v",
        encoder,
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        str(out),
    )
    return out, codec


@pytest.fixture(scope="session")
def anamorphic(media_dir: Path) -> Path:
    """160x120 stored with SAR 4:3 (displays as 213x120), H.264 yuv420p, 25 fps, 1 s."""
    out = media_dir / "anamorphic.mp4"
    ffmpeg(*lavfi("testsrc2=size=160x120:rate=25:d=1"), "-vf", "setsar=4/3", *H264, str(out))
    return out


@pytest.fixture(scope="session")
def odd_size(media_dir: Path) -> Path:
    """321x241 (odd), H.264 4:4:4 (4:2:0 cannot be odd-sized), 25 fps, 1 s."""
    out = media_dir / "odd-size.mp4"
    ffmpeg(
        *lavfi("testsrc=size=321x241:rate=25:d=1"),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv444p",
        str(out),
    )
    return out


@pytest.fixture(scope="session")
def ten_bit(media_dir: Path) -> Path:
    """160x120 H.264 High 10 (yuv420p10le), 25 fps, 1 s; skipped if x264 lacks 10-bit."""
    out = media_dir / "ten-bit.mp4"
    result = subprocess.run(
        [
            ffmpeg_exe(),
            *QUIET,
            *lavfi("testsrc2=size=160x120:rate=25:d=1"),
            *["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le", str(out)],
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"libx264 of this ffmpeg cannot encode 10-bit: {result.stderr.strip()}")
    return out


@pytest.fixture(scope="session")
def rotated(media_dir: Path) -> Path:
    """320x240 H.264 whose display matrix says "turn 90 degrees clockwise" (rotate=90)."""
    plain = media_dir / "rotated-src.mp4"
    ffmpeg(*lavfi("testsrc2=size=320x240:rate=25:d=1"), *H264, str(plain))
    out = media_dir / "rotated.mp4"
    # A display matrix of -90 (counterclockwise) is what the old "rotate=90" tag became.
    ffmpeg("-display_rotation:v:0", "-90", "-i", str(plain), "-c", "copy", str(out))
    return out


@pytest.fixture(scope="session")
def audio_only(media_dir: Path) -> Path:
    out = media_dir / "audio-only.m4a"
    ffmpeg(*lavfi("sine=frequency=440:d=1"), "-c:a", "aac", str(out))
    return out


@pytest.fixture(scope="session")
def single_frame(media_dir: Path) -> Path:
    """One 160x120 H.264 frame."""
    out = media_dir / "single-frame.mp4"
    ffmpeg(*lavfi("testsrc2=size=160x120:rate=25"), "-frames:v", "1", *H264, str(out))
    return out


@pytest.fixture(scope="session")
def variable_rate(media_dir: Path) -> Path:
    """30 fps for the first second, then every third frame (10 fps): avg != real rate."""
    out = media_dir / "vfr.mp4"
    ffmpeg(
        *lavfi("testsrc2=size=160x120:rate=30:d=2"),
        "-vf",
        "select='lt(n\\,30)+not(mod(n\\,3))'",
        "-fps_mode",
        "vfr",
        *H264,
        str(out),
    )
    return out


# Timestamps of the reported file: 30 frames 1/30 s apart, then frames 2/30 s apart.
REPORTED_VFR = ["-vf", "setpts='if(lt(N,30),N,30+(N-30)*2)/(30*TB)'", "-fps_mode", "passthrough"]


@pytest.fixture(scope="session")
def vfr_h264(media_dir: Path) -> Path:
    """160x120 H.264 yuv420p MP4, moov first, no audio: web-ready but for its timing.

    60 frames: 30 at 1/30 s, then 30 at 2/30 s (3 s, 20 fps on average, real rate 30).
    """
    out = media_dir / "vfr-h264.mp4"
    ffmpeg(
        *lavfi("testsrc2=size=160x120:rate=30:d=2"),
        *REPORTED_VFR,
        *H264,
        "-movflags",
        "+faststart",
        str(out),
    )
    return out


@pytest.fixture(scope="session", params=["mov", "mkv"])
def vfr_other_container(request: pytest.FixtureRequest, vfr_h264: Path) -> Path:
    """The same stream copied into a container a remux would fix (MOV: timestamps from its
    index; Matroska: no frame index, timestamps in milliseconds, read by demuxing)."""
    out = vfr_h264.with_name(f"vfr-h264.{request.param}")
    ffmpeg("-i", str(vfr_h264), "-c", "copy", str(out))
    return out


@pytest.fixture(scope="session")
def bframes_mkv(media_dir: Path) -> Path:
    """160x120 H.264 with 3 B-frames, 25 fps, 2 s, in Matroska: packets arrive out of
    presentation order (0, 160, 80, 40... ms) at a constant rate."""
    out = media_dir / "bframes.mkv"
    ffmpeg(*lavfi("testsrc2=size=160x120:rate=25:d=2"), *H264, "-bf", "3", str(out))
    return out


@pytest.fixture(scope="session")
def large_video_mkv(media_dir: Path, large_video: Path) -> Path:
    """The ~20 MB lossless-noise video in Matroska, which has no per-frame index."""
    out = media_dir / "large.mkv"
    ffmpeg("-i", str(large_video), "-c", "copy", str(out))
    return out


@pytest.fixture(scope="session")
def zero_bytes(media_dir: Path) -> Path:
    out = media_dir / "empty.mp4"
    out.write_bytes(b"")
    return out


@pytest.fixture(scope="session")
def text_as_mp4(media_dir: Path) -> Path:
    out = media_dir / "notes.mp4"
    out.write_text("these are meeting notes, not a video\n" * 20)
    return out


@pytest.fixture(scope="session")
def truncated_no_index(media_dir: Path, h264_moov_end: Path) -> Path:
    """The first 4 KiB of a moov-at-end file: no index at all."""
    out = media_dir / "truncated-no-index.mp4"
    out.write_bytes(h264_moov_end.read_bytes()[:4096])
    return out


@pytest.fixture(scope="session")
def truncated_no_frames(media_dir: Path, h264_faststart: Path) -> Path:
    """A faststart file cut right after its index: streams are declared, no frame data."""
    data = h264_faststart.read_bytes()
    mdat = data.index(b"mdat")
    out = media_dir / "truncated-no-frames.mp4"
    out.write_bytes(data[: mdat + 4])
    return out


@pytest.fixture(scope="session")
def large_video(media_dir: Path) -> Path:
    """~20 MB of incompressible H.264 (lossless noise), 640x360, 25 fps, moov at end."""
    out = media_dir / "large.mp4"
    ffmpeg(
        *lavfi("color=size=640x360:rate=25:d=1.6,noise=alls=100:allf=t"),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-qp",
        "0",
        "-pix_fmt",
        "yuv420p",
        str(out),
    )
    return out


@pytest.fixture(scope="session")
def large_video_faststart(media_dir: Path, large_video: Path) -> Path:
    out = media_dir / "large-faststart.mp4"
    ffmpeg("-i", str(large_video), "-c", "copy", "-movflags", "+faststart", str(out))
    return out


# --- images -------------------------------------------------------------------------------


def gradient(width: int, height: int, bands: int = 3) -> pyvips.Image:
    """A smooth deterministic uchar image with ``bands`` bands."""
    xy = pyvips.Image.xyz(width, height)
    base = (xy[0] * (255 / width) + xy[1] * (255 / height)) / 2
    planes = [base, xy[0] * (255 / width), xy[1] * (255 / height), base * 0 + 255][:bands]
    image = planes[0].bandjoin(planes[1:]) if bands > 1 else planes[0]
    interpretation = "srgb" if bands >= 3 else "b-w"
    return image.cast("uchar").copy(interpretation=interpretation)


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="session")
def jpg_image(image_dir: Path) -> Path:
    """1000x700 RGB JPEG."""
    out = image_dir / "photo.jpg"
    gradient(1000, 700).jpegsave(str(out), Q=85)
    return out


@pytest.fixture(scope="session")
def png_image(image_dir: Path) -> Path:
    """1000x700 RGB PNG."""
    out = image_dir / "drawing.png"
    gradient(1000, 700).pngsave(str(out))
    return out


@pytest.fixture(scope="session")
def png16_image(image_dir: Path) -> Path:
    """300x200 RGB PNG with 16-bit samples."""
    out = image_dir / "deep.png"
    deep = (gradient(300, 200).cast("ushort") * 257).cast("ushort").copy(interpretation="rgb16")
    deep.pngsave(str(out), bitdepth=16)
    return out


@pytest.fixture(scope="session")
def rgba_png(image_dir: Path) -> Path:
    """300x200 RGBA PNG, left half fully transparent."""
    out = image_dir / "cutout.png"
    rgb = gradient(300, 200)
    alpha = (pyvips.Image.xyz(300, 200)[0] >= 150).ifthenelse(255, 0).cast("uchar")
    rgb.bandjoin(alpha).copy(interpretation="srgb").pngsave(str(out))
    return out


@pytest.fixture(scope="session")
def tif_image(image_dir: Path) -> Path:
    """640x480 RGB uncompressed strip TIFF."""
    out = image_dir / "scan.tif"
    gradient(640, 480).tiffsave(str(out), compression="none")
    return out


@pytest.fixture(scope="session")
def jpeg_tif_image(image_dir: Path) -> Path:
    """640x480 RGB TIFF with JPEG compression (like a slide scanner's output)."""
    out = image_dir / "slide-jpeg.tif"
    gradient(640, 480).tiffsave(str(out), compression="jpeg", Q=85, tile=True)
    return out


@pytest.fixture(scope="session")
def corrupt_jpg(image_dir: Path, jpg_image: Path) -> Path:
    """A JPEG cut off after 3 KiB: the header is fine, the pixels are not."""
    out = image_dir / "broken.jpg"
    out.write_bytes(jpg_image.read_bytes()[:3072])
    return out


@pytest.fixture(scope="session")
def text_as_jpg(image_dir: Path) -> Path:
    out = image_dir / "readme.jpg"
    out.write_text("not an image\n")
    return out
