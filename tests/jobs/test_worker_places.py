"""The places of a process's queue workers on PostgreSQL (procrastinate), wired as server.engine_wiring wires them
(``start_job_workers``, ``JOB_QUEUES``): a worker takes no more training items than it runs at once, so a busy one
leaves the next job to an idle one; online sessions have places of their own, which training jobs never take, nor
sessions theirs (and the sessions' items queued before they had a queue of their own move to it, as do those a replica
of the earlier version queues there during a rolling upgrade, and a stalled one). On a serving process
(``start_serving_workers``) evaluations, preparations and pipeline runs have a queue and a worker each, with as many
places as each runs at once: a replica running an evaluation (or a preparation) leaves the next one to an idle replica.
The toy counting kind stands for training jobs and further toy kinds for sessions, evaluations, preparations and
pipeline runs; each step waits for the test."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from engine.jobs.context import JobSlots
from engine.jobs.core import JobEvent, JobKind, JobState, StateChanged, Warned
from engine.jobs.manager import JobManager
from engine.lora.evaluation_jobs import EVALUATION
from engine.online.spec import ONLINE_SESSION
from engine.pipelines.spec import PIPELINE_RUN
from engine.preparation.jobs import PREPARATION
from engine.stores import postgres
from engine.stores.job_queue import ONLINE_QUEUE, PREPARATION_QUEUE, QUEUE, SERVING_QUEUE, ProcrastinateQueue
from engine.stores.job_store import PostgresJobStore
from engine.stores.postgres import migrate
from engine.training.spec import TRAINING
from server.engine_wiring import JOB_QUEUES, start_job_workers, start_serving_workers
from server.settings import Settings
from tests.jobs.test_job_core import COUNT, Counted, CountOutput, CountRunner, CountSpec

pytestmark = pytest.mark.full_stack

HEARTBEAT, STALLED = 0.2, 1.0
WAIT = 15  # seconds: only how long a broken test takes to fail
MAX_JOBS = Settings.model_fields["max_concurrent_jobs"].default  # 1
SESSIONS = Settings.model_fields["online_max_sessions"].default  # 2
RUNS = Settings.model_fields["pipeline_max_concurrent_runs"].default  # 8

SESSION = JobKind("countSession", "countSessions", CountSpec, CountOutput, event_types=(Counted,))


class SessionRunner(CountRunner):
    """A session stands in for an online session: it holds its place, counting, for as long as the test lets it."""

    kind = SESSION


# Stand-ins for the serving side's kinds, each queued where JOB_QUEUES queues the kind it stands for.
EVAL = JobKind("countEvaluation", "countEvaluations", CountSpec, CountOutput, event_types=(Counted,))
PREP = JobKind("countPreparation", "countPreparations", CountSpec, CountOutput, event_types=(Counted,))
RUN = JobKind("countRun", "countRuns", CountSpec, CountOutput, event_types=(Counted,))
SERVING_KINDS = {EVAL.name: JOB_QUEUES[EVALUATION.name], PREP.name: JOB_QUEUES[PREPARATION.name],
                 RUN.name: JOB_QUEUES[PIPELINE_RUN.name]}


class EvaluationRunner(CountRunner):
    kind = EVAL


class PreparationRunner(CountRunner):
    kind = PREP


class RunRunner(CountRunner):
    kind = RUN


class Process:
    """One server process's job side: its queue, training-side jobs sharing ``JobSlots(max_concurrent_jobs)``,
    sessions with slots of their own, when ``serving`` evaluations, preparations and pipeline runs with slots of
    their own each (one, one, ``pipeline_max_concurrent_runs``), and its workers started as build_engine starts them."""

    def __init__(self, url: str, pool: asyncpg.Pool, work_dir: Path, name: str, *, runs_sessions: bool = True,
                 serving: bool = False) -> None:
        self.queue = ProcrastinateQueue(url, heartbeat_seconds=HEARTBEAT, stalled_seconds=STALLED,
                                        queues={**JOB_QUEUES, SESSION.name: ONLINE_QUEUE, **SERVING_KINDS})
        self.slots, self.session_slots = JobSlots(MAX_JOBS), JobSlots(SESSIONS)
        self.serving_slots = [JobSlots(1), JobSlots(1), JobSlots(RUNS)]
        self.jobs = JobManager(runner=CountRunner(), store=PostgresJobStore(pool, COUNT), queue=self.queue,
                               work_dir=work_dir / "jobs", slots=self.slots, worker_id=name, control_poll_seconds=0.1)
        self.sessions = JobManager(runner=SessionRunner(), store=PostgresJobStore(pool, SESSION), queue=self.queue,
                                   work_dir=work_dir / "sessions", slots=self.session_slots, worker_id=name,
                                   control_poll_seconds=0.1)
        self.evaluations, self.preparations, self.runs = (
            JobManager(runner=runner, store=PostgresJobStore(pool, runner.kind), queue=self.queue,
                       work_dir=work_dir / runner.kind.collection, slots=slots, worker_id=name,
                       control_poll_seconds=0.1)
            for runner, slots in zip((EvaluationRunner(), PreparationRunner(), RunRunner()), self.serving_slots,
                                     strict=True))
        self.runs_sessions = runs_sessions  # False: online_max_sessions 0, no session worker (it still queues them)
        self.serving = serving
        self.started = False

    async def start(self) -> None:
        await self.queue.open()
        start_job_workers(self.queue, (self.jobs,), self.sessions if self.runs_sessions else None,
                          name=self.jobs.worker_id)
        if self.serving:
            start_serving_workers(self.queue, self.evaluations, self.preparations, self.runs, name=self.jobs.worker_id)
        self.started = True

    async def stop(self) -> None:
        managers = (self.jobs, self.sessions, self.evaluations, self.preparations, self.runs)
        if self.started:
            stopping = asyncio.gather(*(m.shutdown() for m in managers), self.queue.stop_worker())
            while not stopping.done():  # each running job's next step stops it
                for manager in managers:
                    manager.runner.release.release()
                await asyncio.sleep(0.05)
            await stopping
        await self.queue.close()
        for manager in managers:
            await manager._store._notifications.close()
        for slots in (self.slots, self.session_slots, *self.serving_slots):
            slots.shutdown()


@pytest.fixture
async def processes(database_url: str, tmp_path: Path):
    """Makes processes on one migrated database: ``make(name, runs_sessions=True, serving=False)``; all stopped
    after the test."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=8)
    await migrate(pool)
    made: list[Process] = []

    def make(name: str, *, runs_sessions: bool = True, serving: bool = False) -> Process:
        made.append(Process(database_url, pool, tmp_path / name, name, runs_sessions=runs_sessions, serving=serving))
        return made[-1]

    make.pool = pool  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for process in reversed(made):
            await process.stop()
        await pool.close()


async def _until_running(manager: JobManager, job_id: str, what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while (await manager.get(job_id)).state is not JobState.RUNNING:
                await asyncio.sleep(0.1)
    except TimeoutError:
        items = await manager._store._pool.fetch(
            "SELECT queue_name, status, args->>'job_id' AS job FROM procrastinate_jobs ORDER BY id")
        raise AssertionError(f"{what} did not start in {WAIT} s; queue items: "
                             f"{[(r['queue_name'], r['status'], r['job']) for r in items]}") from None


async def _items(pool: asyncpg.Pool) -> dict[str, str]:
    """Each queued job's item status, by job id."""
    return {r["job"]: r["status"] for r in await pool.fetch(
        "SELECT status, args->>'job_id' AS job FROM procrastinate_jobs")}


@pytest.mark.slow
async def test_a_busy_worker_leaves_the_next_job_to_an_idle_worker(processes) -> None:
    """Worker A runs a job (its one slot taken); a second job is queued, and worker B starts idle. A took the second
    job's item as well (its queue worker had places beyond its slots, for sessions) and held it, waiting for its own
    slot, "doing" under a live worker: B could never take it, and the job waited for A's first job to end."""
    a, b = processes("worker-a"), processes("worker-b")
    await a.start()
    first = await a.jobs.submit(a.jobs.new_job(CountSpec(1000), CountOutput()))
    await _until_running(a.jobs, first.id, "the first job")
    second = await a.jobs.submit(a.jobs.new_job(CountSpec(1000), CountOutput()))
    await asyncio.sleep(2)  # A's queue worker polls every second: time to take the item, were it to
    assert (await _items(processes.pool))[second.id] == "todo", "the busy worker took the second job's item"
    await b.start()
    await _until_running(b.jobs, second.id, "the second job, with worker B idle,")
    assert (await b.jobs.get(first.id)).state is JobState.RUNNING  # still on A


@pytest.mark.slow
async def test_sessions_and_training_jobs_never_take_each_others_places(processes) -> None:
    """A worker running as many sessions as it may (and one more queued) still starts a training job; one running
    a training job (and more queued) still starts sessions. With one set of places for both, a session waiting for
    a session slot held a training job's place, and training items waiting for the training slot held sessions'."""
    a = processes("worker-a")
    await a.start()
    sessions = [await a.sessions.submit(a.sessions.new_job(CountSpec(1000), CountOutput()))
                for _ in range(SESSIONS + 1)]
    for session in sessions[:SESSIONS]:
        await _until_running(a.sessions, session.id, "a session")
    await asyncio.sleep(2)  # time for the queue worker to take the extra session's item, were it to
    job = await a.jobs.submit(a.jobs.new_job(CountSpec(1000), CountOutput()))
    await _until_running(a.jobs, job.id, "a training job, with the worker's training slot free,")
    assert (await _items(processes.pool))[sessions[-1].id] == "todo", "a session beyond the limit was taken"

    more = [await a.jobs.submit(a.jobs.new_job(CountSpec(1000), CountOutput())) for _ in range(SESSIONS)]
    for session in sessions[:SESSIONS]:  # the running sessions end: their places free, for sessions only
        await a.sessions.cancel(session.id)
    for _ in range(SESSIONS):
        a.sessions.runner.release.release()
    await _until_running(a.sessions, sessions[-1].id, "the queued session, with the session places free,")
    await asyncio.sleep(2)
    items = await _items(processes.pool)
    assert [items[j.id] for j in more] == ["todo"] * SESSIONS, "training items were taken beyond the training slot"


async def test_the_items_of_sessions_queued_before_move_to_their_own_queue(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database migrated before sessions had a queue of their own holds their items in the training queue, one
    waiting and one running, beside a training job's: migration 0031 moves the sessions' (a worker taking only
    training items would run them in a training job's place, and put a stalled one back there)."""
    files = postgres._migration_files()
    monkeypatch.setattr(postgres, "_migration_files", lambda: [f for f in files if f[0] < 31])
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    before = ProcrastinateQueue(database_url)  # every kind in the training queue, as before
    try:
        await migrate(pool)
        await before.open()
        for kind, job_id in ((ONLINE_SESSION.name, "waiting"), (ONLINE_SESSION.name, "running"), (TRAINING.name, "t")):
            await before.enqueue(kind, job_id)
        await pool.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE args->>'job_id' = 'running'")
        monkeypatch.undo()
        assert [n for n in await migrate(pool) if n.startswith("0031_")] == ["0031_online_queue.sql"]
        queued = {r["job"]: r["queue_name"] for r in await pool.fetch(
            "SELECT queue_name, args->>'job_id' AS job FROM procrastinate_jobs")}
        assert queued == {"waiting": ONLINE_QUEUE, "running": ONLINE_QUEUE, "t": QUEUE}
    finally:
        await before.close()
        await pool.close()


async def _queued(pool: asyncpg.Pool) -> dict[str, list[tuple[str, str]]]:
    """Each queued job's items as (queue, status), oldest first, by job id."""
    items: dict[str, list[tuple[str, str]]] = {}
    for r in await pool.fetch("SELECT queue_name, status, args->>'job_id' AS job FROM procrastinate_jobs ORDER BY id"):
        items.setdefault(r["job"], []).append((r["queue_name"], r["status"]))
    return items


@pytest.fixture
async def earlier_version(database_url: str):
    """A queue as a replica of the version before sessions had a queue of their own defers into: every kind in the
    training queue (still running beside the new version's during a rolling upgrade)."""
    queue = ProcrastinateQueue(database_url)
    await queue.open()
    try:
        yield queue
    finally:
        await queue.close()


async def _session_queued_by(earlier: ProcrastinateQueue, process: Process) -> str:
    """A session created on the replica of the earlier version: its item deferred into the training queue."""
    process.sessions._queue = earlier
    try:
        return (await process.sessions.submit(process.sessions.new_job(CountSpec(1000), CountOutput()))).id
    finally:
        process.sessions._queue = process.queue


async def test_a_session_an_earlier_version_queued_in_the_training_queue_takes_no_training_place(
        processes, earlier_version: ProcrastinateQueue) -> None:
    """The training queue's worker took the session's item and ran the session in the training job's place (one):
    the next training job waited behind it for as long as the session ran (hours), the worker's training slot free.
    The item is moved to the sessions' queue instead, and the session runs in a place of its own."""
    a = processes("worker-a")
    await a.start()
    session = await _session_queued_by(earlier_version, a)
    await _until_running(a.sessions, session, "the session, moved to the sessions' queue,")
    job = await a.jobs.submit(a.jobs.new_job(CountSpec(1000), CountOutput()))
    await _until_running(a.jobs, job.id, "a training job, with the worker's training slot free,")
    assert (await _queued(processes.pool))[session] == [(ONLINE_QUEUE, "doing")]


async def test_a_session_an_earlier_version_queued_waits_in_its_own_queue_on_a_worker_running_none(
        processes, earlier_version: ProcrastinateQueue) -> None:
    """A worker running no sessions (online_max_sessions 0) took the session's item from the training queue and
    found no executor for it: every attempt failed, the item ended failed and the session stayed QUEUED with nothing
    queued. The item is moved to the sessions' queue, where a worker running sessions takes it."""
    a = processes("worker-a", runs_sessions=False)
    await a.start()
    session = await _session_queued_by(earlier_version, a)
    try:
        async with asyncio.timeout(WAIT):
            while (await _queued(processes.pool))[session] != [(ONLINE_QUEUE, "todo")]:
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"the session's item was not moved: {await _queued(processes.pool)}") from None
    job = await a.jobs.submit(a.jobs.new_job(CountSpec(1000), CountOutput()))
    await _until_running(a.jobs, job.id, "a training job")
    assert (await a.sessions.get(session)).state is JobState.QUEUED
    b = processes("worker-b")
    await b.start()
    await _until_running(b.sessions, session, "the session, on a worker running sessions,")


async def test_a_stalled_session_item_in_the_training_queue_is_put_back_into_the_sessions_queue(
        processes, earlier_version: ProcrastinateQueue) -> None:
    """The session's item in the training queue, taken there by a replica of the earlier version that then died
    (its item "doing", no worker): the stalled check put it back where it stalled, the training queue, where a worker
    running a training job (its one place taken) left it waiting. It goes back into the sessions' queue."""
    a = processes("worker-a")
    await a.start()
    job = await a.jobs.submit(a.jobs.new_job(CountSpec(1000), CountOutput()))
    await _until_running(a.jobs, job.id, "the training job")
    session = await _session_queued_by(earlier_version, a)  # its replica killed once it took the item:
    await processes.pool.execute(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = NULL WHERE args->>'job_id' = $1", session)
    await _until_running(a.sessions, session, "the stalled session, put back,")
    assert (await _queued(processes.pool))[session] == [(QUEUE, "failed"), (ONLINE_QUEUE, "doing")]
    assert (await a.jobs.get(job.id)).state is JobState.RUNNING


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["evaluations", "preparations"])
async def test_a_busy_serving_replica_leaves_the_next_evaluation_to_an_idle_one(processes, kind: str) -> None:
    """Replica A runs an evaluation (its one evaluation slot taken); a second is queued, and replica B starts idle.
    A's one serving worker, with places for every serving kind (and pipeline_max_concurrent_runs for runs), took the
    second evaluation's item into a free place and held it, waiting for the evaluation slot, "doing" under a live
    worker: B could never take it, and it waited for A's first evaluation to end. Likewise a preparation. A pipeline
    run still starts on A, in a place of its own."""
    a, b = processes("replica-a", serving=True), processes("replica-b", serving=True)
    await a.start()
    jobs: JobManager = getattr(a, kind)
    first = await jobs.submit(jobs.new_job(CountSpec(1000), CountOutput()))
    await _until_running(jobs, first.id, f"the first of the {kind}")
    second = await jobs.submit(jobs.new_job(CountSpec(1000), CountOutput()))
    await asyncio.sleep(2)  # A's queue workers poll every second: time to take the item, were they to
    assert (await _items(processes.pool))[second.id] == "todo", f"the busy replica took the second of the {kind}"
    run = await a.runs.submit(a.runs.new_job(CountSpec(1000), CountOutput()))
    await _until_running(a.runs, run.id, "a pipeline run, beside the running one,")
    await b.start()
    await _until_running(getattr(b, kind), second.id, f"the second of the {kind}, with replica B idle,")
    assert (await jobs.get(first.id)).state is JobState.RUNNING  # still on A


async def test_a_preparation_queued_in_the_evaluations_queue_moves_to_its_own(processes, database_url: str) -> None:
    """A replica of the version before preparations had a queue of their own queues them with evaluations: the
    evaluations' worker takes the item and moves it to the preparations' queue (``_move``), where it runs, with no
    migration; an evaluation still runs beside it."""
    earlier = ProcrastinateQueue(database_url, queues={EVAL.name: SERVING_QUEUE, PREP.name: SERVING_QUEUE})
    await earlier.open()
    try:
        a = processes("replica-a", serving=True)
        await a.start()
        a.preparations._queue = earlier
        try:
            preparation = (await a.preparations.submit(a.preparations.new_job(CountSpec(1000), CountOutput()))).id
        finally:
            a.preparations._queue = a.queue
        await _until_running(a.preparations, preparation, "the preparation, moved to its own queue,")
        assert (await _queued(processes.pool))[preparation] == [(PREPARATION_QUEUE, "doing")]
        evaluation = await a.evaluations.submit(a.evaluations.new_job(CountSpec(1000), CountOutput()))
        await _until_running(a.evaluations, evaluation.id, "an evaluation, beside the preparation,")
    finally:
        await earlier.close()


def _warnings(events: list[JobEvent]) -> list[Warned]:
    return [e.payload for e in events if isinstance(e.payload, Warned)]


async def _until_told(queue: ProcrastinateQueue, kind: str, *, waiting: bool, what: str) -> None:
    """Until ``queue`` finds a worker for ``kind`` (``waiting`` False) or none (True): workers announce themselves
    as they register, and go as they unregister."""
    try:
        async with asyncio.timeout(WAIT):
            while (await queue.waiting_reason(kind) is not None) is not waiting:
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{what}: still {await queue.waiting_reason(kind)!r} after {WAIT} s") from None


async def _until_announced(pool: asyncpg.Pool) -> None:
    """Until every registered worker has recorded what it takes."""
    query = "SELECT count(*) FROM procrastinate_workers w LEFT JOIN queue_places p ON p.worker_id = w.id"
    try:
        async with asyncio.timeout(WAIT):
            while await pool.fetchval(f"{query} WHERE p.worker_id IS NULL") or not await pool.fetchval(query):
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"the workers did not announce what they take in {WAIT} s") from None


async def test_a_job_no_running_worker_takes_is_told_so_as_it_is_created(processes) -> None:
    """An API replica running no worker (embedded_worker false) stored the job QUEUED and said nothing: with no worker
    anywhere, or none running sessions (online_max_sessions 0 on every worker), it waited for ever with no word. It
    is told (a NO_WORKER warning naming its queue and what would start a worker), and queued all the same: a worker
    started later runs it. A worker on another machine counts as long as its heartbeats go on."""
    api = processes("api")  # serves the API only: its queue, no worker of its own
    await api.queue.open()
    early = await api.jobs.submit(api.jobs.new_job(CountSpec(1000), CountOutput()))
    (warning,) = _warnings((await api.jobs.events(early.id))[1])
    assert warning.code == "NO_WORKER"
    assert f"no running worker takes {COUNT.name} jobs (queue {QUEUE})" in warning.message
    assert "learning-engine-server worker" in warning.message
    await api.jobs.pause(early.id)  # a queued job pauses at once; resumed, it is queued again, and told again
    await api.jobs.resume(early.id)
    events = (await api.jobs.events(early.id))[1]
    assert [w.code for w in _warnings(events)] == ["NO_WORKER", "NO_WORKER"]
    assert isinstance(events[-2].payload, StateChanged) and events[-2].payload.message == "resumed"

    worker = processes("worker", runs_sessions=False)
    await worker.start()
    await _until_running(worker.jobs, early.id, "the job created before any worker ran")
    await _until_announced(processes.pool)  # until then, a live worker may take any queue: nothing is said
    later = await api.jobs.submit(api.jobs.new_job(CountSpec(1000), CountOutput()))
    assert _warnings((await api.jobs.events(later.id))[1]) == []

    session = await api.sessions.submit(api.sessions.new_job(CountSpec(1000), CountOutput()))
    (warning,) = _warnings((await api.sessions.events(session.id))[1])
    assert warning.code == "NO_WORKER" and f"(queue {ONLINE_QUEUE})" in warning.message
    assert "online_max_sessions above 0" in warning.message
    assert (await api.sessions.get(session.id)).state is JobState.QUEUED

    await worker.stop()  # unregisters: its places go with it
    worker.started = False
    await _until_told(api.queue, COUNT.name, waiting=True, what="the only worker stopped")


async def test_a_queued_job_whose_item_was_lost_is_queued_again(processes) -> None:
    """A QUEUED job with no item in the queue (its create stored it, then queueing it failed and the client never
    retried; an item whose re-queueing kept failing) waited for ever: only a process's start queued such jobs again.
    ``recover`` (at start and every job_recover_seconds) queues exactly those again, and a worker runs them; a job
    whose item waits is left as it is."""
    a = processes("worker-a")
    await a.queue.open()  # its queue only: the jobs stay queued until its worker starts
    lost = await a.jobs.submit(a.jobs.new_job(CountSpec(1), CountOutput()))
    kept = await a.jobs.submit(a.jobs.new_job(CountSpec(1), CountOutput()))
    await processes.pool.execute("DELETE FROM procrastinate_jobs WHERE args ->> 'job_id' = $1", lost.id)
    assert await a.queue.held([lost.id, kept.id]) == {kept.id}
    assert await a.jobs.recover() == 1
    assert await a.queue.held([lost.id, kept.id]) == {lost.id, kept.id}
    assert await a.jobs.recover() == 0  # each has its item: nothing queued twice
    items = await processes.pool.fetch("SELECT args ->> 'job_id' AS job FROM procrastinate_jobs")
    assert sorted(r["job"] for r in items) == sorted([lost.id, kept.id])
    await a.start()
    a.jobs.runner.release.release()
    a.jobs.runner.release.release()
    for job in (lost, kept):
        await _until_ended(a.jobs, job.id)


async def _until_ended(manager: JobManager, job_id: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while not (await manager.get(job_id)).state.terminal:
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"job {job_id} did not end in {WAIT} s: {await manager.get(job_id)}") from None
    assert (await manager.get(job_id)).state is JobState.SUCCEEDED


async def test_a_worker_whose_registration_was_pruned_registers_and_announces_itself_again(processes) -> None:
    """Its registration pruned by the others (the database away longer than their stalled timeout), an idle worker
    stayed unregistered, fetching nothing, so its places went unannounced and every new job was told no worker takes
    it. Its heartbeat finds the registration gone and makes it anew; and a live worker that announced nothing (of an
    earlier version, during a rolling upgrade) is taken as one that may take the queue."""
    api, worker = processes("api"), processes("worker")
    await api.queue.open()
    await worker.start()
    await _until_announced(processes.pool)
    assert await api.queue.waiting_reason(COUNT.name) is None
    async with processes.pool.acquire() as conn, conn.transaction():  # pruned: its places go with it
        await conn.execute("DELETE FROM procrastinate_workers")
        assert await conn.fetchval("SELECT count(*) FROM queue_places") == 0
    await _until_announced(processes.pool)  # registered again, at its next heartbeat
    assert await api.queue.waiting_reason(COUNT.name) is None
    job = await api.jobs.submit(api.jobs.new_job(CountSpec(1), CountOutput()))
    await _until_running(worker.jobs, job.id, "a job, on the worker registered again")

    await worker.stop()
    worker.started = False
    await _until_told(api.queue, COUNT.name, waiting=True, what="the only worker stopped")
    await processes.pool.execute("INSERT INTO procrastinate_workers DEFAULT VALUES")  # an earlier version's
    assert await api.queue.waiting_reason(COUNT.name) is None
