"""A download that does not end with its archive in place leaves nothing behind in the destination: a stream cut
after some chunks (the server going away, a deadline), an archive whose sha256 does not match. It wrote
``<name>.partial`` and left it there; two downloads of one version into one directory also shared that file."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from learning.v1 import adapter_pb2
from learning_engine import AsyncClient, errors

ARCHIVE = b"x" * 1000


class _Cut(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "connection reset")


def _messages(sha256: str, *, cut: bool) -> AsyncIterator[adapter_pb2.DownloadAdapterResponse]:
    async def stream() -> AsyncIterator[adapter_pb2.DownloadAdapterResponse]:
        record = adapter_pb2.Adapter(base_model="tiny", version="v1.0")
        yield adapter_pb2.DownloadAdapterResponse(
            header=adapter_pb2.AdapterArchiveHeader(adapter=record, sha256=sha256, size_bytes=len(ARCHIVE)))
        yield adapter_pb2.DownloadAdapterResponse(chunk=ARCHIVE[:400])
        if cut:
            raise _Cut()
        yield adapter_pb2.DownloadAdapterResponse(chunk=ARCHIVE[400:])
    return stream()


@pytest.mark.parametrize("failure", ["cut", "sha256"])
async def test_a_failed_download_leaves_no_partial_file(tmp_path: Path, monkeypatch, failure: str) -> None:
    client = AsyncClient("127.0.0.1:9")  # never connected: the stream is the test's
    digest = hashlib.sha256(ARCHIVE).hexdigest() if failure == "cut" else "0" * 64
    monkeypatch.setattr(client, "_stream", lambda *args, **kwargs: _messages(digest, cut=failure == "cut"))
    into = tmp_path / "downloads"
    with pytest.raises((grpc.aio.AioRpcError, errors.DataLoss)):
        await client.download_adapter("v1.0", into)
    assert sorted(p.name for p in into.iterdir()) == [], "a failed download left files behind"
    await client.close()


async def test_a_download_that_ends_well_leaves_only_its_archive(tmp_path: Path, monkeypatch) -> None:
    client = AsyncClient("127.0.0.1:9")
    monkeypatch.setattr(client, "_stream",
                        lambda *args, **kwargs: _messages(hashlib.sha256(ARCHIVE).hexdigest(), cut=False))
    _, path = await client.download_adapter("v1.0", tmp_path)
    assert path.read_bytes() == ARCHIVE and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    await client.close()
