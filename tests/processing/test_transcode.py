"""Planning, command building and running ffmpeg for real on generated media."""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import psutil
import pytest
import pyvips

from mediamirror.errors import ProcessingError, TransientProcessingError
from mediamirror.processing.probe import probe
from mediamirror.processing.transcode import (
    VideoPlan,
    build_ffmpeg_command,
    constant_rate,
    ffmpeg_exe,
    has_encoder,
    make_poster,
    plan_video,
    run_ffmpeg,
    transcode_video,
)

from .conftest import H264, ffmpeg, lavfi

FAST = "ultrafast"


# --- plan_video ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "action", "reason"),
    [
        ("h264_faststart", "keep", None),
        ("single_frame", "remux", "faststart"),
        ("h264_moov_end", "remux", "faststart"),
        ("mpeg4_avi", "transcode", "codec mpeg4"),
        ("anamorphic", "transcode", "SAR 4:3"),
        ("odd_size", "transcode", "yuv444p"),
        ("ten_bit", "transcode", "yuv420p10le"),
        ("rotated", "transcode", "rotated 90"),
        ("vfr_h264", "transcode", "variable frame rate"),
        ("bframes_mkv", "remux", "container"),
    ],
)
def test_plan_action(
    fixture: str, action: str, reason: str | None, request: pytest.FixtureRequest
) -> None:
    plan = plan_video(probe(request.getfixturevalue(fixture)), -1)
    assert plan.action == action
    if reason is None:
        assert plan.reasons == ()
    else:
        assert any(reason in text for text in plan.reasons), plan.reasons


def test_plan_webm_transcodes(webm: tuple[Path, str]) -> None:
    plan = plan_video(probe(webm[0]), -1)
    assert plan.action == "transcode"


def test_h264_faststart_in_other_extension_is_remuxed(h264_faststart: Path) -> None:
    result = probe(h264_faststart)
    assert plan_video(result, -1, filename="clip.mov").action == "remux"
    assert plan_video(result, -1, filename="clip.M4V").action == "keep"


def test_unknown_sar_counts_as_square(h264_faststart: Path) -> None:
    result = dataclasses.replace(probe(h264_faststart), sample_aspect_ratio="0:1")
    assert plan_video(result, -1).action == "keep"


def test_remux_copies_aac_but_reencodes_other_audio(h264_faststart: Path) -> None:
    result = dataclasses.replace(probe(h264_faststart), faststart=False)
    assert plan_video(result, -1).copy_audio is True
    pcm = dataclasses.replace(result, audio_codec="pcm_s16le")
    command = build_ffmpeg_command("in", "out", plan_video(pcm, -1), "ffmpeg")
    assert command[command.index("-c:a") + 1] == "aac"
    assert command[command.index("-c:v") + 1] == "copy"


@pytest.mark.parametrize(
    ("requested", "fps"), [(-1, 25.0), (0, 25.0), (10, 10.0), (25, 25.0), (60, 25.0)]
)
def test_plan_fps(h264_faststart: Path, requested: float, fps: float) -> None:
    plan = plan_video(probe(h264_faststart), requested)
    assert plan.fps == pytest.approx(fps)
    assert plan.original_fps == pytest.approx(25.0)


def test_variable_rate_is_made_constant_at_the_real_rate(vfr_h264: Path) -> None:
    result = probe(vfr_h264)
    plan = plan_video(result, -1)
    # Web-ready in every other respect: the timing alone makes it a transcode.
    assert plan.action == "transcode"
    assert plan.reasons == (
        "variable frame rate (frame durations 33.3\u201366.7 ms): made constant at 30 fps",
    )
    assert plan.constant_fps == pytest.approx(30.0)
    assert plan.fps == pytest.approx(30.0)
    assert plan.original_fps == result.avg_fps  # the source's own figure is kept


def test_select_filtered_variable_rate_is_made_constant(variable_rate: Path) -> None:
    # 30 fps for a second, then every third frame: 33.3 and 100 ms.
    plan = plan_video(probe(variable_rate), -1)
    assert (plan.action, plan.fps, plan.constant_fps) == ("transcode", 30.0, 30.0)
    assert "33.3\u2013100.0 ms" in plan.reasons[0]


def test_configured_constant_rate_is_used(vfr_h264: Path) -> None:
    result = probe(vfr_h264)
    plan = plan_video(result, -1, vfr_fps=25)
    assert (plan.constant_fps, plan.fps) == (25, 25)
    assert plan.reasons[0].endswith("made constant at 25 fps")
    command = build_ffmpeg_command("in", "out", plan, "ffmpeg")
    assert command[command.index("-vf") + 1].startswith("fps=25,scale=")
    ntsc = plan_video(result, -1, vfr_fps=30000 / 1001)
    command = build_ffmpeg_command("in", "out", ntsc, "ffmpeg")
    assert command[command.index("-vf") + 1].startswith("fps=30000/1001,")


def test_requested_rate_below_the_constant_one(vfr_h264: Path) -> None:
    plan = plan_video(probe(vfr_h264), 10)
    assert (plan.fps, plan.constant_fps) == (10, 30)


def test_configured_rate_does_not_touch_constant_rate_files(h264_faststart: Path) -> None:
    plan = plan_video(probe(h264_faststart), -1, vfr_fps=10)
    assert (plan.action, plan.fps, plan.constant_fps) == ("keep", 25.0, None)
    assert "fps=" not in " ".join(
        build_ffmpeg_command("in", "out", dataclasses.replace(plan, action="transcode"), "ff")
    )


@pytest.mark.parametrize(
    ("real_fps", "time_base", "shortest", "expected"),
    [
        (30.0, "1/15360", 1 / 30, 30.0),  # the container's guess agrees: taken
        (90000.0, "1/90000", 1 / 25, 25.0),  # a guess that is only the clock: standard rate
        (None, "1/1000", 0.033, 30.0),  # 30 fps rounded to milliseconds
        (None, "1/90000", 0.0625, 16.0),  # no standard rate fits: the measured one
        (None, "1/90000", 0.001, 120.0),  # two frames a millisecond apart: capped
    ],
)
def test_constant_rate_choice(
    h264_faststart: Path, real_fps: float | None, time_base: str, shortest: float, expected: float
) -> None:
    result = dataclasses.replace(
        probe(h264_faststart),
        real_fps=real_fps,
        time_base=time_base,
        frame_duration_min=shortest,
        frame_duration_max=shortest * 3,
        variable_frame_rate=True,
    )
    assert constant_rate(result) == pytest.approx(expected)
    assert constant_rate(result, 12.5) == 12.5


def test_plan_fps_falls_back_to_real_rate(h264_faststart: Path) -> None:
    result = dataclasses.replace(probe(h264_faststart), avg_fps=None, real_fps=24.0)
    assert plan_video(result, -1).fps == 24.0


def test_plan_without_any_rate_fails(h264_faststart: Path) -> None:
    result = dataclasses.replace(probe(h264_faststart), avg_fps=None, real_fps=None)
    with pytest.raises(ProcessingError, match="frame rate"):
        plan_video(result, -1)


# --- build_ffmpeg_command ----------------------------------------------------------------------


def _plan(action: str, has_audio: bool = True) -> VideoPlan:
    return VideoPlan(action, 25.0, 25.0, (), has_audio, False, 2.0)  # type: ignore[arg-type]


def test_transcode_command() -> None:
    command = build_ffmpeg_command("in.avi", "out.part", _plan("transcode"), "/bin/ffmpeg")
    joined = " ".join(command)
    assert command[0] == "/bin/ffmpeg"
    assert command[-1] == "out.part"
    assert "-c:v libx264 -preset medium -crf 22 -pix_fmt yuv420p" in joined
    assert "-vf scale=trunc(iw*sar/2)*2:trunc(ih/2)*2,setsar=1" in joined
    assert "-c:a aac" in joined
    assert "-movflags +faststart -f mp4" in joined
    assert "-progress pipe:1" in joined
    assert "-nostats" in command and "-y" in command
    assert command[command.index("-i") + 1] == "in.avi"


def test_transcode_command_options() -> None:
    command = build_ffmpeg_command(
        "in", "out", _plan("transcode", has_audio=False), "ffmpeg", preset="slow", crf=18
    )
    assert command[command.index("-preset") + 1] == "slow"
    assert command[command.index("-crf") + 1] == "18"
    assert "-c:a" not in command
    assert "0:a:0" not in command


def test_remux_command_copies() -> None:
    command = build_ffmpeg_command("in", "out", _plan("remux"), "ffmpeg")
    assert command[command.index("-c:v") + 1] == "copy"
    assert "libx264" not in command and "-vf" not in command
    assert "+faststart" in command


def test_keep_has_no_command() -> None:
    with pytest.raises(ValueError):
        build_ffmpeg_command("in", "out", _plan("keep"), "ffmpeg")


# --- running ffmpeg ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "size"),
    [
        ("h264_moov_end", (320, 240)),
        ("mpeg4_avi", (176, 144)),
        ("anamorphic", (212, 120)),  # 160 x 4/3 = 213.3, rounded down to even
        ("odd_size", (320, 240)),
        ("ten_bit", (160, 120)),
        ("rotated", (240, 320)),  # rotation baked into the pixels
    ],
)
def test_output_is_web_ready(
    fixture: str, size: tuple[int, int], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source: Path = request.getfixturevalue(fixture)
    out = tmp_path / "web.mp4"
    progress: list[float] = []
    done = transcode_video(
        source, out, plan_video(probe(source), -1), preset=FAST, on_progress=progress.append
    )
    result = probe(out)
    assert (result.codec, result.pix_fmt) == ("h264", "yuv420p")
    assert result.faststart is True
    assert result.sample_aspect_ratio == "1:1"
    assert result.rotation == 0
    assert (result.width, result.height) == size
    assert result.width % 2 == 0 and result.height % 2 == 0
    assert plan_video(result, -1).action == "keep"
    assert progress[-1] == 100.0
    assert done.action in ("remux", "transcode")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web.mp4"]  # no temp files left


def _packet_durations(path: Path) -> tuple[set[int], int, float, Fraction]:
    """Distinct durations between presentation timestamps, frames, duration (s), rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stamps = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
        assert stream.time_base is not None and stream.average_rate is not None
        seconds = float((stamps[-1] - stamps[0]) * stream.time_base)
        rate = stream.average_rate
    return {b - a for a, b in itertools.pairwise(stamps)}, len(stamps), seconds, rate


@pytest.mark.parametrize(("vfr_fps", "fps"), [(0.0, 30), (25.0, 25)])
def test_variable_rate_output_is_constant(
    vfr_h264: Path, tmp_path: Path, vfr_fps: float, fps: int
) -> None:
    durations, frames, _, _ = _packet_durations(vfr_h264)
    assert len(durations) == 2  # the source really is variable
    assert frames == 60
    out = tmp_path / "web.mp4"
    plan = plan_video(probe(vfr_h264), -1, vfr_fps=vfr_fps)
    transcode_video(vfr_h264, out, plan, preset=FAST)
    durations, frames, seconds, rate = _packet_durations(out)
    assert len(durations) == 1, durations
    assert rate == fps
    # 30 frames of 1/30 s and 30 of 2/30 s last 3 s: 3 x fps frames, one either way.
    assert abs(frames - 3 * fps) <= 1
    assert abs(frames - (seconds * fps + 1)) <= 1
    result = probe(out)
    assert result.variable_frame_rate is False
    assert plan_video(result, -1).action == "keep"


def test_variable_rate_in_other_containers_is_transcoded(
    vfr_other_container: Path, tmp_path: Path
) -> None:
    plan = plan_video(probe(vfr_other_container), -1)
    assert plan.action == "transcode"
    assert plan.fps == pytest.approx(30.0)
    assert any("variable frame rate" in reason for reason in plan.reasons)
    out = tmp_path / "web.mp4"
    assert transcode_video(vfr_other_container, out, plan, preset=FAST).action == "transcode"
    assert len(_packet_durations(out)[0]) == 1


def test_webm_output_is_web_ready(webm: tuple[Path, str], tmp_path: Path) -> None:
    out = tmp_path / "web.mp4"
    transcode_video(webm[0], out, plan_video(probe(webm[0]), -1), preset=FAST)
    assert plan_video(probe(out), -1).action == "keep"


def test_audio_is_encoded_to_aac(mpeg4_avi: Path, h264_faststart: Path, tmp_path: Path) -> None:
    # An AVI with a PCM tone: the transcode must carry the audio over as AAC.
    source = tmp_path / "with-audio.avi"
    ffmpeg = ffmpeg_exe()
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(mpeg4_avi)]
    cmd += ["-f", "lavfi", "-i", "sine=d=2", "-c:v", "copy", "-c:a", "pcm_s16le", str(source)]
    run_ffmpeg(cmd, None, lambda _: None)
    out = tmp_path / "web.mp4"
    transcode_video(source, out, plan_video(probe(source), -1), preset=FAST)
    result = probe(out)
    assert (result.has_audio, result.audio_codec) == (True, "aac")


def test_remux_keeps_the_encoded_stream(h264_moov_end: Path, tmp_path: Path) -> None:
    out = tmp_path / "web.mp4"
    plan = plan_video(probe(h264_moov_end), -1)
    assert plan.action == "remux"
    transcode_video(h264_moov_end, out, plan)
    before, after = probe(h264_moov_end), probe(out)
    assert after.faststart is True
    assert after.frames == before.frames
    # Stream copy: same coded bytes, only the container changed (moov moved to the front).
    assert abs(out.stat().st_size - h264_moov_end.stat().st_size) < 2048


def test_failed_remux_falls_back_to_transcode(tmp_path: Path) -> None:
    # Raw video has no MP4 tag: stream copy into MP4 fails, a transcode works.
    source = tmp_path / "raw.avi"
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"]
    cmd += ["-i", "testsrc2=size=64x48:rate=10:d=1", "-c:v", "rawvideo", str(source)]
    run_ffmpeg(cmd, None, lambda _: None)
    plan = dataclasses.replace(plan_video(probe(source), -1), action="remux")
    logged: list[str] = []
    out = tmp_path / "web.mp4"
    done = transcode_video(source, out, plan, preset=FAST, log=logged.append)
    assert done.action == "transcode"
    assert any("remux failed" in line for line in logged)
    assert probe(out).codec == "h264"


def test_progress_is_monotonic_and_ends_at_100(tmp_path: Path) -> None:
    # 240 small frames: several times the encoder's look-ahead (60 frames at veryslow),
    # so output, and progress, comes out before the final flush even on a busy machine.
    clip = tmp_path / "long.mp4"
    ffmpeg(*lavfi("testsrc2=size=160x120:rate=25:d=9.6"), *H264, str(clip))
    plan = dataclasses.replace(plan_video(probe(clip), -1), action="transcode")
    cmd = build_ffmpeg_command(
        str(clip),
        str(tmp_path / "o.mp4"),
        plan,
        ffmpeg_exe(),
        preset="veryslow",  # slow enough for several reports at a 50 ms period
        progress_period=0.05,
    )
    progress: list[float] = []
    run_ffmpeg(cmd, plan.duration, progress.append)
    assert len(progress) >= 3, progress
    assert 0 <= progress[0] < 100
    assert progress == sorted(progress)
    assert len(set(progress)) == len(progress)
    assert progress[-1] == 100.0


FAKE_FFMPEG = r"""
import sys
lines = ["out_time_us=N/A", "progress=continue", "out_time_us=500000", "progress=continue",
         "out_time_ms=250000", "out_time_ms=1500000", "progress=continue",
         "out_time_us=2500000", "progress=end"]
for line in lines:
    print(line, flush=True)
print("warning: something odd", file=sys.stderr, flush=True)
"""


def test_progress_parsing_with_a_scripted_process() -> None:
    progress: list[float] = []
    logged: list[str] = []
    run_ffmpeg([sys.executable, "-c", FAKE_FFMPEG], 2.0, progress.append, log=logged.append)
    # 25% -> (12.5% ignored: would go backwards) -> 75% -> capped 99.9% -> end = 100%.
    assert progress == [25.0, 75.0, 99.9, 100.0]
    assert logged == ["warning: something odd"]


def test_failure_reports_last_meaningful_line(tmp_path: Path) -> None:
    logged: list[str] = []
    plan = _plan("transcode", has_audio=False)
    cmd = build_ffmpeg_command(
        str(tmp_path / "missing.avi"), str(tmp_path / "o.mp4"), plan, ffmpeg_exe()
    )
    with pytest.raises(ProcessingError) as caught:
        run_ffmpeg(cmd, 2.0, lambda _: None, log=logged.append)
    message = str(caught.value)
    assert "No such file or directory" in message
    assert "\n" not in message
    assert logged, "stderr lines must reach the log callback"


def test_stderr_urls_lose_their_signature() -> None:
    script = (
        "import sys; print('https://b.example/v.mp4?X-Amz-Signature=s3cr3t&a=b: "
        "Server returned 403 Forbidden', file=sys.stderr); sys.exit(1)"
    )
    logged: list[str] = []
    with pytest.raises(ProcessingError) as caught:
        run_ffmpeg([sys.executable, "-c", script], 1.0, lambda _: None, log=logged.append)
    assert "s3cr3t" not in str(caught.value) and "s3cr3t" not in "".join(logged)
    assert "https://b.example/v.mp4?<redacted>: Server returned 403" in str(caught.value)


def _long_running_command() -> list[str]:
    # Reads a 10-minute synthetic source at real-time speed: it would run for minutes.
    return [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-y",
        "-progress",
        "pipe:1",
        "-nostats",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25:d=600",
        "-f",
        "null",
        "-",
    ]


def _ffmpeg_children() -> list[psutil.Process]:
    # Only ffmpeg: session fixtures of other test modules may keep servers running.
    return [
        c
        for c in psutil.Process().children(recursive=True)
        if c.is_running() and c.status() != psutil.STATUS_ZOMBIE and c.name().startswith("ffmpeg")
    ]


def test_cancel_stops_ffmpeg_quickly() -> None:
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    progress: list[float] = []
    started = time.monotonic()
    with pytest.raises(ProcessingError, match=r"^canceled$"):
        run_ffmpeg(_long_running_command(), 600, progress.append, cancel=cancel)
    assert time.monotonic() - started < 3.0
    assert _ffmpeg_children() == []


def test_timeout_is_transient_and_stops_ffmpeg() -> None:
    started = time.monotonic()
    with pytest.raises(TransientProcessingError, match=r"^timed out after 0\.5 s$"):
        run_ffmpeg(_long_running_command(), 600, lambda _: None, timeout=0.5)
    assert time.monotonic() - started < 3.0
    assert _ffmpeg_children() == []


def test_canceled_transcode_leaves_no_output(mpeg4_avi: Path, tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    out = tmp_path / "web.mp4"
    with pytest.raises(ProcessingError, match="canceled"):
        transcode_video(mpeg4_avi, out, plan_video(probe(mpeg4_avi), -1), cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_callback_exception_does_not_leave_ffmpeg_running() -> None:
    def explode(_: float) -> None:
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError):
        run_ffmpeg(_long_running_command(), 1.0, explode)
    assert _ffmpeg_children() == []


# --- helpers ------------------------------------------------------------------------------------


def test_ffmpeg_exe_is_runnable() -> None:
    exe = ffmpeg_exe()
    assert os.access(exe, os.X_OK)
    assert exe == (shutil.which("ffmpeg") or exe)
    assert has_encoder("libx264")
    assert not has_encoder("no-such-encoder")


def test_poster_is_a_small_square_pixel_jpeg(anamorphic: Path, tmp_path: Path) -> None:
    out = tmp_path / "poster.jpg"
    make_poster(anamorphic, out, 0.5)
    image = pyvips.Image.new_from_file(str(out))
    assert image.get("vips-loader") == "jpegload"
    assert (image.width, image.height) == (212, 120)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poster.jpg"]


def test_poster_is_capped_at_max_width(h264_faststart: Path, tmp_path: Path) -> None:
    out = tmp_path / "poster.jpg"
    make_poster(h264_faststart, out, 1.0, max_width=100)
    image = pyvips.Image.new_from_file(str(out))
    assert (image.width, image.height) == (100, 76)  # 320x240 scaled, height kept even


def test_poster_past_the_end_uses_the_first_frame(h264_faststart: Path, tmp_path: Path) -> None:
    out = tmp_path / "poster.jpg"
    make_poster(h264_faststart, out, 3600)
    assert out.stat().st_size > 0


def test_poster_of_a_non_video_fails(text_as_mp4: Path, tmp_path: Path) -> None:
    with pytest.raises(ProcessingError):
        make_poster(text_as_mp4, tmp_path / "poster.jpg", 0)
    assert list(tmp_path.iterdir()) == []
