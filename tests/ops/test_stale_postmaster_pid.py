"""The embedded PostgreSQL's data directory after a crash that left ``postmaster.pid`` behind (a container or machine
killed as a whole, PostgreSQL killed with SIGKILL), whose PID now belongs to another, live process (PIDs are reused;
in a restarted container the same low PIDs come back). The next start starts PostgreSQL, and never signals that
unrelated process."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from engine.stores.postgres import EmbeddedPostgres
from tests.ops.test_postgres_keeper_signals import answers


def test_start_after_a_crash_whose_postmaster_pid_was_reused() -> None:
    root = Path(tempfile.mkdtemp(prefix="le-stale-pid-pg-"))
    root.chmod(0o755)  # the embedded server runs as its own OS user when we are root
    pgdata = root / "data"
    unrelated = subprocess.Popen(["sleep", "600"])
    threading.Thread(target=unrelated.wait, daemon=True).start()  # reaped at once if it is killed
    try:
        first = EmbeddedPostgres(pgdata)
        first.start()
        stale = (pgdata / "postmaster.pid").read_text().splitlines()
        socket_lock = Path(stale[4]) / f".s.PGSQL.{stale[3]}.lock"
        stale_socket_lock = socket_lock.read_text().splitlines()
        first.stop()
        assert not (pgdata / "postmaster.pid").exists()
        # the crash: the lock files stay, and their PID is now another program's
        for path, lines in ((pgdata / "postmaster.pid", stale), (socket_lock, stale_socket_lock)):
            lines[0] = str(unrelated.pid)
            path.write_text("\n".join(lines) + "\n")

        second = EmbeddedPostgres(pgdata, start_timeout_seconds=60)
        try:
            url = second.start()
            started = answers(url)
        finally:
            second.stop()
        alive = unrelated.poll() is None
        assert (started, alive) == (True, True), (
            f"PostgreSQL answered after the start: {started}; the unrelated process alive after the stop: {alive} "
            f"(exit {unrelated.returncode})")
    finally:
        if unrelated.poll() is None:
            unrelated.kill()
        shutil.rmtree(root, ignore_errors=True)
