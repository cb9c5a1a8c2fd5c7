"""artifacts_path may be shared by the processes of one machine (docs/configuration.md); a process starting must not
destroy the object another is writing, and still removes what a dead writer left (LocalArtifactStore: a writer holds
its temporary file locked until it is gone)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import AlreadyExists
from engine.registry import AdapterRegistry
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.memory import InMemoryAdapterIndex, InMemoryServingState


async def test_a_worker_starting_on_a_shared_artifacts_dir_does_not_break_a_write_in_flight(tmp_path: Path):
    root = tmp_path / "shared-artifacts"
    server_store = LocalArtifactStore(root)  # the server, publishing
    await server_store.ensure_ready()
    worker = AdapterRegistry(  # `learning-engine-server worker` starting with the same artifacts_path
        index=InMemoryAdapterIndex(), store=LocalArtifactStore(root), serving=InMemoryServingState(),
        base_model_dir=lambda _: tmp_path, scratch_dir=tmp_path / "worker-data" / "work" / "registry",
    )
    source = tmp_path / "archive.fifo"
    os.mkfifo(source)  # the archive's bytes arrive while the worker starts
    key = "adapters/m/v1.0/abc.adapter.tar.gz"
    writing = asyncio.ensure_future(server_store.put_file(key, source))

    def feed_first_half() -> int:
        fd = os.open(source, os.O_WRONLY)
        os.write(fd, b"x" * 1000)
        return fd

    fd = await asyncio.to_thread(feed_first_half)
    for _ in range(100):  # the server's temporary file exists: its write is in flight
        if list(root.rglob(".tmp-*")):
            break
        await asyncio.sleep(0.01)
    await worker.recover()  # what build_engine runs at every start, a worker's too
    os.write(fd, b"y" * 1000)
    os.close(fd)
    await writing  # FileNotFoundError on the current code: the worker removed the server's temporary file
    assert (root / key).read_bytes() == b"x" * 1000 + b"y" * 1000


_HOLD_LOCKED = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"half an archive")
print("locked", flush=True)
time.sleep(600)
"""


async def test_a_dead_writers_leftover_is_removed_and_a_live_ones_kept(tmp_path: Path):
    """A writer in another process holds its temporary file locked while it writes: a sweep keeps it; once that
    process has died (the kernel drops its lock), the next sweep removes it. A leftover no one locks goes at once."""
    root = tmp_path / "shared-artifacts"
    store = LocalArtifactStore(root)
    await store.ensure_ready()
    folder = root / "adapters" / "m" / "v1.0"
    folder.mkdir(parents=True)
    orphan = root / "adapters" / "m" / "v0.9" / ".tmp-orphan"  # a crashed writer's, in a folder of its own
    orphan.parent.mkdir()
    orphan.write_bytes(b"cut short")
    live = folder / ".tmp-live"
    writer = subprocess.Popen([sys.executable, "-c", _HOLD_LOCKED, str(live)], stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None
        assert await asyncio.to_thread(writer.stdout.readline) == b"locked\n"
        removed = await store.remove_partial_writes()
        assert live.exists(), "a sweep removed the temporary file another process is writing (and holds locked)"
        assert not orphan.exists() and not orphan.parent.exists(), "a sweep left a dead writer's temporary file"
        assert removed == 1
    finally:
        writer.kill()
        writer.wait()
    assert await store.remove_partial_writes() == 1
    assert not live.exists(), "the temporary file of a writer that died (its lock gone with it) was not removed"
    assert await store.list_keys("adapters/") == []


def _temporary_files_open(root: Path) -> list[str]:
    """This process's open descriptors on temporary files under ``root`` (each one a lock still held)."""
    held = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith(str(root)) and "/.tmp-" in target:
                held.append(target)
    return held


async def test_a_write_releases_its_lock_however_it_ends(tmp_path: Path):
    root = tmp_path / "artifacts"
    store = LocalArtifactStore(root)
    await store.ensure_ready()
    await store.put_bytes("adapters/m/v1.0/metadata.json", b"{}")
    with pytest.raises(AlreadyExists):
        await store.put_bytes("adapters/m/v1.0/metadata.json", b"{}")
    with pytest.raises(FileNotFoundError):  # the source went: the write fails half way
        await store.put_file("adapters/m/v1.0/a.adapter.tar.gz", tmp_path / "gone.tar.gz")
    assert _temporary_files_open(root) == [], "a write ended with its temporary file still open (and locked)"
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == ["metadata.json"]
