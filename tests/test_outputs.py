"""Where derived things go: keys with ``.``, ``..`` and empty segments stay inside their
source's mount, and output stores never overlap a source, however either is spelled."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from helpers import Cli, S3Bucket, add_source, assert_one_error_line, catalog_folders, sync
from mediamirror.catalog.db import Catalog
from mediamirror.config import Settings
from mediamirror.errors import ConfigError
from mediamirror.paths import is_safe
from mediamirror.sources import add_source as add_source_with
from mediamirror.sources import list_sources
from mediamirror.stores import parse_spec
from mediamirror.stores.output import OutputStore, derived_specs, overlaps

ENV = dict(os.environ)

# -- keys that climb -----------------------------------------------------------------------------


def test_dot_dot_keys_stay_inside_their_mount(
    catalog: Catalog, bucket: S3Bucket, s3_client: Any
) -> None:
    other = S3Bucket(bucket.server, s3_client)
    other.put("f.tif", b"theirs")
    for key in ["a/../sb/f.tif", "../sb/g.mov", "./c.jpg", "x//y.jpg", "/lead.jpg", "d/../e/"]:
        bucket.put(key, b"ours")
    add_source(catalog, "sa", bucket)
    add_source(catalog, "sb", other)
    sync(catalog, "sb", large_image_bytes=1)
    theirs = set(catalog_folders(catalog))

    sync(catalog, "sa", large_image_bytes=1)

    folders = catalog_folders(catalog)
    ours = set(folders) - theirs
    assert all(p.startswith("/sa") and is_safe(p[1:]) for p in ours), sorted(ours)
    assert {
        "/sa/a/%2E%2E/sb/Large image f.tif",
        "/sa/%2E%2E/sb/Video g.mov",
        "/sa/%2E/Large image c.jpg",
        "/sa/x/%/Large image y.jpg",
        "/sa/%/Large image lead.jpg",
        "/sa/d/%2E%2E/e",
    } <= ours
    assert all(folders[p].source_id == folders["/sb"].source_id for p in theirs)


# -- output stores never overlap a source ----------------------------------------------------------


def spec(url: str, endpoint: str | None = None) -> Any:
    return parse_spec(url, endpoint_url=endpoint, preset="minio" if endpoint else None, env=ENV)


@pytest.mark.parametrize(
    ("output", "output_endpoint", "source", "source_endpoint"),
    [
        ("s3://b/x/../media", "http://127.0.0.1:9000", "s3://b/media", "http://127.0.0.1:9000"),
        (
            "s3://b/media/out",
            "http://127.0.0.1:9000",
            "s3://b/media//out/x",
            "http://127.0.0.1:9000",
        ),
        ("s3://b/media/out", "http://localhost:9000/", "s3://b/media", "http://127.0.0.1:9000"),
        ("s3://b/media/out", "http://MINIO.example:9000", "s3://b", "http://minio.example:9000/"),
        ("s3://b/media/out", "https://s3.example", "s3://b/media", "https://s3.example:443"),
        ("s3://b/out", "https://s3.amazonaws.com", "s3://b", None),
        ("s3://b/out", None, "s3://b", "https://s3.eu-west-1.amazonaws.com/"),
    ],
    ids=["dot-dot", "double-slash", "localhost", "host-case", "default-port", "aws", "aws-region"],
)
def test_an_overlapping_output_store_is_refused_however_spelled(
    output: str, output_endpoint: str | None, source: str, source_endpoint: str | None
) -> None:
    with pytest.raises(ConfigError, match="overlaps the source"):
        OutputStore.from_url(
            output, ENV, endpoint_url=output_endpoint, sources=[spec(source, source_endpoint)]
        )


@pytest.mark.parametrize(
    ("output", "source", "endpoints"),
    [
        ("s3://b/media-out", "s3://b/media", ("http://127.0.0.1:9000", "http://127.0.0.1:9000")),
        ("s3://b/out", "s3://b/media", ("http://127.0.0.1:9000", "http://127.0.0.1:9001")),
        ("s3://b/out", "s3://other", ("http://127.0.0.1:9000", "http://127.0.0.1:9000")),
    ],
    ids=["sibling-prefix", "other-server", "other-bucket"],
)
def test_separate_stores_are_not_an_overlap(
    output: str, source: str, endpoints: tuple[str, str]
) -> None:
    assert not overlaps(spec(output, endpoints[0]), spec(source, endpoints[1]))


def test_a_local_output_store_reached_through_dot_dot_or_a_link_is_refused(
    tmp_path: Path,
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (tmp_path / "link").symlink_to(media)
    source = spec(f"file://{media}")
    for url in [
        f"file://{tmp_path}/other/../media/out",
        f"file://{tmp_path}/link/out",
        f"file://{tmp_path}//media/",
    ]:
        with pytest.raises(ConfigError, match="overlaps the source"):
            OutputStore.from_url(url, ENV, sources=[source])
    assert not (media / "out").exists()


def test_adding_a_source_that_holds_the_output_store_is_refused(tmp_path: Path) -> None:
    catalog = Catalog("sqlite://")
    media = tmp_path / "media"
    (media / "derived").mkdir(parents=True)
    settings = Settings(home=str(tmp_path / "home"), output_store=f"file://{media}/derived")
    results = Settings(home=str(tmp_path / "home"), results_store=f"file://{media}/../media/r")
    for configured in (settings, results):
        with pytest.raises(ConfigError, match="overlaps the source"):
            add_source_with(
                catalog,
                "media",
                f"file://{tmp_path}/link-free/../media",
                env=ENV,
                outputs=derived_specs(configured, ENV),
            )
    assert list_sources(catalog) == []
    catalog.close()


def test_source_add_refuses_the_output_store_with_one_line(
    tmp_path: Path, sqlite_cli: Cli, bucket: S3Bucket
) -> None:
    """Through the CLI: an S3 source spelled with another endpoint than the output store."""
    endpoint = bucket.server.endpoint.replace("127.0.0.1", "localhost")
    sqlite_cli.env.update(
        MEDIAMIRROR_OUTPUT_STORE=f"s3://{bucket.name}/media/derived",
        MEDIAMIRROR_OUTPUT_ENDPOINT_URL=bucket.server.endpoint,
    )

    result = sqlite_cli.run(
        "source", "add", "media", bucket.url("media"), "--endpoint-url", endpoint, ok=False
    )

    assert_one_error_line(result, "overlaps the source", "sources are read-only")
    assert sqlite_cli.run("source", "list", "--json").json() == []
