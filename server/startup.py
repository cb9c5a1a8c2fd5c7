"""What starting and stopping the server needs besides building its parts (``server/engine_wiring.py``).

- ``StartError``: a start that failed, said in one line (``describe``), e.g. "gateway port 8088 is in
  use; set gateway_port"; the composition root prints that line instead of a traceback, after
  stopping whatever it had started.
- ``DataDirLock``: one server per data directory. Everything below it (the embedded PostgreSQL, the
  scratch space, the local artifacts) belongs to the process holding the lock, so what an earlier,
  killed process left there can be cleaned up at start without asking who else uses it.
- ``sweep_scratch``: the scratch space (``<data-dir>/work``) is per run: job folders, registry and
  upload staging. Nothing in it outlives a run except the cache of verified, unpacked adapters that
  LoraControl loads (``serving-adapters``), whose half-written staging folders go too.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
from pathlib import Path

from engine.errors import EngineError

log = logging.getLogger(__name__)

KEPT_IN_WORK = "serving-adapters"


class StartError(Exception):
    """The server could not start; the message is the one line to show."""


def port_taken(what: str, host: str, port: int, setting: str, exc: OSError) -> StartError:
    if exc.errno == errno.EADDRINUSE:
        return StartError(f"{what} port {port} is in use; set {setting}")
    return StartError(f"{what} cannot listen on {host}:{port} ({exc.strerror or exc}); check host and {setting}")


def describe(exc: BaseException) -> str:
    """One line saying what failed."""
    if isinstance(exc, StartError):
        text = str(exc)
    elif isinstance(exc, EngineError):
        text = exc.message
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


class DataDirLock:
    """An exclusive lock on ``<data-dir>/.server.lock`` for the life of this server (released on any exit)."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / ".server.lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise StartError(
                f"data dir {data_dir} is in use by another Learning Engine server (pid {holder}); "
                "stop it or set data_dir") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the lock
            self._fd = -1


def sweep_scratch(work_dir: Path) -> list[str]:
    """Remove what an earlier run left in the scratch space (see the module docstring); returns what went."""
    removed: list[str] = []
    if not work_dir.is_dir():
        return removed
    for entry in work_dir.iterdir():
        if entry.name == KEPT_IN_WORK and entry.is_dir():
            for staging in entry.glob("*/.*"):  # RegistryAdapters' staging folders: ".<version>-<sha>.<uuid>"
                shutil.rmtree(staging, ignore_errors=True)
                removed.append(str(staging.relative_to(work_dir)))
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name)
    if removed:
        log.info("removed scratch left by an earlier run", extra={"removed": removed[:50]})
    return removed
