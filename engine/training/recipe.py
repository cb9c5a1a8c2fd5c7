"""The LoRA fine-tuning recipe: setup -> train -> save -> cleanup, as a plain PyTorch loop.

``run_training`` is synchronous and meant to run in a worker thread. It reports only through the
``ProgressSink`` (StepMetrics every optimiser step, EvalReported at the end) and stops at the next
step once the ``CancelToken`` is set. It never changes torch's global thread count.
"""

from __future__ import annotations

import collections
import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from engine.domain import BaseRetention, DatasetSummary, composition, dataset_digest
from engine.errors import Cancelled, FailedPrecondition
from engine.jobs.core import Noticed, Warned
from engine.jobs.ports import CancelToken, ProgressSink
from engine.telemetry import tracer
from engine.training.base_kl import BaseKlObjective
from engine.training.batching import Batching, EpochRows, StepBatch, batching
from engine.training.datasets import Batch, EncodedExample, encode_dataset, encode_example, pad_token_id
from engine.training.loading import LoadedModel, load_for_training, release, save_adapter
from engine.training.models import (
    DevicePlan,
)
from engine.training.objectives import WeightedSft
from engine.training.packing import per_example_nll
from engine.training.run import BatchObjective, TrainingResult, TrainingRun
from engine.training.run_state import data_key, restore_state, save_state
from engine.training.sharding import (
    as_float,
    full_trainable_state,
    is_sharded,
)
from engine.training.spec import EVAL_SPLIT, EvalReported, LrSchedule, StepMetrics

# Steps over which tokens_per_second is measured: the current throughput, not the average since start.
RATE_WINDOW = 10
# transformers' scheduler names; CONSTANT keeps the warm-up, as LINEAR and COSINE do
_SCHEDULERS = {LrSchedule.LINEAR: "linear", LrSchedule.COSINE: "cosine", LrSchedule.CONSTANT: "constant_with_warmup"}


# ---- setup --------------------------------------------------------------------------


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
    objective: BatchObjective | None = None,
) -> float:
    """:func:`loss_over` in a layout of its own."""
    with batching(model, data, packing=packing, pad_id=pad_id, plan=plan) as layout:
        return loss_over(model, layout, data, batch_size=batch_size, cancel=cancel, objective=objective)


@torch.no_grad()
def loss_over(model: Any, layout: Batching, data: list[EncodedExample], *, batch_size: int,
              cancel: CancelToken, objective: BatchObjective | None = None) -> float:
    """The loss a run reports on a set (``train_end``, the eval split): ``objective``'s over ``data`` (its examples
    0..n-1) taken as one step micro-batched by ``batch_size``, in eval mode (no dropout), without gradient, in a
    layout already in force (a training run's, at a checkpoint). None: weighted SFT's, the example-weighted mean
    of per-example token-mean losses; KTO's is the mean of its examples' losses, z0 estimated over all of them."""
    step = StepBatch(data, range(len(data)), batch_size)
    shares = (objective or WeightedSft()).step_losses(model, step, layout.forward)
    model.eval()
    total = 0.0
    try:
        while True:
            _check_cancel(cancel, "evaluation")  # between micro-batches (KTO's first also runs its z0 passes)
            share = next(shares, None)
            if share is None:
                return total
            total += float(share)
    finally:
        model.train()


def task_objective(objective: BatchObjective | None) -> BatchObjective:
    """The objective of a run's own examples: ``objective`` without the KL term to the base model that holds the
    rehearsed answers (on the own examples that term's objective is its inner one's, plus its prompt-position
    term when it has a ``prompt_weight``); weighted SFT when None."""
    if isinstance(objective, BaseKlObjective):
        return objective.inner
    return objective or WeightedSft()


def _check_cancel(cancel: CancelToken, where: str) -> None:
    if cancel.cancelled:
        raise Cancelled("JOB_CANCELLED", f"training was cancelled during {where}")


def _check_finite(step: int, loss: float, grad_norm: float, learning_rate: float) -> None:
    """FailedPrecondition TRAINING_DIVERGED when a step's loss or gradient norm is not a finite number, before the
    optimiser applies it: a NaN or infinite gradient would turn the adapter's weights into NaN, and the job would
    publish a version that answers nothing. (Training runs in fp32 or bf16, with no fp16 loss scaler whose
    overflowing steps are skipped by design, so a non-finite value here is the run diverging.) Every process of a
    distributed run sees the same values (the loss and the norm are over all of them), so all stop alike."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    raise FailedPrecondition(
        "TRAINING_DIVERGED",
        f"training diverged at step {step}: loss {loss:g}, gradient norm {grad_norm:g} at learning rate "
        f"{learning_rate:g}; the adapter was not changed by that step and nothing is published (a lower "
        f"learning_rate, or max_grad_norm, usually helps)",
        metadata={"step": str(step), "loss": f"{loss:g}", "grad_norm": f"{grad_norm:g}",
                  "learning_rate": f"{learning_rate:g}"},
    )


# ---- the recipe -----------------------------------------------------------------------


def with_targets(encoded: Sequence[EncodedExample], which: str, max_seq_length: int,
                 sink: ProgressSink) -> list[int]:
    """The indices of ``encoded`` (the ``which`` set: training or held-out) that keep a target token.

    An example truncated before its first completion token has nothing to learn or measure, so it is left out;
    a warning EXAMPLES_WITHOUT_TARGETS says how many of the set were, since otherwise a set's loss silently
    covers fewer examples than the job recorded (or, for the eval split, is missing altogether).
    """
    kept = [i for i, e in enumerate(encoded) if e.target_token_count]
    if len(kept) < len(encoded):
        dropped = len(encoded) - len(kept)
        sink.emit(Warned(
            "EXAMPLES_WITHOUT_TARGETS",
            f"{dropped} of {len(encoded)} {which} examples have no completion token within "
            f"max_seq_length={max_seq_length} and are skipped" + ("" if kept else ": the set has no loss"),
        ))
    return kept


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
        kept = with_targets(encoded, "training", hp.max_seq_length, sink)
        data = [encoded[i] for i in kept]
        objective = run.objective.select(kept) if run.objective is not None else None
        pooled_from = len(run.examples) - (run.rotation.pool if run.rotation is not None else 0)
        pool = [j for j, i in enumerate(kept) if i >= pooled_from]
        epochs = EpochRows(len(data), pool, run.rotation.per_epoch if run.rotation is not None else 0,
                           hp.seed + 1)
        summary = DatasetSummary(
            digest=dataset_digest(run.examples),
            example_count=len(run.examples),
            composition=composition(run.examples),
            target_token_count=sum(e.target_token_count for e in data),
        )
        held_encoded = [encode_example(tokenizer, x, hp.max_seq_length) for x in run.eval_examples]
        held_kept = with_targets(held_encoded, f"held-out ({EVAL_SPLIT} split)", hp.max_seq_length, sink)
        held_out = [held_encoded[i] for i in held_kept]
        eval_objective = task_objective(run.eval_objective).select(held_kept)
        losses = _train(model, data, run, plan, pad_token_id(tokenizer), sink, cancel, objective, summary.digest,
                        held_out, epochs, eval_objective)
        final_loss, final_task_loss, steps, last_epoch_task_loss, keep_last_step = losses
        main = run.parallel is None or run.parallel.is_main
        sharded = is_sharded(model)
        retained: BaseRetention | None = None
        try:  # stopped after the last step (in the final evaluations or the probe): a resume goes straight to them
            # The task objective's loss (KTO's for a KTO job) on the examples every epoch trains (a rotating pool's
            # are not the job's own), and on the eval split
            train_end = evaluate_loss(
                model, [data[i] for i in epochs.fixed], batch_size=hp.batch_size, pad_id=pad_token_id(tokenizer),
                plan=plan, cancel=cancel, packing=hp.packing, objective=task_objective(objective).select(epochs.fixed),
            ) if epochs.fixed else None
            if train_end is not None:
                sink.emit(EvalReported(step=steps, split="train_end", metrics=(("loss", train_end),)))
            eval_loss = evaluate_loss(model, held_out, batch_size=hp.batch_size, pad_id=pad_token_id(tokenizer),
                                      plan=plan, cancel=cancel, packing=hp.packing,
                                      objective=eval_objective) if held_out else None
            if eval_loss is not None:
                sink.emit(EvalReported(step=steps, split=EVAL_SPLIT, metrics=(("loss", eval_loss),)))
            if run.probe is not None and main and sharded:
                sink.emit(Warned("BASE_RETENTION_NOT_MEASURED", "base retention is not measured on a sharded "
                                                                "(FSDP) run: its generation would need every process"))
            elif run.probe is not None and main:
                with tracer.start_as_current_span("training.base_retention"):
                    retained = run.probe.measure(model, tokenizer, plan, base_model_dir=run.base_model_dir,
                                                 quantization=hp.quantization.value, step=steps, sink=sink,
                                                 cancel=cancel)
            _check_cancel(cancel, "saving")
        except Cancelled:
            keep_last_step()
            raise
        weights = full_trainable_state(model) if sharded else None  # every process takes part in the gather
        adapter_dir = save_adapter(model, run.output_dir, weights) if main else run.output_dir
        return TrainingResult(adapter_dir, steps, final_loss, final_task_loss, summary, plan.description, retained,
                              eval_loss, train_loss=train_end if train_end is not None else last_epoch_task_loss)
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
    eval_objective: BatchObjective | None = None,
) -> tuple[float, float, int, float, Callable[[], None]]:
    """The optimisation loop; returns (last loss, last task loss, steps done, the mean task loss of the steps of
    the last epoch this run took steps in, what checkpoints the last step when the run is paused after it). A
    pause in the final evaluations must keep that step as one in the loop does, and the optimiser's state it needs
    lives here. ``held_out``: the eval split, whose loss (``eval_objective``'s, None: weighted SFT's) each
    checkpoint reports and records; ``epochs``: which examples each epoch trains (None: all)."""
    hp = run.spec.hyperparameters
    with (
        batching(model, data, packing=hp.packing, pad_id=pad_id, plan=plan) as layout,
        gradient_checkpointing(model, hp.gradient_checkpointing),
    ):
        if layout.fallback_reason:
            sink.emit(Noticed("PACKING_UNAVAILABLE", f"{layout.fallback_reason}; training on {layout.description} "
                                                     "batches instead (same losses, more padding)"))
        return _optimise(model, data, run, layout, sink, cancel, objective or WeightedSft(), digest, held_out or [],
                         epochs or EpochRows(len(data)), eval_objective)


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
    eval_objective: BatchObjective | None = None,
) -> tuple[float, float, int, float, Callable[[], None]]:
    from transformers import get_scheduler

    hp = run.spec.hyperparameters
    ckpt = run.checkpointing
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    per_step = hp.examples_per_step
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
            eval_loss, paused = None, None
            if held_out and not cancel.cancelled:
                try:
                    eval_loss = loss_over(model, layout, held_out, batch_size=hp.batch_size, cancel=cancel,
                                          objective=eval_objective)
                except Cancelled as stop:
                    if not cancel.keeps_progress:
                        raise
                    paused = stop  # a pause arrived while the eval split was measured: the step is kept without it
            if eval_loss is not None:
                sink.emit(EvalReported(step=step, split=EVAL_SPLIT, metrics=(("loss", eval_loss),)))
            if save_state(ckpt, model, optimizer, scheduler, step=step, losses=(loss_value, task_value),
                          eval_loss=eval_loss, data_key=key, sink=sink, main=main):
                saved_step = step
            if paused is not None:
                raise paused
        saved_at = time.monotonic()

    position = 0  # optimiser steps' batches drawn so far, done or (when resuming) skipped
    epoch = 0
    epoch_task: list[float] = []  # the task losses of the steps taken in the epoch under way (or the last one)
    while step < total:
        # A context manager: an epoch that raises (cancel, NaN) still ends its span, with the error recorded.
        with tracer.start_as_current_span("training.epoch", attributes={"epoch": step // per_epoch + 1}) as epoch_span:
            order = layout.epoch_order(data, epochs.rows(epoch), hp.batch_size, generator)
            epoch += 1
            this_epoch: list[float] = []
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
                penalty_value = float(penalty.detach())
                _check_finite(step + 1, task_value + penalty_value, grad_norm, learning_rate)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                now = time.monotonic()
                recent.append((now, recent[-1][1] + batch.real_tokens))
                elapsed = now - started
                window = now - recent[0][0]
                loss_value = task_value + penalty_value
                this_epoch.append(task_value)
                epoch_task = this_epoch
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

    def keep_last_step() -> None:
        """Called when the run stops after its last step: a checkpoint of it if the progress is kept (a pause)."""
        if cancel.cancelled and cancel.keeps_progress and ckpt is not None:
            checkpoint()

    epoch_loss = math.fsum(epoch_task) / len(epoch_task) if epoch_task else math.nan
    return loss_value, task_value, step, epoch_loss, keep_last_step
