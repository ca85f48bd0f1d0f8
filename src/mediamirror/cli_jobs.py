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


def register(
    cli: click.Group, pass_ctx: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Add the post-processing commands to the ``mediamirror`` group."""

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
    @pass_ctx
    @interruptible
    def worker(obj: Any, burst: bool, concurrency: int | None) -> None:
        """Run jobs with the local executor until stopped (Ctrl-C), or with --burst until
        the queue is empty."""
        from mediamirror.jobs.executors.local import LocalExecutor
        from mediamirror.notify import sender

        settings = obj.settings
        services = _services(obj)
        executor = LocalExecutor(
            services,
            concurrency or settings.worker_count,
            lease_seconds=settings.job_lease_seconds,
        )
        # Notifications go out from their own thread: jobs never wait for a mail server.
        notifier = sender.start(services)
        try:
            # SIGTERM and Ctrl-C only set STOP: the loop ends, running jobs go back to the queue.
            stats = executor.run(burst=burst, stop=STOP)
        finally:
            # What is not sent yet stays in the outbox for the next sender.
            notifier.stop.set()
            notifier.thread.join(timeout=5)
        if STOP.signum == signal.SIGINT:
            raise Interrupted(signal.SIGINT)  # SIGTERM is how a worker is stopped: exit 0
        click.echo(stats.line())
