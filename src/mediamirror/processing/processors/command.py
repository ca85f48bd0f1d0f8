"""Command processors (the PREMIERE pipeline): a command template from config.yaml run
per dataset, its output streamed into the job log, its result files uploaded to
``results/<dataset path>/`` in the results store.

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

import shlex
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediamirror.errors import ConfigError, ProcessingError, TransientProcessingError
from mediamirror.processing.children import die_with_parent
from mediamirror.processing.processors.base import Dataset, ItemRef, Processor, output_base
from mediamirror.processing.processors.pyramid import local_input
from mediamirror.sync.layout import Kind

if TYPE_CHECKING:
    from mediamirror.jobs.context import JobContext
    from mediamirror.services import Services
    from mediamirror.stores.output import OutputStore

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
        ctx.log("$ " + shlex.join(argv))
        ctx.progress(5.0, "running")
        _run(argv, ctx, ctx.workdir)
        files = sorted(p for p in out_dir.rglob("*") if p.is_file())
        ctx.progress(90.0, f"uploading {len(files)} result file(s)")
        store = services.results_store(self.results_url)
        prefix = f"results/{output_base(dataset)}/"
        earlier = (dataset.meta.get("results") or {}).get(self.name) or {}
        keys = replace_result_set(
            store, prefix, out_dir, files, ctx.job_id, earlier.get("keys") or []
        )
        names = [k[len(prefix) :] for k in keys]
        return {
            "results": {
                self.name: {
                    "prefix": prefix,
                    "files": len(keys),
                    "keys": names,
                    "args": args,
                    "job": ctx.job_id,
                }
            }
        }


def _fields(token: str) -> list[str]:
    import string

    return [f for _, f, _, _ in string.Formatter().parse(token) if f is not None]


def _run(argv: list[str], ctx: JobContext, cwd: Path) -> None:
    """Run the command, streaming its output lines into the job log."""
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            preexec_fn=die_with_parent,
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
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            reader.join(1)
            if ctx.cancel.is_set():
                raise ProcessingError("canceled")
            raise TransientProcessingError(f"timed out after {ctx.timeout:.0f} s")
        time.sleep(0.1)
    reader.join(5)
    if proc.returncode != 0:
        raise ProcessingError(f"command exited with status {proc.returncode}: {last[:200]}")


def replace_result_set(
    store: OutputStore,
    prefix: str,
    root: Path,
    files: list[Path],
    job_id: int,
    previous: Iterable[str] = (),
) -> list[str]:
    """Upload a new result set, then replace the old one.

    The new files go to a staging prefix first; only once all of them are up are they
    copied over the old set and stale files removed, so a failed upload leaves the previous
    results whole. ``previous`` names (relative to ``prefix``) the files of the set being
    replaced: only those are removed, because other processors (and nested datasets) put
    their results under the same prefix.
    """
    staging = f"results/.staging/{job_id}-{uuid.uuid4().hex[:8]}/"
    staged: list[tuple[str, str]] = []
    try:
        for path in files:
            rel = path.relative_to(root).as_posix()
            staged.append((rel, store.put_file(staging + rel, path)))
    except Exception:
        for _, key in staged:
            store.delete(key)
        raise
    old = {prefix + name for name in previous}
    final = []
    for rel, key in staged:
        store.copy(key, prefix + rel)
        final.append(prefix + rel)
    for stale in old - set(final):
        store.delete(stale)
    for _, key in staged:
        store.delete(key)
    return final
