"""The job queue on PostgreSQL through procrastinate: workers on many machines share one database.

Why procrastinate (3.x): it gives per-worker concurrency (1 by default here: one model in memory per worker),
priorities, LISTEN/NOTIFY with polling as the fallback, and worker heartbeats from which stalled jobs are found.
PgQueuer (1.x) was the other candidate and speaks asyncpg, but its workers take at least two jobs at a time
(``max_concurrent_tasks`` must be twice the batch size), which would hold a second job hostage on a busy worker.

What procrastinate leaves to its user, done here: a queue item is only "run job <id> of <kind>"; the job itself,
its lease and its fencing live in our ``jobs`` table (engine.stores.job_store). Stalled items (their worker's
heartbeat stopped: it was killed, or lost the database) are put back in the queue by every worker's periodic
check, and the next worker to take one claims the job with a new lease, so the old worker, should it wake up,
can write nothing. Queueing is idempotent per job (procrastinate's queueing lock), and a job is never run by
two items at once (its lock). An item whose run raised (the store unreachable) is run again, a few times; its
last attempt is told to the job manager (``queue_attempt``), which then ends the job instead of leaving it active
with nothing queued. Successful items are deleted as they end; the others (failed, cancelled) are deleted a
retention period later by the same periodic check that puts stalled items back: the jobs' own records stay.

Queueing a job answers PostgreSQL out of reach (the queue's psycopg pool finding no connection, a connection lost)
UNAVAILABLE DATABASE_UNAVAILABLE, as the stores on asyncpg do (engine.stores.postgres.unavailable), not as
procrastinate's ConnectorException; its other errors stay what they are. The worker's own loops retry on any error.

Kinds of job that need something only some processes have go to their own queue (``queues``: kind -> queue;
evaluation jobs need the serving engine): a worker takes jobs only from the queues of the kinds it runs. So do kinds
that run within limits of their own (online sessions, beside training and Fisher jobs; evaluations, preparations and
pipeline runs, each beside the others): procrastinate's worker takes
an item whenever one of its ``concurrency`` places is free, whatever its kind, so one worker per queue, with as many
places as the kinds of that queue run at once (server.engine_wiring), is what keeps a busy worker from taking an
item it cannot start (it would wait there, "doing" under a live worker, where no idle worker may take it), and one
kind from taking another's places. A worker runs only the kinds of its own queues: an item of a kind whose queue is
another (queued where its kind went before it had a queue of its own, by a replica of an earlier version still
running during a rolling upgrade) is moved to its kind's queue by the worker that takes it, not run there nor failed,
and a stalled item is put back into its kind's queue, wherever it stalled.

Stopping does not rely on cancellation alone. On Python 3.11 ``asyncio.wait_for`` drops a cancellation that lands
as the future it waits on completes (CPython gh-86296, fixed in 3.12 only), and psycopg_pool waits for a connection
with it: a task cancelled just as it is handed a connection runs on as if nothing happened. So every loop here
also ends on a flag set by ``stop_worker``, and procrastinate's workers are asked to stop besides being cancelled.
The project's own timed waits use ``asyncio.timeout``, which runs the wait in the task itself and keeps a
cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import procrastinate
import psycopg
from procrastinate import exceptions as pexc
from procrastinate.schema import SchemaManager
from procrastinate.worker import Worker

from engine.jobs.ports import JobExecutor, QueueAttempt, queue_attempt
from engine.stores.postgres import unavailable

log = logging.getLogger(__name__)

QUEUE = "learning_engine_jobs"
# Kinds only a process serving LoraControl runs, each within a limit of its own, so each in a queue of its own:
SERVING_QUEUE = "learning_engine_serving"  # evaluation jobs
PREPARATION_QUEUE = "learning_engine_preparation"  # data preparation jobs (in SERVING_QUEUE before: moved, ``_move``)
PIPELINE_QUEUE = "learning_engine_pipelines"  # pipeline runs
ONLINE_QUEUE = "learning_engine_online"  # online sessions: places of their own beside training and Fisher jobs'
TASK = "learning_engine.run_job"

# What starts a worker of each queue, for a job created while none runs (``waiting_reason``).
# (The serving side's queues need none: only a serving process has their kinds, and it runs their workers itself.)
QUEUE_WORKERS = {
    QUEUE: "a worker (`learning-engine-server worker`, or a server with embedded_worker)",
    ONLINE_QUEUE: "a worker with online_max_sessions above 0",
}
ANNOUNCE_POLL_SECONDS = 0.2  # how soon a worker's registration is announced (a look at memory, not the database)
# How long a create waits to learn whether a worker takes its job: the look is advisory, and with PostgreSQL away the
# queue's pool would wait its whole timeout for a connection before the create's own insert fails.
WAITING_REASON_SECONDS = 1.0


# psycopg's SQLSTATEs of a server going away or not taking connections yet (as engine.stores.postgres.CONNECTION_ERRORS
# for asyncpg: the shutdowns, "cannot connect now", and the connection exceptions, class 08).
_OUT_OF_REACH_STATES = ("57P01", "57P02", "57P03")


def _out_of_reach(exc: BaseException) -> bool:
    """Whether ``exc``, the psycopg error under one of procrastinate's ConnectorException, is PostgreSQL out of reach
    rather than a statement's own error: a connection psycopg could not make or lost (its OperationalError with no
    SQLSTATE: refused, reset, the pool's PoolTimeout waiting for one), a connection exception (class 08), a
    shutdown."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _OUT_OF_REACH_STATES


def _look_ended(look: asyncio.Future[dict[str, Any]]) -> None:
    """Log the failure of a look for a queue's workers (``waiting_reason``), ended in time or not."""
    if not look.cancelled() and look.exception() is not None:
        log.info("could not look for the workers of a queue", exc_info=look.exception())


@contextlib.contextmanager
def _out_of_reach_unavailable() -> Iterator[None]:
    """procrastinate's ConnectorException for PostgreSQL out of reach as UNAVAILABLE DATABASE_UNAVAILABLE; its other
    errors stay what they are."""
    try:
        yield
    except pexc.ConnectorException as exc:
        cause = exc.__cause__
        if cause is not None and _out_of_reach(cause):
            raise unavailable(cause) from exc
        raise


def procrastinate_schema() -> str:
    """The SQL of procrastinate's tables and functions (applied once by the migrations)."""
    return SchemaManager.get_schema()


class SteadyWorker(Worker):
    """procrastinate's worker, which goes on taking jobs after a fetch failed.

    procrastinate's own stops at a failed fetch (the database restarting) and, stopping, waits for every job it runs
    to end, with no limit, before it unregisters: a training run or an online session holds it for hours, and all
    that time nothing new is taken. It must wait, as its unregistration would leave their items without a worker, to
    be taken for stalled and moved to other workers. Here a failed fetch is tried again at the next poll, under the
    same registration, while the running jobs go on (the queue keeps its heartbeats). If the registration itself is
    gone (this process was frozen long enough for the others to prune it: the fetch violates the worker foreign key),
    the worker registers anew; the items it ran under the old one have no worker already and are being queued again.
    Relies on ``_fetch_and_process_jobs`` (procrastinate 3.10, pinned), which raises what the fetch raised.
    """

    async def _fetch_and_process_jobs(self) -> None:
        try:
            await super()._fetch_and_process_jobs()  # type: ignore[no-untyped-call]  # procrastinate leaves it unannotated
        except Exception as exc:  # noqa: BLE001 - logged; fetched again at the next poll or notification
            log.warning("could not take a job from the queue; trying again", exc_info=True)
            if isinstance(exc.__cause__, psycopg.errors.ForeignKeyViolation):
                with contextlib.suppress(Exception):  # else at the next failed fetch
                    self.worker_id = await self.app.job_manager.register_worker()


class ProcrastinateQueue:
    """engine.jobs.ports.JobQueue, and this process's worker when ``start_worker`` is called."""

    def __init__(self, database_url: str, *, heartbeat_seconds: float = 5.0, stalled_seconds: float = 20.0,
                 queues: Mapping[str, str] | None = None, retries: int = 20, retry_wait_seconds: int = 5,
                 retention_hours: int = 7 * 24, prune_every_seconds: float = 3600.0) -> None:
        """``retries``: how many times an item whose executor raised is run again, ``retry_wait_seconds`` apart
        (after the last, the executor ends the job: ``queue_attempt``). Items that ended (failed: closed as
        stalled, or out of retries; cancelled, aborted) are deleted ``retention_hours`` after they ended, checked
        every ``prune_every_seconds``."""
        if retries < 1:  # procrastinate reads max_attempts=0 as no limit: the item would be run again for ever
            raise ValueError(f"retries must be at least 1, got {retries}")
        # Each running worker (up to five: training, online sessions, and on a serving process evaluations,
        # preparations and pipeline runs) holds one connection for LISTEN; the others (seven, as with three workers
        # and ten before) serve fetches, heartbeats and defers.
        self._app = procrastinate.App(connector=procrastinate.PsycopgConnector(
            conninfo=database_url, min_size=1, max_size=12))
        self._heartbeat = heartbeat_seconds
        self._stalled = stalled_seconds
        self._executors: dict[str, JobExecutor] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._running: set[Worker] = set()  # procrastinate's workers in their run(), to be asked to stop
        self._rescuer: asyncio.Task[None] | None = None
        self._stopping = False
        self._queues = dict(queues or {})  # kind -> queue, QUEUE for the others
        self._taken: list[str] = []  # the queues this process's worker takes from
        self._looks: set[asyncio.Future[dict[str, Any]]] = set()  # waiting_reason's looks still going
        self._retention_hours = retention_hours
        self._prune_every = prune_every_seconds

        # procrastinate's max_attempts counts the runs after the first: an item is run again while its earlier
        # runs (the item's ``attempts``) are fewer (RetryStrategy.get_retry_decision; no retry_exceptions here,
        # so the exception does not matter). The run that finds them reached is the last.
        @self._app.task(name=TASK, queue=QUEUE, pass_context=True,
                        retry=procrastinate.RetryStrategy(max_attempts=retries, wait=retry_wait_seconds))
        async def run_job(context: procrastinate.JobContext, kind: str, job_id: str) -> None:
            if context.job.queue != self._queue_of(kind):
                await self._move(kind, job_id, context.job)
                return
            earlier = context.job.attempts
            attempt = queue_attempt.set(QueueAttempt(earlier + 1, last=earlier >= retries))
            try:
                await self._executors[kind](kind, job_id)
            finally:
                queue_attempt.reset(attempt)

        self._task = run_job

    async def open(self) -> None:
        await self._app.open_async()

    def _queue_of(self, kind: str) -> str:
        """The queue items of ``kind`` go to (``queues``; the training queue for a kind it does not name)."""
        return self._queues.get(kind, QUEUE)

    async def enqueue(self, kind: str, job_id: str, *, priority: int = 0) -> None:
        with _out_of_reach_unavailable():
            try:
                await self._task.configure(lock=job_id, queueing_lock=job_id, priority=priority,
                                           queue=self._queue_of(kind)).defer_async(kind=kind, job_id=job_id)
            except pexc.AlreadyEnqueued:
                pass  # already waiting for a worker

    async def _move(self, kind: str, job_id: str, item: procrastinate.jobs.Job) -> None:
        """Put an item a worker took from a queue that is not its kind's (``queues``) back into its kind's, run by
        none here. A replica of an earlier version, running during a rolling upgrade, queues kinds that have a queue
        of their own now (online sessions) in the queue they had then (the training queue): run where it was taken,
        it would hold a place of that queue's kinds (the next training job waiting hours behind a session), or find
        no executor (a worker running no sessions) and fail at every attempt, its job left queued with no item. It is
        queued anew as ``enqueue`` queues it (its lock, queueing lock and priority), and this one ends as done
        (deleted, not run again): the new item waits on the lock until it has, then any worker of its queue takes it.
        A job with an item already waiting keeps that one. Should queueing it keep failing until this item's retries
        end, the job is left QUEUED with no item, and queued again by the next ``JobManager.recover``."""
        log.info("a job's item was queued in another queue than its kind's; moving it there",
                 extra={"item": item.id, "kind": kind, "job": job_id, "from": item.queue,
                        "to": self._queue_of(kind)})
        await self.enqueue(kind, job_id, priority=item.priority)

    def start_worker(self, executors: Mapping[str, JobExecutor], *, concurrency: int, name: str) -> None:
        """Take jobs of these kinds from their queues in this process (``concurrency`` at a time), and put stalled
        ones back. Called again with other kinds (of another queue), it starts a worker of their own: jobs of
        one queue never wait for a place taken by another's. A queue is taken by one worker of this process (two
        would add their places together). An item found in a queue that is not its kind's is moved to its kind's,
        not run (``_move``)."""
        queues = sorted({self._queue_of(kind) for kind in executors})
        if taken := set(queues) & set(self._taken):
            raise ValueError(f"this process's worker takes from {sorted(taken)} already")
        self._executors.update(executors)
        self._taken += queues
        loop = asyncio.get_running_loop()
        self._workers.append(loop.create_task(self._work(queues, concurrency=concurrency, name=name)))
        if self._rescuer is None:
            self._rescuer = loop.create_task(self._look_after_items())

    async def _work(self, queues: list[str], *, concurrency: int, name: str) -> None:
        """procrastinate's worker, started again when it stops on an error.

        A failed fetch does not stop it (:class:`SteadyWorker`); registering does, when the database is away as it
        starts. Not once it is being stopped: procrastinate's worker, cancelled, may end with its database error
        instead of the cancellation.
        """
        while not self._stopping:
            worker = SteadyWorker(
                app=self._app, queues=queues, concurrency=concurrency, name=name, wait=True,
                install_signal_handlers=False, update_heartbeat_interval=self._heartbeat,
                # Polled every second besides LISTEN/NOTIFY: a stalled job's fresh item is inserted while the stalled
                # one still holds the job's lock, so its notification finds nothing to take yet.
                stalled_worker_timeout=self._stalled, fetch_job_polling_interval=1.0,
                delete_jobs="successful",
            )
            self._running.add(worker)  # before run(), which forgets a stop asked before it started
            keeper = asyncio.get_running_loop().create_task(self._keep_alive(worker))
            announcer = asyncio.get_running_loop().create_task(
                self._announce(worker, queues=queues, places=concurrency, name=name))
            try:
                await worker.run()  # type: ignore[no-untyped-call]  # procrastinate leaves it unannotated
                return
            except Exception:  # noqa: BLE001 - logged; the worker starts again
                current = asyncio.current_task()
                if self._stopping or (current is not None and current.cancelling()):
                    raise
                log.warning("the queue worker stopped on an error; starting it again", exc_info=True)
                await asyncio.sleep(self._heartbeat)
            finally:
                self._running.discard(worker)
                keeper.cancel()
                announcer.cancel()

    async def _keep_alive(self, worker: Worker) -> None:
        """Heartbeats that survive a database error. procrastinate's own heartbeat task ends at its first failed
        update, and nothing notices (its watch over its side tasks ends as soon as the periodic deferrer, with
        no periodic task, returns): after a short database outage the worker would run on silent, and every
        job it holds would be taken for stalled and moved to another worker. Doubled heartbeats are harmless.

        A registration found gone (this process frozen, or the database away, longer than the others' stalled
        timeout: they pruned it) is made anew, as ``SteadyWorker`` makes it when a fetch finds it gone, but at once:
        an idle worker fetches nothing, and would stay unregistered, its places unannounced (``_announce``), and
        every job of its queues created meanwhile told that no worker takes it."""
        while worker in self._running:
            await asyncio.sleep(self._heartbeat)
            if worker.worker_id is None:
                continue
            try:
                await self._app.job_manager.update_heartbeat(worker.worker_id)
                registered = await self._app.connector.execute_query_all_async(
                    "SELECT id FROM procrastinate_workers WHERE id = %(worker_id)s", worker_id=worker.worker_id)
                if not registered and worker in self._running:
                    log.warning("this worker's registration was pruned; registering again",
                                extra={"worker_id": worker.worker_id})
                    worker.worker_id = await self._app.job_manager.register_worker()
            except Exception:  # noqa: BLE001 - the database restarting: try at the next period
                log.info("heartbeat not sent; retrying", exc_info=True)

    async def _announce(self, worker: Worker, *, queues: list[str], places: int, name: str) -> None:
        """Record what ``worker`` takes (its queues and places, table ``queue_places``) under each registration it
        makes, as soon as it has made it: the row goes with the registration (a foreign key cascades as procrastinate
        unregisters or prunes it), so a worker that registers anew (``SteadyWorker``) announces itself again. A
        failed insert is tried again at the next look."""
        announced = None
        while worker in self._running:
            current = worker.worker_id
            if current is not None and current != announced:
                try:
                    await self._app.connector.execute_query_async(
                        "INSERT INTO queue_places (worker_id, name, queues, places) "
                        "VALUES (%(worker_id)s, %(name)s, %(queues)s, %(places)s) ON CONFLICT (worker_id) DO NOTHING",
                        worker_id=current, name=name, queues=queues, places=places)
                    announced = current
                except Exception:  # noqa: BLE001 - the database restarting, or the registration pruned meanwhile
                    log.info("worker places not recorded; retrying", exc_info=True)
            await asyncio.sleep(ANNOUNCE_POLL_SECONDS)

    async def held(self, job_ids: Sequence[str]) -> set[str]:
        """The jobs among ``job_ids`` with an item waiting (todo) or being run (doing), in any queue."""
        with _out_of_reach_unavailable():
            rows = await self._app.connector.execute_query_all_async(
                "SELECT DISTINCT args ->> 'job_id' AS job FROM procrastinate_jobs WHERE task_name = %(task)s"
                " AND status IN ('todo', 'doing') AND args ->> 'job_id' = ANY (%(ids)s)", task=TASK, ids=list(job_ids))
        return {r["job"] for r in rows}

    async def waiting_reason(self, kind: str) -> str | None:
        """Why a job of ``kind`` queued now would wait for no worker: no running worker takes its queue (none of
        this process, none announced elsewhere whose heartbeats go on), with what would start one. None when one
        does; when a live worker has not announced what it takes (registered a moment ago, or of an earlier version
        during a rolling upgrade: it may take the queue); and when the database cannot tell within
        ``WAITING_REASON_SECONDS`` (the job waits as it would anyway; this only informs). The look is left to end on
        its own after that (a query cancelled would hold the caller while psycopg cancels it on the server)."""
        queue = self._queue_of(kind)
        if queue in self._taken and not self._stopping:
            return None
        look = asyncio.ensure_future(self._app.connector.execute_query_one_async(
            "SELECT count(*) FILTER (WHERE %(queue)s = ANY (p.queues)) AS taking,"
            " count(*) FILTER (WHERE p.worker_id IS NULL) AS unannounced"
            " FROM procrastinate_workers w LEFT JOIN queue_places p ON p.worker_id = w.id"
            " WHERE w.last_heartbeat > now() - make_interval(secs => %(stalled)s)",
            queue=queue, stalled=self._stalled))
        self._looks.add(look)  # held until it ends, however late
        look.add_done_callback(self._looks.discard)
        look.add_done_callback(_look_ended)
        done, _ = await asyncio.wait({look}, timeout=WAITING_REASON_SECONDS)
        if not done or look.exception() is not None:
            return None
        row = look.result()
        if row["taking"] or row["unannounced"]:
            return None
        return (f"no running worker takes {kind} jobs (queue {queue}): the job waits QUEUED until "
                f"{QUEUE_WORKERS.get(queue, 'a worker of that queue')} starts")

    async def _look_after_items(self) -> None:
        """Every heartbeat period put stalled items back (``_rescue_stalled``); every ``prune_every_seconds``,
        from the first period on, delete old ended items (``_prune``). A failure of either is logged, and it is
        tried again at its next period."""
        next_prune = 0.0
        while not self._stopping:
            await asyncio.sleep(self._heartbeat)
            try:
                await self._rescue_stalled()
            except Exception:  # noqa: BLE001 - the database restarting: try at the next period
                log.warning("could not look for stalled jobs", exc_info=True)
            if asyncio.get_running_loop().time() >= next_prune:
                next_prune = asyncio.get_running_loop().time() + self._prune_every
                try:
                    await self._prune()
                except Exception:  # noqa: BLE001 - the database restarting: try at the next period
                    log.warning("could not delete old queue items", exc_info=True)

    async def _prune(self) -> None:
        """Delete the items of this process's queues that ended more than ``retention_hours`` ago, with their
        procrastinate events (a foreign key cascades). Successful items are deleted as they end; the others,
        kept a while to be looked at, would otherwise pile up for ever: a stalled item is closed failed, an item
        out of retries ends failed. Only procrastinate's items: a job's own record (``jobs``) is kept."""
        for queue in self._taken:
            await self._app.job_manager.delete_old_jobs(
                nb_hours=self._retention_hours, queue=queue, include_failed=True, include_cancelled=True,
                include_aborted=True)

    async def _rescue_stalled(self) -> None:
        """Queue again the jobs whose worker stopped sending heartbeats.

        A stalled item is replaced, not retried in place: a fresh item is queued (its lock keeps it waiting
        while the stalled one is "doing"), then the stalled one is closed as failed. Retried in place, the same
        item would belong to the new worker and to the stalled one, which, should it wake up, would mark it
        finished (procrastinate does not check which worker finishes an item) while the new worker runs it,
        and a later crash of the new worker would leave nothing to rescue. The order makes a crash in between
        harmless: the next check finds the stalled item again, and its fresh item already queued.
        """
        stalled = [item for queue in self._taken for item in await self._app.job_manager.get_stalled_jobs(
            queue=queue, seconds_since_heartbeat=self._stalled)]
        for item in stalled:
            log.warning("a job's worker stopped; queueing it again", extra={"item": item.id,
                                                                             "task": item.task_kwargs})
            kind = item.task_kwargs.get("kind")
            with contextlib.suppress(pexc.AlreadyEnqueued):  # into its kind's queue, wherever it was (``_move``)
                await self._task.configure(
                    lock=item.lock, queueing_lock=item.queueing_lock, priority=item.priority,
                    queue=self._queue_of(kind) if isinstance(kind, str) else item.queue,
                ).defer_async(**item.task_kwargs)
            assert item.id is not None
            try:
                await self._app.job_manager.finish_job_by_id_async(
                    item.id, procrastinate.jobs.Status.FAILED, delete_job=False)
            except pexc.ConnectorException:
                log.info("stalled item already closed", extra={"item": item.id})
        await self._app.job_manager.prune_stalled_workers(self._stalled)

    async def stop_worker(self) -> None:
        """Stop this process's workers and wait for them. Each procrastinate worker is asked to stop (it lets its
        running jobs end and unregisters) as well as cancelled: its ``run()`` stops on its cancellation only once
        it has shielded its loop, and before that, registering, a lost cancellation would leave it running."""
        self._stopping = True
        for worker in self._running:
            worker.stop()  # type: ignore[no-untyped-call]  # procrastinate leaves it unannotated
        for task in (self._rescuer, *self._workers):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._rescuer, self._workers = None, []

    async def close(self) -> None:
        await self.stop_worker()
        await self._app.close_async()
