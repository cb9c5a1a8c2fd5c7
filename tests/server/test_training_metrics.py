"""GetTrainingMetrics through a real in-process server: the rows, CSV and loss curve of a job's event log, while it
runs and after it ended; the job's metrics stored in the artifact store when it ends; the error cases."""

from __future__ import annotations

import csv
import io
import struct
from pathlib import Path
from urllib.parse import urlparse

import grpc
import pytest

from engine.training.metrics import CSV_COLUMNS, PNG_SIZE
from learning.v1 import adapter_pb2 as ad
from learning.v1 import adapter_pb2_grpc as ad_grpc
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from tests.server.conftest import aiter_events, error_details, spec, watch_all

pytestmark = pytest.mark.model

HEADER = ",".join(CSV_COLUMNS) + "\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


async def metrics(client, name: str) -> pb.GetTrainingMetricsResponse:
    return await client.training.GetTrainingMetrics(pb.GetTrainingMetricsRequest(name=name))


async def test_metrics_of_a_running_and_an_ended_job(make_memory_server, tmp_path: Path) -> None:
    client = await make_memory_server(training_trackers=("tensorboard",), training_trackers_dir=tmp_path / "tb")
    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1)))).training_job
    live = None
    async for event in aiter_events(client.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=job.name))):
        if event.HasField("step_metrics") and event.step_metrics.step == 2 and live is None:
            live = await metrics(client, job.name)  # while it runs: the steps so far
    assert live is not None and live.state == common.JOB_STATE_RUNNING
    assert [r.step for r in live.rows][:2] == [1, 2] and png_size(live.png) == PNG_SIZE

    done = await metrics(client, job.name)
    assert done.state == common.JOB_STATE_SUCCEEDED
    events = [m.event for m in (await watch_all(client.training, job.name))[1:]]
    # the tracker and the store worked (the one warning: the tiny model knows too little for base retention)
    assert [e.warning.code for e in events if e.HasField("warning")] == ["BASE_RETENTION_NOT_MEASURED"]
    steps = [e.step_metrics for e in events if e.HasField("step_metrics")]
    assert [r.step for r in done.rows] == [s.step for s in steps] == list(range(1, 7))  # 24 examples, batch 4
    for row, s in zip(done.rows, steps, strict=True):
        assert (row.total_steps, row.loss, row.task_loss, row.ewc_penalty, row.learning_rate, row.grad_norm,
                row.tokens_per_second) == (s.total_steps, s.loss, s.task_loss, s.ewc_penalty, s.learning_rate,
                                           s.grad_norm, s.tokens_per_second)
        assert row.time.seconds > 0
    assert [r.HasField("eval_loss") for r in done.rows] == [False] * 5 + [True]  # train_end, after the last step
    assert 0 < done.rows[-1].eval_loss < done.rows[0].loss

    text = done.csv.decode()
    assert text.startswith(HEADER)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["step"]) for r in parsed] == list(range(1, 7))
    assert [float(r["loss"]) for r in parsed] == [r.loss for r in done.rows]  # exact: shortest round-trip floats
    assert float(parsed[-1]["eval_loss"]) == done.rows[-1].eval_loss and parsed[0]["eval_loss"] == ""
    assert png_size(done.png) == PNG_SIZE

    # The same were stored when it ended, and the job says where.
    stored = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    artifacts = stored.metrics_artifacts
    assert artifacts.row_count == 6
    assert artifacts.csv_uri.startswith("file://") and artifacts.csv_uri.endswith("/metrics.csv")
    assert Path(urlparse(artifacts.csv_uri).path).read_bytes() == done.csv
    assert png_size(Path(urlparse(artifacts.png_uri).path).read_bytes()) == PNG_SIZE

    # And logged to TensorBoard (through accelerate's tracker), in the job's own run.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(tmp_path / "tb" / job.name)).Reload()
    assert [(e.step, e.value) for e in board.Scalars("loss")] == [
        (r.step, pytest.approx(r.loss, rel=1e-6)) for r in done.rows]  # TensorBoard keeps float32
    assert [e.step for e in board.Scalars("learning_rate")] == list(range(1, 7))
    assert [(e.step, e.value) for e in board.Scalars("eval/train_end/loss")] == [
        (6, pytest.approx(done.rows[-1].eval_loss, rel=1e-6))]


async def test_a_cancelled_job_stores_its_metrics_and_a_store_failure_only_warns(memory_client, data_dir: Path):
    client = memory_client
    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=500)))).training_job
    async for event in aiter_events(client.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=job.name))):
        if event.HasField("step_metrics") and event.step_metrics.step == 2:
            await client.training.CancelTrainingJob(pb.CancelTrainingJobRequest(name=job.name))
    cancelled = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert cancelled.state == common.JOB_STATE_CANCELLED
    rows = (await metrics(client, job.name)).rows
    assert len(rows) >= 2 and cancelled.metrics_artifacts.row_count == len(rows)
    text = Path(urlparse(cancelled.metrics_artifacts.csv_uri).path).read_text()
    assert text.startswith(HEADER) and text.count("\n") == len(rows) + 1

    # A store that cannot take the objects (a file stands where their folder goes): a warning, and the job
    # still succeeds, without a record of them.
    (data_dir / "artifacts" / "training-metrics").rename(data_dir / "elsewhere")
    (data_dir / "artifacts" / "training-metrics").write_text("in the way")
    ok = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=1)))).training_job
    events = [m.event for m in await watch_all(client.training, ok.name)]
    warnings = [e.warning for e in events if e.HasField("warning")]
    assert [w.code for w in warnings] == ["BASE_RETENTION_NOT_MEASURED", "METRICS_NOT_STORED"]  # (the tiny model)
    assert "NotADirectoryError" in warnings[1].message
    assert events[-1].state_change.state == common.JOB_STATE_SUCCEEDED
    final = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=ok.name))).training_job
    assert final.output_adapter_version and not final.HasField("metrics_artifacts")
    assert len((await metrics(client, ok.name)).rows) == 6


async def test_unknown_and_malformed_names_and_a_job_without_steps(memory_client, data_dir: Path) -> None:
    client = memory_client
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await metrics(client, "trainingJobs/0123456789abcdef")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    info, _ = error_details(err.value)
    assert info.reason == "JOB_NOT_FOUND" and info.metadata["name"] == "trainingJobs/0123456789abcdef"
    for bad in ("jobs/../../etc", "", "fisherJobs/0123"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await metrics(client, bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert [f for f, _ in error_details(err.value)[1]] == ["name"]

    # Every completion lies beyond max_seq_length: the job fails when tokenising, before its first step.
    long_prompt = " ".join(["word"] * 200)
    (data_dir / "datasets" / "long.jsonl").write_text(
        "".join(f'{{"prompt": "{long_prompt} {i}", "completion": " ok"}}\n' for i in range(4)))
    job = (await client.training.CreateTrainingJob(
        pb.CreateTrainingJobRequest(spec=spec("long.jsonl", max_seq_length=16)))).training_job
    await watch_all(client.training, job.name)
    empty = await metrics(client, job.name)
    assert empty.state == common.JOB_STATE_FAILED
    assert list(empty.rows) == [] and empty.csv.decode() == HEADER and empty.png == b""


async def test_a_held_out_eval_split(make_memory_server) -> None:
    """eval_fraction holds examples out by prompt: their loss at each checkpoint and at the end, on the
    checkpoints, in the metrics and on the version; a fraction out of range is INVALID_ARGUMENT."""
    client = await make_memory_server()
    s = spec(epochs=2, eval_fraction=0.25)
    s.checkpoints.every_steps = 2
    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=s))).training_job
    events = [m.event for m in (await watch_all(client.training, job.name))[1:] if m.HasField("event")]
    notice = next(e.notice.message for e in events if e.HasField("notice") and e.notice.code == "EVAL_SPLIT")
    held = int(notice.split()[2])
    assert notice == f"held out {held} of 24 examples as the eval split (by prompt, seed 7): never trained on"
    steps = [e.step_metrics for e in events if e.HasField("step_metrics")]
    total = steps[-1].total_steps
    assert 0 < held < 24 and total == 2 * -(-(24 - held) // 4)  # only the others are trained on
    evals = {e.eval_result.step: e.eval_result for e in events if e.HasField("eval_result")
             and e.eval_result.split == "eval"}
    assert sorted(evals) == [*range(2, total, 2), total]
    checkpoints = (await client.training.ListTrainingCheckpoints(
        pb.ListTrainingCheckpointsRequest(name=job.name))).checkpoints
    assert checkpoints and all(c.eval_loss == evals[c.step].metrics[0].value for c in checkpoints)
    done = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    adapter = (await ad_grpc.AdapterServiceStub(client.channel).GetAdapter(
        ad.GetAdapterRequest(version=done.output_adapter_version))).adapter
    assert adapter.eval_loss == evals[total].metrics[0].value and adapter.eval_fraction == 0.25
    rows = (await metrics(client, job.name)).rows
    assert {r.step: r.eval_loss for r in rows if r.HasField("eval_loss")} == {
        step: e.metrics[0].value for step, e in evals.items()}

    bad = spec(eval_fraction=0.7)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, violations = error_details(err.value)
    assert violations == [("spec.hyperparameters.eval_fraction", "must lie in [0, 0.5]")]
