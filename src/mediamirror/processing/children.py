"""Child processes (ffmpeg, command processors) that cannot outlive their worker.

A worker killed with SIGKILL cannot stop its children; on Linux the kernel can, when each
child asks for a signal at its parent's death (``PR_SET_PDEATHSIG``) right after fork.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _linux_prctl() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # Resolved here, before any fork, so the child only makes one system call.
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    sig = int(signal.SIGKILL)

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return die_with_parent


#: ``preexec_fn`` for subprocess.Popen: the child gets SIGKILL when its parent dies.
die_with_parent = _linux_prctl()
