"""``postprocess``, ``reprocess``, post-processing after ``sync``, the Quick start, and
S3 both ways (an S3 source, an S3 output store), all through the real CLI entry point."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from helpers import S3Bucket
from mediamirror.samples import generate_samples

from .conftest import Lab, MediaKit, assert_web_mp4

pytestmark = pytest.mark.timeout(180)


def dummy_videos(lab: Lab, count: int, folder: str = "v") -> list[str]:
    """Video datasets whose bytes do not matter (no job of theirs runs in the test)."""
    for n in range(count):
        lab.put(f"{folder}/clip{n}.mp4", b"x" * (n + 1))
    return [f"/src/{folder}/Video clip{n}.mp4" for n in range(count)]


def marks(lab: Lab) -> dict[str, Any]:
    return {path: row.meta.get("MarkForPostProcess") for path, row in lab.datasets().items()}


@pytest.mark.postgres
def test_postprocess_limit_queues_n_datasets_and_clears_their_marks(lab: Lab) -> None:
    paths = dummy_videos(lab, 5)
    lab.add_local_source()
    lab.sync()
    assert set(marks(lab).values()) == {True}
    # not recursive: only datasets directly in the path (there are none in /src itself)
    assert lab.run("postprocess", "/src").stdout.strip() == "queued 0 job(s) for 0 dataset(s)"

    out = lab.run("postprocess", "/src", "--recursive", "--limit", "2")
    assert out.stdout.strip() == "queued 2 job(s) for 2 dataset(s)"
    jobs = lab.jobs()
    ids = {row.id: path for path, row in lab.datasets().items()}
    picked = {ids[j.target_id] for j in jobs}
    assert len(picked) == 2 and {j.processor for j in jobs} == {"video"}
    assert {p: m for p, m in marks(lab).items() if m is False}.keys() == picked

    assert lab.run("postprocess", "/src", "-r", "--limit", "2").stdout.startswith("queued 2 job")
    assert lab.run("postprocess", "/src", "-r").stdout.strip() == (
        "queued 1 job(s) for 1 dataset(s)"
    )
    assert set(marks(lab).values()) == {False}
    assert sorted(ids[j.target_id] for j in lab.jobs()) == sorted(paths)
    assert lab.run("postprocess", "/src", "-r").stdout.strip() == (
        "queued 0 job(s) for 0 dataset(s)"
    )
    # a path that is itself a dataset
    lab.set_meta(paths[0], MarkForPostProcess=True)
    assert lab.run("postprocess", paths[0]).stdout.strip() == (
        "queued 0 job(s) for 1 dataset(s) (1 already queued or running)"
    )


def test_only_pending_picks_datasets_at_fps_minus_one_with_any_mark(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    marked, cleared, done, unmarked = dummy_videos(lab, 4)
    lab.put("big/slide.svs", b"a whole-slide image")
    lab.add_local_source()
    lab.sync()
    lab.set_meta(cleared, MarkForPostProcess=False)  # a mark that was cleared, never processed
    lab.set_meta(done, MarkForPostProcess=False, fps=25)  # processed
    lab.drop_meta(unmarked, "MarkForPostProcess")  # never had a mark
    # a pyramid was built: large images keep fps -1, but this one is ready
    lab.set_meta("/src/big/Large image slide.svs", MarkForPostProcess=False, annotate=True)
    out = lab.run("postprocess", "/src", "-r", "--only-pending")
    assert out.stdout.strip() == "queued 2 job(s) for 2 dataset(s)"
    queued = {lab.job(j.id).target_id for j in lab.jobs()}
    assert queued == {lab.dataset(marked).id, lab.dataset(cleared).id}
    assert marks(lab)[unmarked] is None and marks(lab)[marked] is False


def test_skip_transcoding_records_metadata_only(sqlite_lab: Lab, media: MediaKit) -> None:
    lab = sqlite_lab
    lab.put("v/old.avi", media["mpeg4-avi"])
    lab.add_local_source()
    lab.sync()
    lab.run("postprocess", "/src", "-r", "--skip-transcoding")
    [job] = lab.jobs()
    assert job.args == {"skip_transcoding": True}
    lab.worker()
    meta = dict(lab.dataset("/src/v/Video old.avi").meta)
    assert lab.job(job.id).state == "success"
    assert meta["transcode"]["action"] == "keep"
    assert "codec mpeg4 is not h264" in meta["transcode"]["reasons"]
    assert (meta["fps"], meta["originalFps"], meta["codec"]) == (15, 15, "mpeg4")
    assert meta["annotate"] is True and meta["media"]["transcoded"] is False
    assert set(meta["outputs"]) == {"poster"}
    assert not [f for f in lab.output_files() if f.endswith(".mp4")]


def test_reprocess_dry_run_then_with_arguments(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    paths = dummy_videos(lab, 2) + dummy_videos(lab, 1, folder="w")
    lab.add_local_source()
    lab.sync()
    ids = {p: lab.dataset(p).id for p in paths}

    dry = lab.run("reprocess", "/src", "--processor", "video", "--args", "--fast", "--dry-run")
    assert dry.stdout.splitlines() == [
        *(f"would queue video on folder {ids[p]}" for p in sorted(paths)),
        "3 job(s) for 3 dataset(s) (dry run)",
    ]
    assert lab.jobs() == []

    out = lab.run("reprocess", "/src", "--processor", "video", "--prefix", "v", "--args", "--fast")
    assert out.stdout.strip() == "queued 2 job(s) for 2 dataset(s)"
    jobs = lab.jobs()
    assert {j.target_id for j in jobs} == {ids[p] for p in paths[:2]}
    suffix = "+" + hashlib.sha1(b"--fast").hexdigest()[:8]
    for job in jobs:
        assert job.args == {"reprocess": True, "args": "--fast"}
        assert job.input_version.endswith(suffix)
    again = lab.run(
        "reprocess", "/src", "--processor", "video", "--prefix", "v", "--args", "--fast"
    )
    assert again.stdout.strip() == "queued 0 job(s) for 2 dataset(s) (2 already queued or running)"
    other = lab.run("reprocess", "/src/v", "--args", "--slow", "--limit", "1")
    assert other.stdout.strip() == "queued 1 job(s) for 1 dataset(s)"
    assert marks(lab) == {p: True for p in paths}, "reprocess leaves the marks alone"


def test_sync_queues_post_processing_unless_disabled(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    dummy_videos(lab, 2)
    lab.put("frames/a.png", b"png")
    lab.run("source", "add", "src", f"file://{lab.media}")
    lab.run("source", "add", "off", f"file://{lab.root / 'off'}", "--no-check")
    (lab.root / "off" / "v").mkdir(parents=True)
    (lab.root / "off" / "v" / "clip.mp4").write_bytes(b"x")

    out = lab.run("sync", "src", "--quiet")
    assert "src: queued 3 job(s) for 3 dataset(s)" in out.stdout.splitlines()
    assert sorted(j.processor for j in lab.jobs()) == ["images", "video", "video"]
    assert set(marks(lab).values()) == {False}

    quiet = lab.run("sync", "off", "-q", MEDIAMIRROR_AUTO_POSTPROCESS="false")
    assert "queued" not in quiet.stdout
    assert len(lab.jobs()) == 3
    assert marks(lab)["/off/v/Video clip.mp4"] is True


@pytest.mark.timeout(240)
def test_quick_start_sync_then_worker_makes_every_sample_ready(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    samples = lab.root / "sample-media"
    generate_samples(samples, large_image_px=1024)
    env = {"MEDIAMIRROR_LARGE_IMAGE_BYTES": "2000000"}  # the 3 MiB slide becomes a pyramid
    lab.run("source", "add", "sample", f"file://{samples}")
    lab.run("sync", "sample", **env)
    out = lab.worker(timeout=200, **env)
    datasets = lab.datasets()
    types = sorted(row.meta["type"] for row in datasets.values())
    assert types == ["image-sequence", "large-image", "video", "video", "video", "video"]
    assert out.stdout.strip() == "worker ran 6 job(s): 6 success"
    files = set(lab.output_files())
    for path, row in datasets.items():
        meta = dict(row.meta)
        assert meta["annotate"] is True, path
        assert meta["MarkForPostProcess"] is False, path
        assert all(p["state"] == "success" for p in meta["processing"].values()), path
        assert meta["fps"] > 0 or meta["type"] == "large-image", path
        for rel in _flatten(meta.get("outputs", {})):
            assert rel in files, (path, rel)
    assert "pyramids/sample/large/slide.tif.tif" in files
    assert "sample/videos/Video clip-mpeg4.avi/clip-mpeg4.mp4" in files
    assert "sample/videos/Video clip-h264.mp4/poster.jpg" in files
    assert not any(f.endswith(".part") for f in files)


def _flatten(outputs: dict[str, Any]) -> list[str]:
    found = []
    for value in outputs.values():
        found.extend(_flatten(value) if isinstance(value, dict) else [value])
    return found


# -- S3 both ways ------------------------------------------------------------------------------


def bucket_state(bucket: S3Bucket) -> dict[str, tuple[int, str]]:
    state = {}
    pages = bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name)
    for page in pages:
        for obj in page.get("Contents", ()):
            state[obj["Key"]] = (obj["Size"], obj["ETag"])
    return state


def fill_source_bucket(bucket: S3Bucket, media: MediaKit, prefix: str = "") -> None:
    bucket.put(prefix + "videos/old.avi", media["mpeg4-avi"].read_bytes())
    bucket.put(prefix + "large/slide.tif", media["large-tif"].read_bytes())
    bucket.put(prefix + "frames/f1.png", media["frame-png"].read_bytes())
    bucket.put(prefix + "frames/f2.tif", media["frame-tif"].read_bytes())


def test_s3_source_to_s3_output_store(
    sqlite_lab: Lab, media: MediaKit, bucket: S3Bucket, s3_client: Any, tmp_path: Path
) -> None:
    lab = sqlite_lab
    out = S3Bucket(bucket.server, s3_client)
    fill_source_bucket(bucket, media)
    before = bucket_state(bucket)
    lab.cli.env.update(
        MEDIAMIRROR_LARGE_IMAGE_BYTES="1000000",
        MEDIAMIRROR_OUTPUT_STORE=f"s3://{out.name}/derived",
        MEDIAMIRROR_OUTPUT_ENDPOINT_URL=bucket.server.endpoint,
    )
    lab.run("source", "add", "src", bucket.url(), *bucket.cli_options)
    assert "src: queued 3 job(s) for 3 dataset(s)" in lab.run("sync", "src", "-q").stdout
    assert lab.worker().stdout.strip() == "worker ran 3 job(s): 3 success"

    keys = set(out.keys())
    assert keys == {
        "derived/src/videos/Video old.avi/old.mp4",
        "derived/src/videos/Video old.avi/poster.jpg",
        "derived/pyramids/src/large/slide.tif.tif",
        "derived/src/frames/frames/f2.tif.jpg",
        "derived/src/large/Large image slide.tif/thumbnail.jpg",
        "derived/src/frames/thumbnail.jpg",
    }
    local = tmp_path / "old.mp4"
    s3_client.download_file(out.name, "derived/src/videos/Video old.avi/old.mp4", str(local))
    assert assert_web_mp4(local)["frames"] == 15
    meta = dict(lab.dataset("/src/videos/Video old.avi").meta)
    assert meta["outputs"]["video"] == "src/videos/Video old.avi/old.mp4"
    assert bucket_state(bucket) == before, "the source bucket was written to"
    assert lab.output_files() == [], "nothing goes to the local output directory"


@pytest.mark.parametrize(
    ("source_prefix", "output_prefix"),
    [("", "derived"), ("media/", "media/derived"), ("media/derived/", "media")],
    ids=["bucket-root", "output-inside-source", "source-inside-output"],
)
def test_output_store_overlapping_the_source_is_refused(
    sqlite_lab: Lab, media: MediaKit, bucket: S3Bucket, source_prefix: str, output_prefix: str
) -> None:
    lab = sqlite_lab
    bucket.put(source_prefix + "videos/old.avi", media["mpeg4-avi"].read_bytes())
    before = bucket_state(bucket)
    # Added before the output store was configured: the check when the store opens is
    # what stops the job (adding it afterwards is refused at once, see the last line).
    lab.run("source", "add", "src", bucket.url(source_prefix), *bucket.cli_options)
    lab.cli.env.update(
        MEDIAMIRROR_OUTPUT_STORE=f"s3://{bucket.name}/{output_prefix}",
        MEDIAMIRROR_OUTPUT_ENDPOINT_URL=bucket.server.endpoint,
    )
    lab.run("sync", "src", "-q")
    assert lab.worker().stdout.strip() == "worker ran 1 job(s): 1 error"
    [job] = lab.jobs()
    assert job.state == "error" and job.attempts == 1, "a setting error is not retried"
    assert job.error == (
        f"output store s3://{bucket.name}/{output_prefix}/ overlaps the source "
        f"s3://{bucket.name}/{source_prefix}: sources are read-only, choose another bucket "
        "or prefix"
    )
    assert bucket_state(bucket) == before
    again = lab.run(
        "source", "add", "again", bucket.url(source_prefix), *bucket.cli_options, ok=False
    )
    assert "overlaps the source" in again.stderr


def test_output_store_next_to_the_source_prefix_is_fine(
    sqlite_lab: Lab, media: MediaKit, bucket: S3Bucket
) -> None:
    lab = sqlite_lab
    bucket.put("media/videos/old.avi", media["mpeg4-avi"].read_bytes())
    lab.cli.env.update(
        MEDIAMIRROR_OUTPUT_STORE=f"s3://{bucket.name}/media-derived",
        MEDIAMIRROR_OUTPUT_ENDPOINT_URL=bucket.server.endpoint,
    )
    lab.run("source", "add", "src", bucket.url("media"), *bucket.cli_options)
    lab.run("sync", "src", "-q")
    assert lab.worker().stdout.strip() == "worker ran 1 job(s): 1 success"
    keys = bucket.keys()
    derived = sorted(k for k in keys if k.startswith("media-derived/"))
    assert derived == [
        "media-derived/src/videos/Video old.avi/old.mp4",
        "media-derived/src/videos/Video old.avi/poster.jpg",
    ]
    assert [k for k in keys if k.startswith("media/")] == ["media/videos/old.avi"]
