"""A version a training job continues (its ``spec.parent_adapter_version``) is kept until the job has ended: the worker
that prepares the job, resumes it after a pause, or takes it over from a dead worker fetches the parent then, so a
delete, PruneAdapters or the retention after a publish must not remove it meanwhile. The protection is read from the
jobs table under the version's row lock, as a delete reads what serving protects (engine.stores.adapter_index)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from engine.domain import JsonlSource
from engine.errors import FailedPrecondition
from engine.jobs.core import Job, JobState
from engine.registry import AdapterRegistry, PublishRequest
from engine.stores.job_store import PostgresJobStore
from engine.training.spec import TRAINING, TrainingJobSpec, TrainingOutput
from tests.registry.conftest import TINY


def _job(parent: str, state: JobState, base_model: str = TINY) -> Job[TrainingJobSpec, TrainingOutput]:
    spec = TrainingJobSpec(base_model=base_model, dataset=JsonlSource("d.jsonl"), parent_adapter_version=parent)
    return Job(id=f"continues-{parent}-{base_model}", kind=TRAINING.name, spec=spec, output=TrainingOutput(),
               state=state, create_time=datetime.now(UTC))


async def _listed(registry: AdapterRegistry) -> list[str]:
    return sorted(r.version for r in (await registry.list(base_model=TINY, page_size=10))[0])


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.RUNNING, JobState.PAUSED])
async def test_retention_and_prune_keep_the_parent_of_a_training_job_not_ended(
    make_registry, store, make_peft, pool, state: JobState
):
    registry = make_registry(store)
    parent = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(0)))
    jobs = PostgresJobStore(pool, TRAINING)
    job = await jobs.insert_job(_job(parent.version, state))
    await jobs.insert_job(_job(parent.version, JobState.QUEUED, base_model="another-model"))  # not this version

    registry.retention_keep = 1
    newer = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(1)))  # prunes after it
    assert await _listed(registry) == sorted([parent.version, newer.version]), (
        f"retention deleted {parent.version}, the parent of a {state} training job that will fetch it")
    assert await registry.prune(TINY, keep=1) == ([], [newer.version, parent.version])
    with pytest.raises(FailedPrecondition) as refused:
        await registry.delete(TINY, parent.version)
    assert refused.value.reason == "ADAPTER_PROTECTED"
    assert refused.value.metadata["training_job"] == job.name

    await jobs.write(replace(job, state=JobState.SUCCEEDED), [], None)  # the job ended: it needs it no more
    assert await registry.prune(TINY, keep=1) == ([parent.version], [newer.version])
    assert await _listed(registry) == [newer.version]
