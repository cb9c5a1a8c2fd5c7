"""EWC for a training job that continues a parent adapter: Fisher, anchor, replay and lineage.

``EwcPlanner.plan`` runs while the job prepares. With no snapshot named it measures the parent on the
parent's own training data (the dataset of the job that produced it, checked against the digest recorded
on the adapter), folds in the snapshot the parent itself was trained with (online EWC:
``gamma * F_old + F_task``) and stores the result as a new snapshot, reporting both steps as job events.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

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
from engine.continual.fisher_run import FisherRun, load_adapter_weights, measure_model
from engine.continual.ports import FisherSnapshots
from engine.continual.spec import DEFAULT_NUM_SAMPLES, FisherEstimator, FisherSnapshot, snapshot_id_from_name
from engine.continual.version_data import SNAPSHOT_FIELD, VersionDatasets, with_ewc_remedy
from engine.domain import Example, FisherSpace
from engine.errors import DataLoss, FailedPrecondition, FieldViolation, NotFound
from engine.jobs.core import Noticed, Warned
from engine.jobs.ports import ProgressSink
from engine.registry import AdapterRecord, AdapterRegistry
from engine.registry.records import lora_shape
from engine.splits import Split
from engine.telemetry import tracer
from engine.training.ports import ContinualPlan, PlanRequest
from engine.training.spec import EwcLineage, ParentFisherProgress, TrainingJobSpec

SPACE_FIELD = "spec.ewc.fisher_space"


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


def make_penalty(
    space: FisherSpace, fisher: Diagonal, anchor: Diagonal, ewc_lambda: float
) -> EwcPenalty | ProductEwcPenalty:
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
    """The continual planner of training jobs (engine.training.ports.ContinualPlanner): EWC and replay."""

    def __init__(self, *, registry: AdapterRegistry, snapshots: FisherSnapshots, versions: VersionDatasets) -> None:
        self._registry = registry
        self._snapshots = snapshots
        self._versions = versions

    async def check(self, spec: TrainingJobSpec, parent: AdapterRecord) -> None:
        """Create-time checks: a named snapshot exists and was measured on an adapter of the parent's shape (each
        refusal with a violation on ``spec.ewc.fisher_snapshot``)."""
        if not spec.ewc.fisher_snapshot:
            return
        snapshot_id = snapshot_id_from_name(spec.ewc.fisher_snapshot, SNAPSHOT_FIELD)
        try:
            snapshot = await self._snapshots.get(snapshot_id)
        except NotFound as exc:
            raise NotFound("FISHER_SNAPSHOT_NOT_FOUND", exc.message, metadata=exc.metadata, violations=[
                FieldViolation(SNAPSHOT_FIELD, "no such Fisher snapshot; leave it empty to measure the parent's")],
            ) from exc
        check_space(snapshot, spec.ewc.space)
        if snapshot.base_model != spec.base_model:
            raise FailedPrecondition(
                "FISHER_SHAPE_MISMATCH",
                f"{snapshot.name} was measured on base model {snapshot.base_model}, not {spec.base_model}",
                metadata={"snapshot": snapshot.name},
                violations=[FieldViolation(SNAPSHOT_FIELD, f"{snapshot.name} was measured on base model "
                                                           f"{snapshot.base_model}")],
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
                violations=[FieldViolation(SNAPSHOT_FIELD, f"{snapshot.name} was measured on an adapter of "
                                                           f"another LoRA shape than {parent.version}'s")],
            )

    async def plan(self, request: PlanRequest) -> ContinualPlan:
        """EWC's penalty unless it is disabled, and replay whenever a fraction is asked (with or without EWC)."""
        spec, parent, sink = request.spec, request.parent, request.sink
        mixed, replayed, earlier = await self._replay(request)
        without_ewc = ContinualPlan(None, mixed, replayed, EwcLineage(
            parent.version, "", 0.0, 0.0, spec.ewc.replay_fraction, replayed, spec.ewc.space), earlier)
        if spec.ewc.disabled:
            return without_ewc
        if spec.ewc.fisher_snapshot:
            snapshot, fisher = await self._snapshots.load(
                snapshot_id_from_name(spec.ewc.fisher_snapshot, SNAPSHOT_FIELD)
            )
            check_space(snapshot, spec.ewc.space)
        else:
            with tracer.start_as_current_span("training_job.parent_fisher",
                                              attributes={"parent": parent.version}):
                measured = await self._measure_parent(request)
            if measured is None:
                return without_ewc
            snapshot, fisher = measured
        anchor = await request.in_worker(load_adapter_weights, request.parent_dir)
        check_same_shapes(space_shapes(shapes_of(anchor), spec.ewc.space), shapes_of(fisher),
                          what=f"Fisher snapshot {snapshot.name}", reason="FISHER_SHAPE_MISMATCH")
        lineage = EwcLineage(parent.version, snapshot.name, spec.ewc.ewc_lambda, spec.ewc.gamma,
                             spec.ewc.replay_fraction, replayed, spec.ewc.space)
        penalty = make_penalty(spec.ewc.space, fisher, anchor, spec.ewc.ewc_lambda)
        sink.emit(Noticed("EWC_PENALTY_NORMALIZATION", f"penalty over the {penalty.space.value} space, weights "
                                                       f"{penalty.normalization.value}-normalised from the raw "
                                                       f"Fisher of {snapshot.name} (stored unchanged)"))
        return ContinualPlan(penalty, mixed, replayed, lineage, earlier)

    # ---- pieces -------------------------------------------------------------------------

    async def _replay(self, request: PlanRequest) -> tuple[list[Example], int, list[Example]]:
        """(the job's examples with replay mixed in, how many were replayed, the pool they were drawn from).

        The pool holds only the earlier examples the job's split rule puts in the train split: an earlier version
        held out by another rule, or not at all, may have trained on what this job holds out as its eval split,
        and replaying those would train on what the job's eval loss and gate are measured on."""
        spec = request.spec
        if spec.ewc.replay_fraction <= 0:
            return request.examples, 0, []
        earlier = await self._earlier_examples(request.parent, request.sink)
        held_out = 0
        if request.split is not None:
            rule = request.split
            kept = [e for e in earlier if rule.of(e) is Split.TRAIN]
            held_out, earlier = len(earlier) - len(kept), kept
        mixed, replayed = mix_replay(request.examples, earlier, spec.ewc.replay_fraction, spec.hyperparameters.seed)
        if request.examples:
            left_out = f"; left out {held_out} of theirs that this job holds out of training (its eval split)" \
                if held_out else ""
            request.sink.emit(Noticed("REPLAY_MIXED", f"mixed {replayed} examples of earlier versions' datasets "
                                                      f"into the {len(request.examples)} new ones{left_out}"))
        return mixed, replayed, earlier

    async def _measure_parent(self, request: PlanRequest) -> tuple[FisherSnapshot, Diagonal] | None:
        """The parent's Fisher on its own training data, stored as a snapshot; None (EWC skipped, with a warning) when
        that data holds no wanted answer: the parent was taught only to avoid answers, and EWC has nothing to keep."""
        spec, parent, sink = request.spec, request.parent, request.sink
        try:
            data = await self._versions.of(parent)
        except FailedPrecondition as exc:
            raise with_ewc_remedy(exc) from exc
        if data.note:
            sink.emit(Warned("PARENT_DATASET_REBUILT", f"{parent.version}: {data.note}"))
        examples = data.examples
        if not examples:
            sink.emit(Warned("EWC_SKIPPED", f"{parent.version} was trained on no wanted answer (thumbs up, high "
                                            "rating, correction), only on rejected ones (KTO): EWC has nothing of it "
                                            "to protect, and the job trains without it"))
            return None
        chosen = [examples[i] for i in select_samples(len(examples), DEFAULT_NUM_SAMPLES)]
        sink.emit(Noticed(
            "FISHER_COMPUTED_AUTOMATICALLY",
            f"no Fisher snapshot named: measuring the empirical Fisher of {parent.version} on its own "
            f"training data ({len(chosen)} samples) before training",
        ))
        run = FisherRun(request.model_dir, request.parent_dir, chosen, FisherEstimator.EMPIRICAL,
                        spec.hyperparameters.max_seq_length, spec.hyperparameters.batch_size, space=spec.ewc.space)
        model, started = request.model, time.monotonic()

        def progress(done: int, total: int) -> None:  # in the worker thread; the sink is thread-safe
            elapsed = time.monotonic() - started
            sink.emit(ParentFisherProgress(done, total, done / elapsed if elapsed > 0 else 0.0))

        result: FisherResult = await request.in_worker(
            lambda: measure_model(model.model, model.tokenizer, run, cancel=request.cancel, progress=progress))
        fisher, accumulated_from = result.diagonal, ""
        if parent.fisher_snapshot:  # online EWC: keep what the parent itself was protecting
            try:
                previous, old = await self._snapshots.load(snapshot_id_from_name(parent.fisher_snapshot))
            except (NotFound, DataLoss) as exc:
                # its row gone, or its file (a delete removes the row, then the file: one landing between this
                # load's two reads finds the row and no file); a file that is there but corrupt stays a failure
                if isinstance(exc, DataLoss) and exc.reason != "FISHER_FILE_MISSING":
                    raise
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
        sink.emit(Noticed("FISHER_SNAPSHOT_STORED", f"stored {snapshot.name}{how}; sum {snapshot.stat_sum:.4g}"))
        return snapshot, fisher

    async def _earlier_examples(self, parent: AdapterRecord, sink: ProgressSink) -> list[Example]:
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
