"""Every PostgreSQL store answers PostgreSQL out of reach UNAVAILABLE DATABASE_UNAVAILABLE, the status clients and
gRPC retry policies retry, never the driver's own error (which an RPC answered INTERNAL).

Only the feedback and drift stores (and the online store's decorator) did: the job, LoRA, serving-state, dataset,
Fisher, adapter-index and pipeline stores and the job queue let the driver's errors through, so GetTrainingJob,
ListAdapters, ListDatasets and most other RPCs answered INTERNAL while PostgreSQL restarted. Now every store takes its
connections through engine.stores.postgres.acquired (a lock's connection: advisory_lock and held).

The generic tests enumerate the stores: every class of engine.stores built from a pool (or a database URL), every
public method of each, and every function of engine.stores that takes a pool (engine.stores.postgres's own aside:
the mechanism, tested in tests/ops/test_store_connection_errors.py and tests/ops/test_advisory_lock.py). Each must
be called here, or be listed with the reason it reaches no database from an RPC: a new store, or a new method of
one, fails them until it is. Then with a pool whose server refuses every connection, and with one whose server ends
each session as the pool hands its connection over (the driver's InterfaceError, not a connection error), each call
must raise Unavailable DATABASE_UNAVAILABLE; the job notifications' LISTEN connection falls back to polling instead,
and the job queue's look for a worker of a new job's kind (which only informs) answers None.
The end-to-end test stops the server's PostgreSQL under a running server.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import psycopg_pool
import pytest
import torch

import engine.stores
from engine.continual.spec import FisherEstimator, FisherSnapshot
from engine.domain import JsonlSource, LoraSpec
from engine.errors import Unavailable
from engine.jobs.core import Control, Job, JobState
from engine.jobs.ports import Lease
from engine.lora.canary import SplitKind, TrafficFigures, TrafficSplitState, VersionFigures
from engine.lora.state import EvalSummary, OperationKind, OperationRecord, TargetState
from engine.online.spec import GateVerdict, NewExample
from engine.pipelines.spec import Pipeline, TriggerDecision, TriggerKind
from engine.registry.ports import ServingRole
from engine.registry.records import AdapterRecord, VersionNumber
from engine.serving.traffic import Tally
from engine.splits import SplitRule
from engine.stores import postgres
from engine.stores.adapter_index import PostgresAdapterIndex
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.dataset_store import PostgresDatasetIndex
from engine.stores.drift_store import PostgresDriftSource
from engine.stores.feedback_store import PostgresFeedbackStore
from engine.stores.fisher_store import FisherSnapshotStore
from engine.stores.job_queue import ProcrastinateQueue
from engine.stores.job_store import JobNotifications, PostgresJobStore, count_jobs
from engine.stores.lora_store import PostgresLoraStore
from engine.stores.online_store import PostgresOnlineStore
from engine.stores.pipeline_store import PostgresPipelineStore
from engine.stores.serving_state import PostgresServingState
from engine.training.dataset_content import DatasetContent, SplitCounts
from engine.training.dataset_records import StoredDataset, UploadOrigin
from engine.training.spec import TrainingJobSpec
from learning.v1 import (
    adapter_pb2,
    adapter_pb2_grpc,
    common_pb2,
    dataset_pb2,
    dataset_pb2_grpc,
    fisher_pb2,
    fisher_pb2_grpc,
    pipeline_pb2,
    pipeline_pb2_grpc,
)
from learning.v1 import training_pb2 as tpb
from learning.v1 import training_pb2_grpc as tpb_grpc
from tests.fixtures import own_postgres as pg
from tests.fixtures.unreachable_postgres import RefusingPool, Restarting
from tests.jobs.test_job_core import COUNT, CountOutput, CountSpec
from tests.ops.test_store_connection_errors import CALLS as FEEDBACK_AND_DRIFT_CALLS
from tests.server import conftest as server_fixtures
from tests.server.conftest import error_details, spec

make_pg_server = server_fixtures.make_pg_server  # real servers, as in tests/server (its conftest.py's fixture)

NOW = datetime.now(UTC)
V1 = VersionNumber(1, 0, 0)
JOB = Job(id="j", kind=COUNT.name, spec=CountSpec(1), output=CountOutput(), state=JobState.QUEUED, create_time=NOW,
          last_sequence=0)
LEASE = Lease("w", "t")
RECORD = AdapterRecord(base_model="b", version=str(V1), lora=LoraSpec(), create_time=NOW, sha256="", size_bytes=0)
DATASET = StoredDataset(
    dataset_id="d", version=0, key="datasets/d", uri="", create_time=NOW, origin=UploadOrigin("d.jsonl"),
    content=DatasetContent(sha256="0" * 64, size_bytes=0, digest="", example_count=0, composition=(),
                           split=SplitRule(), counts=SplitCounts()))
SNAPSHOT = FisherSnapshot(
    id="", base_model="b", adapter_version=str(V1), dataset_digest="", sample_count=1,
    estimator=FisherEstimator.EMPIRICAL, create_time=NOW, stat_sum=0.0, stat_max=0.0, stat_mean=0.0, quantiles=(),
    parameter_count=1, sha256="", size_bytes=0, path="")
PIPELINE = Pipeline(id="p", base_model="b", training=TrainingJobSpec(base_model="b", dataset=JsonlSource("x.jsonl")),
                    create_time=NOW)
DECISION = TriggerDecision(pipeline_id="p", kind=TriggerKind.MANUAL, key="k", fired=False, reason="", time=NOW)
FIGURES = TrafficFigures(active=VersionFigures("a"), candidate=VersionFigures("c"))
SPLIT = TrafficSplitState(id=0, kind=SplitKind.CANARY, active_version="", candidate_version=str(V1), share=0.1,
                          start_time=NOW, actor="", reason="")
OPERATION = OperationRecord(kind=OperationKind.ACTIVATE, version=str(V1), actor="", reason="", start_time=NOW,
                            duration_seconds=0.0)
EVAL = EvalSummary(suite_digest="", version=str(V1), baseline_version="", metrics=(), regressions=0, passed=True,
                   failed_checks=(), report_uris=(), time=NOW)
EXAMPLE = NewExample("What?", "That.", client_example_id="e1")


@dataclass
class Stores:
    """One of each store over ``pool`` (and the job queue over a database that refuses connections)."""

    pool: Any
    jobs: PostgresJobStore[CountSpec, CountOutput]
    notifications: JobNotifications
    lora: PostgresLoraStore
    serving: PostgresServingState
    datasets: PostgresDatasetIndex
    fisher: FisherSnapshotStore
    adapters: PostgresAdapterIndex
    pipelines: PostgresPipelineStore
    feedback: PostgresFeedbackStore
    drift: PostgresDriftSource
    online: PostgresOnlineStore
    queue: ProcrastinateQueue


Call = Callable[[Stores], Awaitable[object]]


async def _drain(rows: AsyncIterator[object]) -> list[object]:
    return [row async for row in rows]


async def _enter(context: AbstractAsyncContextManager[object]) -> str:
    async with context:
        return "entered the block"


async def _nothing(*args: object) -> None:
    pass


def _store(module: str, name: str) -> str:
    return f"engine.stores.{module}.{name}"


def _feedback(name: str) -> Call:
    return lambda s: FEEDBACK_AND_DRIFT_CALLS[name](s.feedback, s.drift)


# Every call of a store that reaches PostgreSQL: each raises Unavailable DATABASE_UNAVAILABLE when it is out of reach.
UNAVAILABLE: dict[str, dict[str, Call]] = {
    _store("job_store", "PostgresJobStore"): {
        "insert_job": lambda s: s.jobs.insert_job(JOB),
        "job_for_request": lambda s: s.jobs.job_for_request("r"),
        "get_job": lambda s: s.jobs.get_job("j"),
        "list_jobs": lambda s: s.jobs.list_jobs(states=[JobState.QUEUED], limit=1, before=None),
        "jobs_in_states": lambda s: s.jobs.jobs_in_states([JobState.QUEUED]),
        "list_events": lambda s: s.jobs.list_events("j", after_sequence=0),
        "claim": lambda s: s.jobs.claim("j", "w"),
        "write": lambda s: s.jobs.write(JOB, [], LEASE),
        "release": lambda s: s.jobs.release(JOB, [], LEASE),
        "control": lambda s: s.jobs.control("j", LEASE),
        "request": lambda s: s.jobs.request("j", Control.CANCEL),
    },
    _store("job_store", "count_jobs"): {"__call__": lambda s: count_jobs(s.pool)},
    _store("lora_store", "PostgresLoraStore"): {
        "load": lambda s: s.lora.load("t", "b"),
        "save": lambda s: s.lora.save(TargetState(target="t", base_model="b", active_version=str(V1))),
        "record": lambda s: s.lora.record("t", OPERATION),
        "history": lambda s: s.lora.history("t", 1),
        "last_operation": lambda s: s.lora.last_operation("t"),
        "save_eval": lambda s: s.lora.save_eval("b", EVAL),
        "latest_eval": lambda s: s.lora.latest_eval("b", str(V1)),
        "evaluations": lambda s: s.lora.evaluations("b", [str(V1)], per_version=1),
        "start_split": lambda s: s.lora.start_split("t", SPLIT),
        "save_split_figures": lambda s: s.lora.save_split_figures(1, FIGURES),
        "save_split_tally": lambda s: s.lora.save_split_tally(1, "p", Tally(), Tally()),
        "split_tallies": lambda s: s.lora.split_tallies(1, besides="p"),
        "claim_decider": lambda s: s.lora.claim_decider(1, "p", 1.0),
        "release_decider": lambda s: s.lora.release_decider(1, "p"),
        "end_split": lambda s: s.lora.end_split(1, FIGURES, None, ""),
        "running_split": lambda s: s.lora.running_split("t"),
        "canary_outcome": lambda s: s.lora.canary_outcome("t"),
        "retire": lambda s: s.lora.retire("t", str(V1), 1.0),
        "postpone": lambda s: s.lora.postpone("t", [str(V1)], 1.0),
        "retirements": lambda s: s.lora.retirements("t"),
        "retired": lambda s: s.lora.retired("t", str(V1)),
        "serialised": lambda s: _enter(s.lora.serialised("t")),
    },
    _store("serving_state", "PostgresServingState"): {
        "protected_versions": lambda s: s.serving.protected_versions("b"),
        "versions": lambda s: s.serving.versions("b"),
        "set_version": lambda s: s.serving.set_version("b", ServingRole.ACTIVE, str(V1)),
    },
    _store("dataset_store", "PostgresDatasetIndex"): {
        "register": lambda s: s.datasets.register(DATASET, _nothing),
        "get": lambda s: s.datasets.get("d", None),
        "list": lambda s: s.datasets.list(dataset_id="", limit=1, after=None),
        "delete": lambda s: s.datasets.delete("d", None, _nothing),
    },
    _store("fisher_store", "FisherSnapshotStore"): {
        "save": lambda s: s.fisher.save({"w": torch.ones(2)}, SNAPSHOT),
        "get": lambda s: s.fisher.get("f"),
        "load": lambda s: s.fisher.load("f"),
        "list": lambda s: s.fisher.list(base_model="", adapter_version="", limit=1, before=None),
        "delete": lambda s: s.fisher.delete("f"),
    },
    _store("adapter_index", "PostgresAdapterIndex"): {
        "reserve": lambda s: s.adapters.reserve("b", ()),
        "publish": lambda s: s.adapters.publish(RECORD),
        "release": lambda s: s.adapters.release("b", V1),
        "mark_conflict": lambda s: s.adapters.mark_conflict("b", V1),
        "release_stale": lambda s: s.adapters.release_stale(),
        "supersede": lambda s: s.adapters.supersede("b", "r"),
        "get": lambda s: s.adapters.get("b", V1),
        "by_request_id": lambda s: s.adapters.by_request_id("b", "r"),
        "list": lambda s: s.adapters.list(base_model="", labels={}, limit=1, after=None),
        "deleting": lambda s: _enter(s.adapters.deleting("b", V1)),
        "continued_versions": lambda s: s.adapters.continued_versions("b"),
        "update": lambda s: s.adapters.update(RECORD),
    },
    _store("pipeline_store", "PostgresPipelineStore"): {
        "insert": lambda s: s.pipelines.insert(PIPELINE),
        "get": lambda s: s.pipelines.get("p"),
        "list": lambda s: s.pipelines.list(page_size=1, page_token=""),
        "replace": lambda s: s.pipelines.replace(PIPELINE, etag=""),
        "delete": lambda s: s.pipelines.delete("p"),
        "locked": lambda s: _enter(s.pipelines.locked("p")),
        "record": lambda s: s.pipelines.record(DECISION),
        "decision": lambda s: s.pipelines.decision("p", "k"),
        "decisions": lambda s: s.pipelines.decisions("p", page_size=1),
        "run_ids": lambda s: s.pipelines.run_ids(PIPELINE, active_only=False, page_size=1, page_token=""),
        "last_run_start": lambda s: s.pipelines.last_run_start(PIPELINE),
        "feedback_count": lambda s: s.pipelines.feedback_count(base_model="b", since=NOW, labels=(),
                                                               negative_only=False, rating_negative_max=2),
    },
    _store("feedback_store", "PostgresFeedbackStore"): {
        "insert": _feedback("feedback.insert"),
        "delete_user": _feedback("feedback.delete_user"),
        "stats": _feedback("feedback.stats"),
        "judgements": _feedback("feedback.judgements"),
    },
    _store("drift_store", "PostgresDriftSource"): {
        "incoming": _feedback("drift.incoming"),
        "feedback_buckets": _feedback("drift.feedback_buckets"),
        "evaluations": _feedback("drift.evaluations"),
    },
    _store("online_store", "PostgresOnlineStore"): {
        "creating": lambda s: _enter(s.online.creating("s")),
        "create": lambda s: s.online.create("s", 0.001),
        "discard": lambda s: s.online.discard("s"),
        "controls": lambda s: s.online.controls("s"),
        "controls_of": lambda s: s.online.controls_of(["s"]),
        "set": lambda s: s.online.set("s", enabled=False),
        "request": lambda s: s.online.request("s", "force_updates"),
        "aliases": lambda s: s.online.aliases("b"),
        "routed_versions": lambda s: s.online.routed_versions("b"),
        "protected_versions": lambda s: s.online.protected_versions("b"),
        "end_alias": lambda s: s.online.end_alias("s"),
        "move_alias": lambda s: s.online.move_alias("s", str(V1)),
        "remove_alias": lambda s: s.online.remove_alias("s"),
        "claim_gate": lambda s: s.online.claim_gate("s", str(V1), "p", 1.0),
        "record_gate": lambda s: s.online.record_gate("s", str(V1), GateVerdict(passed=True)),
        "add": lambda s: s.online.add("s", [EXAMPLE]),
        "feedback_through": lambda s: s.online.feedback_through("s"),
        "add_feedback": lambda s: s.online.add_feedback("s", [EXAMPLE], [()], since=None, through=NOW),
        "after": lambda s: s.online.after("s", 0, 1),
        "present": lambda s: s.online.present("s", [1]),
        "by_sequence": lambda s: s.online.by_sequence("s", [1]),
        "window": lambda s: s.online.window("s", 1, 2),
        "delete_examples": lambda s: s.online.delete_examples("s"),
        "count_after": lambda s: s.online.count_after("s", 0),
        "unread": lambda s: s.online.unread({"s": 0}),
        "last_sequence": lambda s: s.online.last_sequence("s"),
    },
    _store("job_queue", "ProcrastinateQueue"): {
        "enqueue": lambda s: s.queue.enqueue(COUNT.name, "j"),
        "held": lambda s: s.queue.held(["j"]),
    },
}

# The job notifications' LISTEN connection, held for good: PostgreSQL away, a wait polls instead (and listens again
# once it is back); and the queue's look for a worker of a new job's kind, which only informs (the job is queued all
# the same) and answers None. None of these raises.
POLLING: dict[str, dict[str, Call]] = {
    _store("job_queue", "ProcrastinateQueue"): {
        "waiting_reason": lambda s: s.queue.waiting_reason(COUNT.name),
    },
    _store("job_store", "JobNotifications"): {
        "notified": lambda s: s.notifications.notified(),
        "wait": lambda s: s.notifications.wait("j", 0.01),
        "close": lambda s: s.notifications.close(),
    },
    _store("job_store", "PostgresJobStore"): {
        "notified": lambda s: s.jobs.notified("j"),
        "wait_for_events": lambda s: s.jobs.wait_for_events("j", 0.01),
    },
}

# The public methods that no RPC reaches the database through, and why.
NO_DATABASE_FROM_AN_RPC: dict[str, dict[str, str]] = {
    _store("feedback_store", "PostgresFeedbackStore"): {"encode": "lays rows out in memory"},
    _store("serving_state", "PostgresServingState"): {
        "hold": "runs on its caller's connection, in its caller's transaction (lora.save, lora.start_split, "
                "set_version, called here)",
        "write_roles": "as hold",
    },
    _store("dataset_store", "PostgresDatasetIndex"): {
        "pin": "a pin (engine.domain.Pin), whose check runs on its caller's connection, in its caller's transaction "
               "(the job store's insert_job, the adapter index's publish)",
    },
    _store("adapter_index", "PostgresAdapterIndex"): {"pin": "as the dataset index's pin"},
    _store("job_queue", "ProcrastinateQueue"): {
        "open": "the server's start", "close": "the server's stop", "stop_worker": "the server's stop",
        "start_worker": "the worker's loops, which retry on any error",
    },
}

# Out of the dead-handover test: the job queue's pool is psycopg's (a refused connection is its outage).
NOT_HANDED_OVER = {_store("job_queue", "ProcrastinateQueue")}


def _public_methods(cls: type) -> set[str]:
    """The public functions a class defines (coroutines, async generators, context managers and plain ones)."""
    found = set()
    for name, value in vars(cls).items():
        function = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        if not name.startswith("_") and inspect.isfunction(function):
            found.add(name)
    return found


def _pool_users() -> dict[str, set[str]]:
    """Every class of engine.stores built from a pool or a database URL, with its public methods, and every function
    of engine.stores that takes a pool (but engine.stores.postgres's: the mechanism), as ``{"__call__"}``."""
    found: dict[str, set[str]] = {}
    for info in pkgutil.iter_modules(engine.stores.__path__):
        module = importlib.import_module(f"engine.stores.{info.name}")
        if module is postgres:
            continue
        for name, value in vars(module).items():
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(value):
                try:
                    parameters = inspect.signature(value).parameters
                except (TypeError, ValueError):
                    continue
                if {"pool", "database_url"} & set(parameters):
                    found[f"{module.__name__}.{name}"] = _public_methods(value)
            elif inspect.isfunction(value) and "pool" in inspect.signature(value).parameters:
                found[f"{module.__name__}.{name}"] = {"__call__"}
    return found


def _assert_every_store_is_covered() -> None:
    found = _pool_users()
    assert {_store("job_store", "PostgresJobStore"), _store("adapter_index", "PostgresAdapterIndex"),
            _store("job_queue", "ProcrastinateQueue"), _store("job_store", "count_jobs")} <= set(found), found
    assert not any(".memory." in store or ".artifacts_" in store for store in found), found  # no database of theirs
    listed: dict[str, set[str]] = {}
    for table in (UNAVAILABLE, POLLING, NO_DATABASE_FROM_AN_RPC):
        for store, methods in table.items():
            listed.setdefault(store, set()).update(methods)
    missing = {store: sorted(methods - listed.get(store, set())) for store, methods in found.items()
               if store not in listed or methods - listed[store]}
    assert not missing, (f"stores and methods these tests do not call: {missing}; call them in UNAVAILABLE (or list "
                         "them where they belong) in tests/ops/test_every_store_unavailable.py")
    gone = {store: sorted(methods - found.get(store, set())) for store, methods in listed.items()
            if methods - found.get(store, set())}
    assert not gone, f"listed here but no longer in engine.stores: {gone}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def refused_queue() -> AsyncIterator[ProcrastinateQueue]:
    """The job queue over a database that refuses connections (its psycopg pool waits a second for one)."""
    url = f"postgresql://le:le@127.0.0.1:{_free_port()}/le"
    queue = ProcrastinateQueue(url)
    pool = psycopg_pool.AsyncConnectionPool(url, min_size=1, open=False, timeout=1.0)
    await pool.open(wait=False)
    await queue._app.open_async(pool)
    try:
        yield queue
    finally:
        await queue.close()
        await pool.close()


def _stores(pool: Any, queue: ProcrastinateQueue, artifacts: Path) -> Stores:
    notifications = JobNotifications(pool)
    return Stores(
        pool=pool, jobs=PostgresJobStore(pool, COUNT, notifications), notifications=notifications,
        lora=PostgresLoraStore(pool, PostgresServingState(pool)), serving=PostgresServingState(pool),
        datasets=PostgresDatasetIndex(pool), fisher=FisherSnapshotStore(pool, LocalArtifactStore(artifacts)),
        adapters=PostgresAdapterIndex(pool), pipelines=PostgresPipelineStore(pool),
        feedback=PostgresFeedbackStore(pool), drift=PostgresDriftSource(pool), online=PostgresOnlineStore(pool),
        queue=queue,
    )


async def _wrong(stores: Stores, *, skip: Collection[str] = ()) -> list[str]:
    """What each call did that it should not have: not Unavailable DATABASE_UNAVAILABLE (UNAVAILABLE), raised at all
    (POLLING)."""
    wrong = []
    for expect_unavailable, table in ((True, UNAVAILABLE), (False, POLLING)):
        for store, calls in table.items():
            if store in skip:
                continue
            for method, call in calls.items():
                what = f"{store}.{method}"
                try:
                    result = await asyncio.wait_for(call(stores), 60)
                except Unavailable as exc:
                    if not (expect_unavailable and exc.reason == "DATABASE_UNAVAILABLE"):
                        wrong.append(f"{what}: Unavailable {exc.reason} ({exc.message})")
                except Exception as exc:  # noqa: BLE001 - what the call answered, reported
                    wrong.append(f"{what}: {type(exc).__module__}.{type(exc).__qualname__}: {exc}")
                else:
                    if expect_unavailable:
                        wrong.append(f"{what}: returned {result!r}")
    return wrong


async def test_every_store_answers_a_refused_connection_unavailable(refused_queue: ProcrastinateQueue,
                                                                    tmp_path: Path) -> None:
    """PostgreSQL stopped or restarting: the pool's connection is refused."""
    _assert_every_store_is_covered()
    wrong = await _wrong(_stores(RefusingPool(), refused_queue, tmp_path))
    assert not wrong, "not UNAVAILABLE DATABASE_UNAVAILABLE with connections refused:\n" + "\n".join(wrong)


async def test_every_store_answers_a_connection_dead_at_its_handover_unavailable(
        database_url: str, refused_queue: ProcrastinateQueue, tmp_path: Path) -> None:
    """PostgreSQL restarting as the pool hands a connection over: the store's first statement finds it dead (the
    driver's InterfaceError, which no class of connection errors holds)."""
    _assert_every_store_is_covered()
    pool = await postgres.connect(database_url, min_size=1, max_size=4)
    watcher = await postgres.connect(database_url, min_size=1, max_size=1)
    try:
        async with watcher.acquire() as ending:
            restarting = Restarting(pool, ending)  # type: ignore[arg-type]
            wrong = await _wrong(_stores(restarting, refused_queue, tmp_path), skip=NOT_HANDED_OVER)
    finally:
        watcher.terminate()
        pool.terminate()
    assert not wrong, "not UNAVAILABLE DATABASE_UNAVAILABLE with a connection dead as handed over:\n" + "\n".join(wrong)


# ---- end to end: the server's PostgreSQL stopped ------------------------------------------------------------------


def _reads(channel: grpc.aio.Channel, job: str) -> dict[str, Callable[[], Awaitable[object]]]:
    """RPCs that read the stores this covers (``job``: the test's training job)."""
    training = tpb_grpc.TrainingServiceStub(channel)
    adapters = adapter_pb2_grpc.AdapterServiceStub(channel)
    datasets = dataset_pb2_grpc.DatasetServiceStub(channel)
    pipelines = pipeline_pb2_grpc.PipelineServiceStub(channel)
    fisher = fisher_pb2_grpc.FisherServiceStub(channel)
    return {
        "GetTrainingJob": lambda: training.GetTrainingJob(tpb.GetTrainingJobRequest(name=job)),
        "ListTrainingJobs": lambda: training.ListTrainingJobs(tpb.ListTrainingJobsRequest()),
        "ListAdapters": lambda: adapters.ListAdapters(adapter_pb2.ListAdaptersRequest()),
        "ListDatasets": lambda: datasets.ListDatasets(dataset_pb2.ListDatasetsRequest()),
        "ListPipelines": lambda: pipelines.ListPipelines(pipeline_pb2.ListPipelinesRequest()),
        "ListFisherSnapshots": lambda: fisher.ListFisherSnapshots(fisher_pb2.ListFisherSnapshotsRequest()),
    }


async def _answer(call: Callable[[], Awaitable[object]]) -> tuple[grpc.StatusCode, str]:
    """The call's status code and ErrorInfo reason ("" when it succeeded)."""
    try:
        await call()
    except grpc.aio.AioRpcError as exc:
        return exc.code(), error_details(exc)[0].reason
    return grpc.StatusCode.OK, ""


OK = (grpc.StatusCode.OK, "")
DOWN = (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")


async def test_the_server_answers_unavailable_while_its_postgresql_is_stopped_and_serves_once_it_is_back(
        own_postgres: tuple[Path, str], make_pg_server: Callable[..., Awaitable[Any]]) -> None:
    # own_postgres first: set up before the server and so torn down after it (tests/server/test_health_truth.py)
    pgdata, url = own_postgres
    client = await make_pg_server(database_url=url, embedded_worker=False)  # no worker: the job stays QUEUED
    training = client.training
    job = (await training.CreateTrainingJob(tpb.CreateTrainingJobRequest(spec=spec(epochs=1)))).training_job
    reads = _reads(client.channel, job.name)
    assert {name: await _answer(call) for name, call in reads.items()} == dict.fromkeys(reads, OK)

    await pg.stop_postgres(pgdata)
    try:
        down = {name: await _answer(call) for name, call in reads.items()}
        down["CancelTrainingJob"] = await _answer(  # a write
            lambda: training.CancelTrainingJob(tpb.CancelTrainingJobRequest(name=job.name)))
    finally:
        assert await pg.start_postgres(pgdata) == url
    assert down == dict.fromkeys(down, DOWN)

    deadline = asyncio.get_running_loop().time() + 60
    for name, call in reads.items():  # the pool connects again on its own
        while (answer := await _answer(call)) != OK:
            assert answer == DOWN, (name, answer)
            assert asyncio.get_running_loop().time() < deadline, f"{name} still {answer} after PostgreSQL is back"
            await asyncio.sleep(0.2)
    stored = (await training.GetTrainingJob(tpb.GetTrainingJobRequest(name=job.name))).training_job
    assert stored.state == job.state  # the refused cancel wrote nothing
    cancelled = (await training.CancelTrainingJob(tpb.CancelTrainingJobRequest(name=job.name))).training_job
    assert cancelled.state == common_pb2.JOB_STATE_CANCELLED
