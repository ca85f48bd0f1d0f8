"""The PREMIERE pipeline end to end, through the real CLI: a GraphQL CMS record
(tests/feeds/cms.py) whose file is served over HTTP (tests/feeds/media.py) is synced,
downloaded once, kept in an S3 output store (moto), transcoded, analysed by a ``pose``
command whose results go to an S3 results store, and reported in one email (aiosmtpd) that
also reaches the record's owner. Then: ``reprocess --args`` replaces the results from the
kept original (the CMS is not asked again), and a worker killed mid-download completes the
record once after a restart.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.responses import FileResponse

from helpers import Cli, S3Server
from jobs.conftest import BASE_ENV, Lab, MediaKit
from mediamirror.catalog.db import Catalog
from mediamirror.notify.model import NOTIFICATIONS
from mediamirror.web.api import browse
from notify.conftest import SmtpServer

from .cms import CmsServer
from .media import MediaServer

pytestmark = pytest.mark.timeout(180)

DEADLINE = 60.0
OWNER = "ann@example.org"
DATASET = "/premiere/a1/Video Interview.avi"
ORIGINAL = "originals/premiere/a1/Interview.avi"
KILLED = "/premiere/k1/Video Kill.mp4"

#: The analysis command: reads its input whole, writes pose.json (and hands.json with
#: --hands), so the results show which file and which arguments it ran with.
POSE = """\
import argparse, json, pathlib
p = argparse.ArgumentParser()
p.add_argument("--video"); p.add_argument("--out"); p.add_argument("--hands", action="store_true")
a = p.parse_args()
data = pathlib.Path(a.video).read_bytes()
out = pathlib.Path(a.out)
(out / "pose.json").write_text(json.dumps({"bytes": len(data), "hands": a.hands}))
if a.hands:
    (out / "hands.json").write_text("{}")
print("pose: done")
"""


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    end = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> MediaKit:
    return MediaKit(tmp_path_factory.mktemp("feed-media"))


def new_lab(root: Path) -> Lab:
    url = f"sqlite:///{root / 'catalog.db'}"
    return Lab(root, Catalog(url), Cli(home=root / "home", database_url=url))


def bucket(s3_client: Any, kind: str) -> str:
    name = f"{kind}-{secrets.token_hex(4)}"
    s3_client.create_bucket(Bucket=name)
    return name


def s3_keys(s3_client: Any, name: str) -> list[str]:
    listing = s3_client.list_objects_v2(Bucket=name)
    return sorted(o["Key"] for o in listing.get("Contents", ()))


def s3_read(s3_client: Any, name: str, key: str) -> bytes:
    return bytes(s3_client.get_object(Bucket=name, Key=key)["Body"].read())


def configure(lab: Lab, cms: CmsServer, *, smtp: SmtpServer | None = None, **settings: Any) -> None:
    """config.yaml: the feed (token from ${CMS_TOKEN}), email, and ``settings``."""
    if smtp is not None:
        settings["email"] = smtp.email_block()
    lab.configure(feeds={"premiere": cms.feed_block()}, **settings)
    lab.cli.env.update(
        BASE_ENV,
        **cms.env,
        MEDIAMIRROR_NOTIFY_QUIET_SECONDS="0",
        MEDIAMIRROR_STORE_READ_TIMEOUT="10",
        MEDIAMIRROR_STORE_MAX_ATTEMPTS="3",
    )
    lab.run("source", "add", "premiere", "feed://premiere", "--mount", "/premiere")


def ready_notifications(lab: Lab) -> list[Any]:
    with lab.catalog.read() as conn:
        return list(
            conn.execute(select(NOTIFICATIONS).where(NOTIFICATIONS.c.kind == "dataset.ready"))
        )


# -- new record -> downloaded, transcoded, pose, results on S3, one email ---------------------


class Pipeline:
    def __init__(self, lab: Lab, smtp: SmtpServer, video: bytes, buckets: dict[str, str]):
        self.lab = lab
        self.smtp = smtp
        self.video = video
        self.buckets = buckets


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory,
    kit: MediaKit,
    _cms_server: CmsServer,
    _media_server: MediaServer,
    s3_server: S3Server,
    s3_client: Any,
) -> Iterator[Pipeline]:
    """One record through ``sync premiere --process`` (the crontab line)."""
    cms, media = _cms_server, _media_server
    cms.reset()
    media.reset()
    root = tmp_path_factory.mktemp("pipeline")
    lab = new_lab(root)
    smtp = SmtpServer()
    pose = root / "pose.py"
    pose.write_text(POSE, encoding="utf-8")
    videos, results = bucket(s3_client, "pcloudvideos"), bucket(s3_client, "pcloudresults")
    command = f"{sys.executable} {pose} --video {{input}} --out {{output_dir}} {{args}}"
    configure(
        lab,
        cms,
        smtp=smtp,
        output_store=f"s3://{videos}",
        output_endpoint_url=s3_server.endpoint,
        processors={
            "pose": {
                "command": command,
                "applies_to": ["video"],
                "results_store": f"s3://{results}",
            }
        },
    )
    video = kit["mpeg4-avi"].read_bytes()  # MPEG-4 part 2 in AVI: needs a transcode
    url = media.add("v/a1.avi", video)
    cms.add("a1", "Interview", url, size=len(video), owner=OWNER)
    out = lab.run("sync", "premiere", "--process", timeout=150)
    assert "jobs: 2 succeeded, 0 failed" in out.stdout, out
    yield Pipeline(lab, smtp, video, {"videos": videos, "results": results})
    smtp.stop()
    lab.catalog.close()
    cms.reset()
    media.reset()


def test_new_record_is_downloaded_once_processed_uploaded_and_reported_once(
    pipeline: Pipeline, _media_server: MediaServer, s3_client: Any
) -> None:
    lab, buckets = pipeline.lab, pipeline.buckets
    meta = lab.dataset(DATASET).meta
    assert meta["processing"]["video"]["state"] == "success"
    assert meta["processing"]["pose"]["state"] == "success"
    # Downloaded once, though two jobs (video, pose) needed the file at the same time.
    gets = _media_server.requests_for("v/a1.avi")
    assert len(gets) == 1, gets
    # The original is kept in the output store (their pcloudvideos) and recorded.
    assert meta["outputs"]["original"] == ORIGINAL
    assert meta["original"]["version"] == "v1" and meta["original"]["size"] == len(pipeline.video)
    assert s3_read(s3_client, buckets["videos"], ORIGINAL) == pipeline.video
    # Transcoded where needed: the playable MP4 is there too.
    assert meta["transcode"]["action"] == "transcode"
    assert meta["outputs"]["video"] in s3_keys(s3_client, buckets["videos"])
    # The pose command ran on the whole file; its results went to the results store.
    entry = meta["results"]["pose"]
    assert entry["keys"] == ["pose.json"]
    body = json.loads(s3_read(s3_client, buckets["results"], entry["prefix"] + "pose.json"))
    assert body == {"bytes": len(pipeline.video), "hands": False}
    # One email, to the configured recipients and to the record's owner in the same message.
    [mail] = pipeline.smtp.messages
    assert mail.subject.startswith("[mediamirror] ready: ") and DATASET in mail.subject
    assert set(mail.rcpt_tos) == {"me@example.org", "team@example.org", OWNER}
    assert OWNER in str(mail.message["To"])
    assert len(ready_notifications(lab)) == 1


def test_reprocess_replaces_the_results_from_the_kept_original(
    pipeline: Pipeline, _media_server: MediaServer, s3_client: Any
) -> None:
    lab, results = pipeline.lab, pipeline.buckets["results"]
    before = lab.dataset(DATASET).meta["results"]["pose"]
    asked = len(_media_server.requests_for("v/a1.avi"))
    out = lab.run("reprocess", "/premiere/a1", "--processor", "pose", "--args", "--hands")
    assert "queued 1 job(s) for 1 dataset(s)" in out.stdout, out
    lab.worker()
    after = lab.dataset(DATASET).meta["results"]["pose"]
    assert after["prefix"] != before["prefix"]
    assert after["keys"] == ["hands.json", "pose.json"] and after["args"] == "--hands"
    body = json.loads(s3_read(s3_client, results, after["prefix"] + "pose.json"))
    assert body == {"bytes": len(pipeline.video), "hands": True}
    # The previous set is gone once the new one is complete.
    keys = s3_keys(s3_client, results)
    assert not [k for k in keys if k.startswith(before["prefix"])], keys
    # Read from the kept original: the CMS's file was not fetched again.
    assert len(_media_server.requests_for("v/a1.avi")) == asked


def test_record_whose_file_404s_fails_once_with_its_reason(
    pipeline: Pipeline, _cms_server: CmsServer, _media_server: MediaServer
) -> None:
    lab = pipeline.lab
    _cms_server.add("b2", "Gone", _media_server.url("v/b2.avi"), size=1000, owner=OWNER)
    out = lab.run("sync", "premiere", "--process", ok=False, timeout=150)
    assert "jobs: 0 succeeded, 2 failed" in out.stdout, out
    jobs = lab.jobs_of("/premiere/b2/Video Gone.avi")
    assert sorted(j.processor for j in jobs) == ["pose", "video"]
    for job in jobs:  # a 404 is not retried, and says why in one line
        assert job.state == "error" and job.attempts == 1, job
        assert job.error.endswith("/v/b2.avi does not exist (HTTP 404)"), job.error
    # Both jobs needed the file and failed alike: one message, to the owner too.
    failed = [m for m in pipeline.smtp.messages if "failed" in m.subject]
    assert len(failed) == 1, [m.subject for m in pipeline.smtp.messages]
    assert "/premiere/b2/Video Gone.avi" in failed[0].subject and OWNER in failed[0].rcpt_tos
    assert "does not exist (HTTP 404)" in failed[0].part("text/plain")
    # The record stays visible, with its reason; the other dataset is untouched.
    meta = lab.dataset("/premiere/b2/Video Gone.avi").meta
    assert meta["processing"]["video"]["state"] == "error"
    assert lab.dataset(DATASET).meta["processing"]["pose"]["state"] == "success"


# -- a worker killed mid-download ------------------------------------------------------------


def test_worker_killed_mid_download_completes_the_record_once(
    tmp_path: Path, kit: MediaKit, cms: CmsServer, media: MediaServer
) -> None:
    lab = new_lab(tmp_path)
    try:
        configure(lab, cms)  # local output store, the built-in video processor only
        video = kit["h264-faststart"].read_bytes()  # web-ready: played as it is
        cms.add("k1", "Kill", media.add("v/k1.mp4", video), size=len(video))
        held = media.hold["v/k1.mp4"] = threading.Event()
        lab.run("sync", "premiere")  # queues the video job (auto post-processing)
        worker = lab.popen("worker")
        try:
            wait_for(lambda: media.held >= 1, "the download to be half-way")
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
        finally:
            held.set()
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
        del media.hold["v/k1.mp4"]
        lab.worker()  # the restarted worker takes the dead one's job (and download) over
        [job] = lab.jobs_of(KILLED)
        assert job.state == "success", job
        dataset = lab.dataset(KILLED)
        assert dataset.meta["processing"]["video"]["state"] == "success"
        assert dataset.meta["transcode"]["action"] == "keep"
        kept = lab.outputs / dataset.meta["outputs"]["original"]
        assert kept.read_bytes() == video  # whole, not the half the killed worker had
        # The cut one, then only the rest: the killed worker's bytes waited for the next
        # attempt (and its If-Range made sure they are of the same version).
        first, second = media.requests_for("v/k1.mp4")
        assert first.range is None and second.if_range is not None, (first, second)
        assert second.range is not None and int(second.range[6:-1]) >= len(video) // 2
        assert not list((lab.home / "tmp" / "partial").iterdir())  # nothing left behind
        assert len(ready_notifications(lab)) == 1
        assert not list((lab.home / "tmp").glob("job-*"))  # no scratch left behind
        # Played from the kept original, not from the CMS.
        played = browse.dataset_video(dataset.id, lab.services(), None)  # type: ignore[arg-type]
        assert isinstance(played, FileResponse) and Path(played.path) == kept
    finally:
        lab.catalog.close()


def test_file_server_down_for_a_while_is_retried_by_the_job_system(
    tmp_path: Path, kit: MediaKit, cms: CmsServer, media: MediaServer
) -> None:
    lab = new_lab(tmp_path)
    try:
        configure(lab, cms)  # 3 tries per download (store_max_attempts), then a job retry
        video = kit["h264-faststart"].read_bytes()
        cms.add("d1", "Down", media.add("v/d1.mp4", video), size=len(video))
        media.fail_times["v/d1.mp4"] = 4  # the first job attempt's 3 tries, then 1 more
        lab.run("sync", "premiere", "--process", timeout=120)
        [job] = lab.jobs_of("/premiere/d1/Video Down.mp4")
        assert job.state == "success" and job.attempts == 2, job
        meta = lab.dataset("/premiere/d1/Video Down.mp4").meta
        assert (lab.outputs / meta["outputs"]["original"]).read_bytes() == video
        assert "original_failed" not in meta  # the failure noted on the way is cleared
        assert len(media.requests_for("v/d1.mp4")) == 5
    finally:
        lab.catalog.close()
