"""Command processors (the PREMIERE pipeline): a command template from config.yaml run
per dataset, its output streamed into the job log, its result files uploaded as one
result set to ``results/<dataset path>/<processor>/<set>/`` in the results store (see
:meth:`mediamirror.services.Services.results_store_for`; the same names whatever the
source's output layout); the dataset's ``results.<processor>`` metadata points at the
current set.

    processors:
      pose:
        command: "python pose.py --video {input} --out {output_dir} {args}"
        applies_to: [video]
        args: "--model small"
        auto: true
        timeout: 3600
        results_store: s3://results-bucket/premiere   # default: results_store setting

Placeholders: ``{input}`` (a local copy of the dataset's main file), ``{workdir}``,
``{output_dir}``, ``{dataset}`` (catalog path) and ``{args}`` (split like a shell would).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediamirror.catalog.meta import update_meta
from mediamirror.errors import ConfigError, ProcessingError, TransientProcessingError
from mediamirror.paths import safe_relpath
from mediamirror.processing.children import spawn, stop_group, sweep_group
from mediamirror.processing.outputs import result_set_prefix
from mediamirror.processing.processors.base import Dataset, ItemRef, Processor
from mediamirror.processing.processors.pyramid import local_input
from mediamirror.redact import redact
from mediamirror.sync.layout import Kind

if TYPE_CHECKING:
    from mediamirror.jobs.context import JobContext
    from mediamirror.services import Services
    from mediamirror.stores.output import OutputStore

log = logging.getLogger(__name__)

_PLACEHOLDERS = {"input", "workdir", "output_dir", "dataset", "args"}
_KINDS = {
    "video": (Kind.VIDEO,),
    "image-sequence": (Kind.IMAGE, Kind.LARGE_IMAGE),
    "large-image": (Kind.LARGE_IMAGE, Kind.IMAGE),
}


class CommandProcessor(Processor):
    """One processor configured in config.yaml."""

    merge_keys = frozenset({"results"})

    def __init__(self, name: str, conf: dict[str, Any]) -> None:
        command = conf.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ConfigError(f"processor {name!r}: 'command' must be a non-empty string")
        try:
            self.template = shlex.split(command)
        except ValueError as exc:
            raise ConfigError(f"processor {name!r}: cannot parse command: {exc}") from exc
        for token in self.template:
            for field in _fields(token):
                if field not in _PLACEHOLDERS:
                    raise ConfigError(f"processor {name!r}: unknown placeholder {{{field}}}")
        self.name = name  # type: ignore[misc]
        types = conf.get("applies_to", ["video"])
        self.dataset_types = frozenset(types)  # type: ignore[misc]
        self.auto = bool(conf.get("auto", True))
        self.default_args = str(conf.get("args", ""))
        timeout = conf.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise ConfigError(f"processor {name!r}: 'timeout' must be a positive number of seconds")
        self.timeout = float(timeout) if timeout is not None else None
        self.results_url = conf.get("results_store")

    def inputs(self, dataset: Dataset) -> list[ItemRef]:
        kinds = _KINDS.get(dataset.type or "", (Kind.VIDEO,))
        return dataset.items_of(*kinds, large_image_bytes=1 << 62)[:1]

    def argv(self, values: dict[str, str], args: str) -> list[str]:
        argv: list[str] = []
        for token in self.template:
            if token == "{args}":
                argv.extend(shlex.split(args))
            else:
                argv.append(token.format_map({**values, "args": args}))
        return argv

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        item = self.require(self.inputs(dataset), "input file")[0]
        assert dataset.source_id is not None
        ctx.progress(1.0, "fetching input")
        src = local_input(ctx, services, dataset.source_id, item)
        out_dir = ctx.workdir / "output"
        out_dir.mkdir()
        args = str(ctx.args.get("args", self.default_args))
        values = {
            "input": str(src),
            "workdir": str(ctx.workdir),
            "output_dir": str(out_dir),
            "dataset": dataset.path,
        }
        argv = self.argv(values, args)
        # The job log and the metadata get the template: a value that came from ${VAR}
        # (an API key in args, say) is shown as ${VAR}, never as itself.
        ctx.log("$ " + redact(shlex.join(argv)))
        store = services.results_store_for(dataset.source_id, self.results_url)
        set_prefix = new_set_prefix(store, dataset, self.name, ctx.job_id)
        ctx.log(f"result set: {set_prefix}")
        ctx.progress(5.0, "running")
        _run(argv, ctx, ctx.workdir)
        files = result_files(out_dir, ctx.log)
        ctx.progress(90.0, f"uploading {len(files)} result file(s)")
        entry = {
            "prefix": set_prefix,
            "files": len(files),
            "keys": upload_result_set(store, set_prefix, out_dir, files),
            "args": redact(args),
            "job": ctx.job_id,
        }
        switch_result_set(services, store, dataset.id, self.name, entry)
        return {"results": {self.name: entry}}


def _fields(token: str) -> list[str]:
    import string

    return [f for _, f, _, _ in string.Formatter().parse(token) if f is not None]


def _run(argv: list[str], ctx: JobContext, cwd: Path) -> None:
    """Run the command, streaming its output lines into the job log."""
    try:
        # Its own process group, stopped as a whole: see processing/children.py.
        proc = spawn(
            argv,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise ProcessingError(f"cannot start {argv[0]!r}: {exc.strerror}") from exc
    last = ""

    def pump() -> None:
        nonlocal last
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip():
                last = line.strip()
            ctx.log(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    while proc.poll() is None:
        ctx.progress(ctx.percent)  # throttled: writes the log tail so far to the job row
        remaining = ctx.remaining()
        if ctx.cancel.is_set() or remaining == 0.0:
            stop_group(proc)
            reader.join(1)
            if ctx.cancel.is_set():
                raise ProcessingError("canceled")
            raise TransientProcessingError(f"timed out after {ctx.timeout:.0f} s")
        time.sleep(0.1)
    sweep_group(proc)  # background processes it left behind end with the job
    reader.join(5)
    if proc.returncode != 0:
        raise ProcessingError(f"command exited with status {proc.returncode}: {last[:200]}")


def new_set_prefix(store: OutputStore, dataset: Dataset, processor: str, job_id: int) -> str:
    """Where one run's result set goes in ``store``: a prefix of its own, never reused,
    so the set that readers follow is never written to (see
    :func:`mediamirror.processing.outputs.result_set_prefix`)."""
    return result_set_prefix(store.spec, dataset, processor, f"{job_id}-{uuid.uuid4().hex[:8]}")


def result_files(root: Path, log: Callable[[str], None], *, under: str = "") -> list[Path]:
    """The regular files under ``root`` (the command's output folder), in name order.

    Symbolic links are never followed, to a file or to a folder: a command (or a crafted
    input it unpacked) could otherwise have mediamirror upload a file from anywhere it can
    read, such as /etc/passwd or the catalog. Links, special files (a FIFO would block the
    upload) and names that are not UTF-8 (no bucket could hold them) are skipped, each with
    a line in the job log. A folder that vanished (the scratch folder removed under the
    job) raises ``FileNotFoundError`` instead of passing for an empty result set."""
    found: list[Path] = []
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        rel = under + entry.name
        if entry.is_symlink():
            log(f"skipped result {rel!r}: a symbolic link, never followed")
        elif not _utf8(entry.name):
            log(f"skipped result {rel!r}: its name is not UTF-8")
        elif entry.is_dir(follow_symlinks=False):
            found.extend(result_files(Path(entry.path), log, under=rel + "/"))
        elif entry.is_file(follow_symlinks=False):
            found.append(Path(entry.path))
        else:
            log(f"skipped result {rel!r}: not a regular file")
    return found


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of the file name (surrogate escapes)
        return False
    return True


def upload_result_set(store: OutputStore, prefix: str, root: Path, files: list[Path]) -> list[str]:
    """Upload a new result set under its own ``prefix``; returns its keys relative to it.
    A failure removes what was uploaded (best effort): the current set was never touched.

    A file's key is its path under ``root`` made safe (:func:`mediamirror.paths.safe_relpath`):
    a name such as ``%2E%2E`` or one with a control character never aliases another key."""
    done: list[str] = []
    try:
        for path in files:
            rel = safe_relpath(path.relative_to(root).as_posix())
            store.put_file(prefix + rel, path)
            done.append(rel)
    except BaseException:
        _delete_quietly(store, [prefix + rel for rel in done])
        raise
    return done


def switch_result_set(
    services: Services, store: OutputStore, folder_id: int, processor: str, entry: dict[str, Any]
) -> None:
    """Point the dataset at its new result set, then delete the set it replaces.

    The pointer (``results.<processor>`` in the metadata) changes in one transaction, so
    readers see the old set or the new one, whole, never a mix. The replaced set is read
    inside that transaction: of two runs finishing together, each deletes exactly the set
    it replaced. Deleting comes after the switch and is best effort: a leftover file costs
    space, never correctness."""
    replaced: dict[str, Any] = {}

    def change(meta: dict[str, Any]) -> None:
        results = dict(meta.get("results") or {})
        replaced.update(results.get(processor) or {})
        results[processor] = entry
        meta["results"] = results

    update_meta(services.catalog, folder_id, change)
    old_prefix = str(replaced.get("prefix") or "")
    if old_prefix and old_prefix != entry["prefix"]:
        _delete_quietly(store, [old_prefix + str(k) for k in replaced.get("keys") or []])


def _delete_quietly(store: OutputStore, keys: Iterable[str]) -> None:
    for key in keys:
        try:
            store.delete(key)
        except Exception as exc:  # a leftover file must not fail the job
            log.warning("could not delete %s: %s", key, exc)
