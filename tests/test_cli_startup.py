"""The CLI's start and exit: a command imports only what it needs, and a command that
succeeded ends the process at once with everything written (output, catalog, log file).

The CLI runs as a subprocess through its entry point (``main``); the modules it loaded are
read from ``sys.modules`` by an exit handler, which also proves exit handlers still run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from feeds.cms import CmsServer, add_feed_source
from helpers import Cli
from mediamirror.cli import main

#: Never needed to show help or to sync a feed into a SQLite catalog.
HEAVY = (
    "boto3",
    "botocore",
    "pyvips",
    "av",
    "fastapi",
    "starlette",
    "uvicorn",
    "celery",
    "pyarrow",
    "PIL",
    "rich",
    "pygments",
    "alembic",
)

#: ``main`` called as the console script calls it, ``sys.modules`` written on exit.
_PROBE = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(list(sys.modules))))
sys.argv[0] = "mediamirror"
from mediamirror.cli import main
main()
"""


@pytest.fixture
def cms() -> Iterator[CmsServer]:
    server = CmsServer()
    server.max_first = 2
    for i in range(5):
        server.add(f"r{i}", f"clip{i}", f"http://127.0.0.1:9/{i}.mp4")
    with server.running():
        yield server


@pytest.fixture
def feed_cli(cms: CmsServer, sqlite_cli: Cli) -> Cli:
    """A SQLite catalog with a source ``premiere`` on the CMS feed."""
    return add_feed_source(cms, sqlite_cli)


def probe(
    cli: Cli, tmp_path: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The command's output and the modules it loaded, in the order they were loaded."""
    out = tmp_path / "modules.json"
    out.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), *args],
        env=cli.environ(),
        cwd=cli.home.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done, list(json.loads(out.read_text()))


def test_help_imports_no_heavy_module(sqlite_cli: Cli, tmp_path: Path) -> None:
    sqlite_cli.home.mkdir(parents=True)
    done, modules = probe(sqlite_cli, tmp_path, "--help")
    assert "sync" in done.stdout
    assert sorted(m for m in HEAVY if m in modules) == []
    # Nor the catalog's or the network's libraries: help opens nothing.
    assert [m for m in ("sqlalchemy", "httpx", "sqlite3") if m in modules] == []


def test_a_feed_sync_imports_no_heavy_module(feed_cli: Cli, tmp_path: Path) -> None:
    done, modules = probe(feed_cli, tmp_path, "sync", "premiere")
    assert "premiere: 5 added, 0 changed, 0 deleted" in done.stdout
    # The catalog is at head: no Alembic; the feed is walked with httpx, not its CLI.
    assert "httpx" in modules and "sqlalchemy" in modules
    assert sorted(m for m in HEAVY if m in modules) == []
    done, modules = probe(feed_cli, tmp_path, "sync", "premiere")
    assert "premiere: 0 added, 0 changed, 0 deleted, 5 unchanged" in done.stdout
    assert sorted(m for m in HEAVY if m in modules) == []


def test_a_feed_sync_starts_its_walk_before_importing_the_catalog(
    feed_cli: Cli, tmp_path: Path
) -> None:
    """The head start (stores/feed_early.py): the feed's walk is under way while SQLAlchemy
    and the sync engine are imported, not after."""
    done, modules = probe(feed_cli, tmp_path, "sync", "premiere")
    assert "premiere: 5 added" in done.stdout
    order = {name: i for i, name in enumerate(modules)}
    assert order["mediamirror.stores.feed_early"] < order["sqlalchemy"]
    assert order["mediamirror.stores.feed"] < order["sqlalchemy"]
    assert order["mediamirror.stores.feed"] < order["mediamirror.sync.engine"]


def test_a_command_ends_with_everything_written(feed_cli: Cli) -> None:
    """The quick exit closes the catalog (SQLite checkpoints and removes its WAL), flushes
    the output and runs the exit handlers (the log file gets the run's lines)."""
    db = feed_cli.home.parent / "catalog.db"
    assert db.exists()
    result = feed_cli.run("sync", "premiere", env={"MEDIAMIRROR_LOG_LEVEL": "info"})
    assert "premiere: 5 added" in result.stdout
    assert not Path(f"{db}-wal").exists()
    logs = "".join(p.read_text() for p in (feed_cli.home / "logs").rglob("*sync*.log*"))
    assert "premiere: 5 added" in logs
    listed = feed_cli.run("source", "list")
    assert "feed://premiere" in listed.stdout and listed.returncode == 0


def test_main_called_in_process_returns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the program's entry point ends the process itself: a caller in-process (a
    script, this test) gets control back."""
    monkeypatch.setattr(sys, "argv", ["mediamirror", "--version"])
    main()
    assert "mediamirror, version" in capsys.readouterr().out
