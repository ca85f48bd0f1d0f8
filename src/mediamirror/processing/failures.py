"""Which failures of a processing step are worth a retry, and how to say so in one line.

A job's fate depends on the class of its error (see jobs/runner.py): a
``TransientProcessingError`` is retried with backoff, a ``ProcessingError`` ends the job.
A store that resets a connection or answers 503 while ffmpeg reads a presigned URL says
nothing about the media, so it must not end the job as if the file were bad. A full
scratch disk is not the media's fault either, but retrying rarely helps: it ends the job
with a reason an operator can act on. A scratch folder removed under a job (a tmp
cleaner) is retried in a new folder. See :func:`scratch_failure`.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Sequence
from pathlib import Path

from mediamirror.errors import ProcessingError, TransientProcessingError

# What ffmpeg prints when the network, not the media, failed while reading a URL.
_NETWORK = re.compile(
    r"Connection (reset|refused|timed out)|Server returned 5(\d\d|XX)|Network is unreachable"
    r"|Operation timed out|Input/output error|Broken pipe|Stream ends prematurely",
    re.IGNORECASE,
)
# What a tool prints when its output could not be written.
_DISK_FULL = re.compile(r"No space left on device|File too large|Disk quota exceeded", re.I)
_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def ffmpeg_failure(cmd: Sequence[str], returncode: int, reason: str) -> ProcessingError:
    """The error for an ffmpeg run that exited with ``returncode`` saying ``reason``."""
    message = f"ffmpeg failed (exit {returncode}): {reason}"
    reads_url = any(arg.startswith(("http://", "https://")) for arg in cmd)
    if reads_url and _NETWORK.search(reason):
        return TransientProcessingError(message)
    if _DISK_FULL.search(reason):
        return ProcessingError(f"no space left on the scratch disk: {message}")
    return ProcessingError(message)


def scratch_failure(exc: BaseException, workdir: Path) -> ProcessingError | None:
    """A one-line error for a full disk or a removed scratch folder behind ``exc``, else None.

    ``workdir`` is the job's scratch folder. The whole chain of ``exc`` is looked at
    (``raise ... from``), so an ``OSError`` wrapped by a library still counts:

    * ENOSPC, EDQUOT or EFBIG (past a file size limit): the disk is full. This ends the
      job (a ``ProcessingError``): what fills a scratch disk is usually the job's own
      output, so the next attempt fills it again, and retrying with backoff would only
      hold a worker; an operator frees space or moves ``home``, then retries the job.
    * ENOENT on a path in ``workdir`` while ``workdir`` is gone: a tmp cleaner removed it
      under the job. That is retried (a ``TransientProcessingError``): the next attempt
      makes a new folder; a cleaner that keeps removing it ends the job after
      ``job_max_attempts`` attempts, with this reason.
    * a tool's own error (libvips, ffmpeg) saying the disk is full, not yet said so.
    """
    if _text(exc).startswith(_FULL):
        return None  # said already (ffmpeg_failure)
    for err in _chain(exc):
        if isinstance(err, OSError):
            found = _os_failure(err, workdir)
            if found is not None:
                return found
        elif _DISK_FULL.search(_text(err)):
            # libvips tells it in the detail of its error, not in the line users see.
            return ProcessingError(f"{_FULL} ({workdir.parent}): {_text(exc)}")
    return None


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` says a disk is full: the disk's fault, not the input's."""
    return any(
        (isinstance(e, OSError) and e.errno in _DISK_ERRNOS) or bool(_DISK_FULL.search(_text(e)))
        for e in _chain(exc)
    )


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a tool's exception that cannot render itself
        return ""


_FULL = "no space left on the scratch disk"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and not any(current is s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _os_failure(err: OSError, workdir: Path) -> ProcessingError | None:
    # The file being written: a copy names its source first and its destination second.
    raw = err.filename2 or err.filename
    target = Path(os.fsdecode(raw)) if raw else None
    if err.errno in _DISK_ERRNOS:
        if target is not None and not target.is_relative_to(workdir.parent):
            # A copy into a local output store, say: name the disk that is full.
            return ProcessingError(f"no space left on the disk of {target.parent}")
        return ProcessingError(f"{_FULL} ({workdir.parent})")
    # Only a path inside the folder tells it was removed (a job that never needed a
    # scratch folder has none, and a missing tool or input is another story).
    inside = target is not None and target.is_relative_to(workdir)
    if err.errno == errno.ENOENT and inside and not workdir.exists():
        return TransientProcessingError(
            f"the scratch folder {workdir} was removed while the job ran"
        )
    return None
