"""The local executor: claims jobs from the catalog and runs them in a bounded pool."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol

from mediamirror.catalog.leases import new_owner
from mediamirror.jobs import queue
from mediamirror.jobs.model import JobStatus
from mediamirror.jobs.runner import clean_workdirs, run_claimed
from mediamirror.services import Services

log = logging.getLogger(__name__)


class StopSignal(Protocol):
    """What ends the loop: a ``threading.Event`` or :data:`mediamirror.interrupt.STOP`."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass
class WorkerStats:
    """What a worker did, by final state."""

    ran: int = 0
    by_state: dict[str, int] = field(default_factory=dict)

    def add(self, state: JobStatus) -> None:
        self.ran += 1
        self.by_state[state.value] = self.by_state.get(state.value, 0) + 1

    def line(self) -> str:
        parts = ", ".join(f"{n} {s}" for s, n in sorted(self.by_state.items()))
        return f"worker ran {self.ran} job(s)" + (f": {parts}" if parts else "")


class LocalExecutor:
    """Runs up to ``concurrency`` jobs at once in threads (ffmpeg, libvips and the
    database release the GIL, so threads keep the cores busy). Holds a lease on each
    running job and renews it; a worker that dies loses its jobs to a retry."""

    name = "local"

    def __init__(
        self,
        services: Services,
        concurrency: int,
        *,
        lease_seconds: float = 30.0,
        poll_interval: float = 0.5,
        reap_interval: float = 5.0,
        cancel_interval: float = 1.0,
        source_ids: list[int] | None = None,
    ) -> None:
        self.services = services
        self.concurrency = max(1, concurrency)
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.reap_interval = reap_interval
        # Cancel requests are polled on their own, often: the lease renewal (every
        # lease/3 s, 10 s by default) would leave a canceled ffmpeg running that long.
        self.cancel_interval = cancel_interval
        self.worker = new_owner()
        # Only these sources' jobs (``sync --process``); None: every job.
        self.source_ids = source_ids
        self.stats = WorkerStats()
        self.finished: list[int] = []  # ids of the jobs this executor ran, in order
        self._cancels: dict[int, threading.Event] = {}

    def submit(self, job_ids: list[int]) -> None:
        """Jobs live in the catalog; a local worker finds them by polling."""

    def run(self, *, burst: bool = False, stop: StopSignal | None = None) -> WorkerStats:
        """Work until ``stop`` is set; with ``burst``, until no job is queued or running."""
        stop = stop or threading.Event()
        running: dict[Future[JobStatus], int] = {}
        queue.reap(self.services.catalog, self.services.retry_policy)
        clean_workdirs(self.services)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="mediamirror-job") as pool:
            try:
                self._loop(pool, burst, stop, running)
            finally:
                # Stopping (or Ctrl-C): running jobs see a cancel without a cancel request
                # and go back to the queue; the pool then waits for them to hand back.
                for event in self._cancels.values():
                    event.set()
        return self.stats

    def _loop(
        self,
        pool: ThreadPoolExecutor,
        burst: bool,
        stop: StopSignal,
        running: dict[Future[JobStatus], int],
    ) -> None:
        catalog = self.services.catalog
        last_beat = last_reap = last_cancel_check = 0.0
        # Claim a little ahead of free threads so short jobs do not wait on a poll.
        in_flight = self.concurrency * 2
        while not stop.is_set():
            now = time.monotonic()
            if now - last_reap >= self.reap_interval:
                queue.reap(catalog, self.services.retry_policy)
                last_reap = now
            if running and now - last_beat >= self.lease_seconds / 3:
                for job_id in queue.heartbeat(
                    catalog, self.worker, list(running.values()), self.lease_seconds
                ):
                    self._cancels[job_id].set()
                last_beat = last_cancel_check = now
            elif running and now - last_cancel_check >= self.cancel_interval:
                for job_id in queue.cancel_requested(catalog, list(running.values())):
                    self._cancels[job_id].set()
                last_cancel_check = now
            claimed = queue.claim(
                catalog,
                self.worker,
                in_flight - len(running),
                self.lease_seconds,
                source_ids=self.source_ids,
            )
            for job in claimed:
                cancel = self._cancels[job.id] = threading.Event()
                future = pool.submit(run_claimed, self.services, job, self.worker, cancel)
                running[future] = job.id
            if running:
                done, _ = wait(
                    list(running), timeout=self.poll_interval, return_when=FIRST_COMPLETED
                )
                for future in done:
                    job_id = running.pop(future)
                    self._cancels.pop(job_id, None)
                    self.stats.add(self._outcome(future, job_id))
                    self.finished.append(job_id)
                continue
            if claimed:
                continue
            queued, due_in = queue.pending(catalog, source_ids=self.source_ids)
            if burst and queued == 0:
                break
            wait_for = self.poll_interval if due_in is None else min(due_in, self.poll_interval)
            stop.wait(max(wait_for, 0.01))

    def _outcome(self, future: Future[JobStatus], job_id: int) -> JobStatus:
        """How a job ended. An error escaping ``run_claimed`` (it could not record the
        outcome: a catalog error, an unprintable exception) ends that one job, never the
        loop: ending the loop would hand every other running job back, hour-long
        transcodes included."""
        try:
            return future.result()
        except Exception as exc:
            log.exception("job %s: its outcome could not be recorded", job_id)
            # The exception's text may be what the catalog refused: record only its type.
            reason = f"internal error: {type(exc).__name__} while recording the outcome"
            try:
                queue.finish(
                    self.services.catalog, job_id, self.worker, JobStatus.ERROR, error=reason
                )
            except Exception:
                # Left running without renewals: the reaper takes it back after its lease.
                log.exception("job %s: could not be marked failed", job_id)
            return JobStatus.ERROR
