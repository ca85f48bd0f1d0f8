"""Test-only processors: the one module for job functions the tests run.

They are real :class:`~mediamirror.processing.processors.base.Processor` subclasses, loaded
the way users load their own (``processors: {name: {python: "jobs.fixtures:Class"}}`` in
config.yaml, built as ``Class(name, conf)``), so the worker runs them exactly like the
built-in processors. Anything a test wants to observe from another process is written to
files under ``conf["trace_dir"]``; in-process runs can also read :data:`TRACKER`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediamirror.errors import ProcessingError, TransientProcessingError
from mediamirror.processing.processors.base import Dataset, Processor, output_base

if TYPE_CHECKING:
    from mediamirror.jobs.context import JobContext
    from mediamirror.services import Services

ALL_TYPES = ("video", "image-sequence", "large-image")
#: The module path config.yaml uses (``tests/`` is on the worker's PYTHONPATH).
MODULE = "jobs.fixtures"


def python_processor(cls: str, **conf: Any) -> dict[str, Any]:
    """The config.yaml entry of a test processor class of this module."""
    return {"python": f"{MODULE}:{cls}", **conf}


class Tracker:
    """How many test jobs run at this moment in this process, and the most ever seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.max_running = 0
        self.finished: list[int] = []

    def reset(self) -> None:
        with self._lock:
            self.running = self.max_running = 0
            self.finished = []

    def enter(self) -> None:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)

    def leave(self, job_id: int) -> None:
        with self._lock:
            self.running -= 1
            self.finished.append(job_id)


TRACKER = Tracker()


class TestProcessor(Processor):
    """Common set-up: name, dataset types and ``auto`` from config.yaml; a trace file."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str, conf: dict[str, Any]) -> None:
        self.name = name  # type: ignore[misc]
        self.dataset_types = frozenset(conf.get("applies_to", ALL_TYPES))  # type: ignore[misc]
        self.auto = bool(conf.get("auto", False))
        self.conf = conf

    def option(self, ctx: JobContext, key: str, default: Any) -> Any:
        """A job argument, else the config.yaml value, else ``default``."""
        return ctx.args.get(key, self.conf.get(key, default))

    def trace(self, ctx: JobContext, event: str, **extra: Any) -> None:
        """Append one JSON line to ``<trace_dir>/<job id>.jsonl`` (if a trace_dir is set)."""
        folder = self.conf.get("trace_dir")
        if not folder:
            return
        line = {"event": event, "t": time.time(), "pid": os.getpid(), **extra}
        Path(folder).mkdir(parents=True, exist_ok=True)
        with (Path(folder) / f"{ctx.job_id}.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")


def read_trace(folder: Path, job_id: int) -> list[dict[str, Any]]:
    path = folder / f"{job_id}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _wait(ctx: JobContext, seconds: float) -> None:
    """Sleep while honouring cancel requests and the job's timeout."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ctx.check()
        time.sleep(0.02)


class Noop(TestProcessor):
    """Succeeds at once; with ``write: true`` also uploads ``noop/<job id>.txt``."""

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        self.trace(ctx, "run")
        ctx.log(f"noop on {dataset.path}")
        if self.option(ctx, "write", False):
            path = ctx.workdir / "noop.txt"
            path.write_text(f"job {ctx.job_id}\n")
            services.output_store().put_file(f"{output_base(dataset)}/noop/{ctx.job_id}.txt", path)
        return {"noop": {"job": ctx.job_id}}


class Sleep(TestProcessor):
    """Sleeps ``seconds`` (default 1) and counts how many of its kind run at once."""

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        TRACKER.enter()
        self.trace(ctx, "start")
        try:
            _wait(ctx, float(self.option(ctx, "seconds", 1.0)))
        finally:
            TRACKER.leave(ctx.job_id)
            self.trace(ctx, "end")
        return {"slept": True}


class SleepUntilCanceled(TestProcessor):
    """Runs until it is canceled or times out; never succeeds."""

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        self.trace(ctx, "start")
        ctx.progress(10.0, "waiting to be canceled", force=True)
        while True:
            ctx.check()
            time.sleep(0.02)


class WaitForFile(TestProcessor):
    """Runs until the file ``conf["gate"]`` exists, then succeeds."""

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        self.trace(ctx, "start")
        ctx.progress(10.0, "waiting for the gate", force=True)
        while not Path(self.conf["gate"]).exists():
            ctx.check()
            time.sleep(0.02)
        return {"gate": "passed"}


class FlakyThenOk(TestProcessor):
    """Fails with a transient error on the first ``failures`` (default 2) attempts of a
    job, then succeeds. Attempts are counted in the trace directory (required)."""

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        self.trace(ctx, "attempt")
        attempts = len(read_trace(Path(self.conf["trace_dir"]), ctx.job_id))
        if attempts <= int(self.option(ctx, "failures", 2)):
            raise TransientProcessingError(f"storage hiccup on attempt {attempts}")
        return {"flaky": {"attempts": attempts}}


class AlwaysTransient(TestProcessor):
    """Always fails with a transient error: retried until it gives up."""

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        self.trace(ctx, "attempt")
        raise TransientProcessingError("storage hiccup\nsecond line that must not show")


class AlwaysFail(TestProcessor):
    """Always fails with a permanent error: never retried."""

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        self.trace(ctx, "attempt")
        ctx.log("looking at the input")
        raise ProcessingError("bad input: nothing to process\nsecond line that must not show")


class Crash(TestProcessor):
    """Raises an exception that is not a mediamirror error (a bug in a processor)."""

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        raise ZeroDivisionError("division by zero in a user processor")


class Stuck(TestProcessor):
    """Blocks in a call that never looks at cancel (a library stuck on I/O) for
    ``seconds`` (default 120): only a process exit ends it early."""

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        ctx.progress(10.0, "stuck", force=True)
        time.sleep(float(self.option(ctx, "seconds", 120.0)))
        return {"stuck": False}


class Unprintable(Exception):
    """An exception whose message cannot be rendered (a broken ``__str__`` of a tool's
    own exception class)."""

    def __str__(self) -> str:
        raise ValueError("cannot render this message")


class FailUnprintably(TestProcessor):
    """Fails with an exception that cannot be turned into text."""

    def run(self, ctx: JobContext, services: Services, dataset: Dataset) -> dict[str, Any]:
        self.trace(ctx, "attempt")
        raise Unprintable()
