"""Running one claimed job: the same code under every executor."""

from __future__ import annotations

import itertools
import logging
import shutil
import threading
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update

from mediamirror.catalog.meta import update_meta, update_meta_in
from mediamirror.catalog.models import ITEMS, utcnow
from mediamirror.errors import (
    ConfigError,
    MediamirrorError,
    ProcessingError,
    TransientProcessingError,
)
from mediamirror.jobs import queue
from mediamirror.jobs.completions import Success
from mediamirror.jobs.context import JobContext
from mediamirror.jobs.model import JOBS, JobStatus
from mediamirror.logs import context as job_scope
from mediamirror.logs import job_context
from mediamirror.notify import outbox
from mediamirror.processing.failures import scratch_failure
from mediamirror.processing.processors import registry
from mediamirror.processing.processors.base import (
    Dataset,
    Processor,
    load_dataset,
    load_dataset_in,
)
from mediamirror.redact import redact
from mediamirror.services import Services

log = logging.getLogger(__name__)


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # Also recorded in the dataset's metadata, which every viewer reads.
    return redact(lines[0]) if lines else type(exc).__name__


def _change(
    job: Any, status: dict[str, Any], updates: dict[str, Any], merge: frozenset[str]
) -> Any:
    def change(meta: dict[str, Any]) -> None:
        for key, value in updates.items():
            # Merged inside the locked read-modify-write, so concurrent jobs of two
            # processors on one dataset keep each other's entries.
            if key in merge and isinstance(value, dict) and isinstance(meta.get(key), dict):
                meta[key] = {**meta[key], **value}
            else:
                meta[key] = value
        processing = dict(meta.get("processing") or {})
        processing[job.processor] = status
        meta["processing"] = processing

    return change


def _record(
    services: Services,
    job: Any,
    status: dict[str, Any],
    updates: dict[str, Any],
    merge: frozenset[str] = frozenset(),
) -> None:
    if job.target_type == "folder":
        update_meta(services.catalog, job.target_id, _change(job, status, updates, merge))


def _succeed(
    services: Services,
    proc: Processor,
    job: Any,
    worker: str,
    updates: dict[str, Any],
    log_tail: str,
) -> None:
    """The dataset's new metadata, its items' flags and the job's end: one transaction."""
    with services.catalog.write() as conn:
        current = load_dataset_in(conn, job.target_id)
        if proc.input_version(current) != job.input_version:
            # The media changed while the job ran: keep the mark so it is processed again.
            updates = {k: v for k, v in updates.items() if k != "MarkForPostProcess"}
        now = datetime.now(UTC).isoformat(timespec="seconds")
        status = {"state": "success", "job": job.id, "version": job.input_version, "at": now}
        meta = None
        if job.target_type == "folder":
            change = _change(job, status, updates, proc.merge_keys)
            meta = update_meta_in(conn, job.target_id, change)
        inputs = proc.inputs(current)
        if inputs:
            conn.execute(
                update(ITEMS)
                .where(or_(*(and_(ITEMS.c.id == i.id, ITEMS.c.etag == i.etag) for i in inputs)))
                .values(needs_processing=False)
            )
        ended = queue.finish(
            services.catalog,
            job.id,
            worker,
            JobStatus.SUCCESS,
            message="done",
            log_tail=log_tail,
            conn=conn,
        )
        if ended and meta is not None and _completes(conn, job, meta):
            seconds = (utcnow() - job.started_at).total_seconds() if job.started_at else None
            outbox.dataset_ready(conn, job.target_id, meta, job, seconds)


def _completes(conn: Connection, job: Any, meta: dict[str, Any]) -> bool:
    """Whether this job's result makes its dataset ready: every processor that ran on it
    succeeded, no mark asks for more, and no other job of the dataset is queued or running.

    Read after the dataset's row was locked and rewritten (update_meta_in), so of two jobs
    of one dataset ending at once the second sees the first's result: exactly one of them
    decides "ready". Unlike ``dataset_status`` this does not ask for ``annotate``: a
    dataset only a command processor handles is ready when that processor succeeded."""
    if not meta.get("type") or meta.get("MarkForPostProcess") is True:
        return False
    states = [p.get("state") for p in (meta.get("processing") or {}).values()]
    if not states or any(state != "success" for state in states):
        return False
    others = conn.execute(
        select(func.count()).where(
            JOBS.c.target_type == "folder",
            JOBS.c.target_id == job.target_id,
            JOBS.c.id != job.id,
            JOBS.c.state.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
        )
    ).scalar_one()
    return int(others) == 0


#: Scratch folder names: ``job-<id>-<process tag>_<n>`` (unique without a random draw per
#: job; ``clean_workdirs`` only reads the job id).
_PROCESS_TAG = uuid.uuid4().hex[:6]
_SEQUENCE = itertools.count(1)

#: Where a successful job goes when its executor records successes in batches.
Completions = Callable[[Success], None]


@job_context  # its lines carry the job id; its start and end are logged
def run_claimed(
    services: Services,
    job: Any,
    worker: str,
    cancel: threading.Event | None = None,
    *,
    dataset: Dataset | None = None,
    completions: Completions | None = None,
) -> JobStatus:
    """Run a job this worker has claimed and record how it ended.

    ``dataset``: the job's dataset as read when it was claimed (read here otherwise).
    ``completions``: on success, hand the job there instead of recording it (the local
    executor records successes in batches, :mod:`mediamirror.jobs.completions`); the
    SUCCESS returned then means "handed over"."""
    catalog = services.catalog
    proc = registry(services.settings).get(job.processor)
    # Made on first use by the context (see JobContext.workdir).
    name = f"job-{job.id}-{_PROCESS_TAG}_{next(_SEQUENCE)}"
    workdir = services.settings.home_path / "tmp" / name

    def report(percent: float, message: str | None, tail: str) -> None:
        queue.report(catalog, job.id, percent, message, tail)

    ctx = JobContext(
        job.id,
        dict(job.args or {}),
        workdir,
        report,
        cancel=cancel,
        timeout=job.timeout or getattr(proc, "timeout", None) or services.settings.job_timeout,
    )

    def body() -> JobStatus:
        if proc is None:
            raise ProcessingError(f"unknown processor {job.processor!r}")
        current = dataset if dataset is not None else load_dataset(catalog, job.target_id)
        ctx.check()
        updates = _run(proc, ctx, services, current, workdir)
        if completions is not None and job.target_type == "folder":
            completions(Success(proc, job, updates, ctx.log_tail))
        else:
            _succeed(services, proc, job, worker, updates, ctx.log_tail)
        return JobStatus.SUCCESS

    try:
        return _guarded(services, job, worker, ctx, body)
    finally:
        if ctx.workdir_made:
            shutil.rmtree(workdir, ignore_errors=True)


def record_alone(services: Services, success: Success, worker: str) -> JobStatus:
    """Record one success handed to a completion buffer on its own, with the outcomes
    :func:`run_claimed` gives a failure to record it (its folder gone: retried, then
    failed; an unexpected error: failed)."""
    job = success.job
    ctx = JobContext(job.id, {}, Path(), lambda *_: None)
    if success.log_tail:
        ctx.log(success.log_tail)

    def body() -> JobStatus:
        _succeed(services, success.proc, job, worker, success.updates, success.log_tail)
        return JobStatus.SUCCESS

    with job_scope(job_id=job.id):
        return _guarded(services, job, worker, ctx, body)


def record_all(services: Services, worker: str, batch: list[Success]) -> dict[int, JobStatus]:
    """Record handed-over successes: jobs on folders in one transaction, the rest (and
    all of them if that transaction fails, so one job's bad result cannot fail the
    others) one by one. Returns each job's outcome."""
    from mediamirror.jobs.completions import batchable, record_successes

    together = [s for s in batch if batchable(s)]
    alone = [s for s in batch if not batchable(s)]
    outcomes: dict[int, JobStatus] = {}
    if together:
        try:
            _, left = record_successes(services.catalog, worker, together)
            outcomes.update((s.job.id, JobStatus.SUCCESS) for s in together)
            alone += left
        except Exception:
            log.exception("recording %d job(s) together failed; recording each", len(together))
            alone += together
    for success in alone:
        try:
            outcomes[success.job.id] = record_alone(services, success, worker)
        except Exception as exc:
            outcomes[success.job.id] = fail_unrecorded(services, success.job.id, worker, exc)
    return outcomes


def fail_unrecorded(services: Services, job_id: int, worker: str, exc: Exception) -> JobStatus:
    """A job whose outcome could not be recorded (a catalog error, an unprintable
    exception) ends in error; if even that fails, the reaper takes it back after its
    lease. Every executor's last resort: one job ends, never the worker."""
    log.error("job %s: its outcome could not be recorded", job_id, exc_info=exc)
    # The exception's text may be what the catalog refused: record only its type.
    reason = f"internal error: {type(exc).__name__} while recording the outcome"
    try:
        queue.finish(services.catalog, job_id, worker, JobStatus.ERROR, error=reason)
    except Exception:
        log.exception("job %s: could not be marked failed", job_id)
    return JobStatus.ERROR


def _guarded(
    services: Services, job: Any, worker: str, ctx: JobContext, body: Callable[[], JobStatus]
) -> JobStatus:
    """Run ``body`` (a job's work and the record of its success); an exception out of it
    ends the job as its kind says: retried, released, canceled or failed."""
    catalog = services.catalog
    try:
        return body()
    except TransientProcessingError as exc:
        reason = _one_line(exc)
        if queue.retry_later(catalog, job, worker, reason, services.retry_policy, ctx.log_tail):
            return JobStatus.QUEUED
        _flag(services, job, reason)
        return JobStatus.ERROR
    except ProcessingError as exc:
        if ctx.cancel.is_set() and not queue.get(catalog, job.id).cancel_requested:
            # Nobody asked to cancel this job: its worker is stopping. Give it back.
            queue.release(catalog, job.id, worker)
            return JobStatus.QUEUED
        if ctx.cancel.is_set():
            queue.finish(
                catalog, job.id, worker, JobStatus.CANCELED, error="canceled", log_tail=ctx.log_tail
            )
            return JobStatus.CANCELED
        reason = _one_line(exc)
        queue.finish(catalog, job.id, worker, JobStatus.ERROR, error=reason, log_tail=ctx.log_tail)
        _flag(services, job, reason)
        return JobStatus.ERROR
    except ConfigError as exc:
        # A wrong setting (e.g. an output store overlapping a source) stays wrong for as
        # long as this worker runs: fail at once instead of retrying with backoff.
        reason = _one_line(exc)
        queue.finish(catalog, job.id, worker, JobStatus.ERROR, error=reason, log_tail=ctx.log_tail)
        _flag(services, job, reason)
        return JobStatus.ERROR
    except MediamirrorError as exc:
        reason = _one_line(exc)
        if queue.retry_later(catalog, job, worker, reason, services.retry_policy, ctx.log_tail):
            return JobStatus.QUEUED
        _flag(services, job, reason)
        return JobStatus.ERROR
    except Exception as exc:  # a bug or an unexpected library failure: keep the worker alive
        log.exception("job %s failed unexpectedly", job.id)
        ctx.log(traceback.format_exc())
        reason = f"internal error: {_one_line(exc)}"
        queue.finish(catalog, job.id, worker, JobStatus.ERROR, error=reason, log_tail=ctx.log_tail)
        _flag(services, job, reason)
        return JobStatus.ERROR


def _run(
    proc: Processor, ctx: JobContext, services: Services, dataset: Dataset, workdir: Path
) -> dict[str, Any]:
    """``proc.run``, with a full disk or a removed scratch folder told in one line.

    A Python-level write (a download, a copy, libvips) meets these as an ``OSError`` (or
    a tool's message) that would otherwise end the job as an "internal error" with a
    traceback. Which of them is retried is decided in ``failures.scratch_failure``: a
    full disk ends the job, a removed folder is tried again in a new one."""
    try:
        return proc.run(ctx, services, dataset)
    except (OSError, ProcessingError) as exc:
        mapped = None if ctx.cancel.is_set() else scratch_failure(exc, workdir)
        if mapped is None:
            raise
        raise mapped from exc


def _flag(services: Services, job: Any, reason: str) -> None:
    """Mark the dataset so people (and ``postprocess --only-pending``) see it failed."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    status = {"state": "error", "job": job.id, "error": reason, "at": now}
    try:
        _record(services, job, status, {})
    except Exception:  # flagging must never hide the job's own outcome
        log.exception("could not flag dataset of job %s", job.id)


def clean_workdirs(services: Services) -> int:
    """Remove scratch folders left by jobs that are no longer running (a worker killed
    mid-job cannot clean up after itself). Returns how many were removed."""
    import re

    from sqlalchemy import select

    from mediamirror.jobs.model import JOBS

    root = services.settings.home_path / "tmp"
    if not root.is_dir():
        return 0
    with services.catalog.read() as conn:
        running = {r[0] for r in conn.execute(select(JOBS.c.id).where(JOBS.c.state == "running"))}
    removed = 0
    for path in root.iterdir():
        match = re.fullmatch(r"job-(\d+)-.*", path.name)
        if match and path.is_dir() and int(match.group(1)) not in running:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
