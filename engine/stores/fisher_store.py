"""Fisher snapshots: diagonals as safetensors objects in the artifact store, metadata rows in PostgreSQL.

Objects live at ``fisher/<base-model>/<adapter-version>/<snapshot-id>.safetensors`` in the artifact store (the
local directory or S3, as the adapters), so a worker on another machine finds them; the store's writes are
create-only and atomic, never pickles. A snapshot row is inserted only after its object is durable; a reader
verifies the bytes' sha256 before using them. The object describes itself: its safetensors header holds the
snapshot's metadata (:func:`header`), the row's fields but the object's own digest and size, so a copied file
still says what it measured. Snapshots stored before they moved to the artifact store keep their local file
path (``path`` starting with ``/``) and are read from there. The rows' connections come through
engine.stores.postgres.acquired: PostgreSQL out of reach is UNAVAILABLE DATABASE_UNAVAILABLE (the artifact store's
errors are its own).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
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
from engine.jobs.codec import dump_json
from engine.registry.ports import ArtifactStore
from engine.stores.postgres import acquired

_SNAPSHOT = TypeAdapter(FisherSnapshot)


def header(snapshot: FisherSnapshot) -> dict[str, str]:
    """The safetensors header metadata of a snapshot: its fields but the file's own path, digest and size;
    strings (times in ISO 8601) as they are, JSON for the rest."""
    values = _SNAPSHOT.dump_python(snapshot, mode="json", exclude={"path", "sha256", "size_bytes"})
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


class FisherSnapshotStore:
    """Save, load, list and delete Fisher snapshots (engine.continual.ports.FisherSnapshots; see the module
    docstring)."""

    def __init__(self, pool: asyncpg.Pool, store: ArtifactStore) -> None:
        self._pool = pool
        self._store = store

    @staticmethod
    def _key(base_model: str, adapter_version: str, snapshot_id: str) -> str:
        return f"fisher/{base_model}/{adapter_version}/{snapshot_id}.safetensors"

    async def save(self, diagonal: Diagonal, draft: FisherSnapshot) -> FisherSnapshot:
        """Write the diagonal, then its row: ``draft`` with its id, path, digest and size filled in."""
        snapshot_id = uuid.uuid4().hex
        key = self._key(draft.base_model, draft.adapter_version, snapshot_id)
        tensors = {name: t.detach().to(torch.float32).contiguous().cpu() for name, t in diagonal.items()}
        data = await asyncio.to_thread(save, tensors, header(replace(draft, id=snapshot_id)))
        await self._store.put_bytes(key, data)
        snapshot = replace(draft, id=snapshot_id, path=key, sha256=hashlib.sha256(data).hexdigest(),
                           size_bytes=len(data))
        try:
            async with acquired(self._pool) as conn:
                await conn.execute(
                    "INSERT INTO fisher_snapshots (id, base_model, adapter_version, create_time, doc)"
                    " VALUES ($1, $2, $3, $4, $5::jsonb)",
                    snapshot.id, snapshot.base_model, snapshot.adapter_version, snapshot.create_time,
                    dump_json(_SNAPSHOT, snapshot).decode(),
                )
        except BaseException:
            await self._store.delete([key])
            raise
        return snapshot

    async def get(self, snapshot_id: str) -> FisherSnapshot:
        async with acquired(self._pool) as conn:
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
            if snapshot.path.startswith("/"):  # stored before snapshots moved to the artifact store
                data = await asyncio.to_thread(Path(snapshot.path).read_bytes)
            else:
                data = await self._store.get_bytes(snapshot.path)
        except (FileNotFoundError, NotFound) as exc:
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
        clauses: list[str] = []
        args: list[object] = []  # query parameters
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
        async with acquired(self._pool) as conn:
            rows = await conn.fetch(sql, *args)
        return [_SNAPSHOT.validate_json(r["doc"]) for r in rows]

    async def delete(self, snapshot_id: str) -> None:
        """Remove the row, then the file (a crash between leaves an orphan file, never a dangling row)."""
        snapshot = await self.get(snapshot_id)
        async with acquired(self._pool) as conn:
            await conn.execute("DELETE FROM fisher_snapshots WHERE id = $1", snapshot_id)
        if snapshot.path.startswith("/"):
            await asyncio.to_thread(Path(snapshot.path).unlink, True)
        else:
            await self._store.delete([snapshot.path])
