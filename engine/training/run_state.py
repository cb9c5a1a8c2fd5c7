"""A training run's checkpoints: when and where it saves its state, what a state holds, and resuming from one.

``engine.training.recipe`` calls :func:`save_state` at the steps :class:`Checkpointing` asks for and
:func:`restore_state` when a run resumes; where a checkpoint is kept (the job's store) is ``Checkpointing.save``'s
business (``engine.training.runner``, ``engine.training.distributed``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.errors import EngineError, FailedPrecondition
from engine.jobs.core import Warned
from engine.jobs.ports import LeaseLost, ProgressSink
from engine.telemetry import tracer
from engine.training.batching import Batching, EpochRows
from engine.training.datasets import EncodedExample
from engine.training.models import make_temp_dir
from engine.training.sharding import (
    full_optimizer_state,
    full_trainable_state,
    is_sharded,
    load_optimizer_state,
    load_trainable_state,
)

# Stores a checkpoint: (step, state dir, loss, eval-split loss or None); blocking, called in the run's thread.
CheckpointSave = Callable[[int, Path, float, float | None], None]


@dataclass(frozen=True)
class Checkpointing:
    """When and where a run saves its state, and the state to resume from (engine.training.runner fills it in).

    A checkpoint is a directory: ``adapter/`` (PEFT's adapter format, publishable as it is) and ``state.pt``
    (optimiser, scheduler, torch RNG states, the step, the losses and the examples' digest). The data position
    needs no state: the batch order of every epoch comes from a generator seeded by the job, so a resumed run
    draws the same orders again and skips the batches already done.
    """

    every_steps: int  # 0: never by count
    every_seconds: float  # 0: never by time
    scratch_dir: Path  # where state directories are written before ``save`` takes them
    save: CheckpointSave
    resume_from: Path | None = None  # an unpacked checkpoint


STATE_FILE = "state.pt"


def data_key(digest: str, data: Sequence[EncodedExample], layout: Batching, epochs: EpochRows) -> dict[str, object]:
    """What fixes the batches a run draws: the examples (as given, and as kept after tokenising), the rows of an
    epoch and the ordering scheme (random, or length-grouped on a padded fallback). A checkpoint resumes only a
    run with the same key, or its fast-forward would skip other batches than those it trained on."""
    key: dict[str, object] = {"digest": digest, "kept": len(data), "length_grouped": layout.length_grouped}
    if epochs.pool:
        key["rotation"] = [len(epochs.pool), epochs.per_epoch]
    return key


def save_state(
    ckpt: Checkpointing, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any, *, step: int,
    losses: tuple[float, float], eval_loss: float | None, data_key: dict[str, object], sink: ProgressSink,
    main: bool = True,
) -> bool:
    """Save the run's state at ``step`` and hand it to ``ckpt.save``. A failure (a full disk, the store down)
    fails this checkpoint, not the run: it is reported, nothing partial is left, and the next one is tried.

    A sharded model's state is gathered whole first, in the format one device writes (every process takes
    part; the main process writes it), so the checkpoint resumes on any number of devices."""
    weights, optimizer_state = None, None
    if is_sharded(model):
        weights, optimizer_state = full_trainable_state(model), full_optimizer_state(model, optimizer)
    if not main:
        return True
    state_dir: Path | None = None
    try:
        ckpt.scratch_dir.mkdir(parents=True, exist_ok=True)
        state_dir = make_temp_dir(ckpt.scratch_dir, f"step-{step}")
        with tracer.start_as_current_span("training.checkpoint", attributes={"step": step}):
            model.save_pretrained(state_dir / "adapter", safe_serialization=True, state_dict=weights)
            torch.save({
                "step": step, "loss": losses[0], "task_loss": losses[1], "data": data_key,
                "optimizer": optimizer_state if optimizer_state is not None else optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                # the training device's generator only: a worker with another number of GPUs restores it too
                "rng_cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else torch.empty(0),
            }, state_dir / STATE_FILE)
            ckpt.save(step, state_dir, losses[0], eval_loss)
        return True
    except LeaseLost:
        raise  # another worker holds the job: stop
    except (OSError, RuntimeError, EngineError) as exc:  # torch.save reports a full disk as RuntimeError
        sink.emit(checkpoint_failed(step, exc))
        return False
    finally:
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)


def checkpoint_failed(step: int, exc: Exception) -> Warned:
    """The warning of a checkpoint that was not stored: the run goes on and tries again at the next one."""
    reason = exc.reason if isinstance(exc, EngineError) else type(exc).__name__
    return Warned("CHECKPOINT_FAILED", f"the checkpoint of step {step} was not stored ({reason}: {exc}); "
                                       "training continues and tries again at the next one")


def restore_state(
    ckpt_dir: Path, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any, *, data_key: dict[str, object],
    sink: ProgressSink,
) -> tuple[int, float, float] | None:
    """Load a checkpoint's adapter weights, optimiser, scheduler and RNG states into the run; its (step, loss,
    task loss), or None when it was taken on other examples (the run then starts from the beginning)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = torch.load(ckpt_dir / STATE_FILE, map_location="cpu", weights_only=True)
    if state.get("data") != data_key:
        sink.emit(Warned("CHECKPOINT_DATA_CHANGED", f"the checkpoint of step {state['step']} was taken on other "
                                                    "examples (or another batch order) than this run has; training "
                                                    "starts from the beginning"))
        return None
    weights = load_file(str(ckpt_dir / "adapter" / "adapter_model.safetensors"))
    sharded = is_sharded(model)
    if sharded:
        unexpected = load_trainable_state(model, weights)
    else:
        unexpected = list(getattr(set_peft_model_state_dict(model, weights), "unexpected_keys", ()))
    if unexpected:
        raise FailedPrecondition("CHECKPOINT_INCOMPATIBLE",
                                 f"the checkpoint's adapter does not fit this model: {unexpected[:3]}")
    if sharded:
        load_optimizer_state(model, optimizer, state["optimizer"])
    else:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"].numel() and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["rng_cuda"])
    return int(state["step"]), float(state["loss"]), float(state["task_loss"])
