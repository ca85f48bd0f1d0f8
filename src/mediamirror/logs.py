"""Log lines: to stderr and to a rotating file per process, redacted, with their context.

Every line carries the job id, the source and the HTTP request id in force where it was
written (:func:`context` sets them; the job runner, the sync and the web app do). The
format is ``text`` (one line per record, a traceback below it) or ``json`` (one JSON
object per line, tracebacks inside it).

Several processes (``serve``, workers, CLI commands) may log at once into one data
directory. A single shared file rotated by each of them would lose or interleave lines
(one process renames the file while another still appends to the old one), so each
process writes its own file, ``<name>-<command>-<host>-<pid>.log`` beside the configured
``log_file``, rotated on its own. Files of processes that have ended are pruned at start
beyond the newest :data:`KEEP_ENDED` of them. A file is created at the first line, so a
command that logs nothing leaves nothing behind.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import logging.handlers
import os
import re
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from mediamirror.config import Settings
from mediamirror.errors import ConfigError
from mediamirror.redact import RedactingFilter

#: Log files of ended processes kept (with their backups), newest first.
KEEP_ENDED = 20
FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
#: Libraries whose debug lines carry request headers and presigned URLs, hence access key
#: ids: credentials are never logged, so these stop at info.
QUIET_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3")
#: Loggers that mediamirror's handlers replace (uvicorn's own would bypass redaction).
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")

JOB_ID: contextvars.ContextVar[int | None] = contextvars.ContextVar("mm_job_id", default=None)
SOURCE: contextvars.ContextVar[str | None] = contextvars.ContextVar("mm_source", default=None)
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mm_request_id", default=None
)
_FIELDS = (
    ("job_id", "job", JOB_ID),
    ("source", "source", SOURCE),
    ("request_id", "request", REQUEST_ID),
)

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")
log = logging.getLogger(__name__)
job_log = logging.getLogger("mediamirror.jobs")


@contextmanager
def context(
    *, job_id: int | None = None, source: str | None = None, request_id: str | None = None
) -> Iterator[None]:
    """Tag every line logged in this block (in this thread or task) with these values."""
    given: tuple[tuple[contextvars.ContextVar[Any], Any], ...] = (
        (JOB_ID, job_id),
        (SOURCE, source),
        (REQUEST_ID, request_id),
    )
    tokens = [(var, var.set(value)) for var, value in given if value is not None]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def job_context(
    func: Callable[Concatenate[S, Any, P], R],
) -> Callable[Concatenate[S, Any, P], R]:
    """For ``run_claimed(services, job, ...)``: its lines carry the job id, and the job's
    start and end are logged (info), so a log file tells what each worker ran."""

    @functools.wraps(func)
    def wrapper(services: S, job: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with context(job_id=job.id):
            job_log.info(
                "job %s started: %s on %s %s", job.id, job.processor, job.target_type, job.target_id
            )
            outcome = func(services, job, *args, **kwargs)
            job_log.info("job %s ended: %s", job.id, getattr(outcome, "value", outcome))
            return outcome

    return wrapper


class ContextFilter(logging.Filter):
    """Copies the context of the thread that logs onto the record (before any handler
    formats it, possibly elsewhere)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for attr, _, var in _FIELDS:
            if not hasattr(record, attr):
                setattr(record, attr, var.get())
        return True


def _time(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger> [job=1 source=x request=y]: <message>``."""

    def format(self, record: logging.LogRecord) -> str:
        tags = " ".join(
            f"{label}={value}"
            for attr, label, _ in _FIELDS
            if (value := getattr(record, attr, None)) is not None
        )
        head = f"{_time(record)} {record.levelname} {record.name}" + (f" [{tags}]" if tags else "")
        text = f"{head}: {record.getMessage()}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + record.stack_info
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line; newlines of a message or traceback stay inside it."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for attr, _, _ in _FIELDS:
            value = getattr(record, attr, None)
            if value is not None:
                data[attr] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = record.stack_info
        return json.dumps(data, ensure_ascii=False, default=str)


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", part) or "_"


def base_path(settings: Settings) -> Path | None:
    """The configured log file (``None``: no file)."""
    if settings.log_file.strip().lower() == "off":
        return None
    if settings.log_file:
        return Path(settings.log_file).expanduser()
    return settings.home_path / "logs" / "mediamirror.log"


def process_path(base: Path, role: str, pid: int | None = None) -> Path:
    """This process's own file beside ``base``: ``<stem>-<role>-<host>-<pid><suffix>``."""
    pid = os.getpid() if pid is None else pid
    name = f"{base.stem}-{_safe(role)}-{_safe(socket.gethostname())}-{pid}{base.suffix}"
    return base.with_name(name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def prune(base: Path, keep: int = KEEP_ENDED) -> int:
    """Delete the files (and backups) of ended processes of this host beyond the newest
    ``keep``; files of other hosts sharing the directory are left to them."""
    host = re.escape(_safe(socket.gethostname()))
    pattern = re.compile(
        rf"(?P<file>{re.escape(base.stem)}-[A-Za-z0-9_.]+-{host}-(?P<pid>\d+)"
        rf"{re.escape(base.suffix)})(?:\.\d+)?"
    )
    ended: dict[str, list[Path]] = {}
    for path in base.parent.glob(f"{base.stem}-*"):
        match = pattern.fullmatch(path.name)
        if match and int(match["pid"]) != os.getpid() and not _alive(int(match["pid"])):
            ended.setdefault(match["file"], []).append(path)  # the file and its backups
    groups = sorted(ended.values(), key=lambda ps: max(_mtime(p) for p in ps), reverse=True)
    removed = 0
    for paths in groups[keep:]:
        for path in paths:
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass  # pruned by another process starting at the same time
    return removed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _check(settings: Settings) -> None:
    if settings.log_level.lower() not in LEVELS:
        raise ConfigError(f"log_level {settings.log_level!r} must be one of: {', '.join(LEVELS)}")
    if settings.log_format not in FORMATS:
        raise ConfigError(f"log_format {settings.log_format!r} must be one of: text, json")
    if settings.log_max_bytes < 1 or settings.log_backups < 0:
        raise ConfigError("log_max_bytes must be positive and log_backups not negative")


def _handler(handler: logging.Handler, settings: Settings) -> logging.Handler:
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    handler.set_name("mediamirror")
    return handler


def setup(settings: Settings, role: str) -> Path | None:
    """Log to stderr and to this process's rotating file; returns that file's path."""
    _check(settings)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "mediamirror"]:
        root.removeHandler(old)
        old.close()
    root.setLevel(settings.log_level.upper())
    root.addHandler(_handler(logging.StreamHandler(sys.stderr), settings))
    path = _file_handler(settings, role)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    # Warnings and uncaught errors (of any thread) print to stderr on their own, past
    # every handler: through the handlers instead, so they are redacted too.
    logging.captureWarnings(True)
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread
    for name in SERVER_LOGGERS:
        # Through mediamirror's handlers (and their redaction), never handlers of their own.
        server = logging.getLogger(name)
        server.handlers.clear()
        server.propagate = True
    return path


def _uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("mediamirror").critical("uncaught error", exc_info=(kind, exc, tb))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    info = (args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)
    logging.getLogger("mediamirror").error("thread %s ended with an error", name, exc_info=info)


def _file_handler(settings: Settings, role: str) -> Path | None:
    base = base_path(settings)
    if base is None:
        return None
    path = process_path(base, role)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        prune(base)
    except OSError as exc:
        log.warning("not logging to %s: %s", path.parent, exc)
        return None
    handler = logging.handlers.RotatingFileHandler(
        path,
        maxBytes=settings.log_max_bytes,
        backupCount=settings.log_backups,
        encoding="utf-8",
        delay=True,  # no file for a command that logs nothing
    )
    logging.getLogger().addHandler(_handler(handler, settings))
    return path


def server_loggers(access_log: bool) -> None:
    """uvicorn's access lines at info when asked for, whatever ``log_level`` says."""
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.INFO if access_log else logging.CRITICAL + 1)
