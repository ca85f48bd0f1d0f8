"""A GraphQL CMS feed synced like a bucket: records become datasets, versions, deletions,
and every bad input of the walk (one line on the sync run, nothing marked deleted).

The CMS is a real GraphQL server on localhost (tests/feeds/cms.py); syncs run in process
through ``sync_source`` (what the CLI calls), and a few checks go through the CLI.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from helpers import (
    Cli,
    S3Bucket,
    assert_one_error_line,
    catalog_folders,
    catalog_items,
    count_writes,
    free_port,
)
from mediamirror.catalog import leases
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import LEASES
from mediamirror.config import Settings, expand_vars
from mediamirror.errors import ConfigError, ConflictError, StoreError
from mediamirror.redact import redact
from mediamirror.scheduler import Scheduler
from mediamirror.services import Services
from mediamirror.sources import add_source, get_source, recent_runs, sync_source
from mediamirror.stores.feed_config import configure, parse_feeds

from .cms import CmsServer

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]


def settings_for(cms: CmsServer, **block: Any) -> Settings:
    """Settings whose feeds: block is ``cms``'s (``${CMS_TOKEN}`` expanded as on load)."""
    feeds = {"premiere": expand_vars(cms.feed_block(**block), cms.env)}
    configure(feeds)
    return Settings(
        sync_page_size=3,
        store_max_attempts=1,
        store_read_timeout=5,
        sections={"feeds": feeds},
    )


@pytest.fixture
def feed(cms: CmsServer, catalog: Catalog) -> Iterator[Settings]:
    """A source ``premiere`` on the CMS feed, mounted at /premiere; pages of 2 records."""
    cms.max_first = 2
    settings = settings_for(cms)
    add_source(catalog, "premiere", "feed://premiere", env={}, mount="/premiere")
    yield settings
    configure({})


def run(catalog: Catalog, settings: Settings) -> Any:
    return sync_source(catalog, settings, "premiere", {})


def present(catalog: Catalog) -> set[str]:
    return {k for k, row in catalog_items(catalog).items() if row.state == "present"}


def test_records_become_datasets(cms: CmsServer, catalog: Catalog, feed: Settings) -> None:
    cms.add("a1", "Interview", "http://127.0.0.1:9/v/a1.mp4", size=1234, owner="ann@example.org")
    cms.add("b2", "Interview", "http://127.0.0.1:9/v/b2.mov", version="2026-11-01T10:00:00Z")
    cms.add("c3", None, "http://127.0.0.1:9/files/c3/scene%201.mkv")
    cms.add("x/y", "A/B", "http://127.0.0.1:9/xy.mp4")  # an id is one folder, whatever it holds
    cms.add("x%2Fy", "A/B", "http://127.0.0.1:9/xy2.mp4")
    summary = run(catalog, feed)
    assert (summary.added, summary.deleted) == (5, 0)
    # Two records named alike never collide: each lands under its own id.
    assert present(catalog) == {
        "a1/Interview.mp4",
        "b2/Interview.mov",
        "c3/scene 1.mkv",
        "x%2Fy/A_B.mp4",
        "x%252Fy/A_B.mp4",
    }
    folders = catalog_folders(catalog)
    meta = folders["/premiere/a1/Video Interview.mp4"].meta
    assert meta["type"] == "video" and meta["fps"] == -1 and meta["MarkForPostProcess"] is True
    assert meta["import_source"] == "feed://premiere/a1/Interview.mp4"
    assert meta["cms_id"] == "a1" and meta["cms_version"] == "v1"
    assert meta["source_url"] == "http://127.0.0.1:9/v/a1.mp4"
    assert meta["owner"] == "ann@example.org" and meta["notify"] == "ann@example.org"
    assert "notify" not in folders["/premiere/b2/Video Interview.mov"].meta
    items = catalog_items(catalog)
    assert items["a1/Interview.mp4"].size == 1234 and items["b2/Interview.mov"].size == 0
    assert items["b2/Interview.mov"].last_modified == datetime(2026, 11, 1, 10, tzinfo=UTC)
    # Every page was walked: the check's first page, then pages of 2 records.
    assert [r.after_offset for r in cms.requests] == [0, 0, 2, 4]


def test_version_change_removal_and_unchanged_rewalk(
    cms: CmsServer, catalog: Catalog, feed: Settings
) -> None:
    for i in range(5):
        cms.add(f"r{i}", f"clip{i}", f"http://127.0.0.1:9/{i}.mp4")
    run(catalog, feed)
    with count_writes(catalog.engine) as writes:
        again = run(catalog, feed)
    assert (again.added, again.changed, again.deleted, again.unchanged) == (0, 0, 0, 5)
    assert writes.writes_to("items", "folders") == []

    cms.set_version("r1", "v2")
    cms.record("r1")["file"]["url"] = "http://127.0.0.1:9/1-v2.mp4"
    cms.remove("r3")
    cms.add("r9", "clip9", "http://127.0.0.1:9/9.mp4")
    summary = run(catalog, feed)
    assert (summary.added, summary.changed, summary.deleted) == (1, 1, 1)
    items, folders = catalog_items(catalog), catalog_folders(catalog)
    assert items["r3/clip3.mp4"].state == "deleted"
    assert folders["/premiere/r3/Video clip3.mp4"].state == "empty"
    meta = folders["/premiere/r1/Video clip1.mp4"].meta
    assert meta["cms_version"] == "v2" and meta["source_url"].endswith("/1-v2.mp4")
    assert meta["MarkForPostProcess"] is True and meta["type"] == "video"
    assert items["r1/clip1.mp4"].etag == "v2" and items["r1/clip1.mp4"].needs_processing


def _fault_cases() -> list[Any]:
    def errors(cms: CmsServer) -> None:
        cms.errors = "Cannot query field 'videos'"

    def not_json(cms: CmsServer) -> None:
        cms.not_json = True

    def down(cms: CmsServer) -> None:
        cms.down = True

    def slow(cms: CmsServer) -> None:
        cms.slow = 8.0

    return [
        pytest.param(errors, "answered with GraphQL errors: Cannot query field", id="errors"),
        pytest.param(not_json, "is not JSON (text/html)", id="not-json"),
        pytest.param(down, "answered HTTP 503", id="down"),
        pytest.param(slow, "did not answer within 3 s", id="slow"),
    ]


@pytest.mark.parametrize(("fault", "reason"), _fault_cases())
def test_a_failed_walk_marks_nothing_deleted(
    cms: CmsServer, catalog: Catalog, feed: Settings, fault: Any, reason: str
) -> None:
    for i in range(6):
        cms.add(f"r{i}", f"clip{i}", f"http://127.0.0.1:9/{i}.mp4")
    # Only the slow case needs a shorter timeout than the default, yet one a busy machine
    # meets for the healthy pages (0.5 s was missed once with two test runs at once).
    slow = reason.startswith("did not answer")
    settings = settings_for(cms, page_timeout=3 if slow else 10)
    run(catalog, settings)
    cms.remove("r0")  # gone from the feed, but the walk below never completes
    cms.fault_from = 2  # the first page is fine, the second fails: a partial walk
    fault(cms)
    with pytest.raises(StoreError) as failed:
        run(catalog, settings)
    line = str(failed.value)
    assert "\n" not in line and reason in line and "page 2" in line, line
    assert present(catalog) == {f"r{i}/clip{i}.mp4" for i in range(6)}
    last = recent_runs(catalog, get_source(catalog, "premiere").id, limit=1)[0]
    assert last["state"] == "error" and last["error"] == line and last["deleted"] == 0


def test_refused_credentials_and_connection(
    cms: CmsServer, catalog: Catalog, feed: Settings
) -> None:
    cms.add("r1", "clip", "http://127.0.0.1:9/1.mp4")
    run(catalog, feed)
    cms.remove("r1")
    wrong = settings_for(cms, headers={"Authorization": "Bearer not-the-token"})
    with pytest.raises(StoreError, match=r"page 1 of the CMS refused the credentials \(HTTP 401\)"):
        run(catalog, wrong)
    with cms.refused(), pytest.raises(StoreError, match="page 1 of the CMS could not be reached"):
        run(catalog, feed)
    assert present(catalog) == {"r1/clip.mp4"}
    runs = recent_runs(catalog, get_source(catalog, "premiere").id)
    assert [r["state"] for r in runs[:2]] == ["error", "error"]


def test_records_without_id_or_url_are_skipped(
    cms: CmsServer, catalog: Catalog, feed: Settings
) -> None:
    cms.add("keep", "clip", "http://127.0.0.1:9/keep.mp4")
    cms.add("lose-url", "clip", "http://127.0.0.1:9/later.mp4")
    run(catalog, feed)
    cms.add(None, "no id", "http://127.0.0.1:9/x.mp4")
    cms.record("lose-url")["file"] = {}
    cms.add("ftp", "old", "ftp://127.0.0.1/old.mp4")
    cms.add("new", "clip", "http://127.0.0.1:9/new.mp4")
    summary = run(catalog, feed)
    # The other records go on; the walk is complete, so a record that lost its url is gone.
    assert present(catalog) == {"keep/clip.mp4", "new/clip.mp4"}
    assert (summary.added, summary.deleted) == (1, 1)
    last = recent_runs(catalog, get_source(catalog, "premiere").id, limit=1)[0]
    assert last["state"] == "success"
    assert (
        last["error"]
        == "3 records skipped: record lose-url (record 2 of page 1) has no url (file.url)"
    )


def test_job_time_lookup_needs_no_walk(cms: CmsServer, catalog: Catalog, feed: Settings) -> None:
    cms.add("r1", "clip", "http://127.0.0.1:9/r1.mp4", size=77)
    run(catalog, feed)
    cms.down = True  # a walk would fail now; the catalog knows where the file is
    services = Services(catalog, feed, {})
    store = services.source_store(get_source(catalog, "premiere").id)
    before = len(cms.requests)
    assert store.locate("r1/clip.mp4") == ("url", "http://127.0.0.1:9/r1.mp4")
    assert len(cms.requests) == before


def test_serve_polls_feeds_every_poll_seconds(
    cms: CmsServer, catalog: Catalog, feed: Settings
) -> None:
    cms.add("r1", "clip", "http://127.0.0.1:9/r1.mp4")
    scheduler = Scheduler(Services(catalog, feed, {}))
    now = datetime.now(UTC)
    assert scheduler.due_sources(now) == ["premiere"]  # never synced: at once
    assert scheduler.tick() == ["premiere"]
    assert present(catalog) == {"r1/clip.mp4"}
    assert scheduler.due_sources(datetime.now(UTC)) == []
    assert scheduler.due_sources(datetime.now(UTC) + timedelta(seconds=61)) == ["premiere"]
    never = Scheduler(Services(catalog, settings_for(cms, poll_seconds=0), {}))
    assert never.due_sources(datetime.now(UTC) + timedelta(days=1)) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"url": None},
            "feeds: premiere: missing 'url' (required: endpoint, query, records, id, url)",
        ),
        ({"endpoint": None}, "feeds: premiere: missing 'endpoint'"),
        ({"records": ""}, "feeds: premiere: missing 'records'"),
        ({"query": None}, "feeds: premiere: missing 'query'"),
        ({"id": None}, "feeds: premiere: missing 'id'"),
        ({"recrods": "x"}, "feeds: premiere: unknown key 'recrods'"),
        ({"endpoint": "ftp://x/graphql"}, "endpoint 'ftp://x/graphql' must be an http"),
        ({"url": "file url"}, "url 'file url' is not a dotted path"),
        ({"headers": {"A": 1}}, "headers must be a mapping of names to strings"),
        ({"poll_seconds": "soon"}, "poll_seconds must be a number"),
        ({"has_next": None}, "next_cursor and has_next go together"),
        ({"metadata": {"type": "kind"}}, "metadata field 'type' is reserved"),
    ],
)
def test_block_errors_are_one_line(cms: CmsServer, change: dict[str, Any], message: str) -> None:
    block = {k: v for k, v in {**cms.feed_block(), **change}.items() if v is not None}
    with pytest.raises(ConfigError) as refused:
        parse_feeds({"premiere": block})
    assert message in str(refused.value) and "\n" not in str(refused.value)


# -- through the CLI ---------------------------------------------------------------------------


def _dump(url: str) -> str:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(repr(row) for n in names for row in conn.execute(f'SELECT * FROM "{n}"'))
    finally:
        conn.close()


def test_cli_source_add_sync_and_the_token_stays_secret(
    cms: CmsServer, sqlite_cli: Cli, sqlite_url: str, tmp_path: Path
) -> None:
    cli = sqlite_cli
    cli.home.mkdir(parents=True)
    config = {"feeds": {"premiere": cms.feed_block()}}
    (cli.home / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**cms.env, "MEDIAMIRROR_LOG_LEVEL": "debug", "MEDIAMIRROR_LOG_FORMAT": "json"}
    cms.add("a1", "Notes", "http://127.0.0.1:9/a1.txt", owner="ann@example.org")
    out = [cli.run("source", "add", "premiere", "feed://premiere", "--mount", "/premiere", env=env)]
    assert "feed://premiere -> /premiere" in out[-1].stdout
    # The crontab line: a feed syncs (and would queue its datasets' jobs) like a bucket.
    out.append(cli.run("sync", "premiere", "--process", env=env))
    assert "premiere: 1 added, 0 changed, 0 deleted" in out[-1].stdout
    # A CMS that echoes the token in its error: the run's reason shows it masked.
    cms.errors = f"token {cms.token} has expired"
    out.append(cli.run("sync", "premiere", env=env, ok=False))
    last = out[-1].stderr.splitlines()[-1]  # after the debug lines of this run
    assert last == (
        "error: feed premiere: page 1 of the CMS answered with GraphQL errors: "
        "token ${CMS_TOKEN} has expired"
    )
    # Without the variable, every command says so in one line.
    bare = {k: v for k, v in env.items() if k != "CMS_TOKEN"}
    assert_one_error_line(cli.run("sync", "premiere", env=bare, ok=False), "${CMS_TOKEN}")
    logs = "".join(p.read_text() for p in (cli.home / "logs").rglob("*.log*"))
    said = "".join(r.stdout + r.stderr for r in out)
    for where, text in {"catalog": _dump(sqlite_url), "logs": logs, "output": said}.items():
        assert cms.token not in text, where
    assert "has expired" in _dump(sqlite_url)  # the reason itself is recorded
    assert cms.page_requests() >= 2


def test_cli_refuses_a_bad_block_in_one_line(cms: CmsServer, sqlite_cli: Cli) -> None:
    sqlite_cli.home.mkdir(parents=True)
    block = {k: v for k, v in cms.feed_block().items() if k != "id"}
    (sqlite_cli.home / "config.yaml").write_text(yaml.safe_dump({"feeds": {"premiere": block}}))
    result = sqlite_cli.run("source", "list", env=cms.env, ok=False)
    assert_one_error_line(result, "feeds: premiere: missing 'id'")


def test_cli_source_add_unknown_feed(cms: CmsServer, sqlite_cli: Cli) -> None:
    result = sqlite_cli.run("source", "add", "x", "feed://nowhere", ok=False)
    assert_one_error_line(result, "feed 'nowhere' is not declared")


def test_config_check_lists_feeds_and_asks_each_cms(cms: CmsServer, sqlite_cli: Cli) -> None:
    sqlite_cli.home.mkdir(parents=True)
    feeds = {
        "premiere": cms.feed_block(),
        "archive": cms.feed_block(endpoint=f"http://127.0.0.1:{free_port()}/graphql"),
    }
    (sqlite_cli.home / "config.yaml").write_text(yaml.safe_dump({"feeds": feeds}))
    env = {**cms.env, "MEDIAMIRROR_STORE_MAX_ATTEMPTS": "1"}
    result = sqlite_cli.run("config", "check", env=env, ok=False)
    lines = result.stdout.splitlines()
    assert "ok   feeds: archive (every 60 s), premiere (every 60 s)" in lines, str(result)
    assert f"ok   feed:premiere: 127.0.0.1:{cms.port} answered the first page (nothing synced)" in (
        lines
    )
    [fail] = [line for line in lines if line.startswith("FAIL")]
    assert fail.startswith("FAIL feed:archive: feed archive: page 1 of the CMS could not be")
    assert cms.token not in result.stdout + result.stderr


def test_s3_record_urls_are_read_from_their_bucket(
    cms: CmsServer, catalog: Catalog, bucket: S3Bucket, tmp_path: Path
) -> None:
    # Keys in s3:// URLs are the bucket's own, never percent-decoded.
    bucket.put("uploads/take 1%20.mov", b"0123456789")
    cms.add("s1", "Take", bucket.object_url("uploads/take 1%20.mov"), size=10)
    settings = settings_for(cms, s3=bucket.options)
    add_source(catalog, "premiere", "feed://premiere", env={}, mount="/premiere")
    run(catalog, settings)
    assert present(catalog) == {"s1/Take.mov"}
    store = Services(catalog, settings, {}).source_store(get_source(catalog, "premiere").id)
    store.download("s1/Take.mov", tmp_path / "take.mov")
    assert (tmp_path / "take.mov").read_bytes() == b"0123456789"
    assert store.read_range("s1/Take.mov", 2, 3) == b"234"


def test_http_range_reads_and_downloads(
    cms: CmsServer, catalog: Catalog, feed: Settings, media: Any, tmp_path: Path
) -> None:
    body = bytes(range(256)) * 40
    cms.add("h1", "clip", media.add("/d/h1.mp4", body), size=len(body))
    run(catalog, feed)
    store = Services(catalog, feed, {}).source_store(get_source(catalog, "premiere").id)
    assert store.read_range("h1/clip.mp4", 300, 20) == body[300:320]
    media.ignore_range = True  # a server answering 200 with the whole file: cut, not kept
    assert store.read_range("h1/clip.mp4", 5000, 7) == body[5000:5007]
    store.download("h1/clip.mp4", tmp_path / "h1.mp4")
    assert (tmp_path / "h1.mp4").read_bytes() == body


def test_file_downloads_carry_the_cms_token_only_to_its_own_host(
    cms: CmsServer, catalog: Catalog, media: Any, tmp_path: Path
) -> None:
    body = b"frame" * 300
    cms.add("f1", "clip", media.add("/d/f1.mp4", body), size=len(body))
    settings = settings_for(cms, file_headers={"X-Files-Key": "files-key-7"})
    add_source(catalog, "premiere", "feed://premiere", env={}, mount="/premiere")
    run(catalog, settings)
    store = Services(catalog, settings, {}).source_store(get_source(catalog, "premiere").id)
    store.download("f1/clip.mp4", tmp_path / "f1.mp4")
    assert store.read_range("f1/clip.mp4", 5, 5) == body[5:10]
    sent = [dict(r.headers) for r in media.requests_for("d/f1.mp4")]
    # The file server is another host than the CMS: its files get file_headers, never the
    # CMS's bearer token.
    assert sent == [{"x-files-key": "files-key-7"}] * 2, sent
    config = parse_feeds({"premiere": expand_vars(cms.feed_block(), cms.env)})["premiere"]
    own = config.headers_for(cms.graphql_url.replace("/graphql", "/files/f1.mp4"))
    assert own == {"Authorization": f"Bearer {cms.token}"}  # the CMS's own files: its token
    assert config.headers_for("https://cdn.example.org/f1.mp4") == {}
    configure({})


def test_a_long_walk_keeps_the_sync_lease(cms: CmsServer, catalog: Catalog, feed: Settings) -> None:
    for i in range(14):
        cms.add(f"r{i:02d}", f"clip{i}", f"http://127.0.0.1:9/{i}.mp4")
    cms.slow, cms.fault_from = 0.3, 2  # every page after the first: 6 x 0.3 s, past the lease
    settings = dataclasses.replace(feed, sync_lease_seconds=1)
    name = f"sync:{get_source(catalog, 'premiere').id}"
    syncing = threading.Thread(target=run, args=(catalog, settings))
    syncing.start()
    try:
        first_expiry = None
        while first_expiry is None:
            with catalog.read() as conn:
                row = conn.execute(select(LEASES).where(LEASES.c.name == name)).first()
            first_expiry = row.expires_at if row is not None else None
        while datetime.now(UTC) < first_expiry + timedelta(seconds=0.1):
            time.sleep(0.02)
        assert syncing.is_alive(), "the walk ended before the lease would have expired"
        # The walk renewed the lease between pages: nobody else can take the source over.
        with pytest.raises(ConflictError, match="is held by"):
            leases.acquire(catalog, name, leases.new_owner(), 1)
    finally:
        syncing.join(30)
    assert present(catalog) == {f"r{i:02d}/clip{i}.mp4" for i in range(14)}


def test_credential_headers_are_secrets_whole(cms: CmsServer) -> None:
    headers = {"Authorization": "Bearer literal-feed-token-42", "Content-Type": "text/x-feed"}
    parse_feeds({"premiere": cms.feed_block(headers=headers)})
    shown = redact("sent Bearer literal-feed-token-42 as text/x-feed")
    assert "literal-feed-token-42" not in shown and "text/x-feed" in shown


def test_records_are_written_while_the_walk_goes_on(
    cms: CmsServer, catalog: Catalog, feed: Settings
) -> None:
    """The engine takes the feed's pages as they come: the first page's records are in the
    catalog while later pages are still on their way (not sorted after the whole walk)."""
    for i in range(6):
        cms.add(f"r{i}", f"clip{i}", f"http://127.0.0.1:9/{i}.mp4")
    cms.slow, cms.fault_from = 3.0, 2  # pages 2 and 3: 3 s each; page 1 at once
    summary: list[Any] = []
    syncing = threading.Thread(target=lambda: summary.append(run(catalog, feed)))
    syncing.start()
    try:
        deadline = time.monotonic() + 5.5
        seen: set[str] = set()
        while time.monotonic() < deadline and syncing.is_alive():
            seen = present(catalog)
            if seen:
                break
            time.sleep(0.02)
        walking = syncing.is_alive()
    finally:
        syncing.join(30)
    assert seen == {"r0/clip0.mp4", "r1/clip1.mp4"} and walking, (seen, walking)
    assert summary and (summary[0].added, summary[0].deleted) == (6, 0)
    assert present(catalog) == {f"r{i}/clip{i}.mp4" for i in range(6)}


def test_a_failed_walk_keeps_the_records_it_wrote_and_deletes_nothing(
    cms: CmsServer, catalog: Catalog, feed: Settings
) -> None:
    """Records of the pages before a failure are written (they are in the feed); records
    gone, or on pages never read, are not marked deleted: the walk was not complete."""
    for i in range(6):
        cms.add(f"r{i}", f"clip{i}", f"http://127.0.0.1:9/{i}.mp4")
    run(catalog, feed)
    new = cms.add("n0", "new0", "http://127.0.0.1:9/n0.mp4")
    cms.records.remove(new)
    cms.records.insert(0, new)  # first in the feed, on page 1
    cms.remove("r1")  # page 1 is now n0, r0; r1 is gone
    cms.set_version("r0", "v2")
    cms.fault_from, cms.down = 2, True  # page 2 fails
    with pytest.raises(StoreError, match="page 2"):
        run(catalog, feed)
    items = catalog_items(catalog)
    assert items["n0/new0.mp4"].state == "present"
    assert items["r0/clip0.mp4"].etag == "v2"
    assert present(catalog) == {"n0/new0.mp4"} | {f"r{i}/clip{i}.mp4" for i in range(6)}
    last = recent_runs(catalog, get_source(catalog, "premiere").id, limit=1)[0]
    assert last["state"] == "error" and last["deleted"] == 0

    cms.down = False  # a complete walk: now r1 is gone
    summary = run(catalog, feed)
    assert (summary.added, summary.changed, summary.deleted) == (0, 0, 1)
    assert present(catalog) == {"n0/new0.mp4"} | {f"r{i}/clip{i}.mp4" for i in range(6) if i != 1}
