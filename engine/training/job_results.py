"""What publishing a training job's adapter registers: its result (engine.training.runner) or one of its checkpoints
(engine.training.service's ``publish_checkpoint``), and how the job's own result is told from any other version
registered under the job's result request id.
"""

from __future__ import annotations

from pathlib import Path

from engine.domain import BaseRetention, Pin
from engine.registry import AdapterRecord, AdapterSource, PublishRequest
from engine.training.spec import TrainingJob

CHECKPOINT_STEP_LABEL = "checkpoint_step"  # the label of a version published from a checkpoint (publish_checkpoint)


def publish_request(job: TrainingJob, parent: AdapterRecord | None, adapter_dir: Path, train_loss: float, *,
                    fence: tuple[str, str] | None = None, request_id: str = "", pins: tuple[Pin, ...] = (),
                    labels: tuple[tuple[str, str], ...] = (),
                    base_retention: BaseRetention | None = None, eval_loss: float | None = None) -> PublishRequest:
    """What publishing an adapter of ``job`` (its result, or one of its checkpoints) registers."""
    spec, lineage = job.spec, job.output.ewc_lineage
    return PublishRequest(
        base_model=spec.base_model,
        adapter_dir=adapter_dir,
        parent=parent,
        major_bump=spec.major_version_bump,
        training_job=job.name,
        dataset=job.output.dataset,
        train_loss=train_loss,
        eval_loss=eval_loss,
        eval_split=job.output.eval_split,
        base_retention=base_retention,
        base_protection=spec.base_protection,
        base_rehearsed_examples=job.output.base_rehearsed_examples,
        ewc_lambda=lineage.ewc_lambda if lineage else 0.0,
        ewc_gamma=lineage.gamma if lineage else 0.0,
        fisher_snapshot=lineage.fisher_snapshot if lineage else "",
        ewc_fisher_space=lineage.space if lineage and lineage.fisher_snapshot else None,  # None: no EWC
        labels=tuple(sorted({**dict(spec.labels), **dict(labels)}.items())),
        request_id=request_id,
        fence=fence,
        pins=pins,
    )


def result_request_id(job: TrainingJob) -> str:
    """The request id the job's own version is published under: one version per job, however many runs it takes.
    Clients may not use ids of this form (server.convert_jobs.check_request_id)."""
    return f"{job.name}/result"


def is_own_result(job: TrainingJob, record: AdapterRecord) -> bool:
    """Whether ``record`` is the job's own result, as a run of the job publishes it (``publish_request`` with no
    labels of its own): trained, by this job, and not one of its checkpoints (``publish_checkpoint`` labels those
    with their step, over a ``checkpoint_step`` of the job's own labels). An import, another job's version, or a
    checkpoint of the job registered under the job's result request id is not: a client's request id took it."""
    return (record.source is AdapterSource.TRAINED and record.training_job == job.name
            and dict(record.labels).get(CHECKPOINT_STEP_LABEL) == dict(job.spec.labels).get(CHECKPOINT_STEP_LABEL))


def whose(record: AdapterRecord) -> str:
    """What ``record`` is, in a few words: an import, an online session's, another job's, or a checkpoint's."""
    if record.source is not AdapterSource.TRAINED:
        return f"source {record.source.value}"
    step = dict(record.labels).get(CHECKPOINT_STEP_LABEL)
    return f"published from {record.training_job or 'no job'}" + (f"'s checkpoint of step {step}" if step else "")
