"""Layout rules: what each key becomes (DIVE's S3 import conventions).

The rules are checked on the pure functions, then end to end through a sync of a bucket on
the S3 API server, and the large-image threshold through the CLI and its setting.
"""

from __future__ import annotations

import pytest

from helpers import Cli, S3Bucket, add_source, catalog_folders, item_folders, sync
from mediamirror.catalog.db import Catalog
from mediamirror.sync.layout import (
    DatasetType,
    Kind,
    Layout,
    Placement,
    classify,
    dataset_metadata,
    group_prefix,
)

BIG = 1000  # large_image_bytes used by these tests


def layout(prefix: str = "") -> Layout:
    return Layout(prefix, lambda key: f"s3://bkt/{key}", BIG)


def place(key: str, size: int = 10, *, others: tuple[str, ...] = (), prefix: str = "") -> Placement:
    lay = layout(prefix)
    videos = lay.videos_by_stem((k, 10) for k in (key, *others))
    return lay.place(key, size, videos)


@pytest.mark.parametrize("name", ["clip.mov", "CLIP.MOV", "Clip.Mp4", "x.y.mkv", "a.webm"])
def test_video_extensions_are_case_insensitive(name: str) -> None:
    assert classify(name, 1, BIG) is Kind.VIDEO


@pytest.mark.parametrize(
    ("name", "size", "kind"),
    [
        ("scan.svs", 1, Kind.LARGE_IMAGE),
        ("SCAN.NDPI", 1, Kind.LARGE_IMAGE),
        ("frame.png", BIG - 1, Kind.IMAGE),
        ("frame.PNG", BIG, Kind.LARGE_IMAGE),
        ("photo.jpeg", BIG + 1, Kind.LARGE_IMAGE),
        ("clip.json", 1, Kind.SIDECAR),
        ("clip.CSV", 1, Kind.SIDECAR),
        ("readme", 1, Kind.OTHER),
        (".mov", 1, Kind.OTHER),  # a dot file, not a video named ""
        ("notes.txt", BIG * 10, Kind.OTHER),
    ],
)
def test_classify(name: str, size: int, kind: Kind) -> None:
    assert classify(name, size, BIG) is kind


def test_video_becomes_its_own_dataset_with_dive_metadata() -> None:
    p = place("a/b/CLIP.MOV")
    assert p.folder == "a/b/Video CLIP.MOV"
    assert dataset_metadata(p) == {
        "type": "video",
        "fps": -1,
        "import_path": "a/b",
        "import_source": "s3://bkt/a/b/CLIP.MOV",
        "MarkForPostProcess": True,
    }


def test_video_under_a_source_prefix_keeps_the_full_key_in_metadata() -> None:
    p = place("pre/a/clip.mp4", prefix="pre/")
    assert p.folder == "a/Video clip.mp4"  # relative to the mount
    assert (p.import_path, p.import_source) == ("pre/a", "s3://bkt/pre/a/clip.mp4")


def test_images_make_their_folder_an_image_sequence() -> None:
    p = place("shots/day1/0001.jpg")
    assert p.folder == "shots/day1"
    assert dataset_metadata(p) == {
        "type": "image-sequence",
        "fps": -1,
        "import_path": "shots/day1",
        "import_source": "s3://bkt/shots/day1/",
        "MarkForPostProcess": True,
    }


@pytest.mark.parametrize(("key", "size"), [("slides/s1.svs", 5), ("maps/huge.tif", BIG)])
def test_large_images_get_their_own_dataset(key: str, size: int) -> None:
    p = place(key, size)
    name = key.rsplit("/", 1)[1]
    assert p.folder == f"{key.rsplit('/', 1)[0]}/Large image {name}"
    assert p.dataset is DatasetType.LARGE_IMAGE
    meta = dataset_metadata(p)
    assert meta["type"] == "large-image"
    assert meta["import_source"] == f"s3://bkt/{key}"
    assert (meta["fps"], meta["MarkForPostProcess"]) == (-1, True)


@pytest.mark.parametrize("sidecar", ["clip.json", "clip.csv", "clip.mov.json", "clip.mov.csv"])
def test_sidecars_join_the_video_dataset(sidecar: str) -> None:
    p = place(f"d/{sidecar}", others=("d/clip.mov",))
    assert p.folder == "d/Video clip.mov"
    assert p.dataset is None  # it joins the dataset, it does not make one


def test_sidecars_without_a_video_and_other_files_stay_plain() -> None:
    assert place("d/clip.json") == Placement(folder="d")
    assert place("d/clip.json", others=("e/clip.mov",)) == Placement(folder="d")
    assert place("d/other.json", others=("d/clip.mov",)) == Placement(folder="d")
    assert place("d/report.pdf", others=("d/clip.mov",)) == Placement(folder="d")
    assert place("top.txt") == Placement(folder="")


#: Keys of every kind, in listing order, with the awkward cases of the key-based fast
#: path: a prefix cutting into the last segment, dots at a name's start, upper case,
#: unsafe segments, sidecars with and without their video.
LISTED = [
    ("pre", 10),
    ("pre.jpg", 10),
    ("pre.x/a.bin", 10),
    ("pre/.jpg", 10),
    ("pre/a..b/.hidden", 10),
    ("pre/a/../b/f.tif", 10),
    ("pre/a//c.txt", 10),
    ("pre/d/clip.json", 10),
    ("pre/d/clip.mov", 10),
    ("pre/d/clip.mov.csv", 10),
    ("pre/d/f%2E.bin", 10),
    ("pre/d/frame.JPG", 10),
    ("pre/d/huge.png", BIG),
    ("pre/d/note", 10),
    ("pre/d/other.json", 10),
    ("pre/d/slide.SVS", 10),
    ("pre/d/x.tar.gz", 10),
    ("pre/e/a.bin", 10),
    ("pre/e/b.jpeg", 10),
    ("pre/e/c.bin", 10),
    ("prefix/a.mp4", 10),
    ("prefixed.bin", 10),
]


@pytest.mark.parametrize("images", ["auto", "large-image", "sequence"])
@pytest.mark.parametrize("prefix", ["", "pre/", "pre", "pre/d/cl"])
def test_place_listed_places_each_key_as_place_does(prefix: str, images: str) -> None:
    """The batch placement (a plain file's folder found once per folder) gives what
    :meth:`Layout.place` gives key by key, in any order."""
    listed = [(k, size) for k, size in LISTED if k.startswith(prefix) and k != prefix]
    for lay_videos in (False, True):
        lay = Layout(prefix, lambda key: f"s3://bkt/{key}", BIG, images)
        videos = lay.videos_by_stem(listed) if lay_videos else {}
        expected = [lay.place(k, size, videos) for k, size in listed]
        assert lay.place_listed(listed, videos) == expected
        shuffled = listed[1::2] + listed[::2]
        assert lay.place_listed(shuffled, videos) == [
            lay.place(k, size, videos) for k, size in shuffled
        ]


def test_group_prefix_keeps_a_video_and_its_sidecars_together() -> None:
    assert group_prefix("a/b/clip.mov.json") == "a/b/clip."
    assert group_prefix("a/b.d/clip") is None
    assert group_prefix("a/.hidden") is None


@pytest.mark.postgres
def test_layout_in_the_catalog_after_a_sync(catalog: Catalog, bucket: S3Bucket) -> None:
    keys = {
        "a/b/CLIP.MOV": b"v",
        "a/b/CLIP.json": b"{}",
        "a/b/CLIP.csv": b"t,x",
        "a/b/CLIP.MOV.json": b"{}",
        "a/b/readme.txt": b"r",
        "seq/0001.png": b"p",
        "seq/0002.png": b"p",
        "slides/s1.svs": b"s",
        "maps/huge.tif": b"t" * 2048,
    }
    for key, body in keys.items():
        bucket.put(key, body)
    add_source(catalog, "src", bucket)

    sync(catalog, "src", large_image_bytes=2048)

    where = item_folders(catalog)
    video = "/src/a/b/Video CLIP.MOV"
    assert {k: where[k] for k in keys} == {
        "a/b/CLIP.MOV": video,
        "a/b/CLIP.json": video,
        "a/b/CLIP.csv": video,
        "a/b/CLIP.MOV.json": video,
        "a/b/readme.txt": "/src/a/b",
        "seq/0001.png": "/src/seq",
        "seq/0002.png": "/src/seq",
        "slides/s1.svs": "/src/slides/Large image s1.svs",
        "maps/huge.tif": "/src/maps/Large image huge.tif",
    }
    folders = catalog_folders(catalog)
    b = bucket.name
    assert folders[video].meta == {
        "type": "video",
        "fps": -1,
        "import_path": "a/b",
        "import_source": f"s3://{b}/a/b/CLIP.MOV",
        "MarkForPostProcess": True,
    }
    assert folders["/src/seq"].meta == {
        "type": "image-sequence",
        "fps": -1,
        "import_path": "seq",
        "import_source": f"s3://{b}/seq/",
        "MarkForPostProcess": True,
    }
    assert folders["/src/slides/Large image s1.svs"].meta["type"] == "large-image"
    assert folders["/src/maps/Large image huge.tif"].meta["import_source"] == (
        f"s3://{b}/maps/huge.tif"
    )
    for plain in ["/src", "/src/a", "/src/a/b", "/src/slides", "/src/maps"]:
        assert folders[plain].meta == {}, plain


def test_large_image_threshold_is_a_setting(sqlite_cli: Cli, bucket: S3Bucket) -> None:
    """MEDIAMIRROR_LARGE_IMAGE_BYTES decides, through the real CLI, when a PNG stands alone."""
    bucket.put("img/small.png", b"p" * 99)
    bucket.put("img/big.png", b"p" * 100)
    env = {"MEDIAMIRROR_LARGE_IMAGE_BYTES": "100"}
    sqlite_cli.run("source", "add", "src", bucket.url(), *bucket.cli_options, env=env)
    sqlite_cli.run("sync", "src", env=env)
    doc = sqlite_cli.run("ls", "/src", "--recursive", "--json").json()

    where = {item["key"]: item["folder"] for item in doc["items"]}
    assert where == {"img/big.png": "/src/img/Large image big.png", "img/small.png": "/src/img"}
    types = {f["path"]: f["meta"].get("type") for f in doc["folders"]}
    assert types["/src/img"] == "image-sequence"
    assert types["/src/img/Large image big.png"] == "large-image"
