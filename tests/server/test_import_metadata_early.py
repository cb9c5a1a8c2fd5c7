"""ImportAdapter checks its metadata message (request_id, sha256, labels) as soon as it arrives, as UploadDataset
does: a malformed first message is refused while the archive (up to 4 GiB) is still being sent, not after it."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from learning.v1 import adapter_pb2 as pb
from learning.v1 import adapter_pb2_grpc as pb_grpc
from tests.server.conftest import error_details


async def _refused_while_sent(client, metadata: pb.ImportAdapterMetadata) -> grpc.aio.AioRpcError:
    """The error of an import whose first message is ``metadata`` and whose archive is still being sent."""
    stub = pb_grpc.AdapterServiceStub(client.channel)
    sent = 0

    async def requests():
        nonlocal sent
        yield pb.ImportAdapterRequest(metadata=metadata)
        for _ in range(2):  # the start of a large archive
            yield pb.ImportAdapterRequest(chunk=b"\0" * (64 << 10))
            sent += 1
        # ... and the rest not sent yet: the stream stays open (not half-closed), and no write is in flight when the
        # server ends the call, where grpcio's asyncio client would report INTERNAL ("Internal error from Core")
        # instead of the server's status (grpc/grpc#36066). A server that waited for the archive's end times out.
        await asyncio.Event().wait()

    call = stub.ImportAdapter(requests())
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(call, 5)
    finally:
        call.cancel()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.value.code(), err.value.details(), sent)
    return err.value


@pytest.mark.parametrize("metadata", [
    pb.ImportAdapterMetadata(sha256="not-a-sha"),
    pb.ImportAdapterMetadata(request_id="x" * 1000),
    pb.ImportAdapterMetadata(labels={"": "no key"}),
])
async def test_import_refuses_malformed_metadata_while_the_archive_is_still_sent(memory_client, metadata):
    assert error_details(await _refused_while_sent(memory_client, metadata))[1], "field violations expected"


@pytest.mark.parametrize("base_model", ["no-such-model", "../outside"])
async def test_import_refuses_a_base_model_it_cannot_take_while_the_archive_is_still_sent(memory_client, base_model):
    """A base model the server has not (or a malformed id) is refused on the metadata, as its other fields are."""
    err = await _refused_while_sent(memory_client, pb.ImportAdapterMetadata(base_model=base_model))
    assert [field for field, _ in error_details(err)[1]] == ["metadata.base_model"], error_details(err)
