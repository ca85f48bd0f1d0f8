"""Ctrl-C and SIGTERM as a request to stop, honoured at safe points.

Python's default Ctrl-C raises ``KeyboardInterrupt`` at whatever bytecode runs when the
signal arrives: inside a database transaction, between a lock's acquire and its ``try``,
inside a thread join. Cleanup that then needs that lock or transaction (recording the
sync run as interrupted, releasing a lease) can wait forever. So long-running commands
install :func:`handled`: the signal handler only records the request in :data:`STOP`
(an attribute and a byte written to a pipe, both safe in a handler), and the sync
engine, the worker and the other long loops call :func:`check` (or watch ``STOP``) where
stopping is safe: between pages, between jobs, never inside a transaction. A second
signal means "now": one line on stderr and ``os._exit`` without any cleanup.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised at a safe point after a stop was requested. A ``KeyboardInterrupt``, so every
    layer that already treats Ctrl-C as "interrupted" (run records, hand-backs, the CLI's
    exit code) treats it the same way."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopFlag:
    """Set once a stop was requested; never cleared. Quacks like ``threading.Event`` for
    ``is_set``, ``set`` and ``wait``, but ``set`` is safe inside a signal handler, where an
    Event's internal lock may already be held by the very thread the handler interrupted."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._pipe: tuple[int, int] | None = None
        self._pipe_lock = threading.Lock()

    def _fds(self) -> tuple[int, int]:
        # Created before the handlers are installed (see `handled`), never in a handler.
        with self._pipe_lock:
            if self._pipe is None:
                read, write = os.pipe()
                os.set_blocking(read, False)
                os.set_blocking(write, False)
                self._pipe = (read, write)
            return self._pipe

    def set(self, signum: int = signal.SIGINT) -> None:
        if self.signum is None:
            self.signum = signum
        # The byte stays in the pipe: every waiter, in every thread, wakes up for good.
        # No lock here (a handler may interrupt its holder): `handled` made the pipe.
        pipe = self._pipe if self._pipe is not None else self._fds()
        with contextlib.suppress(OSError):  # full: readable already
            os.write(pipe[1], b"!")

    def is_set(self) -> bool:
        return self.signum is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set or ``timeout`` seconds passed; True when set."""
        if self.signum is None:
            select.select([self._fds()[0]], [], [], timeout)
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """The shell convention: 128 + the signal number (130 for Ctrl-C)."""
        return 128 + (self.signum or signal.SIGINT)


#: The process-wide stop request (signals are process-wide too).
STOP = StopFlag()
_installed = False


def check(flag: StopFlag | None = None) -> None:
    """Raise :class:`Interrupted` when a stop was requested. Call only where stopping is
    safe: no transaction open, no lock held."""
    flag = STOP if flag is None else flag
    if flag.signum is not None:
        raise Interrupted(flag.signum)


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if STOP.signum is not None:
        # The second signal: the user does not want to wait for the cleanup.
        os.write(2, b"\nerror: interrupted again: exiting at once\n")
        os._exit(128 + signum)
    STOP.set(signum)


@contextmanager
def handled() -> Iterator[StopFlag]:
    """Turn SIGINT and SIGTERM into stop requests from now on (main thread only).

    The handlers stay once installed: this runs in command-line processes, which end
    soon after the block, and a Ctrl-C in that last moment (printing the summary,
    interpreter shutdown) must not turn a finished command into a traceback.
    """
    global _installed
    if not _installed and threading.current_thread() is threading.main_thread():
        STOP._fds()
        for sig in _SIGNALS:
            signal.signal(sig, _on_signal)
        _installed = True
    check()  # a stop requested earlier in this process (e.g. demo's sync, then its worker)
    yield STOP


def interruptible(func: Callable[P, R]) -> Callable[P, R]:
    """Run a (long-running) command under :func:`handled`."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with handled():
            return func(*args, **kwargs)

    return wrapper
