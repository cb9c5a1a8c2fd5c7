"""Child processes that die with their parent: the embedded PostgreSQL's keeper and the reference backend.

A server killed with SIGKILL runs no clean-up of its own, so each helper process asks the kernel
(Linux ``prctl(PR_SET_PDEATHSIG)``) to be sent SIGTERM when the thread that started it ends, and
then stops what it owns on that signal as on any other. The request is made from the child
itself, after it started, so the parent needs no ``preexec_fn`` (which would run the server's
fork handlers in a process full of gRPC threads); the child then checks that its parent is still
the one that started it, since a parent that ended before the request would never signal.
The parent must start the child from a thread that lives as long as the server: the main thread.

``prctl`` has no binding in the standard library; it is one documented libc call, made with ctypes.
Elsewhere than Linux this is a no-op beyond the parent check.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int, sig: signal.Signals = signal.SIGTERM) -> None:
    """Have ``sig`` sent to this process when its parent ends; send it now if the parent already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)
