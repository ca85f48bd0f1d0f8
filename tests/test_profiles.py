"""Per-source profiles: ``source add/set/show/list`` through the real CLI, the API's POST
and PATCH on a served app, and the processors filter of ``postprocess``, ``reprocess``
and push events (a processor left out of a profile never gets a job for the source)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from api.support import InProcessServer
from helpers import Cli, Result, S3Bucket, assert_one_error_line, catalog_folders
from mediamirror import tokens
from mediamirror.catalog.db import Catalog
from mediamirror.config import Settings, load_settings
from mediamirror.errors import ConfigError
from mediamirror.jobs.model import JOBS
from mediamirror.postprocess import postprocess, reprocess
from mediamirror.services import Services
from mediamirror.sources import add_source, get_source, set_source, sync_source
from mediamirror.web.app import create_app

pytestmark = pytest.mark.timeout(120)

#: Files the tests write are complete: post-process them at once.
SETTINGS = Settings(settle_seconds=0)
DEFAULT_OUTPUT = "(installation's output store)"


def media_dir(root: Path, files: dict[str, bytes]) -> Path:
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    return root


def jobs(catalog: Catalog) -> list[tuple[str, int]]:
    with catalog.read() as conn:
        rows = conn.execute(select(JOBS.c.processor, JOBS.c.target_id).order_by(JOBS.c.id))
        return [(r.processor, r.target_id) for r in rows]


def at_once(cli: Cli, *commands: list[str]) -> list[Result]:
    """Commands that do not depend on each other, run side by side (each CLI start takes
    a moment); a non-zero exit is left to the caller to check."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: cli.run(*args, ok=None), commands))


# -- the CLI -----------------------------------------------------------------------------------


def test_add_show_list_and_set_each_value(sqlite_cli: Cli, tmp_path: Path) -> None:
    """Through the real CLI (the catalog backends are both covered by the API tests)."""
    cli = sqlite_cli
    media = media_dir(tmp_path / "media", {"a.png": b"x"})
    images = f"file://{tmp_path / 'images'}"
    cli.run(
        "source", "add", "nd", f"file://{media}", "--images", "large-image",
        "--processors", "pyramid", "--output", images, "--output-layout", "mirror",
    )  # fmt: skip

    text_run, json_run = at_once(cli, ["source", "show", "nd"], ["source", "show", "nd", "--json"])
    assert text_run.returncode == json_run.returncode == 0, f"{text_run}\n{json_run}"
    text, shown = text_run.stdout.splitlines(), json_run.json()

    for line in (
        "images         large-image",
        "processors     pyramid",
        f"output         {images}",
    ):
        assert line in text, text
    assert "output_layout  mirror" in text
    assert shown["profile"] == {
        "images": "large-image",
        "processors": ["pyramid"],
        "output": images,
        "output_layout": "mirror",
        "output_endpoint_url": None,
    }

    changed = cli.run(
        "source", "set", "nd", "--images", "sequence", "--processors", "pyramid,video",
        "--output-layout", "catalog", "--output-endpoint-url", "http://127.0.0.1:9000",
        "--include", r"\.png$", "--exclude", "tmp/", "--schedule", "*/5 * * * *",
    ).stdout  # fmt: skip
    # '' goes back to the default, 'all' to every processor. What this prints as the old
    # values is what the first call stored.
    cleared = cli.run(
        "source", "set", "nd", "--output", "", "--processors", "all", "--include", "",
        "--schedule", "",
    ).stdout  # fmt: skip
    listed_run, same = at_once(
        cli, ["source", "list", "--json"], ["source", "set", "nd", "--images", "sequence"]
    )
    assert listed_run.returncode == same.returncode == 0, f"{listed_run}\n{same}"
    listed = listed_run.json()

    assert changed.splitlines() == [
        "nd: images: large-image -> sequence; processors: pyramid -> pyramid,video; "
        "output_layout: mirror -> catalog; output_endpoint_url: (none) -> "
        r"http://127.0.0.1:9000; include: (none) -> \.png$; exclude: (none) -> tmp/; "
        "schedule: (none) -> */5 * * * *"
    ]
    assert cleared.splitlines() == [
        f"nd: processors: pyramid,video -> all; output: {images} -> {DEFAULT_OUTPUT}; "
        r"include: \.png$ -> (none); schedule: */5 * * * * -> (none)"
    ]
    (src,) = listed
    assert src["profile"] == {
        "images": "sequence",
        "processors": "all",
        "output": DEFAULT_OUTPUT,
        "output_layout": "catalog",
        "output_endpoint_url": "http://127.0.0.1:9000",
    }
    assert (src["include"], src["exclude"], src["schedule"]) == (None, "tmp/", None)
    assert same.stdout == "nd: nothing changed\n"


def test_bad_values_are_one_line_errors_and_change_nothing(sqlite_cli: Cli, tmp_path: Path) -> None:
    cli = sqlite_cli
    media = media_dir(tmp_path / "media", {"a.png": b"x"})
    url = f"file://{media}"
    adds = {
        ("--processors", "pyramid,nope"): ["unknown processor 'nope'", "video, pyramid"],
        ("--images", "huge"): ["--images must be one of auto, large-image, sequence"],
    }
    for result, fragments in zip(
        at_once(cli, *(["source", "add", "s", url, *o] for o in adds)), adds.values(), strict=True
    ):
        assert_one_error_line(result, *fragments)
    cli.run("source", "add", "s", url, "--processors", "video")
    sets = {
        ("s", "--output-layout", "tree"): ["--output-layout must be one of catalog, mirror"],
        ("s", "--output", f"{url}/derived"): ["overlaps the source", url],
        ("s", "--schedule", "every day"): ["not a valid cron expression"],
    }
    for result, fragments in zip(
        at_once(cli, *(["source", "set", *o] for o in sets)), sets.values(), strict=True
    ):
        assert_one_error_line(result, *fragments)

    (src,) = cli.run("source", "list", "--json").json()
    assert src["profile"]["processors"] == ["video"]
    assert (src["profile"]["output_layout"], src["schedule"]) == ("catalog", None)


# -- the processors filter ---------------------------------------------------------------------


def test_left_out_processors_get_no_jobs_until_asked_for(catalog: Catalog, tmp_path: Path) -> None:
    """A ``--processors pyramid`` source gets no video job; adding ``video`` later queues
    nothing (not even with the next sync) until ``postprocess --only-pending``."""
    env = dict(os.environ)
    for name in ("every", "pyr"):
        media = media_dir(tmp_path / name, {"clips/a.mp4": b"not really a video"})
        processors = "pyramid" if name == "pyr" else None
        add_source(catalog, name, f"file://{media}", env=env, settings=SETTINGS,
                   processors=processors)  # fmt: skip
        sync_source(catalog, SETTINGS, name, env)
    services = Services(catalog, SETTINGS, env)
    folders = catalog_folders(catalog)
    every, pyr = (folders[f"/{n}/clips/Video a.mp4"].id for n in ("every", "pyr"))

    plan = postprocess(services, "/")

    assert jobs(catalog) == [("video", every)]
    assert len(plan.datasets) == 2  # both were looked at, and their marks cleared
    with pytest.raises(ConfigError, match="'video' is not in the profile of source 'pyr'"):
        reprocess(services, "/pyr", processor="video")
    assert reprocess(services, "/pyr").specs == []
    both = reprocess(services, "/", processor="video", dry_run=True)
    assert [(s.processor, s.target_id) for s in both.specs] == [("video", every)]
    assert both.line().endswith("1 dataset(s) skipped: their source's profile leaves it out")

    _, said = set_source(catalog, "pyr", env=env, settings=SETTINGS, processors="pyramid,video")
    assert said == ["processors: pyramid -> pyramid,video"]
    sync_source(catalog, SETTINGS, "pyr", env)
    assert postprocess(services, "/").queued == []
    assert jobs(catalog) == [("video", every)]

    plan = postprocess(services, "/", only_pending=True)

    assert len(plan.queued) == 1
    assert jobs(catalog) == [("video", every), ("video", pyr)]


def test_push_events_queue_only_the_profiles_processors(sqlite_url: str, bucket: S3Bucket) -> None:
    from mediamirror.events.apply import applier_for
    from mediamirror.events.model import Action, ObjectEvent
    from mediamirror.events.routing import Route

    catalog = Catalog(sqlite_url)
    env = dict(os.environ)
    try:
        for name in ("every", "pyr"):
            add_source(catalog, name, bucket.url(name), env=env, settings=SETTINGS,
                       processors="pyramid" if name == "pyr" else None,
                       **bucket.options)  # fmt: skip
        services = Services(catalog, SETTINGS, env)
        applier = applier_for(services)
        queued = {}
        for name in ("every", "pyr"):
            key = f"{name}/clips/a.mp4"
            bucket.put(key, b"not really a video")
            ev = ObjectEvent("s3", "ObjectCreated:Put", Action.CREATED, bucket.name, key)
            result = applier.apply(Route.of(get_source(catalog, name)), ev)
            assert result.outcome.value == "applied", result.as_dict()
            queued[name] = result.jobs
        folders = catalog_folders(catalog)
        assert len(queued["every"]) == 1 and queued["pyr"] == []
        assert jobs(catalog) == [("video", folders["/every/clips/Video a.mp4"].id)]
    finally:
        catalog.close()


# -- the API -----------------------------------------------------------------------------------


@dataclass
class Served:
    admin: httpx.Client
    viewer: httpx.Client
    media: Path


@pytest.fixture
def served(catalog_url: str, tmp_path: Path) -> Iterator[Served]:
    env = {**os.environ, "MEDIAMIRROR_HOME": str(tmp_path / "home")}
    catalog = Catalog(catalog_url)
    settings = load_settings({"home": str(tmp_path / "home"), "database_url": catalog_url}, env=env)
    media = media_dir(tmp_path / "media", {"a.png": b"x"})
    admin, viewer = (tokens.create(catalog, role, role) for role in ("admin", "viewer"))
    try:
        app = create_app(Services(catalog, settings, env), worker=False)
        with InProcessServer(app).running() as server:
            clients = [
                httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {t}"})
                for t in (admin, viewer)
            ]
            yield Served(clients[0], clients[1], media)
            for client in clients:
                client.close()
    finally:
        catalog.close()


def one_line_error(response: httpx.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_api_create_and_patch_a_profile(served: Served, tmp_path: Path) -> None:
    images = f"file://{tmp_path / 'images'}"
    body = {
        "name": "nd",
        "url": f"file://{served.media}",
        "images": "large-image",
        "processors": ["pyramid"],
        "output_url": images,
        "output_layout": "mirror",
    }
    created = served.admin.post("/api/v1/sources", json=body)

    assert created.status_code == 201, created.text
    profile = {
        "images": "large-image",
        "processors": ["pyramid"],
        "output": images,
        "output_layout": "mirror",
        "output_endpoint_url": None,
    }
    assert created.json()["profile"] == profile
    assert served.viewer.get("/api/v1/sources/nd").json()["profile"] == profile

    patched = served.admin.patch(
        "/api/v1/sources/nd",
        json={"images": "sequence", "processors": "pyramid,video", "schedule": "0 * * * *"},
    )

    assert patched.status_code == 200, patched.text
    assert patched.json()["changed"] == [
        "images: large-image -> sequence",
        "processors: pyramid -> pyramid,video",
        "schedule: (none) -> 0 * * * *",
    ]
    shown = served.viewer.get("/api/v1/sources/nd").json()
    assert shown["profile"] == {**profile, "images": "sequence", "processors": ["pyramid", "video"]}
    assert shown["schedule"] == "0 * * * *"
    cleared = served.admin.patch(
        "/api/v1/sources/nd", json={"output_url": "", "output_layout": "catalog", "schedule": ""}
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["profile"]["output"] == DEFAULT_OUTPUT
    assert cleared.json()["schedule"] is None


def test_api_refusals(served: Served) -> None:
    url = f"file://{served.media}"
    refused = served.admin.post(
        "/api/v1/sources", json={"name": "x", "url": url, "processors": "nope"}
    )
    one_line_error(refused, 400, "unknown processor 'nope'")
    assert served.viewer.get("/api/v1/sources").json() == []
    assert served.admin.post("/api/v1/sources", json={"name": "s", "url": url}).status_code == 201

    for body, fragment in (
        ({"images": "huge"}, "--images must be one of"),
        ({"output_layout": "tree"}, "--output-layout must be one of"),
        ({"processors": "nope"}, "unknown processor 'nope'"),
        ({"output_url": f"{url}/derived"}, "overlaps the source"),
        ({"output": "s3://typo"}, "output"),  # a misspelt field is refused, not ignored
        ({}, "nothing to change"),
    ):
        one_line_error(served.admin.patch("/api/v1/sources/s", json=body), 400, fragment)
    one_line_error(
        served.admin.patch("/api/v1/sources/gone", json={"images": "auto"}), 404, "'gone'"
    )
    one_line_error(
        served.viewer.patch("/api/v1/sources/s", json={"images": "sequence"}), 403, "admin"
    )
    assert served.viewer.get("/api/v1/sources/s").json()["profile"]["images"] == "auto"
