"""The embedded PostgreSQL outlives a Ctrl-C to the server's process group until the server stops it: the keeper
(engine.stores.postgres_keeper) runs in a session of its own and does not stop on SIGINT, so the server's graceful
shutdown still has its database; it stops PostgreSQL when the server asks (EmbeddedPostgres.stop) or when the
server is gone (SIGKILL included), leaving no PostgreSQL behind.

The owner here is a small process that starts the database the way the server does (EmbeddedPostgres.start from
its main thread), as the leader of its own process group, like a server started from a terminal."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

OWNER = """
import signal, sys
from pathlib import Path
from engine.stores.postgres import EmbeddedPostgres
signal.signal(signal.SIGINT, lambda *_: print("interrupted", flush=True))  # the server's graceful shutdown starts
database = EmbeddedPostgres(Path(sys.argv[1]))
print(database.start(), database.keeper_pid, flush=True)
sys.stdin.readline()  # the owner's shutdown is done: now it stops the database
database.stop()
print("stopped", flush=True)
"""

ROOT = Path(__file__).resolve().parents[2]


def start_owner(pgdata: Path) -> tuple[subprocess.Popen[str], str, int]:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(pgdata)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)
    assert owner.stdout is not None
    url, keeper = owner.stdout.readline().split()
    return owner, url, int(keeper)


def answers(url: str) -> bool:
    async def ask() -> bool:
        try:
            connection = await asyncpg.connect(url, timeout=5)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        try:
            return await connection.fetchval("SELECT 1") == 1
        finally:
            await connection.close()

    return asyncio.run(ask())


def postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split()[0])


def gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_ctrl_c_to_the_group_leaves_postgres_to_the_owner(tmp_path: Path) -> None:
    pgdata = tmp_path / "pg"
    owner, url, keeper = start_owner(pgdata)
    try:
        postmaster = postmaster_pid(pgdata)
        os.killpg(owner.pid, signal.SIGINT)  # Ctrl-C: the terminal's foreground group
        assert owner.stdout is not None and owner.stdout.readline().strip() == "interrupted"
        os.kill(keeper, signal.SIGINT)  # as a member of that group would get it
        time.sleep(2)  # the old keeper ran pg_ctl stop at once
        assert answers(url) and not gone(keeper, 0) and not gone(postmaster, 0)
        assert owner.stdin is not None
        owner.stdin.write("\n")
        owner.stdin.flush()
        assert owner.stdout.readline().strip() == "stopped" and owner.wait(60) == 0
        assert gone(keeper, 10) and gone(postmaster, 30) and not answers(url)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_a_killed_owner_leaves_no_postgres(tmp_path: Path) -> None:
    pgdata = tmp_path / "pg"
    owner, url, keeper = start_owner(pgdata)
    postmaster = postmaster_pid(pgdata)
    assert answers(url)
    owner.kill()
    owner.wait()
    assert gone(keeper, 30) and gone(postmaster, 30) and not answers(url)
