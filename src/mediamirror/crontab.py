"""Crontab mode: ``sync --process`` and ``watch``.

One run syncs its sources, queues their post-processing, runs their jobs in this process
(the local executor of ``worker --burst``, limited to the jobs of these sources: the ones
this run queued and any queued before), waits for them, then delivers the notifications
that are due. A crontab line every minute is the expected use, so a run finding another
still busy with a source leaves that source alone and says so in one line.

"Busy" is a catalog lease, ``process:<source id>``, held for the whole run and renewed in
a thread. A killed run's lease is taken over at once on the same machine (its process is
gone: :func:`mediamirror.catalog.leases.owner_is_dead`) and after its expiry elsewhere,
so a crash never blocks the next cron run for long, and no lock file is left behind.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import select

from mediamirror import interrupt
from mediamirror.catalog import leases
from mediamirror.catalog.models import FOLDERS, LEASES, Source, utcnow
from mediamirror.errors import ConflictError, MediamirrorError
from mediamirror.jobs.executors.local import LocalExecutor, StopSignal
from mediamirror.jobs.model import JOBS, JobStatus
from mediamirror.jobs.queue import of_sources
from mediamirror.services import Services

log = logging.getLogger(__name__)

#: How long a run keeps delivering notifications that are not sent yet (a channel that
#: refuses for a moment), beyond ``notify_quiet_seconds``. What still waits then stays in
#: the outbox for the next run, ``serve`` or ``worker``: nothing is lost, and a cron run
#: never hangs on a dead mail server.
NOTIFY_WAIT_SECONDS = 30.0
#: How often `sync --process` looks at the jobs the Celery workers run for it.
WAIT_POLL_SECONDS = 0.5


@dataclass
class SourceOutcome:
    """What happened to one source in a run."""

    name: str
    synced: str | None = None  # the sync summary line
    queued: str | None = None  # the post-processing plan line
    error: str | None = None  # the sync failed
    busy: str | None = None  # another run holds the source: who


@dataclass
class JobOutcome:
    """A job this run ran, in its final state."""

    id: int
    processor: str
    target: str
    state: str
    reason: str | None

    def failure(self) -> str:
        reason = (self.reason or self.state).strip().splitlines() or [self.state]
        return f"job {self.id} {self.state} ({self.processor} on {self.target}): {reason[0]}"


@dataclass
class Delivered:
    """Notifications a run delivered (summed over the sender's passes)."""

    sent: int = 0
    failed: int = 0
    pending: int = 0


@dataclass
class RunReport:
    """Everything a crontab run did; ``failed`` decides the exit code."""

    sources: list[SourceOutcome] = field(default_factory=list)
    jobs: list[JobOutcome] = field(default_factory=list)
    notifications: Delivered | None = None  # None: stopped before delivering
    #: Celery executor: jobs of these sources still queued when no worker was left to run them.
    left_queued: int = 0

    @property
    def failed(self) -> bool:
        return (
            any(s.error for s in self.sources)
            or bool(self._failed_jobs())
            or bool(self.left_queued)
        )

    def _failed_jobs(self) -> list[JobOutcome]:
        return [j for j in self.jobs if j.state == JobStatus.ERROR.value]

    def _job_counts(self) -> str:
        ok = sum(1 for j in self.jobs if j.state == JobStatus.SUCCESS.value)
        counts = f"{ok} succeeded, {len(self._failed_jobs())} failed"
        # Canceled by someone during the run: neither a success nor a failure.
        canceled = len(self.jobs) - ok - len(self._failed_jobs())
        counts += f", {canceled} canceled" if canceled else ""
        if self.left_queued:
            counts += f", {self.left_queued} left queued (no live Celery worker)"
        return counts

    def _delivered(self) -> Delivered | None:
        """What to say about notifications: nothing when no channel is configured."""
        n = self.notifications
        return n if n is not None and n.sent + n.failed + n.pending > 0 else None

    @staticmethod
    def _notify_counts(n: Delivered) -> str:
        return f"{n.sent} sent, {n.failed} failed, {n.pending} waiting"

    def lines(self) -> list[str]:
        """The summary ``sync --process`` prints."""
        out: list[str] = []
        for s in self.sources:
            if s.busy:
                out.append(f"sync of {s.name} already running in {s.busy}; nothing to do")
                continue
            out.append(s.synced or f"{s.name}: sync failed: {s.error}")
            if s.queued:
                out.append(f"{s.name}: {s.queued}")
        if self.jobs or any(not s.busy for s in self.sources):
            out.append(f"jobs: {self._job_counts()}")
        out.extend(f"  {j.failure()}" for j in self._failed_jobs())
        if (delivered := self._delivered()) is not None:
            out.append(f"notifications: {self._notify_counts(delivered)}")
        return out

    def line(self) -> str:
        """One line for a ``watch`` round."""
        parts = []
        for s in self.sources:
            if s.busy:
                parts.append(f"{s.name} busy ({s.busy})")
            elif s.error:
                parts.append(f"{s.name} sync failed")
            else:
                parts.append(f"{s.name} synced")
        parts.append(f"jobs {self._job_counts()}")
        if (delivered := self._delivered()) is not None:
            parts.append(f"notifications {self._notify_counts(delivered)}")
        return "; ".join(parts)

    def failures(self) -> list[str]:
        """One line per failure, with its reason."""
        out = [f"{s.name}: sync failed: {s.error}" for s in self.sources if s.error]
        return out + [j.failure() for j in self._failed_jobs()]


# -- leases ----------------------------------------------------------------------------------


def lease_name(source: Source) -> str:
    return f"process:{source.id}"


def _holder_of(services: Services, lease: str) -> str | None:
    with services.catalog.read() as conn:
        owner = conn.execute(select(LEASES.c.owner).where(LEASES.c.name == lease)).scalar()
    return None if owner is None else str(owner)


def holder(services: Services, lease: str) -> str:
    """Who holds ``lease``, as people see it: ``pid N`` (plus the host when not ours)."""
    owner = _holder_of(services, lease)
    if not owner:
        return "another process"
    host, _, rest = str(owner).partition(":")
    pid = rest.split(":", 1)[0]
    return f"pid {pid}" + ("" if host == socket.gethostname() else f" on {host}")


@contextmanager
def _held(services: Services, sources: Sequence[Source], owner: str) -> Iterator[None]:
    """Renew the run's leases in a thread while the block runs; release them after."""
    ttl = float(services.settings.sync_lease_seconds)
    names = [lease_name(s) for s in sources]
    done = threading.Event()

    def renew() -> None:
        while not done.wait(ttl / 3):
            for name in names:
                try:
                    leases.renew(services.catalog, name, owner, ttl)
                except Exception:  # a busy catalog: the next renewal may succeed
                    log.warning("could not renew the lease %s", name, exc_info=True)

    thread = threading.Thread(target=renew, name="mediamirror-crontab-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        for name in names:
            leases.release(services.catalog, name, owner)


def _acquire(
    services: Services, names: Sequence[str], owner: str, report: RunReport
) -> list[Source]:
    """The sources this run holds; the others go into the report as busy."""
    from mediamirror.sources import get_source

    ttl = float(services.settings.sync_lease_seconds)
    held: list[Source] = []
    # Every name is checked before any lease is taken: an unknown one fails the run alone.
    sources = [get_source(services.catalog, name) for name in names]
    try:
        for source in sources:
            try:
                leases.acquire(services.catalog, lease_name(source), owner, ttl)
            except ConflictError:
                busy = holder(services, lease_name(source))
                report.sources.append(SourceOutcome(source.name, busy=busy))
                continue
            held.append(source)
    except BaseException:  # e.g. Ctrl-C between two sources: hold nothing
        for source in held:
            leases.release(services.catalog, lease_name(source), owner)
        raise
    return held


# -- the run ---------------------------------------------------------------------------------


def _sync(services: Services, source: Source) -> SourceOutcome:
    """Sync one source and queue its post-processing; a failure is reported, not raised."""
    from mediamirror.postprocess import postprocess
    from mediamirror.sources import sync_source

    outcome = SourceOutcome(source.name)
    interrupt.check()
    try:
        summary = sync_source(services.catalog, services.settings, source.name, services.env)
    except ConflictError:
        # A plain `sync` or the scheduler of `serve` is syncing it right now.
        outcome.busy = holder(services, f"sync:{source.id}")
        return outcome
    except MediamirrorError as exc:
        outcome.error = str(exc)
        return outcome
    outcome.synced = summary.line()
    interrupt.check()
    plan = postprocess(services, source.mount)
    if plan.specs or plan.deferred:
        outcome.queued = plan.line()
    return outcome


def _run_jobs(
    services: Services, source_ids: list[int], stop: StopSignal, report: RunReport
) -> list[JobOutcome]:
    """Run the queued jobs of these sources until none is left; their final states. With
    the celery executor the workers run them and this waits for them."""
    settings = services.settings
    if settings.executor == "celery":
        return _await_workers(services, source_ids, stop, report)
    executor = LocalExecutor(
        services,
        settings.worker_count,
        lease_seconds=settings.job_lease_seconds,
        source_ids=source_ids,
    )
    executor.run(burst=True, stop=stop)
    return _outcomes(services, list(dict.fromkeys(executor.finished)))


def _active_jobs(services: Services, source_ids: list[int]) -> list[int]:
    active = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
    query = select(JOBS.c.id).where(JOBS.c.state.in_(active), of_sources(source_ids))
    with services.catalog.read() as conn:
        return [r.id for r in conn.execute(query)]


def _await_workers(
    services: Services, source_ids: list[int], stop: StopSignal, report: RunReport
) -> list[JobOutcome]:
    """Celery executor: the workers (their dispatchers send the queued jobs) run the jobs
    of these sources; wait until none is queued or running. With no live worker for a
    lease time the rest stays queued for the workers to come, and the run says so."""
    from mediamirror.jobs import dispatch

    since = utcnow()
    seen: set[int] = set()
    alone_since: float | None = None
    grace = max(services.settings.job_lease_seconds, 5.0)
    while (active := _active_jobs(services, source_ids)) and not stop.is_set():
        seen.update(active)
        if dispatch.live_workers(services.catalog):
            alone_since = None
        elif alone_since is None:
            alone_since = time.monotonic()
        elif time.monotonic() - alone_since > grace:
            report.left_queued = len(active)
            break
        stop.wait(WAIT_POLL_SECONDS)
    # Jobs seen waiting, and jobs queued and finished between two looks.
    query = select(JOBS.c.id).where(JOBS.c.finished_at >= since, of_sources(source_ids))
    with services.catalog.read() as conn:
        seen.update(r.id for r in conn.execute(query))
    return _outcomes(services, sorted(seen))


def _outcomes(services: Services, job_ids: list[int]) -> list[JobOutcome]:
    if not job_ids:
        return []
    query = (
        select(JOBS.c.id, JOBS.c.processor, JOBS.c.target_type, JOBS.c.target_id)
        .add_columns(JOBS.c.state, JOBS.c.error, FOLDERS.c.path)
        .outerjoin(FOLDERS, (JOBS.c.target_type == "folder") & (FOLDERS.c.id == JOBS.c.target_id))
        .where(JOBS.c.id.in_(job_ids))
        .order_by(JOBS.c.id)
    )
    with services.catalog.read() as conn:
        rows = conn.execute(query).all()
    return [
        JobOutcome(
            r.id,
            r.processor,
            r.path or f"{r.target_type} {r.target_id}",
            r.state,
            r.error,
        )
        for r in rows
        # A job handed back on Ctrl-C is queued again: not an outcome of this run.
        if r.state != JobStatus.QUEUED.value
    ]


def deliver(services: Services, stop: StopSignal) -> Delivered:
    """Send the notifications that are due, passing again every few seconds while some
    still wait (a burst settling, a channel that refused once), for a bounded time."""
    from mediamirror.notify.sender import LEASE, Sender

    # Long enough for the notifications of this run to settle (notify_quiet_seconds, at
    # most a minute in the sender) and for a first retry of a refused delivery.
    quiet = min(max(services.settings.notify_quiet_seconds, 0), 60)
    deadline = time.monotonic() + quiet + NOTIFY_WAIT_SECONDS
    sender = Sender(services)
    done = Delivered()
    try:
        while True:
            step = sender.run_once()
            done.sent += step.sent
            done.failed += step.failed
            done.pending = step.pending
            if not step.pending or time.monotonic() >= deadline or stop.wait(2.0):
                return done
            if _holder_of(services, LEASE) not in (None, sender.owner):
                return done  # `serve` or a worker sends: they deliver the rest
    except Exception:  # the outbox keeps them: serve, worker or the next run delivers
        log.exception("notifications could not be delivered now")
        return done
    finally:
        sender.release()  # the next process sends at once, not after the lease expires


def run(services: Services, names: Sequence[str], stop: StopSignal = interrupt.STOP) -> RunReport:
    """One crontab run over ``names``. Raises :class:`~mediamirror.interrupt.Interrupted`
    when stopped (running jobs are handed back to the queue first)."""
    report = RunReport()
    owner = leases.new_owner()
    held = _acquire(services, names, owner, report)
    if held:
        with _held(services, held, owner):
            ids = []
            for source in held:
                outcome = _sync(services, source)
                report.sources.append(outcome)
                if not outcome.busy:
                    ids.append(source.id)
            if ids:
                report.jobs = _run_jobs(services, ids, stop, report)
    if stop.is_set():
        raise interrupt.Interrupted(interrupt.STOP.signum or signal.SIGINT)
    report.notifications = deliver(services, stop)
    return report


def all_names(services: Services) -> list[str]:
    from mediamirror.sources import list_sources

    return [s.name for s in list_sources(services.catalog)]
