"""learning_engine_feedback_ingested_total{outcome} counts each committed batch's events where the batch commits:
those a StreamFeedback stored before it failed (its ErrorInfo acknowledges them as stored) as well, prepared here
or in worker processes, so that resent they count as duplicates only; and the events an erasure refuses as
forgotten."""

from __future__ import annotations

import grpc
import pytest

from engine import telemetry
from learning.v1 import feedback_pb2 as fb
from tests.server.conftest import error_details
from tests.server.test_feedback_service import ev, feedback


def _counted() -> dict[str, float]:
    return {outcome: telemetry.REGISTRY.get_sample_value("learning_engine_feedback_ingested_total",
                                                         {"outcome": outcome}) or 0.0
            for outcome in ("stored", "duplicate", "forgotten")}


def _grew(before: dict[str, float]) -> dict[str, float]:
    return {outcome: n - before[outcome] for outcome, n in _counted().items() if n != before[outcome]}


@pytest.mark.parametrize("processes", [0, 2], ids=["in-process", "worker-processes"])
async def test_events_a_failed_stream_stored_are_counted_once(make_server, processes: int) -> None:
    stub = feedback(await make_server(feedback_ingest_processes=processes))

    async def messages():
        yield fb.StreamFeedbackRequest(events=[ev(f"ok-{i}") for i in range(10)])
        yield fb.StreamFeedbackRequest(events=[ev("bad", fb.FEEDBACK_KIND_UNSPECIFIED)])

    before = _counted()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.StreamFeedback(messages())
    info, _ = error_details(err.value)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.metadata["stored"] == "10"  # the first message's 10 events are stored
    assert (await stub.GetFeedbackStats(fb.GetFeedbackStatsRequest())).total == 10
    assert _grew(before) == {"stored": 10}

    async def again():  # the client resends everything, as the proto tells it to: duplicates now
        yield fb.StreamFeedbackRequest(events=[ev(f"ok-{i}") for i in range(10)])

    before = _counted()
    done = await stub.StreamFeedback(again())
    assert (done.stored, done.duplicates) == (0, 10)
    assert _grew(before) == {"duplicate": 10}


async def test_each_outcome_of_a_submit_is_counted(client) -> None:
    stub = feedback(client)
    events = [ev("a", user="ann"), ev("b", user="bob")]
    before = _counted()
    await stub.SubmitFeedback(fb.SubmitFeedbackRequest(events=events))
    assert _grew(before) == {"stored": 2}

    await stub.DeleteUserFeedback(fb.DeleteUserFeedbackRequest(user_id="ann"))
    before = _counted()
    resent = await stub.SubmitFeedback(fb.SubmitFeedbackRequest(events=events))
    assert (resent.stored, resent.duplicates, resent.forgotten) == (0, 1, 1)
    assert _grew(before) == {"duplicate": 1, "forgotten": 1}
