"""What an online session's spec promises: `publish_every: 0` publishes only on PublishOnlineSession (an explicit 0
was read as unset, the default 100); an `update_every` above `buffer_size` is refused (the session holds at most
`buffer_size` pending examples, so no update would ever be due); and CreateOnlineSession retried with its
request_id (and the session_id it chose) returns the session it made, as the proto promises, not ALREADY_EXISTS."""

from __future__ import annotations

import grpc
import pytest

from engine.errors import InvalidArgument
from learning.v1 import online_pb2 as ol
from server.online_convert import OnlineDefaults, spec_from_pb
from tests.server.lora_helpers import train
from tests.server.test_online import FAST, online

DEFAULTS = OnlineDefaults(base_model="tiny-llama", learning_rate=1e-4, ewc_lambda=0.3, replay_fraction=0.5,
                          max_seq_length=512)


def test_publish_every_zero_means_only_on_request_and_unset_is_the_default() -> None:
    assert spec_from_pb(ol.OnlineSessionSpec(publish_every=0), DEFAULTS).publish_every == 0
    assert spec_from_pb(ol.OnlineSessionSpec(), DEFAULTS).publish_every == 100
    assert spec_from_pb(ol.OnlineSessionSpec(publish_every=7), DEFAULTS).publish_every == 7


@pytest.mark.parametrize(("buffer_size", "update_every"), [(4, 5), (0, 1001)])  # 0: the default buffer, 1000
def test_an_update_every_above_the_buffer_is_refused(buffer_size: int, update_every: int) -> None:
    with pytest.raises(InvalidArgument) as err:
        spec_from_pb(ol.OnlineSessionSpec(buffer_size=buffer_size, update_every=update_every), DEFAULTS)
    assert [v.field for v in err.value.violations] == ["spec.update_every"]
    assert spec_from_pb(ol.OnlineSessionSpec(buffer_size=4, update_every=4), DEFAULTS).update_every == 4


@pytest.mark.parametrize("factor", [0.5, 1.0])
def test_a_loss_spike_factor_that_would_take_any_loss_for_a_spike_is_refused(factor: float) -> None:
    """At 0.5 a session disabled its learning on a loss below the median ("0.8x the median (limit 0.5x)")."""
    with pytest.raises(InvalidArgument) as err:
        spec_from_pb(ol.OnlineSessionSpec(loss_spike_factor=factor), DEFAULTS)
    assert [v.field for v in err.value.violations] == ["spec.loss_spike_factor"]
    assert spec_from_pb(ol.OnlineSessionSpec(loss_spike_factor=0), DEFAULTS).loss_spike_factor == 0  # off
    assert spec_from_pb(ol.OnlineSessionSpec(loss_spike_factor=1.5), DEFAULTS).loss_spike_factor == 1.5


async def test_a_retried_create_with_a_chosen_session_id_returns_the_session(make_pg_server) -> None:
    client = await make_pg_server(**FAST)
    start = await train(client)
    request = ol.CreateOnlineSessionRequest(session_id="notes", request_id="create-notes-1",
                                            spec=ol.OnlineSessionSpec(start_version=start))
    first = (await online(client).CreateOnlineSession(request)).session
    try:
        again = (await online(client).CreateOnlineSession(request)).session  # a retry after a lost response
        assert again.name == first.name == "onlineSessions/notes"
        other = ol.CreateOnlineSessionRequest(session_id="notes", request_id="create-notes-2",
                                              spec=ol.OnlineSessionSpec(start_version=start))
        with pytest.raises(grpc.aio.AioRpcError) as err:  # another request for the same id is still refused
            await online(client).CreateOnlineSession(other)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    finally:
        await online(client).StopOnlineSession(ol.StopOnlineSessionRequest(name=first.name))
