"""Disk full / scratch gone: a job whose scratch disk fills up fails with one clear reason
and leaves no partial output visible; the worker goes on with the next job.

The scratch disk is a real, tiny tmpfs mounted over the worker's scratch folder
(``<home>/tmp``). Mounting needs root (CI containers run the tests as root)."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.conftest import Lab, MediaKit

HOWTO = "the scratch-disk tests mount a tmpfs: run them as root (as CI does)"


@pytest.fixture
def small_scratch(sqlite_lab: Lab) -> Iterator[Path]:
    """``<home>/tmp`` on a 256 KiB tmpfs, unmounted after the test."""
    scratch = sqlite_lab.home / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(scratch)]
    result = subprocess.run(mount, capture_output=True, text=True)
    if result.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs: {result.stderr.strip()}")
        pytest.skip(f"{HOWTO} ({result.stderr.strip()})")
    try:
        yield scratch
    finally:
        subprocess.run(["umount", "-l", str(scratch)], check=False)


def test_a_full_scratch_disk_fails_the_job_in_one_line_without_partial_output(
    sqlite_lab: Lab, media: MediaKit, small_scratch: Path
) -> None:
    lab = sqlite_lab
    lab.add_local_source()
    lab.put("big/long.avi", media["slow-source"])  # its transcode needs megabytes
    lab.put("small/short.mp4", media["h264-faststart"])  # web-ready: nothing to write
    lab.run("sync", "src", "-q")

    lab.worker()

    (big,) = lab.jobs_of("/src/big/Video long.avi")
    assert big.state == "error", big
    assert big.error.startswith("no space left on the scratch disk"), big.error
    assert "\n" not in big.error and "Traceback" not in (big.log_tail or ""), big
    assert big.attempts == 1, "a full disk is reported at once, not retried with backoff"
    meta = lab.dataset("/src/big/Video long.avi").meta
    assert meta["processing"]["video"]["state"] == "error"
    assert meta["processing"]["video"]["error"] == big.error
    assert not [f for f in lab.output_files() if "long" in f], lab.output_files()
    (small,) = lab.jobs_of("/src/small/Video short.mp4")
    assert small.state == "success", small
    # The failed job's scratch folder is gone: the disk is usable again.
    assert list(small_scratch.iterdir()) == []


def _noise_tif(path: Path, width: int, height: int) -> Path:
    """An uncompressed RGB TIFF of random pixels: nothing made from it compresses."""
    import pyvips

    noise = pyvips.Image.gaussnoise(width, height, sigma=80, mean=128)
    rgb = noise.bandjoin([noise.rot180(), noise.fliphor()]).cast("uchar")
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb.copy(interpretation="srgb").tiffsave(str(path), compression="none")
    return path


def test_a_full_scratch_disk_fails_pyramid_and_image_jobs_in_one_line(
    sqlite_lab: Lab, small_scratch: Path
) -> None:
    """libvips meets the full disk while writing a pyramid or a web frame: the job says
    the disk is full (not that the image or the frames are bad) and is not retried."""
    lab = sqlite_lab
    lab.add_local_source()
    # 3 MB: a large image (its pyramid needs megabytes); 1 MB frames: each JPEG is
    # larger than the whole 256 KiB scratch disk.
    _noise_tif(lab.media / "big" / "scan.tif", 1000, 1000)
    for n in (1, 2):
        _noise_tif(lab.media / "seq" / f"f{n}.tif", 600, 600)
    lab.run("sync", "src", "-q", MEDIAMIRROR_LARGE_IMAGE_BYTES="2000000")

    lab.worker()

    for path in ("/src/big/Large image scan.tif", "/src/seq"):
        (job,) = lab.jobs_of(path)
        assert job.state == "error", job
        assert job.error.startswith("no space left on the scratch disk"), job.error
        assert "\n" not in job.error and "Traceback" not in (job.log_tail or ""), job
        assert job.attempts == 1, "a full disk is reported at once, not retried"
        assert lab.dataset(path).meta["processing"][job.processor]["error"] == job.error
    assert lab.output_files() == []
    assert list(small_scratch.iterdir()) == []


REMOVE_SCRATCH = """\
import shutil, sys
from pathlib import Path
out = Path(sys.argv[2])
(out / "result.json").write_text("{}")
shutil.rmtree(sys.argv[1])  # what a tmp cleaner does under a running job
print("scratch folder removed", flush=True)
"""


def test_a_scratch_folder_removed_under_a_job_is_retried_then_fails_in_one_line(
    sqlite_lab: Lab, media: MediaKit
) -> None:
    """The scratch folder disappears while a command runs (removed at a known point: by
    the command itself, after writing its result): never an empty result set taken for a
    success, nor an internal error; tried again in a new folder, then one clear line."""
    lab = sqlite_lab
    script = lab.root / "remove_scratch.py"
    script.write_text(REMOVE_SCRATCH)
    command = f"{sys.executable} {script} {{workdir}} {{output_dir}}"
    lab.configure(processors={"cleaned": {"command": command, "applies_to": ["video"]}})
    lab.put("v/clip.mp4", media["h264-faststart"])
    lab.add_local_source()
    lab.sync()
    lab.run("reprocess", "/src", "--processor", "cleaned", MEDIAMIRROR_JOB_MAX_ATTEMPTS="2")

    lab.worker()

    (job,) = lab.jobs(processor="cleaned")
    assert job.state == "error", job
    assert job.attempts == 2, "a removed scratch folder is worth one more try"
    assert re.fullmatch(
        r"the scratch folder \S+/tmp/job-\d+-\w+ was removed while the job ran"
        r" \(gave up after 2 attempts\)",
        job.error,
    ), job.error
    assert "scratch folder removed" in job.log_tail and "Traceback" not in job.log_tail
    assert "results" not in lab.dataset("/src/v/Video clip.mp4").meta
    assert not [f for f in lab.output_files() if f.startswith("results/")]


COPY_PAST_LIMIT = """\
import resource, signal, sys
from pathlib import Path
from mediamirror.stores.local import LocalStore

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal past the limit
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
src, out, scratch = (Path(a) for a in sys.argv[1:])
for name, copy in [
    ("put_file", lambda: LocalStore(out).put_file("a/b/big.bin", src)),
    ("download", lambda: LocalStore(src.parent).download(src.name, scratch / "big.bin")),
]:
    try:
        copy()
    except OSError as exc:
        print(name, "failed", exc.errno)
    else:
        print(name, "copied")
"""


def test_a_copy_failing_half_way_leaves_no_part_file(tmp_path: Path) -> None:
    """A copy into (or out of) a local store that stops half-way (here at a file size
    limit, as on a full disk) removes its temporary file."""
    src = tmp_path / "in" / "big.bin"
    src.parent.mkdir()
    src.write_bytes(os.urandom(1 << 20))
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    script = tmp_path / "limited_copy.py"
    script.write_text(COPY_PAST_LIMIT)

    result = subprocess.run(
        [sys.executable, str(script), str(src), str(out), str(scratch)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    efbig = f"failed {errno.EFBIG}"
    assert result.stdout.split("\n")[:2] == [f"put_file {efbig}", f"download {efbig}"]
    assert [p for p in out.rglob("*") if p.is_file()] == []
    assert list(scratch.iterdir()) == []
