"""A session's live alias cannot take a name the gateway already resolves: routed as the alias, it took that name's
requests away from what they asked for. Walked through the gateway: a session created with the base model's id as
its alias answered the base model's requests with its version, and aliases `<base>@<session>` and `<base>@<version>`
answered another session's live name and a version's serving name. The LoraControl alias, the base model's id and
every `<base>@...` name are refused (INVALID_ARGUMENT INVALID_ONLINE_SETTING on spec.live_alias), before anything
else is looked at; any other name goes on to the session's other checks."""

from __future__ import annotations

import grpc
import pytest

from learning.v1 import online_pb2 as ol
from tests.server.conftest import TINY, error_details
from tests.server.test_online import online


async def test_a_live_alias_that_is_one_of_the_gateways_names_is_refused(make_pg_server) -> None:
    client = await make_pg_server()
    refused = {"active": "the serving alias LoraControl routes", TINY: "the base model's own name",
               f"{TINY}@notes": "of the form <base>@...", f"{TINY}@v1.0": "of the form <base>@...",
               "elsewhere@v2": "of the form <base>@..."}
    for alias, why in refused.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await online(client).CreateOnlineSession(ol.CreateOnlineSessionRequest(
                session_id="named", spec=ol.OnlineSessionSpec(start_version="v1.0", live_alias=alias)))
        info, violations = error_details(caught.value)
        assert (caught.value.code(), info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ONLINE_SETTING")
        assert [field for field, _ in violations] == ["spec.live_alias"], violations
        assert why in (caught.value.details() or ""), (alias, caught.value.details())

    # Another name passes this check and meets the next: v1.0 was never trained here.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await online(client).CreateOnlineSession(ol.CreateOnlineSessionRequest(
            session_id="named", spec=ol.OnlineSessionSpec(start_version="v1.0", live_alias="notes-live")))
    assert (caught.value.code(), error_details(caught.value)[0].reason) == (grpc.StatusCode.NOT_FOUND,
                                                                             "ADAPTER_NOT_FOUND")
