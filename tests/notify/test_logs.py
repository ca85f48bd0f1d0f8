"""Log files: one per process, rotated on its own, every line whole and tagged.

Real processes through the installed entry point (two syncs and a worker at once, a
server answering HTTP), each logging at debug into a tiny ``log_max_bytes``; the tests
then read every file they left.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from api.support import wait_http
from helpers import Cli, LocalBucket, free_port
from mediamirror.catalog.db import Catalog
from mediamirror.jobs.model import JOBS

pytestmark = pytest.mark.timeout(180)

#: Small enough that every process rotates many times, with room for every backup.
TINY = {"MEDIAMIRROR_LOG_MAX_BYTES": "600", "MEDIAMIRROR_LOG_BACKUPS": "10000"}
KEYS = 150
PAGE = 10
CLIPS = 6
HOST = re.sub(r"[^A-Za-z0-9_.]+", "_", socket.gethostname())
FILE = re.compile(rf"mediamirror-(?P<role>\w+)-{re.escape(HOST)}-(?P<pid>\d+)\.log(\.\d+)?")


def _log_dir(cli: Cli) -> Path:
    return cli.home / "logs"


def _files(cli: Cli) -> list[Path]:
    if not _log_dir(cli).exists():
        return []
    return sorted(p for p in _log_dir(cli).iterdir() if p.is_file())


def _json_lines(cli: Cli) -> list[dict[str, Any]]:
    """Every line of every file, parsed (a garbled line fails the test here)."""
    records = []
    for path in _files(cli):
        match = FILE.fullmatch(path.name)
        assert match, f"unexpected file {path.name}"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                record = json.loads(line)
            except ValueError:
                pytest.fail(f"{path.name}:{number} is not one JSON object: {line!r}")
            # A process writes its own file only.
            assert record["pid"] == int(match["pid"]), (path.name, line)
            records.append({**record, "role": match["role"]})
    return records


def _configure_noop(cli: Cli) -> None:
    """A command processor that does nothing, for post-processing jobs without media."""
    command = f"{shlex.quote(sys.executable)} -c pass"
    config = {"processors": {"noop": {"command": command, "applies_to": ["video"]}}}
    cli.home.mkdir(parents=True, exist_ok=True)
    (cli.home / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=150)
    return proc.returncode, out, err


def test_processes_logging_at_once_rotate_without_losing_a_line(
    sqlite_cli: Cli, sqlite_url: str, tmp_path: Path
) -> None:
    cli = sqlite_cli
    cli.env.update(TINY, MEDIAMIRROR_LOG_FORMAT="json", MEDIAMIRROR_SYNC_PAGE_SIZE=str(PAGE))
    _configure_noop(cli)
    stores = {name: LocalBucket(tmp_path / name) for name in ("alpha", "beta", "clips")}
    for name in ("alpha", "beta"):
        stores[name].put_many([f"k/{i:04d}.bin" for i in range(KEYS)])
    stores["clips"].put_many([f"c{i}.mp4" for i in range(CLIPS)], b"not a video")
    for name, store in stores.items():
        cli.run("source", "add", name, store.url())
    cli.run("sync", "clips")
    assert cli.run("reprocess", "/clips", "-p", "noop").returncode == 0

    debug = ("--log-level", "debug")
    procs = [cli.popen(*debug, "sync", name, "-q") for name in ("alpha", "beta")]
    procs.append(cli.popen(*debug, "worker", "--burst"))
    for proc in procs:
        code, out, err = _finish(proc)
        assert code == 0, f"{proc.args}\n{out}\n{err[-3000:]}"

    records = _json_lines(cli)
    names = [p.name for p in _files(cli)]
    rotated = {m["pid"] for n in names if (m := FILE.fullmatch(n)) and n.endswith(".log.2")}
    assert len(rotated) == len(procs), f"each process rotates its file: {names}"
    for name in ("alpha", "beta"):
        written = [
            int(m[1])
            for r in records
            if r.get("source") == name
            and r["role"] == "sync"
            and (m := re.fullmatch(rf"{name}: (\d+) keys written up to .*", r["message"]))
        ]
        # One line per chunk, each tagged with its source: together they hold every key.
        assert sum(written) == KEYS and len(written) >= KEYS // PAGE, (name, written)
    catalog = Catalog(sqlite_url, migrate=False)
    try:
        with catalog.read() as conn:
            jobs = conn.execute(select(JOBS.c.id, JOBS.c.state)).all()
    finally:
        catalog.close()
    assert len(jobs) == CLIPS and {j.state for j in jobs} == {"success"}, jobs
    for job in jobs:
        lines = [r["message"] for r in records if r.get("job_id") == job.id]
        assert f"job {job.id} started: noop on folder" in " ".join(lines), lines
        assert lines.count(f"job {job.id} ended: success") == 1, lines


def test_text_format_a_file_elsewhere_and_no_file(sqlite_cli: Cli, tmp_path: Path) -> None:
    cli = sqlite_cli
    store = LocalBucket(tmp_path / "media")
    store.put_many([f"{i}.bin" for i in range(30)])
    cli.run("source", "add", "media", store.url())
    target = tmp_path / "var" / "mm.log"
    env = {"MEDIAMIRROR_LOG_FILE": str(target), "MEDIAMIRROR_SYNC_PAGE_SIZE": "10"}
    result = cli.run("--log-level", "debug", "sync", "media", "-q", env=env)
    [path] = list(target.parent.iterdir())
    assert FILE.fullmatch(path.name.replace("mm-", "mediamirror-", 1)), path.name
    text = path.read_text(encoding="utf-8")
    head = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) [\w.]+")
    assert re.search(
        r"^.* DEBUG mediamirror\.sync\.engine \[source=media\]: media: 10 keys", text, re.M
    )
    assert all(head.match(line) for line in text.splitlines()), text
    # stderr carries the same lines.
    assert "[source=media]: media: 10 keys written" in result.stderr
    assert _files(cli) == []  # `source add` logged nothing: no file

    cli.run("--log-level", "debug", "sync", "media", "-q", env={"MEDIAMIRROR_LOG_FILE": "off"})
    assert list(target.parent.iterdir()) == [path] and _files(cli) == []
    bad = cli.run("source", "list", env={"MEDIAMIRROR_LOG_FORMAT": "xml"}, ok=False)
    assert bad.stderr.strip() == "error: log_format 'xml' must be one of: text, json"


def test_files_of_ended_processes_are_pruned_beyond_a_bound(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    logs = _log_dir(cli)
    logs.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a PID no process has now (nothing reuses it within this test)
    alive = os.getpid()
    ended = []
    for i in range(25):
        path = logs / f"mediamirror-sync{i}-{HOST}-{gone.pid}.log"
        for name in (path.name, path.name + ".1"):
            (logs / name).write_text("old\n")
            os.utime(logs / name, (1000 + i, 1000 + i))
        ended.append(path.name)
    kept_alive = logs / f"mediamirror-serve-{HOST}-{alive}.log"
    other_host = logs / f"mediamirror-serve-otherhost-{gone.pid}.log"
    for path in (kept_alive, other_host):
        path.write_text("old\n")
    cli.run("source", "list")
    left = {p.name for p in logs.iterdir()}
    newest = ended[-20:]
    assert {n for n in left if n.startswith("mediamirror-sync")} == {
        *newest,
        *(n + ".1" for n in newest),
    }
    assert kept_alive.name in left and other_host.name in left


def test_api_lines_carry_the_request_id(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    cli.env.update(MEDIAMIRROR_LOG_FORMAT="json", MEDIAMIRROR_LOG_LEVEL="info")
    token = cli.run("token", "create", "--role", "admin").stdout.strip()
    port = free_port()
    server = cli.popen("serve", "--no-worker", "--port", str(port), "--access-log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/api/v1/health", process=server)
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
            mine = client.get("/api/v1/sources", headers={"X-Request-Id": "client-42"})
            new = client.get("/api/v1/sources?token=abcdefgh")
            refused = client.get("/api/v1/sources", headers={"X-Request-Id": "bad id\tx"})
            missing = client.get("/api/v1/jobs/999999")
        assert mine.status_code == 200 and mine.headers["X-Request-Id"] == "client-42"
        generated = new.headers["X-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{16}", generated), generated
        assert refused.headers["X-Request-Id"] not in {"bad id\tx", generated}
        assert missing.status_code == 404 and missing.headers["X-Request-Id"]
        ids = {r.headers["X-Request-Id"] for r in (mine, new, refused, missing)}
        wanted = {rid: False for rid in ids}

        def all_logged() -> bool:
            for r in _json_lines(cli):
                if r["logger"] == "uvicorn.access" and r.get("request_id") in wanted:
                    wanted[r["request_id"]] = True
            return all(wanted.values())

        _wait(all_logged)
    finally:
        server.terminate()
        server.communicate(timeout=30)
    records = _json_lines(cli)
    # uvicorn's error logger writes through the same handlers (its own are gone).
    assert any(r["logger"] == "uvicorn.error" and r["role"] == "serve" for r in records)
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    line = next(r for r in access if r.get("request_id") == generated)
    assert "token=***" in line["message"] and "abcdefgh" not in line["message"], line


def _wait(predicate: Any, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


#: Logging mistakes and crashes that print past the handlers unless set-up routes them.
CRASHES = """\
import logging, sys, threading, warnings
from mediamirror import logs
from mediamirror.config import load_settings
from mediamirror.redact import remember

remember(sys.argv[1], "PW")
logs.setup(load_settings(), "crash")
logging.getLogger("mediamirror.x").warning("login to %s failed", "smtp.example.org", sys.argv[1])
warnings.warn("connecting with " + sys.argv[1])


def fail():
    raise OSError(sys.argv[1])


thread = threading.Thread(target=fail)
thread.start()
thread.join()
raise RuntimeError("cannot open postgresql://u:" + sys.argv[1] + "@db/x")
"""


def test_bad_log_calls_warnings_and_uncaught_errors_are_redacted(sqlite_cli: Cli) -> None:
    secret = "pw-crash-7Yq2"
    env = sqlite_cli.environ({"MEDIAMIRROR_LOG_FORMAT": "json"})
    done = subprocess.run(
        [sys.executable, "-c", CRASHES, secret], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1, done.stderr
    [path] = _files(sqlite_cli)
    text = path.read_text(encoding="utf-8")
    records = [json.loads(line) for line in text.splitlines()]
    assert secret not in done.stderr + done.stdout + text, done.stderr
    messages = " | ".join(r["message"] + r.get("exception", "") for r in records)
    assert "login to %s failed" in messages and "'${PW}'" in messages, messages
    assert "connecting with ${PW}" in messages and "OSError: ${PW}" in messages, messages
    assert "postgresql://u:${PW}@db/x" in messages or "u:***@db" in messages, messages
    assert "Logging error" not in done.stderr
