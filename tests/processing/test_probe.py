"""probe() against media generated with known properties, and RangeFile underneath it."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from mediamirror.errors import ProcessingError, StoreError
from mediamirror.processing.probe import MP4_FAMILY, TIMING_BYTES, VideoProbe, probe
from mediamirror.processing.rangefile import RangeFile

from .conftest import LocalRangeStore


def test_h264_faststart_fields(h264_faststart: Path) -> None:
    result = probe(h264_faststart)
    assert result.format_name == MP4_FAMILY
    assert (result.codec, result.width, result.height) == ("h264", 320, 240)
    assert result.pix_fmt == "yuv420p"
    assert result.bit_depth == 8
    assert result.avg_fps == pytest.approx(25.0)
    assert result.real_fps == pytest.approx(25.0)
    assert result.frames == 50
    assert result.frames_estimated is False
    assert result.duration == pytest.approx(2.0, abs=0.05)
    assert result.sample_aspect_ratio == "1:1"
    assert result.rotation == 0
    assert result.has_audio is True
    assert result.audio_codec == "aac"
    assert result.faststart is True
    assert result.filename == "h264-faststart.mp4"


def test_moov_at_end_is_not_faststart(h264_moov_end: Path) -> None:
    result = probe(h264_moov_end)
    assert result.faststart is False
    assert result.has_audio is False
    assert result.audio_codec is None


def test_mpeg4_avi(mpeg4_avi: Path) -> None:
    result = probe(mpeg4_avi)
    assert result.format_name == "avi"
    assert (result.codec, result.width, result.height) == ("mpeg4", 176, 144)
    assert result.avg_fps == pytest.approx(15.0)
    assert result.frames == 30
    assert result.faststart is None  # not an MP4: the notion does not apply


def test_webm_frame_count_is_estimated(webm: tuple[Path, str]) -> None:
    path, codec = webm
    result = probe(path)
    assert result.format_name == "matroska,webm"
    assert result.codec == codec
    assert (result.width, result.height) == (160, 120)
    # Matroska stores no frame count: it is duration x rate.
    assert result.frames_estimated is True
    assert result.frames == 30


def test_anamorphic_sample_aspect_ratio(anamorphic: Path) -> None:
    result = probe(anamorphic)
    assert result.sample_aspect_ratio == "4:3"
    assert result.width == 160


def test_odd_dimensions(odd_size: Path) -> None:
    result = probe(odd_size)
    assert (result.width, result.height) == (321, 241)
    assert result.pix_fmt == "yuv444p"


def test_ten_bit(ten_bit: Path) -> None:
    result = probe(ten_bit)
    assert result.pix_fmt == "yuv420p10le"
    assert result.bit_depth == 10
    assert result.profile == "High 10"


def test_rotation_from_display_matrix(rotated: Path) -> None:
    result = probe(rotated)
    assert result.rotation == 90
    assert (result.width, result.height) == (320, 240)  # coded size; rotation is separate


def test_single_frame(single_frame: Path) -> None:
    result = probe(single_frame)
    assert result.frames == 1
    assert result.codec == "h264"


def test_variable_frame_rate_keeps_both_rates(variable_rate: Path) -> None:
    result = probe(variable_rate)
    # 30 frames in the first second, 10 in the next: 40 frames over ~1.9 s.
    assert result.frames == 40
    assert result.real_fps == pytest.approx(30.0)
    assert result.avg_fps is not None and result.duration is not None
    assert 18 < result.avg_fps < 24
    assert result.avg_fps == pytest.approx(result.frames / result.duration, rel=0.02)
    assert result.native_fps == result.avg_fps


def test_variable_frame_rate_is_measured_from_timestamps(vfr_h264: Path) -> None:
    result = probe(vfr_h264)
    assert result.variable_frame_rate is True
    assert result.frame_duration_min == pytest.approx(1 / 30)
    assert result.frame_duration_max == pytest.approx(2 / 30)
    assert result.time_base is not None
    # The container's own figures stay as they are: an average and a guess.
    assert result.real_fps == pytest.approx(30.0)
    assert result.avg_fps is not None and 19 < result.avg_fps < 21


def test_variable_frame_rate_in_other_containers(vfr_other_container: Path) -> None:
    result = probe(vfr_other_container)
    assert result.variable_frame_rate is True
    # Matroska counts in milliseconds: 33 and 67 ms.
    assert result.frame_duration_min == pytest.approx(1 / 30, abs=0.001)
    assert result.frame_duration_max == pytest.approx(2 / 30, abs=0.001)


@pytest.mark.parametrize(
    ("fixture", "duration"),
    [
        ("h264_faststart", 1 / 25),
        ("h264_moov_end", 1 / 25),
        ("mpeg4_avi", 1 / 15),
        ("bframes_mkv", 1 / 25),  # decode order differs from presentation order
        ("rotated", 1 / 25),
    ],
)
def test_constant_frame_rate_is_not_variable(
    fixture: str, duration: float, request: pytest.FixtureRequest
) -> None:
    result = probe(request.getfixturevalue(fixture))
    assert result.variable_frame_rate is False
    assert result.frame_duration_min == pytest.approx(duration, abs=0.001)
    assert result.frame_duration_max == pytest.approx(duration, abs=0.001)


def test_webm_millisecond_rounding_is_not_variable(webm: tuple[Path, str]) -> None:
    # 30 fps in milliseconds is 33, 34, 33...: within a tick, so constant.
    result = probe(webm[0])
    assert result.variable_frame_rate is False
    assert result.frame_duration_min is not None and result.frame_duration_max is not None
    assert result.frame_duration_max - result.frame_duration_min == pytest.approx(0.001)


def test_single_frame_has_no_measured_timing(single_frame: Path) -> None:
    result = probe(single_frame)
    assert result.variable_frame_rate is None
    assert result.frame_duration_min is None


@pytest.mark.parametrize(
    ("fixture", "reason"),
    [
        ("zero_bytes", "empty file"),
        ("text_as_mp4", "not a readable media file"),
        ("audio_only", "audio-only"),
        ("truncated_no_index", "not a readable media file"),
        ("truncated_no_frames", "decodable"),
        ("png_image", "still image"),
    ],
)
def test_bad_input_raises_one_line(
    fixture: str, reason: str, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue(fixture)
    with pytest.raises(ProcessingError) as caught:
        probe(path)
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message
    assert message.startswith(path.name)


def test_missing_file_is_a_processing_error(tmp_path: Path) -> None:
    with pytest.raises(ProcessingError, match="cannot open"):
        probe(tmp_path / "nope.mp4")


def test_to_metadata_is_json_and_complete(h264_faststart: Path) -> None:
    metadata = probe(h264_faststart).to_metadata()
    restored = json.loads(json.dumps(metadata))
    assert restored["codec"] == "h264"
    assert restored["sample_aspect_ratio"] == "1:1"
    assert restored["faststart"] is True
    assert VideoProbe(**restored) == probe(h264_faststart)


def test_file_object_gives_same_result_as_path(h264_faststart: Path) -> None:
    with h264_faststart.open("rb") as fileobj:
        from_object = probe(fileobj)
    assert from_object == probe(h264_faststart)


def test_in_memory_object_uses_given_name(h264_moov_end: Path) -> None:
    result = probe(io.BytesIO(h264_moov_end.read_bytes()), name="clip.mov")
    assert result.filename == "clip.mov"
    assert result.faststart is False


# --- RangeFile -----------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["large_video", "large_video_faststart"])
def test_probe_over_range_reads_reads_a_small_part(
    fixture: str, request: pytest.FixtureRequest, range_file: Callable[..., RangeFile]
) -> None:
    path: Path = request.getfixturevalue(fixture)
    size = path.stat().st_size
    assert size > 15_000_000
    remote = range_file(path)
    result = probe(remote)
    assert result == probe(path)
    assert result.frames == 40
    # Header + index + the first (incompressible, ~350 KB) frame; far from the ~20 MB file.
    assert remote.bytes_fetched < 2_000_000
    assert remote.bytes_fetched < size / 10
    assert remote.requests <= 8


def test_timing_without_a_frame_index_reads_a_bounded_part(
    large_video_mkv: Path, range_file: Callable[..., RangeFile]
) -> None:
    # Matroska lists no frame timestamps up front: packets are demuxed, up to a byte budget.
    size = large_video_mkv.stat().st_size
    remote = range_file(large_video_mkv)
    result = probe(remote)
    assert result.variable_frame_rate is False
    assert result.frame_duration_min == pytest.approx(0.04)
    assert remote.bytes_fetched < TIMING_BYTES + 2_000_000
    assert remote.bytes_fetched < size / 2


def test_rangefile_reads_match_the_file(
    h264_faststart: Path, range_file: Callable[..., RangeFile]
) -> None:
    data = h264_faststart.read_bytes()
    remote = range_file(h264_faststart, block_size=4096, cache_blocks=2)
    for offset, length in [(0, 10), (4090, 20), (5000, 9000), (len(data) - 5, 100)]:
        remote.seek(offset)
        assert remote.read(length) == data[offset : offset + length]
        assert remote.tell() == min(offset + length, len(data))
    assert remote.seek(-8, os.SEEK_END) == len(data) - 8
    assert remote.read() == data[-8:]
    assert remote.read(10) == b""
    remote.seek(0)
    assert remote.read() == data


def test_rangefile_cache_saves_requests(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 64)  # 16 KiB
    store = LocalRangeStore(tmp_path)
    remote = RangeFile(store, "blob.bin", 16384, block_size=1024, cache_blocks=2)  # type: ignore[arg-type]
    remote.read(100)
    remote.seek(0)
    remote.read(1000)  # same block: served from the cache
    assert remote.requests == 1
    assert remote.bytes_fetched == 1024
    remote.seek(1500)
    remote.read(3000)  # blocks 1-4, all missing: one request for the run
    assert remote.requests == 2
    assert store.calls[-1] == ("blob.bin", 1024, 4096)
    remote.seek(0)
    remote.read(10)  # block 0 was evicted by the LRU (2 blocks kept)
    assert remote.requests == 3


def test_rangefile_reports_a_changed_object(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"x" * 1000)
    remote = RangeFile(LocalRangeStore(tmp_path), "blob.bin", 5000, block_size=4096)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="changed"):
        remote.read(10)


def test_store_errors_propagate_through_probe(
    large_video: Path, range_file: Callable[..., RangeFile]
) -> None:
    remote = range_file(large_video, block_size=65536)
    original = remote.store.read_range

    def failing(key: str, start: int, length: int) -> bytes:
        if start > 0:
            raise StoreError("connection reset")
        return original(key, start, length)

    remote.store.read_range = failing  # type: ignore[method-assign]
    with pytest.raises(StoreError, match="connection reset"):
        probe(remote)
