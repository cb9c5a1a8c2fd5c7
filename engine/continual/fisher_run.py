"""Measure an adapter: load the base model and the adapter, encode the samples, compute the Fisher.

Synchronous, meant for a worker thread (like ``engine.training.recipe.run_training``). A Fisher job loads the
base model in fp32 (:func:`run_fisher`); a training job measures its parent on the model it then trains
(:func:`measure_model`), so the base model is loaded once per job.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from engine.continual.ewc import check_same_shapes, shapes_of
from engine.continual.fisher import (
    Diagonal,
    FisherEstimator,
    FisherResult,
    FisherSpace,
    compute_fisher,
    parameter_shapes,
)
from engine.domain import Example
from engine.errors import FailedPrecondition
from engine.jobs.ports import CancelToken
from engine.training.datasets import encode_dataset, pad_token_id
from engine.training.models import load_base_model, select_device
from engine.training.spec import Precision, Quantization

ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class FisherRun:
    base_model_dir: Path
    adapter_dir: Path
    examples: Sequence[Example]
    estimator: FisherEstimator = FisherEstimator.EMPIRICAL
    max_seq_length: int = 512
    batch_size: int = 8
    seed: int = 0
    space: FisherSpace = FisherSpace.LORA_PARAMETERS


def load_adapter_weights(adapter_dir: Path) -> Diagonal:
    """The adapter's LoRA tensors by canonical name (theta*, the EWC anchor)."""
    path = adapter_dir / ADAPTER_WEIGHTS
    if not path.is_file():
        raise FailedPrecondition("PARENT_ADAPTER_UNAVAILABLE", f"adapter weights {path} are missing")
    return {name: tensor.float() for name, tensor in load_file(path).items()}


def load_adapter_model(base_model_dir: Path, adapter_dir: Path) -> tuple[Any, Any]:
    """Base model (fp32) with the adapter attached, LoRA parameters trainable, in eval mode."""
    from peft import PeftModel

    base, tokenizer = load_base_model(
        base_model_dir, plan=select_device(Precision.FP32), quantization=Quantization.NONE
    )
    model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)
    model.eval()
    return model, tokenizer


def run_fisher(
    run: FisherRun, *, cancel: CancelToken | None = None, progress: Callable[[int, int], None] | None = None
) -> FisherResult:
    """Load the base model and the adapter (fp32, eval mode), check the adapter file, and measure."""
    model, tokenizer = load_adapter_model(run.base_model_dir, run.adapter_dir)
    try:
        anchor = load_adapter_weights(run.adapter_dir)
        check_same_shapes(shapes_of(anchor), parameter_shapes(model), what="the adapter file",
                          reason="ADAPTER_SHAPE_MISMATCH")
        return measure_model(model, tokenizer, run, cancel=cancel, progress=progress)
    finally:
        del model
        gc.collect()


def measure_model(
    model: Any, tokenizer: Any, run: FisherRun, *, cancel: CancelToken | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FisherResult:
    """The Fisher of ``run.examples`` under an already loaded model whose trainable parameters are the adapter's
    LoRA tensors (a training job's own model, the parent attached). Measured in eval mode and without gradient
    checkpointing (its recomputed forward would tap each layer twice); the model's mode is restored after."""
    was_training = model.training
    checkpointing = bool(getattr(model, "is_activation_checkpointing", False))
    if checkpointing:
        model.gradient_checkpointing_disable()
    try:
        data = encode_dataset(tokenizer, run.examples, run.max_seq_length)
        return compute_fisher(
            model, data, estimator=run.estimator, space=run.space, batch_size=run.batch_size,
            pad_id=pad_token_id(tokenizer), seed=run.seed, cancel=cancel, progress=progress,
        )
    finally:
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train(was_training)
