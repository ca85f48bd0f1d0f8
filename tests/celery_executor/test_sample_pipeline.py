"""The Quick start's sample pipeline with ``MEDIAMIRROR_EXECUTOR=celery`` on PostgreSQL: two
``serve`` processes on one catalog, two Celery worker processes (``worker --executor celery
--concurrency 1``) on a redis-server of the test's own, all real subprocesses. A sync
started through the API of one service process queues the samples' jobs; the workers run
each exactly once and every dataset ends processed as in the local run of the demo
(tests/jobs/test_postprocess_cli.py: the Quick start with the local executor)."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from conftest import PG_ENV, PG_HOWTO, _missing, pg_schema_url
from helpers import Cli, entry_point, free_port
from jobs.conftest import assert_web_mp4
from mediamirror.catalog.db import Catalog
from mediamirror.catalog.models import FOLDERS
from mediamirror.jobs import dispatch
from mediamirror.jobs.model import JOBS
from mediamirror.processing.transcode import has_encoder
from mediamirror.samples import generate_samples

from .conftest import RedisServer, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

SIDE = 1024  # large_image_px: a 3 MiB slide, a pyramid above LARGE_IMAGE_BYTES
ENV = {
    "MEDIAMIRROR_EXECUTOR": "celery",
    "MEDIAMIRROR_LARGE_IMAGE_BYTES": "2000000",
    "MEDIAMIRROR_TRANSCODE_PRESET": "ultrafast",
    "MEDIAMIRROR_AUTO_POSTPROCESS": "true",  # the product's default
    "MEDIAMIRROR_JOB_RETRY_INTERVALS": "0.1,0.1",
    "MEDIAMIRROR_LOG_FILE": "off",
    "MEDIAMIRROR_LOG_LEVEL": "info",
}


@dataclass
class Pipeline:
    root: Path
    cli: Cli
    catalog: Catalog
    token: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.root / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [*entry_point(), *args],
                env=self.cli.environ(),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a worker's pool children and dispatcher die with it
            )
        self.procs[name] = proc
        return proc

    def serve(self, name: str) -> None:
        port = free_port()
        self.start(name, "serve", "--port", str(port))
        self.urls[name] = f"http://127.0.0.1:{port}"

    def ready(self, name: str) -> bool:
        assert self.procs[name].poll() is None, self.log(name)
        try:
            return httpx.get(f"{self.urls[name]}/api/v1/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def api(self, name: str, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        resp = httpx.request(
            method, f"{self.urls[name]}/api/v1{path}", headers=headers, timeout=30, **kwargs
        )
        assert resp.is_success, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json()

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    base = os.environ.get(PG_ENV, "")
    if not base:
        _missing(PG_HOWTO)
    root = tmp_path_factory.mktemp("celery-samples")
    redis = RedisServer(root)
    schema_urls = pg_schema_url(base)
    url = next(schema_urls)
    home = root / "home"
    home.mkdir()
    cli = Cli(home=home, database_url=url)
    cli.env.update(ENV, MEDIAMIRROR_BROKER_URL=redis.url)
    media = root / "sample-media"
    generate_samples(media, large_image_px=SIDE)
    cli.run("source", "add", "sample", f"file://{media}")
    catalog = Catalog(url)
    found = Pipeline(root, cli, catalog, cli.run("token", "create", "--role", "admin").stdout)
    found.token = found.token.strip()
    try:
        for name in ("worker-1", "worker-2"):
            found.start(name, "worker", "--executor", "celery", "--concurrency", "1")
        for name in ("serve-a", "serve-b"):
            found.serve(name)
        for name in ("serve-a", "serve-b"):
            wait_for(functools.partial(found.ready, name), 60, f"{name} to answer")
        # Both workers take jobs from the start: the test sees each of them run some.
        wait_for(lambda: len(dispatch.live_workers(catalog)) >= 2, 60, "2 live Celery workers")
        yield found
    finally:
        found.stop()
        redis.kill()
        catalog.close()
        with contextlib.suppress(StopIteration):
            next(schema_urls)


def _datasets(catalog: Catalog) -> dict[str, dict[str, Any]]:
    with catalog.read() as conn:
        rows = conn.execute(select(FOLDERS.c.path, FOLDERS.c.meta)).all()
    return {r.path: dict(r.meta) for r in rows if (r.meta or {}).get("type")}


def _flatten(outputs: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for value in outputs.values():
        found.extend(_flatten(value) if isinstance(value, dict) else [value])
    return found


def test_sample_pipeline_on_celery_workers_and_two_service_processes(pipeline: Pipeline) -> None:
    started = pipeline.api("serve-a", "POST", "/sources/sample/sync")
    assert started["status"] == "started"

    def all_ended() -> list[dict[str, Any]] | None:
        jobs: list[dict[str, Any]] = pipeline.api("serve-b", "GET", "/jobs?limit=500")["jobs"]
        if len(jobs) < 6 or any(j["state"] in ("queued", "running") for j in jobs):
            return None
        return jobs

    try:
        jobs = wait_for(all_ended, 120, "every job of the samples to end")
    except AssertionError:
        logs = {n: pipeline.log(n)[-800:] for n in pipeline.procs}
        raise AssertionError(f"jobs did not end; logs: {logs}") from None

    # Every job succeeded, at its first attempt, on a Celery worker process.
    failed = [(j["processor"], j["state"], j["error"]) for j in jobs if j["state"] != "success"]
    assert not failed, failed
    assert all(j["attempts"] == 1 for j in jobs), [(j["id"], j["attempts"]) for j in jobs]
    groups = {pipeline.procs[n].pid: n for n in ("worker-1", "worker-2")}
    ran_on = set()
    for job in jobs:
        pid = int(job["worker"].split(":")[1])  # the pool process that ran it
        ran_on.add(groups.get(os.getpgid(pid), f"pid {pid} (not a Celery worker)"))
    # Which worker takes which of 6 jobs is the broker's choice (sharing is what the
    # 300-job test checks); here every job must have run in one of them, none in serve.
    assert ran_on and ran_on <= {"worker-1", "worker-2"}, ran_on

    # Every dataset processed as the demo's local run processes it.
    datasets = _datasets(pipeline.catalog)
    types = sorted(meta["type"] for meta in datasets.values())
    assert types == ["image-sequence", "large-image", "video", "video", "video", "video"]
    assert len(jobs) == len(datasets)
    outputs = pipeline.cli.home / "outputs"
    files = {p.relative_to(outputs).as_posix() for p in outputs.rglob("*") if p.is_file()}
    for path, meta in datasets.items():
        assert meta["annotate"] is True, path
        assert meta["MarkForPostProcess"] is False, path
        assert all(p["state"] == "success" for p in meta["processing"].values()), path
        assert meta["fps"] > 0 or meta["type"] == "large-image", (path, meta)
        for rel in _flatten(meta.get("outputs", {})):
            assert rel in files, (path, rel)
    assert "pyramids/sample/large/slide.tif.tif" in files
    assert "sample/videos/Video clip-h264.mp4/poster.jpg" in files
    # Transcoded to web-ready H.264 (the MJPEG one from full-range yuvj420p).
    transcoded = [
        "Video clip-mpeg4.avi/clip-mpeg4.mp4",
        "interview/Video clip-mjpeg.mov/clip-mjpeg.mp4",
    ]
    if has_encoder("libvpx-vp9"):
        transcoded.append("Video clip-vp9.webm/clip-vp9.mp4")
    for rel in (f"sample/videos/{name}" for name in transcoded):
        assert rel in files, (rel, sorted(files))
        assert assert_web_mp4(outputs / rel)["frames"] == 50, rel
    assert not any(f.endswith(".part") for f in files)


def test_sync_process_waits_for_the_celery_workers(pipeline: Pipeline, tmp_path: Path) -> None:
    """The crontab line with the celery executor: the workers run the jobs, `sync
    --process` waits for them and prints their outcome (it runs none itself)."""
    media = tmp_path / "cron-media"
    generate_samples(media, large_image_px=256)
    pipeline.cli.run("source", "add", "cron", f"file://{media}", "--mount", "/cron")
    out = pipeline.cli.run("sync", "cron", "--process", timeout=150).stdout
    datasets = sum(1 for path in _datasets(pipeline.catalog) if path.startswith("/cron/"))
    assert datasets and f"jobs: {datasets} succeeded, 0 failed" in out, out
    with pipeline.catalog.read() as conn:
        workers = [
            r.worker
            for r in conn.execute(
                select(JOBS.c.worker).where(
                    JOBS.c.target_type == "folder",
                    JOBS.c.target_id.in_(
                        select(FOLDERS.c.id).where(FOLDERS.c.path.startswith("/cron/"))
                    ),
                )
            )
        ]
    assert len(workers) == datasets, workers
    groups = {pipeline.procs[n].pid for n in ("worker-1", "worker-2")}
    # Every job ran in a Celery worker's pool process, none in the `sync` command.
    assert all(os.getpgid(int(w.split(":")[1])) in groups for w in workers), workers
