"""Adapter registry: semantic versions per base model over immutable artifact directories.

Versions: the first adapter of a base model is v1.0; a continuation of a parent
with the same LoRA shape gets the next minor of the parent's major line; a fresh
adapter, a changed shape or an explicit request gets the next major. The version
row is inserted only after the artifacts are durably in place, and PostgreSQL's
primary key decides races.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from pydantic import TypeAdapter

from engine.domain import DatasetSummary, LoraSpec
from engine.errors import FailedPrecondition, InvalidArgument, NotFound

VERSION_RE = re.compile(r"^v(?P<major>[1-9][0-9]{0,5})\.(?P<minor>0|[1-9][0-9]{0,5})$")


def parse_version(version: str, field_path: str = "version") -> tuple[int, int]:
    match = VERSION_RE.match(version)
    if not match:
        raise InvalidArgument(
            "MALFORMED_VERSION",
            f"{field_path} {version!r} is not a version like v1.0 or v2.3",
            violations=[_violation(field_path, "must look like vMAJOR.MINOR, e.g. v1.2")],
        )
    return int(match["major"]), int(match["minor"])


def _violation(field_path: str, description: str):
    from engine.errors import FieldViolation  # noqa: PLC0415

    return FieldViolation(field_path, description)


@dataclass(frozen=True)
class AdapterRecord:
    base_model: str
    version: str
    lora: LoraSpec
    path: str
    create_time: datetime
    parent_version: str = ""
    training_job: str = ""
    dataset: DatasetSummary | None = None
    train_loss: float = 0.0
    labels: tuple[tuple[str, str], ...] = ()
    extra: dict[str, str] = field(default_factory=dict)


_RECORD = TypeAdapter(AdapterRecord)


class AdapterRegistry:
    """Versions in PostgreSQL, artifacts under ``root/adapters/<base-model>/<version>/``."""

    def __init__(self, pool: asyncpg.Pool, root: Path) -> None:
        self._pool = pool
        self._root = root

    def _dir(self, base_model: str, version: str) -> Path:
        return self._root / "adapters" / base_model / version

    async def get(self, base_model: str, version: str, *, field_path: str = "version") -> AdapterRecord:
        major, minor = parse_version(version, field_path)
        async with self._pool.acquire() as conn:
            doc = await conn.fetchval(
                "SELECT doc FROM adapters WHERE base_model = $1 AND major = $2 AND minor = $3",
                base_model,
                major,
                minor,
            )
        if doc is None:
            raise NotFound(
                "ADAPTER_NOT_FOUND",
                f"adapter {version} of base model {base_model} does not exist",
                metadata={"base_model": base_model, "version": version},
            )
        return _RECORD.validate_json(doc)

    async def _next_version(self, conn, base_model: str, parent: AdapterRecord | None, lora: LoraSpec,
                            major_bump: bool) -> tuple[int, int]:
        top_major = await conn.fetchval("SELECT max(major) FROM adapters WHERE base_model = $1", base_model)
        if top_major is None:
            return 1, 0
        if parent is None or major_bump or parent.lora != lora:
            return top_major + 1, 0
        p_major, _ = parse_version(parent.version)
        top_minor = await conn.fetchval(
            "SELECT max(minor) FROM adapters WHERE base_model = $1 AND major = $2", base_model, p_major
        )
        return p_major, top_minor + 1

    async def publish(
        self,
        *,
        base_model: str,
        adapter_dir: Path,
        lora: LoraSpec,
        parent: AdapterRecord | None,
        major_bump: bool = False,
        training_job: str = "",
        dataset: DatasetSummary | None = None,
        train_loss: float = 0.0,
        labels: tuple[tuple[str, str], ...] = (),
    ) -> AdapterRecord:
        """Store the artifacts durably, then register the next free version for them."""
        staging = self._root / "adapters" / base_model / f".staging-{uuid.uuid4().hex}"
        await asyncio.to_thread(_copy_durably, adapter_dir, staging)
        try:
            for _attempt in range(20):
                async with self._pool.acquire() as conn, conn.transaction():
                    major, minor = await self._next_version(conn, base_model, parent, lora, major_bump)
                    version = f"v{major}.{minor}"
                    final = self._dir(base_model, version)
                    record = AdapterRecord(
                        base_model=base_model, version=version, lora=lora, path=str(final),
                        create_time=datetime.now(UTC), parent_version=parent.version if parent else "",
                        training_job=training_job, dataset=dataset, train_loss=train_loss, labels=labels,
                    )
                    try:
                        await conn.execute(
                            "INSERT INTO adapters (base_model, major, minor, doc) VALUES ($1, $2, $3, $4::jsonb)",
                            base_model, major, minor, _RECORD.dump_json(record).decode(),
                        )
                    except asyncpg.UniqueViolationError:
                        continue  # another publisher took it; recompute
                    if final.exists():
                        raise FailedPrecondition(
                            "ARTIFACT_EXISTS", f"artifacts for {version} already exist; refusing to overwrite"
                        )
                    staging.rename(final)  # same filesystem: atomic; commit follows
                    return record
            raise FailedPrecondition("VERSION_CONTENTION", "could not assign a version after 20 attempts")
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def local_dir(self, record: AdapterRecord) -> Path:
        return Path(record.path)


def _copy_durably(src: Path, dst: Path) -> None:
    import os  # noqa: PLC0415

    shutil.copytree(src, dst)
    for path in dst.iterdir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
