"""Output names are unique per input: files that differ only by extension, side by side in
one folder, each get their own pyramid, converted frame and transcode."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvips

from .conftest import Lab, MediaKit

pytestmark = pytest.mark.timeout(240)


def plain_tiff(path: Path, width: int, height: int, level: int) -> Path:
    (pyvips.Image.black(width, height, bands=3) + level).cast("uchar").tiffsave(str(path))
    return path


def run_batch(lab: Lab) -> None:
    lab.add_local_source()
    lab.sync()
    lab.run("postprocess", "/src", "-r")
    worker = lab.worker("--concurrency", "2")
    assert "error" not in worker.stdout, worker.stdout


def test_two_slides_with_one_stem_get_their_own_pyramids(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    lab.cli.env["MEDIAMIRROR_LARGE_IMAGE_BYTES"] = "1"
    lab.put("slides/scan.svs", plain_tiff(lab.root / "a.tif", 300, 200, 40))
    lab.put("slides/scan.ndpi", plain_tiff(lab.root / "b.tif", 200, 300, 200))

    run_batch(lab)

    sizes = {}
    for name in ("scan.svs", "scan.ndpi"):
        meta = lab.dataset(f"/src/slides/Large image {name}").meta
        pyramid = pyvips.Image.new_from_file(str(lab.outputs / meta["outputs"]["pyramid"]))
        sizes[meta["outputs"]["pyramid"]] = (pyramid.width, pyramid.height)
    assert sizes == {
        "pyramids/src/slides/scan.svs.tif": (300, 200),
        "pyramids/src/slides/scan.ndpi.tif": (200, 300),
    }


def test_two_frames_with_one_stem_get_their_own_web_images(sqlite_lab: Lab) -> None:
    lab = sqlite_lab
    lab.put("seq/f.tif", plain_tiff(lab.root / "a.tif", 64, 48, 40))
    lab.put("seq/f.tiff", plain_tiff(lab.root / "b.tif", 64, 48, 200))

    run_batch(lab)

    converted = lab.dataset("/src/seq").meta["outputs"]["frames"]
    assert converted == {
        "seq/f.tif": "src/seq/frames/f.tif.jpg",
        "seq/f.tiff": "src/seq/frames/f.tiff.jpg",
    }
    levels = {
        key: pyvips.Image.new_from_file(str(lab.outputs / rel)).avg()
        for key, rel in converted.items()
    }
    assert levels["seq/f.tif"] == pytest.approx(40, abs=3)
    assert levels["seq/f.tiff"] == pytest.approx(200, abs=3)


def test_two_videos_with_one_stem_get_their_own_transcodes(
    sqlite_lab: Lab, media: MediaKit
) -> None:
    lab = sqlite_lab
    lab.put("clips/clip.avi", media["mpeg4-avi"])
    lab.put("clips/clip.mov", media["mpeg4-avi"])

    run_batch(lab)

    outputs = [
        dict(lab.dataset(f"/src/clips/Video {n}").meta["outputs"]) for n in ("clip.avi", "clip.mov")
    ]
    assert outputs[0]["video"] != outputs[1]["video"]
    assert outputs[0]["poster"] != outputs[1]["poster"]
    assert all((lab.outputs / rel).is_file() for out in outputs for rel in out.values())
