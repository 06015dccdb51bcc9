"""Child processes that cannot outlive the process that started them."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` for subprocess.Popen: the child gets SIGTERM when its parent dies, even
    if the parent is killed with SIGKILL and never runs its cleanup (Linux only; elsewhere
    a no-op, and the parent's own cleanup is the only guard)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def lower_priority(increment: int) -> None:
    """Make the calling process `increment` nice levels kinder to the others (POSIX)."""
    import os

    if increment > 0 and hasattr(os, "nice"):
        os.nice(increment)
