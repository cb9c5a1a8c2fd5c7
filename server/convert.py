"""Protobuf <-> domain conversion for training jobs, in one place (what every kind of job shares: convert_jobs.py;
a dataset built from feedback, the labels check and the summary of a job's dataset: convert_dataset_source.py).

Defaults documented in the .proto files are filled in here, so the engine only
ever sees complete domain objects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TypeVar, cast

from engine.domain import (
    BaseProtection,
    BaseProtectionMethod,
    BaseRetention,
    FeedbackSource,
    FisherSpace,
    JsonlSource,
    LoraSpec,
    Objective,
    StoredDatasetSource,
)
from engine.errors import InvalidArgument, ViolationCollector
from engine.jobs.core import JobEvent
from engine.names import resource_id
from engine.training.dataset_records import parse_dataset_name
from engine.training.metrics import MetricsRow, TrainingMetrics
from engine.training.models import default_sharding
from engine.training.spec import (
    MAX_DEVICES,
    MAX_EVAL_FRACTION,
    CheckpointPolicy,
    CheckpointRecord,
    CheckpointSaved,
    EvalReported,
    EwcSpec,
    Hyperparameters,
    LrSchedule,
    ParentFisherProgress,
    Precision,
    Quantization,
    Sharding,
    StepMetrics,
    TrainingDefaults,
    TrainingJob,
    TrainingJobSpec,
)
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from server.convert_dataset_source import checked_labels, dataset_to_pb, feedback_source_from_pb, feedback_source_to_pb
from server.convert_jobs import (
    JOB_STATE_TO_PB,
    check_finite,
    core_event_to_pb,
    duration_to_pb,
    job_core_to_pb,
    timestamp_to_pb,
)

_PRECISION = {
    pb.PRECISION_UNSPECIFIED: Precision.AUTO,
    pb.PRECISION_AUTO: Precision.AUTO,
    pb.PRECISION_FP32: Precision.FP32,
    pb.PRECISION_BF16: Precision.BF16,
}
_QUANT = {
    pb.QUANTIZATION_UNSPECIFIED: Quantization.NONE,
    pb.QUANTIZATION_NONE: Quantization.NONE,
    pb.QUANTIZATION_NF4: Quantization.NF4,
    pb.QUANTIZATION_INT8: Quantization.INT8,
}
_SHARDING: dict[int, Sharding | None] = {
    pb.SHARDING_UNSPECIFIED: None,  # the server's default, where the job can be sharded (default_sharding)
    pb.SHARDING_NONE: Sharding.NONE,
    pb.SHARDING_FSDP: Sharding.FSDP,
}
_LR_SCHEDULE: dict[int, LrSchedule | None] = {
    pb.LR_SCHEDULE_UNSPECIFIED: None,  # the server's training_lr_schedule
    pb.LR_SCHEDULE_LINEAR: LrSchedule.LINEAR,
    pb.LR_SCHEDULE_COSINE: LrSchedule.COSINE,
    pb.LR_SCHEDULE_CONSTANT: LrSchedule.CONSTANT,
}
_OBJECTIVE = {
    pb.OBJECTIVE_UNSPECIFIED: Objective.SFT,
    pb.OBJECTIVE_SFT: Objective.SFT,
    pb.OBJECTIVE_KTO: Objective.KTO,
}

FISHER_SPACE_FROM_PB = {
    common.FISHER_SPACE_LORA_PARAMETERS: FisherSpace.LORA_PARAMETERS,
    common.FISHER_SPACE_LORA_PRODUCT: FisherSpace.LORA_PRODUCT,
}
FISHER_SPACE_TO_PB = {v: k for k, v in FISHER_SPACE_FROM_PB.items()}


@dataclass(frozen=True)
class EwcDefaults:
    """What a request leaving the Fisher space or the EWC lambda unset gets (the server's settings)."""

    space: FisherSpace
    lambdas: Mapping[FisherSpace, float]


def fisher_space_from_pb(value: common.FisherSpace, default: FisherSpace, field_path: str,
                         issues: ViolationCollector) -> FisherSpace:
    if value == common.FISHER_SPACE_UNSPECIFIED:
        return default
    return _enum(FISHER_SPACE_FROM_PB, value, field_path, issues)


K = TypeVar("K")
V = TypeVar("V")


def _enum(table: Mapping[K, V], value: K, field_path: str, issues: ViolationCollector) -> V:
    if value not in table:
        issues.add(field_path, f"unknown enum value {value}")
        return next(iter(table.values()))
    return table[value]


DEFAULT_TRAINING = TrainingDefaults()
MAX_REHEARSAL_FRACTION = 0.9
MAX_KL_WEIGHT = 100.0
MAX_BASE_EWC_LAMBDA = 100_000.0
MAX_SEED = 2**32 - 1  # what the run seeds (numpy's generator) takes

_BASE_PROTECTION = {common.BASE_PROTECTION_METHOD_NONE: BaseProtectionMethod.NONE,
                    common.BASE_PROTECTION_METHOD_SELF_REHEARSAL: BaseProtectionMethod.SELF_REHEARSAL,
                    common.BASE_PROTECTION_METHOD_BASE_KL: BaseProtectionMethod.BASE_KL,
                    common.BASE_PROTECTION_METHOD_EWC_BASE: BaseProtectionMethod.EWC_BASE}
_BASE_PROTECTION_TO_PB = {v: k for k, v in _BASE_PROTECTION.items()}


def base_protection_from_pb(msg: common.BaseProtection, defaults: BaseProtection, issues: ViolationCollector,
                            field_path: str) -> BaseProtection:
    """What protects the base model's knowledge; unset fields are the server's defaults. Violations are named
    ``<field_path>.fraction``, ...: ``field_path`` is where the request holds ``msg``."""
    method = defaults.method
    if msg.method != common.BASE_PROTECTION_METHOD_UNSPECIFIED:
        method = _enum(_BASE_PROTECTION, msg.method, f"{field_path}.method", issues)
    fraction = msg.fraction if msg.HasField("fraction") else defaults.fraction
    issues.check(0 <= fraction <= MAX_REHEARSAL_FRACTION and math.isfinite(fraction),
                 f"{field_path}.fraction", f"must lie in [0, {MAX_REHEARSAL_FRACTION}]")
    kl_weight = msg.kl_weight if msg.HasField("kl_weight") else defaults.kl_weight
    if not (0 <= kl_weight <= MAX_KL_WEIGHT and math.isfinite(kl_weight)):
        issues.add(f"{field_path}.kl_weight", f"must lie in [0, {MAX_KL_WEIGHT:g}]")
    elif method is BaseProtectionMethod.BASE_KL and kl_weight == 0:
        issues.add(f"{field_path}.kl_weight", "must be > 0 with BASE_KL (its only loss on the base model's answers)")
    ewc_lambda = msg.ewc_lambda if msg.HasField("ewc_lambda") else defaults.ewc_lambda
    if not (0 <= ewc_lambda <= MAX_BASE_EWC_LAMBDA and math.isfinite(ewc_lambda)):
        issues.add(f"{field_path}.ewc_lambda", f"must lie in [0, {MAX_BASE_EWC_LAMBDA:g}]")
    elif method is BaseProtectionMethod.EWC_BASE and ewc_lambda == 0:
        issues.add(f"{field_path}.ewc_lambda", "must be > 0 with EWC_BASE (its only term)")
    protection = BaseProtection(method, fraction, kl_weight, ewc_lambda)
    prompt_kl_weight = msg.prompt_kl_weight if msg.HasField("prompt_kl_weight") else defaults.prompt_kl_weight
    if not (0 <= prompt_kl_weight <= MAX_KL_WEIGHT and math.isfinite(prompt_kl_weight)):
        issues.add(f"{field_path}.prompt_kl_weight", f"must lie in [0, {MAX_KL_WEIGHT:g}]")
    elif not protection.rehearses:  # the term rides on the rehearsal's objective; a default does not apply here
        issues.check(not (msg.HasField("prompt_kl_weight") and prompt_kl_weight > 0),
                     f"{field_path}.prompt_kl_weight",
                     "applies only with SELF_REHEARSAL or BASE_KL and a fraction > 0")
        prompt_kl_weight = 0.0
    return replace(protection, prompt_kl_weight=prompt_kl_weight)


def base_protection_to_pb(protection: BaseProtection) -> common.BaseProtection:
    return common.BaseProtection(method=_BASE_PROTECTION_TO_PB[protection.method], fraction=protection.fraction,
                                 kl_weight=protection.kl_weight, ewc_lambda=protection.ewc_lambda,
                                 prompt_kl_weight=protection.prompt_kl_weight)


def checkpoints_from_pb(msg: pb.CheckpointPolicy, defaults: CheckpointPolicy, issues: ViolationCollector,
                        field_path: str) -> CheckpointPolicy:
    """When a job checkpoints; unset fields are the server's defaults, violations named under ``field_path``."""
    every_steps = msg.every_steps if msg.HasField("every_steps") else defaults.every_steps
    every_minutes = msg.every_minutes if msg.HasField("every_minutes") else defaults.every_minutes
    keep = msg.keep if msg.HasField("keep") else defaults.keep
    issues.check(every_steps <= 1_000_000, f"{field_path}.every_steps", "must be at most 1000000 (0: never)")
    issues.check(0 <= every_minutes <= 10_080 and math.isfinite(every_minutes), f"{field_path}.every_minutes",
                 "must lie in [0, 10080] (0: never)")
    issues.check(1 <= keep <= 100, f"{field_path}.keep", "must lie in [1, 100]")
    return CheckpointPolicy(every_steps=every_steps, every_minutes=every_minutes, keep=keep)


def spec_from_pb(msg: pb.TrainingJobSpec, *, default_base_model: str, ewc_defaults: EwcDefaults,
                 defaults: TrainingDefaults = DEFAULT_TRAINING, field_root: str = "spec") -> TrainingJobSpec:
    """The domain spec of a request: what it leaves unset (0, empty, or an optional field not set) is the
    server's default (``defaults``, from the settings). ``field_root`` is where the request holds ``msg``
    (``spec`` in CreateTrainingJob, ``pipeline.training`` in a pipeline's request): every violation is named by
    its path from there, so a client finds the field it sent."""
    issues = ViolationCollector()
    lora_defaults = defaults.lora
    lora = LoraSpec(
        rank=msg.lora.rank or lora_defaults.rank,
        alpha=msg.lora.alpha or lora_defaults.alpha,
        dropout=msg.lora.dropout if msg.lora.HasField("dropout") else lora_defaults.dropout,
        target_modules=tuple(msg.lora.target_modules) or lora_defaults.target_modules,
    )
    lora_set = tuple(name for name, given in (
        ("rank", msg.lora.rank != 0), ("alpha", msg.lora.alpha != 0), ("dropout", msg.lora.HasField("dropout")),
        ("target_modules", bool(msg.lora.target_modules)),
    ) if given)
    h, hd = msg.hyperparameters, defaults.hyperparameters
    hp = f"{field_root}.hyperparameters"
    hyper = Hyperparameters(
        epochs=h.epochs or hd.epochs,
        learning_rate=h.learning_rate or hd.learning_rate,
        batch_size=h.batch_size or hd.batch_size,
        max_seq_length=h.max_seq_length or hd.max_seq_length,
        seed=h.seed if h.HasField("seed") else hd.seed,
        max_steps=h.max_steps,
        warmup_steps=h.warmup_steps or hd.warmup_steps,
        lr_schedule=_enum(_LR_SCHEDULE, h.lr_schedule, f"{hp}.lr_schedule", issues) or hd.lr_schedule,
        weight_decay=h.weight_decay,
        max_grad_norm=h.max_grad_norm or hd.max_grad_norm,
        precision=_enum(_PRECISION, h.precision, f"{hp}.precision", issues),
        quantization=_enum(_QUANT, h.quantization, f"{hp}.quantization", issues),
        gradient_accumulation_steps=h.gradient_accumulation_steps or hd.gradient_accumulation_steps,
        gradient_checkpointing=h.gradient_checkpointing or hd.gradient_checkpointing,
        packing=h.packing if h.HasField("packing") else hd.packing,
        num_devices=h.num_devices or hd.num_devices,
        eval_fraction=h.eval_fraction if h.HasField("eval_fraction") else hd.eval_fraction,
    )
    sharding = _enum(_SHARDING, h.sharding, f"{hp}.sharding", issues)
    hyper = replace(hyper, sharding=sharding or Sharding.NONE)
    issues.check(hyper.seed <= MAX_SEED, f"{hp}.seed", f"must lie in [0, {MAX_SEED}] (2**32 - 1)")
    issues.check(h.learning_rate >= 0, f"{hp}.learning_rate", "must be a finite number >= 0 (0: the server's)")
    issues.check(h.weight_decay >= 0, f"{hp}.weight_decay", "must be a finite number >= 0")
    issues.check(0 <= h.max_grad_norm <= 1e6, f"{hp}.max_grad_norm",
                 "must lie in [0, 1e6] (0: the server's training_max_grad_norm)")
    issues.check(hyper.epochs <= 1000, f"{hp}.epochs", "must be at most 1000")
    issues.check(hyper.batch_size <= 1024, f"{hp}.batch_size", "must be at most 1024")
    issues.check(0 <= hyper.eval_fraction <= MAX_EVAL_FRACTION, f"{hp}.eval_fraction",
                 f"must lie in [0, {MAX_EVAL_FRACTION}]")
    issues.check(h.num_devices <= MAX_DEVICES, f"{hp}.num_devices", f"must be at most {MAX_DEVICES}")
    issues.check(hyper.gradient_accumulation_steps <= 1024, f"{hp}.gradient_accumulation_steps",
                 "must be at most 1024")
    issues.check(16 <= hyper.max_seq_length <= 32768, f"{hp}.max_seq_length",
                 "must lie in [16, 32768]")
    e = msg.ewc
    space = fisher_space_from_pb(e.fisher_space, ewc_defaults.space, f"{field_root}.ewc.fisher_space", issues)
    ewc = EwcSpec(
        ewc_lambda=e.ewc_lambda if e.HasField("ewc_lambda") else ewc_defaults.lambdas[space],
        gamma=e.gamma if e.HasField("gamma") else 1.0,
        fisher_snapshot=e.fisher_snapshot,
        replay_fraction=e.replay_fraction,
        disabled=e.disabled,
        space=space,
    )
    source = msg.WhichOneof("dataset")
    dataset: JsonlSource | FeedbackSource | StoredDatasetSource
    if source == "jsonl":
        issues.check(bool(msg.jsonl.path), f"{field_root}.jsonl.path", "must name a dataset file below the data root")
        dataset = JsonlSource(path=msg.jsonl.path)
    elif source == "feedback":
        dataset = feedback_source_from_pb(msg.feedback, issues, f"{field_root}.feedback")
    elif source == "dataset_name":
        try:
            parse_dataset_name(msg.dataset_name, f"{field_root}.dataset_name")
        except InvalidArgument as exc:
            issues.violations.extend(exc.violations)
        dataset = StoredDatasetSource(name=msg.dataset_name)
    else:
        issues.add(f"{field_root}.dataset",
                   f"set {field_root}.jsonl, {field_root}.feedback or {field_root}.dataset_name")
        dataset = JsonlSource(path="")
    checkpoints = checkpoints_from_pb(msg.checkpoints, defaults.checkpoints, issues, f"{field_root}.checkpoints")
    base_protection = base_protection_from_pb(msg.base_protection, defaults.base_protection, issues,
                                              f"{field_root}.base_protection")
    objective = _enum(_OBJECTIVE, msg.objective, f"{field_root}.objective", issues)
    if objective is Objective.KTO:  # engine.training.kto: a lone example has no other's answer to estimate z0 from
        unset = "" if h.batch_size else f" (unset: the server's training_batch_size, {hyper.batch_size})"
        issues.check(hyper.examples_per_step > 1, f"{hp}.batch_size",
                     f"must be > 1 with OBJECTIVE_KTO, or gradient_accumulation_steps > 1{unset}: KTO estimates its "
                     "KL reference point from each step's examples paired with one another's answers, and a step "
                     "of one example has none")
    labels = checked_labels(msg.labels, f"{field_root}.labels", issues)
    _check_finite(msg, issues, field_root)
    issues.raise_if_any("INVALID_TRAINING_SPEC", "invalid training job spec")
    resolved = TrainingJobSpec(
        base_model=msg.base_model or default_base_model,
        dataset=dataset,
        lora=lora,
        hyperparameters=hyper,
        objective=objective,
        parent_adapter_version=msg.parent_adapter_version,
        ewc=ewc,
        major_version_bump=msg.major_version_bump,
        labels=labels,
        lora_fields_set=lora_set,
        checkpoints=checkpoints,
        base_protection=base_protection,
    )
    if sharding is not None:
        return resolved
    return replace(resolved, hyperparameters=replace(hyper, sharding=default_sharding(hd.sharding, resolved)))


def spec_to_pb(spec: TrainingJobSpec) -> pb.TrainingJobSpec:
    h = spec.hyperparameters
    msg = pb.TrainingJobSpec(
        base_model=spec.base_model,
        lora=common.LoraConfig(
            rank=spec.lora.rank, alpha=spec.lora.alpha, dropout=spec.lora.dropout,
            target_modules=list(spec.lora.target_modules),
        ),
        hyperparameters=pb.Hyperparameters(
            epochs=h.epochs, learning_rate=h.learning_rate, batch_size=h.batch_size,
            max_seq_length=h.max_seq_length, seed=h.seed, max_steps=h.max_steps,
            warmup_steps=h.warmup_steps, weight_decay=h.weight_decay, max_grad_norm=h.max_grad_norm,
            precision=cast(pb.Precision, pb.Precision.Value(f"PRECISION_{h.precision.value}")),
            quantization=cast(pb.Quantization, pb.Quantization.Value(f"QUANTIZATION_{h.quantization.value}")),
            gradient_accumulation_steps=h.gradient_accumulation_steps,
            gradient_checkpointing=h.gradient_checkpointing, packing=h.packing, num_devices=h.num_devices,
            eval_fraction=h.eval_fraction,
            sharding=cast(pb.Sharding, pb.Sharding.Value(f"SHARDING_{h.sharding.value}")),
            lr_schedule=cast(pb.LrSchedule, pb.LrSchedule.Value(f"LR_SCHEDULE_{h.lr_schedule.value}")),
        ),
        objective=cast(pb.Objective, pb.Objective.Value(f"OBJECTIVE_{spec.objective.value}")),
        parent_adapter_version=spec.parent_adapter_version,
        ewc=pb.EwcConfig(
            ewc_lambda=spec.ewc.ewc_lambda, gamma=spec.ewc.gamma, fisher_snapshot=spec.ewc.fisher_snapshot,
            replay_fraction=spec.ewc.replay_fraction, disabled=spec.ewc.disabled,
            fisher_space=FISHER_SPACE_TO_PB[spec.ewc.space],
        ),
        major_version_bump=spec.major_version_bump,
        labels=dict(spec.labels),
        checkpoints=pb.CheckpointPolicy(every_steps=spec.checkpoints.every_steps,
                                        every_minutes=spec.checkpoints.every_minutes, keep=spec.checkpoints.keep),
        base_protection=base_protection_to_pb(spec.base_protection),
    )
    if isinstance(spec.dataset, JsonlSource):
        msg.jsonl.path = spec.dataset.path
    elif isinstance(spec.dataset, StoredDatasetSource):
        msg.dataset_name = spec.dataset.name
    else:
        msg.feedback.CopyFrom(feedback_source_to_pb(spec.dataset))
    return msg


def _check_finite(msg: pb.TrainingJobSpec, issues: ViolationCollector, field_root: str) -> None:
    """Every float of the spec must be finite (an infinite or NaN one was stored as null, and the job could not be
    read): each one that is not is named by its exact path, unless a range check above named it already (it keeps
    that check's words)."""
    finite = ViolationCollector()
    check_finite(msg, field_root, finite)
    named = {v.field for v in issues.violations}
    issues.violations.extend(v for v in finite.violations if v.field not in named)


def checkpoint_to_pb(c: CheckpointRecord) -> pb.TrainingCheckpoint:
    msg = pb.TrainingCheckpoint(step=c.step, uri=c.uri, loss=c.loss, sha256=c.sha256, size_bytes=c.size_bytes,
                                create_time=timestamp_to_pb(c.create_time))
    if c.eval_loss is not None:
        msg.eval_loss = c.eval_loss
    return msg


def metrics_to_pb(m: StepMetrics) -> pb.TrainingStepMetrics:
    return pb.TrainingStepMetrics(
        step=m.step, total_steps=m.total_steps, epoch=m.epoch, loss=m.loss, task_loss=m.task_loss,
        ewc_penalty=m.ewc_penalty, learning_rate=m.learning_rate, grad_norm=m.grad_norm,
        tokens_per_second=m.tokens_per_second, eta=duration_to_pb(m.eta_seconds),
    )


def metrics_row_to_pb(r: MetricsRow) -> pb.TrainingMetricsRow:
    msg = pb.TrainingMetricsRow(
        step=r.step, time=timestamp_to_pb(r.time), total_steps=r.total_steps, epoch=r.epoch, loss=r.loss,
        task_loss=r.task_loss,
        ewc_penalty=r.ewc_penalty, learning_rate=r.learning_rate, grad_norm=r.grad_norm,
        tokens_per_second=r.tokens_per_second,
    )
    if r.eval_loss is not None:
        msg.eval_loss = r.eval_loss
    return msg


def training_metrics_to_pb(job: TrainingJob, m: TrainingMetrics) -> pb.GetTrainingMetricsResponse:
    return pb.GetTrainingMetricsResponse(rows=[metrics_row_to_pb(r) for r in m.table.rows], csv=m.csv, png=m.png,
                                         state=JOB_STATE_TO_PB[job.state])


def base_retention_to_pb(kept: BaseRetention) -> common.BaseRetention:
    return common.BaseRetention(retention=kept.retention, kept=kept.kept, cases=kept.cases, lost=list(kept.lost))


def job_to_pb(job: TrainingJob) -> pb.TrainingJob:
    out = job.output
    msg = job_core_to_pb(job, pb.TrainingJob(
        spec=spec_to_pb(job.spec), output_adapter_version=out.adapter_version, device=out.device,
        worker=job.worker, priority=job.priority,
    ))
    if out.dataset is not None:
        msg.dataset.CopyFrom(dataset_to_pb(out.dataset))
    if out.base_retention is not None:
        msg.base_retention.CopyFrom(base_retention_to_pb(out.base_retention))
    msg.base_rehearsed_examples = out.base_rehearsed_examples
    if out.latest_metrics is not None:
        msg.latest_metrics.CopyFrom(metrics_to_pb(out.latest_metrics))
    if out.metrics_artifacts is not None:
        a = out.metrics_artifacts
        msg.metrics_artifacts.CopyFrom(pb.TrainingMetricsArtifacts(csv_uri=a.csv_uri, png_uri=a.png_uri,
                                                                   row_count=a.rows))
    if out.ewc_lineage is not None:  # as resolved when the job ran (the snapshot may be computed then)
        e = out.ewc_lineage
        msg.ewc_lineage.CopyFrom(pb.EwcLineage(
            parent_adapter_version=e.parent_adapter_version, fisher_snapshot=e.fisher_snapshot,
            ewc_lambda=e.ewc_lambda, gamma=e.gamma, replay_fraction=e.replay_fraction,
            fisher_space=FISHER_SPACE_TO_PB[e.space],
        ))
    elif job.spec.parent_adapter_version and not job.spec.ewc.disabled:
        ewc = job.spec.ewc
        msg.ewc_lineage.CopyFrom(pb.EwcLineage(
            parent_adapter_version=job.spec.parent_adapter_version, fisher_snapshot=ewc.fisher_snapshot,
            ewc_lambda=ewc.ewc_lambda, gamma=ewc.gamma, replay_fraction=ewc.replay_fraction,
            fisher_space=FISHER_SPACE_TO_PB[ewc.space],
        ))
    return msg


def event_to_pb(event: JobEvent) -> pb.TrainingJobEvent:
    msg = core_event_to_pb(event, pb.TrainingJobEvent())
    p = event.payload
    if isinstance(p, StepMetrics):
        msg.step_metrics.CopyFrom(metrics_to_pb(p))
    elif isinstance(p, CheckpointSaved):
        msg.checkpoint.CopyFrom(checkpoint_to_pb(p.checkpoint))
    elif isinstance(p, EvalReported):
        msg.eval_result.CopyFrom(pb.TrainingEvalResult(
            step=p.step, split=p.split, metrics=[common.EvalMetric(name=n, value=v) for n, v in p.metrics],
        ))
    elif isinstance(p, ParentFisherProgress):
        msg.parent_fisher_progress.CopyFrom(pb.ParentFisherProgress(
            samples_done=p.samples_done, samples_total=p.samples_total, samples_per_second=p.samples_per_second))
    return msg


def job_id_from_name(name: str, field_path: str = "name") -> str:
    return resource_id(name, "trainingJobs", field_path)


