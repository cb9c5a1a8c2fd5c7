"""A training job spec's numbers: every float of the spec must be finite, refused as INVALID_ARGUMENT naming its
exact field path (infinite or NaN numbers were stored as null, after which GetTrainingJob and ListTrainingJobs were
INTERNAL for everyone); the seed lies in [0, 2**32 - 1] (a larger one was accepted and the run then failed
INTERNAL); and the PostgreSQL job store never writes a non-finite number as null: a stored job always reads back."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

import grpc
import pytest

from engine.domain import FisherSpace
from engine.errors import InvalidArgument
from engine.jobs.core import Job, JobState
from engine.stores import postgres
from engine.stores.job_store import PostgresJobStore
from engine.training.spec import TRAINING, StepMetrics, TrainingOutput
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from server import convert
from tests.server.conftest import error_details, spec


async def _refused(client, request: pb.CreateTrainingJobRequest) -> grpc.aio.AioRpcError:
    """The error of a refused request, which left no job behind; fails saying what the user saw next if the
    request was accepted."""
    try:
        job = (await client.training.CreateTrainingJob(request)).training_job
    except grpc.aio.AioRpcError as err:
        listed = await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest())
        assert list(listed.training_jobs) == [], "a rejected request left a job behind"
        return err
    try:
        got = await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))
        after = f"GetTrainingJob -> OK, state {common.JobState.Name(got.training_job.state)}"
    except grpc.aio.AioRpcError as err:
        after = f"GetTrainingJob -> {err.code()}: {err.details()[:200]}"
    try:
        await client.training.ListTrainingJobs(pb.ListTrainingJobsRequest())
        after += "; ListTrainingJobs -> OK"
    except grpc.aio.AioRpcError as err:
        after += f"; ListTrainingJobs -> {err.code()}"
    pytest.fail(f"accepted {job.name}; {after}")


EWC = convert.EwcDefaults(space=FisherSpace.LORA_PARAMETERS, lambdas=dict.fromkeys(FisherSpace, 0.1))


def _fields(err: grpc.aio.AioRpcError) -> list[str]:
    return [f for f, _ in error_details(err)[1]]


@pytest.mark.parametrize("field", ["learning_rate", "weight_decay"])
async def test_infinite_optimiser_value_is_refused(pg_client, field: str):
    err = await _refused(pg_client, pb.CreateTrainingJobRequest(spec=spec(**{field: math.inf})))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(err) == [f"spec.hyperparameters.{field}"]


async def test_infinite_lora_alpha_is_refused(pg_client):
    request = pb.CreateTrainingJobRequest(spec=spec())
    request.spec.lora.alpha = math.inf
    err = await _refused(pg_client, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(err) == ["spec.lora.alpha"]


async def test_infinite_ewc_lambda_without_a_parent_is_refused(pg_client):
    """ewc_lambda's range is checked only with a parent; its finiteness always (the job stores it)."""
    request = pb.CreateTrainingJobRequest(spec=spec())
    request.spec.ewc.ewc_lambda = math.inf
    err = await _refused(pg_client, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(err) == ["spec.ewc.ewc_lambda"]


NON_FINITE = [math.inf, -math.inf, math.nan]
FLOAT_FIELDS = [  # (path below spec, how to set it on a spec)
    ("hyperparameters.learning_rate", lambda s, v: setattr(s.hyperparameters, "learning_rate", v)),
    ("hyperparameters.weight_decay", lambda s, v: setattr(s.hyperparameters, "weight_decay", v)),
    ("hyperparameters.max_grad_norm", lambda s, v: setattr(s.hyperparameters, "max_grad_norm", v)),
    ("hyperparameters.eval_fraction", lambda s, v: setattr(s.hyperparameters, "eval_fraction", v)),
    ("lora.alpha", lambda s, v: setattr(s.lora, "alpha", v)),
    ("lora.dropout", lambda s, v: setattr(s.lora, "dropout", v)),
    ("ewc.ewc_lambda", lambda s, v: setattr(s.ewc, "ewc_lambda", v)),
    ("ewc.gamma", lambda s, v: setattr(s.ewc, "gamma", v)),
    ("ewc.replay_fraction", lambda s, v: setattr(s.ewc, "replay_fraction", v)),
    ("checkpoints.every_minutes", lambda s, v: setattr(s.checkpoints, "every_minutes", v)),
    ("base_protection.fraction", lambda s, v: setattr(s.base_protection, "fraction", v)),
    ("base_protection.kl_weight", lambda s, v: setattr(s.base_protection, "kl_weight", v)),
    ("base_protection.ewc_lambda", lambda s, v: setattr(s.base_protection, "ewc_lambda", v)),
    ("base_protection.prompt_kl_weight", lambda s, v: setattr(s.base_protection, "prompt_kl_weight", v)),
    ("feedback.thumbs_up_weight", lambda s, v: setattr(s.feedback, "thumbs_up_weight", v)),
    ("feedback.thumbs_down_weight", lambda s, v: setattr(s.feedback, "thumbs_down_weight", v)),
]


@pytest.mark.parametrize("value", NON_FINITE, ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize(("path", "assign"), FLOAT_FIELDS, ids=[p for p, _ in FLOAT_FIELDS])
def test_every_float_of_the_spec_must_be_finite(path: str, assign, value: float):
    """Each float of TrainingJobSpec, infinite or NaN, is refused with one violation naming its exact path. (Some
    were refused before, by their range checks; lora.*, ewc.*, learning_rate and weight_decay were not, or not
    always.)"""
    msg = spec()
    assign(msg, value)
    with pytest.raises(InvalidArgument) as err:
        convert.spec_from_pb(msg, default_base_model="m", ewc_defaults=EWC)
    assert [v.field for v in err.value.violations] == [f"spec.{path}"]


@pytest.mark.parametrize("field", ["learning_rate", "weight_decay"])
def test_a_nan_optimiser_value_is_not_said_to_be_negative(field: str):
    with pytest.raises(InvalidArgument) as err:
        convert.spec_from_pb(spec(**{field: math.nan}), default_base_model="m", ewc_defaults=EWC)
    [violation] = err.value.violations
    assert violation.description.startswith("must be a finite number >= 0"), violation


@pytest.mark.parametrize("seed", [2**32, 2**64 - 1])
async def test_seed_lies_in_0_to_2_to_the_32_minus_1(memory_client, seed: int):
    """Hyperparameters.seed is a uint64; the run's generators take [0, 2**32 - 1]: past it the job failed INTERNAL.
    The largest seed is accepted."""
    checked = await memory_client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=spec(seed=2**32 - 1), validate_only=True))
    assert checked.training_job.spec.hyperparameters.seed == 2**32 - 1
    err = await _refused(memory_client, pb.CreateTrainingJobRequest(spec=spec(epochs=1, seed=seed)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(err) == ["spec.hyperparameters.seed"]


@pytest.mark.full_stack
async def test_a_stored_job_with_a_non_finite_number_reads_back(database_url):
    """The store's backstop: a number JSON cannot hold is not written as null (pydantic's default), after which the
    job could not be read; a run's diverged loss, or a spec number that got past validation, reads back as itself."""
    pool = await postgres.connect(database_url, max_size=4)
    try:
        await postgres.migrate(pool)
        store = PostgresJobStore(pool, TRAINING)
        good = convert.spec_from_pb(spec(), default_base_model="m", ewc_defaults=EWC)
        odd = replace(good, hyperparameters=replace(good.hyperparameters, learning_rate=math.inf),
                      ewc=replace(good.ewc, ewc_lambda=-math.inf))
        metrics = StepMetrics(step=1, total_steps=2, epoch=0.5, loss=math.nan, task_loss=math.inf, ewc_penalty=0.0,
                              learning_rate=1e-3, grad_norm=math.nan, tokens_per_second=1.0, eta_seconds=None)
        job = Job(id="odd", kind=TRAINING.name, spec=odd, output=TrainingOutput(latest_metrics=metrics),
                  state=JobState.QUEUED, create_time=datetime.now(UTC))
        await store.insert_job(job)
        back = await store.get_job("odd")
        assert back is not None
        assert back.spec.hyperparameters.learning_rate == math.inf and back.spec.ewc.ewc_lambda == -math.inf
        assert back.output.latest_metrics is not None
        assert math.isnan(back.output.latest_metrics.loss) and back.output.latest_metrics.task_loss == math.inf
        assert [j.id for j in await store.list_jobs(states=(), limit=10, before=None)] == ["odd"]
        plain = replace(job, id="plain", spec=good, output=TrainingOutput())
        await store.insert_job(plain)
        assert await store.get_job("plain") == plain  # a finite job round-trips unchanged
    finally:
        await pool.close()
