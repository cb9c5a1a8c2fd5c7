"""EWC for a training job that continues a parent adapter: Fisher, anchor, replay and lineage.

``EwcPlanner.plan`` runs while the job prepares. With no snapshot named it measures the parent on the
parent's own training data (the dataset of the job that produced it, checked against the digest recorded
on the adapter), folds in the snapshot the parent itself was trained with (online EWC:
``gamma * F_old + F_task``) and stores the result as a new snapshot, reporting both steps as job events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.continual.ewc import (
    DEFAULT_PENALTY_NORMALIZATION,
    EwcPenalty,
    accumulate,
    check_same_shapes,
    diagonal_stats,
    mix_replay,
    shapes_of,
)
from engine.continual.ewc_product import ProductEwcPenalty
from engine.continual.fisher import Diagonal, FisherResult, select_samples, space_shapes
from engine.continual.fisher_run import FisherRun, load_adapter_weights, run_fisher
from engine.continual.spec import DEFAULT_NUM_SAMPLES, FisherEstimator, FisherSnapshot
from engine.continual.version_data import SNAPSHOT_FIELD, VersionDatasets
from engine.domain import Example, FisherSpace
from engine.errors import FailedPrecondition, FieldViolation, NotFound
from engine.jobs.core import Warned
from engine.jobs.ports import CancelToken, ProgressSink
from engine.registry.records import lora_shape
from engine.stores.fisher_store import FisherSnapshotStore, snapshot_id_from_name
from engine.training.spec import EwcLineage, TrainingJobSpec

SPACE_FIELD = "spec.ewc.fisher_space"


@dataclass(frozen=True)
class EwcPlan:
    penalty: EwcPenalty | ProductEwcPenalty
    examples: list[Example]
    lineage: EwcLineage


def new_snapshot(
    result: FisherResult, diagonal: Diagonal, *, base_model: str, adapter_version: str, dataset_digest: str,
    accumulated_from: str = "", gamma: float = 1.0,
) -> FisherSnapshot:
    """The snapshot of ``diagonal`` (the result, maybe accumulated) still to be stored: ``FisherSnapshotStore.save``
    gives it its id, path, digest and size."""
    stats = diagonal_stats(diagonal)
    return FisherSnapshot(
        id="", base_model=base_model, adapter_version=adapter_version, dataset_digest=dataset_digest,
        sample_count=result.sample_count, estimator=result.estimator, create_time=datetime.now(UTC),
        stat_sum=stats.sum, stat_max=stats.max, stat_mean=stats.mean, quantiles=stats.quantiles,
        parameter_count=stats.parameter_count, sha256="", size_bytes=0, path="", normalization=result.normalization,
        accumulated_from=accumulated_from, gamma=gamma, space=result.space,
    )


def make_penalty(space: FisherSpace, fisher: Diagonal, anchor: Diagonal, ewc_lambda: float):
    """The EWC penalty over ``space`` (FISHER_SHAPE_MISMATCH unless ``fisher`` fits the anchor's LoRA shape)."""
    if space is FisherSpace.LORA_PRODUCT:
        return ProductEwcPenalty(fisher, anchor, ewc_lambda)
    return EwcPenalty(fisher, anchor, ewc_lambda, DEFAULT_PENALTY_NORMALIZATION)


def check_space(snapshot: FisherSnapshot, space: FisherSpace) -> None:
    """FAILED_PRECONDITION FISHER_SPACE_MISMATCH unless ``snapshot`` was measured in ``space``."""
    if snapshot.space != space:
        raise FailedPrecondition(
            "FISHER_SPACE_MISMATCH",
            f"{snapshot.name} holds the Fisher of the {snapshot.space.value} space, and this job's penalty is in "
            f"the {space.value} space; set {SPACE_FIELD} to {snapshot.space.value}, or name a snapshot measured "
            f"in {space.value}",
            metadata={"snapshot": snapshot.name, "snapshot_space": snapshot.space.value},
            violations=[FieldViolation(SPACE_FIELD, f"{snapshot.name} is in {snapshot.space.value}")],
        )


class EwcPlanner:
    def __init__(
        self,
        *,
        registry: Any,
        snapshots: FisherSnapshotStore,
        versions: VersionDatasets,
        measure: Callable[..., FisherResult] = run_fisher,
    ) -> None:
        self._registry = registry
        self._snapshots = snapshots
        self._versions = versions
        self._measure = measure

    async def validate(self, spec: TrainingJobSpec) -> None:
        """Create-time checks: a named snapshot exists and was measured on an adapter of the parent's shape."""
        if not spec.parent_adapter_version or spec.ewc.disabled or not spec.ewc.fisher_snapshot:
            return
        snapshot = await self._snapshots.get(snapshot_id_from_name(spec.ewc.fisher_snapshot, SNAPSHOT_FIELD))
        parent = await self._registry.get(spec.base_model, spec.parent_adapter_version,
                                          field_path="spec.parent_adapter_version")
        check_space(snapshot, spec.ewc.space)
        if snapshot.base_model != spec.base_model:
            raise FailedPrecondition(
                "FISHER_SHAPE_MISMATCH",
                f"{snapshot.name} was measured on base model {snapshot.base_model}, not {spec.base_model}",
                metadata={"snapshot": snapshot.name},
            )
        try:
            measured = await self._registry.get(snapshot.base_model, snapshot.adapter_version)
        except NotFound:
            return  # the measured version was deleted; the tensor shapes are checked when the job runs
        if lora_shape(measured.lora) != lora_shape(parent.lora):
            raise FailedPrecondition(
                "FISHER_SHAPE_MISMATCH",
                f"{snapshot.name} was measured on {snapshot.adapter_version} (LoRA rank {measured.lora.rank}), "
                f"whose shape differs from the parent {parent.version} (rank {parent.lora.rank})",
                metadata={"snapshot": snapshot.name, "parent": parent.version},
            )

    async def plan(
        self, spec: TrainingJobSpec, parent: Any, parent_dir: Path, base_model_dir: Path,
        examples: list[Example], sink: ProgressSink, cancel: CancelToken,
    ) -> EwcPlan:
        anchor = await asyncio.to_thread(load_adapter_weights, parent_dir)
        if spec.ewc.fisher_snapshot:
            snapshot, fisher = await self._snapshots.load(
                snapshot_id_from_name(spec.ewc.fisher_snapshot, SNAPSHOT_FIELD)
            )
            check_space(snapshot, spec.ewc.space)
        else:
            snapshot, fisher = await self._measure_parent(spec, parent, parent_dir, base_model_dir, sink, cancel)
        check_same_shapes(space_shapes(shapes_of(anchor), spec.ewc.space), shapes_of(fisher),
                          what=f"Fisher snapshot {snapshot.name}", reason="FISHER_SHAPE_MISMATCH")
        mixed, replayed = examples, 0
        if spec.ewc.replay_fraction > 0:
            earlier = await self._earlier_examples(parent, sink)
            mixed, replayed = mix_replay(examples, earlier, spec.ewc.replay_fraction, spec.hyperparameters.seed)
            sink.emit(Warned("REPLAY_MIXED", f"mixed {replayed} examples of earlier versions' datasets into "
                                             f"the {len(examples)} new ones"))
        lineage = EwcLineage(parent.version, snapshot.name, spec.ewc.ewc_lambda, spec.ewc.gamma,
                             spec.ewc.replay_fraction, replayed, spec.ewc.space)
        penalty = make_penalty(spec.ewc.space, fisher, anchor, spec.ewc.ewc_lambda)
        sink.emit(Warned("EWC_PENALTY_NORMALIZATION", f"penalty over the {penalty.space.value} space, weights "
                                                      f"{penalty.normalization.value}-normalised from the raw "
                                                      f"Fisher of {snapshot.name} (stored unchanged)"))
        return EwcPlan(penalty, mixed, lineage)

    # ---- pieces -------------------------------------------------------------------------

    async def _measure_parent(
        self, spec: TrainingJobSpec, parent: Any, parent_dir: Path, base_model_dir: Path,
        sink: ProgressSink, cancel: CancelToken,
    ) -> tuple[FisherSnapshot, Diagonal]:
        data = await self._versions.of(parent)
        if data.note:
            sink.emit(Warned("PARENT_DATASET_REBUILT", f"{parent.version}: {data.note}"))
        examples = data.examples
        chosen = [examples[i] for i in select_samples(len(examples), DEFAULT_NUM_SAMPLES)]
        sink.emit(Warned(
            "FISHER_COMPUTED_AUTOMATICALLY",
            f"no Fisher snapshot named: measuring the empirical Fisher of {parent.version} on its own "
            f"training data ({len(chosen)} samples) before training",
        ))
        run = FisherRun(base_model_dir, parent_dir, chosen, FisherEstimator.EMPIRICAL,
                        spec.hyperparameters.max_seq_length, spec.hyperparameters.batch_size, space=spec.ewc.space)
        result = await asyncio.to_thread(self._measure, run, cancel=cancel)
        fisher, accumulated_from = result.diagonal, ""
        if parent.fisher_snapshot:  # online EWC: keep what the parent itself was protecting
            try:
                previous, old = await self._snapshots.load(snapshot_id_from_name(parent.fisher_snapshot))
            except NotFound:
                sink.emit(Warned("EARLIER_FISHER_MISSING", f"{parent.fisher_snapshot}, which {parent.version} "
                                                           "was trained with, is gone; not accumulated"))
            else:
                if previous.space == spec.ewc.space:
                    fisher, accumulated_from = accumulate(old, fisher, spec.ewc.gamma), previous.name
                else:
                    sink.emit(Warned(
                        "EARLIER_FISHER_OTHER_SPACE",
                        f"{previous.name}, which {parent.version} was trained with, is in the "
                        f"{previous.space.value} space, not {spec.ewc.space.value}; not accumulated",
                    ))
        snapshot = await self._snapshots.save(fisher, new_snapshot(
            result, fisher, base_model=spec.base_model, adapter_version=parent.version,
            dataset_digest=parent.dataset.digest if parent.dataset else "", accumulated_from=accumulated_from,
            gamma=spec.ewc.gamma,
        ))
        how = f" (gamma {spec.ewc.gamma:g} x {accumulated_from} + this task)" if accumulated_from else ""
        sink.emit(Warned("FISHER_SNAPSHOT_STORED", f"stored {snapshot.name}{how}; sum {snapshot.stat_sum:.4g}"))
        return snapshot, fisher

    async def _earlier_examples(self, parent: Any, sink: ProgressSink) -> list[Example]:
        """Examples of every version in the parent's lineage whose data is still known."""
        pooled: list[Example] = []
        for record in await self._registry.lineage(parent.base_model, parent.version):
            try:
                data = await self._versions.of(record)
            except FailedPrecondition as exc:
                sink.emit(Warned("REPLAY_DATASET_UNAVAILABLE", exc.message))
                continue
            if data.note:
                sink.emit(Warned("REPLAY_DATASET_REBUILT", f"{record.version}: {data.note}"))
            pooled.extend(data.examples)
        return pooled


def with_plan(run: Any, plan: EwcPlan) -> Any:
    """The training run with the EWC penalty and the replay-mixed examples (appended after the new ones, and
    labelled for the run's objective, if it has one)."""
    objective, replayed = run.objective, plan.lineage.replayed_examples
    if objective is not None and replayed:
        objective = objective.extended(replayed)
    return replace(run, penalty=plan.penalty, examples=plan.examples, objective=objective)
