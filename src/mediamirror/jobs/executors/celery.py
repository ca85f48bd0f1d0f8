"""The Celery executor: a plain Celery app whose one task runs a job by id.

Messages carry job ids only (see :mod:`mediamirror.jobs.dispatch`). The task claims the
row, then runs it through :func:`mediamirror.jobs.runner.run_claimed`, the code the local
executor runs: cancel, retry, timeout, progress and logs behave the same, and processors
do not know which executor runs them. A heartbeat thread in each worker process renews
the leases of its running jobs and passes cancel requests on, as the local executor's loop
does.

``celery -A mediamirror.jobs.executors.celery inspect active`` (or ``worker``, Flower...)
finds the app as ``app`` here, built from the settings of the environment and config.yaml.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any

from celery import Celery, signals

from mediamirror.catalog.db import Catalog
from mediamirror.catalog.leases import new_owner
from mediamirror.config import Settings
from mediamirror.errors import ConfigError
from mediamirror.jobs import dispatch, queue
from mediamirror.jobs.model import JobStatus
from mediamirror.jobs.routing import DEFAULT_QUEUE
from mediamirror.redact import redact_url

log = logging.getLogger(__name__)

TASK = "mediamirror.run_job"


def visibility_timeout(settings: Settings) -> int:
    """Seconds before Redis hands an unacknowledged message to another worker: longer
    than any job may run (a redelivered message of a running job is dropped anyway, but
    each one costs a claim)."""
    from mediamirror.processing.processors import registry

    longest = max(
        [float(settings.job_timeout)]
        + [float(t) for p in registry(settings).values() if (t := getattr(p, "timeout", None))]
    )
    return int(longest * 2 + 600)


def make_app(settings: Settings, env: Mapping[str, str] | None = None) -> Celery:
    """The Celery app for these settings (late acks, prefetch 1, ids only, no rate
    limits: a message's cost is its catalog work, which the dispatcher's windows bound)."""
    if not settings.broker_url:
        raise ConfigError(
            "the celery executor needs broker_url (MEDIAMIRROR_BROKER_URL), "
            "e.g. redis://127.0.0.1:6379/0 or amqp://guest:guest@127.0.0.1:5672//"
        )
    app = Celery("mediamirror", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_disable_rate_limits=True,
        task_default_queue=DEFAULT_QUEUE,
        task_create_missing_queues=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": visibility_timeout(settings)},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    _STATE.settings = settings
    _STATE.env = dict(os.environ if env is None else env)
    _STATE.app = app
    app.task(name=TASK, bind=True, ignore_result=True)(_run_job)
    return app


def send(app: Celery, queue_name: str, job_ids: Sequence[int], each: int = 1) -> None:
    """Publish ``job_ids`` to ``queue_name`` over one connection, ``each`` ids per
    message (one id: the message's argument is the id itself)."""
    ids = list(job_ids)
    each = max(1, each)
    with app.producer_or_acquire() as producer:
        for i in range(0, len(ids), each):
            chunk = ids[i : i + each]
            arg: int | list[int] = chunk[0] if len(chunk) == 1 else chunk
            app.send_task(TASK, args=[arg], queue=queue_name, producer=producer)


def sender(app: Celery) -> dispatch.Send:
    return lambda name, ids, each: send(app, name, ids, each)


# -- inside a worker process ----------------------------------------------------------------


@dataclass
class _State:
    """What a worker process holds: its settings, and per process (a prefork child gets
    its own after the fork) a catalog, an owner name and the heartbeat."""

    settings: Settings | None = None
    env: dict[str, str] = field(default_factory=dict)
    app: Celery | None = None
    pid: int = 0
    services: Any = None
    owner: str = ""
    running: dict[int, threading.Event] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    outbox: SimpleQueue[tuple[str, list[int]]] = field(default_factory=SimpleQueue)
    dispatcher: Any = None


_STATE = _State()


def _process() -> _State:
    """This process's catalog, owner and heartbeat, made on its first job."""
    state = _STATE
    if state.pid == os.getpid():
        return state
    with _INIT:  # the threads pool: the first jobs of a process arrive together
        if state.pid != os.getpid():
            from mediamirror.services import Services

            assert state.settings is not None, "make_app was not called"
            settings = state.settings
            state.services = Services(Catalog(settings.catalog_url), settings, state.env)
            state.owner = new_owner()
            state.running = {}
            state.lock = threading.Lock()
            state.outbox = SimpleQueue()
            for target in (_heartbeat, _sender):
                name = f"mediamirror{target.__name__}"
                threading.Thread(target=target, name=name, daemon=True).start()
            state.pid = os.getpid()  # last: other threads wait above until all is set
    return state


# The parent of a prefork pool never runs jobs, so it never holds this at a fork.
_INIT = threading.Lock()


def _heartbeat(cancel_interval: float = 1.0) -> None:
    """Renew this process's job leases every lease/3 s; poll cancel requests every second."""
    import time

    state = _STATE
    lease = float(state.services.settings.job_lease_seconds)
    last_beat = time.monotonic()
    while True:
        time.sleep(cancel_interval)
        with state.lock:
            running = dict(state.running)
        if not running:
            continue
        try:
            if time.monotonic() - last_beat >= lease / 3:
                asked = queue.heartbeat(state.services.catalog, state.owner, list(running), lease)
                last_beat = time.monotonic()
            else:
                asked = queue.cancel_requested(state.services.catalog, list(running))
        except Exception:  # the lease is renewed at the next round, or lost to a retry
            log.exception("job heartbeat failed")
            continue
        for job_id in asked:
            if job_id in running:
                running[job_id].set()


#: The jobs of one message run one after the other; those not started this many seconds
#: after the message's claim go back to the queue (the dispatcher sends them again), so a
#: long job never keeps the message's other jobs waiting.
HOLD_SECONDS = 0.5


def _run_job(task: Any, job_id: int | list[int]) -> str:
    """The task: claim job ``job_id`` (or the jobs of a list of ids), send the next
    one(s) of this queue, run it (them)."""
    from mediamirror.jobs.routing import queues_of
    from mediamirror.jobs.runner import run_claimed

    state = _process()
    services = state.services
    settings = services.settings
    name = (task.request.delivery_info or {}).get("routing_key") or DEFAULT_QUEUE
    refill = dispatch.Refill(name, queues_of(settings), settings.celery_redispatch_seconds)
    if isinstance(job_id, list):
        return _run_jobs(state, name, [int(i) for i in job_id], refill)
    job, following = dispatch.claim_one(
        services.catalog, state.owner, int(job_id), settings.job_lease_seconds, refill
    )
    if job is None:
        return "dropped"  # ran, running, canceled or not due: the row decides
    _send_next(state, name, following)
    cancel = threading.Event()
    with state.lock:
        state.running[job.id] = cancel
    try:
        return run_claimed(services, job, state.owner, cancel).value
    except Exception as exc:  # as LocalExecutor._outcome: one job ends, never the worker
        log.exception("job %s: its outcome could not be recorded", job.id)
        reason = f"internal error: {type(exc).__name__} while recording the outcome"
        try:
            queue.finish(services.catalog, job.id, state.owner, JobStatus.ERROR, error=reason)
        except Exception:
            log.exception("job %s: could not be marked failed", job.id)
        return JobStatus.ERROR.value
    finally:
        with state.lock:
            state.running.pop(job.id, None)


def _run_jobs(state: _State, name: str, ids: list[int], refill: dispatch.Refill) -> str:
    """The jobs of a message of several ids: claimed (and as many next ones marked) in
    one transaction, run one after the other, their successes recorded together before
    the message is acknowledged. Jobs of the message already ran, running or canceled
    are not claimed, so a message delivered twice runs each job once."""
    import time

    from mediamirror.jobs.completions import Success
    from mediamirror.jobs.runner import fail_unrecorded, record_all, run_claimed

    services = state.services
    catalog = services.catalog
    jobs, following, datasets = dispatch.claim_message(
        catalog, state.owner, ids, services.settings.job_lease_seconds, refill
    )
    if not jobs:
        return "dropped"
    _send_next(state, name, following)
    claimed_at = time.monotonic()
    cancels = {job.id: threading.Event() for job in jobs}
    with state.lock:
        state.running.update(cancels)  # their leases are renewed from now on
    done: list[Success] = []
    outcomes: dict[int, str] = {}
    try:
        for n, job in enumerate(jobs):
            if n and time.monotonic() - claimed_at > HOLD_SECONDS:
                rest = [j.id for j in jobs[n:]]
                queue.release_unstarted(catalog, rest, state.owner)
                outcomes.update((i, JobStatus.QUEUED.value) for i in rest)
                break
            dataset = datasets.get(job.target_id) if job.target_type == "folder" else None
            try:
                status = run_claimed(
                    services,
                    job,
                    state.owner,
                    cancels[job.id],
                    dataset=dataset,
                    completions=done.append,
                )
            except Exception as exc:  # as LocalExecutor: one job ends, never the worker
                status = fail_unrecorded(services, job.id, state.owner, exc)
            outcomes[job.id] = status.value
        if done:
            recorded = record_all(services, state.owner, done)
            outcomes.update((i, status.value) for i, status in recorded.items())
    finally:
        with state.lock:
            for job in jobs:
                state.running.pop(job.id, None)
    return ", ".join(f"{i}: {outcomes.get(i, 'dropped')}" for i in ids)


def _send_next(state: _State, name: str, ids: list[int]) -> None:
    """A claimed job left the window: its claim recorded the next job of the queue as
    sent; send it now (from this process's sender thread, so the job does not wait for
    the broker), so the window stays full between the dispatcher's rounds."""
    if ids:
        state.outbox.put((name, ids))


def _sender() -> None:
    """Publish what :func:`_send_next` queued. A process that dies first leaves those
    jobs marked as sent: the dispatcher sends them again (``celery_redispatch_seconds``)."""
    state = _STATE
    while True:
        name, ids = state.outbox.get()
        assert state.app is not None
        try:
            send(state.app, name, ids, len(ids))
        except Exception as exc:  # the dispatcher sends them at its next round
            log.warning("could not send the next job of queue %s: %s", name, exc)
            try:
                dispatch.unmark(state.services.catalog, ids)
            except Exception:
                log.exception("could not give back jobs %s", ids)


# -- the dispatcher beside each worker ------------------------------------------------------


def _dispatch_main(settings: Settings, env: dict[str, str], info: dispatch.WorkerInfo) -> None:
    """A process of its own beside the worker's parent (spawned, so no catalog connection
    crosses a fork): registers the worker, dispatches while it holds the lease."""
    from mediamirror import logs
    from mediamirror.services import Services

    logs.setup(settings, "dispatch")
    parent = os.getppid()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def orphaned() -> None:  # the worker died without stopping us (SIGKILL)
        while not stop.wait(1.0):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=orphaned, daemon=True).start()
    app = make_app(settings, env)
    services = Services(Catalog(settings.catalog_url), settings, env)
    from mediamirror.jobs.runner import clean_workdirs
    from mediamirror.notify import sender as notify_sender

    clean_workdirs(services)
    # Job notifications (failed, dataset ready) go out from here, as from a local worker.
    notifier = notify_sender.start(services)
    try:
        dispatch.Dispatcher(services, sender(app), worker=info).run(stop)
    finally:
        notifier.stop.set()
        notifier.thread.join(timeout=5)


def _worker_info(consumer: Any) -> dispatch.WorkerInfo:
    queues = tuple(sorted(q.name for q in consumer.task_consumer.queues))
    return dispatch.WorkerInfo(consumer.hostname, int(consumer.controller.concurrency), queues)


def _start_dispatcher(sender: Any = None, **_: Any) -> None:
    if sender is None or _STATE.app is None or sender.app is not _STATE.app:
        return
    assert _STATE.settings is not None
    process = multiprocessing.get_context("spawn").Process(
        target=_dispatch_main,
        args=(_STATE.settings, _STATE.env, _worker_info(sender)),
        name="mediamirror-dispatch",
        daemon=True,
    )
    process.start()
    _STATE.dispatcher = process


def _stop_dispatcher(**_: Any) -> None:
    process = _STATE.dispatcher
    if process is not None and process.is_alive():
        process.terminate()  # SIGTERM: it releases its leases
        process.join(timeout=10)
    _STATE.dispatcher = None


signals.worker_ready.connect(_start_dispatcher, weak=False)
signals.worker_shutdown.connect(_stop_dispatcher, weak=False)


# -- ``serve`` with executor=celery -----------------------------------------------------------


@dataclass
class BackgroundDispatcher:
    """A dispatcher thread in ``serve`` (the app's starter shape: ``stop``, ``thread``)."""

    stop: threading.Event
    thread: threading.Thread | None


def start(services: Any) -> BackgroundDispatcher:
    """Dispatch from ``serve`` when the executor is celery; nothing otherwise."""
    stop = threading.Event()
    if services.settings.executor != "celery":
        return BackgroundDispatcher(stop, None)
    app = make_app(services.settings, services.env)
    dispatcher = dispatch.Dispatcher(services, sender(app))
    thread = threading.Thread(
        target=dispatcher.run, args=(stop,), name="mediamirror-dispatch", daemon=True
    )
    thread.start()
    return BackgroundDispatcher(stop, thread)


def describe_broker(settings: Settings) -> str:
    return redact_url(settings.broker_url) if settings.broker_url else "(none)"


def __getattr__(name: str) -> Any:
    """``app`` for the ``celery`` command (``-A mediamirror.jobs.executors.celery``)."""
    if name in ("app", "celery"):
        if _STATE.app is None:
            from mediamirror.config import load_settings

            make_app(load_settings())
        return _STATE.app
    raise AttributeError(name)
