"""Child processes (ffmpeg, command processors) that cannot outlive their job or worker.

A command is more than one process: a shell script's own children, a Python tool's
workers. Stopping only the direct child leaves those running, and the kernel's
parent-death signal (``PR_SET_PDEATHSIG``) only reaches the direct child, fires when the
*thread* that forked exits (a pool thread, not the process), and is lost if the parent
died before the child asked for it. So every child is started by :func:`spawn` under a
tiny supervisor (this module run with ``python -m``):

- the supervisor leads its own session and process group, which the command and all its
  descendants inherit: :func:`stop_group` stops them all (SIGTERM to the group, SIGKILL
  after a grace period, and a final SIGKILL for any straggler);
- its stdin is a *lifeline*: a pipe whose only write end stays in the worker process.
  When the worker process ends, however it ends (SIGKILL included), the kernel closes
  that end, the supervisor reads end-of-file and stops the whole group. This holds for the
  process, not the thread that spawned, and an already-dead worker means an immediate
  end-of-file, so there is no window between start and set-up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import weakref
from typing import Any

#: How long a stopped group may take to exit on SIGTERM before it is killed.
GRACE_SECONDS = 5.0


def spawn(argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """Start ``argv`` under a supervisor in a new process group (stdin: /dev/null).

    Raises OSError (as ``Popen`` would) when the program cannot be found or run.
    """
    _check_runnable(argv[0], popen_kwargs.get("cwd"))
    read, write = os.pipe()  # both ends close-on-exec: no other child inherits them
    try:
        proc: subprocess.Popen[Any] = subprocess.Popen(
            [sys.executable, "-m", __name__, *argv],
            stdin=read,
            start_new_session=True,
            **popen_kwargs,
        )
    except BaseException:
        os.close(write)
        raise
    finally:
        os.close(read)
    # The lifeline lives exactly as long as this Popen object (or this process).
    weakref.finalize(proc, os.close, write)
    return proc


def _check_runnable(program: str, cwd: Any) -> None:
    """The error ``Popen`` would raise for a program that cannot run: the supervisor
    itself always starts, so without this the caller would only see an exit status."""
    if os.sep in program:
        found: str | None = os.path.join(cwd, program) if cwd is not None else program
    else:
        found = shutil.which(program)
    if found is None or not os.path.exists(found):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    if not os.access(found, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)


def signal_group(proc: subprocess.Popen[Any], sig: int) -> None:
    """Send ``sig`` to every process of the child's group (gone ones are fine)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_group(proc: subprocess.Popen[Any], grace: float = GRACE_SECONDS) -> None:
    """Stop the child and all its descendants: SIGTERM, then SIGKILL after ``grace``."""
    signal_group(proc, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    sweep_group(proc)
    proc.wait()


def sweep_group(proc: subprocess.Popen[Any]) -> None:
    """Kill whatever is left of the child's group (e.g. a background process a script
    started and never waited for): a job's processes end with the job."""
    signal_group(proc, signal.SIGKILL)


# -- the supervisor (runs in the child) ------------------------------------------------


def _supervise(argv: list[str]) -> int:
    # SIGTERM to the group is meant for the command; the supervisor waits for it to end
    # and reports its exit status. (A Python handler, not SIG_IGN: handlers are reset by
    # exec, so the command gets the default behaviour.)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    except OSError as exc:
        print(f"cannot start {argv[0]!r}: {exc.strerror}", file=sys.stderr, flush=True)
        return 127
    threading.Thread(target=_watch_lifeline, args=(child,), daemon=True).start()
    code = child.wait()
    return code if code >= 0 else 128 - code


def _watch_lifeline(child: subprocess.Popen[Any]) -> None:
    """End-of-file on stdin: the worker process is gone. Stop the whole group."""
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(0, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(GRACE_SECONDS)
    os.killpg(0, signal.SIGKILL)  # the supervisor included


if __name__ == "__main__":
    sys.exit(_supervise(sys.argv[1:]))
