"""Fisher snapshots: diagonals as safetensors files, metadata rows in PostgreSQL.

Files live at ``<artifacts>/fisher/<base-model>/<adapter-version>/<snapshot-id>.safetensors`` and are
written atomically (temporary file, fsync, rename, fsync of the folder), never as pickles. A snapshot row
is inserted only after its file is durable; a reader verifies the file's sha256 before using it. The file
describes itself: its safetensors header holds the snapshot's metadata (:func:`header`), the row's fields
but the file's own digest and size, so a copied file still says what it measured.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import uuid
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import asyncpg
import torch
from pydantic import TypeAdapter
from safetensors.torch import load, save

from engine.continual.fisher import Diagonal
from engine.continual.spec import FisherSnapshot
from engine.errors import DataLoss, NotFound

_SNAPSHOT = TypeAdapter(FisherSnapshot)


def header(snapshot: FisherSnapshot) -> dict[str, str]:
    """The safetensors header metadata of a snapshot: its fields but the file's own path, digest and size;
    strings (times in ISO 8601) as they are, JSON for the rest."""
    values = _SNAPSHOT.dump_python(snapshot, mode="json", exclude={"path", "sha256", "size_bytes"})
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class FisherSnapshotStore:
    """Save, load, list and delete Fisher snapshots (engine.continual.ports.FisherSnapshots; see the module
    docstring)."""

    def __init__(self, pool: asyncpg.Pool, artifacts_dir: Path) -> None:
        self._pool = pool
        self._root = artifacts_dir / "fisher"

    def _path(self, base_model: str, adapter_version: str, snapshot_id: str) -> Path:
        return self._root / base_model / adapter_version / f"{snapshot_id}.safetensors"

    async def save(self, diagonal: Diagonal, draft: FisherSnapshot) -> FisherSnapshot:
        """Write the diagonal, then its row: ``draft`` with its id, path, digest and size filled in."""
        snapshot_id = uuid.uuid4().hex
        path = self._path(draft.base_model, draft.adapter_version, snapshot_id)
        tensors = {name: t.detach().to(torch.float32).contiguous().cpu() for name, t in diagonal.items()}
        data = await asyncio.to_thread(save, tensors, header(replace(draft, id=snapshot_id)))
        await asyncio.to_thread(_write_atomically, path, data)
        snapshot = replace(draft, id=snapshot_id, path=str(path), sha256=hashlib.sha256(data).hexdigest(),
                           size_bytes=len(data))
        try:
            async with self._pool.acquire() as conn:
                await conn.execute(
                    "INSERT INTO fisher_snapshots (id, base_model, adapter_version, create_time, doc)"
                    " VALUES ($1, $2, $3, $4, $5::jsonb)",
                    snapshot.id, snapshot.base_model, snapshot.adapter_version, snapshot.create_time,
                    _SNAPSHOT.dump_json(snapshot).decode(),
                )
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return snapshot

    async def get(self, snapshot_id: str) -> FisherSnapshot:
        async with self._pool.acquire() as conn:
            doc = await conn.fetchval("SELECT doc FROM fisher_snapshots WHERE id = $1", snapshot_id)
        if doc is None:
            name = f"fisherSnapshots/{snapshot_id}"
            raise NotFound("FISHER_SNAPSHOT_NOT_FOUND", f"Fisher snapshot {name} does not exist",
                           metadata={"name": name})
        return _SNAPSHOT.validate_json(doc)

    async def load(self, snapshot_id: str) -> tuple[FisherSnapshot, Diagonal]:
        """The snapshot and its diagonal, after checking the file against the recorded sha256."""
        snapshot = await self.get(snapshot_id)
        try:
            data = await asyncio.to_thread(Path(snapshot.path).read_bytes)
        except FileNotFoundError as exc:
            raise DataLoss("FISHER_FILE_MISSING", f"the file of {snapshot.name} is missing",
                           metadata={"name": snapshot.name}) from exc
        if hashlib.sha256(data).hexdigest() != snapshot.sha256:
            raise DataLoss("FISHER_CHECKSUM_MISMATCH", f"the file of {snapshot.name} does not match its sha256",
                           metadata={"name": snapshot.name})
        return snapshot, await asyncio.to_thread(load, data)

    async def list(
        self, *, base_model: str, adapter_version: str, limit: int, before: tuple[datetime, str] | None
    ) -> list[FisherSnapshot]:
        """Newest first; ``before`` is the (create_time, id) of the previous page's last snapshot."""
        clauses, args = [], []
        for column, value in (("base_model", base_model), ("adapter_version", adapter_version)):
            if value:
                args.append(value)
                clauses.append(f"{column} = ${len(args)}")
        if before is not None:
            args.extend(before)
            clauses.append(f"(create_time, id) < (${len(args) - 1}, ${len(args)})")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        args.append(limit)
        sql = f"SELECT doc FROM fisher_snapshots {where} ORDER BY create_time DESC, id DESC LIMIT ${len(args)}"
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(sql, *args)
        return [_SNAPSHOT.validate_json(r["doc"]) for r in rows]

    async def delete(self, snapshot_id: str) -> None:
        """Remove the row, then the file (a crash between leaves an orphan file, never a dangling row)."""
        snapshot = await self.get(snapshot_id)
        async with self._pool.acquire() as conn:
            await conn.execute("DELETE FROM fisher_snapshots WHERE id = $1", snapshot_id)
        await asyncio.to_thread(Path(snapshot.path).unlink, True)
