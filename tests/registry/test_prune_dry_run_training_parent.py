"""A prune's dry run answers what the prune would do: a version a training job that has not ended continues is
refused by a delete (ADAPTER_PROTECTED), so a prune keeps it, and its dry run lists it as kept, not as deleted. Both
read the protection by the rule a delete applies (engine.stores.adapter_index's ``continued_versions``). On
PostgreSQL: the in-memory index knows no jobs (it protects no parents, for a delete nor for a prune)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from engine.domain import JsonlSource
from engine.jobs.core import Job, JobState
from engine.registry import AdapterRegistry, PublishRequest
from engine.stores.job_store import PostgresJobStore
from engine.training.spec import TRAINING, TrainingJobSpec, TrainingOutput
from tests.registry.conftest import TINY


def _job(parent: str, state: JobState) -> Job[TrainingJobSpec, TrainingOutput]:
    spec = TrainingJobSpec(base_model=TINY, dataset=JsonlSource("d.jsonl"), parent_adapter_version=parent)
    return Job(id=f"continues-{parent}", kind=TRAINING.name, spec=spec, output=TrainingOutput(), state=state,
               create_time=datetime.now(UTC))


async def _listed(registry: AdapterRegistry) -> list[str]:
    return sorted(r.version for r in (await registry.list(base_model=TINY, page_size=10))[0])


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.PAUSED])
async def test_a_dry_run_lists_the_parent_of_a_training_job_not_ended_as_kept(make_registry, store, make_peft, pool,
                                                                               state: JobState):
    registry = make_registry(store)
    parent = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(0)))
    old = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(1)))
    newest = await registry.publish(PublishRequest(base_model=TINY, adapter_dir=make_peft(2)))
    jobs = PostgresJobStore(pool, TRAINING)
    job = await jobs.insert_job(_job(parent.version, state))

    dry = await registry.prune(TINY, keep=1, dry_run=True)
    assert dry == ([old.version], [newest.version, parent.version]), (
        f"the dry run listed {dry[0]} as deleted; {parent.version}, the parent of a {state} training job, is kept")
    assert await _listed(registry) == sorted([parent.version, old.version, newest.version])  # nothing deleted
    assert await registry.prune(TINY, keep=1) == dry  # the prune does what its dry run said
    assert await _listed(registry) == sorted([parent.version, newest.version])

    await jobs.write(replace(job, state=JobState.CANCELLED), [], None)  # ended: its parent is not protected now
    assert await registry.prune(TINY, keep=1, dry_run=True) == ([parent.version], [newest.version])
