"""Disk full / scratch gone: a job whose scratch disk fills up fails with one clear reason
and leaves no partial output visible; the worker goes on with the next job.

The scratch disk is a real, tiny tmpfs mounted over the worker's scratch folder
(``<home>/tmp``). Mounting needs root (CI containers run the tests as root)."""

from __future__ import annotations

import os
import subprocess
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
