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


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a live process has used so far, seconds; None if it is
    gone or the platform has no /proc."""
    import os

    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields after the command name: state is [0], utime [11], stime [12] (proc(5))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
