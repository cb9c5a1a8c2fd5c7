"""A download has the deadline an upload of the same archive has (the client's ``timeout`` plus a second per MiB,
``_upload_timeout``), not the unary ``timeout`` alone: a steady download that takes longer than ``timeout`` (30 s
by default, so any archive of a few hundred MB on a slow link) was cut with DEADLINE_EXCEEDED. The header must
still come within ``timeout``, and a download that stalls past its deadline fails, leaving nothing behind.

The server is a stand-in whose pace the test sets (scaled down: ``timeout`` 0.5 s, MiB-sized archives)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import grpc
import pytest

from learning.v1 import adapter_pb2, adapter_pb2_grpc
from learning_engine import AsyncClient, Client, errors

MIB = 1 << 20
ARCHIVE = b"x" * (2 * MIB)
TIMEOUT = 0.5


class Link(adapter_pb2_grpc.AdapterServiceServicer):
    """Sends ARCHIVE in quarters after ``before_header`` seconds, ``between`` seconds apart, and stalls after the
    first quarter when ``stall``."""

    def __init__(self, *, before_header: float = 0.0, between: float = 0.0, stall: bool = False) -> None:
        self.before_header, self.between, self.stall = before_header, between, stall

    async def DownloadAdapter(self, request, context):  # noqa: N802 - the RPC's name
        await asyncio.sleep(self.before_header)
        header = adapter_pb2.AdapterArchiveHeader(
            adapter=adapter_pb2.Adapter(base_model="tiny", version="v1.0"), filename="adapter.tar.gz",
            sha256=hashlib.sha256(ARCHIVE).hexdigest(), size_bytes=len(ARCHIVE))
        yield adapter_pb2.DownloadAdapterResponse(header=header)
        quarter = len(ARCHIVE) // 4
        for start in range(0, len(ARCHIVE), quarter):
            await asyncio.sleep(self.between)
            yield adapter_pb2.DownloadAdapterResponse(chunk=ARCHIVE[start:start + quarter])
            if self.stall:
                await asyncio.sleep(60)


async def _serve(link: Link) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    adapter_pb2_grpc.add_AdapterServiceServicer_to_server(link, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_a_steady_download_longer_than_the_timeout_completes(tmp_path: Path) -> None:
    server, target = await _serve(Link(between=0.3))  # 1.2 s in all; the deadline is 0.5 + 2 = 2.5 s
    try:
        async with AsyncClient(target, timeout=TIMEOUT) as client:
            assert client._upload_timeout(len(ARCHIVE)) == TIMEOUT + 2
            started = time.monotonic()
            _, path = await client.download_adapter("v1.0", tmp_path / "async")
            assert time.monotonic() - started > TIMEOUT and path.read_bytes() == ARCHIVE

        def blocking() -> bytes:
            with Client(target, timeout=TIMEOUT) as sdk:
                return sdk.download_adapter("v1.0", tmp_path / "blocking")[1].read_bytes()

        assert await asyncio.to_thread(blocking) == ARCHIVE
    finally:
        await server.stop(0)


@pytest.mark.parametrize(("link", "within"), [(Link(stall=True), TIMEOUT + 2), (Link(before_header=30), TIMEOUT)],
                         ids=["stalled", "no-header"])
@pytest.mark.slow
async def test_a_download_past_its_deadline_fails_and_leaves_nothing(tmp_path: Path, link: Link,
                                                                     within: float) -> None:
    server, target = await _serve(link)
    try:
        async with AsyncClient(target, timeout=TIMEOUT) as client:
            started = time.monotonic()
            with pytest.raises(errors.DeadlineExceeded, match=f"within {within:g}s"):
                await client.download_adapter("v1.0", tmp_path)
            assert within <= time.monotonic() - started < within + 2
        assert list(tmp_path.iterdir()) == []
    finally:
        await server.stop(0)
