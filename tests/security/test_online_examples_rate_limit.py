"""The examples an application sends to online sessions (AddExamples, StreamExamples: the ``feedback`` role's, as
its feedback is) spend the same per-token budget as its feedback events, one per example, a stream's messages each as
it arrives: a token over its limit gets RESOURCE_EXHAUSTED (RATE_LIMITED) as it does for feedback, and one
application token cannot push examples without bound."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from learning.v1 import common_pb2 as common
from learning.v1 import feedback_pb2 as fb
from learning.v1 import feedback_pb2_grpc as fb_grpc
from learning.v1 import online_pb2 as ol
from learning.v1 import online_pb2_grpc as ol_grpc
from server.roles import Role
from tests.security.test_access import AUTH, TOKENS
from tests.server.conftest import error_details
from tests.server.lora_helpers import train
from tests.server.test_online import FAST, until

APP = (("authorization", f"Bearer {TOKENS[Role.FEEDBACK]}"),)  # an application's token
OPERATOR = (("authorization", f"Bearer {TOKENS[Role.OPERATOR]}"),)


def examples(prefix: str, n: int) -> list[ol.OnlineExample]:
    return [ol.OnlineExample(client_example_id=f"{prefix}-{i}", prompt=f"Who founded guild {prefix}{i}?",
                             target=f"Founder {prefix}{i}.") for i in range(n)]


def rate_limited(err: grpc.aio.AioRpcError) -> None:
    """The refusal feedback over its limit gets."""
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
    info, _ = error_details(err)
    assert info.reason == "RATE_LIMITED" and info.metadata["bucket"] == "feedback", info
    assert float(info.metadata["retry_after_seconds"]) > 0


@contextlib.asynccontextmanager
async def limited(make_server) -> AsyncIterator[tuple[ol_grpc.OnlineLearningServiceStub, str, Any]]:
    """A server with auth where each token may send ten feedback events (or examples) at once, next to no refill,
    and a running online session to send them to (its start version trained by a server without auth before it,
    where training needs no token)."""
    setup = await make_server(**FAST)
    version = await train(setup)
    await setup.app.stop(5)
    server = await make_server(**FAST, auth_tokens=AUTH, rate_limit_feedback_per_second=0.001,
                               rate_limit_feedback_burst=10)
    online = ol_grpc.OnlineLearningServiceStub(server.channel)
    made = (await online.CreateOnlineSession(ol.CreateOnlineSessionRequest(
        session_id="limited", spec=ol.OnlineSessionSpec(start_version=version, update_every=1000, publish_every=0,
                                                        max_seq_length=64, ewc_lambda=0, replay_fraction=0)),
        metadata=OPERATOR)).session
    try:
        await until(lambda: _in(online, made.name, common.JOB_STATE_RUNNING))
        yield online, made.name, server
    finally:  # a server stopped with its session's worker still starting takes long to stop
        await online.StopOnlineSession(ol.StopOnlineSessionRequest(name=made.name), metadata=OPERATOR)
        await until(lambda: _in(online, made.name, common.JOB_STATE_CANCELLED))
        await server.app.stop(5)


async def _in(online: ol_grpc.OnlineLearningServiceStub, name: str, state: int) -> bool:
    found = await online.GetOnlineSession(ol.GetOnlineSessionRequest(name=name), metadata=OPERATOR)
    return bool(found.session.state == state)


async def test_add_examples_over_the_tokens_limit_is_refused_as_feedback_is(make_server):
    async with limited(make_server) as (online, name, server):
        added = await online.AddExamples(ol.AddExamplesRequest(name=name, examples=examples("a", 7)), metadata=APP)
        assert added.accepted == 7  # seven of the ten spent

        with pytest.raises(grpc.aio.AioRpcError) as err:  # four more than the three left
            await online.AddExamples(ol.AddExamplesRequest(name=name, examples=examples("b", 4)), metadata=APP)
        rate_limited(err.value)

        # The same budget as the token's feedback events: three left, four asked for.
        events = [fb.FeedbackEvent(client_event_id=f"e{i}", kind=fb.FEEDBACK_KIND_THUMBS_UP, user_id="u",
                                   interaction=fb.Interaction(prompt="q", response="a")) for i in range(4)]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fb_grpc.FeedbackServiceStub(server.channel).SubmitFeedback(
                fb.SubmitFeedbackRequest(events=events), metadata=APP)
        rate_limited(err.value)

        # Another token has a budget of its own; nothing refused was stored.
        other = await online.AddExamples(ol.AddExamplesRequest(name=name, examples=examples("c", 4)),
                                         metadata=OPERATOR)
        assert other.accepted == 4 and other.last_sequence - added.last_sequence == 4


@pytest.mark.slow
async def test_a_stream_message_over_the_tokens_limit_ends_the_stream_as_feedback_is(make_server):
    async with limited(make_server) as (online, name, _):

        async def messages():
            yield ol.StreamExamplesRequest(name=name, examples=examples("a", 8))  # eight of the ten
            yield ol.StreamExamplesRequest(examples=examples("b", 3))  # over the budget as it arrives

        answers = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for answer in online.StreamExamples(messages(), metadata=APP):
                answers.append(answer)
        rate_limited(err.value)
        assert answers, "the stream was refused before its first message was taken"

        other = await online.AddExamples(ol.AddExamplesRequest(name=name, examples=examples("c", 1)),
                                         metadata=OPERATOR)
        assert other.accepted == 1 and other.last_sequence == 8 + 1, other  # the first message's only
