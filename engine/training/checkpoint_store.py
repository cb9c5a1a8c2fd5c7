"""Training checkpoints in the artifact store (local directory or S3), so any worker can resume a job.

A checkpoint is the directory a training run saves its state into (engine.training.recipe: adapter,
optimiser, scheduler, RNG states, data position), packed into one uncompressed tar under
``checkpoints/<job id>/<step>-<lease token>.tar``. The store's writes are create-only and atomic, so an object
is whole or absent; its sha256 is recorded on the job (``TrainingOutput.checkpoints``, newest first) and checked
before a resume unpacks it. The job's record is the index: a checkpoint not recorded there (its worker died
between the upload and the record) is garbage the job's pruning removes with its prefix.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from engine.errors import DataLoss, NotFound
from engine.registry.ports import ArtifactStore
from engine.training.spec import CheckpointRecord

_CHUNK = 1 << 20


def _pack(src_dir: Path, dest: Path) -> tuple[str, int]:
    """An uncompressed tar of ``src_dir`` (sorted, fixed metadata), and its sha256 and size."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in src_dir.rglob("*") if p.is_file()):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(src_dir).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    digest = hashlib.sha256()
    with dest.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest(), dest.stat().st_size


def _verify_and_unpack(archive: Path, record: CheckpointRecord, dest_dir: Path) -> None:
    """Unpack the fetched ``archive`` of ``record``; DATA_LOSS naming the stored checkpoint (its step and key, not
    the scratch file it was fetched into) when its bytes are not what was stored."""
    digest = hashlib.sha256()
    with archive.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    named = f"the checkpoint of step {record.step} ({record.key})"
    if digest.hexdigest() != record.sha256:
        raise DataLoss("CHECKPOINT_CHECKSUM_MISMATCH", f"{named} does not match its sha256",
                       metadata={"key": record.key})
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r") as tar:
        for member in tar.getmembers():  # our own archives: plain files with relative names only
            if not member.isfile() or member.name.startswith("/") or ".." in Path(member.name).parts:
                raise DataLoss("CHECKPOINT_CHECKSUM_MISMATCH", f"{named} holds {member.name!r}",
                               metadata={"key": record.key})
        tar.extractall(dest_dir, filter="data")


class CheckpointArchive:
    """Store, fetch and remove a job's checkpoints in an artifact store."""

    def __init__(self, store: ArtifactStore, scratch_dir: Path, prefix: str = "checkpoints") -> None:
        self._store = store
        self._scratch = scratch_dir
        self._prefix = prefix  # the keys' first part: one per kind of state kept this way

    async def save(self, job_id: str, step: int, token: str, state_dir: Path, *, loss: float,
                   eval_loss: float | None) -> CheckpointRecord:
        """Upload the state saved in ``state_dir`` (then removed) and describe it."""
        key = f"{self._prefix}/{job_id}/{step:09d}-{token[:12]}.tar"
        self._scratch.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="checkpoint-", suffix=".tar", dir=self._scratch)
        os.close(fd)
        packed = Path(name)
        try:
            sha256, size = await asyncio.to_thread(_pack, state_dir, packed)
            await self._store.put_file(key, packed)
        finally:
            packed.unlink(missing_ok=True)
            await asyncio.to_thread(shutil.rmtree, state_dir, True)
        return CheckpointRecord(step=step, key=key, uri=self._store.uri(key), sha256=sha256, size_bytes=size,
                                loss=loss, eval_loss=eval_loss, create_time=datetime.now(UTC))

    async def fetch(self, record: CheckpointRecord, dest_dir: Path) -> Path:
        """The checkpoint unpacked into ``dest_dir``, after its sha256 is checked (DATA_LOSS otherwise)."""
        self._scratch.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="checkpoint-", suffix=".tar", dir=self._scratch)
        os.close(fd)
        archive = Path(name)
        try:
            try:
                await self._store.get_file(record.key, archive)
            except NotFound as exc:
                raise DataLoss("CHECKPOINT_MISSING", f"checkpoint of step {record.step} is missing from the store",
                               metadata={"key": record.key}) from exc
            await asyncio.to_thread(_verify_and_unpack, archive, record, dest_dir)
        finally:
            archive.unlink(missing_ok=True)
        return dest_dir

    async def delete(self, records: list[CheckpointRecord]) -> None:
        await self._store.delete([r.key for r in records])
