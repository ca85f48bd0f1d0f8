"""The CLI through its real entry point: a ``mediamirror`` subprocess per command.

Sources point at the moto S3 API server; the catalog is SQLite under the test's directory,
or a PostgreSQL schema of its own where a test runs on both catalogs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import pytest
from sqlalchemy import select

from helpers import (
    Cli,
    Result,
    S3Bucket,
    S3Server,
    assert_one_error_line,
    catalog_folders,
    catalog_items,
    closed_port,
)
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import SOURCES
from mediamirror.cli import cli as cli_group

pytestmark = pytest.mark.timeout(120)

SUMMARY = re.compile(
    r"^(?P<name>\S+): (?P<added>\d+) added, (?P<changed>\d+) changed, "
    r"(?P<deleted>\d+) deleted, (?P<unchanged>\d+) unchanged in (?P<seconds>\d+\.\d+) s "
    r"\([\d,]+ keys/s\)$"
)


def summary_of(result: Result) -> dict[str, int]:
    """The sync summary: the first line of stdout, exactly."""
    match = SUMMARY.match(result.stdout.splitlines()[0])
    assert match, str(result)
    return {k: int(match[k]) for k in ("added", "changed", "deleted", "unchanged")}


def ls_json(cli: Cli, path: str = "/") -> dict[str, Any]:
    result = cli.run("ls", path, "--recursive", "--json")
    return dict(json.loads(result.stdout))  # one JSON document, nothing else


# -- help ------------------------------------------------------------------------------------


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))
        else:
            yield (*prefix, name)


def test_help_works_on_every_command_and_group(sqlite_cli: Cli) -> None:
    paths = list(command_paths(cli_group))
    assert {("source", "add"), ("sync",), ("ls",), ("source",)} <= set(paths)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: sqlite_cli.run(*p, "--help"), paths))
    for path, result in zip(paths, results, strict=True):
        assert result.stdout.startswith("Usage: mediamirror"), str(result)
        assert " ".join(("mediamirror", *path)) in result.stdout.splitlines()[0]
        assert result.stderr == "", str(result)
    # --help never opens the catalog.
    assert not (sqlite_cli.home / "catalog.db").exists()


def test_version(sqlite_cli: Cli) -> None:
    from mediamirror import __version__

    assert sqlite_cli.run("--version").stdout.strip().endswith(__version__)


# -- sources ---------------------------------------------------------------------------------


def test_source_add_list_show_remove(sqlite_cli: Cli, bucket: S3Bucket) -> None:
    cli = sqlite_cli
    bucket.put("videos/clip.mov")
    bucket.put("videos2/other.mov")
    added = cli.run("source", "add", "media", bucket.url("videos"), *bucket.cli_options)
    assert added.stdout.strip() == f"added source media: s3://{bucket.name}/videos/ -> /media"

    listed = cli.run("source", "list", "--json").json()
    assert [(s["name"], s["url"], s["mount"], s["preset"]) for s in listed] == [
        ("media", f"s3://{bucket.name}/videos/", "/media", "minio")
    ]
    assert listed[0]["endpoint_url"] == bucket.server.endpoint
    text = cli.run("source", "list").stdout
    assert re.search(rf"^media\s+s3://{bucket.name}/videos/\s+/media$", text, re.M), text

    dup = cli.run("source", "add", "media", bucket.url(), *bucket.cli_options, ok=False)
    assert_one_error_line(dup, "already exists")
    overlap = cli.run(
        "source", "add", "m2", bucket.url(), "--mount", "/media/sub", "--no-check", ok=False
    )
    assert_one_error_line(overlap, "overlaps", "media")

    shown = cli.run("source", "show", "media", "--json").json()
    assert shown["name"] == "media"
    assert shown["runs"] == []
    # The connection check lists the first page and writes nothing.
    checked = cli.run("source", "check", "media").stdout.strip()
    assert re.fullmatch(r"media: 1 key seen in [\d.e-]+ s", checked), checked
    assert cli.run("source", "check", "media", "--json").json()["keys"] == 1
    missing = cli.run("source", "check", "nope", ok=False)
    assert_one_error_line(missing, "nope")
    assert summary_of(cli.run("sync", "media"))["added"] == 1
    shown = cli.run("source", "show", "media", "--json").json()
    assert [(r["state"], r["added"], r["listed"]) for r in shown["runs"]] == [("success", 1, 1)]
    shown_text = cli.run("source", "show", "media").stdout
    assert "success" in shown_text and "+1 ~0 -0 =0" in shown_text

    # Without --yes and without a terminal to answer, nothing is removed.
    refused = cli.run("source", "remove", "media", ok=False)
    assert_one_error_line(refused, "aborted")
    assert len(cli.run("source", "list", "--json").json()) == 1

    removed = cli.run("source", "remove", "media", "--yes")
    assert removed.stdout.strip() == "removed source media"
    assert cli.run("source", "list", "--json").json() == []
    assert ls_json(cli) == {"path": "/", "folder": None, "folders": [], "items": []}
    catalog = Catalog(cli.database_url)
    try:
        assert catalog_items(catalog) == {}
        assert catalog_folders(catalog) == {}
    finally:
        catalog.close()
    assert bucket.keys() == ["videos/clip.mov", "videos2/other.mov"]  # the store is untouched


# -- sync and ls -----------------------------------------------------------------------------


@pytest.mark.postgres
def test_sync_summary_and_ls_json(cli: Cli, bucket: S3Bucket) -> None:
    files = {"a/clip.MOV": b"video", "a/clip.json": b"{}", "b/1.jpg": b"j", "c.txt": b""}
    for key, body in files.items():
        bucket.put(key, body)
    cli.run("source", "add", "src", bucket.url(), *bucket.cli_options)

    first = cli.run("sync", "src", "--quiet")
    assert first.stdout.count("\n") == 1 and first.stderr == "", str(first)
    assert summary_of(first) == {"added": 4, "changed": 0, "deleted": 0, "unchanged": 0}
    assert SUMMARY.match(first.stdout.strip())["name"] == "src"  # type: ignore[index]

    doc = ls_json(cli)
    assert doc["path"] == "/" and doc["folder"] is None
    folders = {f["path"]: f["meta"] for f in doc["folders"]}
    assert set(folders) == {"/src", "/src/a", "/src/a/Video clip.MOV", "/src/b"}
    assert folders["/src/a/Video clip.MOV"] == {
        "type": "video",
        "fps": -1,
        "import_path": "a",
        "import_source": f"s3://{bucket.name}/a/clip.MOV",
        "MarkForPostProcess": True,
    }
    assert folders["/src/b"]["type"] == "image-sequence"
    etags = {
        o["Key"]: o["ETag"].strip('"')
        for o in bucket.client.list_objects_v2(Bucket=bucket.name)["Contents"]
    }
    items = {i["key"]: i for i in doc["items"]}
    assert set(items) == set(files)
    for key, body in files.items():
        assert items[key]["size"] == len(body)
        assert items[key]["etag"] == etags[key]
        assert items[key]["state"] == "present"
    assert items["a/clip.json"]["folder"] == "/src/a/Video clip.MOV"

    bucket.delete("c.txt")
    bucket.put("b/1.jpg", b"changed")
    second = cli.run("sync", "src")
    assert summary_of(second) == {"added": 0, "changed": 1, "deleted": 1, "unchanged": 2}
    below = ls_json(cli, "/src")
    assert below["path"] == "/src" and below["folder"]["meta"] == {}
    states = {i["key"]: i["state"] for i in below["items"]}
    assert states["c.txt"] == "deleted" and states["b/1.jpg"] == "present"

    text = cli.run("ls", "/src", "--recursive").stdout
    assert "/src/a/Video clip.MOV/  [video]" in text
    assert "clip.json" in text


def test_sync_with_post_processing_on_still_prints_the_summary_first(
    sqlite_cli: Cli, bucket: S3Bucket
) -> None:
    bucket.put("notes/readme.txt", b"hello")
    bucket.put("notes/clip.mov", b"not really a video")  # a marked dataset to queue
    sqlite_cli.run("source", "add", "src", bucket.url(), *bucket.cli_options)
    result = sqlite_cli.run("sync", "src", env={"MEDIAMIRROR_AUTO_POSTPROCESS": "true"})
    assert summary_of(result)["added"] == 2


ODD_KEYS = [
    "with space/file name.txt",
    "unicode/é/日本/🎉.mp4",
    "unicode/é/日本/🎉.json",
    "plus/a+b c+.txt",
    "percent/100%.txt",
    "percent/%2F%20.txt",
    "hash/x#y.txt",
    "question/why?.txt",
    "question/?x=1&y=2",
    "long/" + "l" * 995,  # 1000 bytes
    "dots/../up.txt",
    "dots/./here.txt",
    "zero/empty.bin",
    "a",
    "a/b",
    "marker/",  # a folder marker: a folder, not an item
    "marker/inside.txt",
    "lonely-marker/",
]


@pytest.mark.postgres
def test_odd_keys_are_catalogued_exactly(cli: Cli, bucket: S3Bucket) -> None:
    for key in ODD_KEYS:
        bucket.put(key, b"" if key.startswith("zero/") or key.endswith("/") else b"data")
    assert sorted(bucket.keys()) == sorted(ODD_KEYS)
    assert len("long/" + "l" * 995) == 1000
    cli.run("source", "add", "odd", bucket.url(), *bucket.cli_options)
    files = [k for k in ODD_KEYS if not k.endswith("/")]

    assert summary_of(cli.run("sync", "odd"))["added"] == len(files)

    doc = ls_json(cli)
    items = {i["key"]: i for i in doc["items"]}
    assert len(items) == len(doc["items"])
    assert sorted(items) == sorted(files)
    assert items["zero/empty.bin"]["size"] == 0
    assert items["a"]["folder"] == "/odd" and items["a/b"]["folder"] == "/odd/a"
    folders = {f["path"]: f for f in doc["folders"]}
    assert "/odd/marker" in folders and "/odd/lonely-marker" in folders
    assert folders["/odd/unicode/é/日本/Video 🎉.mp4"]["meta"]["import_source"] == (
        f"s3://{bucket.name}/unicode/é/日本/🎉.mp4"
    )
    assert items["unicode/é/日本/🎉.json"]["folder"] == "/odd/unicode/é/日本/Video 🎉.mp4"
    # Byte-ordered range scans agree with the store's order: a second run changes nothing.
    again = summary_of(cli.run("sync", "odd"))
    assert again == {"added": 0, "changed": 0, "deleted": 0, "unchanged": len(files)}


# -- bad input: one clear line, exit code 1, nothing lost ---------------------------------------


@pytest.fixture(scope="module")
def seeded(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server, s3_client: Any
) -> Iterator[tuple[Cli, S3Bucket]]:
    """A catalog holding one synced source, shared by the bad-input tests."""
    root = tmp_path_factory.mktemp("seeded")
    cli = Cli(home=root / "home", database_url=f"sqlite:///{root / 'catalog.db'}")
    bucket = S3Bucket(s3_server, s3_client)
    bucket.put("v/clip.mov", b"v")
    bucket.put("v/clip.json", b"{}")
    cli.run("source", "add", "good", bucket.url(), *bucket.cli_options)
    cli.run("sync", "good")
    yield cli, bucket


def snapshot(cli: Cli) -> Any:
    catalog = Catalog(cli.database_url)
    try:
        with catalog.read() as conn:
            sources = [tuple(r) for r in conn.execute(select(SOURCES))]
        items = {k: tuple(r) for k, r in catalog_items(catalog).items()}
        folders = {p: tuple(r) for p, r in catalog_folders(catalog).items()}
    finally:
        catalog.close()
    return sources, items, folders


#: id -> (command line, fragments of the one error line). Placeholders: {moto} and {auth}
#: (endpoint options of the S3 servers), {closed} (an endpoint nothing listens on), {bucket}.
BAD_INPUTS: dict[str, tuple[list[str], list[str]]] = {
    "missing-bucket": (
        ["source", "add", "x", "s3://no-such-bucket-here", "{moto}"],
        ["bucket 'no-such-bucket-here' does not exist"],
    ),
    "wrong-credentials": (
        ["source", "add", "x", "s3://{bucket}", "{auth}"],
        ["access denied to s3://", "check the credentials"],
    ),
    "unreachable-endpoint": (
        ["source", "add", "x", "s3://{bucket}", "{closed}"],
        ["cannot reach http://127.0.0.1:"],
    ),
    "s3:/x": (["source", "add", "x", "s3:/x"], ["unsupported store URL 's3:/x'"]),
    "ftp": (["source", "add", "x", "ftp://x"], ["unsupported store URL"]),
    "s3://": (["source", "add", "x", "s3://"], ["names no bucket"]),
    "file-relative": (["source", "add", "x", "file://rel/path"], ["absolute path"]),
    "dir-missing": (["source", "add", "x", "file:///no/such/dir"], ["does not exist"]),
    "sync-unknown": (["sync", "nope"], ["no source named 'nope'"]),
    "show-unknown": (["source", "show", "nope"], ["no source named 'nope'"]),
    "remove-unknown": (["source", "remove", "nope", "--yes"], ["no source named 'nope'"]),
    "bad-include": (
        ["source", "add", "x", "s3://{bucket}", "{moto}", "--include", "(unclosed"],
        ["--include", "not a valid regular expression"],
    ),
    "bad-exclude": (
        ["source", "add", "x", "s3://{bucket}", "{moto}", "--exclude", "[a-"],
        ["--exclude", "not a valid regular expression"],
    ),
    "bad-mount": (
        ["source", "add", "x", "s3://{bucket}", "--mount", "relative", "--no-check"],
        ["must be an absolute catalog path"],
    ),
    "bad-name": (
        ["source", "add", "bad name!", "s3://{bucket}", "--no-check"],
        ["source name 'bad name!'"],
    ),
    "ls-unknown": (["ls", "/nowhere"], ["no folder /nowhere"]),
}


@pytest.fixture(scope="module")
def bad_results(
    seeded: tuple[Cli, S3Bucket], s3_auth_server: S3Server
) -> tuple[dict[str, Result], Any, Any]:
    """Every bad command line run once, side by side (they only read the catalog), with
    the catalog's content before and after."""
    cli, bucket = seeded
    values = {
        "moto": f"--endpoint-url={bucket.server.endpoint}",
        "auth": f"--endpoint-url={s3_auth_server.endpoint}",
        "closed": f"--endpoint-url=http://127.0.0.1:{closed_port()}",
        "bucket": bucket.name,
    }
    before = snapshot(cli)

    def run(args: list[str]) -> Result:
        return cli.run(*(a.format(**values) for a in args), ok=None)

    with ThreadPoolExecutor(4) as pool:
        outcomes = pool.map(run, (args for args, _ in BAD_INPUTS.values()))
        results = dict(zip(BAD_INPUTS, outcomes, strict=True))
    return results, before, snapshot(cli)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_line(
    bad_results: tuple[dict[str, Result], Any, Any], case: str
) -> None:
    results, before, after = bad_results
    assert_one_error_line(results[case], *BAD_INPUTS[case][1])
    assert after == before  # nothing lost, nothing added


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MEDIAMIRROR_SYNC_PAGE_SIZE": "many"}, "'many' is not a valid int"),
        ({"MEDIAMIRROR_DATABASE_URL": "postgresql://nobody@127.0.0.1:{closed}/x"}, "cannot open"),
        ({"MEDIAMIRROR_DATABASE_URL": "nonsense:/"}, "invalid database URL"),
    ],
    ids=["bad-int-setting", "database-unreachable", "database-url-malformed"],
)
def test_bad_settings_are_one_clear_line(
    sqlite_cli: Cli, env: dict[str, str], fragment: str
) -> None:
    env = {k: v.format(closed=closed_port()) for k, v in env.items()}
    assert_one_error_line(sqlite_cli.run("source", "list", env=env, ok=False), fragment)


def test_bad_config_file_is_one_clear_line(sqlite_cli: Cli) -> None:
    sqlite_cli.home.mkdir(parents=True)
    (sqlite_cli.home / "config.yaml").write_text("sync_page_size: 10\nno_such_setting: 1\n")
    result = sqlite_cli.run("source", "list", ok=False)
    assert_one_error_line(result, "unknown setting 'no_such_setting'")


def test_failed_sync_keeps_the_catalog_and_records_the_run(
    sqlite_cli: Cli, bucket: S3Bucket
) -> None:
    """Through the CLI (the same on PostgreSQL is in test_sync.py)."""
    cli = sqlite_cli
    bucket.put("k/clip.mov", b"v")
    bucket.put("k/notes.txt", b"n")
    cli.run("source", "add", "src", bucket.url(), *bucket.cli_options)
    cli.run("sync", "src")
    before = ls_json(cli)

    bucket.drop()
    failed = cli.run("sync", "src", ok=False)

    assert_one_error_line(failed, f"bucket '{bucket.name}' does not exist")
    assert ls_json(cli) == before
    runs = cli.run("source", "show", "src", "--json").json()["runs"]
    assert [r["state"] for r in runs] == ["error", "success"]  # newest first
    assert "does not exist" in runs[0]["error"]


# -- secrets ---------------------------------------------------------------------------------


def test_credentials_are_references_never_values(
    sqlite_cli: Cli, tmp_path: Path, bucket: S3Bucket
) -> None:
    key, secret = "DOKEY-7c1e9a-distinctive", "DOSECRET-5b2f0d-distinctive"
    env = {"DO_SPACES_KEY": key, "DO_SPACES_SECRET": secret, "DO_SPACES_REGION": "nyc3"}
    outputs = [
        sqlite_cli.run(
            "source",
            "add",
            "spaces",
            "s3://media-bkt/in",
            "--preset",
            "do-spaces",
            "--no-check",
            env=env,
        ),
        # A second Spaces source really used, against the S3 API server.
        sqlite_cli.run(
            "--log-level",
            "info",
            "source",
            "add",
            "live",
            bucket.url(),
            "--preset",
            "do-spaces",
            "--endpoint-url",
            bucket.server.endpoint,
            "--addressing",
            "path",
            env=env,
        ),
        sqlite_cli.run("--log-level", "info", "sync", "live", env=env),
        sqlite_cli.run("source", "list", "--json", env=env),
        sqlite_cli.run("source", "show", "spaces", env=env),
    ]
    shown = sqlite_cli.run("source", "show", "spaces", "--json", env=env)
    outputs.append(shown)
    info = shown.json()
    assert info["credentials"] == {
        "access_key_env": "DO_SPACES_KEY",
        "secret_key_env": "DO_SPACES_SECRET",
    }
    assert info["endpoint_url"] == "https://nyc3.digitaloceanspaces.com"
    for result in outputs:
        for value in (key, secret):
            assert value not in result.stdout and value not in result.stderr, str(result)
    for path in sqlite_cli.home.parent.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for value in (key, secret):
                assert value.encode() not in data, path

    # Not even debug logs show them (botocore's would: request headers, presigned URLs).
    debug = sqlite_cli.run("--log-level", "debug", "sync", "live", env=env)
    assert re.search(r" (DEBUG|INFO) ", debug.stderr), str(debug)  # logging is on
    for value in (key, secret):
        assert value not in debug.stdout + debug.stderr
