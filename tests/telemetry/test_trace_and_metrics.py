"""After one training job: its trace (RPC span -> prepare/train/epochs/publish) and the /metrics page."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from tests.server.conftest import spec, watch_all
from tests.server.lora_helpers import activate, ask


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # first in this process: install an SDK provider
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def _samples(text: str, name: str) -> dict[tuple, float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def test_one_job_leaves_a_trace_and_metrics(make_server, spans: InMemorySpanExporter):
    server = await make_server(metrics_port=0)
    spans.clear()
    created = await server.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=2)))
    name = created.training_job.name
    messages = await watch_all(server.training, name)
    assert messages[-1].event.state_change.state == common.JOB_STATE_SUCCEEDED

    finished = {s.name: s for s in spans.get_finished_spans()}
    for _ in range(40):  # the publish span ends just after the last event is recorded
        if "training_job.publish" in finished:
            break
        await asyncio.sleep(0.05)
        finished = {s.name: s for s in spans.get_finished_spans()}
    rpc = finished["/learning.v1.TrainingService/CreateTrainingJob"]
    assert rpc.kind == trace.SpanKind.SERVER
    trace_id = rpc.context.trace_id
    job_spans = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    by_name = {}
    for s in job_spans:
        by_name.setdefault(s.name, []).append(s)
    assert {"training_job.prepare", "training_job.train", "training_job.publish", "training.epoch"} <= set(by_name)
    train = by_name["training_job.train"][0]
    epochs = by_name["training.epoch"]
    assert [e.attributes["epoch"] for e in sorted(epochs, key=lambda e: e.start_time)] == [1, 2]
    assert all(e.parent.span_id == train.context.span_id for e in epochs), "epoch spans nest under the train span"
    assert train.attributes["job"] == name

    def read(url: str) -> str:  # a blocking read off the event loop, which serves /metrics
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    page = await asyncio.to_thread(read, f"http://127.0.0.1:{server.app.metrics.port}/metrics")
    transitions = _samples(page, "learning_engine_job_transitions_total")
    assert transitions[(("kind", "training"), ("state", "SUCCEEDED"))] >= 1
    assert transitions[(("kind", "training"), ("state", "RUNNING"))] >= 1
    held = _samples(page, "learning_engine_jobs")  # only jobs not ended: an ended one has left
    assert all(state not in ("SUCCEEDED", "FAILED", "CANCELLED") for (_, (_, state)) in held)
    assert held.get((("kind", "training"), ("state", "RUNNING")), 0) == 0
    job_id = name.split("/")[1]  # its training series went with it: nothing stale
    assert (("job", job_id),) not in _samples(page, "learning_engine_training_step_loss")
    assert (("job", job_id),) not in _samples(page, "learning_engine_training_tokens_per_second")
    assert _samples(page, "learning_engine_training_steps_total")[()] >= 1
    latency = _samples(page, "learning_engine_rpc_duration_seconds_count")
    create = (("code", "OK"), ("method", "/learning.v1.TrainingService/CreateTrainingJob"))
    assert latency[create] >= 1
    watch = (("code", "OK"), ("method", "/learning.v1.TrainingService/WatchTrainingJob"))
    assert watch not in latency and _samples(page, "learning_engine_rpc_streams_total")[watch] >= 1
    assert "_created" not in page


async def test_the_jobs_by_state_are_what_the_database_holds_across_a_restart(make_server):
    """The process-wide gauge counts what this process holds; learning_engine_jobs_stored counts the database's
    jobs, so a restarted server (or another replica) reports the jobs that ended before it started."""
    first = await make_server()
    for _ in range(2):
        job = (await first.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1)))).training_job
        assert (await watch_all(first.training, job.name))[-1].event.state_change.state == common.JOB_STATE_SUCCEEDED
    await first.channel.close()
    await first.app.stop(0)
    restarted = await make_server(metrics_port=0, embedded_worker=False)
    queued = await restarted.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1)))
    assert queued.training_job.state == common.JOB_STATE_QUEUED  # no worker here: it stays queued

    def read(url: str) -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    page = await asyncio.to_thread(read, f"http://127.0.0.1:{restarted.app.metrics.port}/metrics")
    stored = _samples(page, "learning_engine_jobs_stored")
    training = {state: n for ((_, kind), (_, state)), n in stored.items() if kind == "training"}
    assert training["SUCCEEDED"] == 2 and training["QUEUED"] == 1, training
    assert training["RUNNING"] == training["FAILED"] == 0  # every state of the kind, none stale


async def test_a_cancelled_epoch_ends_its_span_with_the_error(make_server, spans: InMemorySpanExporter):
    server = await make_server()
    spans.clear()
    job = (await server.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=spec(epochs=50, batch_size=1)))).training_job
    stream = server.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=job.name))
    cancelled = False
    async for message in stream:
        event = message.event
        if message.HasField("event") and event.HasField("step_metrics") and not cancelled:
            await server.training.CancelTrainingJob(pb.CancelTrainingJobRequest(name=job.name))
            cancelled = True
    # The epoch span ends as the cancellation unwinds the training thread. On a busy host the cancel may land in a
    # later epoch than the first step's: the epochs before it ended as usual.
    epochs = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        epochs = [s for s in spans.get_finished_spans() if s.name == "training.epoch"]
        if epochs and epochs[-1].status.status_code == trace.StatusCode.ERROR:
            break
        await asyncio.sleep(0.05)
    assert epochs, "the interrupted epoch's span was not ended"
    *whole, interrupted = epochs
    assert interrupted.status.status_code == trace.StatusCode.ERROR
    assert any(e.name == "exception" for e in interrupted.events)
    assert all(e.status.status_code != trace.StatusCode.ERROR for e in whole)
    assert len(epochs) < 50, "the cancel did not interrupt the job"


async def test_activation_phases_the_parent_fisher_and_the_gateway_have_spans(make_server,
                                                                              spans: InMemorySpanExporter):
    server = await make_server()
    first = await train_one(server)
    job = (await server.training.CreateTrainingJob(pb.CreateTrainingJobRequest(
        spec=continuation(first)))).training_job
    await watch_all(server.training, job.name)
    done = (await server.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    fisher = [s for s in spans.get_finished_spans() if s.name == "training_job.parent_fisher"]
    assert [s.attributes["parent"] for s in fisher] == [first]
    spans.clear()
    await activate(server, done.output_adapter_version)
    finished = spans.get_finished_spans()
    rpc = next(s for s in finished if s.name == "/learning.v1.LoraControlService/ActivateAdapter")
    phases = {s.name: s for s in finished if s.name.startswith("lora.")}
    assert {"lora.fetch", "lora.load", "lora.smoke", "lora.switch"} <= set(phases)
    assert all(s.parent.span_id == rpc.context.span_id for s in phases.values())  # under the RPC's span
    assert phases["lora.load"].attributes["version"] == done.output_adapter_version
    await ask(server)
    gateway = [s for s in spans.get_finished_spans() if s.name == "gateway /v1/completions"]
    assert len(gateway) == 1 and gateway[0].attributes["model"] == "active"
    assert gateway[0].attributes["http.status_code"] == 200
    assert gateway[0].attributes["upstream"].endswith("@" + done.output_adapter_version)


async def train_one(server) -> str:
    job = (await server.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1)))).training_job
    await watch_all(server.training, job.name)
    return (await server.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job \
        .output_adapter_version


def continuation(parent: str) -> pb.TrainingJobSpec:
    s = spec(epochs=1)
    s.parent_adapter_version = parent  # EWC on (the default): the parent's Fisher is measured first
    return s
