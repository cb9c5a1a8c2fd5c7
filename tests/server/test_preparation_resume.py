"""A preparation job that stops midway goes on from its progress: paused and resumed, handed back by a worker that
shuts down and continued by the next server, or taken over by another worker after its own stopped answering. The
generator is asked only about the chunks no run of the job answered, the job reports each chunk once with the
counters of an uninterrupted run, and the version it stores is that run's (same bytes, same split). A job cancelled
while paused leaves nothing behind. The scripted generator asks one question of every chunk alike, so that the
duplicate check has to remember, across the stop, what the chunks before it kept."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from engine.jobs.context import JobSlots
from engine.jobs.core import JobEvent, JobState, Noticed, StateChanged
from engine.jobs.manager import JobManager
from engine.preparation.jobs import PREPARATION, ChunkPrepared, PreparationJobSpec, PreparationOutput
from engine.stores.job_store import PostgresJobStore
from learning.v1 import common_pb2 as common
from learning.v1 import dataset_pb2 as ds
from learning.v1 import dataset_pb2_grpc as ds_grpc
from learning.v1 import preparation_pb2 as pb
from learning.v1 import preparation_pb2_grpc as pb_grpc
from tests.server.conftest import Client
from tests.server.test_preparation import CAPITAL, chunk_text, prepared, preparing, writer

MakeServer = Callable[..., Awaitable[Client]]
Preparations = JobManager[PreparationJobSpec, PreparationOutput]
COUNTERS = ("chunks", "skipped_chunks", "generated", "kept", "unsupported", "duplicates", "unparseable")


def repeating(prompt: str) -> str:
    """``writer``'s pairs after one asked of every chunk alike: kept for a document's first chunk, a duplicate for
    its later ones."""
    same = [f"Q: What does the text say?\nA: The capital of {country} is {capital}."
            for country, capital in CAPITAL.findall(chunk_text(prompt))[:1]]
    return "\n".join([*same, writer(prompt)])


class Generator:
    """A chat completions handler answering with ``repeating``; it notes each chunk it is asked about, and holds the
    ``hold``-th ask (1: the first) until ``go`` is set."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.hold = 0
        self.held = asyncio.Event()
        self.go = asyncio.Event()

    async def __call__(self, request: web.Request) -> web.Response:
        prompt = (await request.json())["messages"][0]["content"]
        self.asked.append(chunk_text(prompt))
        if len(self.asked) == self.hold:
            self.held.set()
            await self.go.wait()
        return web.json_response({"choices": [{"message": {"content": repeating(prompt)}}]})

    def holding(self, ask: int) -> None:
        """Hold the ``ask``-th ask from now on (counted from the ones made so far)."""
        self.hold = len(self.asked) + ask
        self.held, self.go = asyncio.Event(), asyncio.Event()


def manager(client: Client) -> Preparations:
    return next(m for m in client.app.owned.job_managers if m.kind is PREPARATION)


def job_id(job: pb.PreparationJob) -> str:
    return job.name.rsplit("/", 1)[1]


def log_store(client: Client) -> PostgresJobStore[PreparationJobSpec, PreparationOutput]:
    assert client.app.owned.pool is not None
    return PostgresJobStore(client.app.owned.pool, PREPARATION)


def reports(log: list[JobEvent]) -> list[ChunkPrepared]:
    return [e.payload for e in log if isinstance(e.payload, ChunkPrepared)]


def notices(log: list[JobEvent]) -> list[str]:
    return [e.payload.code for e in log if isinstance(e.payload, Noticed)]


async def reference(jobs: pb_grpc.DataPreparationServiceStub, spec: pb.PreparationJobSpec,
                    generator: Generator) -> tuple[pb.PreparationJob, list[str]]:
    """The job run uninterrupted, into a dataset of its own; and the chunks it asked about (then forgotten)."""
    uninterrupted = pb.PreparationJobSpec()
    uninterrupted.CopyFrom(spec)
    uninterrupted.dataset = "datasets/uninterrupted"
    job, _ = await prepared(jobs, uninterrupted)
    assert job.state == common.JOB_STATE_SUCCEEDED, job.error
    assert job.result.duplicates > 0  # the question asked of every chunk: the check has something to remember
    asked = list(generator.asked)
    assert len(asked) == len(set(asked)) == job.result.chunks == 4
    generator.asked.clear()
    return job, asked


async def get(jobs: pb_grpc.DataPreparationServiceStub, job: pb.PreparationJob) -> pb.PreparationJob:
    got: pb.PreparationJob = (await jobs.GetPreparationJob(pb.GetPreparationJobRequest(name=job.name))).preparation_job
    return got


async def watched(jobs: pb_grpc.DataPreparationServiceStub, job: pb.PreparationJob) -> pb.PreparationJob:
    """The job once its watch ends (it ended, or was paused)."""
    async for _ in jobs.WatchPreparationJob(pb.WatchPreparationJobRequest(name=job.name)):
        pass
    return await get(jobs, job)


async def assert_same_dataset(client: Client, done: pb.PreparationJob, uninterrupted: pb.PreparationJob) -> None:
    assert done.state == common.JOB_STATE_SUCCEEDED, done.error
    assert [getattr(done.result, c) for c in COUNTERS] == [getattr(uninterrupted.result, c) for c in COUNTERS]
    assert done.progress.completed_steps == done.progress.total_steps == 4
    datasets = ds_grpc.DatasetServiceStub(client.channel)
    ours, theirs = [(await datasets.GetDataset(ds.GetDatasetRequest(name=j.result.dataset_version))).dataset
                    for j in (done, uninterrupted)]
    assert done.result.created and ours.prepared.preparation_job == done.name
    assert (ours.sha256, ours.example_count, ours.split_counts) == (theirs.sha256, theirs.example_count,
                                                                      theirs.split_counts)
    assert Path(ours.uri.removeprefix("file://")).read_bytes() == Path(theirs.uri.removeprefix("file://")).read_bytes()


async def test_a_paused_preparation_resumes_after_the_chunks_it_answered(make_server: MakeServer,
                                                                         data_dir: Path) -> None:
    generator = Generator()
    async with preparing(make_server, data_dir, generator) as (client, jobs, spec):
        spec.split.CopyFrom(ds.SplitRule(eval_fraction=0.25, seed=3))
        uninterrupted, chunks = await reference(jobs, spec, generator)
        jobs_manager, store = manager(client), log_store(client)

        generator.holding(1)  # paused while the first chunk is being answered: it stops once that is recorded
        job = (await jobs.CreatePreparationJob(pb.CreatePreparationJobRequest(spec=spec))).preparation_job
        await asyncio.wait_for(generator.held.wait(), 60)
        assert (await jobs_manager.pause(job_id(job))).state is JobState.PAUSING
        generator.go.set()
        paused = await watched(jobs, job)
        assert paused.state == common.JOB_STATE_PAUSED
        assert (paused.progress.completed_steps, paused.progress.total_steps, paused.result.chunks) == (1, 4, 1)
        assert generator.asked == chunks[:1]

        await jobs_manager.resume(job_id(job))
        done = await watched(jobs, job)
        assert generator.asked == chunks  # each chunk asked about once: none again after the resume
        log = await store.list_events(job_id(job), after_sequence=0)
        assert [r.done for r in reports(log)] == [1, 2, 3, 4] and {r.total for r in reports(log)} == {4}
        assert "PREPARATION_RESUMED" in notices(log)
        await assert_same_dataset(client, done, uninterrupted)

        # Cancelled while paused: ended, nothing stored, nothing left in the artifact store or the work dir.
        generator.holding(1)
        cancelled_spec = pb.PreparationJobSpec()
        cancelled_spec.CopyFrom(spec)
        cancelled_spec.dataset = "datasets/cancelled"
        job = (await jobs.CreatePreparationJob(pb.CreatePreparationJobRequest(spec=cancelled_spec))).preparation_job
        await asyncio.wait_for(generator.held.wait(), 60)
        await jobs_manager.pause(job_id(job))
        generator.go.set()
        assert (await watched(jobs, job)).state == common.JOB_STATE_PAUSED
        await jobs.CancelPreparationJob(pb.CancelPreparationJobRequest(name=job.name))
        cancelled = await get(jobs, job)
        assert cancelled.state == common.JOB_STATE_CANCELLED and not cancelled.result.dataset_version
        assert [p.name for p in (data_dir / "artifacts" / "preparations").iterdir()] == ["documents"]
        assert not (client.app.settings.work_dir / "preparations" / job_id(job)).exists()
        listed = await ds_grpc.DatasetServiceStub(client.channel).ListDatasets(ds.ListDatasetsRequest())
        assert sorted(d.dataset for d in listed.datasets) == ["datasets/handbook", "datasets/uninterrupted"]


async def test_a_preparation_its_worker_hands_back_at_shutdown_goes_on_on_the_next_server(
        make_server: MakeServer, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generator = Generator()
    async with preparing(make_server, data_dir, generator) as (client, jobs, spec):
        uninterrupted, chunks = await reference(jobs, spec, generator)
        stopping = manager(client)
        told = asyncio.Event()
        shutdown = stopping.shutdown

        async def shutdown_noted() -> None:  # the manager's own, noting when it has told its jobs to stop
            stop = asyncio.ensure_future(shutdown())
            await asyncio.sleep(0)  # its first step: every job it holds is told to stop
            told.set()
            await stop

        monkeypatch.setattr(stopping, "shutdown", shutdown_noted)
        generator.holding(2)  # the server stops while the second chunk is being answered
        job = (await jobs.CreatePreparationJob(pb.CreatePreparationJobRequest(spec=spec))).preparation_job
        await asyncio.wait_for(generator.held.wait(), 60)
        stopped = asyncio.ensure_future(client.app.stop(0))
        await asyncio.wait_for(told.wait(), 60)
        generator.go.set()
        await asyncio.wait_for(stopped, 120)
        assert generator.asked == chunks[:2]

        successor = await make_server(prepare_generator_url=client.app.settings.prepare_generator_url)
        done = await watched(pb_grpc.DataPreparationServiceStub(successor.channel), job)
        assert generator.asked == chunks  # the next server asked only about the last two
        log = await log_store(successor).list_events(job_id(job), after_sequence=0)
        assert [r.done for r in reports(log)] == [1, 2, 3, 4] and "PREPARATION_RESUMED" in notices(log)
        assert JobState.QUEUED in [e.payload.state for e in log if isinstance(e.payload, StateChanged)][1:]
        await assert_same_dataset(successor, done, uninterrupted)


async def test_a_preparation_taken_over_from_a_stopped_worker_asks_only_what_was_not_stored(
        make_server: MakeServer, data_dir: Path, tmp_path: Path) -> None:
    generator = Generator()
    async with preparing(make_server, data_dir, generator) as (client, jobs, spec):
        uninterrupted, chunks = await reference(jobs, spec, generator)
        store = log_store(client)
        first = manager(client)
        generator.holding(2)  # the first worker stops answering while the second chunk is asked about
        job = (await jobs.CreatePreparationJob(pb.CreatePreparationJobRequest(spec=spec))).preparation_job
        await asyncio.wait_for(generator.held.wait(), 60)
        for _ in range(300):  # the first chunk's report is stored (written in the background)
            if reports(await store.list_events(job_id(job), after_sequence=0)):
                break
            await asyncio.sleep(0.1)
        # Another worker takes the job over (as the queue has it do once the first one's heartbeat stops).
        second = JobManager(runner=first.runner, store=store, queue=client.app.owned.queue,
                            work_dir=tmp_path / "second", slots=JobSlots(1), worker_id="worker-second")
        try:
            await asyncio.wait_for(second.execute(job_id(job)), 120)
        finally:
            second.slots.shutdown()
        # The first worker's ask was never answered (it is still held): the second asks again from there on.
        assert generator.asked == chunks[:2] + chunks[1:]
        generator.go.set()  # the first worker's answer comes back to a job it no longer holds
        for _ in range(300):
            if (done := await get(jobs, job)).state == common.JOB_STATE_SUCCEEDED:  # the first let go of it
                break
            await asyncio.sleep(0.1)
        log = await store.list_events(job_id(job), after_sequence=0)
        assert [r.done for r in reports(log)] == [1, 2, 3, 4]  # nothing more from the first worker
        assert notices(log)[-2:] == ["TAKEN_OVER", "PREPARATION_RESUMED"]
        await assert_same_dataset(client, done, uninterrupted)
