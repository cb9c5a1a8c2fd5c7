"""The LoRA fine-tuning recipe: setup -> train -> save -> cleanup, as a plain PyTorch loop.

``run_training`` is synchronous and meant to run in a worker thread. It reports only through the
``ProgressSink`` (StepMetrics every optimiser step, EvalReported at the end) and stops at the next
step once the ``CancelToken`` is set. It never changes torch's global thread count.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from engine.domain import BaseRetention, DatasetSummary, Example, LoraSpec, composition, dataset_digest
from engine.errors import Cancelled, FailedPrecondition
from engine.jobs.core import Noticed, Warned
from engine.jobs.ports import CancelToken, ProgressSink
from engine.registry.peft_checks import module_names, validate_lora
from engine.telemetry import tracer
from engine.training.batching import Batching, EpochRows, Rotation, StepBatch, batching
from engine.training.datasets import Batch, EncodedExample, encode_dataset, encode_example, pad_token_id
from engine.training.models import (
    DevicePlan,
    check_sharding,
    device_count,
    load_base_model,
    make_temp_dir,
    select_device,
)
from engine.training.objectives import WeightedSft
from engine.training.packing import ExampleForward, per_example_nll
from engine.training.run_state import Checkpointing, data_key, restore_state, save_state
from engine.training.sharding import (
    as_float,
    full_trainable_state,
    is_sharded,
)
from engine.training.spec import EVAL_SPLIT, EvalReported, LrSchedule, Sharding, StepMetrics, TrainingJobSpec

# Steps over which tokens_per_second is measured: the current throughput, not the average since start.
RATE_WINDOW = 10
# transformers' scheduler names; CONSTANT keeps the warm-up, as LINEAR and COSINE do
_SCHEDULERS = {LrSchedule.LINEAR: "linear", LrSchedule.COSINE: "cosine", LrSchedule.CONSTANT: "constant_with_warmup"}


class Penalty(Protocol):
    """A regulariser over the trainable parameters (e.g. EWC), added to the task loss every step."""

    def __call__(self, model: torch.nn.Module) -> torch.Tensor: ...


class AddedPenalties:
    """Penalties added up (EWC against a parent and EWC against the base model, engine.continual.base_ewc)."""

    def __init__(self, *parts: Penalty) -> None:
        self.parts = parts

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        total = self.parts[0](model)
        for part in self.parts[1:]:
            total = total + part(model)
        return total


class BatchObjective(Protocol):
    """An objective replacing the weighted SFT loss (e.g. engine.kto.KtoObjective), per-example aware."""

    def select(self, kept: list[int]) -> BatchObjective:
        """The objective over the examples at positions ``kept`` of ``run.examples``, renumbered 0..n-1."""
        ...

    def extended(self, replayed: int) -> BatchObjective:
        """The objective over ``run.examples`` followed by ``replayed`` examples of earlier versions (replay),
        each a target to keep producing."""
        ...

    def step_losses(self, model: Any, step: StepBatch, forward: ExampleForward) -> Iterator[torch.Tensor]:
        """Each micro-batch's share of the step's task loss in turn (the shares sum to it); the caller
        backpropagates one before asking for the next. ``step.indices`` are positions in ``run.examples``."""
        ...

    def step_weight(self, step: StepBatch) -> float:
        """What the step's loss is an average over (its examples' total weight, or their number): the weight
        of one process's share of a step when several train it together (:class:`DataParallel`)."""
        ...


class KnowledgeProbe(Protocol):
    """Measures what a trained model kept of its base model's knowledge (engine.continual.base_knowledge)."""

    def measure(self, model: Any, tokenizer: Any, plan: DevicePlan, *, base_model_dir: Path, quantization: str,
                step: int, sink: ProgressSink, cancel: CancelToken) -> BaseRetention | None:
        """Base retention of ``model`` (None when it cannot be measured: the job is told why)."""
        ...


class DataParallel(Protocol):
    """One of several processes training one adapter together (engine.training.distributed): each takes a share
    of every step's examples; their gradients are averaged, weighted by what each share's loss averages over,
    so the step is the one a single process would take on all of them."""

    @property
    def is_main(self) -> bool:
        """The process that reports, checkpoints and saves (the others compute only)."""
        ...

    def shard(self, step: StepBatch) -> StepBatch:
        """This process's share of a step's examples."""
        ...

    def agree_to_stop(self, cancel: CancelToken) -> None:
        """Cancel ``cancel`` when any process was asked to stop: all stop at the same step."""
        ...

    def loss_scale(self, weight: float) -> float:
        """What this process's share of a step's loss (an average over ``weight``) is multiplied by before its
        backward pass (1 unless the model's own hooks combine gradients: a sharded model's)."""
        ...

    def sync_gradients(self, params: Sequence[torch.nn.Parameter], weight: float, task_loss: float) -> float:
        """Replace every process's gradients by their weighted mean; the step's task loss, likewise averaged."""
        ...

    def agree(self, flag: bool) -> bool:
        """Whether ``flag`` holds in any process (all get the same answer)."""
        ...


@dataclass(frozen=True)
class TrainingRun:
    spec: TrainingJobSpec
    base_model_dir: Path
    examples: list[Example]
    output_dir: Path
    eval_examples: list[Example] = field(default_factory=list)  # the eval split: never trained on, its loss reported
    parent_adapter_dir: Path | None = None
    penalty: Penalty | None = None
    objective: BatchObjective | None = None  # None: weighted SFT
    checkpointing: Checkpointing | None = None
    parallel: DataParallel | None = None  # None: this process trains alone
    probe: KnowledgeProbe | None = None  # measures base retention after training (None: not measured)
    rotation: Rotation | None = None  # the last examples are a pool trained a few at a time (None: all, every epoch)


@dataclass(frozen=True)
class TrainingResult:
    adapter_dir: Path
    steps: int
    final_loss: float
    final_task_loss: float
    dataset: DatasetSummary
    device: str
    base_retention: BaseRetention | None = None
    eval_loss: float | None = None  # on the eval split (None: the run has none)


# ---- setup --------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


def lora_config(spec: LoraSpec) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,  # type: ignore[arg-type]  # peft types it int; scaling is alpha / r, any number
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def attach_adapter(run: TrainingRun, base_model: Any) -> Any:
    """Wrap the base model with a fresh LoRA adapter, or the parent adapter (trainable) for a warm start."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if run.parent_adapter_dir is None:
        validate_lora(run.spec.lora, module_names(run.base_model_dir))
        return get_peft_model(base_model, lora_config(run.spec.lora))
    if not (run.parent_adapter_dir / "adapter_config.json").is_file():
        raise FailedPrecondition(
            "PARENT_ADAPTER_UNAVAILABLE",
            f"parent adapter {run.parent_adapter_dir} has no adapter_config.json",
        )
    config = LoraConfig.from_pretrained(str(run.parent_adapter_dir))
    wanted = run.spec.lora
    if (config.r, float(config.lora_alpha), set(config.target_modules)) != (
        wanted.rank, float(wanted.alpha), set(wanted.target_modules),
    ):  # the job was created with the parent's shape (engine.preparation.inherit_lora); the parent changed?
        raise FailedPrecondition(
            "PARENT_LORA_MISMATCH",
            f"the parent adapter has rank {config.r}, alpha {config.lora_alpha}, targets "
            f"{sorted(config.target_modules)}; the job asks for rank {wanted.rank}, alpha {wanted.alpha:g}, "
            f"targets {sorted(wanted.target_modules)}",
        )
    config.lora_dropout = wanted.dropout  # a training setting, not part of the shape
    config.inference_mode = False
    return PeftModel.from_pretrained(base_model, run.parent_adapter_dir, config=config, is_trainable=True)


def total_steps_for(n_examples: int, batch_size: int, epochs: int, max_steps: int) -> tuple[int, int]:
    """(steps per epoch, total optimiser steps); ``max_steps`` > 0 caps the total."""
    per_epoch = math.ceil(n_examples / batch_size)
    total = per_epoch * epochs
    return per_epoch, min(total, max_steps) if max_steps > 0 else total


# ---- loss ---------------------------------------------------------------------------


def weighted_task_loss(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, int]:
    """Weighted mean over examples of each example's mean next-token loss on its target tokens."""
    sums, counts = per_example_nll(logits, batch.labels)
    weights = batch.weights.to(sums.device) * (counts > 0)
    return (sums / counts.clamp(min=1) * weights).sum() / weights.sum(), int(counts.sum())


@torch.no_grad()
def evaluate_loss(
    model: Any,
    data: list[EncodedExample],
    *,
    batch_size: int,
    pad_id: int,
    plan: DevicePlan,
    cancel: CancelToken,
    packing: bool = True,
) -> float:
    """Example-weighted mean of per-example token-mean losses, as in training (eval mode, no dropout)."""
    with batching(model, data, packing=packing, pad_id=pad_id, plan=plan) as layout:
        return loss_over(model, layout, data, batch_size=batch_size, cancel=cancel)


@torch.no_grad()
def loss_over(model: Any, layout: Batching, data: list[EncodedExample], *, batch_size: int,
              cancel: CancelToken) -> float:
    """:func:`evaluate_loss` in a layout already in force (a training run's, at a checkpoint)."""
    model.eval()
    total, weight = 0.0, 0.0
    try:
        for start in range(0, len(data), batch_size):
            _check_cancel(cancel, "evaluation")
            part = data[start : start + batch_size]
            sums, counts = layout.forward(model, part)
            weights = torch.tensor([e.weight for e in part], device=sums.device) * (counts > 0)
            total += float((sums / counts.clamp(min=1) * weights).sum())
            weight += float(weights.sum())
    finally:
        model.train()
    return total / weight


def _check_cancel(cancel: CancelToken, where: str) -> None:
    if cancel.cancelled:
        raise Cancelled("JOB_CANCELLED", f"training was cancelled during {where}")


# ---- save ---------------------------------------------------------------------------


def save_adapter(model: Any, output_dir: Path, weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write adapter_config.json + adapter_model.safetensors into ``output_dir`` atomically; ``weights``: the
    adapter's whole weights by parameter name when the model holds only shards of them."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FailedPrecondition("OUTPUT_EXISTS", f"adapter output directory {output_dir} is not empty")
    tmp = make_temp_dir(output_dir.parent, output_dir.name)
    try:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
        if output_dir.exists():
            output_dir.rmdir()
        os.rename(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output_dir


# ---- the recipe -----------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A job's one loaded model: the base with the job's adapter attached (fresh, or the parent's), trainable."""

    model: Any
    tokenizer: Any
    plan: DevicePlan  # where this copy is
    devices: int = 1  # the job trains on this many (engine.training.distributed when more than one)
    sharding: Sharding = Sharding.NONE
    # where the job's processes train when that is not where this copy is (FSDP: this one on the host)
    launch_plan: DevicePlan | None = None

    @property
    def training_plan(self) -> DevicePlan:
        return self.launch_plan or self.plan

    @property
    def description(self) -> str:
        plan = self.training_plan
        if self.devices == 1:
            return plan.description
        sharded = ", FSDP (the model sharded across them)" if self.sharding is Sharding.FSDP else ""
        return f"{self.devices} x {plan.description}{sharded}"


def load_for_training(run: TrainingRun, plan: DevicePlan | None = None, *, empty: bool = False) -> LoadedModel:
    """Seed, load the base model once and attach the job's adapter (a worker thread's work).

    ``plan``: the device to load on (a distributed run's process); by default the job's own choice, after
    checking this worker has the devices the job asks for, and that its sharding can run on them
    (FailedPrecondition otherwise). A sharded job's copy here is loaded on the host: its base may not fit one
    device, and its processes load their own (engine.training.distributed). ``empty``: the structure only, on
    the meta device, for a sharded run's process that receives the first one's weights.
    """
    hp = run.spec.hyperparameters
    devices, launch_plan = 1, None
    if plan is None:
        devices = device_count(hp.num_devices)
        check_sharding(run.spec, devices)
        plan = select_device(hp.precision)
        if hp.sharding is Sharding.FSDP:
            plan, launch_plan = HOST, plan
    seed_everything(hp.seed)
    base, tokenizer = load_base_model(run.base_model_dir, plan=plan, quantization=hp.quantization, empty=empty)
    with warnings.catch_warnings():
        if empty:  # a parent's weights loaded into meta parameters: nothing to copy, torch says so for each
            warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter", category=UserWarning)
        model = attach_adapter(run, base)
    return LoadedModel(model, tokenizer, plan, devices, hp.sharding, launch_plan)


HOST = DevicePlan("cpu", None, "cpu, fp32")  # where a sharded run's models are loaded before they are sharded


def release(loaded: LoadedModel | None) -> None:
    """Free a loaded model's memory (and the GPU cache)."""
    if loaded is None:
        return
    device = loaded.plan.device
    loaded.model = None
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def run_training(
    run: TrainingRun, sink: ProgressSink, cancel: CancelToken, loaded: LoadedModel | None = None
) -> TrainingResult:
    """Fine-tune a LoRA adapter on ``run.examples`` and save it to ``run.output_dir``.

    ``loaded`` is the job's model when the job loaded it already (e.g. to measure the parent's Fisher first);
    otherwise it is loaded here. Either way it is released at the end.
    """
    hp = run.spec.hyperparameters
    model: Any = None
    _check_cancel(cancel, "setup")
    try:
        if loaded is None:
            loaded = load_for_training(run)
        model, tokenizer, plan = loaded.model, loaded.tokenizer, loaded.plan
        encoded = encode_dataset(tokenizer, run.examples, hp.max_seq_length)
        kept = [i for i, e in enumerate(encoded) if e.target_token_count]
        data = [encoded[i] for i in kept]
        objective = run.objective.select(kept) if run.objective is not None else None
        pooled_from = len(run.examples) - (run.rotation.pool if run.rotation is not None else 0)
        pool = [j for j, i in enumerate(kept) if i >= pooled_from]
        epochs = EpochRows(len(data), pool, run.rotation.per_epoch if run.rotation is not None else 0,
                           hp.seed + 1)
        if len(data) < len(encoded):
            sink.emit(
                Warned(
                    "EXAMPLES_WITHOUT_TARGETS",
                    f"{len(encoded) - len(data)} of {len(encoded)} examples have no completion token within "
                    f"max_seq_length={hp.max_seq_length} and are skipped",
                )
            )
        summary = DatasetSummary(
            digest=dataset_digest(run.examples),
            example_count=len(run.examples),
            composition=composition(run.examples),
            target_token_count=sum(e.target_token_count for e in data),
        )
        held_out = [e for e in (encode_example(tokenizer, x, hp.max_seq_length) for x in run.eval_examples)
                    if e.target_token_count]
        losses = _train(model, data, run, plan, pad_token_id(tokenizer), sink, cancel, objective, summary.digest,
                        held_out, epochs)
        final_loss, final_task_loss, steps = losses
        train_end = evaluate_loss(  # on the examples every epoch trains (a rotating pool's are not the job's own)
            model, [data[i] for i in epochs.fixed], batch_size=hp.batch_size, pad_id=pad_token_id(tokenizer),
            plan=plan, cancel=cancel, packing=hp.packing,
        )
        sink.emit(EvalReported(step=steps, split="train_end", metrics=(("loss", train_end),)))
        eval_loss = evaluate_loss(model, held_out, batch_size=hp.batch_size, pad_id=pad_token_id(tokenizer),
                                  plan=plan, cancel=cancel, packing=hp.packing) if held_out else None
        if eval_loss is not None:
            sink.emit(EvalReported(step=steps, split=EVAL_SPLIT, metrics=(("loss", eval_loss),)))
        main = run.parallel is None or run.parallel.is_main
        sharded = is_sharded(model)
        retained: BaseRetention | None = None
        if run.probe is not None and main and sharded:
            sink.emit(Warned("BASE_RETENTION_NOT_MEASURED", "base retention is not measured on a sharded (FSDP) "
                                                            "run: its generation would need every process"))
        elif run.probe is not None and main:
            with tracer.start_as_current_span("training.base_retention"):
                retained = run.probe.measure(model, tokenizer, plan, base_model_dir=run.base_model_dir,
                                         quantization=hp.quantization.value, step=steps, sink=sink, cancel=cancel)
        _check_cancel(cancel, "saving")
        weights = full_trainable_state(model) if sharded else None  # every process takes part in the gather
        adapter_dir = save_adapter(model, run.output_dir, weights) if main else run.output_dir
        return TrainingResult(adapter_dir, steps, final_loss, final_task_loss, summary, plan.description, retained,
                              eval_loss)
    finally:
        model = None  # the last references go with the loaded model
        release(loaded)


@contextlib.contextmanager
def gradient_checkpointing(model: Any, enabled: bool) -> Iterator[None]:
    """Recompute each layer's activations in the backward pass instead of keeping them, for the duration.

    Saves activation memory for about one more forward pass of compute. A model that already checkpoints
    (QLoRA on CUDA) is left as it is.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not enabled or base.is_activation_checkpointing:
        yield
        return
    base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    try:
        yield
    finally:
        base.activation_checkpointing_disable()


def _train(
    model: Any,
    data: list[EncodedExample],
    run: TrainingRun,
    plan: DevicePlan,
    pad_id: int,
    sink: ProgressSink,
    cancel: CancelToken,
    objective: BatchObjective | None = None,
    digest: str = "",
    held_out: list[EncodedExample] | None = None,
    epochs: EpochRows | None = None,
) -> tuple[float, float, int]:
    """The optimisation loop; returns (last loss, last task loss, steps done). ``held_out``: the eval split,
    whose loss each checkpoint reports and records; ``epochs``: which examples each epoch trains (None: all)."""
    hp = run.spec.hyperparameters
    with (
        batching(model, data, packing=hp.packing, pad_id=pad_id, plan=plan) as layout,
        gradient_checkpointing(model, hp.gradient_checkpointing),
    ):
        if layout.fallback_reason:
            sink.emit(Noticed("PACKING_UNAVAILABLE", f"{layout.fallback_reason}; training on {layout.description} "
                                                     "batches instead (same losses, more padding)"))
        return _optimise(model, data, run, layout, sink, cancel, objective or WeightedSft(), digest, held_out or [],
                         epochs or EpochRows(len(data)))


def _optimise(
    model: Any,
    data: Sequence[EncodedExample],
    run: TrainingRun,
    layout: Batching,
    sink: ProgressSink,
    cancel: CancelToken,
    objective: BatchObjective,
    digest: str = "",
    held_out: list[EncodedExample] | None = None,
    epochs: EpochRows | None = None,
) -> tuple[float, float, int]:
    from transformers import get_scheduler

    hp = run.spec.hyperparameters
    ckpt = run.checkpointing
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    per_step = hp.batch_size * hp.gradient_accumulation_steps
    epochs = epochs or EpochRows(len(data))
    per_epoch, total = total_steps_for(epochs.size, per_step, hp.epochs, hp.max_steps)
    scheduler = get_scheduler(_SCHEDULERS[hp.lr_schedule], optimizer, num_warmup_steps=hp.warmup_steps,
                              num_training_steps=total)
    generator = torch.Generator().manual_seed(hp.seed)
    model.train()
    step, loss_value, task_value = 0, math.nan, math.nan
    key = data_key(digest, data, layout, epochs)
    if ckpt is not None and ckpt.resume_from is not None:
        restored = restore_state(ckpt.resume_from, model, optimizer, scheduler, data_key=key, sink=sink)
        if restored is not None:
            step, loss_value, task_value = restored
            sink.emit(Noticed("RESUMED", f"continuing from the checkpoint of step {step} of {total}"))
    first, saved_step = step, step
    started = time.monotonic()
    saved_at = started
    recent: collections.deque[tuple[float, int]] = collections.deque([(started, 0)], maxlen=RATE_WINDOW + 1)

    parallel = run.parallel
    main = parallel is None or parallel.is_main
    sharded = is_sharded(model)  # then every process takes part in a checkpoint's forwards and gathers

    def checkpoint() -> None:
        nonlocal saved_step, saved_at
        assert ckpt is not None
        if not main and not sharded:
            return  # every process holds the same state; one stores it
        if step > saved_step:
            eval_loss = loss_over(model, layout, held_out, batch_size=hp.batch_size, cancel=cancel) \
                if held_out and not cancel.cancelled else None
            if eval_loss is not None:
                sink.emit(EvalReported(step=step, split=EVAL_SPLIT, metrics=(("loss", eval_loss),)))
            if save_state(ckpt, model, optimizer, scheduler, step=step, losses=(loss_value, task_value),
                          eval_loss=eval_loss, data_key=key, sink=sink, main=main):
                saved_step = step
        saved_at = time.monotonic()

    position = 0  # optimiser steps' batches drawn so far, done or (when resuming) skipped
    epoch = 0
    while step < total:
        # A context manager: an epoch that raises (cancel, NaN) still ends its span, with the error recorded.
        with tracer.start_as_current_span("training.epoch", attributes={"epoch": step // per_epoch + 1}) as epoch_span:
            order = layout.epoch_order(data, epochs.rows(epoch), hp.batch_size, generator)
            epoch += 1
            for batch in layout.steps(data, order, hp.batch_size, hp.gradient_accumulation_steps):
                position += 1
                if position <= first:
                    continue  # done before the checkpoint this run resumed from
                if step >= total:
                    break
                if parallel is not None:
                    parallel.agree_to_stop(cancel)
                if cancel.cancelled and cancel.keeps_progress and ckpt is not None:
                    checkpoint()
                _check_cancel(cancel, f"step {step + 1}")
                share_of_step = parallel.shard(batch) if parallel is not None else batch
                weight = objective.step_weight(share_of_step)
                scale = parallel.loss_scale(weight) if parallel is not None else 1.0
                task_value = 0.0
                shares = objective.step_losses(model, share_of_step, layout.forward) if share_of_step.examples else ()
                for share in shares:
                    # torch leaves Tensor.backward unannotated
                    (share if scale == 1.0 else share * scale).backward()  # type: ignore[no-untyped-call]
                    task_value += float(share.detach())
                if parallel is not None:
                    task_value = parallel.sync_gradients(params, weight, task_value)
                # After the mean: the penalty's gradient is every process's own (the same whole one, or its
                # shards' part), added once.
                penalty = run.penalty(model) if run.penalty is not None else torch.zeros(())
                if penalty.requires_grad:
                    penalty.backward()  # type: ignore[no-untyped-call]
                clip = hp.max_grad_norm if hp.max_grad_norm > 0 else math.inf
                grad_norm = as_float(torch.nn.utils.clip_grad_norm_(params, clip))  # the norm over all shards
                learning_rate = scheduler.get_last_lr()[0]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                now = time.monotonic()
                recent.append((now, recent[-1][1] + batch.real_tokens))
                elapsed = now - started
                window = now - recent[0][0]
                penalty_value = float(penalty.detach())
                loss_value = task_value + penalty_value
                sink.emit(
                    StepMetrics(
                        step=step,
                        total_steps=total,
                        epoch=step / per_epoch,
                        loss=loss_value,
                        task_loss=task_value,
                        ewc_penalty=penalty_value,
                        learning_rate=learning_rate,
                        grad_norm=grad_norm,
                        tokens_per_second=(recent[-1][1] - recent[0][1]) / window if window > 0 else 0.0,
                        eta_seconds=elapsed / (step - first) * (total - step),
                    )
                )
                due = ckpt is not None and step < total and bool(
                    (ckpt.every_steps and step % ckpt.every_steps == 0)
                    or (ckpt.every_seconds and now - saved_at >= ckpt.every_seconds))
                if sharded and parallel is not None and ckpt is not None and ckpt.every_seconds and step < total:
                    due = parallel.agree(due)  # the processes' clocks differ; a checkpoint needs all of them
                if due:
                    checkpoint()
            epoch_span.set_attribute("step", step)
    if cancel.cancelled and cancel.keeps_progress and ckpt is not None:
        checkpoint()  # stopped after the last step (in the final evaluation): a resume goes straight to it
    return loss_value, task_value, step
