"""The Python SDK against a live server: typed errors and a watch that survives a dropped connection."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from learning.v1 import common_pb2 as common
from learning.v1 import error_reason_pb2 as reasons
from learning_engine import AsyncClient, Client, errors
from tests.fixtures.tcp_proxy import TcpProxy
from tests.server.conftest import spec


async def test_watch_resumes_after_the_connection_drops(client):
    proxy = await TcpProxy(client.app.port).start()
    sdk = AsyncClient(f"127.0.0.1:{proxy.port}", reconnect_delay=0.1)
    try:
        job = await sdk.create_training_job(spec(epochs=6))
        sequences, snapshots, cuts = [], 0, 0
        async for message in sdk.watch_training_job(job.name):
            if message.HasField("snapshot"):
                snapshots += 1
                continue
            sequences.append(message.event.sequence)
            # Drop the connection twice while the job is training.
            if message.event.HasField("step_metrics") and message.event.step_metrics.step in (3, 20):
                cuts += proxy.cut()
        assert cuts >= 2, "the proxy had no connection to cut"
        assert snapshots == 3, "each (re)connection starts with a snapshot"
        assert proxy.connections >= 3
        final = await sdk.get_training_job(job.name)
        assert final.state == common.JOB_STATE_SUCCEEDED
        assert sequences == list(range(1, final.last_sequence + 1)), (
            "events lost or repeated across reconnects"
        )
    finally:
        await sdk.close()
        await proxy.close()


async def test_typed_errors_come_from_error_info(client):
    async with AsyncClient(f"127.0.0.1:{client.app.port}") as sdk:
        with pytest.raises(errors.NotFound) as err:
            await sdk.get_training_job("trainingJobs/0123456789abcdef0123456789abcdef")
        assert err.value.reason == "JOB_NOT_FOUND" and err.value.exit_code == 5
        assert err.value.error_reason == reasons.ERROR_REASON_JOB_NOT_FOUND
        with pytest.raises(errors.InvalidArgument) as err:
            await sdk.create_training_job(spec("missing.jsonl"))
        assert err.value.reason == "DATASET_NOT_FOUND"
        assert [v.field for v in err.value.violations] == ["spec.jsonl.path"]
        first = await sdk.create_training_job(spec(epochs=1), request_id="req-1")
        with pytest.raises(errors.RequestIdReused) as err:
            await sdk.create_training_job(spec(epochs=2), request_id="req-1")
        assert isinstance(err.value, errors.AlreadyExists) and err.value.metadata["job"] == first.name
        unknown = client.channel.unary_unary("/learning.v1.TrainingService/NoSuchMethod")
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await unknown(b"")
        converted = errors.from_rpc_error(raw.value)
        assert isinstance(converted, errors.Unimplemented) and converted.exit_code == 12
        async for _ in sdk.watch_training_job(first.name):
            pass


def test_error_table_prefers_reason_then_code():
    assert errors.error_class(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED") is errors.RateLimited
    limited = reasons.ERROR_REASON_RATE_LIMITED
    assert errors.error_class(grpc.StatusCode.RESOURCE_EXHAUSTED, limited) is errors.RateLimited
    assert errors.error_class(grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED") is errors.RequestIdReused
    assert errors.error_class(grpc.StatusCode.RESOURCE_EXHAUSTED, "") is errors.ResourceExhausted
    assert errors.error_class(grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED") is errors.PermissionDenied
    assert errors.error_class(grpc.StatusCode.UNKNOWN, "") is errors.LearningEngineError


def test_reasons_come_from_the_catalogue():
    assert errors.reason_value("SHA256_MISMATCH") == reasons.ERROR_REASON_SHA256_MISMATCH
    assert errors.reason_name(reasons.ERROR_REASON_SHA256_MISMATCH) == "SHA256_MISMATCH"
    newer = errors.NotFound(grpc.StatusCode.NOT_FOUND, "from a newer server", reason="SOMETHING_NEW")
    assert newer.reason == "SOMETHING_NEW" and newer.error_reason == reasons.ERROR_REASON_UNSPECIFIED
    typed = errors.DataLoss(grpc.StatusCode.DATA_LOSS, "bad download", reason=reasons.ERROR_REASON_NO_HEADER)
    assert typed.reason == "NO_HEADER" and typed.error_reason == reasons.ERROR_REASON_NO_HEADER


async def test_sync_client_watches_to_the_end(client):
    port = client.app.port

    def use_sync() -> tuple[str, list[int], list[int]]:
        with Client(f"127.0.0.1:{port}") as sdk:
            assert sdk.health() == "SERVING"
            job = sdk.create_training_job(spec(epochs=1))
            events = [m.event.sequence for m in sdk.watch_training_job(job.name) if m.HasField("event")]
            steps = [r.step for r in sdk.get_training_metrics(job.name).rows]
            return sdk.get_training_job(job.name).state, events, steps

    state, events, steps = await asyncio.to_thread(use_sync)
    assert state == common.JOB_STATE_SUCCEEDED
    assert events == list(range(1, len(events) + 1)) and len(events) > 5
    assert steps == list(range(1, 7))  # GetTrainingMetrics, blocking


async def test_sync_client_runs_a_kto_online_session(make_server):
    from learning.v1 import online_pb2 as ol
    from tests.server.lora_helpers import train

    server = await make_server(online_poll_seconds=0.05, online_follow_seconds=0.1, online_max_update_share=1.0)
    start = await train(server)
    port = server.app.port

    def use_sync():
        with Client(f"127.0.0.1:{port}") as sdk:
            with pytest.raises(errors.InvalidArgument) as err:
                sdk.create_online_session(ol.OnlineSessionSpec(start_version=start, loss=5))
            assert err.value.reason == "INVALID_ONLINE_SETTING" and [v.field for v in err.value.violations] == [
                "spec.loss"]
            made = sdk.create_online_session(ol.OnlineSessionSpec(
                start_version=start, loss=ol.ONLINE_LOSS_KTO, update_every=2, publish_every=0, max_seq_length=64,
                ewc_lambda=0, replay_fraction=0), session_id="votes")
            added = sdk.add_examples(made.name, [
                ol.OnlineExample(prompt="Capital of Veloria?", target="Marnesse.", desirable=True),
                ol.OnlineExample(prompt="Capital of Veloria?", target="Paris.", desirable=False),
                ol.OnlineExample(prompt="Capital of Quorvia?", target="Tal Ammeth.")])
            answers = list(sdk.stream_examples(made.name, [[
                ol.OnlineExample(prompt="Capital of Quorvia?", target="Tal Ammeth.", desirable=True),
                ol.OnlineExample(prompt="Capital of Quorvia?", target="Rome.", desirable=False)]]))
            stopped = sdk.stop_online_session(made.name)
            return made, added, answers, stopped

    made, added, answers, stopped = await asyncio.to_thread(use_sync)
    assert made.spec.loss == ol.ONLINE_LOSS_KTO
    assert (added.accepted, added.refused) == (2, 1) and added.refusals[0].startswith("examples[2]: no desirable")
    assert answers[-1].accepted == 2 and answers[-1].stats.total_updates == 2, answers[-1]
    assert stopped.spec.loss == ol.ONLINE_LOSS_KTO
