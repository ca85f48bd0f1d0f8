"""Files still being written: a local file that is still growing is catalogued, but it is
processed only once its size and mtime have been stable for ``settle_seconds``, and then
exactly once. A real writer subprocess appends to the file while syncs and workers run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from jobs.conftest import Lab, MediaKit

SETTLE = "4"
# Appends a few bytes every 0.1 s until told to finish (or the data runs out), then
# writes the rest at once: a copy over a slow link.
WRITER = """
import os, sys, time
src, dest, finish = sys.argv[1], sys.argv[2], sys.argv[3]
data = open(src, "rb").read()
step = max(1, len(data) // 1000)
pos = 0
with open(dest, "ab") as fh:
    while pos < len(data) and not os.path.exists(finish):
        fh.write(data[pos : pos + step])
        fh.flush()
        pos += step
        time.sleep(0.1)
    fh.write(data[pos:])
"""


def _start_writer(src: Path, dest: Path, finish: Path) -> subprocess.Popen[bytes]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", WRITER, str(src), str(dest), str(finish)])


def _round(lab: Lab) -> None:
    """What a cron job does: sync (queueing post-processing), then drain the queue."""
    lab.run("sync", "src", "-q")
    lab.worker()


def test_a_growing_video_is_processed_once_after_it_settles(
    sqlite_lab: Lab, media: MediaKit
) -> None:
    lab = sqlite_lab
    lab.cli.env["MEDIAMIRROR_SETTLE_SECONDS"] = SETTLE
    lab.add_local_source()
    full = media["h264-faststart"]
    dest = lab.media / "cam" / "clip.mp4"
    finish = lab.root / "finish"
    writer = _start_writer(full, dest, finish)
    try:
        deadline = time.monotonic() + 30
        while not dest.exists():
            assert time.monotonic() < deadline, "the writer never started"
            time.sleep(0.05)
        for _ in range(2):
            _round(lab)
            assert writer.poll() is None, "the writer stopped before it was told to"
            assert lab.jobs() == [], "a job was queued for a file still being written"
        finish.touch()
        assert writer.wait(60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    dataset = "/src/cam/Video clip.mp4"
    # Catalogued all along (nothing looks deleted), only its processing waited.
    assert lab.dataset(dataset).meta["MarkForPostProcess"] is True
    assert dest.read_bytes() == full.read_bytes()

    deadline = time.monotonic() + 90
    while not lab.jobs():
        assert time.monotonic() < deadline, "the settled file was never processed"
        _round(lab)
    _round(lab)  # one more round after the job: nothing new to do

    (job,) = lab.jobs()
    assert job.state == "success", job
    meta = lab.dataset(dataset).meta
    assert meta["processing"]["video"]["state"] == "success"
    assert meta.get("MarkForPostProcess") is not True
    assert meta["fps"] == 25


def test_sync_says_which_datasets_wait_for_their_files(sqlite_lab: Lab, media: MediaKit) -> None:
    lab = sqlite_lab
    lab.cli.env["MEDIAMIRROR_SETTLE_SECONDS"] = "3600"  # every file is young for an hour
    lab.add_local_source()
    lab.put("cam/clip.mp4", media["h264-faststart"])

    out = lab.run("sync", "src", "-q").stdout

    assert "1 dataset(s) wait for files still being written" in out, out
    assert lab.jobs() == []
    # Once it is allowed to, the same catalog queues it: the mark was kept.
    lab.run("sync", "src", "-q", MEDIAMIRROR_SETTLE_SECONDS="0")
    assert [j.processor for j in lab.jobs()] == ["video"]
