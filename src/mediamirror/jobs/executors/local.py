"""The local executor: claims jobs from the catalog and runs them in a bounded set of threads."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mediamirror.catalog.leases import new_owner
from mediamirror.jobs import queue
from mediamirror.jobs.completions import Success, load_datasets
from mediamirror.jobs.model import JobStatus
from mediamirror.jobs.runner import clean_workdirs, fail_unrecorded, record_all, run_claimed
from mediamirror.processing.processors.base import Dataset
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


@dataclass
class _Claimed:
    """A job this executor holds: claimed, then started by one of its threads."""

    job: Any
    dataset: Dataset | None
    cancel: threading.Event
    claimed_at: float


class LocalExecutor:
    """Runs up to ``concurrency`` jobs at once in threads (ffmpeg, libvips and the
    database release the GIL, so threads keep the cores busy). Holds a lease on each
    running job and renews it; a worker that dies loses its jobs to a retry.

    Short jobs are cheap because the catalog is written in batches, not per job:

    - **claims** take one free thread's worth of jobs, plus a look-ahead while the queue
      is deep (the last claim came back full) and jobs are short: as many as the threads
      get through in about ``hold_seconds / 2`` at the measured mean job time, at most
      ``batch_size``. A claimed job that no thread started within ``hold_seconds`` is
      given back to the queue (another worker takes it), so a long job never keeps
      claimed work waiting, and a second worker is never starved;
    - **successes** go to a completion buffer that the loop records in one transaction
      (:func:`mediamirror.jobs.completions.record_successes`) when ``batch_size`` wait
      or the oldest waited ``flush_interval``. Until then the job is still ``running``
      under this worker's lease: after a crash it is run again once its lease lapses;
    - the datasets of a claim are read in one transaction beside it.
    """

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
        batch_size: int = 64,
        flush_interval: float = 0.01,
        hold_seconds: float = 0.25,
    ) -> None:
        self.services = services
        self.concurrency = max(1, concurrency)
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.reap_interval = reap_interval
        # Cancel requests are polled on their own, often: the lease renewal (every
        # lease/3 s, 10 s by default) would leave a canceled ffmpeg running that long.
        self.cancel_interval = cancel_interval
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self.hold_seconds = hold_seconds
        self.worker = new_owner()
        # Only these sources' jobs (``sync --process``); None: every job.
        self.source_ids = source_ids
        self.stats = WorkerStats()
        self.finished: list[int] = []  # ids of the jobs this executor ran, in order
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # threads wait here for jobs
        self._wake = threading.Condition(self._lock)  # the loop waits here
        self._waiting: deque[_Claimed] = deque()
        self._running: dict[int, _Claimed] = {}
        self._buffer: list[Success] = []
        self._buffered_at = 0.0
        self._outcomes: list[tuple[int, JobStatus]] = []
        self._closing = False
        self._mean_seconds: float | None = None
        self._deep = False

    def submit(self, job_ids: list[int]) -> None:
        """Jobs live in the catalog; a local worker finds them by polling."""

    # -- the loop --------------------------------------------------------------------------

    def run(self, *, burst: bool = False, stop: StopSignal | None = None) -> WorkerStats:
        """Work until ``stop`` is set; with ``burst``, until no job is queued or running."""
        stop = stop or threading.Event()
        queue.reap(self.services.catalog, self.services.retry_policy)
        clean_workdirs(self.services)
        self._closing = False
        threads = [
            threading.Thread(target=self._thread, name=f"mediamirror-job_{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        try:
            self._loop(burst, stop)
        finally:
            # Stopping (or Ctrl-C): jobs not started go back to the queue; running jobs
            # see a cancel without a cancel request and go back too; the threads then
            # end, and what succeeded meanwhile is recorded.
            with self._lock:
                unstarted = [c.job.id for c in self._waiting]
                self._waiting.clear()
                for claimed in self._running.values():
                    claimed.cancel.set()
                self._closing = True
                self._work.notify_all()
            self._give_back(unstarted)
            for thread in threads:
                thread.join()
            self._flush()
            self._collect()
        return self.stats

    def _loop(self, burst: bool, stop: StopSignal) -> None:
        catalog = self.services.catalog
        last_beat = last_reap = last_cancel_check = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if now - last_reap >= self.reap_interval:
                queue.reap(catalog, self.services.retry_policy)
                last_reap = now
            held = self._held()
            if held and now - last_beat >= self.lease_seconds / 3:
                to_cancel = queue.heartbeat(catalog, self.worker, list(held), self.lease_seconds)
                self._cancel(held, to_cancel)
                last_beat = last_cancel_check = now
            elif held and now - last_cancel_check >= self.cancel_interval:
                self._cancel(held, queue.cancel_requested(catalog, list(held)))
                last_cancel_check = now
            self._give_back(self._overdue(now))
            if self._flush_due(now):
                self._flush()
            self._collect()
            claimed, asked = self._claim()
            with self._lock:
                busy = bool(self._waiting or self._running)
                if busy or self._buffer or claimed:
                    # Nothing claimed: the queue had nothing due (wait for a thread or the
                    # next poll), or there was no room then (unless a thread freed since).
                    if not claimed and (asked or not self._refill_due()):
                        self._wake.wait(self._timeout())
                    continue
            if self._buffer:
                continue
            queued, due_in = queue.pending(catalog, source_ids=self.source_ids)
            if burst and queued == 0:
                break
            wait_for = self.poll_interval if due_in is None else min(due_in, self.poll_interval)
            stop.wait(max(wait_for, 0.01))

    def _held(self) -> dict[int, threading.Event]:
        with self._lock:
            held = {c.job.id: c.cancel for c in self._waiting}
            held.update((i, c.cancel) for i, c in self._running.items())
        return held

    @staticmethod
    def _cancel(held: dict[int, threading.Event], asked: set[int]) -> None:
        for job_id in asked:
            if job_id in held:
                held[job_id].set()

    def _lookahead(self) -> int:
        """Jobs to claim beyond the free threads: none unless the queue is deep and jobs
        are short enough that the threads start them within about ``hold_seconds / 2``."""
        if not self._deep or self._mean_seconds is None:
            return 0
        fits = self.concurrency * (self.hold_seconds / 2) / max(self._mean_seconds, 1e-5)
        return max(0, min(self.batch_size, int(fits)))

    def _refill_due(self) -> bool:
        """(Lock held.) Whether the loop should claim now rather than wait."""
        return len(self._waiting) + len(self._running) < self.concurrency or (
            self._deep and len(self._waiting) <= self._lookahead() // 2 and self._lookahead() > 0
        )

    def _claim(self) -> tuple[list[_Claimed], bool]:
        """Claim what there is room for; returns the jobs and whether the queue was asked."""
        with self._lock:
            if not self._refill_due():
                return [], False
            lookahead = self._lookahead()
            free = self.concurrency - len(self._running)
            limit = max(0, free + lookahead - len(self._waiting))
        if limit <= 0:
            return [], False
        jobs = queue.claim(
            self.services.catalog,
            self.worker,
            limit,
            self.lease_seconds,
            source_ids=self.source_ids,
        )
        self._deep = len(jobs) == limit
        if not jobs:
            return [], True
        folders = [j.target_id for j in jobs if j.target_type == "folder"]
        try:
            datasets = load_datasets(self.services.catalog, folders)
        except Exception:  # each job reads its own then
            log.exception("could not read the datasets of %d claimed job(s)", len(jobs))
            datasets = {}
        now = time.monotonic()
        claimed = [
            _Claimed(
                job,
                datasets.get(job.target_id) if job.target_type == "folder" else None,
                threading.Event(),
                now,
            )
            for job in jobs
        ]
        with self._lock:
            self._waiting.extend(claimed)
            self._work.notify(len(claimed))
        return claimed, True

    def _overdue(self, now: float) -> list[int]:
        """Claimed jobs no thread started within ``hold_seconds``: taken off the list."""
        late: list[int] = []
        with self._lock:
            while self._waiting and now - self._waiting[0].claimed_at >= self.hold_seconds:
                late.append(self._waiting.popleft().job.id)
        return late

    def _give_back(self, job_ids: list[int]) -> None:
        if not job_ids:
            return
        try:
            queue.release_unstarted(self.services.catalog, job_ids, self.worker)
        except Exception:  # the reaper takes them back after their lease
            log.exception("could not give back %d unstarted job(s)", len(job_ids))
        self._deep = False

    def _timeout(self) -> float:
        """(Lock held.) How long the loop may sleep: until the buffer is due, the oldest
        claimed job is overdue, or the next poll."""
        timeout = self.poll_interval
        if self._buffer:
            timeout = min(timeout, self._buffered_at + self.flush_interval - time.monotonic())
        if self._waiting:
            due = self._waiting[0].claimed_at + self.hold_seconds - time.monotonic()
            timeout = min(timeout, due)
        return max(timeout, 0.0005)

    # -- the threads -----------------------------------------------------------------------

    def _thread(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closing:
                    self._work.wait()
                if not self._waiting:
                    return
                claimed = self._waiting.popleft()
                self._running[claimed.job.id] = claimed
                if len(self._waiting) <= self._lookahead() // 2:
                    self._wake.notify()
            started = time.monotonic()
            handed: list[Success] = []
            status = self._run_one(claimed, handed.append)
            took = time.monotonic() - started
            with self._lock:
                del self._running[claimed.job.id]
                mean = self._mean_seconds
                self._mean_seconds = took if mean is None else mean * 0.8 + took * 0.2
                if handed:
                    if not self._buffer:
                        self._buffered_at = time.monotonic()
                    self._buffer.extend(handed)
                else:
                    self._outcomes.append((claimed.job.id, status))
                if (
                    not self._waiting
                    or len(self._buffer) >= self.batch_size
                    or len(self._outcomes) == 1
                ):
                    self._wake.notify()

    def _run_one(self, claimed: _Claimed, completions: Callable[[Success], None]) -> JobStatus:
        """``run_claimed``, and an error escaping it (it could not record the outcome: a
        catalog error, an unprintable exception) ends that one job, never the loop:
        ending the loop would hand every other running job back, hour-long transcodes
        included."""
        job = claimed.job
        try:
            return run_claimed(
                self.services,
                job,
                self.worker,
                claimed.cancel,
                dataset=claimed.dataset,
                completions=completions,
            )
        except Exception as exc:
            return self._failed_to_record(job.id, exc)

    def _failed_to_record(self, job_id: int, exc: Exception) -> JobStatus:
        return fail_unrecorded(self.services, job_id, self.worker, exc)

    # -- recording -------------------------------------------------------------------------

    def _flush_due(self, now: float) -> bool:
        with self._lock:
            if not self._buffer:
                return False
            idle = not self._running and not self._waiting
            return (
                idle
                or len(self._buffer) >= self.batch_size
                or now - self._buffered_at >= self.flush_interval
            )

    def _flush(self) -> None:
        """Record the buffered successes: in one transaction, or one by one if that
        fails (so one job's bad result cannot fail the others)."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        if not batch:
            return
        outcomes = record_all(self.services, self.worker, batch)
        with self._lock:
            self._outcomes.extend((s.job.id, outcomes[s.job.id]) for s in batch)

    def _collect(self) -> None:
        with self._lock:
            done, self._outcomes = self._outcomes, []
        for job_id, status in done:
            self.stats.add(status)
            self.finished.append(job_id)
