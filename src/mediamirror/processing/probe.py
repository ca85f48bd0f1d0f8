"""Inspect a video without downloading it.

:func:`probe` reads the container header and index through any seekable binary file (a local
file or a :class:`~mediamirror.processing.rangefile.RangeFile` over a bucket), decodes the
first video frame to prove the stream is usable and to read its display matrix, and walks
the top-level MP4 atoms to learn whether the index (``moov``) precedes the media data
(``mdat``), i.e. whether a browser can start playing before the whole file arrives.

It also measures the frame durations at the start of the stream, because a variable frame
rate breaks "frame N is shown at N / fps", which annotation tools rely on. The timestamps
come from the container's index when it lists every frame (MP4/MOV, AVI: no extra reads),
else from demuxing a bounded number of packets (never decoding them).
"""

from __future__ import annotations

import itertools
import os
import statistics
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import av.error
from av.container import InputContainer
from av.packet import Packet
from av.video.format import VideoFormat
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from mediamirror.errors import MediamirrorError, ProcessingError

# The first decoded frame must come within this many packets; beyond that the stream is
# treated as undecodable rather than reading on through a possibly huge broken file.
MAX_PACKETS_TO_FIRST_FRAME = 64
# Top-level atoms to walk before giving up on finding moov/mdat (fragmented files stop early).
MAX_TOP_LEVEL_ATOMS = 64
# ffmpeg's name for the ISO base media family (mp4, mov, m4v, 3gp...).
MP4_FAMILY = "mov,mp4,m4a,3gp,3g2,mj2"
# Frame timing is measured over the first frames only. An index is already in memory, so
# many entries cost nothing; demuxed packets cost bytes, so they are bounded three ways.
TIMING_INDEX_ENTRIES = 3000
TIMING_PACKETS = 300
TIMING_SECONDS = 10.0
TIMING_BYTES = 4 * 1024 * 1024
# Durations within 1% (or one tick of the time base) of the typical one count as equal:
# timestamps are rounded to the time base (29.97 fps in milliseconds is 33, 34, 33...).
DURATION_TOLERANCE = 0.01


class SeekableReader(Protocol):
    """What probe() needs of a file object: a local file, BytesIO or RangeFile."""

    def read(self, size: int = -1, /) -> bytes | None: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...


@dataclass(frozen=True, slots=True)
class VideoProbe:
    """What a video is made of, as far as playback in a browser is concerned.

    ``rotation`` follows the classic ``rotate`` tag: degrees *clockwise* (0, 90, 180 or 270)
    a player turns the decoded picture to show it upright. ``faststart`` is ``None`` for
    containers outside the MP4 family, where the notion does not apply.

    ``frame_duration_min``/``_max`` (seconds) are measured over the first frames (see
    :data:`TIMING_PACKETS`); ``variable_frame_rate`` says whether those durations differ by
    more than the tolerance, ``None`` when the timestamps could not be measured.
    ``time_base`` is the stream's tick (``"1/15360"``), the precision of its timestamps.
    """

    format_name: str
    codec: str
    width: int
    height: int
    duration: float | None
    frames: int | None
    frames_estimated: bool
    sample_aspect_ratio: str
    pix_fmt: str | None
    avg_fps: float | None
    real_fps: float | None
    bit_depth: int | None
    rotation: int
    has_audio: bool
    audio_codec: str | None
    faststart: bool | None
    profile: str | None = None
    filename: str | None = None
    time_base: str | None = None
    frame_duration_min: float | None = None
    frame_duration_max: float | None = None
    variable_frame_rate: bool | None = None

    @property
    def sar(self) -> Fraction | None:
        """Sample aspect ratio as a fraction; ``None`` when the file does not declare one."""
        num, den = (int(part) for part in self.sample_aspect_ratio.split(":"))
        return Fraction(num, den) if num > 0 and den > 0 else None

    @property
    def native_fps(self) -> float | None:
        """Average frame rate, falling back to the real (base) rate."""
        return self.avg_fps or self.real_fps

    @property
    def is_mp4_family(self) -> bool:
        """Whether the container is ISO base media (mp4/mov/m4v...)."""
        return self.format_name == MP4_FAMILY or "mp4" in self.format_name.split(",")

    def to_metadata(self) -> dict[str, Any]:
        """All fields as a JSON-able dict (snake_case keys, ``None`` for unknown)."""
        return asdict(self)


def probe(
    source: str | os.PathLike[str] | SeekableReader, *, name: str | None = None
) -> VideoProbe:
    """Probe a video file path or an open, seekable binary file object.

    ``name`` (default: the path, or the file object's ``name``) is used for messages and
    recorded as ``filename``; only its extension matters to :func:`~.transcode.plan_video`.
    Raises :class:`~mediamirror.errors.ProcessingError` with a one-line reason when the
    input is empty, not a media file, audio-only, a still image, or has no decodable video.
    Store errors raised by the file object propagate unchanged.
    """
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            with path.open("rb") as fileobj:
                return _probe_fileobj(fileobj, name or path.name)
        except OSError as exc:
            raise ProcessingError(f"{path.name}: cannot open ({exc.strerror or exc})") from exc
    label = name or os.path.basename(str(getattr(source, "name", "") or "")) or None
    return _probe_fileobj(source, label)


def _probe_fileobj(fileobj: SeekableReader, label: str | None) -> VideoProbe:
    shown = label or "input"
    size = fileobj.seek(0, os.SEEK_END)
    if size == 0:
        raise ProcessingError(f"{shown}: empty file (0 bytes)")
    fileobj.seek(0)
    try:
        container = av.open(fileobj, mode="r")
    except MediamirrorError:
        raise
    except (av.error.FFmpegError, EOFError, ValueError) as exc:
        raise ProcessingError(f"{shown}: not a readable media file ({_reason(exc)})") from exc
    try:
        result = _inspect(container, shown, label)
    finally:
        container.close()
    if result.is_mp4_family:
        result = _replace_faststart(result, mp4_faststart(fileobj, size))
    return result


def _inspect(container: InputContainer, shown: str, label: str | None) -> VideoProbe:
    format_name = container.format.name
    if format_name == "image2" or format_name.endswith("_pipe"):
        raise ProcessingError(f"{shown}: a still image ({format_name}), not a video")
    audio = list(container.streams.audio)
    videos = [s for s in container.streams.video if not _is_cover_art(s)]
    if not videos:
        kind = "audio-only file" if audio else "no audio or video streams"
        raise ProcessingError(f"{shown}: no video stream ({kind})")
    stream = videos[0]
    packets = container.demux(stream)
    seen: list[int] = []
    frame = _first_frame(packets, stream, shown, seen)
    timing = _frame_timing(stream, _timestamps(stream, packets, seen))
    ctx = stream.codec_context
    pix_fmt = ctx.pix_fmt or frame.format.name
    avg_fps = _rate(stream.average_rate)
    real_fps = _rate(stream.base_rate) or _rate(stream.guessed_rate)
    duration = _duration(container, stream)
    frames, estimated = _frame_count(stream, duration, avg_fps or real_fps)
    return VideoProbe(
        format_name=format_name,
        codec=ctx.name,
        width=ctx.width or frame.width,
        height=ctx.height or frame.height,
        duration=duration,
        frames=frames,
        frames_estimated=estimated,
        sample_aspect_ratio=_sar_text(stream.sample_aspect_ratio or ctx.sample_aspect_ratio),
        pix_fmt=pix_fmt,
        avg_fps=avg_fps,
        real_fps=real_fps,
        bit_depth=_bit_depth(pix_fmt),
        rotation=_rotation(frame, stream),
        has_audio=bool(audio),
        audio_codec=audio[0].codec_context.name if audio else None,
        faststart=None,
        profile=stream.profile,
        filename=label,
        time_base=_fraction_text(stream.time_base),
        **timing,
    )


def _first_frame(
    packets: Iterator[Packet[VideoStream]], stream: VideoStream, shown: str, seen: list[int]
) -> VideoFrame:
    """Decode the first frame, reading at most a bounded number of packets.

    The timestamps of the packets read go to ``seen``, so that measuring the frame timing
    can go on from there without reading them again.
    """
    # Slice threading adds no frame delay, so the first frame comes out of the first packets.
    stream.thread_type = "SLICE"
    try:
        for count, packet in enumerate(packets):
            _note_timestamp(packet, seen)
            for frame in stream.decode(packet):
                return frame
            if count >= MAX_PACKETS_TO_FIRST_FRAME:
                break
        for frame in stream.decode(None):  # drain decoders that buffer a few packets
            return frame
    except MediamirrorError:
        raise
    except (av.error.FFmpegError, EOFError, ValueError) as exc:
        raise ProcessingError(f"{shown}: video stream is not decodable ({_reason(exc)})") from exc
    raise ProcessingError(f"{shown}: no decodable video frame (truncated or corrupt?)")


def _note_timestamp(packet: Packet[VideoStream], seen: list[int]) -> None:
    stamp = packet.pts if packet.pts is not None else packet.dts
    if stamp is not None and packet.size > 0:  # the flush packet has neither
        seen.append(stamp)


def _timestamps(
    stream: VideoStream, packets: Iterator[Packet[VideoStream]], seen: list[int]
) -> list[int]:
    """Timestamps of the first frames, from the index when it lists every frame."""
    entries = stream.index_entries
    if stream.frames > 0 and len(entries) >= stream.frames:
        return [
            entry.timestamp
            for entry in entries[:TIMING_INDEX_ENTRIES]
            if not entry.is_discard  # edit-list pre-roll: never shown
        ]
    return _demuxed_timestamps(stream, packets, seen)


def _demuxed_timestamps(
    stream: VideoStream, packets: Iterator[Packet[VideoStream]], seen: list[int]
) -> list[int]:
    """Go on demuxing (no decoding) until enough packets, seconds or bytes were read."""
    stamps = list(seen)
    span_limit = TIMING_SECONDS / stream.time_base if stream.time_base else float("inf")
    budget = TIMING_BYTES
    try:
        for packet in packets:
            _note_timestamp(packet, stamps)
            budget -= packet.size
            span = stamps[-1] - stamps[0] if stamps else 0
            if len(stamps) >= TIMING_PACKETS or budget <= 0 or span > span_limit:
                break
    except (av.error.FFmpegError, EOFError, ValueError):
        pass  # damage further on is the transcode's business; time what was read
    return stamps


def _frame_timing(stream: VideoStream, stamps: list[int]) -> dict[str, Any]:
    """Shortest and longest frame duration (s), and whether they vary beyond the tolerance.

    B-frames arrive in decode order, so presentation timestamps are sorted first.
    """
    ordered = sorted(set(stamps))
    durations = [later - earlier for earlier, later in itertools.pairwise(ordered)]
    if len(durations) < 2 or not stream.time_base:
        return {}
    typical = statistics.median(durations)
    tolerance = max(1.0, typical * DURATION_TOLERANCE)  # in ticks
    tick = stream.time_base
    return {
        "frame_duration_min": float(min(durations) * tick),
        "frame_duration_max": float(max(durations) * tick),
        "variable_frame_rate": any(abs(d - typical) > tolerance for d in durations),
    }


def mp4_faststart(fileobj: SeekableReader, size: int) -> bool | None:
    """Whether ``moov`` comes before ``mdat`` among the top-level atoms of an MP4/MOV file.

    Reads only the 8-16 byte atom headers. ``None`` when neither atom is found (not
    ISO media, or a malformed atom size).
    """
    pos = 0
    for _ in range(MAX_TOP_LEVEL_ATOMS):
        if pos + 8 > size:
            return None
        fileobj.seek(pos)
        header = fileobj.read(16) or b""
        if len(header) < 8:
            return None
        atom_size, kind = struct.unpack(">I4s", header[:8])
        if kind == b"moov":
            return True
        if kind == b"mdat":
            return False
        if atom_size == 1 and len(header) == 16:
            atom_size = struct.unpack(">Q", header[8:16])[0]
        if atom_size < 8:  # 0 means "to the end of file": neither atom follows
            return None
        pos += atom_size
    return None


def _replace_faststart(result: VideoProbe, faststart: bool | None) -> VideoProbe:
    fields = asdict(result)
    fields["faststart"] = faststart
    return VideoProbe(**fields)


def _is_cover_art(stream: VideoStream) -> bool:
    # Music files carry album art as a one-picture "video" stream; it is not a video.
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _rate(rate: Fraction | None) -> float | None:
    return float(rate) if rate and rate > 0 else None


def _duration(container: InputContainer, stream: VideoStream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and container.duration > 0:
        return container.duration / av.time_base
    return None


def _frame_count(
    stream: VideoStream, duration: float | None, fps: float | None
) -> tuple[int | None, bool]:
    if stream.frames and stream.frames > 0:
        return stream.frames, False
    if duration and fps:
        return max(1, round(duration * fps)), True
    return None, True


def _fraction_text(value: Fraction | None) -> str | None:
    return f"{value.numerator}/{value.denominator}" if value else None


def _sar_text(sar: Fraction | None) -> str:
    if not sar or sar <= 0:
        return "0:1"  # ffprobe's spelling of "not declared"
    return f"{sar.numerator}:{sar.denominator}"


def _bit_depth(pix_fmt: str | None) -> int | None:
    if not pix_fmt:
        return None
    try:
        components = VideoFormat(pix_fmt).components
    except (ValueError, av.error.FFmpegError):
        return None
    return max((c.bits for c in components), default=None)


def _rotation(frame: VideoFrame, stream: VideoStream) -> int:
    """Clockwise display rotation from the display matrix, else from a ``rotate`` tag."""
    counterclockwise = frame.rotation
    if counterclockwise:
        return round(-counterclockwise) % 360
    tag = stream.metadata.get("rotate", "0")
    try:
        return round(float(tag)) % 360
    except ValueError:
        return 0


def _reason(exc: BaseException) -> str:
    """The library's message without errno noise or file names, on one line."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())
