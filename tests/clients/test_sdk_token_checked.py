"""The bearer token is checked when the connection is built. A token read from a file (a secret mounted from one,
``LEARNING_ENGINE_TOKEN=$(cat ...)`` keeps no newline but ``--from-file`` secrets do) ends with a newline: it is
stripped and authenticates. One holding a character no header value can carry is refused with ValueError, which
does not repeat the token. Before, either reached gRPC, whose cygrpc layer failed the call with its untyped
ExecuteBatchError. Any such failure of gRPC's own is now a typed LearningEngineError (Internal)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from learning_engine import AsyncClient, Client, errors
from server import access, roles
from server.settings import AuthToken
from tests.server.conftest import make_memory_server  # noqa: F401 - the fixture

TOKEN = "reader-token-0123456789abcdef"


async def test_a_token_with_a_trailing_newline_authenticates(make_memory_server) -> None:  # noqa: F811
    reader = AuthToken(name="r", role=roles.Role.READER.value, sha256=access.hash_token(TOKEN))
    port = (await make_memory_server(auth_tokens=(reader,))).app.port
    async with AsyncClient(f"127.0.0.1:{port}", token=f"{TOKEN}\n", timeout=10) as client:
        assert list((await client.list_training_jobs()).training_jobs) == []

    def blocking() -> int:
        with Client(f"127.0.0.1:{port}", token=f"  {TOKEN}\r\n", timeout=10) as sdk:
            return len(sdk.list_training_jobs().training_jobs)

    assert await asyncio.to_thread(blocking) == 0
    async with AsyncClient(f"127.0.0.1:{port}", token="\n", timeout=10) as client:  # nothing left: no token
        with pytest.raises(errors.Unauthenticated):
            await client.list_training_jobs()


@pytest.mark.parametrize("token", ["s3cr3t\nmore", "s3cr3t\x00", "s3cr3t\x7f", "s3cr3t-\u00e9"])
def test_a_token_no_header_can_carry_is_refused_when_the_client_is_made(token: str) -> None:
    with pytest.raises(ValueError, match="printable ASCII") as refused:
        AsyncClient("127.0.0.1:1", token=token)
    assert "s3cr3t" not in str(refused.value)
    loops = _loop_threads()
    with pytest.raises(ValueError, match="printable ASCII"):
        Client("127.0.0.1:1", token=token)
    assert _loop_threads() == loops  # the blocking client's event-loop thread is gone with it


def _loop_threads() -> int:
    return sum(t.name == "learning-engine-client" for t in threading.enumerate())


async def test_a_failure_of_grpcs_own_is_a_typed_error() -> None:
    async with AsyncClient("127.0.0.1:1", timeout=2) as client:
        client._metadata = (("authorization", "Bearer a\nb"),)  # past the check: what gRPC itself refuses
        with pytest.raises(errors.Internal, match="ExecuteBatchError"):
            await client.get_training_job("trainingJobs/x")  # a unary call
        with pytest.raises(errors.Internal):
            async for _ in client.watch_training_job("trainingJobs/x"):  # a server stream
                pass
