"""Per-source outputs: each source's derived files go to its profile's output store, named
by its output layout (catalog: today's names; mirror: the source's own keys); a store URL
with a prefix is used as given; outputs that would land in a source or mix with another
source's are refused; and, end to end, a PNG arriving by an S3 event becomes a pyramid at
the mirrored key of an image bucket, served by the IIIF endpoint, while a DIVE-style
source of the same installation keeps its image folder a sequence."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips
from sqlalchemy import select

from events.support import (
    Service,
    listed,
    next_sequencer,
    outcomes,
    s3_event,
    s3_record,
    start_service,
)
from helpers import Cli, S3Bucket, S3Server
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS, Source
from mediamirror.config import Settings
from mediamirror.errors import ConfigError, ConflictError
from mediamirror.processing.outputs import OutputNames, mirror_clash, result_set_prefix
from mediamirror.processing.processors.base import Dataset, ItemRef
from mediamirror.processing.transcode import ffmpeg_exe
from mediamirror.profiles import Profile
from mediamirror.services import Services
from mediamirror.sources import add_source, list_sources, set_source, sync_source
from mediamirror.stores import parse_spec
from mediamirror.stores.output import OutputStore, check_profile_outputs

ENV = dict(os.environ)
MINIO = "http://127.0.0.1:9000"

# -- names -----------------------------------------------------------------------------------------


def row(
    name: str, url: str, *, endpoint: str | None = MINIO, mount: str | None = None, **profile: Any
) -> Source:
    """A source row as the catalog would hold it (not saved), with a profile."""
    spec = parse_spec(url, endpoint_url=endpoint if url.startswith("s3") else None, env=ENV)
    return Source(
        name=name,
        url=spec.url,
        kind=spec.kind,
        bucket=spec.bucket,
        prefix=spec.prefix,
        preset=spec.preset,
        endpoint_url=spec.endpoint_url,
        region=spec.region,
        profile=None,
        addressing=spec.addressing,
        credentials={},
        mount=mount or f"/{name}",
        options={"profile": Profile(**profile).to_options()},
    )


def names(source: Source, store_url: str) -> OutputNames:
    return OutputNames.of(source, parse_spec(store_url, endpoint_url=MINIO, env=ENV))


def item(key: str) -> ItemRef:
    return ItemRef(1, key, key.rsplit("/", 1)[-1], 10, "e")


def dataset(path: str) -> Dataset:
    return Dataset(id=1, path=path, source_id=1, meta={})


def test_catalog_names_are_unchanged() -> None:
    src = row("rbsc", "s3://media/digital")
    out = names(src, "s3://derived/mm")
    lantern = item("digital/isaac_gala/lantern.png")
    video = item("digital/a/clip.mov")
    frame = item("digital/seq/f.tif")

    assert out.pyramid(dataset("/rbsc/isaac_gala/Large image lantern.png"), lantern) == (
        "pyramids/rbsc/digital/isaac_gala/lantern.png.tif"
    )
    clip = dataset("/rbsc/a/Video clip.mov")
    assert out.transcode(clip, video) == "rbsc/a/Video clip.mov/clip.mp4"
    assert out.poster(clip, video) == "rbsc/a/Video clip.mov/poster.jpg"
    assert out.frame(dataset("/rbsc/seq"), frame) == "rbsc/seq/frames/f.tif.jpg"
    store = parse_spec("s3://derived/mm", endpoint_url=MINIO, env=ENV)
    assert result_set_prefix(store, clip, "pose", "7-ab") == (
        "results/rbsc/a/Video clip.mov/pose/7-ab/"
    )


def test_mirror_names_follow_the_key_relative_to_the_source_prefix() -> None:
    src = row("rbsc", "s3://media/digital", output_url="s3://images", output_layout="mirror")
    out = names(src, "s3://images")
    ds = dataset("/rbsc/whatever")

    assert out.pyramid(ds, item("digital/isaac_gala/lantern.png")) == "isaac_gala/lantern.tif"
    assert out.transcode(ds, item("digital/a/clip.mov")) == "a/clip.mp4"
    assert out.poster(ds, item("digital/a/clip.mov")) == "a/clip.poster.jpg"
    assert out.frame(ds, item("digital/seq/f.tif")) == "seq/f.tif.jpg"
    assert out.pyramid(ds, item("digital/top.jpeg")) == "top.tif"
    assert out.pyramid(ds, item("digital/noext")) == "noext.tif"
    # Keys that climb or alias stay inside the output prefix (mediamirror.paths).
    assert out.pyramid(ds, item("digital/a/../b.png")) == "a/%2E%2E/b.tif"
    assert out.transcode(ds, item("digital/x//y.mov")) == "x/%/y.mp4"
    # A local source's keys have no prefix.
    local = row("dir", "file:///srv/media", output_url="s3://images", output_layout="mirror")
    assert names(local, "s3://images").pyramid(ds, item("a/b.png")) == "a/b.tif"


def test_mirror_names_of_different_kinds_never_meet() -> None:
    src = row("m", "s3://media", output_url="s3://images", output_layout="mirror")
    out = names(src, "s3://images")
    ds = dataset("/m/x")
    made = [
        out.pyramid(ds, item("x/poster.png")),
        out.pyramid(ds, item("x/clip.png")),
        out.transcode(ds, item("x/clip.mov")),
        out.poster(ds, item("x/clip.mov")),
        out.frame(ds, item("x/clip.poster.tif")),
        out.frame(ds, item("x/clip.jpg.tif")),
        out.pyramid(ds, item("x/clip.poster.png")),
    ]
    assert len(set(made)) == len(made), made


def test_a_store_url_with_a_prefix_is_used_as_given() -> None:
    """The doubled prefix: an output store ``.../pyramids`` gets ``pyramids/<source>/...``,
    not ``pyramids/pyramids/<source>/...``; other prefixes keep the kind folder."""
    src = row("rbsc", "s3://media/digital")
    lantern = item("digital/isaac_gala/lantern.png")
    ds = dataset("/rbsc/isaac_gala/Large image lantern.png")
    keys = {}
    for url in ["s3://images/pyramids", "s3://images/pyramids/", "s3://images/derived"]:
        spec = parse_spec(url, endpoint_url=MINIO, env=ENV)
        keys[url] = OutputStore(spec, ENV).key(names(src, url).pyramid(ds, lantern))
    assert keys == {
        "s3://images/pyramids": "pyramids/rbsc/digital/isaac_gala/lantern.png.tif",
        "s3://images/pyramids/": "pyramids/rbsc/digital/isaac_gala/lantern.png.tif",
        "s3://images/derived": "derived/pyramids/rbsc/digital/isaac_gala/lantern.png.tif",
    }
    results = parse_spec("s3://r/premiere/results", endpoint_url=MINIO, env=ENV)
    assert result_set_prefix(results, ds, "pose", "1-a").startswith("rbsc/isaac_gala/")


@pytest.mark.postgres
def test_two_keys_with_one_mirror_name_are_found(tmp_path: Path, catalog: Catalog) -> None:
    """``scan.svs`` and ``scan.ndpi`` would share ``scan.tif``: the job of either learns
    the other's key; in the catalog layout their names differ, so nothing clashes."""
    media = tmp_path / "media"
    (media / "slides").mkdir(parents=True)
    for name in ("scan.svs", "scan.ndpi", "scan.json", "other.svs"):
        (media / "slides" / name).write_bytes(b"x")
    settings = Settings(home=str(tmp_path / "home"), settle_seconds=0)
    images = tmp_path / "images"
    mirror = add_source(catalog, "m", f"file://{media}", env=ENV)
    sync_source(catalog, settings, "m", ENV)
    store = parse_spec(f"file://{images}", env=ENV)
    as_mirror = row("m", f"file://{media}", output_url=f"file://{images}", output_layout="mirror")
    svs = item("slides/scan.svs")

    found = mirror_clash(
        catalog, OutputNames.of(as_mirror, store), mirror.id, svs, "large-image", {"svs", "ndpi"}
    )
    alone = mirror_clash(
        catalog,
        OutputNames.of(as_mirror, store),
        mirror.id,
        item("slides/other.svs"),
        "large-image",
        {"svs", "ndpi"},
    )
    catalog_names = mirror_clash(
        catalog, OutputNames.of(mirror, store), mirror.id, svs, "large-image", {"svs", "ndpi"}
    )

    assert (found, alone, catalog_names) == ("slides/scan.ndpi", None, None)


# -- refusals ------------------------------------------------------------------------------------


def settings(**values: Any) -> Settings:
    return Settings(
        home="/tmp/mm-home",
        output_store=values.pop("output_store", "s3://derived/mm"),
        output_endpoint_url=MINIO,
        **values,
    )


def check(new: Source, *others: Source, configured: Settings | None = None) -> None:
    from mediamirror.profiles import profile_of
    from mediamirror.sources import spec_of

    check_profile_outputs(
        new.name, spec_of(new), profile_of(new), others, settings=configured or settings(), env=ENV
    )


@pytest.mark.parametrize(
    ("new", "others", "message"),
    [
        (
            row("a", "s3://media/a", output_url="s3://media"),
            [],
            "overlaps the source s3://media/a/",
        ),
        (
            row("a", "s3://media/a", output_url="s3://media/b/out"),
            [row("b", "s3://media/b")],
            "overlaps the source s3://media/b/",
        ),
        (
            row("a", "s3://media/a"),
            [row("b", "s3://other", output_url="s3://media")],
            "the outputs of source 'b'",
        ),
        (
            row("a", "s3://media/a", output_layout="mirror"),
            [],
            "overlaps the installation's store s3://derived/mm/",
        ),
        (
            row("a", "s3://media/a", output_url="s3://derived", output_layout="mirror"),
            [],
            "overlaps the installation's store s3://derived/mm/",
        ),
    ],
    ids=[
        "own-source",
        "other-source",
        "source-in-other-output",
        "mirror-default",
        "mirror-holds-installation",
    ],
)
def test_outputs_that_land_in_a_source_or_among_catalog_names_are_refused(
    new: Source, others: list[Source], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check(new, *others)


def test_a_mirror_output_over_a_results_store_is_refused() -> None:
    configured = settings(results_store="s3://images/results")
    with pytest.raises(ConfigError, match="s3://images/results/"):
        check(
            row("a", "s3://media", output_url="s3://images", output_layout="mirror"),
            configured=configured,
        )


@pytest.mark.parametrize(
    ("new", "other"),
    [
        (
            row("a", "s3://m/a", output_url="s3://images", output_layout="mirror"),
            row("b", "s3://m/b", output_url="s3://images", output_layout="mirror"),
        ),
        (
            row("a", "s3://m/a", output_url="s3://images/sub", output_layout="mirror"),
            row("b", "s3://m/b", output_url="s3://images", output_layout="mirror"),
        ),
        (
            row("a", "s3://m/a", output_url="s3://images", output_layout="mirror"),
            row("b", "s3://m/b", output_url="s3://images/x"),
        ),
        (
            row("a", "s3://m/a", output_url="s3://images/x"),
            row("b", "s3://m/b", output_url="s3://images", output_layout="mirror"),
        ),
        (
            row("a", "s3://m/a", output_url="s3://images", output_layout="mirror"),
            row(
                "b",
                "s3://m/b",
                output_url="s3://images/",
                output_layout="mirror",
                output_endpoint_url="http://LOCALHOST:9000/",
            ),
        ),
    ],
    ids=[
        "two-mirrors",
        "mirror-inside-mirror",
        "catalog-inside-mirror",
        "mirror-inside-catalog",
        "endpoint-spelling",
    ],
)
def test_outputs_that_would_mix_are_refused_naming_the_other_source(
    new: Source, other: Source
) -> None:
    with pytest.raises(ConflictError, match="outputs of source 'b'") as err:
        check(new, other)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("new", "other"),
    [
        (row("a", "s3://m/a"), row("b", "s3://m/b")),
        (
            row("a", "s3://m/a", output_url="s3://shared"),
            row("b", "s3://m/b", output_url="s3://shared"),
        ),
        (
            row("a", "s3://m/a", output_url="s3://images/a", output_layout="mirror"),
            row("b", "s3://m/b", output_url="s3://images/b", output_layout="mirror"),
        ),
        (
            row("a", "s3://m/a", output_url="s3://images/a", output_layout="mirror"),
            row("b", "s3://m/b"),
        ),
        (
            row("a", "s3://m/a", output_url="s3://images", output_layout="mirror"),
            row(
                "b",
                "s3://m/b",
                output_url="s3://images",
                output_layout="mirror",
                output_endpoint_url="http://127.0.0.1:9001",
            ),
        ),
    ],
    ids=[
        "catalog-in-installation",
        "catalog-shared",
        "mirror-apart",
        "mirror-and-installation",
        "other-endpoint",
    ],
)
def test_outputs_that_cannot_meet_are_allowed(new: Source, other: Source) -> None:
    check(new, other)
    check(other, new)


def test_an_edited_source_is_not_compared_with_itself() -> None:
    before = row("a", "s3://m/a", output_url="s3://images", output_layout="mirror")
    after = row("a", "s3://m/a", output_url="s3://images/v2", output_layout="mirror")
    check(after, before, row("b", "s3://m/b"))


def test_each_source_gets_its_own_output_store_and_an_edit_a_new_one(tmp_path: Path) -> None:
    catalog = Catalog("sqlite://")
    configured = Settings(home=str(tmp_path / "home"))
    svc = Services(catalog, configured, ENV)
    (tmp_path / "media").mkdir()
    first, second = f"file://{tmp_path / 'out1'}", f"file://{tmp_path / 'out2'}"
    plain = add_source(catalog, "plain", f"file://{tmp_path / 'media'}", env=ENV)
    own = add_source(
        catalog, "own", f"file://{tmp_path / 'media'}", env=ENV, settings=configured,
        mount="/own", output_url=first,
    )  # fmt: skip
    mirrored = add_source(
        catalog, "mirrored", f"file://{tmp_path / 'media'}", env=ENV, settings=configured,
        mount="/mirrored", output_url=f"file://{tmp_path / 'images'}", output_layout="mirror",
    )  # fmt: skip

    assert svc.output_store_for(plain.id) is svc.output_store()
    assert svc.output_store_for(own.id).spec.url == first
    assert svc.output_store_for(own.id) is svc.output_store_for(own.id)
    # Results: in the source's own store (catalog layout), the installation's (mirror),
    # or where the processor says.
    assert svc.results_store_for(own.id) is svc.output_store_for(own.id)
    assert svc.results_store_for(mirrored.id) is svc.output_store()
    assert svc.results_store_for(own.id, second).spec.url == second

    set_source(catalog, "own", env=ENV, settings=configured, output_url=second)
    assert svc.output_store_for(own.id).spec.url == second
    set_source(catalog, "own", env=ENV, settings=configured, output_url="")
    assert svc.output_store_for(own.id) is svc.output_store()
    catalog.close()


def test_source_add_refuses_a_colliding_mirror_and_keeps_nothing(tmp_path: Path) -> None:
    catalog = Catalog("sqlite://")
    configured = Settings(home=str(tmp_path / "home"))
    images = f"file://{tmp_path / 'images'}"
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    add_source(
        catalog,
        "a",
        f"file://{tmp_path / 'a'}",
        env=ENV,
        settings=configured,
        output_url=images,
        output_layout="mirror",
    )
    with pytest.raises(ConflictError, match="outputs of source 'a'"):
        add_source(
            catalog,
            "b",
            f"file://{tmp_path / 'b'}",
            env=ENV,
            settings=configured,
            output_url=f"{images}/b",
            output_layout="mirror",
        )
    with pytest.raises(ConfigError, match="outputs of source 'a'"):
        add_source(catalog, "c", images, env=ENV, settings=configured)
    assert [s.name for s in list_sources(catalog)] == ["a"]
    catalog.close()


# -- end to end: Notre Dame's pipeline beside a DIVE-style source ----------------------------


def gradient_png(width: int, height: int) -> bytes:
    """An RGB image whose pixels tell where they are (tiles are checked against it)."""
    xy = pyvips.Image.xyz(width, height)
    rgb = (xy[0] % 256).bandjoin([xy[1] % 256, (xy[0] + xy[1]) % 256]).cast("uchar")
    return bytes(rgb.pngsave_buffer())


def multipart_put(bucket: S3Bucket, key: str, body: bytes) -> None:
    """Upload ``key`` the way a storage gateway does: one multipart upload."""
    client = bucket.client
    upload = client.create_multipart_upload(Bucket=bucket.name, Key=key, ContentType="image/png")
    part = client.upload_part(
        Bucket=bucket.name, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=body
    )
    client.complete_multipart_upload(
        Bucket=bucket.name,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )


def push(svc: Service, token: str, bucket: S3Bucket, key: str, event: str) -> Any:
    info = listed(bucket, key)
    record = s3_record(
        bucket.name, key, event, size=info["size"], etag=info["etag"], sequencer=next_sequencer()
    )
    resp = svc.post("s3", s3_event(record), token=token)
    assert resp.status_code == 200, resp.text
    assert outcomes(resp) == ["applied"], resp.text
    return resp.json()["results"][0]


@pytest.fixture
def served(tmp_path: Path, sqlite_url: str, s3_server: S3Server) -> Iterator[Service]:
    """The app on a SQLite catalog whose installation output store is local and whose
    ``output_endpoint_url`` is the S3 server (the default endpoint of profile outputs).
    ``large_image_bytes=1``: an ``auto`` source would make every image a large image."""
    svc = start_service(
        tmp_path / "svc",
        sqlite_url,
        sns_url_pattern=r"^https://sns\.invalid/",
        output_endpoint_url=s3_server.endpoint,
        events_settle_seconds=0,
        large_image_bytes=1,
    )
    yield svc
    svc.stop()


@pytest.mark.timeout(120)
def test_a_png_pushed_by_an_s3_event_becomes_a_mirrored_pyramid_served_by_iiif(
    served: Service, s3_server: S3Server, s3_client: Any
) -> None:
    svc = served
    media, images, dive = (S3Bucket(s3_server, s3_client) for _ in range(3))
    common: dict[str, Any] = {"env": svc.env, "settings": svc.services.settings}
    add_source(
        svc.catalog,
        "rbsc",
        media.url("digital"),
        images="large-image",
        processors="pyramid",
        output_url=images.url(),
        output_layout="mirror",
        **common,
        **media.options,
    )
    add_source(svc.catalog, "dive", dive.url(), images="sequence", **common, **dive.options)
    png = gradient_png(1024, 768)
    key = "digital/isaac_gala/lantern.png"
    multipart_put(media, key, png)
    frames = ["seq/f1.png", "seq/f2.png"]
    for frame in frames:
        dive.put(frame, gradient_png(64, 48))

    result = push(svc, svc.push_token("rbsc"), media, key, "ObjectCreated:CompleteMultipartUpload")
    dive_token = svc.push_token("dive")
    for frame in frames:
        push(svc, dive_token, dive, frame, "ObjectCreated:Put")

    assert result["dataset"] == "/rbsc/isaac_gala/Large image lantern.png"
    dataset = svc.folder(result["dataset"])
    assert [j.processor for j in svc.jobs_of(dataset.id)] == ["pyramid"]
    sequence = svc.folder("/dive/seq")
    assert sequence.meta["type"] == "image-sequence"
    cli = Cli(home=svc.home, database_url=svc.database_url, env=dict(svc.env))
    worker = cli.run(
        "worker",
        "--burst",
        env={"MEDIAMIRROR_OUTPUT_ENDPOINT_URL": s3_server.endpoint},
        timeout=120,
    )
    assert "error" not in worker.stdout, worker.stdout

    # The image bucket mirrors the source: nothing but the pyramid and its thumbnail, at
    # the key's stem.
    assert images.keys() == ["isaac_gala/lantern.thumb.jpg", "isaac_gala/lantern.tif"]
    assert svc.folder(result["dataset"]).meta["outputs"] == {
        "pyramid": "isaac_gala/lantern.tif",
        "thumbnail": "isaac_gala/lantern.thumb.jpg",
    }
    body = s3_client.get_object(Bucket=images.name, Key="isaac_gala/lantern.tif")["Body"].read()
    pyramid = pyvips.Image.new_from_buffer(body, "")
    assert (pyramid.width, pyramid.height) == (1024, 768)
    assert pyramid.get("n-pages") >= 3  # full size, 1/2, 1/4 ...
    half = pyvips.Image.new_from_buffer(body, "", page=1)
    assert (half.width, half.height) == (512, 384)
    assert not (svc.home / "outputs" / "pyramids").exists()

    # Served by the IIIF endpoint from the image bucket.
    auth = {"Authorization": f"Bearer {svc.viewer_token()}"}
    base = f"{svc.base}/iiif/3/{dataset.id}"
    info = svc.client.get(f"{base}/info.json", headers=auth)
    assert info.status_code == 200, info.text
    assert (info.json()["width"], info.json()["height"]) == (1024, 768)
    tile = svc.client.get(f"{base}/256,256,256,256/256,/0/default.png", headers=auth)
    assert tile.status_code == 200, tile.text
    got = pyvips.Image.new_from_buffer(tile.content, "")
    expected = pyvips.Image.new_from_buffer(png, "").crop(256, 256, 256, 256)
    assert float((got.cast("int") - expected.cast("int")).abs().avg()) < 1.0

    # The DIVE-style source kept its image folder a sequence, frames and all.
    sequence = svc.folder("/dive/seq")
    assert sequence.meta["type"] == "image-sequence"
    assert sequence.meta["frames"] == 2
    with svc.catalog.read() as conn:
        paths = set(conn.execute(select(FOLDERS.c.path)).scalars())
    assert not [p for p in paths if p.startswith("/dive/") and "Large image" in p], paths


def mpeg4_avi(path: Path) -> Path:
    """160x120, 15 fps, 1 s, MPEG-4 part 2 in AVI: browsers need a transcode."""
    lavfi = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=15:d=1"]
    quiet = ["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    codec = ["-c:v", "mpeg4", "-q:v", "5"]
    subprocess.run([ffmpeg_exe(), *quiet, *lavfi, *codec, str(path)], check=True, timeout=60)
    return path


@pytest.mark.timeout(120)
def test_a_mirror_source_transcodes_beside_its_keys_and_refuses_shared_names(
    served: Service, tmp_path: Path
) -> None:
    """A local mirror-layout source: its video's transcode and poster are the key's stem
    with ``.mp4`` and ``.poster.jpg``, served from there; two slides that would share a
    pyramid name both fail with one line instead of replacing each other's."""
    svc = served
    media, mirror = tmp_path / "media", tmp_path / "mirror"
    (media / "a").mkdir(parents=True)
    (media / "b").mkdir()
    mpeg4_avi(media / "a" / "clip.avi")
    for name, level in (("scan.svs", 40), ("scan.ndpi", 200)):
        (pyvips.Image.black(64, 48, bands=3) + level).cast("uchar").tiffsave(
            str(media / "b" / name)
        )
    add_source(
        svc.catalog,
        "m",
        f"file://{media}",
        env=svc.env,
        settings=svc.services.settings,
        output_url=f"file://{mirror}",
        output_layout="mirror",
    )
    cli = Cli(home=svc.home, database_url=svc.database_url, env=dict(svc.env))
    fast = {
        "MEDIAMIRROR_SETTLE_SECONDS": "0",
        "MEDIAMIRROR_AUTO_POSTPROCESS": "true",
        "MEDIAMIRROR_TRANSCODE_PRESET": "ultrafast",
        "MEDIAMIRROR_JOB_MAX_ATTEMPTS": "1",
    }
    cli.run("sync", "m", env=fast)
    cli.run("worker", "--burst", env=fast, timeout=120)

    assert sorted(p.relative_to(mirror).as_posix() for p in mirror.rglob("*") if p.is_file()) == [
        "a/clip.mp4",
        "a/clip.poster.jpg",
    ]
    video = svc.folder("/m/a/Video clip.avi")
    assert video.meta["outputs"] == {"video": "a/clip.mp4", "poster": "a/clip.poster.jpg"}
    auth = {"Authorization": f"Bearer {svc.viewer_token()}"}
    for what, rel in (("video", "a/clip.mp4"), ("poster", "a/clip.poster.jpg")):
        resp = svc.client.get(f"{svc.base}/api/v1/datasets/{video.id}/{what}", headers=auth)
        assert resp.status_code == 200, resp.text
        assert resp.content == (mirror / rel).read_bytes()
    for name, other in (("scan.svs", "b/scan.ndpi"), ("scan.ndpi", "b/scan.svs")):
        [job] = svc.jobs_of(svc.folder(f"/m/b/Large image {name}").id)
        assert (job.processor, job.state) == ("pyramid", "error")
        assert job.error.startswith(f"{other} would have the same pyramid b/scan.tif"), job.error
