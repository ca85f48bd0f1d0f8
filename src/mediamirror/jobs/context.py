"""What a processor sees of its job: arguments, progress, log, cancellation, deadline."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mediamirror.errors import ProcessingError, TransientProcessingError
from mediamirror.paths import join_under, safe_segment

ReportFn = Callable[[float, str | None, str], None]


class JobContext:
    """Handed to processors. Progress and log lines are written to the job row at most
    every ``report_interval`` seconds so a chatty ffmpeg cannot flood the catalog."""

    def __init__(
        self,
        job_id: int,
        args: dict[str, Any],
        workdir: Path,
        report: ReportFn,
        *,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
        report_interval: float = 0.5,
        log_lines: int = 200,
    ) -> None:
        self.job_id = job_id
        self.args = args
        self._workdir = workdir
        #: Whether the scratch folder was asked for (so there is one to remove).
        self.workdir_made = False
        self.cancel = cancel or threading.Event()
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout if timeout else None
        self._report = report
        self._interval = report_interval
        self._last = 0.0
        self._lock = threading.Lock()
        self._tail: collections.deque[str] = collections.deque(maxlen=log_lines)
        self.percent = 0.0
        self.message: str | None = None

    @property
    def workdir(self) -> Path:
        """The job's scratch folder, made on first use (most jobs of a batch never need
        one, and a folder per job is a cost at hundreds of jobs a second)."""
        self._workdir.mkdir(parents=True, exist_ok=True)
        self.workdir_made = True
        return self._workdir

    def scratch(self, name: str) -> Path:
        """A file in the scratch folder for ``name`` (often an item's name, which comes
        from a key): made safe, so ``..`` or a NUL never lands outside the folder."""
        return join_under(self.workdir, safe_segment(name))

    @property
    def log_tail(self) -> str:
        with self._lock:
            return "\n".join(self._tail)

    def log(self, line: str) -> None:
        with self._lock:
            self._tail.append(line.rstrip())

    def progress(self, percent: float, message: str | None = None, *, force: bool = False) -> None:
        self.percent = max(0.0, min(100.0, percent))
        if message is not None:
            self.message = message
        now = time.monotonic()
        if force or now - self._last >= self._interval:
            self._last = now
            self._report(self.percent, self.message, self.log_tail)

    def remaining(self) -> float | None:
        """Seconds left before the job's timeout, or None without one."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        """Raise if the job was canceled or ran out of time; call between steps."""
        if self.cancel.is_set():
            raise ProcessingError("canceled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TransientProcessingError(f"timed out after {self.timeout:.0f} s")
