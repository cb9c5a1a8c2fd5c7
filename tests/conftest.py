"""Shared fixtures: a real PostgreSQL (embedded, or DATABASE_URL), a tiny Llama, a real gRPC server."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import asyncpg
import pytest

from tests.fixtures.tiny_model import build_tiny_llama

SAMPLES = Path(__file__).resolve().parent.parent / "scripts" / "samples"


FULL_STACK_FIXTURES = {"pg_admin_url", "seaweedfs", "make_pg_server", "pg_client", "own_postgres"}
FULL_STACK_DIRS = {"e2e", "cli", "clients"}  # subprocess servers, the CLI, grpcurl, node
MODEL_FIXTURES = {"tiny_model_dir"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "full_stack: needs PostgreSQL, SeaweedFS or a server in another process")
    config.addinivalue_line("markers", "model: loads a model (the tiny Llama) to train, measure or serve")


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
    yield server.start()
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


async def create_database(admin_url: str, prefix: str = "t") -> str:
    """A new, empty database on the server of ``admin_url``; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, query = admin_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


@pytest.fixture
async def database_url(pg_admin_url: str):
    """A fresh, empty database per test on the shared server."""
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
