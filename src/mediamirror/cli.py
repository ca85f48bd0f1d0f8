"""The ``mediamirror`` command. Thin: parses, calls the modules, prints."""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn


def _without_httpx_cli() -> None:
    """httpx imports its own command line (``httpx._main``: rich, pygments) whenever they
    are installed, a tenth of this command's start-up; mediamirror never runs it. A stand-in
    is registered first, before anything imports httpx (nothing else changes in httpx)."""
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    stub = types.ModuleType("httpx._main")

    def main(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise SystemExit("the httpx command line is not loaded inside mediamirror")

    stub.main = main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = stub


_without_httpx_cli()

import click  # noqa: E402

from mediamirror import __version__, interrupt, logs  # noqa: E402
from mediamirror.config import Settings, load_settings  # noqa: E402
from mediamirror.errors import MediamirrorError  # noqa: E402
from mediamirror.redact import redact, remember_env  # noqa: E402
from mediamirror.stores import PRESETS  # noqa: E402

#: Catalogs the commands of this process opened (closed by :func:`_exit_now`).
_CATALOGS: list[Any] = []


class Context:
    """What every command needs: settings, and the catalog opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env: dict[str, str] = dict(os.environ)
        self._catalog: Any = None

    @property
    def catalog(self) -> Any:
        if self._catalog is None:
            from mediamirror.catalog import Catalog

            self._catalog = Catalog(self.settings.catalog_url)
            _CATALOGS.append(self._catalog)
        return self._catalog


pass_ctx = click.make_pass_decorator(Context)


def _err(message: str) -> None:
    # The last line out of the process: whatever the message quotes (a database URL, a
    # driver's error), no password, signature or secret value of the environment.
    remember_env(os.environ)
    click.echo(f"error: {redact(message)}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mediamirror")
@click.option("--home", help="Data directory [env MEDIAMIRROR_HOME; default ./mediamirror-data].")
@click.option("--database-url", help="Catalog database URL [env MEDIAMIRROR_DATABASE_URL].")
@click.option("--config", "config_path", help="config.yaml to read [env MEDIAMIRROR_CONFIG].")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.pass_context
def cli(
    ctx: click.Context,
    home: str | None,
    database_url: str | None,
    config_path: str | None,
    log_level: str | None,
) -> None:
    """mediamirror: mirror media in object storage into a browsable dataset catalog."""
    settings = load_settings(
        {"home": home, "database_url": database_url, "config": config_path, "log_level": log_level},
        # `config check` reports a wrong email/notify block as one of its lines.
        check_sections=ctx.invoked_subcommand != "config",
    )
    remember_env(os.environ)
    # Redacted, with the job, source and request of each line; a file of its own per process.
    logs.setup(settings, ctx.invoked_subcommand or "mediamirror")
    ctx.obj = Context(settings)


# -- sources ---------------------------------------------------------------------------------


@cli.group()
def source() -> None:
    """Add, list, show and remove sources (stores mirrored read-only)."""


_F = Any  # a click command function being decorated


def _profile_options(command: _F) -> _F:
    """The profile options of ``source add`` and ``source set`` (checked by
    :func:`mediamirror.profiles.validated`, so a bad value is one ``error:`` line)."""
    options = [
        click.option(
            "--images",
            metavar="auto|large-image|sequence",
            help="What raster images become: today's rules plus a pixel threshold (auto), "
            "each its own large image, or frames of their folder's sequence.",
        ),
        click.option(
            "--processors",
            metavar="LIST",
            help="Processors that run for this source's datasets, e.g. pyramid or "
            "video,pose ('all': every processor that applies).",
        ),
        click.option(
            "--output",
            "output_url",
            metavar="URL",
            help="Store this source's derived files go to [default: the output store].",
        ),
        click.option(
            "--output-layout",
            metavar="catalog|mirror",
            help="Names of derived files: catalog (pyramids/<source>/...) or mirror (the "
            "source key's path with the output's extension).",
        ),
        click.option(
            "--output-endpoint-url",
            metavar="URL",
            help="S3 API endpoint of --output [default: output_endpoint_url].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@source.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="S3-compatible service.")
@click.option("--endpoint-url", help="S3 API endpoint, e.g. http://127.0.0.1:9000 for MinIO.")
@click.option("--region", help="Region of the bucket.")
@click.option("--profile", help="AWS profile to take credentials from.")
@click.option("--addressing", type=click.Choice(["auto", "path", "virtual"]), default=None)
@click.option("--access-key-env", metavar="VAR", help="Env variable holding the access key.")
@click.option("--secret-key-env", metavar="VAR", help="Env variable holding the secret key.")
@click.option("--mount", help="Catalog folder to mirror into [default: /NAME].")
@click.option("--include", metavar="REGEX", help="Only keys (relative to the prefix) matching.")
@click.option("--exclude", metavar="REGEX", help="Skip keys (relative to the prefix) matching.")
@click.option("--no-check", is_flag=True, help="Do not list the store before adding it.")
@click.option(
    "--schedule", metavar="CRON", help="Re-sync on this cron schedule while `serve` runs."
)
@_profile_options
@pass_ctx
def source_add(
    obj: Context,
    /,
    name: str,
    url: str,
    mount: str | None,
    include: str | None,
    exclude: str | None,
    no_check: bool,
    schedule: str | None,
    images: str | None,
    processors: str | None,
    output_url: str | None,
    output_layout: str | None,
    output_endpoint_url: str | None,
    **store_options: Any,
) -> None:
    """Add source NAME mirroring URL (s3://bucket/prefix, gs://bucket/prefix, file:///path).

    Credentials are never stored: only the names of the environment variables (or the
    profile) they come from. Presets: aws, minio, do-spaces (DO_SPACES_KEY,
    DO_SPACES_SECRET, DO_SPACES_REGION, DO_SPACES_BUCKET, DO_SPACES_ENDPOINT), gcs (HMAC
    keys in GS_ACCESS_KEY_ID and GS_SECRET_ACCESS_KEY).
    """
    from mediamirror.sources import add_source
    from mediamirror.stores.output import derived_specs

    src = add_source(
        obj.catalog,
        name,
        url,
        env=obj.env,
        mount=mount,
        include=include,
        exclude=exclude,
        check=not no_check,
        outputs=derived_specs(obj.settings, obj.env),
        schedule=schedule,
        settings=obj.settings,
        images=images,
        processors=processors,
        output_url=output_url,
        output_layout=output_layout,
        output_endpoint_url=output_endpoint_url,
        **store_options,
    )
    synced = f" (synced on '{src.options['schedule']}')" if schedule else ""
    click.echo(f"added source {src.name}: {src.url} -> {src.mount}{synced}")


@source.command("set")
@click.argument("name")
@_profile_options
@click.option("--include", metavar="REGEX", help="Only keys matching ('' clears).")
@click.option("--exclude", metavar="REGEX", help="Skip keys matching ('' clears).")
@click.option("--schedule", metavar="CRON", help="Re-sync on this cron schedule ('' clears).")
@pass_ctx
def source_set(
    obj: Context,
    /,
    name: str,
    images: str | None,
    processors: str | None,
    output_url: str | None,
    output_layout: str | None,
    output_endpoint_url: str | None,
    include: str | None,
    exclude: str | None,
    schedule: str | None,
) -> None:
    """Change source NAME's profile, filters or schedule; prints what changed.

    A changed --images re-lays the source's folders on its next sync; processors added
    to --processors run for existing datasets only with `postprocess --only-pending` or
    `reprocess`. An empty value ('') goes back to the default."""
    from mediamirror.sources import set_source

    values = (images, processors, output_url, output_layout, output_endpoint_url)
    if all(v is None for v in (*values, include, exclude, schedule)):
        raise click.UsageError("give at least one value to change (see --help)")
    _, changed = set_source(
        obj.catalog,
        name,
        env=obj.env,
        settings=obj.settings,
        images=images,
        processors=processors,
        output_url=output_url,
        output_layout=output_layout,
        output_endpoint_url=output_endpoint_url,
        include=include,
        exclude=exclude,
        schedule=schedule,
    )
    click.echo(f"{name}: " + ("; ".join(changed) if changed else "nothing changed"))


def _source_dict(src: Any) -> dict[str, Any]:
    from mediamirror.profiles import profile_of

    return {
        "name": src.name,
        "url": src.url,
        "mount": src.mount,
        "preset": src.preset,
        "endpoint_url": src.endpoint_url,
        "region": src.region,
        "aws_profile": src.profile,
        "addressing": src.addressing,
        "credentials": dict(src.credentials or {}),
        "include": src.include,
        "exclude": src.exclude,
        "schedule": (src.options or {}).get("schedule"),
        "profile": profile_of(src).describe(),
        "created_at": src.created_at.isoformat(),
    }


@source.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def source_list(obj: Context, as_json: bool) -> None:
    """List sources."""
    from mediamirror.sources import list_sources

    sources = list_sources(obj.catalog)
    if as_json:
        click.echo(json.dumps([_source_dict(s) for s in sources], indent=2))
        return
    if not sources:
        click.echo("no sources yet: add one with `mediamirror source add NAME URL`")
    for s in sources:
        click.echo(f"{s.name:20} {s.url:50} {s.mount}")


@source.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def source_show(obj: Context, name: str, as_json: bool) -> None:
    """Show one source and its last sync runs."""
    from mediamirror.sources import get_source, recent_runs

    src = get_source(obj.catalog, name)
    info = _source_dict(src)
    info["runs"] = recent_runs(obj.catalog, src.id)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    # The profile's values as lines of their own, every one shown (defaults included).
    shown = {**{k: v for k, v in info.items() if k != "profile"}, **info["profile"]}
    for key, value in shown.items():
        if key != "runs" and value not in (None, {}, ""):
            value = ",".join(value) if isinstance(value, list) else value
            click.echo(f"{key:14} {value}")
    for run in info["runs"]:
        click.echo(
            f"sync #{run['id']:<5} {run['state']:8} {run['started_at'][:19]}  "
            f"+{run['added']} ~{run['changed']} -{run['deleted']} ={run['unchanged']}"
            + (f"  {run['error']}" if run["error"] else "")
        )


@source.command("check")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def source_check(obj: Context, name: str, as_json: bool) -> None:
    """List the first page of source NAME with short timeouts and say in one line what the
    store answered (N keys seen in S s, or the exact reason); exit 1 when it failed. The
    web UI's "Check connection"; writes nothing."""
    from mediamirror.source_check import check_existing_source

    result = check_existing_source(obj.catalog, name, env=obj.env, settings=obj.settings)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    elif result.ok:
        click.echo(f"{name}: {result.message}")
    if not result.ok:
        if not as_json:
            click.echo(f"error: {name}: {result.message}", err=True)
        sys.exit(1)


@source.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def source_remove(obj: Context, name: str, yes: bool) -> None:
    """Forget a source and its catalog folders (the store itself is never touched)."""
    from mediamirror.sources import get_source, remove_source

    src = get_source(obj.catalog, name)
    if not yes:
        click.confirm(f"remove source {name} and its catalog folder {src.mount}?", abort=True)
    remove_source(obj.catalog, name)
    click.echo(f"removed source {name}")


# -- sync --------------------------------------------------------------------------------------


@contextmanager
def _progress(label: str, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """A Rich progress line with keys/s, only when stderr is a terminal."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.completed:,.0f} keys"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None, rate="")

        def update(done: int) -> None:
            speed = bar.tasks[0].speed
            bar.update(task, completed=done, rate=f"{speed:,.0f} keys/s" if speed else "")

        yield update


@cli.command()
@click.argument("names", nargs=-1, metavar="[NAME...]")
@click.option("--all", "all_sources", is_flag=True, help="Every source.")
@click.option(
    "--process",
    is_flag=True,
    help="Then run the sources' jobs here, send the notifications, print a summary; "
    "exit 1 if anything failed (crontab mode).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option(
    "--from-inventory",
    "inventory",
    metavar="URL",
    help="Read the newest S3 Inventory report under URL (s3://bucket/prefix/) instead of "
    "listing, then sync incrementally what changed since the report. One source only.",
)
@pass_ctx
def sync(
    obj: Context,
    names: tuple[str, ...],
    all_sources: bool,
    process: bool,
    quiet: bool,
    inventory: str | None = None,
) -> None:
    """Sync sources into the catalog: add new keys, update changed ones, mark gone ones
    deleted. Incremental, batched, and safe to interrupt and run again.

    With --process (for a crontab line): also queue post-processing, run the jobs of these
    sources in this process and wait for them, deliver the notifications, and print a
    summary. A source another copy is still processing is skipped with one line.

    With --from-inventory (a first sync of a bucket with millions of keys): the report is
    merged like a listing as of its date, then a normal sync catches up."""
    with interrupt.handled():
        chosen = _chosen_sources(obj, names, all_sources, none_means_all=False)
        if inventory is not None and (process or all_sources or len(chosen) != 1):
            raise click.UsageError("--from-inventory takes one source NAME, no --all/--process")
        if process:
            _process(obj, chosen)
            return
        for i, name in enumerate(chosen):
            _sync_one(obj, name, quiet, inventory, head_start=i == 0)


def _chosen_sources(
    obj: Context, names: tuple[str, ...], all_sources: bool, *, none_means_all: bool
) -> list[str]:
    if names and all_sources:
        raise click.UsageError("give source names or --all, not both")
    if names:
        return list(dict.fromkeys(names))
    if not all_sources and not none_means_all:
        raise click.UsageError("give one or more source names, or --all")
    from mediamirror.sources import list_sources

    return [s.name for s in list_sources(obj.catalog)]


def _process(obj: Context, names: list[str]) -> None:
    """``sync --process``: one crontab run; exit 1 when a sync or a job failed."""
    from mediamirror import crontab
    from mediamirror.services import Services

    if not names:
        click.echo("no sources yet: add one with `mediamirror source add NAME URL`")
        return
    report = crontab.run(Services(obj.catalog, obj.settings, obj.env), names)
    for line in report.lines():
        click.echo(line)
    if report.failed:
        sys.exit(1)


@cli.command()
@click.argument("names", nargs=-1, metavar="[NAME...]")
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds between the end of a round and the start of the next.",
)
@pass_ctx
def watch(obj: Context, names: tuple[str, ...], interval: float) -> None:
    """Run `sync --process` on sources NAME... (all when none is given) in a loop, one
    summary line per round, until Ctrl-C or SIGTERM. For machines without cron."""
    from mediamirror import crontab
    from mediamirror.services import Services

    services = Services(obj.catalog, obj.settings, obj.env)
    rounds = 0
    with interrupt.handled() as stop:
        try:
            while True:
                chosen = names or tuple(crontab.all_names(services))
                rounds += 1
                report = crontab.run(services, chosen) if chosen else crontab.RunReport()
                click.echo(f"round {rounds}: {report.line() if chosen else 'no sources'}")
                for line in report.failures():
                    click.echo(f"  {line}")
                if stop.wait(interval):
                    break
        except interrupt.Interrupted:
            click.echo(f"round {rounds}: interrupted; its running jobs went back to the queue")
    # Stopping is how a foreground loop ends: not an error.
    click.echo(f"watch stopped after {rounds} round(s)")


def _sync_one(
    obj: Context, name: str, quiet: bool, inventory: str | None = None, *, head_start: bool = False
) -> None:
    interrupt.check()
    early = head_start and inventory is None and _start_feed_walk(obj, name)
    try:
        from mediamirror.sources import sync_source

        with _progress(f"sync {name}", quiet) as progress:
            if inventory is not None:  # `sync --from-inventory`: sync/inventory.py
                from mediamirror.sync.inventory import sync_from_inventory

                done = sync_from_inventory(
                    obj.catalog, obj.settings, name, obj.env, inventory, progress
                )
                lines = done.lines()
            else:
                lines = [sync_source(obj.catalog, obj.settings, name, obj.env, progress).line()]
    finally:
        if early:  # a walk the sync did not take over (it failed first) stops
            from mediamirror.stores.feed_walk import cancel_early

            cancel_early()
    for line in lines:
        click.echo(line)
    if obj.settings.auto_postprocess:
        from mediamirror.postprocess import postprocess
        from mediamirror.services import Services
        from mediamirror.sources import get_source

        interrupt.check()
        mount = get_source(obj.catalog, name).mount
        plan = postprocess(Services(obj.catalog, obj.settings, obj.env), mount)
        if plan.specs or plan.deferred:
            click.echo(f"{name}: {plan.line()}")


def _start_feed_walk(obj: Context, name: str) -> bool:
    """A feed source's walk starts before the catalog's modules are imported: the CMS
    answers its first pages meanwhile (stores/feed_early.py). True when it started."""
    from mediamirror.stores.feed_early import start_early

    with logs.context(source=name):  # the walk's log lines name the source, as the sync's
        return start_early(obj.settings, name, obj.env)


# -- browsing --------------------------------------------------------------------------------


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)


@cli.command("ls")
@click.argument("path", default="/")
@click.option("--recursive", "-r", is_flag=True, help="Everything below PATH.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document of folders and items.")
@pass_ctx
def ls(obj: Context, path: str, recursive: bool, as_json: bool) -> None:
    """Show the catalog tree at PATH (a catalog path such as /sample/videos)."""
    from mediamirror.catalog.tree import walk

    with obj.catalog.read() as conn:
        folder, folders, items = walk(conn, path, recursive)
        if as_json:
            _ls_json(folder, folders, items, path)
        else:
            _ls_text(folder["path"] if folder else "/", folders, items)


def _ls_json(folder: Any, folders: Iterator[Any], items: Iterator[Any], path: str) -> None:
    """Streamed, so a million items never sit in memory at once."""
    out = sys.stdout
    out.write('{"path": ' + json.dumps(folder["path"] if folder else "/"))
    out.write(', "folder": ' + json.dumps(folder))
    for name, rows in (("folders", folders), ("items", items)):
        out.write(f', "{name}": [')
        for i, row in enumerate(rows):
            out.write(("," if i else "") + "\n  " + json.dumps(row, ensure_ascii=False))
        out.write("]")
    out.write("}\n")


def _ls_text(root: str, folders: Iterator[Any], items: Iterator[Any]) -> None:
    """The folder's own items, then folders in path order, each followed by its items."""
    from mediamirror.catalog.tree import dataset_status

    pending = next(items, None)
    shown = False

    def items_of(folder: str | None) -> None:
        nonlocal pending, shown
        while pending is not None and (folder is None or pending["folder"] == folder):
            state = "" if pending["state"] == "present" else f" ({pending['state']})"
            click.echo(f"    {pending['name']}  {_human_size(pending['size'])}{state}")
            pending = next(items, None)
            shown = True

    items_of(root)
    for f in folders:
        shown = True
        line = f"{f['path']}/"
        if f["type"]:
            line += f"  [{f['type']}] {dataset_status(f['meta'])}"
        if f["state"] != "present":
            line += f" ({f['state']})"
        click.echo(line)
        items_of(f["path"])
    items_of(None)
    if not shown:
        click.echo("(empty)")


@cli.command()
@click.option("--large-image-px", default=4096, show_default=True, help="Side of the large image.")
@click.option("--no-process", is_flag=True, help="Mirror only; do not run the jobs.")
@click.option(
    "--serve/--no-serve",
    "serve_after",
    default=True,
    show_default=True,
    help="Then serve the web UI.",
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@pass_ctx
def demo(obj: Context, large_image_px: int, no_process: bool, serve_after: bool, port: int) -> None:
    """Generate sample media (several video codecs, an image sequence, a large image),
    mirror it into the catalog, post-process it, and show the result. Needs no account,
    server or network."""
    from mediamirror.samples import generate_samples
    from mediamirror.sources import add_source, list_sources

    media = (obj.settings.home_path / "sample-media").resolve()
    # The demo writes its sample files itself and they are complete when the sync lists
    # them: waiting for them to settle would only leave the demo's datasets unprocessed.
    obj.settings = dataclasses.replace(obj.settings, settle_seconds=0)
    ctx = click.get_current_context()
    # Up to the web UI, Ctrl-C stops at safe points; `serve` then has uvicorn's handling.
    with interrupt.handled():
        click.echo(f"generating sample media in {media} ...")
        files = generate_samples(media, large_image_px=large_image_px)
        interrupt.check()
        click.echo(f"{len(files)} sample files ready")
        if not any(s.name == "sample" for s in list_sources(obj.catalog)):
            add_source(obj.catalog, "sample", f"file://{media}", env=obj.env)
        ctx.invoke(sync, names=("sample",), quiet=False)
        if not no_process:
            ctx.invoke(worker_command, burst=True, concurrency=None)
    click.echo("")
    ctx.invoke(ls, path="/sample", recursive=True, as_json=False)
    click.echo(f"\noutputs: {obj.settings.output_url}")
    if serve_after:
        click.echo("")
        ctx.invoke(
            cli.commands["serve"], host="127.0.0.1", port=port, no_worker=False, access_log=False
        )


from mediamirror.cli_config import register as _register_config  # noqa: E402
from mediamirror.cli_find import register as _register_find  # noqa: E402
from mediamirror.cli_jobs import register as _register_jobs  # noqa: E402
from mediamirror.cli_service import register as _register_service  # noqa: E402
from mediamirror.events.cli import register as _register_events  # noqa: E402
from mediamirror.notify.cli import register as _register_notify  # noqa: E402

_register_jobs(cli, pass_ctx)
_register_service(cli, pass_ctx)
_register_events(cli, pass_ctx)
_register_notify(cli, pass_ctx)
_register_config(cli, pass_ctx)
_register_find(cli, pass_ctx)
worker_command = cli.commands["worker"]


def _interrupted(exc: BaseException | None) -> bool:
    """True when Ctrl-C caused ``exc``: click and database drivers wrap the interrupt."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _exit_now() -> None:
    """End the process at once after a command that succeeded, when ``main`` is the
    program's entry point (the console script, ``python -m``) and no other thread runs:
    output flushed, the catalog closed (SQLite's WAL checkpointed as before), the exit
    handlers run (log files), then ``os._exit(0)``, without the interpreter's teardown of
    every module and object (about 0.1 s of a command that used the catalog). Anywhere
    else (main called in-process, a thread still alive, output that cannot be flushed)
    it returns and Python exits as usual."""
    caller = sys._getframe(2)  # _exit_now <- main <- the program, or an in-process caller
    if caller.f_globals.get("__name__") != "__main__" or threading.active_count() > 1:
        return
    try:
        for catalog in _CATALOGS:
            catalog.close()
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        return
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        return
    os._exit(0)


def main() -> None:
    """Entry point: one clear line for every expected error, never a traceback."""
    try:
        cli.main(standalone_mode=False)
        _exit_now()
    except click.exceptions.Abort as exc:
        # Click turns Ctrl-C into Abort (after a blank line closing the terminal's ^C).
        if _interrupted(exc):
            _err("interrupted")
            sys.exit(interrupt.STOP.exit_code)
        _err("aborted")
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MediamirrorError as exc:
        _err(str(exc))
        sys.exit(1)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(interrupt.STOP.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:
        if _interrupted(exc):
            _err("interrupted")  # e.g. a database driver's error raised while handling Ctrl-C
            sys.exit(interrupt.STOP.exit_code)
        if type(exc).__module__.startswith("sqlalchemy"):
            # The catalog went away mid-command (server down, disk full...): one line.
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            _err(f"catalog database error: {reason[0] if reason else type(exc).__name__}")
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
