"""A running session that finds a store unreachable for a moment (PostgreSQL restarting, the object store cut off)
stops as at a worker's shutdown instead of failing: a checkpoint if it can, back to the queue (the job manager
releases a run stopped for StopReason.SHUTDOWN as QUEUED and queues it again), and the worker that takes it resumes
from its checkpoint and reads the examples after it again by sequence number, so none it had read is lost, also
those an update had popped when the error came."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine.errors import Cancelled, Unavailable
from engine.jobs.context import JobContext, JobSlots
from engine.jobs.core import JobState
from engine.jobs.manager import JobManager
from engine.jobs.ports import CancelToken, StopReason
from engine.online.learner import OnlineLearner
from engine.online.runner import OnlineRunner
from engine.online.session import RunningSession
from engine.online.session_state import OnlineConfig
from engine.online.spec import OnlineOutput, StoredExample
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.memory import InMemoryJobStore, InProcessQueue
from tests.engine.test_online_learner import loaded, rows, session
from tests.engine.test_online_publication import _Controls, _Registry, _session
from tests.jobs.test_job_core import COUNT, CountOutput, CountSpec

EXAMPLES = 12


class _Examples(_Controls):
    """The session's controls and its EXAMPLES examples, as the store keeps them."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = rows(EXAMPLES)
        self.running: RunningSession | None = None

    async def after(self, session_id: str, seq: int, limit: int) -> list[StoredExample]:
        return [r for r in self.rows if r.seq > seq][:limit]

    async def by_sequence(self, session_id: str, seqs: list[int]) -> list[StoredExample]:
        return [r for r in self.rows if r.seq in set(seqs)]

    async def count_after(self, session_id: str, seq: int) -> int:
        return len([r for r in self.rows if r.seq > seq])


class _Blip(_Examples):
    """Controls unreachable at the first look (PostgreSQL restarting), fine after."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error
        self.looks = 0

    async def controls(self, session_id: str):
        self.looks += 1
        if self.looks == 1:
            raise self.error
        return self.c


class _Finishing(_Examples):
    """Stops the session (as a worker's shutdown) once every example was trained on and none waits."""

    async def controls(self, session_id: str):
        running = self.running
        assert running is not None
        if running.learner.trained_through == EXAMPLES and not running.learner.pending:
            running.ctx.cancel.cancel(StopReason.SHUTDOWN)
        return self.c


class _ObjectStore(LocalArtifactStore):
    """The artifact store on disk, unreachable from the ``fail_at``-th write on (``only`` = a key prefix: only those
    writes fail)."""

    def __init__(self, root: Path, fail_at: int, only: str = "") -> None:
        super().__init__(root)
        self.writes = 0
        self.fail_at = fail_at
        self.only = only

    async def put_file(self, key: str, path: Path) -> None:
        if not self.only or key.startswith(self.only):
            self.writes += 1
            if self.fail_at and self.writes >= self.fail_at:
                raise Unavailable("ARTIFACT_STORE_UNAVAILABLE", "the object store at s3:9000 cannot be reached")
        await super().put_file(key, path)


def _running(learner: OnlineLearner, tmp_path: Path, store: Any, artifacts: Any = None,
             output: OnlineOutput | None = None, checkpoint_every: int = 100) -> RunningSession:
    """A running session on ``learner`` with a real cancel token, polling fast and never resting."""
    running = _session(learner, tmp_path, output or OnlineOutput(), _Registry(), store=store)
    running.ctx.cancel = CancelToken()  # type: ignore[assignment]
    running.ctx.job.spec = session(replay_fraction=0.0, checkpoint_every=checkpoint_every)
    config = OnlineConfig(poll_seconds=0.01, max_update_share=1.0)
    running.r = replace(running.r, config=config, artifacts=artifacts)
    if artifacts is not None:  # the real archives, on the artifact store given
        fresh = RunningSession(running.r, running.ctx, learner, running.start)  # type: ignore[arg-type]
        running.live_archive, running.checkpoint_archive = fresh.live_archive, fresh.checkpoint_archive
    if isinstance(store, _Examples):
        store.running = running
    return running


@pytest.mark.parametrize("error", [
    Unavailable("DATABASE_UNAVAILABLE", "PostgreSQL is unavailable (ConnectionDoesNotExistError)"),
    ConnectionRefusedError(111, "Connect call failed"),
], ids=["unavailable", "oserror"])
async def test_a_transient_database_error_hands_the_session_back_to_the_queue(
    tiny_model_dir: Path, tmp_path: Path, error: BaseException
) -> None:
    store = _Blip(error)
    learner = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(replay_fraction=0.0))
    running = _running(learner, tmp_path, store)
    with pytest.raises(Cancelled) as stopped:  # not the store's error, which would end the job FAILED
        await asyncio.wait_for(running.loop(), 60)
    assert stopped.value.message == "stopped to continue later"
    assert running.ctx.cancel.reason is StopReason.SHUTDOWN, "the job manager queues it again, as at a shutdown"
    said = [p for p in running.ctx.recorded if getattr(p, "code", "") == "SESSION_INTERRUPTED"]
    assert len(said) == 1 and type(error).__name__ in said[0].message


async def test_a_stop_asked_before_the_error_goes_on_as_asked(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = _Blip(Unavailable("DATABASE_UNAVAILABLE", "PostgreSQL is unavailable"))
    learner = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(replay_fraction=0.0))
    running = _running(learner, tmp_path, store)
    running.ctx.cancel.cancel(StopReason.CANCEL)
    with pytest.raises(Cancelled) as stopped:
        await running._interrupted(Unavailable("DATABASE_UNAVAILABLE", "PostgreSQL is unavailable"))
    assert running.ctx.cancel.reason is StopReason.CANCEL and "stopped after 0 updates" in stopped.value.message


@pytest.mark.parametrize("only", ["online/live", ""], ids=["live-write-fails", "object-store-down"])
async def test_after_a_transient_error_every_example_is_trained_on(tiny_model_dir: Path, tmp_path: Path,
                                                                   only: str) -> None:
    """Worker 1 reads the 12 examples and makes update 1 (checkpointed); its update 2 pops examples 5-8 and trains,
    then storing the live adapter fails. With only live writes failing, its stop stores a checkpoint of update 2;
    with the object store down, none, and worker 2 goes on from update 1's. Either way worker 2 trains on every
    example worker 1 did not (by sequence number, from the checkpoint), and none is left untrained."""
    trained: list[int] = []

    def counting(learner: OnlineLearner) -> None:
        update = learner.update

        def wrapped(learning_rate: float):
            taken = [h.seq for h in list(learner.pending)[:learner.spec.update_every]]
            result = update(learning_rate)
            trained.extend(taken)
            return result

        learner.update = wrapped  # type: ignore[method-assign]

    artifacts = _ObjectStore(tmp_path / "artifacts", fail_at=2, only=only or "")
    # only live writes failing: the 2nd live write (update 2's); the object store down: from the 3rd write on
    # (update 1's live adapter and checkpoint stored, then update 2's live adapter fails, and its checkpoint)
    artifacts.fail_at = 2 if only else 3
    first_store = _Examples()
    first = OnlineLearner(loaded(tiny_model_dir, tmp_path / "w1"), session(replay_fraction=0.0))
    counting(first)
    worker1 = _running(first, tmp_path / "w1", first_store, artifacts, checkpoint_every=1)
    with pytest.raises(Cancelled):
        await asyncio.wait_for(worker1.loop(), 120)
    assert worker1.ctx.cancel.reason is StopReason.SHUTDOWN
    assert trained == list(range(1, 9)), "update 2 took examples 5-8 before the error"
    output = worker1.ctx.job.output
    noticed = [p.code for p in worker1.ctx.recorded if hasattr(p, "code")]
    assert output.checkpoints[0].step == (2 if only else 1), (output.checkpoints, noticed)
    assert ("CHECKPOINT_NOT_STORED" in noticed) == (not only)

    artifacts.fail_at = 0  # the object store is back
    resumed_from = output.checkpoints[0].step
    trained_before_checkpoint = list(range(1, 4 * resumed_from + 1))
    trained.clear()
    second_store = _Finishing()
    second = OnlineLearner(loaded(tiny_model_dir, tmp_path / "w2"), session(replay_fraction=0.0))
    worker2 = _running(second, tmp_path / "w2", second_store, artifacts, output=output, checkpoint_every=1)
    runner = OnlineRunner(store=second_store, registry=None, preparer=None, planner=None,  # type: ignore[arg-type]
                          artifacts=artifacts)
    await runner._resume(worker2.ctx, second)  # type: ignore[arg-type]
    counting(second)
    with pytest.raises(Cancelled):
        await asyncio.wait_for(worker2.loop(), 120)
    assert sorted(trained_before_checkpoint + trained) == list(range(1, EXAMPLES + 1)), (
        f"worker 2 trained on {trained} after the checkpoint of update {resumed_from}")
    assert second.updates == EXAMPLES // 4 and not second.pending and second.trained_through == EXAMPLES


class _HandedOver:
    """A toy run that meets a store error the first time, and stops as a session does then (engine.online.session
    RunningSession._interrupted); the second time it succeeds."""

    kind = COUNT

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, ctx: JobContext[CountSpec, CountOutput]) -> str:
        self.runs += 1
        ctx.started(JobState.RUNNING, "running")
        if self.runs == 1:
            ctx.cancel.cancel(StopReason.SHUTDOWN)
            raise Cancelled("JOB_CANCELLED", "stopped to continue later")
        return "done"

    def fold(self, job: Any, payload: object) -> Any:
        return job


async def test_the_job_manager_queues_a_session_stopped_so_again_and_a_worker_runs_it(tmp_path: Path) -> None:
    slots, queue = JobSlots(1), InProcessQueue()
    runner = _HandedOver()
    mgr = JobManager(runner=runner, store=InMemoryJobStore(), queue=queue, work_dir=tmp_path, slots=slots,
                     control_poll_seconds=0.01, watch_poll_seconds=0.05)
    queue.start_worker({COUNT.name: lambda kind, job_id: mgr.execute(job_id)}, concurrency=1, name="test")
    try:
        job = await mgr.submit(mgr.new_job(CountSpec(1), CountOutput()))
        async with asyncio.timeout(30):
            while (await mgr.get(job.id)).state is not JobState.SUCCEEDED:
                assert not (await mgr.get(job.id)).state.terminal
                await asyncio.sleep(0.02)
        assert runner.runs == 2
    finally:
        await asyncio.gather(mgr.shutdown(), queue.stop_worker())
        slots.shutdown()


async def test_the_session_store_raises_unavailable_for_the_drivers_connection_errors() -> None:
    """The session sees Unavailable, not the driver's errors: PostgresOnlineStore's calls take their connections
    through engine.stores.postgres.acquired (one-statement calls through Statements); a statement's own error stays
    what it is."""
    from engine.stores.online_store import PostgresOnlineStore

    class _Lost:
        async def fetchrow(self, *args: Any) -> None:
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")

    class _Gone:
        def get_max_size(self) -> int:
            return 4

        @contextlib.asynccontextmanager
        async def acquire(self) -> Any:
            yield _Lost()

    store = PostgresOnlineStore(_Gone())  # type: ignore[arg-type]
    with pytest.raises(Unavailable) as lost:
        await store.controls("s")
    assert lost.value.reason == "DATABASE_UNAVAILABLE" and "ConnectionDoesNotExistError" in lost.value.message
    with pytest.raises(Unavailable):
        await store.set("s", enabled=False)


class _Unreachable(_Examples):
    """A store that cannot be reached when the stopped session counts the examples it has not read."""

    async def count_after(self, session_id: str, seq: int) -> int:
        raise Unavailable("DATABASE_UNAVAILABLE", "PostgreSQL is unavailable (ConnectionRefusedError)")


async def test_a_clients_stop_while_the_stores_are_down_ends_the_session_cancelled(tiny_model_dir: Path,
                                                                                  tmp_path: Path) -> None:
    """StopOnlineSession while PostgreSQL and the object store are out of reach: its last checkpoint and the count
    of the examples not read raised out of the stop, and the job the client stopped ended FAILED."""
    learner = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(replay_fraction=0.0))
    running = _running(learner, tmp_path, _Unreachable(), _ObjectStore(tmp_path / "artifacts", fail_at=1))
    running.changed = True  # weights a checkpoint would keep
    running.ctx.cancel.cancel(StopReason.CANCEL)
    with pytest.raises(Cancelled) as stopped:
        await running._stop()
    assert stopped.value.message == ("stopped after 0 updates on 0 examples; the examples not read yet could not "
                                     "be counted")
    assert "CHECKPOINT_NOT_STORED" in [getattr(p, "code", "") for p in running.ctx.recorded]
