"""Scheduled re-syncs: a source with a cron schedule is synced when due, and only then."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from helpers import Cli
from mediamirror.catalog.db import Catalog
from mediamirror.config import load_settings
from mediamirror.errors import ConfigError
from mediamirror.scheduler import Scheduler, next_due, set_schedule, validate
from mediamirror.services import Services
from mediamirror.sources import recent_runs


def _services(cli: Cli) -> Services:
    env = cli.environ()
    settings = load_settings(env=env)
    return Services(Catalog(cli.database_url), settings, env)


def test_due_source_is_synced_and_not_again_until_next_slot(
    sqlite_cli: Cli, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (media / "clip.mp4").write_bytes(b"x")
    sqlite_cli.run("source", "add", "cam", f"file://{media}")
    # A folder beside the data directory: a source holding the output store is refused.
    other = tmp_path / "other"
    other.mkdir()
    sqlite_cli.run("source", "add", "other", f"file://{other}", "--mount", "/other")
    result = sqlite_cli.run("schedule", "cam", "*/5 * * * *")
    assert "synced on" in result.stdout
    services = _services(sqlite_cli)
    scheduler = Scheduler(services)
    scheduler.started = datetime.now(UTC) - timedelta(minutes=11)

    assert scheduler.tick() == ["cam"]  # "other" has no schedule
    source = services.source(1)
    runs = recent_runs(services.catalog, source.id)
    assert len(runs) == 1 and runs[0]["added"] == 1
    # The run just happened: the next slot is in the future, so nothing is due now.
    assert scheduler.tick() == []


def test_schedule_off_and_invalid(sqlite_cli: Cli, tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    sqlite_cli.run("source", "add", "cam", f"file://{media}")
    bad = sqlite_cli.run("schedule", "cam", "every minute", ok=False)
    assert bad.stderr.strip().startswith("error:") and "cron" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    sqlite_cli.run("schedule", "cam", "0 * * * *")
    sqlite_cli.run("schedule", "cam", "--off")
    services = _services(sqlite_cli)
    scheduler = Scheduler(services)
    scheduler.started = datetime.now(UTC) - timedelta(days=1)
    assert scheduler.tick() == []
    with pytest.raises(ConfigError):
        set_schedule(services.catalog, "cam", "61 * * * *")


def test_next_due_and_validate() -> None:
    start = datetime(2026, 1, 1, 10, 7, tzinfo=UTC)
    assert next_due("*/15 * * * *", start) == datetime(2026, 1, 1, 10, 15, tzinfo=UTC)
    assert validate("  0 3 * * *  ") == "0 3 * * *"
