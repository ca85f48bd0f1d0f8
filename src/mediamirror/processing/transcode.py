"""Decide how to make a video browser-playable, and do it with ffmpeg.

:func:`plan_video` applies DIVE's rules to a :class:`~.probe.VideoProbe`: keep the original
when it already is H.264/yuv420p/square-pixel MP4 with ``moov`` first, *remux* (copy the
streams into a fresh faststart MP4) when only the container is wrong, and *transcode*
otherwise. :func:`build_ffmpeg_command` turns a plan into an ffmpeg command line and
:func:`run_ffmpeg` runs it with progress, cancellation and a timeout.
:func:`transcode_video` puts the three together and publishes the output atomically.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import IO, Literal

from mediamirror.errors import ProcessingError, TransientProcessingError
from mediamirror.processing.children import spawn, stop_group
from mediamirror.processing.failures import ffmpeg_failure
from mediamirror.processing.probe import VideoProbe

Action = Literal["keep", "remux", "transcode"]

DEFAULT_PRESET = "medium"
DEFAULT_CRF = 22
# Keep pixels square and dimensions even (yuv420p needs even sizes): stretch the width by
# the sample aspect ratio, as DIVE does. The scale filter treats an undeclared SAR as 1.
SQUARE_EVEN_SCALE = "scale=trunc(iw*sar/2)*2:trunc(ih/2)*2,setsar=1"
MP4_EXTENSIONS = frozenset({".mp4", ".m4v"})
# Audio codecs that an MP4 can carry and browsers play; anything else is re-encoded to AAC.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3"})
STDERR_TAIL_LINES = 50
# ffmpeg's closing lines that say nothing about the cause of a failure.
GENERIC_STDERR = ("Conversion failed!", "Exiting normally", "Error opening output files")
# Presigned URLs carry their signature in the query string: never log it.
# (A trailing ":" or "," is ffmpeg's punctuation, not part of the URL.)
URL_QUERY = re.compile(
    r"(\b[a-z][a-z0-9+.-]*://[^\s?'\"]*)\?(?:[^\s'\"]*[^\s'\":,])?", re.IGNORECASE
)
# Frame rates cameras and editors produce: a measured rate this close to one of them is it.
STANDARD_RATES = (24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 48.0, 50.0, 60000 / 1001, 60.0)
RATE_TOLERANCE = 0.01
# A variable-rate source is made constant at the rate of its shortest frame; two frames a
# millisecond apart must not turn a clip into a 1000 fps one (configure a rate for more).
MAX_AUTO_CONSTANT_FPS = 120.0
STOP_GRACE_SECONDS = 2.0
POLL_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class VideoPlan:
    """What to do with one video, and the frame rates to record in its metadata.

    ``fps`` is the annotation frame rate (``min(requested, native)``, or native when none was
    requested) and ``original_fps`` the native rate. The transcode keeps the source's timing
    (no frame dropping), as DIVE does, so frame numbers stay comparable with the original.

    A source whose frame durations vary cannot keep its timing: "frame N at N / fps" would
    drift from the picture. ``constant_fps`` is then the rate the transcode makes every frame
    last (frames are repeated, never merged, at the default rate), and ``fps`` derives from
    it instead of the native (average) rate. ``None`` keeps the source's timing.
    """

    action: Action
    fps: float
    original_fps: float
    reasons: tuple[str, ...]
    has_audio: bool
    copy_audio: bool
    duration: float | None
    constant_fps: float | None = None


def plan_video(
    probe: VideoProbe,
    requested_fps: float,
    *,
    filename: str | None = None,
    vfr_fps: float = 0.0,
) -> VideoPlan:
    """Decide keep / remux / transcode for ``probe`` and settle the frame rate.

    ``requested_fps`` <= 0 (DIVE's ``-1``) means "the native rate". ``filename`` overrides
    ``probe.filename``; only its extension is used (a kept original must be ``.mp4``/``.m4v``).
    A variable frame rate is always transcoded, to ``vfr_fps`` when it is > 0, else to the
    stream's real rate (see :func:`constant_rate`).
    """
    constant = constant_rate(probe, vfr_fps) if probe.variable_frame_rate else None
    stream_problems = _stream_problems(probe) + _timing_problems(probe, constant)
    container_problems = _container_problems(probe, filename or probe.filename or "")
    if stream_problems:
        action: Action = "transcode"
    elif container_problems:
        action = "remux"
    else:
        action = "keep"
    fps, original = _frame_rates(probe, requested_fps, constant)
    return VideoPlan(
        action=action,
        fps=fps,
        original_fps=original,
        reasons=tuple(stream_problems + container_problems),
        has_audio=probe.has_audio,
        copy_audio=probe.audio_codec in MP4_AUDIO_CODECS,
        duration=probe.duration,
        constant_fps=constant,
    )


def constant_rate(probe: VideoProbe, configured: float = 0.0) -> float:
    """The constant rate for a variable-rate stream: ``configured`` when > 0, else its real rate.

    The real rate gives the shortest frame seen its own slot, so no frame is dropped. It is
    the container's ``real_fps`` guess when that agrees with the shortest duration, else the
    closest standard rate, else the measured one, within a tick or 1% (timestamps are rounded
    to the time base), and at most :data:`MAX_AUTO_CONSTANT_FPS`.
    """
    if configured > 0:
        return configured
    shortest = probe.frame_duration_min
    if not shortest:
        raise ProcessingError("cannot determine the video's frame rate")
    tick = float(Fraction(probe.time_base)) if probe.time_base else 0.0
    tolerance = max(tick, shortest * RATE_TOLERANCE)

    def fits(rate: float) -> bool:
        return abs(1 / rate - shortest) <= tolerance

    closest = min(STANDARD_RATES, key=lambda rate: abs(1 / rate - shortest))
    if probe.real_fps and fits(probe.real_fps):
        rate = probe.real_fps
    elif fits(closest):
        rate = closest
    else:
        rate = round(1 / shortest, 3)
    return min(rate, MAX_AUTO_CONSTANT_FPS)


def _timing_problems(probe: VideoProbe, constant: float | None) -> list[str]:
    if constant is None or probe.frame_duration_min is None:
        return []
    shortest, longest = probe.frame_duration_min * 1000, (probe.frame_duration_max or 0) * 1000
    return [
        f"variable frame rate (frame durations {shortest:.1f}\u2013{longest:.1f} ms): "
        f"made constant at {constant:g} fps"
    ]


def _stream_problems(probe: VideoProbe) -> list[str]:
    problems = []
    if probe.codec != "h264":
        problems.append(f"codec {probe.codec} is not h264")
    if probe.pix_fmt != "yuv420p":
        problems.append(f"pixel format {probe.pix_fmt} is not yuv420p")
    if probe.sar not in (None, 1):
        problems.append(f"non-square pixels (SAR {probe.sample_aspect_ratio})")
    if probe.rotation:
        # Players disagree about display matrices; only re-encoding bakes the turn in.
        problems.append(f"rotated {probe.rotation} degrees")
    return problems


def _container_problems(probe: VideoProbe, filename: str) -> list[str]:
    extension = Path(filename).suffix.lower()
    if not probe.is_mp4_family or extension not in MP4_EXTENSIONS:
        return [f"container {probe.format_name} ({extension or 'no extension'}) is not mp4"]
    if not probe.faststart:
        return ["moov atom is not before mdat (not faststart)"]
    return []


def _frame_rates(
    probe: VideoProbe, requested_fps: float, constant: float | None
) -> tuple[float, float]:
    """(annotation rate, original rate): the annotation rate never exceeds the playable one."""
    native = probe.native_fps or constant
    if native is None:
        if requested_fps > 0:
            return requested_fps, requested_fps
        raise ProcessingError("cannot determine the video's frame rate")
    playable = constant or native
    if requested_fps <= 0:
        return playable, native
    return min(requested_fps, playable), native


def build_ffmpeg_command(
    input: str,
    output: str,
    plan: VideoPlan,
    ffmpeg: str,
    *,
    preset: str = DEFAULT_PRESET,
    crf: int = DEFAULT_CRF,
    progress_period: float | None = None,
    read_timeout: float | None = None,
) -> list[str]:
    """The ffmpeg command that carries out ``plan`` (``remux`` or ``transcode``).

    The output is always MP4 (``-f mp4``, so temporary names without ``.mp4`` work) with
    ``+faststart``; progress goes to stdout (``-progress pipe:1``) for :func:`run_ffmpeg`.
    ``progress_period`` sets ffmpeg's ``-stats_period`` (seconds between progress reports).
    ``read_timeout`` bounds each network read of an http(s) input (see :func:`input_args`).
    """
    if plan.action == "keep":
        raise ValueError("the plan keeps the original: there is nothing to run")
    command = [ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "warning", "-nostats"]
    command += ["-progress", "pipe:1"]
    if progress_period is not None:
        command += ["-stats_period", f"{progress_period:g}"]
    command += [*input_args(input, read_timeout), "-map", "0:v:0"]
    if plan.has_audio:
        command += ["-map", "0:a:0"]
    if plan.action == "remux":
        command += ["-c:v", "copy"]
    else:
        command += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf)]
        # Limited (TV) range: ffmpeg 7.1+ keeps a full-range source (Motion JPEG's
        # yuvj420p) full range, which decoders report as yuvj420p, not web-ready.
        command += ["-pix_fmt", "yuv420p", "-color_range", "tv", "-vf", _video_filters(plan)]
    if plan.has_audio:
        keep_audio = plan.action == "remux" and plan.copy_audio
        command += ["-c:a", "copy"] if keep_audio else ["-c:a", "aac", "-b:a", "160k"]
    command += ["-movflags", "+faststart", "-f", "mp4", output]
    return command


def input_args(input: str, read_timeout: float | None) -> list[str]:
    """``-i input``, preceded for an http(s) URL by ``-rw_timeout`` (microseconds).

    Without it ffmpeg waits forever on a store that stops answering mid-read, so a stall
    lasted until the job's timeout (an hour by default); with it the read fails after
    ``read_timeout`` seconds (the ``store_read_timeout`` setting, as for every other store
    request), ffmpeg exits with "timed out" and the job is retried soon."""
    if read_timeout and input.startswith(("http://", "https://")):
        return ["-rw_timeout", str(max(1, round(read_timeout * 1_000_000))), "-i", input]
    return ["-i", input]


def _video_filters(plan: VideoPlan) -> str:
    if plan.constant_fps is None:
        return SQUARE_EVEN_SCALE
    # The fps filter (in every ffmpeg build, unlike -fps_mode) repeats or drops frames onto
    # a constant grid; it runs before scaling so dropped frames are never scaled.
    return f"fps={_rate_text(plan.constant_fps)},{SQUARE_EVEN_SCALE}"


def _rate_text(fps: float) -> str:
    """A rate as ffmpeg's exact fraction: 29.97002997 is 30000/1001, not 29.97."""
    rate = Fraction(fps).limit_denominator(1001)
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def run_ffmpeg(
    cmd: list[str],
    duration_s: float | None,
    on_progress: Callable[[float], None],
    cancel: threading.Event | None = None,
    timeout: float | None = None,
    log: Callable[[str], None] | None = None,
) -> None:
    """Run an ffmpeg command, reporting progress in percent (0-100, never decreasing).

    Callbacks run on the calling thread. ``on_progress`` ends with 100 on success; every
    stderr line goes to ``log``, with URL query strings (presigned signatures) redacted.
    When ``cancel`` is set or ``timeout`` seconds pass, ffmpeg is terminated (then killed
    after a grace period) and ``ProcessingError("canceled")`` or
    ``TransientProcessingError("timed out after N s")`` is raised. A non-zero exit raises
    ``ProcessingError`` with ffmpeg's last meaningful stderr line.
    """
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    try:
        # In its own process group, which ends with the worker: see processing/children.py.
        proc = spawn(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise ProcessingError(f"cannot start {cmd[0]}: {exc.strerror or exc}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [_pump(proc.stdout, "out", events), _pump(proc.stderr, "err", events)]
    progress = _Progress(duration_s, on_progress)
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while proc.poll() is None or any(p.is_alive() for p in pumps) or not events.empty():
            _handle_events(events, progress, tail, log)
            if cancel is not None and cancel.is_set():
                _stop(proc)
                raise ProcessingError("canceled")
            if deadline is not None and time.monotonic() > deadline:
                _stop(proc)
                raise TransientProcessingError(f"timed out after {timeout:g} s")
    finally:
        if proc.poll() is None:  # an exception from a callback: do not leave ffmpeg behind
            _stop(proc)
        for pump in pumps:  # ffmpeg is gone, so its pipes reach EOF promptly
            pump.join(timeout=STOP_GRACE_SECONDS)
        proc.stdout.close()
        proc.stderr.close()
    if proc.returncode != 0:
        raise ffmpeg_failure(cmd, proc.returncode, _last_reason(tail))
    progress.finish()


def _pump(stream: IO[str], kind: str, events: queue.Queue[tuple[str, str]]) -> threading.Thread:
    """Forward lines of a pipe to ``events`` from a daemon thread."""

    def forward() -> None:
        try:
            for line in stream:
                events.put((kind, line.rstrip("\r\n")))
        except (OSError, ValueError):  # pipe closed under us after a stop: nothing to add
            return

    thread = threading.Thread(target=forward, name=f"ffmpeg-{kind}", daemon=True)
    thread.start()
    return thread


def _handle_events(
    events: queue.Queue[tuple[str, str]],
    progress: _Progress,
    tail: deque[str],
    log: Callable[[str], None] | None,
) -> None:
    """Process what arrived within one poll interval."""
    try:
        kind, line = events.get(timeout=POLL_SECONDS)
    except queue.Empty:
        return
    while True:
        if kind == "out":
            progress.feed(line)
        else:
            line = redact_urls(line)
            tail.append(line)
            if log is not None:
                log(line)
        try:
            kind, line = events.get_nowait()
        except queue.Empty:
            return


class _Progress:
    """Turns ``-progress`` key=value lines into monotonic percentages."""

    def __init__(self, duration_s: float | None, callback: Callable[[float], None]) -> None:
        self.duration_us = duration_s * 1e6 if duration_s and duration_s > 0 else None
        self.callback = callback
        self.percent = -1.0

    def feed(self, line: str) -> None:
        key, _, value = line.partition("=")
        if key == "progress" and value.strip() == "end":
            self.finish()
        elif key in ("out_time_us", "out_time_ms") and self.duration_us:
            # ffmpeg's out_time_ms is in microseconds too (a long-standing quirk).
            try:
                elapsed = int(value)
            except ValueError:  # "N/A" before the first frame
                return
            # 100 is reserved for progress=end: the muxer still has work after the last frame.
            self._report(min(99.9, max(0.0, elapsed / self.duration_us * 100)))

    def finish(self) -> None:
        self._report(100.0)

    def _report(self, percent: float) -> None:
        percent = round(percent, 1)
        if percent > self.percent:
            self.percent = percent
            self.callback(percent)


def redact_urls(text: str) -> str:
    """Replace the query string of every URL in ``text`` (presigned-URL signatures)."""
    return URL_QUERY.sub(r"\1?<redacted>", text)


def _stop(proc: subprocess.Popen[str]) -> None:
    """Ask ffmpeg to stop (it closes its output on SIGTERM), then insist."""
    stop_group(proc, STOP_GRACE_SECONDS)


def _last_reason(lines: Iterable[str]) -> str:
    for line in reversed(list(lines)):
        text = line.strip()
        if text and not text.startswith(GENERIC_STDERR):
            return text[:300]
    return "no error message"


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """ffmpeg on PATH if there is one, else the binary shipped with imageio-ffmpeg."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg  # imported late: only needed when no system ffmpeg exists

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def has_encoder(name: str, ffmpeg: str | None = None) -> bool:
    """Whether the ffmpeg build offers encoder ``name`` (e.g. ``libvpx-vp9``)."""
    return name in _encoders(ffmpeg or ffmpeg_exe())


@lru_cache(maxsize=4)
def _encoders(ffmpeg: str) -> frozenset[str]:
    result = subprocess.run(
        [ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, check=False
    )
    names = set()
    for line in result.stdout.splitlines():
        parts = line.split()
        # Encoder lines look like " V....D libx264   libx264 H.264 ..."
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS":
            names.add(parts[1])
    return frozenset(names)


def transcode_video(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    plan: VideoPlan,
    *,
    ffmpeg: str | None = None,
    preset: str = DEFAULT_PRESET,
    crf: int = DEFAULT_CRF,
    on_progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
    timeout: float | None = None,
    log: Callable[[str], None] | None = None,
    read_timeout: float | None = None,
) -> VideoPlan:
    """Carry out ``plan`` from a local file to ``output``, which appears only when complete.

    ffmpeg writes to a hidden temporary name next to ``output`` that is renamed at the end
    and removed on failure. A remux that ffmpeg rejects (e.g. H.264 in AVI without
    timestamps) is retried once as a full transcode. Returns the plan actually carried out.
    """
    out = Path(output)
    partial = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.part")
    exe = ffmpeg or ffmpeg_exe()

    def attempt(current: VideoPlan) -> None:
        cmd = build_ffmpeg_command(
            str(input),
            str(partial),
            current,
            exe,
            preset=preset,
            crf=crf,
            read_timeout=read_timeout,
        )
        run_ffmpeg(cmd, current.duration, on_progress or _ignore, cancel, timeout, log)

    try:
        try:
            attempt(plan)
        except TransientProcessingError:
            raise
        except ProcessingError as exc:
            if plan.action != "remux" or str(exc) == "canceled":
                raise
            if log is not None:
                log(f"remux failed ({exc}); transcoding instead")
            plan = replace(plan, action="transcode")
            attempt(plan)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return plan


def make_poster(
    input: str | os.PathLike[str],
    output_jpg: str | os.PathLike[str],
    at_seconds: float,
    *,
    ffmpeg: str | None = None,
    max_width: int = 640,
    timeout: float = 120,
    read_timeout: float | None = None,
) -> None:
    """Write one frame of ``input`` as a JPEG at most ``max_width`` wide (square pixels).

    Falls back to the first frame when ``at_seconds`` is past the end of the video.
    """
    out = Path(output_jpg)
    partial = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.part")
    exe = ffmpeg or ffmpeg_exe()
    scale = f"scale=trunc(iw*sar/2)*2:ih,setsar=1,scale='min({max_width},iw)':-2"
    seeks = [0.0] if at_seconds <= 0 else [at_seconds, 0.0]  # the asked time, then start
    try:
        for seek in seeks:
            cmd = [exe, "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
            cmd += ["-ss", f"{seek:.3f}", *input_args(str(input), read_timeout)]
            cmd += ["-map", "0:v:0", "-frames:v", "1"]
            cmd += ["-vf", scale, "-c:v", "mjpeg", "-q:v", "3", "-f", "image2", "-update", "1"]
            cmd += [str(partial)]
            try:
                _run_quick(cmd, timeout)
            except TransientProcessingError:
                raise
            except ProcessingError:
                if seek == 0:
                    raise
                continue  # past the end: ffmpeg writes nothing and fails; try the start
            if partial.exists() and partial.stat().st_size > 0:
                os.replace(partial, out)
                return
        raise ProcessingError(f"{Path(input).name}: no frame to make a poster from")
    finally:
        partial.unlink(missing_ok=True)


def _run_quick(cmd: list[str], timeout: float) -> None:
    """Run a short ffmpeg command, translating failures into ProcessingError."""
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, errors="replace", timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise TransientProcessingError(f"timed out after {timeout:g} s") from exc
    except OSError as exc:
        raise ProcessingError(f"cannot start {cmd[0]}: {exc.strerror or exc}") from exc
    if result.returncode != 0:
        reason = redact_urls(_last_reason(result.stderr.splitlines()))
        raise ffmpeg_failure(cmd, result.returncode, reason)


def _ignore(_: float) -> None:
    return None
