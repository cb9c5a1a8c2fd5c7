"""Shared fixtures: a real PostgreSQL (embedded, or DATABASE_URL), a tiny Llama, a real gRPC server."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.fixtures import own_postgres as own_postgres_control
from tests.fixtures.tiny_model import build_tiny_llama

SAMPLES = Path(__file__).resolve().parent.parent / "scripts" / "samples"


FULL_STACK_FIXTURES = {"pg_admin_url", "seaweedfs", "make_pg_server", "pg_client", "own_postgres"}
FULL_STACK_DIRS = {"e2e", "cli", "clients"}  # subprocess servers, the CLI, grpcurl, node
MODEL_FIXTURES = {"tiny_model_dir"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "full_stack: needs PostgreSQL, SeaweedFS or a server in another process")
    config.addinivalue_line("markers", "model: loads a model (the tiny Llama) to train, measure or serve")
    config.addinivalue_line("markers", "slow: 3 s or more on 2 cores; `make test` leaves it to `make test-slow`")
    config.addinivalue_line("markers", "tour: a slow end-to-end tour `make test` keeps (the README's own commands)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tiers. ``make test-fast`` runs neither ``full_stack`` nor ``model`` tests: the job core, the
    contracts, validation, scrubbing, settings. Then the ``model`` tier (engine math on the tiny Llama and the
    servicers over the engine on in-memory stores), then the full stack."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & FULL_STACK_FIXTURES or FULL_STACK_DIRS & set(Path(str(item.fspath)).parts):
            item.add_marker(pytest.mark.full_stack)
        elif fixtures & MODEL_FIXTURES:
            item.add_marker(pytest.mark.model)


SLOW_SECONDS = 3.0  # a test's call that takes as long belongs in the slow tier (`make test-slow`)
_UNMARKED_SLOW: list[tuple[str, float]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Note a test call of ``SLOW_SECONDS`` or more that has no ``slow`` marker (nor ``tour``: kept in the fast run on
    purpose), in the main process under xdist, which gets every worker's reports."""
    if report.when == "call" and report.duration >= SLOW_SECONDS and not {"slow", "tour"} & set(report.keywords):
        _UNMARKED_SLOW.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """List the unmarked slow tests, so the tiers stay what the README says (a busy machine lists more)."""
    if _UNMARKED_SLOW:
        terminalreporter.write_sep("-", f"{len(_UNMARKED_SLOW)} test calls of {SLOW_SECONDS:g} s or more without "
                                        "the slow marker (tests/conftest.py)")
        for nodeid, seconds in sorted(_UNMARKED_SLOW, key=lambda item: -item[1]):
            terminalreporter.write_line(f"{seconds:6.1f} s  {nodeid}")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests on shared 2-core machines are faster and steadier with one torch thread: when
    another process takes a core, torch's default two threads slow down many times over."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory):
    """A PostgreSQL server for the whole run: $TEST_DATABASE_URL if set, else an embedded one."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    from engine.stores.postgres import EmbeddedPostgres

    # The embedded server runs as its own OS user when we are root, so its folder must be reachable.
    root = Path(tempfile.mkdtemp(prefix="le-test-pg-"))
    root.chmod(0o755)
    server = EmbeddedPostgres(root / "data")
    url = server.start()
    with ThreadPoolExecutor(1) as thread:  # a loop of its own, away from the tests' loop
        thread.submit(asyncio.run, _throwaway_durability(url)).result()
    yield url
    server.stop()
    _discard(root)


def _discard(folder: Path) -> None:
    """Remove ``folder`` in a process of its own, not waited for. The embedded server's folder holds a copy of the
    migrated template for every test of the worker (about 200 databases, 90,000 files, by the end of a run), and
    deleting it inline took 5 to 20 s (once 51) of the last test's teardown."""
    subprocess.Popen(["rm", "-rf", "--", str(folder)], start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _throwaway_durability(admin_url: str) -> None:
    """The embedded test server's data is deleted at the end of the run and no test crashes this server (tests of
    an outage take a server of their own, ``own_postgres``): it need not wait for the disk. Without fsync, commits
    and checkpoints (the one at its stop too) stop waiting on a disk other test runs share."""
    conn = await asyncpg.connect(admin_url)
    try:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            await conn.execute(f"ALTER SYSTEM SET {setting} = off")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def create_database(admin_url: str, prefix: str = "t", *, template: str | None = None) -> str:
    """A new database on the server of ``admin_url``, empty or a copy of ``template``; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        if template is None:
            await conn.execute(f'CREATE DATABASE "{name}"')
        else:  # a file copy: 20-60 ms where applying the migrations took 250-400 ms
            try:
                await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
            except asyncpg.PostgresSyntaxError:  # a $TEST_DATABASE_URL server before PostgreSQL 15: its only way
                await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    base, _, query = admin_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


_MIGRATED: dict[str, str] = {}  # admin URL -> a database the migrations were applied to, copied for servers


async def _migrated_template(admin_url: str) -> str:
    """A database holding this checkout's migrations, made once per server (per test process)."""
    if admin_url not in _MIGRATED:
        from engine.stores import postgres

        url = await create_database(admin_url, "migrated")
        pool = await postgres.connect(url, min_size=1, max_size=1)
        try:
            await postgres.migrate(pool)
        finally:
            await pool.close()
        name = url.partition("?")[0].rsplit("/", 1)[1]
        conn = await asyncpg.connect(admin_url)
        try:  # no connection to it (autovacuum's neither) may hold up a copy
            await conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        finally:
            await conn.close()
        _MIGRATED[admin_url] = name
    return _MIGRATED[admin_url]


# Fixtures that start servers over ``database_url`` (tests/server/conftest.py), whose start applies the migrations:
# they get a database the migrations were applied to already, from a template. The server's start still runs
# them (finding each applied). Every other test gets an empty database: the migrations' own tests among them.
MIGRATED_FOR = {"make_pg_server"}


@pytest.fixture
async def database_url(request: pytest.FixtureRequest, pg_admin_url: str):
    """A fresh database per test on the shared server: empty, or already migrated for a test's servers."""
    if MIGRATED_FOR & set(request.fixturenames):
        return await create_database(pg_admin_url, template=await _migrated_template(pg_admin_url))
    return await create_database(pg_admin_url)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A server data directory whose datasets/ holds the bundled samples."""
    root = tmp_path / "data"
    (root / "datasets").mkdir(parents=True)
    for sample in SAMPLES.glob("*.jsonl"):
        shutil.copy(sample, root / "datasets" / sample.name)
    return root


@pytest.fixture(scope="session")
def seaweedfs():
    """A real S3 server (SeaweedFS `weed mini`) for the whole run, on free ports; SIGKILLed at the end."""
    from tests.fixtures.seaweedfs import SeaweedFS

    root = Path(tempfile.mkdtemp(prefix="le-test-s3-"))
    server = SeaweedFS(root).start()
    yield server
    server.kill()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def s3_bucket(seaweedfs) -> str:
    """A bucket name of its own for each test (created on first use by the code under test)."""
    return f"le-test-{uuid.uuid4().hex[:16]}"


@pytest.fixture
async def own_postgres():
    """A PostgreSQL server this test may stop and start: (pgdata, url)."""
    root = Path(tempfile.mkdtemp(prefix="le-restart-pg-"))
    root.chmod(0o755)
    pgdata = root / "data"
    url = await own_postgres_control.start_postgres(pgdata)
    yield pgdata, url
    if (pgdata / "postmaster.pid").exists():
        await own_postgres_control.stop_postgres(pgdata)
    shutil.rmtree(root, ignore_errors=True)
