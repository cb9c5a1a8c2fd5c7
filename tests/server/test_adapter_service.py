"""AdapterService through a real in-process server, against both artifact backends
(the local directory and a real SeaweedFS S3)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from engine.registry import ServingRole
from engine.stores.serving_state import PostgresServingState
from learning.v1 import adapter_pb2 as pb
from learning.v1 import adapter_pb2_grpc as pb_grpc
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as tpb
from tests.fixtures.peft_adapters import build_peft_adapter, tar_dir, tar_gz
from tests.fixtures.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS
from tests.registry.test_archive_bomb import bomb
from tests.server.conftest import TINY, Client, error_details, spec, watch_all


@dataclass
class Adapters:
    client: Client
    stub: pb_grpc.AdapterServiceStub
    backend: str
    bucket: str = ""
    s3: SeaweedFS | None = None

    async def object_names(self, prefix: str) -> list[str]:
        if self.s3 is None:
            root = self.client.app.settings.artifacts_dir
            return sorted(str(p.relative_to(root)) for p in (root / prefix).rglob("*") if p.is_file())
        s3 = self.s3.client()
        objects = await asyncio.to_thread(lambda: list(s3.list_objects(self.bucket, prefix=prefix, recursive=True)))
        return sorted(o.object_name for o in objects)

    async def tamper(self, key: str) -> None:
        if self.s3 is None:
            path = self.client.app.settings.artifacts_dir / key
            data = bytearray(path.read_bytes())
            data[-10] ^= 0xFF
            path.write_bytes(bytes(data))
            return
        s3 = self.s3.client()
        data = bytearray(await asyncio.to_thread(lambda: s3.get_object(self.bucket, key).read()))
        data[-10] ^= 0xFF
        await asyncio.to_thread(s3.put_object, self.bucket, key, io.BytesIO(bytes(data)), len(data))


def s3_settings(endpoint: str, bucket: str) -> dict:
    return dict(artifact_backend="s3", s3_endpoint=endpoint, s3_bucket=bucket, s3_access_key=ACCESS_KEY,
                s3_secret_key=SECRET_KEY, s3_secure=False)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.full_stack)])
async def adapters(request, make_server) -> Adapters:
    if request.param == "local":
        client = await make_server()
        return Adapters(client, pb_grpc.AdapterServiceStub(client.channel), "local")
    seaweedfs, bucket = request.getfixturevalue("seaweedfs"), request.getfixturevalue("s3_bucket")
    client = await make_server(**s3_settings(seaweedfs.endpoint, bucket))
    return Adapters(client, pb_grpc.AdapterServiceStub(client.channel), "s3", bucket, seaweedfs)


@pytest.fixture(scope="module")
def peft_dirs(tiny_model_dir: Path, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("peft-grpc")
    return [build_peft_adapter(tiny_model_dir, root / f"a{seed}", seed=seed) for seed in range(4)]


async def import_archive(stub, data: bytes, *, chunk: int = 64 << 10, **metadata) -> pb.Adapter:
    def requests():
        yield pb.ImportAdapterRequest(metadata=pb.ImportAdapterMetadata(**metadata))
        for i in range(0, len(data), chunk):
            yield pb.ImportAdapterRequest(chunk=data[i:i + chunk])

    return (await stub.ImportAdapter(requests())).adapter


async def download(stub, version: str, chunk_size: int = 0) -> tuple[pb.AdapterArchiveHeader, bytes, int]:
    messages = [m async for m in stub.DownloadAdapter(pb.DownloadAdapterRequest(version=version,
                                                                                  chunk_size=chunk_size))]
    assert messages[0].HasField("header") and all(m.HasField("chunk") for m in messages[1:])
    return messages[0].header, b"".join(m.chunk for m in messages[1:]), len(messages) - 1


async def train(client: Client, parent: str = "") -> tpb.TrainingJob:
    request = tpb.CreateTrainingJobRequest(spec=spec(epochs=1))
    request.spec.parent_adapter_version = parent
    job = (await client.training.CreateTrainingJob(request)).training_job
    await watch_all(client.training, job.name)
    return (await client.training.GetTrainingJob(tpb.GetTrainingJobRequest(name=job.name))).training_job


@pytest.mark.slow
async def test_lineage_metadata_download_and_reimport(adapters: Adapters, tiny_model_dir: Path, tmp_path: Path):
    jobs = [await train(adapters.client)]
    jobs.append(await train(adapters.client, parent="v1.0"))
    jobs.append(await train(adapters.client, parent="v1.1"))
    assert [j.output_adapter_version for j in jobs] == ["v1.0", "v1.1", "v1.2"]

    chain = (await adapters.stub.GetLineage(pb.GetLineageRequest(version="v1.2"))).adapters
    assert [a.version for a in chain] == ["v1.2", "v1.1", "v1.0"]
    assert [a.parent_version for a in chain] == ["v1.1", "v1.0", ""]
    assert [a.training_job for a in chain] == [j.name for j in reversed(jobs)]
    for adapter in chain:
        assert adapter.name == f"baseModels/{TINY}/adapters/{adapter.version}"
        assert adapter.source == pb.ADAPTER_SOURCE_TRAINED
        assert adapter.dataset.example_count == 24 and len(adapter.dataset.digest) == 64
        assert adapter.lora_config.rank == 16 and len(adapter.lora_config.target_modules) == 4
        assert adapter.base_model_digest == chain[0].base_model_digest and len(adapter.base_model_digest) == 64
        assert adapter.train_loss > 0 and len(adapter.sha256) == 64 and adapter.size_bytes > 0
        assert adapter.artifact_uri.startswith("s3://" if adapters.s3 else "file://")
    assert chain[0].ewc_lambda == pytest.approx(0.1) and chain[0].ewc_gamma == 1.0 and chain[2].ewc_lambda == 0.0
    got = (await adapters.stub.GetAdapter(pb.GetAdapterRequest(base_model=TINY, version="v1.1"))).adapter
    assert got == chain[1]
    # The archive's key is its publish attempt's own (<attempt>.adapter.tar.gz), the manifest's the version's.
    archive_key, manifest_key = await adapters.object_names(f"adapters/{TINY}/v1.0/")
    assert archive_key.endswith(".adapter.tar.gz") and chain[2].artifact_uri.endswith(archive_key)
    assert manifest_key == f"adapters/{TINY}/v1.0/metadata.json"
    for job in jobs:  # and each job's metrics, stored in the same store when it ended
        assert job.metrics_artifacts.row_count == 6
        assert job.metrics_artifacts.csv_uri.startswith("s3://" if adapters.s3 else "file://")
        names = await adapters.object_names(f"training-metrics/{job.name.removeprefix('trainingJobs/')}/")
        assert [n.rsplit("/", 1)[1] for n in names] == ["loss.png", "metrics.csv"]
        assert job.metrics_artifacts.csv_uri.endswith(names[1]) and job.metrics_artifacts.png_uri.endswith(names[0])

    header, data, chunks = await download(adapters.stub, "v1.2", chunk_size=4096)
    assert chunks > 1 and header.filename == "adapter.tar.gz"
    assert header.sha256 == hashlib.sha256(data).hexdigest() == chain[0].sha256
    assert header.size_bytes == len(data) and header.adapter == chain[0]
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(tmp_path / "peft", filter="data")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        before = base(ids).logits
        after = PeftModel.from_pretrained(base, tmp_path / "peft")(ids).logits
    assert not torch.allclose(before, after)

    again = await import_archive(adapters.stub, data, sha256=header.sha256, labels={"origin": "round-trip"})
    assert again.version == "v2.0" and again.source == pb.ADAPTER_SOURCE_IMPORTED
    assert again.sha256 == header.sha256  # canonical archives: the same adapter, the same digest
    assert again.lora_config == chain[0].lora_config and not again.parent_version


async def test_list_get_and_bad_requests(adapters: Adapters, peft_dirs: list[Path]):
    for i, team in enumerate(["a", "b", "a"]):
        await import_archive(adapters.stub, tar_dir(peft_dirs[i]), labels={"team": team})
    page1 = await adapters.stub.ListAdapters(pb.ListAdaptersRequest(page_size=2))
    page2 = await adapters.stub.ListAdapters(pb.ListAdaptersRequest(page_size=2, page_token=page1.next_page_token))
    assert [a.version for a in page1.adapters] + [a.version for a in page2.adapters] == ["v3.0", "v2.0", "v1.0"]
    assert not page2.next_page_token
    team_a = await adapters.stub.ListAdapters(pb.ListAdaptersRequest(labels={"team": "a"}))
    assert [a.version for a in team_a.adapters] == ["v3.0", "v1.0"]
    assert dict(team_a.adapters[0].labels) == {"team": "a"}
    other = await adapters.stub.ListAdapters(pb.ListAdaptersRequest(base_model="other-model"))
    assert list(other.adapters) == []

    cases = [
        (adapters.stub.GetAdapter(pb.GetAdapterRequest(version="v9.9")), grpc.StatusCode.NOT_FOUND,
         "ADAPTER_NOT_FOUND"),
        (adapters.stub.GetAdapter(pb.GetAdapterRequest(version="1.0-final")), grpc.StatusCode.INVALID_ARGUMENT,
         "MALFORMED_VERSION"),
        (adapters.stub.GetAdapter(pb.GetAdapterRequest()), grpc.StatusCode.INVALID_ARGUMENT, "MISSING_VERSION"),
        (adapters.stub.DeleteAdapter(pb.DeleteAdapterRequest(version="v7.0")), grpc.StatusCode.NOT_FOUND,
         "ADAPTER_NOT_FOUND"),
        (adapters.stub.GetLineage(pb.GetLineageRequest(version="v1")), grpc.StatusCode.INVALID_ARGUMENT,
         "MALFORMED_VERSION"),
        (adapters.stub.ListAdapters(pb.ListAdaptersRequest(page_token="nope!")), grpc.StatusCode.INVALID_ARGUMENT,
         "INVALID_PAGE_TOKEN"),
        (download(adapters.stub, "v4.0"), grpc.StatusCode.NOT_FOUND, "ADAPTER_NOT_FOUND"),
    ]
    for call, code, reason in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert (err.value.code(), error_details(err.value)[0].reason) == (code, reason)


def _reshaped(src: Path, dest: Path) -> Path:
    dest.mkdir()
    (dest / "adapter_config.json").write_bytes((src / "adapter_config.json").read_bytes())
    tensors = load_file(src / "adapter_model.safetensors")
    name = sorted(k for k in tensors if "q_proj.lora_A" in k)[0]
    tensors[name] = tensors[name][:, :32].contiguous()  # as if trained for a base model of hidden size 32
    save_file(tensors, dest / "adapter_model.safetensors")
    return dest


async def test_import_validates_before_registering(make_server, peft_dirs: list[Path], tmp_path: Path):
    client = await make_server()
    stub = pb_grpc.AdapterServiceStub(client.channel)
    good = peft_dirs[0]
    config = json.loads((good / "adapter_config.json").read_text())
    weights = (good / "adapter_model.safetensors").read_bytes()

    def with_config(**changes) -> bytes:
        return tar_gz({"adapter_config.json": json.dumps({**config, **changes}).encode(),
                       "adapter_model.safetensors": weights})

    bad = [
        (tar_gz({"adapter_config.json": json.dumps(config).encode(), "adapter_model.bin": b"\x80\x04pickle"}),
         {}, "PICKLED_WEIGHTS"),
        (tar_dir(_reshaped(good, tmp_path / "reshaped")), {}, "ADAPTER_SHAPE_MISMATCH"),
        (with_config(r=8), {}, "ADAPTER_SHAPE_MISMATCH"),
        (with_config(target_modules=["q_proj", "v_proj", "k_proj"]), {}, None),  # extra target is allowed
        (with_config(target_modules=["q_proj", "v_proj", "gate_proj"]), {}, "LORA_NOT_SERVABLE"),  # MAX loads no MLP
        (with_config(peft_type="PREFIX_TUNING"), {}, "INVALID_ADAPTER_CONFIG"),
        (tar_gz({"adapter_config.json": b"{not json", "adapter_model.safetensors": weights}), {},
         "MALFORMED_ADAPTER_CONFIG"),
        (tar_gz({"adapter_config.json": json.dumps(config).encode()}), {}, "ADAPTER_FILES_MISSING"),
        (tar_gz({"../adapter_config.json": b"{}", "adapter_model.safetensors": weights}), {}, "UNSAFE_ARCHIVE_MEMBER"),
        (b"this is not an archive", {}, "MALFORMED_ARCHIVE"),
        (bomb(declared=1 << 40), {}, "ARCHIVE_TOO_LARGE"),  # about 20 KiB uploaded, 1 TiB declared
        (tar_dir(good), {"sha256": "0" * 64}, "SHA256_MISMATCH"),
        (tar_dir(good), {"parent_version": "v5.0"}, "ADAPTER_NOT_FOUND"),
        (tar_dir(good), {"base_model": "no-such-model"}, "UNKNOWN_BASE_MODEL"),
    ]
    accepted = []
    for data, metadata, reason in bad:
        if reason is None:
            accepted.append((await import_archive(stub, data, **metadata)).version)
            continue
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await import_archive(stub, data, **metadata)
        assert error_details(err.value)[0].reason == reason, err.value.details()
        expected = grpc.StatusCode.NOT_FOUND if reason == "ADAPTER_NOT_FOUND" else grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.code() == expected
    assert accepted == ["v1.0"]
    scratch = client.app.settings.work_dir
    assert [p for p in scratch.rglob("*") if p.is_file() and "serving-adapters" not in p.parts] == []

    async def chunk_first():
        yield pb.ImportAdapterRequest(chunk=b"x")

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ImportAdapter(chunk_first())
    assert error_details(err.value)[0].reason == "METADATA_FIRST"

    # A folder inside the archive and a README are fine; a request_id makes the import idempotent.
    first = await import_archive(stub, tar_dir(peft_dirs[1], "my-adapter/"), request_id="imp-1",
                                 parent_version="v1.0")
    second = await import_archive(stub, tar_dir(peft_dirs[1], "my-adapter/"), request_id="imp-1",
                                  parent_version="v1.0")
    # v1.0 targets q/v/gate, this one q/v: a LoRA shape change starts a new major line.
    assert first.version == second.version == "v2.0" and first.request_id == "imp-1"
    assert first.parent_version == "v1.0"
    # The same request_id with another adapter, or other labels, is not a retry: refused, nothing registered.
    for data, metadata in ((tar_dir(peft_dirs[2]), {"parent_version": "v1.0"}),
                           (tar_dir(peft_dirs[1]), {"parent_version": "v1.0", "labels": {"team": "x"}})):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await import_archive(stub, data, request_id="imp-1", **metadata)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS, err.value.details()
        info, _ = error_details(err.value)
        assert info.reason == "REQUEST_ID_REUSED" and info.metadata["version"] == "v2.0", err.value.details()
    # a retry is answered from what it sends, whatever changed since: its parent deleted
    await stub.DeleteAdapter(pb.DeleteAdapterRequest(version="v1.0"))
    again = await import_archive(stub, tar_dir(peft_dirs[1], "my-adapter/"), request_id="imp-1", parent_version="v1.0")
    assert again.version == "v2.0"
    child = await import_archive(stub, tar_dir(peft_dirs[2]), parent_version="v2.0")
    assert child.version == "v2.1"
    listed = (await stub.ListAdapters(pb.ListAdaptersRequest())).adapters
    assert [a.version for a in listed] == ["v2.1", "v2.0"]


async def test_tampered_artifact_is_data_loss_and_never_loaded(adapters: Adapters, peft_dirs: list[Path]):
    adapter = await import_archive(adapters.stub, tar_dir(peft_dirs[0]))
    [archive_key] = [k for k in await adapters.object_names(f"adapters/{TINY}/{adapter.version}/")
                     if k.endswith(".adapter.tar.gz")]
    await adapters.tamper(archive_key)
    stream = adapters.stub.DownloadAdapter(pb.DownloadAdapterRequest(version=adapter.version))
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for message in stream:
            received.append(message)
    assert received == []  # not even the header went out
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    info = error_details(err.value)[0]
    assert info.reason == "ARTIFACT_CHECKSUM_MISMATCH" and info.metadata["expected_sha256"] == adapter.sha256
    job = await train(adapters.client, parent=adapter.version)  # a warm start from it must not load it
    assert job.state == common.JOB_STATE_FAILED
    assert job.error.code == grpc.StatusCode.DATA_LOSS.value[0]


async def test_delete_protection_retention_and_tombstones(adapters: Adapters, peft_dirs: list[Path]):
    parent = ""
    for path in peft_dirs:
        parent = (await import_archive(adapters.stub, tar_dir(path), parent_version=parent)).version
    assert parent == "v1.3"
    serving = PostgresServingState(adapters.client.app.owned.pool)  # what LoraControl writes
    await serving.set_version(TINY, ServingRole.ACTIVE, "v1.3")
    await serving.set_version(TINY, ServingRole.KNOWN_GOOD, "v1.0")
    for version in ("v1.3", "v1.0"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await adapters.stub.DeleteAdapter(pb.DeleteAdapterRequest(version=version))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_details(err.value)[0].reason == "ADAPTER_PROTECTED"

    await adapters.stub.DeleteAdapter(pb.DeleteAdapterRequest(base_model=TINY, version="v1.1"))
    assert await adapters.object_names(f"adapters/{TINY}/v1.1/") == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await adapters.stub.GetAdapter(pb.GetAdapterRequest(version="v1.1"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.aio.AioRpcError) as err:  # no keep and no configured retention
        await adapters.stub.PruneAdapters(pb.PruneAdaptersRequest())
    assert error_details(err.value)[0].reason == "RETENTION_NOT_CONFIGURED"
    dry = await adapters.stub.PruneAdapters(pb.PruneAdaptersRequest(keep=1, dry_run=True))
    assert list(dry.deleted_versions) == ["v1.2"] and list(dry.kept_versions) == ["v1.3", "v1.0"]
    assert len((await adapters.stub.ListAdapters(pb.ListAdaptersRequest())).adapters) == 3
    pruned = await adapters.stub.PruneAdapters(pb.PruneAdaptersRequest(keep=1))
    assert list(pruned.deleted_versions) == ["v1.2"]
    listed = (await adapters.stub.ListAdapters(pb.ListAdaptersRequest())).adapters
    assert [a.version for a in listed] == ["v1.3", "v1.0"]

    chain = (await adapters.stub.GetLineage(pb.GetLineageRequest(version="v1.3"))).adapters
    assert [a.version for a in chain] == ["v1.3", "v1.2", "v1.1", "v1.0"]
    assert [a.HasField("delete_time") for a in chain] == [False, True, True, False]


@pytest.mark.slow
async def test_s3_outage_fails_the_publish_cleanly_and_a_retry_succeeds(make_server, tmp_path: Path):
    weed = SeaweedFS(tmp_path / "weed").start()
    try:
        client = await make_server(**s3_settings(weed.endpoint, "le-outage"))
        stub = pb_grpc.AdapterServiceStub(client.channel)
        request = tpb.CreateTrainingJobRequest(spec=spec(epochs=30))
        job = (await client.training.CreateTrainingJob(request)).training_job
        async for message in client.training.WatchTrainingJob(tpb.WatchTrainingJobRequest(name=job.name)):
            if message.HasField("event") and message.event.HasField("step_metrics"):
                weed.kill()  # the store goes away while the job trains; publishing comes after
                break
        await watch_all(client.training, job.name)
        failed = (await client.training.GetTrainingJob(tpb.GetTrainingJobRequest(name=job.name))).training_job
        assert failed.state == common.JOB_STATE_FAILED and not failed.output_adapter_version
        assert failed.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert "cannot be reached" in failed.error.message

        # Listing is served from the PostgreSQL index: it answers during the outage, and shows nothing.
        assert list((await stub.ListAdapters(pb.ListAdaptersRequest())).adapters) == []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetAdapter(pb.GetAdapterRequest(version="v1.0"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        weed.start()
        s3 = weed.client()
        names = await asyncio.to_thread(lambda: [o.object_name for o in s3.list_objects("le-outage", recursive=True)])
        assert not [n for n in names if n.endswith("metadata.json")]
        retry = await train(client)
        assert retry.state == common.JOB_STATE_SUCCEEDED and retry.output_adapter_version == "v1.0"

        weed.kill()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await download(stub, "v1.0")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_details(err.value)[0].reason == "ARTIFACT_STORE_UNAVAILABLE"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.DeleteAdapter(pb.DeleteAdapterRequest(version="v1.0"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        listed = (await stub.ListAdapters(pb.ListAdaptersRequest())).adapters
        assert [a.version for a in listed] == ["v1.0"]  # the failed delete changed nothing
    finally:
        weed.kill()
