"""download_adapter without ``overwrite`` never overwrites a file, even one that appears at its name during the
download (after the check at the header): another download of the same version, another process, the user's own
file. The archive is put in place with a hard link that fails on an existing file, and FileExistsError raised."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

from learning.v1 import adapter_pb2
from learning_engine import AsyncClient

ARCHIVE = b"x" * 1000


def _stream(*args, **kwargs) -> AsyncIterator[adapter_pb2.DownloadAdapterResponse]:
    async def stream() -> AsyncIterator[adapter_pb2.DownloadAdapterResponse]:
        record = adapter_pb2.Adapter(base_model="tiny", version="v1.0")
        yield adapter_pb2.DownloadAdapterResponse(header=adapter_pb2.AdapterArchiveHeader(
            adapter=record, sha256=hashlib.sha256(ARCHIVE).hexdigest(), size_bytes=len(ARCHIVE)))
        await asyncio.sleep(0.2)  # the network: the chunks take a while
        yield adapter_pb2.DownloadAdapterResponse(chunk=ARCHIVE)
    return stream()


async def test_a_file_that_appears_during_a_download_is_not_overwritten(tmp_path: Path, monkeypatch) -> None:
    client = AsyncClient("127.0.0.1:9")  # never connected: the stream is the test's
    monkeypatch.setattr(client, "_stream", _stream)
    target = tmp_path / "tiny-v1.0.tar.gz"

    async def user_writes_meanwhile() -> None:
        await asyncio.sleep(0.1)  # after the header was checked, before the archive is in place
        target.write_bytes(b"my own file")

    results = await asyncio.gather(client.download_adapter("v1.0", tmp_path), user_writes_meanwhile(),
                                   return_exceptions=True)
    await client.close()
    assert target.read_bytes() == b"my own file", "download_adapter overwrote a file without overwrite=True"
    assert isinstance(results[0], FileExistsError), results[0]


async def test_two_concurrent_downloads_of_one_version_do_not_both_succeed(tmp_path: Path, monkeypatch) -> None:
    client = AsyncClient("127.0.0.1:9")
    monkeypatch.setattr(client, "_stream", _stream)
    results = await asyncio.gather(client.download_adapter("v1.0", tmp_path),
                                   client.download_adapter("v1.0", tmp_path), return_exceptions=True)
    await client.close()
    assert sum(isinstance(r, FileExistsError) for r in results) == 1, results
