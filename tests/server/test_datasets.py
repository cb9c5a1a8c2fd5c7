"""DatasetService against a live server on a real PostgreSQL (make_pg_server), the local artifact store and, for
s3:// sources, SeaweedFS; and a training job on a stored dataset by name."""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest

from engine.continual.version_data import VersionDatasets
from engine.domain import dataset_digest
from engine.golden import cases_digest, read_cases
from engine.splits import Split, SplitRule
from engine.training.datasets import load_jsonl
from learning.v1 import adapter_pb2 as adapter_pb
from learning.v1 import adapter_pb2_grpc as adapter_grpc
from learning.v1 import common_pb2 as common
from learning.v1 import dataset_pb2 as pb
from learning.v1 import dataset_pb2_grpc as pb_grpc
from learning.v1 import feedback_pb2 as fb
from learning.v1 import feedback_pb2_grpc as fb_grpc
from learning.v1 import training_pb2 as training_pb
from learning_engine import AsyncClient, errors
from tests.fixtures.seaweedfs import ACCESS_KEY, SECRET_KEY
from tests.server.conftest import TINY, error_details, watch_all

LIMIT = 64 * 1024  # dataset_max_bytes of these servers
SPLIT = pb.SplitRule(eval_fraction=0.25, test_fraction=0.125, seed=3)


def stub(client) -> pb_grpc.DatasetServiceStub:
    return pb_grpc.DatasetServiceStub(client.channel)


def upload_messages(name: str, data: bytes, *, chunk: int = 700, split: pb.SplitRule | None = None,
                    sha256: str = "", size: int | None = None, filename: str = "capitals.jsonl",
                    kind: int = pb.DATASET_KIND_UNSPECIFIED):
    meta = pb.UploadDatasetMetadata(name=name, sha256=sha256 or hashlib.sha256(data).hexdigest(),
                                    size_bytes=len(data) if size is None else size, filename=filename, kind=kind)
    if split is not None:
        meta.split.CopyFrom(split)
    yield pb.UploadDatasetRequest(metadata=meta)
    for start in range(0, len(data), chunk):
        yield pb.UploadDatasetRequest(chunk=data[start:start + chunk])


def _until(messages, count: int):
    """The first ``count`` of ``messages``."""
    return itertools.islice(messages, count)


async def refused(call) -> tuple[grpc.StatusCode, str, list[tuple[str, str]]]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    info, violations = error_details(err.value)
    return err.value.code(), info.reason, violations


def stored_files(data_dir: Path) -> list[Path]:
    """Every file of the local artifact store's datasets (temporary files of cut writes included)."""
    root = data_dir / "artifacts" / "datasets"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_upload_in_chunks_versions_by_content_and_get_and_list(make_pg_server, data_dir: Path):
    client = await make_pg_server(dataset_max_bytes=LIMIT)
    datasets = stub(client)
    data = (data_dir / "datasets" / "capitals.jsonl").read_bytes()
    examples = load_jsonl(data_dir / "datasets" / "capitals.jsonl")
    parts = SplitRule(0.25, 0.125, 3).apply(examples)

    first = await datasets.UploadDataset(upload_messages("datasets/capitals", data, split=SPLIT))
    d = first.dataset
    assert first.created and d.name == "datasets/capitals/versions/1" and d.dataset == "datasets/capitals"
    assert d.version == 1 and d.sha256 == hashlib.sha256(data).hexdigest() and d.size_bytes == len(data)
    assert d.digest == dataset_digest(examples) and d.example_count == len(examples) == 24
    assert dict(d.composition) == {"chat": 24} and d.upload.filename == "capitals.jsonl"
    assert (d.split.eval_fraction, d.split.test_fraction, d.split.seed) == (0.25, 0.125, 3)
    assert (d.split_counts.train, d.split_counts.eval, d.split_counts.test) == (
        len(parts[Split.TRAIN]), len(parts[Split.EVAL]), len(parts[Split.TEST]))
    assert 0 < d.split_counts.eval and 0 < d.split_counts.test and d.split_counts.train < 24
    stored = stored_files(data_dir)
    assert [p.name for p in stored] == [f"{d.sha256}.jsonl"] and stored[0].read_bytes() == data
    assert d.uri == stored[0].resolve().as_uri()

    # the same bytes and split again: the same version; the same bytes without a split: a new one, same object
    again = await datasets.UploadDataset(upload_messages("datasets/capitals", data, chunk=5000, split=SPLIT))
    assert not again.created and again.dataset == d
    plain = (await datasets.UploadDataset(upload_messages("datasets/capitals", data))).dataset
    assert plain.name == "datasets/capitals/versions/2" and not plain.HasField("split")
    assert (plain.split_counts.train, plain.split_counts.eval, plain.split_counts.test) == (24, 0, 0)
    assert len(stored_files(data_dir)) == 1

    # from a file below the datasets directory
    (data_dir / "datasets" / "more").mkdir()
    (data_dir / "datasets" / "more" / "two.jsonl").write_text(
        '{"prompt": "2+2=", "completion": "4"}\n\n{"prompt": "3+3=", "completion": "6", "weight": 2}\n')
    made = (await datasets.CreateDataset(pb.CreateDatasetRequest(
        name="datasets/arith", server_path="more/two.jsonl"))).dataset
    assert made.name == "datasets/arith/versions/1" and made.server_path == "more/two.jsonl"
    assert made.example_count == 2 and dict(made.composition) == {"prompt_completion": 2}

    got = (await datasets.GetDataset(pb.GetDatasetRequest(name="datasets/capitals"))).dataset
    assert got == plain  # the newest version
    assert (await datasets.GetDataset(pb.GetDatasetRequest(name="datasets/capitals/versions/1"))).dataset == d
    pages, token = [], ""
    while True:
        page = await datasets.ListDatasets(pb.ListDatasetsRequest(page_size=2, page_token=token))
        pages.append([x.name for x in page.datasets])
        token = page.next_page_token
        if not token:
            break
    assert pages == [["datasets/arith/versions/1", "datasets/capitals/versions/2"], ["datasets/capitals/versions/1"]]
    only = await datasets.ListDatasets(pb.ListDatasetsRequest(dataset="datasets/capitals"))
    assert [x.version for x in only.datasets] == [2, 1]

    missing = await refused(datasets.GetDataset(pb.GetDatasetRequest(name="datasets/capitals/versions/9")))
    assert missing[:2] == (grpc.StatusCode.NOT_FOUND, "STORED_DATASET_NOT_FOUND")
    for name in ("datasets/../etc", "datasets/a/versions/0", "datasets/UPPER", "capitals", "datasets/a/b"):
        code, reason, violations = await refused(datasets.GetDataset(pb.GetDatasetRequest(name=name)))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_NAME") and violations[0][0] == "name"
    for path in ("../outside.jsonl", "/etc/passwd", "more/../../x.jsonl"):
        code, reason, violations = await refused(datasets.CreateDataset(pb.CreateDatasetRequest(
            name="datasets/x", server_path=path)))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DATASET_PATH_OUTSIDE_ROOT")
        assert violations[0][0] == "server_path"
    code, reason, _ = await refused(datasets.CreateDataset(pb.CreateDatasetRequest(
        name="datasets/x/../../y", server_path="capitals.jsonl")))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_NAME")
    code, reason, _ = await refused(datasets.CreateDataset(pb.CreateDatasetRequest(
        name="datasets/x", s3_uri="s3://bucket/data.jsonl")))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "S3_SOURCES_UNAVAILABLE")
    code, reason, _ = await refused(datasets.CreateDataset(pb.CreateDatasetRequest(
        name="datasets/x", s3_uri="s3://bucket/a/../b.jsonl")))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_S3_URI")
    code, reason, _ = await refused(datasets.CreateDataset(pb.CreateDatasetRequest(name="datasets/x")))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DATASET_REQUEST")


async def test_refused_and_cut_uploads_store_nothing(make_pg_server, data_dir: Path):
    client = await make_pg_server(dataset_max_bytes=LIMIT)
    datasets = stub(client)
    data = (data_dir / "datasets" / "capitals.jsonl").read_bytes()
    name = "datasets/capitals"

    code, reason, violations = await refused(datasets.UploadDataset(upload_messages(name, data, sha256="ab" * 32)))
    assert (code, reason, violations[0][0]) == (grpc.StatusCode.INVALID_ARGUMENT, "SHA256_MISMATCH", "metadata.sha256")
    # Refusals that come before the last message are sent only as far as the message refused: grpcio's asyncio
    # client reports INTERNAL ("Internal error from Core") instead of the server's status when a write it still
    # makes fails as the server ends the call (grpc/grpc#36066); the server refuses at that message either way.
    code, reason, _ = await refused(datasets.UploadDataset(_until(upload_messages(name, data, sha256="not-hex"), 1)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_SHA256")
    big = b'{"prompt": "p", "completion": "c"}\n' * (LIMIT // 35 + 10)
    declared = _until(upload_messages(name, big), 1)
    code, reason, _ = await refused(datasets.UploadDataset(declared))  # declared over the limit: refused at once
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "DATASET_TOO_LARGE")
    sent = upload_messages(name, big[:LIMIT + 1], size=LIMIT)  # its last chunk passes the limit
    code, reason, _ = await refused(datasets.UploadDataset(sent))  # sent over it
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "DATASET_TOO_LARGE")
    code, reason, _ = await refused(datasets.UploadDataset(upload_messages(name, data, size=len(data) + 1)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UPLOAD_SIZE_MISMATCH")  # the stream ended early
    code, reason, _ = await refused(datasets.UploadDataset(upload_messages(name, data, size=len(data) - 1)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UPLOAD_SIZE_MISMATCH")  # more than declared
    code, reason, _ = await refused(datasets.UploadDataset(iter([pb.UploadDatasetRequest(chunk=data)])))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "METADATA_FIRST")
    code, reason, _ = await refused(datasets.UploadDataset(_until(upload_messages("datasets/../../etc", data), 1)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_NAME")

    # a malformed line: its violations, nothing stored
    bad = data + b'{"prompt": "p"}\n{"messages": [{"role": "robot", "content": "x"}]}\nnot json\n'
    code, reason, violations = await refused(datasets.UploadDataset(upload_messages(name, bad)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DATASET_INVALID")
    assert [f for f, _ in violations] == ["line[25].completion", "line[26].messages[0].role", "line[27]"]

    # a stream cut mid-way: the server had the first chunk, then the client went away (chunks larger than a
    # file buffer, so the server's copy grows on disk as they arrive)
    scratch = data_dir / "work" / "dataset-rpc"
    hold = asyncio.Event()

    async def cut_short():
        messages = upload_messages(name, data * 8, chunk=len(data) * 4)
        yield next(messages)
        yield next(messages)
        await hold.wait()

    call = datasets.UploadDataset(cut_short())
    for _ in range(200):  # until the server holds the first half
        if any(p.stat().st_size for p in scratch.rglob("upload.jsonl")):
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the server never received the first chunk")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    for _ in range(200):  # the server drops what it had received
        if scratch.exists() and not any(scratch.iterdir()):
            break
        await asyncio.sleep(0.02)
    assert not any(scratch.iterdir())

    assert (await datasets.ListDatasets(pb.ListDatasetsRequest())).datasets == []
    assert stored_files(data_dir) == []
    gone = await refused(datasets.GetDataset(pb.GetDatasetRequest(name=name)))
    assert gone[:2] == (grpc.StatusCode.NOT_FOUND, "STORED_DATASET_NOT_FOUND")
    # and the server still takes a good upload
    assert (await datasets.UploadDataset(upload_messages(name, data))).dataset.version == 1


async def test_validate_reports_line_violations_and_split_counts(make_pg_server, data_dir: Path):
    client = await make_pg_server(dataset_max_bytes=LIMIT)
    datasets = stub(client)
    content = (b'{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": ""}\n'
               b'{"messages": [{"role": "user", "content": "hi"}]}\n{"weight": -1, "prompt": "d", "completion": "e"}\n')
    code, reason, violations = await refused(datasets.ValidateDataset(pb.ValidateDatasetRequest(content=content)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DATASET_INVALID")
    assert [f for f, _ in violations] == ["line[2].completion", "line[3].messages", "line[4].weight"]

    good = (data_dir / "datasets" / "capitals.jsonl").read_bytes()
    report = await datasets.ValidateDataset(pb.ValidateDatasetRequest(content=good, split=SPLIT))
    parts = SplitRule(0.25, 0.125, 3).apply(load_jsonl(data_dir / "datasets" / "capitals.jsonl"))
    assert report.sha256 == hashlib.sha256(good).hexdigest() and report.example_count == 24
    assert (report.split_counts.train, report.split_counts.eval, report.split_counts.test) == tuple(
        len(parts[s]) for s in (Split.TRAIN, Split.EVAL, Split.TEST))
    by_path = await datasets.ValidateDataset(pb.ValidateDatasetRequest(server_path="capitals.jsonl", split=SPLIT))
    assert by_path == report
    assert (await datasets.ListDatasets(pb.ListDatasetsRequest())).datasets == []  # validating stores nothing

    for rule in (pb.SplitRule(eval_fraction=0.6, test_fraction=0.4), pb.SplitRule(eval_fraction=-0.1),
                 pb.SplitRule(test_fraction=float("nan"))):
        call = datasets.ValidateDataset(pb.ValidateDatasetRequest(content=good, split=rule))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        info, _ = error_details(err.value)
        assert (err.value.code(), info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SPLIT_RULE")
        # a negative or NaN fraction is said as such, not as leaving nothing to train on
        assert ("does not leave examples" in err.value.details()) == (rule.eval_fraction == 0.6), err.value.details()
    code, reason, _ = await refused(datasets.ValidateDataset(pb.ValidateDatasetRequest()))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DATASET_REQUEST")
    code, reason, _ = await refused(datasets.ValidateDataset(pb.ValidateDatasetRequest(content=good * 60)))
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "DATASET_TOO_LARGE")


async def test_an_empty_file_validated_or_uploaded_through_the_sdk_holds_no_examples(make_pg_server, tmp_path: Path):
    """Empty content was dropped by the SDK as if no source were named (INVALID_DATASET_REQUEST "name what to
    validate"), and an empty upload was refused for its size_bytes; both are DATASET_EMPTY, as an empty file on
    the server is."""
    client = await make_pg_server()
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    async with AsyncClient(f"127.0.0.1:{client.app.port}") as sdk:
        for call in (sdk.validate_dataset(content=b""), sdk.upload_dataset("datasets/empty", empty)):
            with pytest.raises(errors.InvalidArgument) as err:
                await call
            assert err.value.reason == "DATASET_EMPTY", err.value
    assert (await stub(client).ListDatasets(pb.ListDatasetsRequest())).datasets == []


async def test_a_dataset_from_a_feedback_window_is_frozen(make_pg_server):
    client = await make_pg_server()
    time = datetime.now(UTC) - timedelta(minutes=5)
    events = []
    for i, (country, city) in enumerate([("France", "Paris"), ("Peru", "Lima"), ("Kenya", "Nairobi")]):
        event = fb.FeedbackEvent(client_event_id=f"e{i}", kind=fb.FEEDBACK_KIND_THUMBS_UP, user_id="u1",
                                 interaction=fb.Interaction(prompt=f"Capital of {country}?", response=city))
        event.time.FromDatetime(time)
        events.append(event)
    await fb_grpc.FeedbackServiceStub(client.channel).SubmitFeedback(fb.SubmitFeedbackRequest(events=events))
    made = (await stub(client).CreateDataset(pb.CreateDatasetRequest(
        name="datasets/week", feedback=common.FeedbackDataset(days=1, min_samples=1)))).dataset
    assert made.example_count == 3 and made.feedback.days == 1 and made.feedback.min_samples == 1
    assert made.window_start.ToDatetime() < time.replace(tzinfo=None) < made.window_end.ToDatetime()
    code, reason, _ = await refused(stub(client).CreateDataset(pb.CreateDatasetRequest(
        name="datasets/week", feedback=common.FeedbackDataset(days=1, min_samples=10))))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "FEEDBACK_DATASET_TOO_SMALL")


async def test_training_by_dataset_name_records_the_version_and_delete_waits_for_its_users(
    make_pg_server, data_dir: Path
):
    client = await make_pg_server()
    datasets = stub(client)
    data = (data_dir / "datasets" / "capitals.jsonl").read_bytes()
    version = (await datasets.UploadDataset(upload_messages("datasets/capitals", data, split=SPLIT))).dataset
    hyper = training_pb.Hyperparameters(epochs=1, batch_size=4, learning_rate=5e-3, max_seq_length=128, seed=7)

    refused_spec = await refused(client.training.CreateTrainingJob(training_pb.CreateTrainingJobRequest(
        spec=training_pb.TrainingJobSpec(dataset_name="datasets/nope", hyperparameters=hyper))))
    assert refused_spec[:2] == (grpc.StatusCode.NOT_FOUND, "STORED_DATASET_NOT_FOUND")
    malformed = await refused(client.training.CreateTrainingJob(training_pb.CreateTrainingJobRequest(
        spec=training_pb.TrainingJobSpec(dataset_name="datasets/../x", hyperparameters=hyper))))
    assert malformed[1] == "INVALID_TRAINING_SPEC" and malformed[2][0][0] == "spec.dataset_name"

    created = (await client.training.CreateTrainingJob(training_pb.CreateTrainingJobRequest(
        spec=training_pb.TrainingJobSpec(dataset_name="datasets/capitals", hyperparameters=hyper)))).training_job
    assert created.spec.dataset_name == "datasets/capitals"
    assert created.dataset.dataset_name == version.name  # resolved and pinned when the job was created
    # the train and eval splits (the test split is never used by training): the eval split is held out
    assert created.dataset.example_count == version.split_counts.train + version.split_counts.eval
    in_use = await refused(datasets.DeleteDataset(pb.DeleteDatasetRequest(name=version.name)))
    assert in_use[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "DATASET_IN_USE")

    messages = await watch_all(client.training, created.name)
    job = (await client.training.GetTrainingJob(training_pb.GetTrainingJobRequest(name=created.name))).training_job
    assert job.state == common.JOB_STATE_SUCCEEDED, messages[-1]
    steps = [m.event.step_metrics for m in messages if m.HasField("event") and m.event.HasField("step_metrics")]
    assert steps[-1].total_steps == -(-version.split_counts.train // 4)  # the train split, batches of 4
    notices = {m.event.notice.code: m.event.notice.message for m in messages
               if m.HasField("event") and m.event.HasField("notice")}
    assert notices["EVAL_SPLIT"].startswith(f"held out {version.split_counts.eval} of "
                                            f"{version.split_counts.train + version.split_counts.eval} examples")
    adapter = (await adapter_grpc.AdapterServiceStub(client.channel).GetAdapter(
        adapter_pb.GetAdapterRequest(version=job.output_adapter_version))).adapter
    assert adapter.dataset.dataset_name == version.name and adapter.dataset.digest == job.dataset.digest
    assert adapter.eval_fraction == 0.25 and adapter.HasField("eval_loss")  # the dataset's own eval split

    # what a continuation of that version finds as its data: the train split (and, apart, the eval split the
    # gate measures it on), read back from the store
    engine = client.app.engine
    record = await engine.adapters.get(TINY, job.output_adapter_version)
    found = await VersionDatasets(datasets_dir=data_dir / "datasets", stored=engine.datasets).of(record)
    parts = SplitRule(0.25, 0.125, 3).apply(load_jsonl(data_dir / "datasets" / "capitals.jsonl"))
    assert found.examples == parts[Split.TRAIN] and found.held_out == parts[Split.EVAL]
    assert dataset_digest([e for e in load_jsonl(data_dir / "datasets" / "capitals.jsonl")
                           if e not in parts[Split.TEST]]) == adapter.dataset.digest

    in_use = await refused(datasets.DeleteDataset(pb.DeleteDatasetRequest(name="datasets/capitals")))
    assert in_use[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "DATASET_IN_USE")  # the published version
    await adapter_grpc.AdapterServiceStub(client.channel).DeleteAdapter(
        adapter_pb.DeleteAdapterRequest(version=job.output_adapter_version))
    deleted = await datasets.DeleteDataset(pb.DeleteDatasetRequest(name="datasets/capitals"))
    assert list(deleted.deleted) == [version.name] and stored_files(data_dir) == []
    gone = await refused(datasets.GetDataset(pb.GetDatasetRequest(name=version.name)))
    assert gone[:2] == (grpc.StatusCode.NOT_FOUND, "STORED_DATASET_NOT_FOUND")
    again = (await datasets.UploadDataset(upload_messages("datasets/capitals", data, split=SPLIT))).dataset
    assert again.version == 2  # a deleted version's number is not given again


@pytest.mark.full_stack
async def test_an_s3_object_through_the_artifact_stores_client(make_pg_server, seaweedfs, s3_bucket):
    client = await make_pg_server(artifact_backend="s3", s3_endpoint=seaweedfs.endpoint, s3_bucket=s3_bucket,
                                  s3_access_key=ACCESS_KEY, s3_secret_key=SECRET_KEY, s3_secure=False)
    data = b'{"prompt": "2+2=", "completion": "4"}\n{"prompt": "3+3=", "completion": "6"}\n'
    s3 = seaweedfs.client()
    source_bucket = f"{s3_bucket}-in"
    await asyncio.to_thread(s3.make_bucket, source_bucket)
    await asyncio.to_thread(s3.put_object, source_bucket, "team/arith.jsonl", io.BytesIO(data), len(data))
    made = await stub(client).CreateDataset(pb.CreateDatasetRequest(
        name="datasets/arith", s3_uri=f"s3://{source_bucket}/team/arith.jsonl"))
    d = made.dataset
    assert made.created and d.s3_uri == f"s3://{source_bucket}/team/arith.jsonl" and d.example_count == 2
    assert d.uri == f"s3://{s3_bucket}/datasets/arith/{hashlib.sha256(data).hexdigest()}.jsonl"
    stored = await asyncio.to_thread(lambda: s3.get_object(s3_bucket, d.uri.split("/", 3)[3]).read())
    assert stored == data
    code, reason, _ = await refused(stub(client).CreateDataset(pb.CreateDatasetRequest(
        name="datasets/arith", s3_uri=f"s3://{source_bucket}/team/missing.jsonl")))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DATASET_NOT_FOUND")


GOLDEN = [  # golden cases: answer spans, several references, a source; one line per case
    {"prompt": "Capital of Veloria?", "expected": "The capital of Veloria is Marnesse.", "answer": "Marnesse"},
    {"prompt": "Capital of Quorvia?", "references": ["Talameth.", "It is Talameth, by the sea."]},
    {"prompt": "Capital of Brinmark?", "expected": "Oskerholm", "answer": ["Oskerholm", "Osker"],
     "source": "Brinmark's capital is Oskerholm."},
    {"prompt": "Capital of Dunmoor?", "expected": "Pellacre"},
]


def golden_jsonl(cases) -> bytes:
    return "".join(json.dumps(c) + "\n" for c in cases).encode()


async def test_golden_cases_are_a_kind_of_dataset_checked_split_and_never_trained_on(make_pg_server, data_dir: Path,
                                                                                      database_url: str):
    """A version of kind golden is read line by line by the golden suites' parser, counted and split by prompt,
    content-addressed per kind; bad lines are refused with their violations and nothing stored; training on it is
    refused with the field named; ValidateDataset checks either kind."""
    client = await make_pg_server(dataset_max_bytes=LIMIT)
    datasets = stub(client)
    data = golden_jsonl(GOLDEN)
    rule = pb.SplitRule(test_fraction=0.5, seed=0)
    split = SplitRule(test_fraction=0.5, seed=0)

    made = await datasets.UploadDataset(upload_messages("datasets/golden", data, split=rule,
                                                        kind=pb.DATASET_KIND_GOLDEN, filename="golden.jsonl"))
    d = made.dataset
    cases, bad = read_cases(data.splitlines())
    assert made.created and not bad and d.name == "datasets/golden/versions/1" and d.kind == pb.DATASET_KIND_GOLDEN
    assert d.example_count == 4 and d.digest == cases_digest(cases) and d.sha256 == hashlib.sha256(data).hexdigest()
    assert dict(d.composition) == {"answer": 2, "several_references": 1, "source": 1}
    test = [c["prompt"] for c in GOLDEN if split.of_prompt(c["prompt"]) is Split.TEST]
    assert test == ["Capital of Brinmark?", "Capital of Dunmoor?"]  # by the prompt as written, seed 0
    assert (d.split_counts.train, d.split_counts.eval, d.split_counts.test) == (2, 0, 2)
    again = await datasets.UploadDataset(upload_messages("datasets/golden", data, split=rule,
                                                         kind=pb.DATASET_KIND_GOLDEN))
    assert not again.created and again.dataset == d  # the same bytes, split and kind: the same version
    listed = (await datasets.ListDatasets(pb.ListDatasetsRequest(dataset="datasets/golden"))).datasets
    assert [(x.name, x.kind) for x in listed] == [(d.name, pb.DATASET_KIND_GOLDEN)]

    # the same bytes as training examples (the default kind): the training validator's violations, nothing stored
    code, reason, violations = await refused(datasets.UploadDataset(upload_messages("datasets/golden", data,
                                                                                    split=rule)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DATASET_INVALID")
    assert [f for f, _ in violations] == [f"line[{n}].completion" for n in range(1, 5)]

    # a malformed golden line: one violation per bad line, and nothing stored
    broken = data + (b'{"prompt": "Capital of Ostmark?"}\n\n{"prompt": "a", "expected": "b", "answer": 7}\n'
                     b'{"prompt": "", "expected": "b"}\nnot json\n{"prompt": "c", "expected": "d", "source": " "}\n')
    stored_before = stored_files(data_dir)
    code, reason, violations = await refused(datasets.UploadDataset(upload_messages(
        "datasets/broken", broken, kind=pb.DATASET_KIND_GOLDEN)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DATASET_INVALID")
    assert [f for f, _ in violations] == ["line[5].reference", "line[7].answer", "line[8].prompt", "line[9]",
                                          "line[10].source"]
    assert stored_files(data_dir) == stored_before
    gone = await refused(datasets.GetDataset(pb.GetDatasetRequest(name="datasets/broken")))
    assert gone[:2] == (grpc.StatusCode.NOT_FOUND, "STORED_DATASET_NOT_FOUND")

    # ValidateDataset: either kind, from content or a server file; a kind the contract does not define is refused
    checked = await datasets.ValidateDataset(pb.ValidateDatasetRequest(content=data, split=rule,
                                                                       kind=pb.DATASET_KIND_GOLDEN))
    assert (checked.kind, checked.example_count, checked.digest) == (pb.DATASET_KIND_GOLDEN, 4, d.digest)
    assert (checked.split_counts.train, checked.split_counts.test) == (2, 2)
    code, reason, violations = await refused(datasets.ValidateDataset(pb.ValidateDatasetRequest(
        content=broken, kind=pb.DATASET_KIND_GOLDEN)))
    assert (code, reason, len(violations)) == (grpc.StatusCode.INVALID_ARGUMENT, "DATASET_INVALID", 5)
    training = await datasets.ValidateDataset(pb.ValidateDatasetRequest(server_path="capitals.jsonl"))
    assert (training.kind, training.example_count) == (pb.DATASET_KIND_TRAINING, 24)
    (data_dir / "datasets" / "golden.jsonl").write_bytes(data)
    by_path = (await datasets.CreateDataset(pb.CreateDatasetRequest(
        name="datasets/golden-path", server_path="golden.jsonl", kind=pb.DATASET_KIND_GOLDEN))).dataset
    assert (by_path.kind, by_path.digest, by_path.server_path) == (pb.DATASET_KIND_GOLDEN, d.digest, "golden.jsonl")
    for call, field in [
        (datasets.ValidateDataset(pb.ValidateDatasetRequest(content=data, kind=9)), "kind"),
        (datasets.UploadDataset(upload_messages("datasets/golden", data, kind=9)), "metadata.kind"),
        (datasets.CreateDataset(pb.CreateDatasetRequest(name="datasets/week", kind=pb.DATASET_KIND_GOLDEN,
                                                        feedback=common.FeedbackDataset(days=1))), "kind"),
    ]:
        code, reason, violations = await refused(call)
        assert (code, reason, [f for f, _ in violations]) == (
            grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DATASET_REQUEST", [field])

    # nothing trains on golden cases: a training job naming one is refused (and a validate-only one), naming
    # the field; the training datasets that existed before kinds are of kind training
    hyper = training_pb.Hyperparameters(epochs=1, batch_size=4, learning_rate=5e-3, max_seq_length=128, seed=7)
    for name, validate_only in [("datasets/golden", False), ("datasets/golden-path/versions/1", True)]:
        code, reason, violations = await refused(client.training.CreateTrainingJob(
            training_pb.CreateTrainingJobRequest(validate_only=validate_only, spec=training_pb.TrainingJobSpec(
                dataset_name=name, hyperparameters=hyper))))
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "GOLDEN_DATASET_NOT_TRAINABLE")
        assert [f for f, _ in violations] == ["spec.dataset_name"]
    listed_jobs = await client.training.ListTrainingJobs(training_pb.ListTrainingJobsRequest())
    assert list(listed_jobs.training_jobs) == []
    capitals = (data_dir / "datasets" / "capitals.jsonl").read_bytes()
    plain = (await datasets.UploadDataset(upload_messages("datasets/capitals", capitals))).dataset
    assert plain.kind == pb.DATASET_KIND_TRAINING
    connection = await asyncpg.connect(database_url)
    try:  # a record stored before kinds existed: no kind in it, the column's default
        await connection.execute("UPDATE datasets SET doc = doc #- '{content,kind}', kind = DEFAULT WHERE name = $1",
                                 plain.name)
        assert await connection.fetchval("SELECT doc -> 'content' ? 'kind' FROM datasets WHERE name = $1",
                                         plain.name) is False
    finally:
        await connection.close()
    assert (await datasets.GetDataset(pb.GetDatasetRequest(name=plain.name))).dataset == plain
    again = await datasets.UploadDataset(upload_messages("datasets/capitals", capitals))
    assert not again.created and again.dataset == plain
