"""A training run's checkpoints: when and where it saves its state, what a state holds, and resuming from one.

``engine.training.recipe`` calls :func:`save_state` at the steps :class:`Checkpointing` asks for and
:func:`restore_state` when a run resumes; where a checkpoint is kept (the job's store) is ``Checkpointing.save``'s
business (``engine.training.job_checkpoints``, ``engine.training.distributed``).
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

# One process's torch RNG states: {"cpu": its CPU generator's, "cuda": its device's generator's (empty: none)}.
RngState = dict[str, torch.Tensor]
# Every process's RNG states (rank order) at a checkpoint of a run on several (engine.training.distributed);
# called by every process that calls :func:`save_state` (a collective for some groups); None: not known.
RankRngStates = Callable[[], list[RngState] | None]


@dataclass(frozen=True)
class Checkpointing:
    """When and where a run saves its state, and the state to resume from (engine.training.runner fills it in).

    A checkpoint is a directory: ``adapter/`` (PEFT's adapter format, publishable as it is) and ``state.pt``
    (optimiser, scheduler, torch RNG states, the step, the losses and the examples' digest). The data position
    needs no state: the batch order of every epoch comes from a generator seeded by the job, so a resumed run
    draws the same orders again and skips the batches already done.

    The RNG states (dropout's masks) are the main process's, and on several processes every process's too
    (``rank_rng``): their shares of a step differ, so each draws its own number of masks and their generators
    drift apart; a resume on as many processes gives each its own back (:func:`rng_to_restore`).
    """

    every_steps: int  # 0: never by count
    every_seconds: float  # 0: never by time
    scratch_dir: Path  # where state directories are written before ``save`` takes them
    save: CheckpointSave
    resume_from: Path | None = None  # an unpacked checkpoint
    rank_rng: RankRngStates | None = None  # several processes: every one's RNG states (None: one process)


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
    ranks = ckpt.rank_rng() if ckpt.rank_rng is not None else None  # before the gathers: every process in order
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
            state: dict[str, object] = {
                "step": step, "loss": losses[0], "task_loss": losses[1], "data": data_key,
                "optimizer": optimizer_state if optimizer_state is not None else optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                # this (the main) process's: what a resume on another number of processes restores
                "rng_cpu": torch.get_rng_state(),
                # the training device's generator only: a worker with another number of GPUs restores it too
                "rng_cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else torch.empty(0),
            }
            if ranks is not None:  # several processes (a one-process checkpoint keeps the format it always had)
                state["rng_ranks"] = ranks
            torch.save(state, state_dir / STATE_FILE)
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
    rank, world = _this_process()
    rng = rng_to_restore(state, rank, world)
    torch.set_rng_state(rng["cpu"])
    if rng["cuda"].numel() and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return int(state["step"]), float(state["loss"]), float(state["task_loss"])


def own_rng_state(cuda: bool | None = None) -> RngState:
    """This process's RNG states, its CUDA device's generator's with ``cuda`` (None: where CUDA is available)."""
    with_cuda = torch.cuda.is_available() if cuda is None else cuda
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if with_cuda else torch.empty(0, dtype=torch.uint8)}


def rng_to_restore(state: dict[str, Any], rank: int, world: int) -> RngState:
    """The RNG states process ``rank`` of ``world`` resumes with from a checkpoint's ``state``.

    On as many processes as the checkpoint was taken on, each its own: the run continues as if uninterrupted.
    Otherwise (another number, or a checkpoint of one process, or one taken before every process's states were
    kept) every process gets the main process's: the shares of a step change with the number of processes, so no
    process continues another's draws anyway, and starting them all from one state is how a run on several
    processes starts (one seed for all); a run resumed on one process continues the main one's, as it did."""
    ranks = state.get("rng_ranks")
    if ranks and len(ranks) == world and 0 <= rank < world:
        return {"cpu": ranks[rank]["cpu"], "cuda": ranks[rank]["cuda"]}
    return {"cpu": state["rng_cpu"], "cuda": state["rng_cuda"]}


def _this_process() -> tuple[int, int]:
    """(rank, number of processes) of this run: torch.distributed's when a run on several set it up, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
