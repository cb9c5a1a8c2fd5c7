"""A local object is durable once put returns: every directory entry leading to it is fsynced."""

from __future__ import annotations

from pathlib import Path

from engine.stores import artifacts_local
from engine.stores.artifacts_local import LocalArtifactStore


async def test_putting_a_new_versions_object_fsyncs_the_folders_it_created(tmp_path: Path, monkeypatch):
    root = tmp_path / "artifacts"
    store = LocalArtifactStore(root)
    await store.ensure_ready()
    synced: list[Path] = []
    real = artifacts_local._fsync_dir
    monkeypatch.setattr(artifacts_local, "_fsync_dir", lambda folder: (synced.append(Path(folder)), real(folder)))
    await store.put_bytes("adapters/m/v1.0/metadata.json", b"{}")  # a first version: its folders are new
    created = [root / "adapters", root / "adapters/m", root / "adapters/m/v1.0"]
    # each new folder's name lives in its parent: without fsyncing the parent, a power loss can drop the folder,
    # and with it an object whose version PostgreSQL has durably registered
    missing = [str(folder.parent.relative_to(tmp_path)) for folder in created if folder.parent not in synced]
    assert missing == [], f"new folders' parents never fsynced: {missing}; fsynced only {synced}"


async def test_deleting_a_versions_last_object_fsyncs_the_folder_that_held_its_folder(tmp_path: Path, monkeypatch):
    root = tmp_path / "artifacts"
    store = LocalArtifactStore(root)
    await store.ensure_ready()
    await store.put_bytes("adapters/m/v1.0/metadata.json", b"{}")
    await store.put_bytes("adapters/m/v1.1/metadata.json", b"{}")
    synced: list[Path] = []
    real = artifacts_local._fsync_dir
    monkeypatch.setattr(artifacts_local, "_fsync_dir", lambda folder: (synced.append(Path(folder)), real(folder)))
    await store.delete(["adapters/m/v1.0/metadata.json"])
    assert not (root / "adapters/m/v1.0").exists()
    # the removed folder's name lived in adapters/m: unsynced, a power loss can bring the empty folder back
    assert root / "adapters/m" in synced, f"the parent of the removed folder was never fsynced; fsynced only {synced}"
