"""Data preparation's limits through gRPC: the text a PDF expands into is held to dataset_max_bytes, a job whose
pairs would repeat more of its documents than a dataset may hold is refused when it is created (not failed after
asking about every chunk), and a job's result counts the chunks it asked about; ordinary documents still prepare."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import grpc
from aiohttp import web

from learning.v1 import common_pb2 as common
from learning.v1 import dataset_pb2 as ds
from learning.v1 import dataset_pb2_grpc as ds_grpc
from learning.v1 import preparation_pb2 as pb
from learning.v1 import preparation_pb2_grpc as pb_grpc
from tests.engine.test_judge import judge_engine
from tests.engine.test_preparation_text_limit import bomb_pdf
from tests.server.conftest import error_details
from tests.server.test_evaluation_judge import job_reason
from tests.server.test_preparation import (
    ATLAS,
    HANDBOOK,
    chunk_text,
    documents,
    prepared,
    preparing,
    writer,
)

LANDS = "\n\n".join(f"The capital of Land{c} is Town{c}. " + "Its people keep goats and weave wool. " * 5
                    for c in "ABCDEFGHIJ")


async def refusal(jobs: pb_grpc.DataPreparationServiceStub,
                  spec: pb.PreparationJobSpec) -> tuple[grpc.StatusCode, str, list[tuple[str, str]], dict[str, str]]:
    try:
        created = await jobs.CreatePreparationJob(pb.CreatePreparationJobRequest(spec=spec))
    except grpc.aio.AioRpcError as err:
        info, violations = error_details(err)
        return err.code(), info.reason, violations, dict(info.metadata)
    await jobs.CancelPreparationJob(pb.CancelPreparationJobRequest(name=created.preparation_job.name))
    raise AssertionError("the preparation was accepted")


async def nothing_stored(jobs: pb_grpc.DataPreparationServiceStub, client, data_dir: Path) -> None:
    assert (await jobs.ListPreparationJobs(pb.ListPreparationJobsRequest())).preparation_jobs == []
    assert not (data_dir / "artifacts" / "preparations").exists()
    assert (await ds_grpc.DatasetServiceStub(client.channel).ListDatasets(ds.ListDatasetsRequest())).datasets == []


async def test_a_pdf_whose_text_is_far_larger_than_dataset_max_bytes_is_refused(make_server, data_dir: Path):
    # 3.5 kB of PDF, 10 MB of text (ten pages showing one compressed stream): the limit was on the bytes sent only,
    # so the create spent seconds of CPU extracting it and the job would ask about ~6700 chunks.
    data = bomb_pdf(10, 1_000_000)
    client = await make_server(dataset_max_bytes=100_000)
    jobs = pb_grpc.DataPreparationServiceStub(client.channel)
    spec = pb.PreparationJobSpec(dataset="datasets/x", documents=[
        pb.PreparationDocument(name="handbook.md", content=HANDBOOK.encode()),
        pb.PreparationDocument(name="a.pdf", content=data)])
    code, reason, violations, metadata = await refusal(jobs, spec)
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "DOCUMENTS_TOO_LARGE"), (code, reason)
    assert [f for f, _ in violations] == ["spec.documents[1]"]
    assert metadata["document"] == "a.pdf" and metadata["measured"] == "extracted_text"
    assert metadata["limit"] == "100000" and 100_000 < int(metadata["size"]) < 2_000_000  # it stopped early
    await nothing_stored(jobs, client, data_dir)


def two(prompt: str) -> str:
    body = chunk_text(prompt)
    first, second = body.split(". ")[0], body.split(". ")[1]
    land = first.split()[3]
    return f"Q: What is the capital of {land}?\nA: {first}.\nQ: What do the people of {land} do?\nA: {second}."


async def test_documents_within_dataset_max_bytes_do_not_fail_at_the_end_as_too_large(make_server, data_dir: Path):
    # One 2.2 kB document within a 4 kB dataset_max_bytes; every kept pair's JSONL line repeats its chunk's text,
    # so 2 pairs a chunk made the prepared file larger than the limit, and the job failed DATASET_TOO_LARGE after
    # asking about every chunk. Such a job is refused when it is created; with 1 pair a chunk it fits, and succeeds.
    assert len(LANDS.encode()) < 4000
    runner, url, asked = await judge_engine(two)
    try:
        client = await make_server(prepare_generator_url=url, dataset_max_bytes=4000)
        jobs = pb_grpc.DataPreparationServiceStub(client.channel)

        def spec(questions: int) -> pb.PreparationJobSpec:
            return pb.PreparationJobSpec(dataset="datasets/lands", questions_per_chunk=questions, chunk_chars=250,
                                         documents=[pb.PreparationDocument(name="lands.txt", content=LANDS.encode())])

        code, reason, violations, metadata = await refusal(jobs, spec(2))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and reason == "DOCUMENTS_TOO_LARGE", (code, reason)
        assert {f for f, _ in violations} == {"spec.documents", "spec.questions_per_chunk"}
        assert metadata["measured"] == "repeated_text" and int(metadata["size"]) > 4000
        assert asked == []
        await nothing_stored(jobs, client, data_dir)

        job, _ = await prepared(jobs, spec(1))
    finally:
        await runner.cleanup()
    assert len(asked) == 10
    assert job.state == common.JOB_STATE_SUCCEEDED, (job_reason(job), job.error.message)
    assert job.result.kept == 10 and job.result.chunks == 10
    version = (await ds_grpc.DatasetServiceStub(client.channel).GetDataset(
        ds.GetDatasetRequest(name="datasets/lands"))).dataset
    assert version.example_count == 10 and version.size_bytes <= 4000


async def test_result_chunks_counts_the_chunks_asked_about_not_all_of_them(make_server, data_dir: Path):
    # PreparationResult.chunks is documented as "Chunks asked about"; a job whose generator fails on its
    # second chunk has asked about 1 (progress says so) but reported all 4.
    calls = 0

    async def complete(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        body = await request.json()
        if calls > 1:
            return web.json_response({"error": {"message": "model crashed"}}, status=400)
        return web.json_response({"choices": [{"message": {"content": writer(body["messages"][0]["content"])}}]})

    async with preparing(make_server, data_dir, complete) as (_, jobs, spec):
        job, events = await prepared(jobs, spec)
    assert job.state == common.JOB_STATE_FAILED and job_reason(job) == "GENERATOR_UNAVAILABLE"
    assert job.progress.completed_steps == 1 and job.progress.total_steps == 4
    assert job.result.chunks == 1, job.result
    assert len([e for e in events if e.HasField("chunk")]) == 1


async def test_a_text_pdf_and_text_documents_are_still_accepted_and_prepared(make_server, data_dir: Path):
    # The limits hold ordinary documents well within a modest dataset_max_bytes: a text PDF, Markdown and a text
    # file by server path, 2 questions a chunk.
    runner, url, asked = await judge_engine(writer)
    try:
        client = await make_server(prepare_generator_url=url, dataset_max_bytes=8000)
        jobs = pb_grpc.DataPreparationServiceStub(client.channel)
        spec = pb.PreparationJobSpec(dataset="datasets/handbook", documents=documents(data_dir), chunk_chars=200,
                                     questions_per_chunk=2)
        job, _ = await prepared(jobs, spec)
    finally:
        await runner.cleanup()
    assert job.state == common.JOB_STATE_SUCCEEDED, job.error
    r = job.result
    assert len(asked) == r.chunks == job.progress.total_steps == 4 and r.kept == 4
    version = (await ds_grpc.DatasetServiceStub(client.channel).GetDataset(
        ds.GetDatasetRequest(name="datasets/handbook"))).dataset
    lines = [json.loads(line) for line in Path(urlparse(version.uri).path).read_text().splitlines()]
    pdf = [line["source"] for line in lines if line["source"]["document"] == "atlas.pdf"]
    assert len(pdf) == 1 and ATLAS == " ".join(pdf[0]["text"].split())
    assert {line["source"]["document"] for line in lines} == {"handbook.md", "atlas.pdf", "dunmoor.txt"}
