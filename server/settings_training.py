"""Training's part of the one settings object (mixed into ``server.settings.Settings``): what a training job gets
for what its request leaves unset (LoRA, hyperparameters, checkpoints, the base model's protection, EWC), and the
limits a request must keep. See docs/training.md and docs/continual-learning.md."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import BaseModel, Field, field_validator, model_validator

from engine.domain import DEFAULT_TARGET_MODULES, BaseProtection, BaseProtectionMethod, FisherSpace, LoraSpec
from engine.registry.peft_checks import MAX_LORA_RANK
from engine.training.spec import (
    MAX_DEVICES,
    MAX_EVAL_FRACTION,
    CheckpointPolicy,
    Hyperparameters,
    LrSchedule,
    Sharding,
    TrainingDefaults,
)


class TrainingSettings(BaseModel):
    training_lora_rank: int = Field(16, ge=1, le=MAX_LORA_RANK, description="LoRA rank of a job that sets none.")
    training_lora_alpha: float = Field(32.0, gt=0, le=4096, description="LoRA alpha of a job that sets none "
                                       "(the update is scaled by alpha / rank).")
    training_lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout of a job that sets none.")
    training_lora_target_modules: tuple[str, ...] = Field(
        DEFAULT_TARGET_MODULES, min_length=1, description="Modules a job's LoRA adapts when it names none.",
    )
    training_epochs: int = Field(3, ge=1, le=1000, description="Epochs of a job that sets none.")
    training_learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate of a job that sets none "
                                          "(linear warmup, then linear decay to 0).")
    training_warmup_steps: int = Field(0, ge=0, le=1_000_000, description="Warmup steps of a job that sets none "
                                       "(a job's 0 means this default).")
    training_lr_schedule: LrSchedule = Field(
        LrSchedule.LINEAR, description="How the learning rate of a job that sets no schedule moves after its warm-up "
        "to its last step: LINEAR (down to 0), COSINE (half a cosine wave down to 0) or CONSTANT (the peak rate).",
    )
    training_max_grad_norm: float = Field(
        1.0, gt=0, le=1e6, description="Gradient clipping of a job that sets none: each optimiser step's gradients "
        "are scaled down to this global norm when theirs is larger (a job's 0 means this default).",
    )
    training_batch_size: int = Field(8, ge=1, le=1024, description="Examples per micro-batch of a job that sets none.")
    training_gradient_accumulation_steps: int = Field(
        1, ge=1, le=1024, description="Micro-batches per optimiser step of a job that sets none.",
    )
    training_max_seq_length: int = Field(512, ge=16, le=32768, description="Tokens per example of a job that sets "
                                         "none (longer examples are cut).")
    training_packing: bool = Field(True, description="Packed batches (each example attends only to itself) for a "
                                   "job that does not say; false: padded batches.")
    training_num_devices: int = Field(
        0, ge=0, le=MAX_DEVICES, description="GPUs a job that sets none trains on in parallel (one process each, "
        "through accelerate); 0: every GPU of the worker running it (one device on a worker without GPUs). With "
        "several jobs at once per worker (max_concurrent_jobs), give each its share.",
    )
    training_sharding: Sharding = Field(
        Sharding.NONE, description="How the devices of a job training on several hold its model, for a job that "
        "does not say: NONE (whole on each; each step's examples shared out) or FSDP (sharded across them per "
        "decoder layer, for bases that do not fit one GPU; slower for those that do). Jobs that cannot be sharded "
        "(a quantized base, KTO, num_devices 1) train unsharded; a job resolving to one "
        "GPU on its worker fails FSDP_NEEDS_SEVERAL_DEVICES.",
    )
    training_eval_fraction: float = Field(
        0.0, ge=0, le=MAX_EVAL_FRACTION, description="Fraction of a job's examples held out by prompt as its eval "
        "split (their loss at each checkpoint and at the end, on the version as its eval loss), for a job that "
        "does not say; 0: every example is trained on (small sets of facts: a held-out fact is never learned).",
    )
    base_protection_method: BaseProtectionMethod = Field(
        BaseProtectionMethod.BASE_KL, description="What keeps a job's adapter from forgetting what the base model "
        "knew, for a job that does not say: NONE, SELF_REHEARSAL (the base model's own answers to the "
        "project's general prompts mixed into training), or BASE_KL (the same answers mixed in, trained only by a "
        "KL term to the base model's distribution on them), or EWC_BASE (no answers mixed in: an EWC "
        "penalty holding each LoRA product near the base model's weights under the base model's Kronecker-factored "
        "Fisher on its answers).",
    )
    base_rehearsal_fraction: float = Field(
        0.3, ge=0, le=0.9, description="SELF_REHEARSAL, BASE_KL: the share of each epoch's examples that is the base "
        "model's answers (taken in rotation from all of them), for a job that does not say (capped by the prompts "
        "there are). A fraction f adds f / (1 - f) of the job's rows, and training time grows about as the tokens "
        "do: 0.3 adds 43% of a small job's rows (1.4x its time at 12 facts; see docs/continual-learning.md).",
    )
    base_kl_weight: float = Field(
        2.0, ge=0, le=100, description="The weight of KL(base || adapted) on the base model's answers mixed into "
        "training, for a job that does not say: BASE_KL's only loss on them (it must be > 0 there), added to their "
        "NLL with SELF_REHEARSAL (0: plain self-rehearsal).",
    )
    base_prompt_kl_weight: float = Field(
        0.0, ge=0, le=100, description="SELF_REHEARSAL, BASE_KL: the weight of KL(base || adapted) at the job's own "
        "rows' positions that predict no target token (their prompt and chat markup), for a job that does not say; "
        "0 is off (measured, it kept no more of the base model and slowed a continuation's task; see "
        "docs/continual-learning.md).",
    )
    base_ewc_lambda: float = Field(
        64.0, ge=0, le=100_000, description="EWC_BASE: the weight of its penalty lambda / 2 * sum tr(G (B @ A) X "
        "(B @ A)^T) over the LoRA pairs (G, X the base model's Kronecker factors on its answers), which estimates "
        "lambda times the mean KL(base || adapted) per answer token on them, for a job that does not say (it must be "
        "> 0 there; see docs/continual-learning.md).",
    )
    base_retention_probe: bool = Field(
        True, description="After training, measure what the model kept of its base model's general knowledge (the "
        "shipped general questions the base model answers right, asked again: tens of seconds on a CPU) and record "
        "it on the job and the version.",
    )
    training_gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass for every job (less memory, about one more "
        "forward pass); a job can also ask for it alone.",
    )
    checkpoint_every_steps: int = Field(
        50, ge=0, le=1_000_000,
        description="A training job checkpoints every this many optimiser steps (0: never by count), besides at "
        "pause and shutdown; a job may say otherwise (spec.checkpoints). See docs/training.md, Durable jobs, for "
        "its cost.",
    )
    checkpoint_every_minutes: float = Field(
        10.0, ge=0, le=10_080, description="... and every this many minutes (0: never by time).",
    )
    checkpoint_keep: int = Field(3, ge=1, le=100, description="Checkpoints kept per job, newest first.")
    training_trackers: tuple[str, ...] = Field(
        (), description="Experiment trackers each training job's metrics are also logged to, one run per job, by "
        "accelerate's tracker classes: tensorboard (the `tracking` extra), wandb, mlflow, aim, comet_ml, clearml, "
        "dvclive, swanlab, trackio, each configured its usual way (e.g. WANDB_API_KEY). A tracker unknown or whose "
        "library is not installed stops the server at start; one failing later is a job warning (TRACKER_FAILED).",
    )
    training_trackers_dir: Path | None = Field(
        None, description="Folder of the trackers that log locally (tensorboard, aim); unset: <data-dir>/trackers. "
        "TensorBoard: `tensorboard --logdir <folder>` (a job's run is trainingJobs/<id>).",
    )
    ewc_lambda_min: float = Field(
        0.001, ge=0,
        description="Smallest EWC lambda a job may ask for. Lambda multiplies the mean-normalised Fisher (mean "
        "weight 1), so it is the strength of a plain L2 anchor to the parent; see docs/continual-learning.md.",
    )
    ewc_lambda_max: float = Field(100.0, gt=0, description="Largest EWC lambda a job may ask for.")
    ewc_fisher_space: FisherSpace = Field(
        FisherSpace.LORA_PARAMETERS,
        description="What EWC penalises when a job (or a Fisher job) does not say: LORA_PARAMETERS, the entries of "
        "A and B, or LORA_PRODUCT, each LoRA pair's product B·A. At their chosen lambdas both kept about 40% of "
        "the earlier task on the test seeds, and the products cost 14x the snapshot size (see "
        "docs/continual-learning.md).",
    )
    ewc_lambda_default: float = Field(
        0.1, gt=0, description="EWC lambda when a job names none and its penalty is in the LORA_PARAMETERS space "
        "(chosen on held-out tasks together with base_kl_weight, since a continuation has both by default; see "
        "docs/continual-learning.md).",
    )
    ewc_product_lambda_default: float = Field(
        0.3, gt=0, description="EWC lambda when a job names none and its penalty is in the LORA_PRODUCT space "
        "(chosen on held-out tasks as the entries' 0.3 was, without the base protection; not chosen again with it).",
    )
    fisher_batch_size: int = Field(
        8, ge=1, le=1024, description="Samples per vectorised pass of a Fisher job (CreateFisherJob). Larger is "
        "faster and takes more memory, as a training batch does: bench/fisher.py measures the closed form 3.2x "
        "faster than the naive per-sample loop at 8 and 4.0x at 32 (1 thread). A training job's own Fisher "
        "pre-pass uses the job's batch_size.",
    )

    @field_validator("training_trackers")
    @classmethod
    def _trackers_available(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if v:  # accelerate imports torch: only when trackers are named
            from engine.training.tracking import tracker_problems

            if problems := tracker_problems(v):
                raise ValueError("; ".join(problems))
        return v

    @model_validator(mode="after")
    def _base_kl_has_a_weight(self) -> Self:
        if self.base_protection_method is BaseProtectionMethod.BASE_KL and self.base_kl_weight <= 0:
            raise ValueError("base_protection_method BASE_KL needs base_kl_weight > 0 (its only loss on the base "
                             "model's answers)")
        if self.base_protection_method is BaseProtectionMethod.EWC_BASE and self.base_ewc_lambda <= 0:
            raise ValueError("base_protection_method EWC_BASE needs base_ewc_lambda > 0 (its only term)")
        return self

    @model_validator(mode="after")
    def _lambda_range(self) -> Self:
        for name in ("ewc_lambda_default", "ewc_product_lambda_default"):
            value = getattr(self, name)
            if not self.ewc_lambda_min <= value <= self.ewc_lambda_max:
                raise ValueError(
                    f"{name} {value} must lie in "
                    f"[ewc_lambda_min {self.ewc_lambda_min}, ewc_lambda_max {self.ewc_lambda_max}]"
                )
        return self

    @property
    def training_defaults(self) -> TrainingDefaults:
        """What a training job gets for what its request leaves unset."""
        return TrainingDefaults(
            lora=LoraSpec(rank=self.training_lora_rank, alpha=self.training_lora_alpha,
                          dropout=self.training_lora_dropout, target_modules=self.training_lora_target_modules),
            hyperparameters=Hyperparameters(
                epochs=self.training_epochs, learning_rate=self.training_learning_rate,
                warmup_steps=self.training_warmup_steps, lr_schedule=self.training_lr_schedule,
                max_grad_norm=self.training_max_grad_norm,
                batch_size=self.training_batch_size,
                gradient_accumulation_steps=self.training_gradient_accumulation_steps,
                max_seq_length=self.training_max_seq_length, packing=self.training_packing,
                gradient_checkpointing=self.training_gradient_checkpointing,
                num_devices=self.training_num_devices, eval_fraction=self.training_eval_fraction,
                sharding=self.training_sharding,
            ),
            checkpoints=CheckpointPolicy(every_steps=self.checkpoint_every_steps,
                                         every_minutes=self.checkpoint_every_minutes, keep=self.checkpoint_keep),
            base_protection=BaseProtection(self.base_protection_method, self.base_rehearsal_fraction,
                                           self.base_kl_weight, self.base_ewc_lambda, self.base_prompt_kl_weight),
        )

    @property
    def ewc_lambda_defaults(self) -> dict[FisherSpace, float]:
        """The lambda a job gets when it names none, by the space of its penalty."""
        return {FisherSpace.LORA_PARAMETERS: self.ewc_lambda_default,
                FisherSpace.LORA_PRODUCT: self.ewc_product_lambda_default}
