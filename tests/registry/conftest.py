"""Registry fixtures: a migrated database, both artifact stores, PEFT adapters built on the tiny Llama."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.registry import AdapterRegistry, ArtifactStore
from engine.stores import postgres
from engine.stores.adapter_index import PostgresAdapterIndex
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.artifacts_s3 import S3ArtifactStore
from engine.stores.serving_state import PostgresServingState
from tests.fixtures.peft_adapters import build_peft_adapter
from tests.fixtures.seaweedfs import ACCESS_KEY, SECRET_KEY

TINY = "tiny-llama"


@pytest.fixture
async def pool(database_url: str):
    pool = await postgres.connect(database_url, max_size=20)
    await postgres.migrate(pool)
    yield pool
    await pool.close()


def s3_store(endpoint: str, bucket: str) -> S3ArtifactStore:
    return S3ArtifactStore(endpoint=endpoint, bucket=bucket, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                           secure=False, connect_timeout=1.0, retries=1)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.full_stack)])
def store(request, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    seaweedfs = request.getfixturevalue("seaweedfs")
    return s3_store(seaweedfs.endpoint, request.getfixturevalue("s3_bucket"))


@pytest.fixture
def make_registry(pool, tiny_model_dir: Path, tmp_path: Path) -> Callable[..., AdapterRegistry]:
    def make(store: ArtifactStore, *, db_pool=None, retention_keep: int = 0, aliases=None) -> AdapterRegistry:
        """``aliases``: the online store, whose sessions' versions (their live aliases', a running one's start and
        latest) are protected from deletes as the server's are."""
        db = db_pool or pool
        return AdapterRegistry(
            index=PostgresAdapterIndex(db), store=store, serving=PostgresServingState(db, aliases),
            base_model_dir=lambda model_id: {TINY: tiny_model_dir}[model_id],
            scratch_dir=tmp_path / "scratch", retention_keep=retention_keep,
        )

    return make


@pytest.fixture
def registry(make_registry, store) -> AdapterRegistry:
    return make_registry(store)


@pytest.fixture(scope="session")
def make_peft(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """A PEFT LoRA directory on the tiny Llama with random (non-zero) weights, cached per arguments."""
    root = tmp_path_factory.mktemp("peft")
    made: dict[tuple, Path] = {}

    def make(seed: int = 0, rank: int = 4, targets: tuple[str, ...] = ("q_proj", "v_proj")) -> Path:
        key = (seed, rank, targets)
        if key not in made:
            out = root / f"s{seed}-r{rank}-{'-'.join(targets)}"
            made[key] = build_peft_adapter(tiny_model_dir, out, seed=seed, rank=rank, targets=targets)
        return made[key]

    return make
