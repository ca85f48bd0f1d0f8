"""CLI commands for post-processing: postprocess, reprocess, jobs, worker."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

import click

from mediamirror.interrupt import STOP, Interrupted, interruptible
from mediamirror.jobs.status import JobStatus


def _services(obj: Any) -> Any:
    from mediamirror.services import Services

    return Services(obj.catalog, obj.settings, obj.env)


def _job_dict(job: Any) -> dict[str, Any]:
    out = {c: getattr(job, c) for c in job._fields}
    for key, value in out.items():
        if hasattr(value, "isoformat"):
            out[key] = value.isoformat()
    return out


def _celery_worker(obj: Any, queues: str | None, concurrency: int, pool: str) -> None:
    """``worker --executor celery``: a plain Celery worker on the mediamirror app."""
    import dataclasses
    import os
    import socket

    from mediamirror.jobs.executors.celery import make_app
    from mediamirror.jobs.routing import parse_queues

    names = parse_queues(queues)
    settings = dataclasses.replace(obj.settings, executor="celery")
    app = make_app(settings, obj.env)
    # Bring the catalog to the current schema once, then close it: no connection of this
    # process may cross the fork into the pool's children (each opens its own).
    obj.catalog.close()
    node = f"mediamirror-{os.getpid()}@{socket.gethostname()}"
    app.worker_main(
        [
            "worker",
            f"--queues={','.join(names)}",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
            f"--hostname={node}",
            f"--loglevel={settings.log_level.upper()}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


def _status(obj: Any, inspect_timeout: float) -> dict[str, Any]:
    """What ``mediamirror status`` shows, as one dict."""
    from mediamirror.catalog.leases import owner_is_dead
    from mediamirror.catalog.models import LEASES, utcnow
    from mediamirror.jobs import dispatch, queue
    from mediamirror.jobs.routing import queues_of
    from mediamirror.redact import redact_url

    settings = obj.settings
    catalog = obj.catalog
    routes = queues_of(settings)
    depths = dispatch.depths(catalog, routes, settings.celery_redispatch_seconds)
    info: dict[str, Any] = {
        "executor": settings.executor,
        "catalog": catalog.safe_url,
        "broker": redact_url(settings.broker_url) if settings.broker_url else None,
        "jobs": queue.counts(catalog),
        "routes": routes,
        "queues": depths,
        "workers": [
            {"node": w.node, "slots": w.slots, "queues": list(w.queues), "owner": owner}
            for w, owner in dispatch.live_workers(catalog)
        ],
        "dispatcher": None,
    }
    from sqlalchemy import select

    # Roles one process plays across all (scheduler, SQS consumer, notification sender,
    # dispatcher...) and running syncs: every live lease but the workers' registrations.
    with catalog.read() as conn:
        rows = conn.execute(
            select(LEASES.c.name, LEASES.c.owner, LEASES.c.expires_at)
            .where(~LEASES.c.name.startswith(dispatch.WORKER_PREFIX))
            .order_by(LEASES.c.name)
        ).all()
    now = utcnow()
    info["roles"] = {
        r.name: r.owner for r in rows if r.expires_at > now and not owner_is_dead(r.owner)
    }
    info["dispatcher"] = info["roles"].get(dispatch.LEASE)
    if settings.executor == "celery" or settings.broker_url:
        info.update(_broker_status(settings, [*depths, *routes.values()], inspect_timeout))
    return info


def _broker_status(settings: Any, names: list[str], timeout: float) -> dict[str, Any]:
    """Messages waiting on the broker per queue, and the workers answering a ping."""
    from mediamirror.jobs.executors.celery import make_app
    from mediamirror.jobs.routing import DEFAULT_QUEUE

    out: dict[str, Any] = {"broker_messages": {}, "answering": None, "broker_error": None}
    try:
        app = make_app(settings)
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            for name in sorted({DEFAULT_QUEUE, *names}):
                channel = conn.channel()
                try:
                    declared = channel.queue_declare(queue=name, passive=True)
                    out["broker_messages"][name] = int(declared.message_count)
                except Exception:  # not declared yet: nothing sent to it
                    out["broker_messages"][name] = 0
                finally:
                    channel.close()
        replies = app.control.ping(timeout=timeout) or []
        out["answering"] = sorted(name for reply in replies for name in reply)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        out["broker_error"] = first
    return out


def _print_status(info: dict[str, Any]) -> None:
    click.echo(f"executor    {info['executor']}")
    click.echo(f"catalog     {info['catalog']}")
    if info["broker"] is not None:
        state = f"unreachable: {info['broker_error']}" if info.get("broker_error") else "ok"
        click.echo(f"broker      {info['broker']}  ({state})")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(info["jobs"].items())) or "none"
    click.echo(f"jobs        {counts}")
    roles = info["roles"]
    click.echo(f"roles       {'' if roles else '(none held: no serve, worker or sync running)'}")
    for name, owner in roles.items():
        click.echo(f"  {name:38} {owner}")
    if info["executor"] != "celery":
        return
    click.echo(f"dispatcher  {info['dispatcher'] or '(none running)'}")
    workers = info["workers"]
    click.echo(f"workers     {len(workers)} live, {sum(w['slots'] for w in workers)} slot(s)")
    for w in workers:
        click.echo(f"  {w['node']:40} {w['slots']:>3} slot(s)  queues {','.join(w['queues'])}")
    if info.get("answering") is not None:
        click.echo(f"  answering a ping: {len(info['answering'])}")
    from mediamirror.jobs.routing import DEFAULT_QUEUE

    routed = {DEFAULT_QUEUE, *info["routes"].values()}
    names = sorted({*routed, *info["queues"], *info.get("broker_messages", {})})
    click.echo(f"{'queue':20} {'queued':>8} {'in flight':>10} {'on broker':>10}")
    for name in names:
        depth = info["queues"].get(name, {"queued": 0, "in_flight": 0})
        on_broker = info.get("broker_messages", {}).get(name, "-")
        click.echo(f"{name:20} {depth['queued']:>8} {depth['in_flight']:>10} {on_broker:>10}")


def register(
    cli: click.Group, pass_ctx: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Add the post-processing commands to the ``mediamirror`` group."""

    @cli.command()
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.option(
        "--timeout",
        default=1.0,
        show_default=True,
        type=click.FloatRange(min=0.1),
        help="Seconds to wait for the broker and the workers' answers.",
    )
    @pass_ctx
    def status(obj: Any, as_json: bool, timeout: float) -> None:
        """Show the executor, the broker, live workers and queue depths."""
        info = _status(obj, timeout)
        if as_json:
            click.echo(json.dumps(info, indent=2, default=str))
        else:
            _print_status(info)

    @cli.command()
    @click.argument("path", default="/")
    @click.option("--recursive", "-r", is_flag=True, help="All datasets below PATH.")
    @click.option("--limit", type=click.IntRange(min=1), help="At most N datasets.")
    @click.option("--skip-transcoding", is_flag=True, help="Record metadata, do not transcode.")
    @click.option(
        "--only-pending",
        is_flag=True,
        help="Datasets still at fps -1 with a MarkForPostProcess key of any value.",
    )
    @pass_ctx
    @interruptible
    def postprocess(
        obj: Any,
        path: str,
        recursive: bool,
        limit: int | None,
        skip_transcoding: bool,
        only_pending: bool,
    ) -> None:
        """Queue post-processing for datasets marked MarkForPostProcess under PATH, then
        clear the marks (DIVE's batch postprocess). Run `mediamirror worker` to process."""
        from mediamirror.postprocess import postprocess as run

        plan = run(
            _services(obj),
            path,
            recursive=recursive,
            limit=limit,
            skip_transcoding=skip_transcoding,
            only_pending=only_pending,
        )
        click.echo(plan.line())

    @cli.command()
    @click.argument("path")
    @click.option("--processor", "-p", help="Processor to run [default: the dataset's own].")
    @click.option("--prefix", help="Only datasets whose path below PATH starts with this.")
    @click.option("--args", "args", help='Arguments for the processor, e.g. "--hands".')
    @click.option("--limit", type=click.IntRange(min=1), help="At most N datasets.")
    @click.option("--dry-run", is_flag=True, help="Show what would be queued.")
    @pass_ctx
    @interruptible
    def reprocess(
        obj: Any,
        path: str,
        processor: str | None,
        prefix: str | None,
        args: str | None,
        limit: int | None,
        dry_run: bool,
    ) -> None:
        """Run a processor again on the datasets under PATH, optionally with new arguments;
        results replace the earlier ones once complete."""
        from mediamirror.postprocess import reprocess as run

        plan = run(
            _services(obj),
            path,
            processor=processor,
            prefix=prefix,
            args=args,
            limit=limit,
            dry_run=dry_run,
        )
        if dry_run:
            for spec in plan.specs:
                click.echo(f"would queue {spec.processor} on folder {spec.target_id}")
            click.echo(f"{len(plan.specs)} job(s) for {len(plan.datasets)} dataset(s) (dry run)")
        else:
            click.echo(plan.line())

    @cli.group()
    def jobs() -> None:
        """List, inspect, retry and cancel jobs."""

    @jobs.command("list")
    @click.option(
        "--state",
        "states",
        multiple=True,
        type=click.Choice([s.value for s in JobStatus]),
        help="Filter by state.",
    )
    @click.option("--processor", help="Filter by processor.")
    @click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @pass_ctx
    def jobs_list(
        obj: Any, states: tuple[str, ...], processor: str | None, limit: int, as_json: bool
    ) -> None:
        """List jobs, newest first."""
        from mediamirror.jobs import queue

        rows = queue.listing(obj.catalog, states=states, processor=processor, limit=limit)
        if as_json:
            click.echo(json.dumps([_job_dict(r) for r in rows], indent=2))
            return
        if not rows:
            click.echo("no jobs")
        for r in rows:
            detail = r.error or r.message or ""
            click.echo(
                f"{r.id:>6}  {r.state:9} {r.processor:10} {r.target_type}:{r.target_id:<7} "
                f"{r.progress:5.1f}%  try {r.attempts}/{r.max_attempts}  {detail}"
            )

    @jobs.command("show")
    @click.argument("job_id", type=int)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @pass_ctx
    def jobs_show(obj: Any, job_id: int, as_json: bool) -> None:
        """Show one job."""
        from mediamirror.jobs import queue

        info = _job_dict(queue.get(obj.catalog, job_id))
        if as_json:
            click.echo(json.dumps(info, indent=2))
            return
        for key, value in info.items():
            if key != "log_tail":
                click.echo(f"{key:17} {value}")

    @jobs.command("log")
    @click.argument("job_id", type=int)
    @pass_ctx
    def jobs_log(obj: Any, job_id: int) -> None:
        """Print the tail of a job's log."""
        from mediamirror.jobs import queue

        click.echo(queue.get(obj.catalog, job_id).log_tail or "(no output)")

    @jobs.command("retry")
    @click.argument("job_ids", type=int, nargs=-1, required=True)
    @pass_ctx
    def jobs_retry(obj: Any, job_ids: tuple[int, ...]) -> None:
        """Queue failed or canceled jobs again."""
        from mediamirror.jobs import queue

        for job_id in job_ids:
            queue.retry(obj.catalog, job_id)
            click.echo(f"job {job_id} queued again")

    @jobs.command("cancel")
    @click.argument("job_ids", type=int, nargs=-1, required=True)
    @pass_ctx
    def jobs_cancel(obj: Any, job_ids: tuple[int, ...]) -> None:
        """Cancel queued jobs; stop running ones (their ffmpeg is stopped)."""
        from mediamirror.jobs import queue

        for job_id in job_ids:
            click.echo(f"job {job_id}: {queue.cancel(obj.catalog, job_id)}")

    @cli.command()
    @click.option("--burst", is_flag=True, help="Drain the queue, then exit.")
    @click.option(
        "--concurrency",
        "-c",
        type=click.IntRange(min=1),
        help="Jobs at once [setting workers; default: CPU count].",
    )
    @click.option(
        "--executor",
        type=click.Choice(["local", "celery"]),
        help="local, or a Celery worker fed through broker_url [setting executor].",
    )
    @click.option(
        "--queues",
        "-Q",
        metavar="LIST",
        help="Celery: broker queues to take jobs from, e.g. video,gpu [default: mediamirror].",
    )
    @click.option(
        "--pool",
        type=click.Choice(["prefork", "threads", "solo"]),
        default="prefork",
        show_default=True,
        help="Celery: run jobs in child processes, threads, or the worker process itself.",
    )
    @pass_ctx
    @interruptible
    def worker(
        obj: Any,
        burst: bool,
        concurrency: int | None,
        executor: str | None,
        queues: str | None,
        pool: str,
    ) -> None:
        """Run jobs with the local executor until stopped (Ctrl-C), or with --burst until
        the queue is empty; with --executor celery, run a Celery worker."""
        from mediamirror.jobs.executors.local import LocalExecutor
        from mediamirror.notify import sender

        settings = obj.settings
        if (executor or settings.executor) == "celery":
            if burst:
                raise click.UsageError("--burst is for the local executor")
            _celery_worker(obj, queues, concurrency or settings.worker_count, pool)
            return
        services = _services(obj)
        local = LocalExecutor(
            services,
            concurrency or settings.worker_count,
            lease_seconds=settings.job_lease_seconds,
        )
        # Notifications go out from their own thread: jobs never wait for a mail server.
        notifier = sender.start(services)
        try:
            # SIGTERM and Ctrl-C only set STOP: the loop ends, running jobs go back to the queue.
            stats = local.run(burst=burst, stop=STOP)
        finally:
            # What is not sent yet stays in the outbox for the next sender.
            notifier.stop.set()
            notifier.thread.join(timeout=5)
        if STOP.signum == signal.SIGINT:
            raise Interrupted(signal.SIGINT)  # SIGTERM is how a worker is stopped: exit 0
        click.echo(stats.line())
