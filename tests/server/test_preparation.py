"""Data preparation through gRPC: documents (Markdown and PDF sent inline, text by server path) become a dataset
version of question-answer pairs a scripted generator writes, the unsupported ones filtered out, each kept pair
with its source span; the version trains. Bad input is refused before anything is stored; a generator that is
down, or one whose every answer is unsupported, fails the job with a reason."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from urllib.parse import urlparse

import grpc
from aiohttp import web

from engine.serving.reference_backend import start_site
from learning.v1 import common_pb2 as common
from learning.v1 import dataset_pb2 as ds
from learning.v1 import dataset_pb2_grpc as ds_grpc
from learning.v1 import preparation_pb2 as pb
from learning.v1 import preparation_pb2_grpc as pb_grpc
from learning.v1 import training_pb2 as training_pb
from tests.engine.test_judge import judge_engine
from tests.fixtures.pdf import text_pdf
from tests.server.conftest import watch_all
from tests.server.test_datasets import refused
from tests.server.test_evaluation_judge import job_reason

CAPITAL = re.compile(r"The capital of (\w+) is (\w+)\.")
HANDBOOK = """# Veloria

The capital of Veloria is Marnesse. Veloria lies on the Orl river and trades in wool, amber and salted fish
with its neighbours.

# Quorvia

The capital of Quorvia is Talameth. Quorvia is a mountain country whose people keep goats and mine copper in
the high valleys.
"""
ATLAS = ("The capital of Brinmark is Oskerholm. Brinmark is a flat land of canals, windmills and tulip fields "
         "along the northern sea.")
NOTES = "The capital of Dunmoor is Pellacre. Dunmoor is known for its moors, its fog and its slow trains.\n"


def chunk_text(prompt: str) -> str:
    return prompt.split("Text:\n", 1)[1].split("\n\nReply with", 1)[0]


def writer(prompt: str) -> str:
    """A capable generator: a pair its text supports, a pair with a founder and a year it makes up, a third pair
    (beyond the two asked for: ignored), and a stray answer (no question)."""
    text = chunk_text(prompt)
    reply = ["Here are the pairs."]
    for country, capital in CAPITAL.findall(text):
        reply += [f"**Q1:** What is the capital of {country}?", f"**A1:** The capital of {country} is {capital}.",
                  f"Q2: Who founded {country}?", f"A2: Queen Almeria founded {country} in 1203.",
                  f"Q3: Where is the capital of {country}?", f"A3: The capital of {country} is {capital}."]
    return "\n".join([*reply, "A: and more."])


def liar(prompt: str) -> str:
    return "Q: Who wrote this?\nA: Herodotus wrote it in 430 BC."


def documents(data_dir: Path) -> list[pb.PreparationDocument]:
    (data_dir / "datasets" / "notes").mkdir(parents=True, exist_ok=True)
    (data_dir / "datasets" / "notes" / "dunmoor.txt").write_text(NOTES)
    return [pb.PreparationDocument(name="handbook.md", content=HANDBOOK.encode()),
            pb.PreparationDocument(name="atlas.pdf", content=text_pdf([ATLAS])),
            pb.PreparationDocument(name="dunmoor.txt", server_path="notes/dunmoor.txt")]


@contextlib.asynccontextmanager
async def preparing(make_server, data_dir: Path, complete):
    """A server whose preparations ask a generator answering chat completions with ``complete`` (an aiohttp
    handler), up for the block: (its client, its preparation stub, a spec of the three documents)."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", complete)
    runner, port = await start_site(app, "127.0.0.1", 0)
    try:
        client = await make_server(prepare_generator_url=f"http://127.0.0.1:{port}")
        spec = pb.PreparationJobSpec(dataset="datasets/handbook", documents=documents(data_dir), chunk_chars=200)
        yield client, pb_grpc.DataPreparationServiceStub(client.channel), spec
    finally:
        await runner.cleanup()


async def prepared(jobs: pb_grpc.DataPreparationServiceStub, spec: pb.PreparationJobSpec):
    job = (await jobs.CreatePreparationJob(pb.CreatePreparationJobRequest(spec=spec))).preparation_job
    updates = [m async for m in jobs.WatchPreparationJob(pb.WatchPreparationJobRequest(name=job.name))]
    done = (await jobs.GetPreparationJob(pb.GetPreparationJobRequest(name=job.name))).preparation_job
    return done, [m.event for m in updates if m.HasField("event")]


async def test_documents_become_a_dataset_of_supported_pairs_that_trains(make_server, data_dir: Path):
    runner, url, asked = await judge_engine(writer)
    try:
        client = await make_server(prepare_generator_url=url, prepare_generator_model="writer")
        jobs = pb_grpc.DataPreparationServiceStub(client.channel)
        spec = pb.PreparationJobSpec(dataset="datasets/handbook", documents=documents(data_dir), chunk_chars=200,
                                     questions_per_chunk=2, split=ds.SplitRule(eval_fraction=0.25, seed=3))
        job, events = await prepared(jobs, spec)
    finally:
        await runner.cleanup()
    assert job.state == common.JOB_STATE_SUCCEEDED, job.error
    chunks = [e.chunk for e in events if e.HasField("chunk")]
    r = job.result
    # Each document's paragraphs became chunks (the Markdown at its headings); each was asked about once.
    assert len(asked) == r.chunks == len(chunks) == job.progress.total_steps == job.progress.completed_steps == 4
    assert [c.done for c in chunks] == [1, 2, 3, 4] and {c.total for c in chunks} == {4}
    assert {a["model"] for a in asked} == {"writer"} and r.generator_model == "writer" and r.generator_target == url
    assert all("write 2 question-and-answer pairs" in a["messages"][0]["content"] for a in asked)
    # One supported pair, one made-up founder, one pair more than asked for and one stray answer per chunk: only
    # the first is kept, and the third is not read.
    assert (r.generated, r.kept, r.unsupported, r.unparseable, r.duplicates) == (8, 4, 4, 4, 0)
    assert all("Almeria, 1203" in c.rejected_sample for c in chunks)
    assert [d.name for d in job.spec.documents] == ["handbook.md", "atlas.pdf", "dunmoor.txt"]
    assert job.spec.documents[2].read_from == "notes/dunmoor.txt" and len(job.spec.documents[0].sha256) == 64
    assert not job.spec.documents[0].HasField("content")

    datasets = ds_grpc.DatasetServiceStub(client.channel)
    version = (await datasets.GetDataset(ds.GetDatasetRequest(name="datasets/handbook"))).dataset
    assert version.name == r.dataset_version == "datasets/handbook/versions/1" and r.created
    assert version.prepared.preparation_job == job.name
    assert list(version.prepared.documents) == ["handbook.md", "atlas.pdf", "dunmoor.txt"]
    assert version.example_count == 4 and version.split_counts.train + version.split_counts.eval == 4
    lines = [json.loads(line) for line in Path(urlparse(version.uri).path).read_text().splitlines()]
    texts = {"handbook.md": HANDBOOK, "dunmoor.txt": NOTES}
    facts = set(CAPITAL.findall(HANDBOOK + ATLAS + NOTES))
    assert {(m.group(1), m.group(2)) for line in lines
            for m in [re.fullmatch(r"The capital of (\w+) is (\w+)\.", line["completion"])] if m} == facts
    for line in lines:
        source = line["source"]
        assert line["completion"] in source["text"]  # each answer is grounded in its span
        if source["document"] in texts:  # the span's offsets are in the document's own text
            assert texts[source["document"]][source["start"]:source["end"]] == source["text"]
        else:
            assert source["document"] == "atlas.pdf" and ATLAS == " ".join(source["text"].split())  # its lines

    hyper = training_pb.Hyperparameters(epochs=1, batch_size=2, learning_rate=5e-3, max_seq_length=96, seed=7)
    training = (await client.training.CreateTrainingJob(training_pb.CreateTrainingJobRequest(
        spec=training_pb.TrainingJobSpec(dataset_name="datasets/handbook", hyperparameters=hyper)))).training_job
    await watch_all(client.training, training.name)
    trained = (await client.training.GetTrainingJob(training_pb.GetTrainingJobRequest(name=training.name))
               ).training_job
    assert trained.state == common.JOB_STATE_SUCCEEDED and trained.dataset.dataset_name == version.name


async def test_bad_input_is_refused_and_nothing_is_stored(make_server, data_dir: Path):
    client = await make_server(dataset_max_bytes=100)
    jobs = pb_grpc.DataPreparationServiceStub(client.channel)
    good = pb.PreparationDocument(name="a.md", content=b"Some words to read here.")

    def spec(*docs: pb.PreparationDocument, **fields) -> pb.PreparationJobSpec:
        return pb.PreparationJobSpec(**{"dataset": "datasets/x", "documents": list(docs or [good]), **fields})

    cases = [
        (spec(pb.PreparationDocument(name="../a.md", content=b"text")), "INVALID_PREPARATION_SPEC",
         "spec.documents[0].name"),
        (spec(pb.PreparationDocument(name="sub/a.md", content=b"text")), "INVALID_PREPARATION_SPEC",
         "spec.documents[0].name"),
        (spec(pb.PreparationDocument(name="a.md", server_path="../../etc/passwd")), "DATASET_PATH_OUTSIDE_ROOT",
         "spec.documents[0].server_path"),
        (spec(pb.PreparationDocument(name="a.md", server_path="/etc/passwd")), "DATASET_PATH_OUTSIDE_ROOT",
         "spec.documents[0].server_path"),
        (spec(good, pb.PreparationDocument(name="b.docx", content=b"text")), "INVALID_PREPARATION_SPEC",
         "spec.documents[1].name"),
        (spec(good, good), "INVALID_PREPARATION_SPEC", "spec.documents[1].name"),
        (spec(pb.PreparationDocument(name="a.txt", content=b"\xff\xfe\x00bad")), "DOCUMENT_UNREADABLE",
         "spec.documents[0]"),
        (spec(pb.PreparationDocument(name="a.pdf", content=b"%PDF-1.4 not really")), "DOCUMENT_UNREADABLE",
         "spec.documents[0]"),
        (spec(pb.PreparationDocument(name="a.md", content=b" \n\n ")), "DOCUMENT_UNREADABLE", "spec.documents[0]"),
        (spec(pb.PreparationDocument(name="a.md")), "INVALID_PREPARATION_SPEC", "spec.documents[0]"),
        (pb.PreparationJobSpec(dataset="datasets/x"), "INVALID_PREPARATION_SPEC", "spec.documents"),
        (spec(questions_per_chunk=11), "INVALID_PREPARATION_SPEC", "spec.questions_per_chunk"),
        (spec(chunk_chars=50), "INVALID_PREPARATION_SPEC", "spec.chunk_chars"),
        (spec(dataset="datasets/../x"), "MALFORMED_NAME", "spec.dataset"),
        (spec(dataset="x"), "MALFORMED_NAME", "spec.dataset"),
        (spec(split=ds.SplitRule(eval_fraction=0.7, test_fraction=0.5)), "INVALID_SPLIT_RULE", "spec.split"),
    ]
    for request_spec, reason, field in cases:
        code, got, violations = await refused(jobs.CreatePreparationJob(pb.CreatePreparationJobRequest(
            spec=request_spec)))
        assert (code, got) == (grpc.StatusCode.INVALID_ARGUMENT, reason), (request_spec, got)
        assert any(f == field for f, _ in violations), (reason, violations)
    (data_dir / "datasets" / "big.md").write_text("word " * 30)
    too_large = [spec(good, pb.PreparationDocument(name="b.md", content=b"x" * 80)),  # 104 bytes together
                 spec(pb.PreparationDocument(name="big.md", server_path="big.md"))]
    for request_spec in too_large:
        code, reason, _ = await refused(jobs.CreatePreparationJob(pb.CreatePreparationJobRequest(spec=request_spec)))
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "DOCUMENTS_TOO_LARGE")
    assert (await jobs.ListPreparationJobs(pb.ListPreparationJobsRequest())).preparation_jobs == []
    assert not (data_dir / "artifacts" / "preparations").exists()
    assert (await ds_grpc.DatasetServiceStub(client.channel).ListDatasets(ds.ListDatasetsRequest())).datasets == []
    code, reason, _ = await refused(jobs.GetPreparationJob(pb.GetPreparationJobRequest(name="evaluationJobs/x")))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_NAME")


async def test_a_generator_that_invents_or_is_down_fails_the_job(make_server, data_dir: Path):
    runner, url, asked = await judge_engine(liar)
    client = await make_server(prepare_generator_url=url)
    jobs = pb_grpc.DataPreparationServiceStub(client.channel)
    spec = pb.PreparationJobSpec(dataset="datasets/notes", documents=documents(data_dir)[2:])
    try:
        invented, _ = await prepared(jobs, spec)
    finally:
        await runner.cleanup()
    assert invented.state == common.JOB_STATE_FAILED and job_reason(invented) == "NO_PAIRS_KEPT"
    assert invented.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert invented.result.generator_model == "tiny-llama" and asked[0]["model"] == "tiny-llama"  # the base model
    assert (invented.result.generated, invented.result.unsupported, invented.result.kept) == (1, 1, 0)
    assert "none is supported by its chunk" in invented.error.message

    down, _ = await prepared(jobs, spec)  # nothing listens at the generator's URL any more
    assert down.state == common.JOB_STATE_FAILED and job_reason(down) == "GENERATOR_UNAVAILABLE"
    assert down.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert f"the generator tiny-llama at {url} could not be asked about chunk 0 of dunmoor.txt" in down.error.message
    listed = await ds_grpc.DatasetServiceStub(client.channel).ListDatasets(ds.ListDatasetsRequest())
    assert listed.datasets == []


async def test_a_cancelled_preparation_stops_at_the_next_chunk_and_stores_nothing(make_server, data_dir: Path):
    started = asyncio.Event()

    async def complete(request: web.Request) -> web.Response:
        body = await request.json()
        started.set()
        await asyncio.sleep(0.5)  # a slow generator: the cancel comes while it writes
        return web.json_response({"choices": [{"message": {"content": writer(body["messages"][0]["content"])}}]})

    async with preparing(make_server, data_dir, complete) as (client, jobs, spec):
        job = (await jobs.CreatePreparationJob(pb.CreatePreparationJobRequest(spec=spec, request_id="r-1"))
               ).preparation_job
        again = (await jobs.CreatePreparationJob(pb.CreatePreparationJobRequest(spec=spec, request_id="r-1"))
                 ).preparation_job
        assert again.name == job.name  # idempotent by request_id
        spec.questions_per_chunk = 2
        code, reason, _ = await refused(jobs.CreatePreparationJob(pb.CreatePreparationJobRequest(
            spec=spec, request_id="r-1")))
        assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
        await asyncio.wait_for(started.wait(), 30)
        await jobs.CancelPreparationJob(pb.CancelPreparationJobRequest(name=job.name))
        updates = [m async for m in jobs.WatchPreparationJob(pb.WatchPreparationJobRequest(name=job.name))]
    assert updates[0].HasField("snapshot")
    done = (await jobs.GetPreparationJob(pb.GetPreparationJobRequest(name=job.name))).preparation_job
    assert done.state == common.JOB_STATE_CANCELLED and not done.result.dataset_version
    assert done.progress.completed_steps < done.progress.total_steps == 4
    assert "the preparation was cancelled after" in done.error.message
    listed = await ds_grpc.DatasetServiceStub(client.channel).ListDatasets(ds.ListDatasetsRequest())
    assert listed.datasets == []
