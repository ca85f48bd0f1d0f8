"""The four seed systems of docs/profiles.md ("All four in one installation") side by side:
one home, one SQLite catalog, one config.yaml, the real CLI, real peers (the S3 API of
moto, a GraphQL CMS and an HTTP file server for the feed), and one crontab run
(``sync --all --process``). Each source's profile keeps its pipeline its own:

- dive (S3, ``--images sequence --processors video,images``): its PNG folder stays an
  image sequence although ``large_image_bytes=1`` would make every image of an ``auto``
  source a large image; its video is processed; no pyramid;
- rbsc (S3 prefix ``digital/``, ``--images large-image --processors pyramid --output
  s3://images --output-layout mirror``): its PNG becomes a pyramid at the mirrored key of
  the image bucket, and nothing but pyramids runs for it;
- premiere (``feed://premiere``, ``--processors video,pose``): its record gets video and
  pose, the pose results in the S3 results store; pose runs for no other source;
- viame (``gs://`` through the GCS preset, here pointed at moto with
  ``--endpoint-url``; ``--images sequence --processors video,images``): like dive.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pyvips
from sqlalchemy import select

from feeds.cms import CmsServer
from feeds.media import MediaServer
from helpers import Cli, Result, S3Bucket, S3Server
from jobs.conftest import BASE_ENV, MediaKit
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS, ITEMS, SOURCES
from mediamirror.jobs.model import JOBS

pytestmark = pytest.mark.timeout(180)

#: The analysis command of PREMIERE: writes pose.json naming the bytes it read.
POSE = """\
import argparse, json, pathlib
p = argparse.ArgumentParser()
p.add_argument("--video"); p.add_argument("--out")
a = p.parse_args()
data = pathlib.Path(a.video).read_bytes()
(pathlib.Path(a.out) / "pose.json").write_text(json.dumps({"bytes": len(data)}))
"""

FRAMES = ["survey/f1.png", "survey/f2.png"]
VIDEO = "clips/dive.mp4"
LANTERN = "digital/isaac_gala/lantern.png"
PREMIERE_DATASET = "/premiere/a1/Video Interview.mp4"


def gradient_png(width: int, height: int) -> bytes:
    xy = pyvips.Image.xyz(width, height)
    rgb = (xy[0] % 256).bandjoin([xy[1] % 256, (xy[0] + xy[1]) % 256]).cast("uchar")
    return bytes(rgb.pngsave_buffer())


@dataclass
class Installation:
    cli: Cli
    catalog: Catalog
    run: Result
    buckets: dict[str, S3Bucket]
    premiere_video: bytes

    def folders(self, source: str) -> dict[str, Any]:
        """The source's folders by path."""
        with self.catalog.read() as conn:
            rows = conn.execute(
                select(FOLDERS)
                .join(SOURCES, FOLDERS.c.source_id == SOURCES.c.id)
                .where(SOURCES.c.name == source)
            ).all()
        return {row.path: row for row in rows}

    def jobs_by_source(self) -> dict[str, list[Any]]:
        """Every job, under the name of the source its folder or item belongs to."""
        with self.catalog.read() as conn:
            names = dict(conn.execute(select(SOURCES.c.id, SOURCES.c.name)).all())
            folders = dict(conn.execute(select(FOLDERS.c.id, FOLDERS.c.source_id)).all())
            items = dict(conn.execute(select(ITEMS.c.id, ITEMS.c.source_id)).all())
            jobs = conn.execute(select(JOBS).order_by(JOBS.c.id)).all()
        out: dict[str, list[Any]] = {}
        for job in jobs:
            owners = folders if job.target_type == "folder" else items
            out.setdefault(names[owners[job.target_id]], []).append(job)
        return out


@pytest.fixture(scope="module")
def installation(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server, s3_client: Any
) -> Iterator[Installation]:
    root = tmp_path_factory.mktemp("side-by-side")
    kit = MediaKit(root / "kit")
    kit.root.mkdir()
    names = ("dive", "rbsc", "images", "results", "viame")
    buckets = {name: S3Bucket(s3_server, s3_client) for name in names}

    # Media: dive and viame a folder of two PNG frames and a video; rbsc one PNG.
    frame = gradient_png(64, 48)
    video = kit["h264-faststart"].read_bytes()
    for name in ("dive", "viame"):
        for key in FRAMES:
            buckets[name].put(key, frame)
        buckets[name].put(VIDEO, video)
    buckets["rbsc"].put(LANTERN, gradient_png(600, 400))

    cms, media = CmsServer(), MediaServer()
    with cms.running(), media:
        url = media.add("v/a1.mp4", video)
        cms.add("a1", "Interview", url, size=len(video), owner="ann@example.org")

        url_db = f"sqlite:///{root / 'catalog.db'}"
        cli = Cli(home=root / "home", database_url=url_db)
        cli.home.mkdir()
        cli.env.update(
            BASE_ENV,
            **cms.env,
            MEDIAMIRROR_LARGE_IMAGE_BYTES="1",  # an auto source: every image a large image
            MEDIAMIRROR_JOB_MAX_ATTEMPTS="1",
            MEDIAMIRROR_NOTIFY_QUIET_SECONDS="0",
            GS_ACCESS_KEY_ID="testing",  # moto takes any key; the gcs preset reads these
            GS_SECRET_ACCESS_KEY="testing",
        )
        pose = root / "pose.py"
        pose.write_text(POSE, encoding="utf-8")
        config = {
            # The installation's output store is <home>/outputs; S3 outputs (rbsc's image
            # bucket, the results store) are on the local S3 server.
            "output_endpoint_url": s3_server.endpoint,
            "feeds": {"premiere": cms.feed_block()},
            "processors": {
                "pose": {
                    "command": f"{sys.executable} {pose} --video {{input}} --out {{output_dir}}",
                    "applies_to": ["video"],
                    "auto": True,
                    "results_store": buckets["results"].url(),
                }
            },
        }
        (cli.home / "config.yaml").write_text(json.dumps(config), encoding="utf-8")

        s3 = ["--endpoint-url", s3_server.endpoint, "--preset", "minio"]
        sequence = ["--images", "sequence", "--processors", "video,images"]
        cli.run("source", "add", "dive", buckets["dive"].url(), *s3, "--mount", "/dive", *sequence)
        cli.run(
            "source", "add", "rbsc", buckets["rbsc"].url("digital"), *s3, "--mount", "/rbsc",
            "--images", "large-image", "--processors", "pyramid",
            "--output", buckets["images"].url(), "--output-layout", "mirror",
        )  # fmt: skip
        cli.run(
            "source", "add", "premiere", "feed://premiere", "--mount", "/premiere",
            "--processors", "video,pose",
        )  # fmt: skip
        # gs:// is Google Cloud Storage through its S3-interoperable API (the gcs preset,
        # GS_ACCESS_KEY_ID/GS_SECRET_ACCESS_KEY); --endpoint-url points it at moto.
        viame = f"gs://{buckets['viame'].name}"
        gcs = ["--preset", "gcs", "--endpoint-url", s3_server.endpoint]
        cli.run("source", "add", "viame", viame, *gcs, "--mount", "/gcs/viame", *sequence)

        run = cli.run("sync", "--all", "--process", timeout=150)

    catalog = Catalog(url_db)
    yield Installation(cli, catalog, run, buckets, video)
    catalog.close()


def test_one_crontab_run_runs_each_sources_processors_and_lays_out_its_images(
    installation: Installation, s3_client: Any
) -> None:
    inst = installation
    assert "jobs: 7 succeeded, 0 failed" in inst.run.stdout, str(inst.run)
    jobs = inst.jobs_by_source()
    # Each source's profile alone decides its jobs: no pyramid for dive or viame (their
    # images stay frames), nothing but pyramids for rbsc, pose for premiere alone.
    assert {name: sorted(j.processor for j in js) for name, js in jobs.items()} == {
        "dive": ["images", "video"],
        "viame": ["images", "video"],
        "rbsc": ["pyramid"],
        "premiere": ["pose", "video"],
    }
    assert all(j.state == "success" for js in jobs.values() for j in js), jobs

    # dive and viame: the PNG folder is an image sequence although large_image_bytes=1
    # would make each PNG of an auto source a large image; the video was processed.
    for source, mount in (("dive", "/dive"), ("viame", "/gcs/viame")):
        folders = inst.folders(source)
        survey = folders[f"{mount}/survey"]
        assert (survey.meta["type"], survey.meta["frames"]) == ("image-sequence", 2), source
        assert not [p for p in folders if "Large image" in p], sorted(folders)
        video = folders[f"{mount}/clips/Video dive.mp4"].meta
        assert video["processing"]["video"]["state"] == "success", source

    # rbsc: the pyramid is at the key relative to digital/, in the image bucket, and the
    # image bucket holds nothing else but its thumbnail.
    images = inst.buckets["images"]
    assert images.keys() == ["isaac_gala/lantern.thumb.jpg", "isaac_gala/lantern.tif"]
    body = s3_client.get_object(Bucket=images.name, Key="isaac_gala/lantern.tif")["Body"].read()
    pyramid = pyvips.Image.new_from_buffer(body, "")
    assert (pyramid.width, pyramid.height) == (600, 400)
    assert pyramid.get("n-pages") >= 2  # full size, 1/2, ...
    half = pyvips.Image.new_from_buffer(body, "", page=1)
    assert (half.width, half.height) == (300, 200)
    lantern = inst.folders("rbsc")["/rbsc/isaac_gala/Large image lantern.png"]
    assert lantern.meta["outputs"] == {
        "pyramid": "isaac_gala/lantern.tif",
        "thumbnail": "isaac_gala/lantern.thumb.jpg",
    }


def test_premiere_gets_video_and_pose_with_results_in_the_results_store(
    installation: Installation, s3_client: Any
) -> None:
    meta = installation.folders("premiere")[PREMIERE_DATASET].meta
    assert meta["processing"]["video"]["state"] == "success"
    assert meta["processing"]["pose"]["state"] == "success"
    entry = meta["results"]["pose"]
    assert entry["keys"] == ["pose.json"]
    results = installation.buckets["results"]
    body = s3_client.get_object(Bucket=results.name, Key=entry["prefix"] + "pose.json")
    assert json.loads(body["Body"].read()) == {"bytes": len(installation.premiere_video)}
    # Results of no other source are in the results store.
    stored = results.keys()
    assert all(k.startswith(entry["prefix"]) for k in stored), stored
