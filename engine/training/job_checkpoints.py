"""A training job's checkpoints in its store, as a run of it saves and resumes them: the recipe's ``save``
(:func:`saver`, called in the training thread) uploads each one and records it on the job, pruning those beyond the
policy's ``keep``; :func:`resume_point` unpacks the newest usable one. engine.training.runner hands both to the run
(engine.training.run_state.Checkpointing); the archive itself is engine.training.checkpoint_store.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from dataclasses import replace
from pathlib import Path

from engine.errors import DataLoss, Unavailable
from engine.jobs.context import JobContext
from engine.jobs.core import Warned
from engine.jobs.ports import LeaseLost
from engine.training.checkpoint_store import CheckpointArchive
from engine.training.run_state import CheckpointSave
from engine.training.spec import CheckpointSaved, TrainingJobSpec, TrainingOutput

log = logging.getLogger(__name__)

CHECKPOINT_STORE_SECONDS = 600  # a checkpoint's upload and record taking longer fails that checkpoint


def saver(ctx: JobContext[TrainingJobSpec, TrainingOutput], archive: CheckpointArchive) -> CheckpointSave:
    """The recipe's ``save``: called in the training thread, it stores the checkpoint on the event loop."""
    loop = asyncio.get_running_loop()

    def save(step: int, state_dir: Path, loss: float, eval_loss: float | None) -> None:
        future = asyncio.run_coroutine_threadsafe(
            _store_checkpoint(ctx, archive, step, state_dir, loss, eval_loss), loop)
        try:
            future.result(timeout=CHECKPOINT_STORE_SECONDS)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise Unavailable("ARTIFACT_STORE_UNAVAILABLE",
                              f"storing the checkpoint took more than {CHECKPOINT_STORE_SECONDS} s") from None
        except concurrent.futures.CancelledError:  # the event loop is stopping
            raise Unavailable("ARTIFACT_STORE_UNAVAILABLE", "the worker is stopping") from None

    return save


async def _store_checkpoint(ctx: JobContext[TrainingJobSpec, TrainingOutput], archive: CheckpointArchive,
                            step: int, state_dir: Path, loss: float, eval_loss: float | None) -> None:
    """Upload, record on the job (the record is the index), then prune beyond the policy's keep: only once
    the job naming the new checkpoint is stored, so a crash never leaves the job pointing at nothing."""
    record = await archive.save(ctx.job.id, step, ctx.lease_token, state_dir, loss=loss, eval_loss=eval_loss)
    kept = (record, *ctx.job.output.checkpoints)
    ctx.set_output(replace(ctx.job.output, checkpoints=kept))
    ctx.record(CheckpointSaved(record))
    keep = ctx.job.spec.checkpoints.keep
    if len(kept) <= keep:
        return
    old = kept[keep:]
    ctx.set_output(replace(ctx.job.output, checkpoints=kept[:keep]))
    try:  # the job without the old ones is stored before they go: a record never names a deleted object
        await ctx.persist()
        await archive.delete(list(old))
    except LeaseLost:
        raise
    except Exception:  # noqa: BLE001 - the database or the store down: the old objects stay (unrecorded)
        log.warning("old checkpoints not deleted", extra={"job_id": ctx.job.id}, exc_info=True)


async def resume_point(ctx: JobContext[TrainingJobSpec, TrainingOutput], archive: CheckpointArchive) -> Path | None:
    """The newest usable checkpoint of the job, unpacked; a corrupt or missing one is skipped for the one
    before it (with a warning); with none usable left the job fails with the reason."""
    records = ctx.job.output.checkpoints
    last: DataLoss | None = None
    for n, record in enumerate(records):
        try:
            return await archive.fetch(record, ctx.work_dir / "resume" / f"{record.step}")
        except DataLoss as exc:
            last = exc
            after = "trying the one before" if n + 1 < len(records) else "none is left"
            ctx.record(Warned("CHECKPOINT_SKIPPED",
                              f"the checkpoint of step {record.step} cannot be used ({exc.message}); {after}"))
            ctx.set_output(replace(ctx.job.output, checkpoints=tuple(
                r for r in ctx.job.output.checkpoints if r != record)))
            with contextlib.suppress(Exception):  # unrecorded now; a store that fails here keeps an orphan
                await archive.delete([record])
    if last is not None:
        message = f"none of the job's {len(records)} checkpoints can be used; the last: {last.message}"
        if last.reason == "CHECKPOINT_MISSING":
            raise DataLoss("CHECKPOINT_MISSING", message, metadata=dict(last.metadata))
        raise DataLoss("CHECKPOINT_CHECKSUM_MISMATCH", message, metadata=dict(last.metadata))
    return None
