"""No secret leaves mediamirror: a whole session with known secrets, then a search of
everything it wrote or said for them.

The secrets: an S3 secret key (a bucket source whose credentials come from variables
named like nothing secret), an SMTP password and a webhook secret (config.yaml ``${VAR}``),
an API token and a push token. The session, at debug level and with JSON log files: add
and sync the source, a worker running a command processor that fails after printing its
environment and arguments, ``serve`` answering API calls and a bucket push, notifications
sent by email and webhook (``sync --process``, ``notify test``). Then every log file,
every job log (CLI and API), every API response body, every CLI output, every message
sent and a dump of every table of the catalog are searched for each secret value.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import MetaData, create_engine, select
from sqlalchemy.exc import SAWarning

from api.support import wait_http
from events.support import s3_event, s3_record
from helpers import Cli, S3Bucket, free_port

from .conftest import SMTP_PASSWORD, SmtpServer, WebhookReceiver, wait_until

pytestmark = pytest.mark.timeout(240)

S3_SECRET = "mm-proof-s3-secret-Zx81bqWv"
WEBHOOK_SECRET = "mm-proof-hook-secret-Q7pLs"
ENV = {
    # Named like nothing secret: only the source's naming them hides them.
    "MM_CAMS_A": "AKIAMMPROOF000000001",
    "MM_CAMS_B": S3_SECRET,
    "SMTP_PASSWORD": SMTP_PASSWORD,
    "MM_HOOK": WEBHOOK_SECRET,
    "MEDIAMIRROR_LOG_LEVEL": "debug",
    "MEDIAMIRROR_LOG_FORMAT": "json",
    "MEDIAMIRROR_AUTO_POSTPROCESS": "true",
    "MEDIAMIRROR_JOB_RETRY_INTERVALS": "0.1,0.1",
    "MEDIAMIRROR_WORKERS": "2",
    "MEDIAMIRROR_NOTIFY_QUIET_SECONDS": "0",
}

#: A processor that does what careless scripts do: print its secrets, then fail.
LEAKY = """\
import os, sys
print("argv:", *sys.argv[1:], flush=True)
for name in ("MM_CAMS_B", "SMTP_PASSWORD", "MM_HOOK", "AWS_SECRET_ACCESS_KEY"):
    print("env", name, "=", os.environ.get(name), flush=True)
print("giving up with", os.environ.get("MM_CAMS_B"), file=sys.stderr, flush=True)
sys.exit(3)
"""


class Session:
    """Everything the session produced, by where it came from."""

    def __init__(self, cli: Cli) -> None:
        self.cli = cli
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        self.texts.append((where, text))

    def run(self, *args: str, ok: bool | None = True, keep: bool = True) -> str:
        result = self.cli.run(*args, ok=ok, timeout=120)
        # stdout of a command that shows a secret once, by design, is left out.
        self.add(f"cli {' '.join(args)}", (result.stdout if keep else "") + result.stderr)
        return result.stdout

    def http(self, client: httpx.Client, method: str, url: str, **kw: Any) -> httpx.Response:
        response = client.request(method, url, **kw)
        self.add(f"api {method} {url} -> {response.status_code}", response.content)
        self.add(f"api {method} {url} headers", json.dumps(dict(response.headers)))
        return response

    def leaks(self, secrets: dict[str, str]) -> list[str]:
        return [
            f"{name} in {where}: ...{text[max(0, i - 80) : i + 80]!r}..."
            for where, text in self.texts
            for name, value in secrets.items()
            if (i := text.find(value)) >= 0
        ]


def _configure(cli: Cli, smtp: SmtpServer, hook: WebhookReceiver, root: Path) -> None:
    script = root / "leaky.py"
    script.write_text(LEAKY)
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} --input {{input}}"
    config = {
        "email": smtp.email_block(password="${SMTP_PASSWORD}", security="none"),
        "notify": {
            "on": ["dataset.ready", "job.failed", "sync.failed", "sync.finished"],
            "webhooks": [{"url": hook.url, "secret": "${MM_HOOK}", "format": "json"}],
        },
        "processors": {
            "leaky": {
                "command": command + " --pw ${SMTP_PASSWORD} {args}",
                "applies_to": ["video"],
                "args": "--hook ${MM_HOOK}",
            }
        },
    }
    cli.home.mkdir(parents=True, exist_ok=True)
    (cli.home / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


def _dump_catalog(url: str) -> str:
    """Every row of every table, every column (like SQLite's ``.dump``)."""
    engine = create_engine(url)
    meta = MetaData()
    with warnings.catch_warnings():  # expression indexes are not reflected; rows are
        warnings.simplefilter("ignore", SAWarning)
        meta.reflect(engine)
    lines = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                lines.append(f"{table.name}: {tuple(row)!r}")
    engine.dispose()
    assert any(line.startswith("jobs:") for line in lines) and any(
        line.startswith("sources:") for line in lines
    )
    return "\n".join(lines)


def _serve(cli: Cli, session: Session, port: int) -> Callable[[], None]:
    url = f"http://127.0.0.1:{port}"
    proc = cli.popen("serve", "--port", str(port), "--access-log")
    try:
        wait_http(url + "/api/v1/health", process=proc)
    except BaseException:
        proc.kill()
        raise

    def stop() -> None:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        session.add("serve output", out + err)

    return stop


def _api_calls(session: Session, url: str, api_token: str, push_url: str, bucket: str) -> None:
    auth = {"Authorization": f"Bearer {api_token}"}
    with httpx.Client(base_url=url, headers=auth, timeout=60) as api:
        for path in ("/api/v1/sources", "/api/v1/sources/cams", "/api/v1/sources/cams/runs"):
            assert session.http(api, "GET", path).status_code == 200
        rows = session.http(api, "GET", "/api/v1/jobs").json()["jobs"]
        assert rows
        for job in rows:
            session.http(api, "GET", f"/api/v1/jobs/{job['id']}")
            session.http(api, "GET", f"/api/v1/jobs/{job['id']}/log")
        folders = session.http(api, "GET", "/api/v1/folders").json()["folders"]
        while folders:  # the whole tree, and every dataset's page
            folder = folders.pop()
            session.http(api, "GET", f"/api/v1/folders/{folder['id']}")
            session.http(api, "GET", f"/api/v1/folders/{folder['id']}/items")
            if folder.get("type"):
                session.http(api, "GET", f"/api/v1/datasets/{folder['id']}")
            children = session.http(api, "GET", f"/api/v1/folders/{folder['id']}/children")
            folders.extend(children.json()["folders"])
        session.http(api, "POST", "/api/v1/sources/cams/sync")
        session.http(api, "GET", "/api/v1/events")
        session.http(api, "GET", "/api/v1/notifications")
        session.http(api, "POST", "/api/v1/notifications/test")
        # Tokens where people put them wrongly: in a URL (the access log shows URLs).
        session.http(api, "GET", f"/api/v1/nothing?token={api_token}")
        session.http(api, "GET", "/api/v1/sources", headers={"Authorization": "Bearer mm_nope"})
    event = s3_event(s3_record(bucket, "field/pushed.mp4", size=11))
    with httpx.Client(timeout=60) as push:
        answer = session.http(push, "POST", push_url, json=event)
        assert answer.status_code < 300, answer.text
        session.http(push, "POST", push_url.replace("token=", "token=x"), json=event)


def test_no_secret_in_any_output_of_a_whole_session(
    sqlite_cli: Cli,
    sqlite_url: str,
    bucket: S3Bucket,
    smtp_login_server: SmtpServer,
    webhook_receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    cli = sqlite_cli
    cli.env.update(ENV)
    port = free_port()
    cli.env["MEDIAMIRROR_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    _configure(cli, smtp_login_server, webhook_receiver, tmp_path)
    session = Session(cli)
    bucket.put("field/clip.mp4", b"not really a video")
    bucket.put("field/notes.txt", b"hello")

    creds = ["--access-key-env", "MM_CAMS_A", "--secret-key-env", "MM_CAMS_B"]
    session.run("source", "add", "cams", bucket.url(), *bucket.cli_options, *creds)
    session.run("sync", "cams")
    session.run("worker", "--burst")
    # Crontab mode: another sync, and the notifications of the failures go out.
    session.run("sync", "cams", "--process", ok=None)
    failed = [m for m in smtp_login_server.messages if "failed" in m.subject]
    assert len(failed) >= 2, [m.subject for m in smtp_login_server.messages]
    assert any("giving up with" in m.part("text/plain") for m in failed)  # the job's reason
    # Shown once, by design: the only outputs not searched.
    api_token = session.run("token", "create", "--role", "admin", keep=False).strip()
    push_out = session.run("source", "push-token", "cams", keep=False)
    push_url = next(w for w in push_out.split() if "token=" in w)
    push_token = push_url.split("token=", 1)[1]
    secrets = {
        "S3 secret key": S3_SECRET,
        "SMTP password": SMTP_PASSWORD,
        "webhook secret": WEBHOOK_SECRET,
        "API token": api_token,
        "push token": push_token,
    }

    stop = _serve(cli, session, port)
    try:
        _api_calls(session, f"http://127.0.0.1:{port}", api_token, push_url, bucket.name)
        session.run("notify", "test")
        session.run("config", "check", ok=None)
        # The worker of serve runs the jobs the push and the API sync queued.
        wait_until(lambda: "queued" not in session.run("jobs", "list", keep=False), 90)
    finally:
        stop()

    rows = json.loads(session.run("jobs", "list", "--json"))
    leaky = [j for j in rows if j["processor"] == "leaky"]
    assert leaky and all(j["state"] == "error" for j in leaky), rows
    reads = [("jobs", "show", str(j["id"]), "--json") for j in rows]
    reads += [("jobs", "log", str(j["id"])) for j in rows]
    reads += [("source", "list", "--json"), ("source", "show", "cams", "--json")]
    reads += [("token", "list", "--json"), ("events", "list"), ("notify", "list")]
    with ThreadPoolExecutor(4) as pool:  # read-only commands: side by side
        list(pool.map(lambda args: session.run(*args), reads))

    # The session did meet every secret: the script printed them (hidden in its log),
    # the push and the token were accepted, messages went out.
    job_log = session.run("jobs", "log", str(leaky[0]["id"]), keep=False)
    assert "env MM_CAMS_B = ${MM_CAMS_B}" in job_log, job_log
    hidden = r"(\*\*\*|\$\{%s\})"
    assert re.search(rf"--pw {hidden % 'SMTP_PASSWORD'} --hook {hidden % 'MM_HOOK'}", job_log)
    assert smtp_login_server.logins and webhook_receiver.posts  # messages went out
    for message in smtp_login_server.messages:
        session.add(f"email {message.subject}", message.raw)
    for request in webhook_receiver.requests:
        session.add(f"webhook {request.path}", request.body)
        session.add(f"webhook {request.path} headers", json.dumps(request.headers))

    logs = sorted((cli.home / "logs").iterdir())
    roles = {p.name.split("-")[1] for p in logs}
    assert {"sync", "worker", "serve", "notify"} <= roles, roles
    for path in logs:
        session.add(f"log file {path.name}", path.read_text(encoding="utf-8"))
    session.add("catalog", _dump_catalog(sqlite_url))

    leaks = session.leaks(secrets)
    assert not leaks, "\n".join(leaks)
