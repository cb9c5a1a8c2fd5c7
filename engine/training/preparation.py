"""A training job's inputs, validated and resolved once when the job is created.

Everything that can be checked before a job is accepted is checked here, so bad input fails the
CreateTrainingJob call itself (INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION) rather than a queued job
minutes later. What validation resolves (the dataset with its digest and, for feedback, its fixed window; the
parent's record; the base model's directory) is returned as :class:`PreparedInputs` and is what the run uses.
A job created by an earlier process (requeued after a restart) resolves the same inputs again from the
provenance recorded on it (:meth:`JobPreparer.resolve`).
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from engine.domain import (
    LORA_FIELDS,
    DatasetSummary,
    Example,
    FeedbackSource,
    JsonlSource,
    Objective,
    Pin,
    StoredDatasetSource,
    dataset_digest,
)
from engine.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, ViolationCollector
from engine.feedback.dataset import FeedbackDataset, FeedbackDatasetBuilder
from engine.registry import AdapterRecord, AdapterRegistry
from engine.registry.peft_checks import ServingLimits, module_names, validate_lora
from engine.splits import SplitRule
from engine.training.datasets import load_jsonl, resolve_dataset_path
from engine.training.models import check_sharding, resolve_base_model
from engine.training.spec import TrainingJobSpec
from engine.training.stored_datasets import StoredDatasets

Window = tuple[datetime | None, datetime | None]  # a feedback dataset's [start, end], as recorded
STORED_FIELD = "spec.dataset_name"


@dataclass(frozen=True)
class PreparerConfig:
    datasets_dir: Path
    models_cache_dir: Path
    base_models: Mapping[str, Path]
    ewc_lambda_min: float
    ewc_lambda_max: float
    serving_limits: ServingLimits | None = None  # what the serving engine loads; None: no limit beyond the model's


@dataclass(frozen=True)
class ResolvedDataset:
    examples: list[Example]
    summary: DatasetSummary  # digest, composition, window and provenance (source, objective)
    desirable: tuple[bool, ...] | None = None  # per example, KTO's labels (feedback datasets under KTO)
    split: SplitRule | None = None  # the dataset's own eval split of ``examples`` (a stored dataset's), if any


@dataclass(frozen=True)
class PreparedInputs:
    """What a job runs on, resolved once."""

    spec: TrainingJobSpec  # as it runs: with a parent, the LoRA fields it left unset are the parent's
    dataset: ResolvedDataset
    parent: AdapterRecord | None
    model_dir: Path
    note: str = ""  # set when the inputs were resolved again and differ from those validated


class JobPreparer:
    def __init__(
        self, config: PreparerConfig, registry: AdapterRegistry, feedback: FeedbackDatasetBuilder | None = None,
        datasets: StoredDatasets | None = None,
    ) -> None:
        self._config = config
        self._registry = registry
        self._feedback = feedback
        self._datasets = datasets

    async def validate(self, spec: TrainingJobSpec) -> PreparedInputs:
        """Check that the job can run and resolve its inputs; raise a typed error otherwise."""
        model_dir = await self.check_request(spec)  # before a parent's shape is compared with its LoRA fields
        parent = await self._parent(spec) if spec.parent_adapter_version else None
        if parent is not None:
            spec = inherit_lora(spec, parent)
        return PreparedInputs(spec, await self._dataset(spec), parent, model_dir)

    def pins(self, dataset: DatasetSummary | None, parent: AdapterRecord | None) -> tuple[Pin, ...]:
        """What a job (or a version published from its checkpoint) names and needs live, pinned as it is stored
        (engine.domain.Pin): the stored dataset version ``dataset`` was pinned to (StoredDatasets.pin; none for a
        JSONL file or a feedback window) and the ``parent`` it continues (AdapterRegistry.pin). One deleted since
        validation read it stores nothing (NOT_FOUND); a delete that comes later finds what was stored and refuses
        (DATASET_IN_USE, ADAPTER_PROTECTED)."""
        source = dataset.source if dataset is not None else None
        stored = self._datasets.pin(source.name) if isinstance(source, StoredDatasetSource) and self._datasets else None
        return tuple(p for p in (stored, self._registry.pin(parent) if parent is not None else None) if p is not None)

    async def check_request(self, spec: TrainingJobSpec, field_prefix: str = "spec") -> Path:
        """The checks a spec fails whatever data, parent or feedback there is, with its fields named under
        ``field_prefix``: run on each job, and on a pipeline's training template (engine.pipelines.service), which
        would otherwise fail every run it starts. Returns the base model's directory."""
        self._check_ewc(spec, field_prefix)
        check_target_modules(spec, field_prefix)
        # the devices a job of num_devices 0 trains on are known on its worker only (checked again there)
        check_sharding(spec, spec.hyperparameters.num_devices or None)
        if spec.objective is Objective.KTO and not isinstance(spec.dataset, FeedbackSource):
            raise InvalidArgument(
                "KTO_NEEDS_FEEDBACK",
                "the KTO objective needs desirable/undesirable labels, which only feedback datasets carry",
                violations=[FieldViolation(f"{field_prefix}.objective",
                                           f"use OBJECTIVE_KTO with {field_prefix}.feedback")],
            )
        model_dir = await asyncio.to_thread(self._model_dir, spec.base_model)
        available = await asyncio.to_thread(module_names, model_dir)
        validate_lora(spec.lora, available, field_prefix, self._config.serving_limits)
        return model_dir

    async def resolve(self, spec: TrainingJobSpec, recorded: DatasetSummary | None) -> PreparedInputs:
        """The inputs of a job created by an earlier process: the same dataset (the same window, for feedback),
        checked against the digest ``recorded`` when it was created."""
        parent = await self._parent(spec) if spec.parent_adapter_version else None
        model_dir = await asyncio.to_thread(self._model_dir, spec.base_model)
        if recorded is None or recorded.digest == "":
            return PreparedInputs(spec, await self._dataset(spec), parent, model_dir)
        pinned = recorded.source if isinstance(recorded.source, StoredDatasetSource) else None
        dataset = await self._dataset(spec, window=(recorded.window_start, recorded.window_end), pinned=pinned)
        note = ""
        if dataset.summary.digest != recorded.digest:
            if isinstance(spec.dataset, JsonlSource):
                raise FailedPrecondition(
                    "DATASET_CHANGED",
                    f"dataset {spec.dataset.path} changed after the job was created (it had {recorded.example_count} "
                    f"examples, digest {recorded.digest[:12]}; now {dataset.summary.example_count}, "
                    f"{dataset.summary.digest[:12]}); create the job again to train on it",
                    metadata={"recorded_digest": recorded.digest, "digest": dataset.summary.digest},
                )
            note = (f"the feedback of its window holds {dataset.summary.example_count} examples now against the "
                    f"{recorded.example_count} validated (events deleted since)")
        return PreparedInputs(spec, dataset, parent, model_dir, note)

    async def fetch_parent(self, parent: AdapterRecord, dest_dir: Path) -> Path:
        return await self._registry.fetch(parent, dest_dir)

    async def model_dir(self, model_id: str) -> Path:
        """The base model's directory (a GGUF converted once and cached)."""
        return await asyncio.to_thread(self._model_dir, model_id)

    # ---- pieces -------------------------------------------------------------------

    def _model_dir(self, model_id: str) -> Path:
        return resolve_base_model(
            model_id, models=self._config.base_models, cache_dir=self._config.models_cache_dir
        )

    async def _dataset(
        self, spec: TrainingJobSpec, *, window: Window | None = None, pinned: StoredDatasetSource | None = None
    ) -> ResolvedDataset:
        """Load and check the whole dataset: a JSONL file, one built from feedback (engine.feedback.dataset)
        over the window ending now, or over ``window`` when resolving a created job again, or a stored dataset's
        train split (the version ``pinned`` when resolving a created job again)."""
        if isinstance(spec.dataset, FeedbackSource):
            kto = spec.objective is Objective.KTO
            built = await self._feedback_dataset(spec.dataset, spec.objective, window, spec.base_model)
            summary = DatasetSummary(
                digest=built.digest, example_count=len(built.examples), composition=built.composition,
                window_start=built.window_start, window_end=built.window_end, source=spec.dataset,
                objective=spec.objective,
            )
            return ResolvedDataset(built.examples, summary, built.desirable if kto else None)
        if isinstance(spec.dataset, StoredDatasetSource):
            return await self._stored_dataset(pinned or spec.dataset, spec.objective)
        path = resolve_dataset_path(self._config.datasets_dir, spec.dataset.path)
        examples = await asyncio.to_thread(load_jsonl, path)
        summary = DatasetSummary(
            digest=dataset_digest(examples), example_count=len(examples), composition=(("jsonl", len(examples)),),
            source=spec.dataset, objective=spec.objective,
        )
        return ResolvedDataset(examples, summary)

    async def _stored_dataset(self, source: StoredDatasetSource, objective: Objective) -> ResolvedDataset:
        if self._datasets is None:
            raise FailedPrecondition("STORED_DATASETS_UNAVAILABLE", "this server has no dataset store",
                                     violations=[FieldViolation(STORED_FIELD, "use spec.jsonl")])
        record, examples, split = await self._datasets.training_examples(source.name, STORED_FIELD)
        summary = DatasetSummary(
            digest=dataset_digest(examples), example_count=len(examples), composition=(("dataset", len(examples)),),
            source=StoredDatasetSource(record.name), objective=objective,
        )
        return ResolvedDataset(examples, summary, split=split)

    async def _feedback_dataset(
        self, source: FeedbackSource, objective: Objective, window: Window | None, base_model: str
    ) -> FeedbackDataset:
        """The job's feedback window: the feedback on its base model (and feedback that recorded none)."""
        if self._feedback is None:
            raise FailedPrecondition("FEEDBACK_DATASETS_UNAVAILABLE", "this server has no feedback store")
        if window is None:
            return await self._feedback.build(source, objective, base_model=base_model)
        start, end = window
        if start is None or end is None:
            raise FailedPrecondition("DATASET_WINDOW_UNKNOWN", "the job's feedback window was not recorded")
        return await self._feedback.rebuild(source, objective, start, end, base_model=base_model)

    async def _parent(self, spec: TrainingJobSpec) -> AdapterRecord:
        try:
            return await self._registry.get(
                spec.base_model, spec.parent_adapter_version, field_path="spec.parent_adapter_version"
            )
        except NotFound as exc:  # the request is well formed; the registry is not in the state it needs
            raise FailedPrecondition(
                "PARENT_ADAPTER_NOT_FOUND",
                f"cannot continue from {spec.parent_adapter_version}: base model {spec.base_model} has no "
                "published adapter of that version (deleted, never published, or trained on another base model)",
                violations=[FieldViolation("spec.parent_adapter_version", "no such version of this base model")],
                metadata={"parent": spec.parent_adapter_version, "base_model": spec.base_model},
            ) from exc

    def _check_ewc(self, spec: TrainingJobSpec, field_prefix: str) -> None:
        issues = ViolationCollector()
        ewc = spec.ewc
        low, high = self._config.ewc_lambda_min, self._config.ewc_lambda_max
        if not math.isfinite(ewc.ewc_lambda):  # unused without a parent, yet a number the job stores
            issues.add(f"{field_prefix}.ewc.ewc_lambda", "must be a finite number")
        elif spec.parent_adapter_version and not ewc.disabled:
            issues.check(low <= ewc.ewc_lambda <= high, f"{field_prefix}.ewc.ewc_lambda",
                         f"must lie in [{low:g}, {high:g}], got {ewc.ewc_lambda:g}")
        issues.check(0.0 < ewc.gamma <= 1.0, f"{field_prefix}.ewc.gamma", f"must lie in (0, 1], got {ewc.gamma:g}")
        issues.check(0.0 <= ewc.replay_fraction <= 0.9, f"{field_prefix}.ewc.replay_fraction",
                     f"must lie in [0, 0.9], got {ewc.replay_fraction:g}")
        issues.raise_if_any("INVALID_EWC_CONFIG", "invalid EWC settings")


def check_target_modules(spec: TrainingJobSpec, field_prefix: str = "spec") -> None:
    """INVALID_LORA_CONFIG when the spec names a target module more than once (a set the parent's could only be
    told apart from by its length, and a PEFT config that lists a module twice)."""
    repeated = sorted(name for name, n in collections.Counter(spec.lora.target_modules).items() if n > 1)
    if repeated:
        said = f"names {', '.join(repeated)} more than once"
        raise InvalidArgument(
            "INVALID_LORA_CONFIG", f"invalid LoRA configuration: {field_prefix}.lora.target_modules {said}",
            violations=[FieldViolation(f"{field_prefix}.lora.target_modules", said)],
        )


def inherit_lora(spec: TrainingJobSpec, parent: AdapterRecord) -> TrainingJobSpec:
    """The spec with the LoRA fields it left unset taken from the parent it warm-starts from.

    Rank, alpha and target modules are the adapter's shape: a set one that differs from the parent's is
    FAILED_PRECONDITION (nothing is created). Dropout is a training setting and may differ.
    """
    wanted, have = spec.lora, parent.lora
    issues = []
    for name in ("rank", "alpha", "target_modules"):
        if name not in spec.lora_fields_set:
            continue
        mine, theirs = getattr(wanted, name), getattr(have, name)
        if name == "target_modules":
            mine, theirs = sorted(mine), sorted(theirs)
        if mine != theirs:
            issues.append(FieldViolation(f"spec.lora.{name}", f"the parent {parent.version} has {theirs}, not "
                                                               f"{mine}; leave it unset to inherit the parent's"))
    if issues:
        raise FailedPrecondition(
            "PARENT_LORA_MISMATCH",
            f"a job continuing {parent.version} trains that adapter further, so it keeps its LoRA shape "
            f"(rank {have.rank}, alpha {have.alpha:g}, targets {sorted(have.target_modules)})",
            violations=issues, metadata={"parent": parent.version},
        )
    dropout = wanted.dropout if "dropout" in spec.lora_fields_set else have.dropout
    return replace(spec, lora=replace(have, dropout=dropout), lora_fields_set=LORA_FIELDS)
