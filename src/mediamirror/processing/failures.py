"""Which failures of a processing step are worth a retry, and how to say so in one line.

A job's fate depends on the class of its error (see jobs/runner.py): a
``TransientProcessingError`` is retried with backoff, a ``ProcessingError`` ends the job.
A store that resets a connection or answers 503 while ffmpeg reads a presigned URL says
nothing about the media, so it must not end the job as if the file were bad. A full or
vanished scratch disk is not the media's fault either, but retrying at once rarely helps:
it ends the job with a reason an operator can act on.
"""

from __future__ import annotations

import errno
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


def scratch_failure(exc: OSError, workdir: Path) -> ProcessingError | None:
    """A one-line error for a scratch disk that is full or was removed, else None.

    ``workdir`` is the job's scratch folder: a tmp cleaner may delete it under a running
    job, and a full disk shows up as ENOSPC (or EFBIG past a file size limit).
    """
    if exc.errno in _DISK_ERRNOS:
        return ProcessingError(f"no space left on the scratch disk ({workdir.parent})")
    if exc.errno == errno.ENOENT and not workdir.exists():
        return ProcessingError(f"the scratch folder {workdir} was removed while the job ran")
    return None
