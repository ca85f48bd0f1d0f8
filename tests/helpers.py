"""Test helpers: real peers (an S3 API server, the CLI as a subprocess) and catalog probes.

Nothing here mocks a mediamirror component: the S3 API is moto's server answering HTTP on
localhost, the CLI runs through its installed entry point, and catalog checks read the
database the code under test wrote.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from sqlalchemy import Engine, event, select

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS, ITEMS, SYNC_RUNS

#: Credentials moto accepts (it accepts any, unless IAM auth is switched on).
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Never read the developer's own AWS files, never ask an instance metadata service.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


#: Under pytest-xdist each worker takes its ports from a slice of its own below the
#: kernel's ephemeral range (32768 and up): no other worker picks the same port between
#: the check here and the server binding it, and no outgoing connection takes it meanwhile.
_WORKER_PORTS = 20000
_WORKER_SLICE = 1500
#: Ports handed out lately by this process: never twice in a row, though still unbound.
_handed: deque[int] = deque(maxlen=256)


def _unused(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))  # no SO_REUSEADDR: a port in TIME_WAIT is skipped
        except OSError:
            return False
    return True


def free_port() -> int:
    """A localhost port nothing uses now, for a server the test starts next."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit() and int(worker[2:]) < 8:
        low = _WORKER_PORTS + int(worker[2:]) * _WORKER_SLICE
        for _ in range(100):
            port = random.randrange(low, low + _WORKER_SLICE)
            if port not in _handed and _unused(port):
                _handed.append(port)
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    _handed.append(port)
    return port


def closed_port() -> int:
    """A localhost port nothing listens on (bound and released just now)."""
    return free_port()


# -- S3 API server -----------------------------------------------------------------------------


class S3Server:
    """moto's S3 API server as a real subprocess on a free localhost port."""

    def __init__(self, extra_env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **AWS_ENV, **(extra_env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # it answered HTTP, which is all we wait for
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint} in {timeout} s")

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(max_pool_connections=16, retries={"max_attempts": 2}),
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- stores as the tests see them --------------------------------------------------------------


class S3Bucket:
    """A fresh bucket on the moto server, filled by the test through boto3."""

    kind = "s3"

    def __init__(self, server: S3Server, client: Any, name: str | None = None) -> None:
        self.server = server
        self.client = client
        self.name = name or f"mm-{secrets.token_hex(6)}"
        self.client.create_bucket(Bucket=self.name)

    def url(self, sub: str = "") -> str:
        return f"s3://{self.name}/{sub}" if sub else f"s3://{self.name}"

    def object_url(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    @property
    def options(self) -> dict[str, Any]:
        """Keyword options of ``add_source`` pointing at the server."""
        return {"endpoint_url": self.server.endpoint, "preset": "minio"}

    @property
    def cli_options(self) -> list[str]:
        return ["--endpoint-url", self.server.endpoint, "--preset", "minio"]

    def put(self, key: str, body: bytes = b"x") -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=body)

    def put_many(self, keys: list[str], body: bytes = b"x", threads: int = 8) -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda k: self.put(k, body), keys))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=key)

    def keys(self) -> list[str]:
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name):
            out.extend(obj["Key"] for obj in page.get("Contents", ()))
        return out

    def drop(self) -> None:
        """Delete every object, then the bucket itself."""
        for key in self.keys():
            self.delete(key)
        self.client.delete_bucket(Bucket=self.name)


class LocalBucket:
    """A directory used through the ``file://`` backend, with the S3Bucket interface."""

    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def url(self, sub: str = "") -> str:
        return f"file://{self.root / sub}" if sub else f"file://{self.root}"

    def object_url(self, key: str) -> str:
        return f"file://{self.root.resolve()}/{key}"

    @property
    def options(self) -> dict[str, Any]:
        return {}

    @property
    def cli_options(self) -> list[str]:
        return []

    def put(self, key: str, body: bytes = b"x") -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        before = path.stat().st_mtime_ns if path.exists() else None
        path.write_bytes(body)
        if before is not None and path.stat().st_mtime_ns <= before:
            # A rewrite within one clock tick must still look changed, as on a real disk
            # written a moment later.
            os.utime(path, ns=(before + 1_000_000, before + 1_000_000))

    def put_many(self, keys: list[str], body: bytes = b"x", threads: int = 1) -> None:
        for key in keys:
            self.put(key, body)

    def delete(self, key: str) -> None:
        (self.root / key).unlink()

    def keys(self) -> list[str]:
        found = [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]
        return sorted(found, key=lambda k: k.encode())


# -- the CLI through its real entry point ------------------------------------------------------


def entry_point() -> list[str]:
    """The installed ``mediamirror`` script next to this interpreter, or ``-m`` as fallback."""
    script = Path(sys.executable).parent / "mediamirror"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "mediamirror.cli"]


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (
            f"mediamirror {' '.join(self.args)} -> exit {self.returncode}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


@dataclass
class Cli:
    """Runs ``mediamirror`` as a subprocess against one test catalog."""

    home: Path
    database_url: str
    env: dict[str, str] = field(default_factory=dict)

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMIRROR_")}
        base.update(AWS_ENV)
        base.update(
            MEDIAMIRROR_HOME=str(self.home),
            MEDIAMIRROR_DATABASE_URL=self.database_url,
            # Sync alone by default; tests that want post-processing after a sync turn it on.
            MEDIAMIRROR_AUTO_POSTPROCESS="false",
            # Files the tests write are complete: process them at once (the settle tests
            # turn waiting on).
            MEDIAMIRROR_SETTLE_SECONDS="0",
            COLUMNS="100",
        )
        base.update(self.env)
        base.update(extra or {})
        return base

    def popen(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*entry_point(), *args],
            env=self.environ(env),
            cwd=self.home.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        ok: bool | None = True,
        timeout: float = 60,
    ) -> Result:
        """Run one command. ``ok=True`` expects exit 0, ``False`` expects failure."""
        proc = subprocess.run(
            [*entry_point(), *args],
            env=self.environ(env),
            cwd=self.home.parent,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result = Result(list(args), proc.returncode, proc.stdout, proc.stderr)
        if ok is True:
            assert result.returncode == 0, str(result)
        elif ok is False:
            assert result.returncode != 0, str(result)
        return result


def assert_one_error_line(result: Result, *fragments: str) -> str:
    """Exit code 1, stderr exactly one line ``error: ...`` holding every fragment."""
    assert result.returncode == 1, str(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, str(result)
    line = lines[0]
    assert line.startswith("error: "), str(result)
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in line, str(result)
    return line


# -- catalog probes ----------------------------------------------------------------------------


def catalog_items(catalog: Catalog) -> dict[str, Any]:
    """Every item row by key (a duplicate key fails the test)."""
    with catalog.read() as conn:
        rows = conn.execute(select(ITEMS).order_by(ITEMS.c.key)).all()
    by_key = {row.key: row for row in rows}
    assert len(by_key) == len(rows), "duplicate item keys in the catalog"
    return by_key


def catalog_folders(catalog: Catalog) -> dict[str, Any]:
    with catalog.read() as conn:
        return {row.path: row for row in conn.execute(select(FOLDERS))}


def item_folders(catalog: Catalog) -> dict[str, str]:
    """key -> path of the folder holding the item."""
    with catalog.read() as conn:
        rows = conn.execute(
            select(ITEMS.c.key, FOLDERS.c.path).join(FOLDERS, ITEMS.c.folder_id == FOLDERS.c.id)
        ).all()
    return {key: path for key, path in rows}


def sync_runs(catalog: Catalog) -> list[Any]:
    with catalog.read() as conn:
        return list(conn.execute(select(SYNC_RUNS).order_by(SYNC_RUNS.c.id)))


_WRITE = re.compile(r'^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)"?', re.IGNORECASE)


@dataclass
class Statements:
    """SQL statements an engine sent, as (verb, table, executemany) tuples."""

    seen: list[tuple[str, str, bool]] = field(default_factory=list)

    def count(self, verb: str | None = None, table: str | None = None) -> int:
        return sum(
            1
            for v, t, _ in self.seen
            if (verb is None or v == verb) and (table is None or t == table)
        )

    def writes_to(self, *tables: str) -> list[tuple[str, str, bool]]:
        return [s for s in self.seen if s[1] in tables]


@contextmanager
def count_writes(engine: Engine) -> Iterator[Statements]:
    """Record every INSERT/UPDATE/DELETE the engine sends while the block runs."""
    stats = Statements()

    def listener(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool
    ) -> None:
        match = _WRITE.match(statement)
        if match:
            verb = match.group(1).split()[0].upper()
            stats.seen.append((verb, match.group(2).lower(), executemany))

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield stats
    finally:
        event.remove(engine, "before_cursor_execute", listener)


# -- in-process sync ---------------------------------------------------------------------------


def add_source(catalog: Catalog, name: str, store: Any, sub: str = "", **options: Any) -> Any:
    """Register ``store`` (an S3Bucket or LocalBucket) as source ``name``."""
    from mediamirror.sources import add_source as add

    return add(catalog, name, store.url(sub), env=os.environ, **{**store.options, **options})


def sync(
    catalog: Catalog, name: str, *, page_size: int = 1000, large_image_bytes: int = 1 << 24
) -> Any:
    """One in-process sync through the same function the CLI calls."""
    from mediamirror.config import Settings
    from mediamirror.sources import sync_source

    settings = Settings(sync_page_size=page_size, large_image_bytes=large_image_bytes)
    return sync_source(catalog, settings, name, os.environ)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll ``check`` until it returns something true (returned), or fail saying ``what``
    was not reached within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
