"""A restart removes what a publish cut short by a dead process left, and releases its reservation, while the
reservations of live publishers stay."""

from __future__ import annotations

import asyncpg

from engine.registry import VersionNumber
from engine.stores import postgres
from engine.stores.adapter_index import PostgresAdapterIndex
from tests.server.conftest import TINY


async def _reserved(url: str) -> list[tuple[int, int]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT major, minor FROM adapters WHERE state = 'RESERVED' ORDER BY 1, 2")
        return [(r["major"], r["minor"]) for r in rows]
    finally:
        await conn.close()


async def test_a_restart_cleans_up_after_a_publish_killed_midway(make_server, database_url: str, data_dir):
    first = await make_server()
    await first.app.stop(0)

    # A publisher that dies mid-publish: its reservation is made, then its sessions end abruptly (as on SIGKILL).
    dead_pool = await postgres.connect(database_url, min_size=1, max_size=2)
    assert await PostgresAdapterIndex(dead_pool).reserve(TINY, ()) == (1, 0, 0)
    dead_pool.terminate()
    # A publisher still at work in another process: its reservation must survive our start.
    live_pool = await postgres.connect(database_url, min_size=1, max_size=2)
    live = PostgresAdapterIndex(live_pool)
    assert await live.reserve(TINY, ()) == (2, 0, 0)

    # What the dead publish left on disk: a temporary file in its version folder and its scratch folders.
    version_dir = data_dir / "artifacts" / "adapters" / TINY / "v1.0"
    version_dir.mkdir(parents=True)
    (version_dir / ".tmp-k2j4h5").write_bytes(b"x" * 1024)
    for leftover in ("registry/registry-abc/adapter.tar.gz", "0123456789abcdef/checkpoint/model.safetensors",
                     "fisher/feedbeef/fisher.safetensors", "adapter-rpc/adapter-rpc-x/upload",
                     f"serving-adapters/{TINY}/.v1.0-0123456789abcdef.1a2b3c4d/adapter_config.json"):
        path = data_dir / "work" / leftover
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"left behind")
    kept = data_dir / "work" / "serving-adapters" / TINY / "v1.0-0123456789abcdef" / "adapter_config.json"
    kept.parent.mkdir(parents=True)
    kept.write_text("{}")
    try:
        assert await _reserved(database_url) == [(1, 0), (2, 0)]
        await make_server()
        assert await _reserved(database_url) == [(2, 0)]  # the dead one's released, the live one's kept
        assert not version_dir.exists()
        work = sorted(str(p.relative_to(data_dir / "work")) for p in (data_dir / "work").rglob("*") if p.is_file())
        assert work == [f"serving-adapters/{TINY}/v1.0-0123456789abcdef/adapter_config.json"]
    finally:
        await live.release(TINY, VersionNumber(2, 0))
        await live_pool.close()
