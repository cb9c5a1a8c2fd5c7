"""Hostile input is INVALID_ARGUMENT, never INTERNAL or UNKNOWN: NUL characters in any string, Timestamps out of
range, bytes that are no message (unary and client streams), and errors that would echo unbounded input."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import timestamp_pb2

from engine import errors as e
from learning.v1 import adapter_pb2, feedback_pb2, fisher_pb2, lora_control_pb2, training_pb2
from server.errors import MAX_MESSAGE_BYTES, MAX_STATUS_BYTES, status_proto
from server.requests import nul_field
from tests.server.conftest import error_details, spec

F = "/learning.v1.FeedbackService/"


def _event(**overrides) -> feedback_pb2.FeedbackEvent:
    fields = dict(client_event_id="e-1", kind=feedback_pb2.FEEDBACK_KIND_THUMBS_UP, user_id="u-1",
                  interaction=feedback_pb2.Interaction(prompt="q", response="a"))
    fields.update(overrides)
    return feedback_pb2.FeedbackEvent(**fields)


def _submit(*events) -> feedback_pb2.SubmitFeedbackRequest:
    return feedback_pb2.SubmitFeedbackRequest(events=list(events))


def _with_nul_path(path: str) -> training_pb2.CreateTrainingJobRequest:
    return training_pb2.CreateTrainingJobRequest(spec=spec(path))


# (method path, request, the field the error must name)
NUL_CASES = [
    (F + "SubmitFeedback", _submit(_event(), _event(client_event_id="e-2", interaction=feedback_pb2.Interaction(
        prompt="what\x00", response="a"))), "events[1].interaction.prompt"),
    (F + "SubmitFeedback", _submit(_event(interaction=feedback_pb2.Interaction(prompt="q", response="\x00"))),
     "events[0].interaction.response"),
    (F + "SubmitFeedback", _submit(_event(labels={"app": "a\x00b"})), "events[0].labels['app']"),
    (F + "SubmitFeedback", _submit(_event(labels={"a\x00": "b"})), "events[0].labels['a\\x00']"),
    (F + "GetFeedbackStats", feedback_pb2.GetFeedbackStatsRequest(adapter_version="v1.0\x00"), "adapter_version"),
    (F + "GetFeedbackStats", feedback_pb2.GetFeedbackStatsRequest(tenant_id="\x00"), "tenant_id"),
    ("/learning.v1.AdapterService/ListAdapters", adapter_pb2.ListAdaptersRequest(base_model="tiny\x00"),
     "base_model"),
    ("/learning.v1.TrainingService/CreateTrainingJob", _with_nul_path("capitals.jsonl\x00.png"), "spec.jsonl.path"),
    ("/learning.v1.FisherService/ListFisherSnapshots",
     fisher_pb2.ListFisherSnapshotsRequest(adapter_version="v1\x00"), "adapter_version"),
    ("/learning.v1.LoraControlService/EvaluateAdapter",
     lora_control_pb2.EvaluateAdapterRequest(version="v1.0", suite_path="golden\x00.jsonl"), "suite_path"),
]


async def test_a_nul_character_in_any_string_is_refused_naming_the_field(client):
    for method, request_message, field in NUL_CASES:
        call = client.channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request_message)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, err.value.details())
        info, violations = error_details(err.value)
        assert info.reason == "INVALID_CHARACTER", method
        assert [f for f, _ in violations] == [field]


async def test_a_nul_in_a_later_stream_message_fails_the_stream_after_the_earlier_ones_are_stored(client):
    stub = client.channel.stream_unary(F + "StreamFeedback", request_serializer=lambda m: m.SerializeToString())

    async def messages():
        yield feedback_pb2.StreamFeedbackRequest(events=[_event()])
        yield feedback_pb2.StreamFeedbackRequest(events=[_event(client_event_id="e-2", correction="x\x00")])

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(messages())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = error_details(err.value)
    assert info.reason == "INVALID_CHARACTER" and violations[0][0] == "events[0].correction"
    assert info.metadata["committed_messages"] == "1"


async def test_a_timestamp_out_of_range_is_invalid_argument(client):
    stats = client.channel.unary_unary(F + "GetFeedbackStats", request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=feedback_pb2.GetFeedbackStatsResponse.FromString)
    submit = client.channel.unary_unary(F + "SubmitFeedback", request_serializer=lambda m: m.SerializeToString())
    for seconds, nanos in ((10**12, 0), (-(10**12), 0), (253_402_300_800, 0), (0, -1)):
        time = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stats(feedback_pb2.GetFeedbackStatsRequest(end_time=time))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info, violations = error_details(err.value)
        assert info.reason == "INVALID_TIME_WINDOW" and [f for f, _ in violations] == ["end_time"]

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await submit(_submit(_event(), _event(client_event_id="e-2", time=time)))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info, violations = error_details(err.value)
        assert info.reason == "INVALID_FEEDBACK" and [f for f, _ in violations] == ["events[1].time"]
    # The earliest end time still has a window (clipped at the start of time).
    response = await stats(feedback_pb2.GetFeedbackStatsRequest(
        end_time=timestamp_pb2.Timestamp(seconds=-62_135_596_800 + 3600)))
    assert response.total == 0


async def test_bytes_that_are_no_message_are_invalid_argument_on_unary_and_client_streams(client):
    for garbage in (b"\xff\xff\xff", b"\x0a\x03\xff\xfe\xfd", b"\x0a\xff\xff\xff\x0f" + b"x" * 8):
        calls = [
            client.channel.unary_unary("/learning.v1.TrainingService/GetTrainingJob")(garbage),
            client.channel.unary_unary(F + "GetFeedbackStats")(garbage),
            client.channel.stream_unary(F + "StreamFeedback")(iter([garbage])),
            client.channel.stream_unary("/learning.v1.AdapterService/ImportAdapter")(iter([garbage])),
            client.channel.unary_stream("/learning.v1.TrainingService/WatchTrainingJob")(garbage),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call if not hasattr(call, "__aiter__") else [m async for m in call]
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            info, _ = error_details(err.value)
            assert info.reason == "MALFORMED_REQUEST"
            assert "DecodeError" not in err.value.details() and "Unexpected" not in err.value.details()


async def test_errors_echoing_huge_input_stay_small(client):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.training.GetTrainingJob(training_pb2.GetTrainingJobRequest(name="x" * 70_000))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(err.value.details().encode()) <= MAX_MESSAGE_BYTES
    trailers = sum(len(k) + len(v) for k, v in err.value.trailing_metadata())
    assert trailers < 12 * 1024
    error_details(err.value)


def test_a_status_stays_bounded_however_many_and_long_the_violations():
    violations = tuple(e.FieldViolation("f" * 5000 + str(i), "d" * 5000) for i in range(10_000))
    status = status_proto(grpc.StatusCode.INVALID_ARGUMENT, "m" * 100_000, reason="X",
                          metadata={"k": "v" * 100_000}, violations=violations)
    assert status.ByteSize() <= MAX_STATUS_BYTES
    assert len(status.message.encode()) <= MAX_MESSAGE_BYTES
    assert "more characters" in status.message


def test_nul_field_names_nested_repeated_and_map_fields():
    request = feedback_pb2.SubmitFeedbackRequest(events=[_event(), _event()])
    assert nul_field(request) is None
    request.events[1].interaction.messages.add(role="user", content="hi\x00")
    assert nul_field(request) == "events[1].interaction.messages[0].content"


def test_nul_field_follows_recursive_types():
    from google.protobuf import struct_pb2

    value = struct_pb2.Struct()
    value.update({"a": [1, {"b": "ok"}]})
    assert nul_field(value) is None
    value.update({"a": [1, {"b": "not\x00ok"}]})
    assert nul_field(value) is not None and nul_field(value).startswith("fields['a'].list_value.values[1].")
