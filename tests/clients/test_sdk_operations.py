"""The SDK's job handles and the RPCs beyond training against a live server (real PostgreSQL, the tiny Llama):
pause, resume, cancel and wait on jobs; checkpoints; datasets; lineage, download, import of a PEFT directory,
prune; LoRA status watch, loaded adapters, evaluation (a call, a job, its reports); feedback streams, stats and
forgetting a user; the blocking twins.

Most of it runs on a server without a worker (``embedded_worker=False``), where a training or Fisher job stays
QUEUED until it is steered: each state change is then the one asked for, with no training to wait for (evaluation
jobs run there all the same, on the worker of the process serving LoraControl). One job trains, for the handle's
events, checkpoints and a failure raised by ``wait()``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from learning.v1 import adapter_pb2, dataset_pb2, evaluation_pb2, feedback_pb2, fisher_pb2, training_pb2
from learning.v1 import common_pb2 as common
from learning.v1 import lora_control_pb2 as lora_pb2
from learning_engine import AsyncClient, Client, FisherJobHandle, TrainingJobHandle, errors
from learning_engine.archive import pack_adapter_directory, sha256_file
from tests.fixtures.peft_adapters import build_peft_adapter
from tests.server.conftest import TINY, spec

GOLDEN = [("France", "Paris"), ("Italy", "Rome")]


@pytest.fixture(scope="module")
def peft_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What PEFT's save_pretrained writes (Axolotl and LLaMA-Factory too): adapter files, a README, and here a
    tokenizer file and training state beside them, which an import leaves out."""
    out = build_peft_adapter(tiny_model_dir, tmp_path_factory.mktemp("peft") / "run")
    (out / "tokenizer_config.json").write_text("{}")
    (out / "training_args.bin").write_bytes(b"\x80\x04pickled")
    return out


def event(i: int, user: str, kind: int = feedback_pb2.FEEDBACK_KIND_THUMBS_UP, *,
          at: datetime | None = None) -> feedback_pb2.FeedbackEvent:
    message = feedback_pb2.FeedbackEvent(
        client_event_id=f"e-{i}", kind=kind, user_id=user, adapter_version="v1.0",
        interaction=feedback_pb2.Interaction(prompt=f"What is {i} + {i}?", response=f"{2 * i}."))
    message.time.FromDatetime(at or datetime.now(UTC) - timedelta(minutes=5))
    return message


def states(events) -> list[str]:
    return [common.JobState.Name(e.state_change.state) for e in events if e.HasField("state_change")]


async def test_handles_registry_lora_and_feedback(make_server, data_dir: Path, peft_dir: Path, tmp_path: Path):
    (data_dir / "datasets" / "golden.jsonl").write_text(
        "".join(json.dumps({"prompt": f"What is the capital of {c}?", "expected": a}) + "\n" for c, a in GOLDEN))
    server = await make_server(embedded_worker=False, eval_max_tokens=4)
    target = f"127.0.0.1:{server.app.port}"
    async with AsyncClient(target) as sdk:
        # A validated spec creates nothing; a started job is QUEUED (no worker takes it) until steered.
        checked = await sdk.create_training_job(spec(epochs=1), validate_only=True)
        assert checked.dataset.example_count == 24 and not (await sdk.list_training_jobs()).training_jobs
        job = await sdk.start_training_job(spec(epochs=1), priority=5)
        described = await job.describe()
        assert (described.state, described.priority) == (common.JOB_STATE_QUEUED, 5)
        assert (await job.pause()).state == common.JOB_STATE_PAUSED
        assert (await job.wait()).state == common.JOB_STATE_PAUSED  # the watch ends at a pause: wait returns it
        with pytest.raises(errors.FailedPrecondition) as refused:
            await job.pause()
        assert refused.value.reason == "JOB_NOT_PAUSABLE"
        assert (await job.resume()).state == common.JOB_STATE_QUEUED
        assert (await job.cancel()).state == common.JOB_STATE_CANCELLED
        with pytest.raises(errors.Cancelled) as cancelled:  # the job's stored error, typed as a call's would be
            await job.wait()
        assert cancelled.value.reason == "JOB_CANCELLED" and cancelled.value.exit_code == 1
        assert (await job.wait(check=False)).state == common.JOB_STATE_CANCELLED
        events = [e async for e in job.events()]
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert states(events) == ["JOB_STATE_QUEUED", "JOB_STATE_PAUSED", "JOB_STATE_QUEUED", "JOB_STATE_CANCELLED"]
        assert [e.sequence async for e in job.events(after_sequence=events[-2].sequence)] == [events[-1].sequence]
        assert await job.checkpoints() == [] and not (await job.metrics()).rows
        with pytest.raises(errors.NotFound) as no_checkpoint:
            await job.publish_checkpoint(1)
        assert no_checkpoint.value.reason == "CHECKPOINT_NOT_FOUND"
        again = sdk.get_training_job_handle(job.name)
        assert again.name == job.name and (await again.describe()).state == common.JOB_STATE_CANCELLED

        # Datasets: an upload, the same bytes again, a server file with a split, validation, training by name.
        examples = data_dir / "datasets" / "capitals.jsonl"
        uploaded = await sdk.upload_dataset("datasets/capitals", examples)
        assert uploaded.created and uploaded.dataset.name == "datasets/capitals/versions/1"
        assert (uploaded.dataset.example_count, uploaded.dataset.upload.filename) == (24, "capitals.jsonl")
        again = await sdk.upload_dataset("datasets/capitals", examples)
        assert not again.created and again.dataset.name == uploaded.dataset.name
        split = await sdk.create_dataset("datasets/capitals", server_path="capitals.jsonl",
                                         split=dataset_pb2.SplitRule(eval_fraction=0.25, seed=1))
        counts = split.dataset.split_counts
        assert split.dataset.version == 2 and counts.eval > 0 and counts.train + counts.eval + counts.test == 24
        assert (await sdk.get_dataset("datasets/capitals")).version == 2  # the newest
        assert [d.version for d in (await sdk.list_datasets(dataset="datasets/capitals")).datasets] == [2, 1]
        checked = await sdk.validate_dataset(content=examples.read_bytes())
        assert (checked.example_count, checked.sha256) == (24, uploaded.dataset.sha256)
        with pytest.raises(errors.InvalidArgument) as invalid:
            await sdk.validate_dataset(content=b'{"prompt": "no completion"}\n')
        assert invalid.value.violations and invalid.value.violations[0].field.startswith("line[1]")
        with pytest.raises(ValueError, match="one source"):
            await sdk.validate_dataset(content=b"{}", server_path="capitals.jsonl")
        cases = tmp_path / "cases.jsonl"  # golden cases: a kind of version, scored and never trained on
        cases.write_text("".join(json.dumps({"prompt": f"Capital of {c}?", "expected": f"It is {a}.", "answer": a})
                                 + "\n" for c, a in GOLDEN))
        golden = (await sdk.upload_dataset("datasets/golden", cases, kind=dataset_pb2.DATASET_KIND_GOLDEN)).dataset
        assert (golden.kind, dict(golden.composition)) == (dataset_pb2.DATASET_KIND_GOLDEN, {"answer": len(GOLDEN)})
        assert (await sdk.validate_dataset(content=cases.read_bytes(),
                                           kind=dataset_pb2.DATASET_KIND_GOLDEN)).digest == golden.digest
        with pytest.raises(errors.FailedPrecondition) as not_trainable:
            await sdk.create_training_job(training_pb2.TrainingJobSpec(
                dataset_name="datasets/golden", hyperparameters=spec().hyperparameters), validate_only=True)
        assert not_trainable.value.reason == "GOLDEN_DATASET_NOT_TRAINABLE"
        assert [v.field for v in not_trainable.value.violations] == ["spec.dataset_name"]
        by_name = training_pb2.TrainingJobSpec(dataset_name="datasets/capitals",
                                               hyperparameters=spec().hyperparameters)
        resolved = (await sdk.create_training_job(by_name, validate_only=True)).dataset
        assert resolved.example_count == counts.train + counts.eval  # the eval split is held out when it runs
        assert await sdk.delete_dataset("datasets/capitals/versions/1") == ["datasets/capitals/versions/1"]

        # Import a PEFT directory as it is (packed by the client, extra files left out), then the archive.
        first = await sdk.import_adapter(peft_dir, labels={"from": "directory"})
        assert (first.version, first.source) == ("v1.0", adapter_pb2.ADAPTER_SOURCE_IMPORTED)
        archive = pack_adapter_directory(peft_dir, tmp_path / "packed.tar.gz")
        assert sha256_file(archive) == first.sha256  # the client packs as the server stores
        second = await sdk.import_adapter(archive, parent_version="v1.0", request_id="import-2")
        assert second.version == "v1.1" and second.parent_version == "v1.0"
        assert [a.version for a in await sdk.get_lineage("v1.1")] == ["v1.1", "v1.0"]
        weightless = tmp_path / "weightless"
        weightless.mkdir()
        shutil.copy(peft_dir / "adapter_config.json", weightless)
        (weightless / "adapter_model.bin").write_bytes(b"pickle")
        with pytest.raises(FileNotFoundError, match="no adapter_model.safetensors; adapter_model.bin is pickled"):
            await sdk.import_adapter(weightless)

        # Downloads are named by version; an existing file is kept unless overwrite.
        downloads = tmp_path / "downloads"
        _, one = await sdk.download_adapter("v1.0", downloads)
        _, two = await sdk.download_adapter("v1.1", downloads)
        assert (one.name, two.name) == (f"{TINY}-v1.0.tar.gz", f"{TINY}-v1.1.tar.gz")
        assert sha256_file(one) == first.sha256
        one.write_bytes(b"edited")
        with pytest.raises(FileExistsError):
            await sdk.download_adapter("v1.0", downloads)
        assert one.read_bytes() == b"edited" and sorted(p.name for p in downloads.iterdir()) == [one.name, two.name]
        await sdk.download_adapter("v1.0", downloads, overwrite=True)
        assert sha256_file(one) == first.sha256

        # Retention: a dry run names what it would delete and deletes nothing.
        dry = await sdk.prune_adapters(keep=1, dry_run=True)
        assert (list(dry.deleted_versions), list(dry.kept_versions)) == (["v1.0"], ["v1.1"])
        assert not (await sdk.get_adapter("v1.0")).HasField("delete_time")

        # A Fisher job: a handle without pause; cancelled while queued, its wait raises.
        fisher_spec = fisher_pb2.FisherJobSpec(adapter_version="v1.0", jsonl=common.JsonlDataset(path="capitals.jsonl"),
                                               num_samples=4)
        fisher_job = await sdk.start_fisher_job(fisher_spec)
        assert (await fisher_job.cancel()).state == common.JOB_STATE_CANCELLED
        with pytest.raises(errors.Cancelled):
            await fisher_job.wait()
        assert states([e async for e in fisher_job.events()])[-1] == "JOB_STATE_CANCELLED"
        assert [j.name for j in (await sdk.list_fisher_jobs()).fisher_jobs] == [fisher_job.name]

        # LoRA: the status stream sees an activation; loaded adapters; the golden suite against the active one.
        async with asyncio.timeout(60):
            statuses = sdk.watch_lora_status()
            assert (await anext(statuses)).active_version == ""
            await sdk.activate_adapter("v1.0", base_model=TINY, reason="sdk test")
            async for status in statuses:
                if status.active_version == "v1.0":
                    break
            await statuses.aclose()  # type: ignore[attr-defined]
        assert [a.version for a in await sdk.list_loaded_adapters()] == ["v1.0"]
        summary = await sdk.evaluate_adapter("v1.1", suite_path="golden.jsonl")
        assert summary.baseline_version == "v1.0" and len(summary.suite_digest) == 64
        golden = next(suite for suite in summary.suites if suite.name == "golden")
        assert golden.cases == len(GOLDEN) and {"exact_match", "pass_rate"} <= {m.name for m in golden.metrics}
        assert summary.passed == all(suite.passed for suite in summary.suites)
        report = await sdk.get_evaluation_report("v1.1", format=lora_pb2.REPORT_FORMAT_JSON)
        assert report.content_type == "application/json" and report.eval.evaluation_id == summary.evaluation_id
        assert json.loads(report.content)["version"] == "v1.1"
        evaluation_job = await sdk.start_evaluation_job(evaluation_pb2.EvaluationJobSpec(
            version="v1.1", baseline_version="v1.0", suite_paths=["golden.jsonl"]))
        progress = [e.progress async for e in evaluation_job.events() if e.HasField("progress")]
        judged = await evaluation_job.wait()  # a failed gate is no failed job
        assert judged.state == common.JOB_STATE_SUCCEEDED and judged.eval.baseline_version == "v1.0"
        assert "golden" in {suite.name for suite in judged.eval.suites}
        assert progress and (progress[-1].answered, progress[-1].total) == (progress[-1].total, progress[-1].total)
        with pytest.raises(errors.FailedPrecondition) as ended:
            await evaluation_job.cancel()
        assert ended.value.reason == "JOB_NOT_CANCELLABLE"
        assert [j.name for j in (await sdk.list_evaluation_jobs()).evaluation_jobs] == [evaluation_job.name]
        chart = await sdk.get_evaluation_report("v1.1", evaluation_id=summary.evaluation_id,
                                                format=lora_pb2.REPORT_FORMAT_PNG)
        assert chart.content_type == "image/png" and chart.content[:8] == b"\x89PNG\r\n\x1a\n"

        # Retention now: the active version is kept beyond the newest one.
        pruned = await sdk.prune_adapters(keep=1)
        assert (list(pruned.deleted_versions), list(pruned.kept_versions)) == ([], ["v1.1", "v1.0"])

        # Feedback: one stream of batches (one resent), stats by window and version, then forgetting a user.
        async def batches() -> AsyncIterator[list[feedback_pb2.FeedbackEvent]]:
            yield [event(0, "u-1"), event(1, "u-2")]
            yield [event(2, "u-1", feedback_pb2.FEEDBACK_KIND_THUMBS_DOWN)]
            yield [event(0, "u-1")]

        streamed = await sdk.stream_feedback(batches())
        assert (streamed.messages, streamed.stored, streamed.duplicates) == (3, 3, 1)
        stats = await sdk.get_feedback_stats(adapter_version="v1.0")
        assert stats.total == 3
        assert [(a.adapter_version, a.positive, a.negative) for a in stats.by_adapter] == [("v1.0", 2, 1)]
        earlier = await sdk.get_feedback_stats(end_time=datetime.now(UTC) - timedelta(hours=1))
        assert earlier.total == 0
        assert await sdk.delete_user_feedback("u-1") == 2
        resent = await sdk.submit_feedback([event(3, "u-1")])
        assert (resent.stored, resent.forgotten) == (0, 1)
        assert (await sdk.get_feedback_stats()).total == 1

    def blocking() -> None:
        with Client(target) as client:
            handle = client.start_training_job(spec(epochs=1))
            assert isinstance(handle, TrainingJobHandle) and repr(handle) == f"TrainingJobHandle({handle.name!r})"
            assert handle.pause().state == common.JOB_STATE_PAUSED
            assert states(handle.events()) == ["JOB_STATE_QUEUED", "JOB_STATE_PAUSED"]  # an iterator, blocking
            handle.cancel()
            with pytest.raises(errors.Cancelled):
                handle.wait()
            fisher_job = client.start_fisher_job(fisher_spec)
            assert isinstance(fisher_job, FisherJobHandle) and fisher_job.cancel().state == common.JOB_STATE_CANCELLED
            assert [a.version for a in client.get_lineage("v1.1")] == ["v1.1", "v1.0"]
            assert next(iter(client.watch_lora_status())).active_version == "v1.0"
            assert client.stream_feedback([[event(4, "u-3")]]).stored == 1
            assert client.delete_user_feedback("u-3") == 1
            copied = client.create_dataset("datasets/golden-copy", server_path="golden.jsonl",
                                           kind=dataset_pb2.DATASET_KIND_GOLDEN).dataset
            assert (copied.kind, copied.example_count) == (dataset_pb2.DATASET_KIND_GOLDEN, len(GOLDEN))

    await asyncio.to_thread(blocking)


async def test_a_training_handle_follows_checkpoints_and_raises_a_failure(make_server, data_dir: Path):
    server = await make_server()
    async with AsyncClient(f"127.0.0.1:{server.app.port}") as sdk:
        checkpointed = spec(epochs=1)
        checkpointed.checkpoints.every_steps = 3
        job = await sdk.start_training_job(checkpointed)
        events = [e async for e in job.events()]
        assert [e.step_metrics.step for e in events if e.HasField("step_metrics")] == list(range(1, 7))
        assert states(events)[-1] == "JOB_STATE_SUCCEEDED"
        done = await job.wait()
        assert done.output_adapter_version == "v1.0"
        steps = [c.step for c in await job.checkpoints()]
        assert steps == [3]  # every 3 steps; the job's end publishes the adapter instead
        version = await job.publish_checkpoint(3, request_id="publish-3")
        published = await sdk.get_adapter(version)
        assert version == "v2.0" and published.labels["checkpoint_step"] == "3"  # a fresh adapter: next major
        assert [r.step for r in (await job.metrics()).rows] == list(range(1, 7))

        long_prompt = " ".join(["word"] * 200)
        (data_dir / "datasets" / "long.jsonl").write_text(
            "".join(json.dumps({"prompt": f"{long_prompt} {i}", "completion": " ok"}) + "\n" for i in range(4)))
        failing = await sdk.start_training_job(spec("long.jsonl", max_seq_length=16))
        with pytest.raises(errors.InvalidArgument) as failed:
            await failing.wait()
        assert failed.value.reason == "DATASET_NO_TARGET_TOKENS" and "max_seq_length=16" in failed.value.message
        assert (await failing.wait(check=False)).state == common.JOB_STATE_FAILED
