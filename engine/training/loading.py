"""A training run's model: the base model loaded once with the run's adapter attached (a fresh LoRA, or the parent's
to continue), and the adapter saved atomically at the end. engine.training.recipe trains it; online sessions
(engine.online) load and save theirs the same way.
"""

from __future__ import annotations

import gc
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.domain import LoraSpec
from engine.errors import FailedPrecondition
from engine.registry.peft_checks import module_names, validate_lora
from engine.training.models import (
    DevicePlan,
    check_sharding,
    device_count,
    load_base_model,
    make_temp_dir,
    select_device,
)
from engine.training.run import TrainingRun
from engine.training.spec import Sharding


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
