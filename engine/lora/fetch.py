"""Fetching adapter versions from the registry into local PEFT directories the engine can load.

Each version is unpacked once, verified against its recorded sha256 by the registry, into
``<cache>/<base_model>/<version>-<sha256[:16]>``. The path is stable, so loading the same
version again sends MAX the same name and path (a no-op there).
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

from engine.lora.state import EvalSummary, FetchedAdapter
from engine.registry import AdapterEval, AdapterRegistry


class RegistryAdapters:
    """The AdapterFetcher port over the registry; also attaches eval results to versions."""

    def __init__(self, registry: AdapterRegistry, cache_dir: Path) -> None:
        self._registry = registry
        self._cache = cache_dir
        self._locks: dict[str, asyncio.Lock] = {}

    async def fetch(self, base_model: str, version: str, *, field_path: str = "version") -> FetchedAdapter:
        record = await self._registry.get(base_model, version, field_path=field_path)
        dest = self._cache / base_model / f"{version}-{record.sha256[:16]}"
        lock = self._locks.setdefault(str(dest), asyncio.Lock())
        async with lock:
            if not (dest / "adapter_config.json").is_file():
                staging = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")
                try:
                    await self._registry.fetch(record, staging)
                    await asyncio.to_thread(_publish_dir, staging, dest)
                finally:
                    await asyncio.to_thread(shutil.rmtree, staging, True)
        return FetchedAdapter(base_model=base_model, version=version, path=dest.resolve(), sha256=record.sha256)

    async def record_eval(self, base_model: str, summary: EvalSummary) -> None:
        await self._registry.record_eval(base_model, summary.version, AdapterEval(
            suite_digest=summary.suite_digest, baseline_version=summary.baseline_version,
            metrics=summary.metrics, regressions=summary.regressions, passed=summary.passed,
            report_uris=summary.report_uris, time=summary.time, suites=summary.suites, id=summary.id,
        ))

    async def lineage(self, base_model: str, version: str) -> list[str]:
        return [record.version for record in await self._registry.lineage(base_model, version)]


def _publish_dir(staging: Path, dest: Path) -> None:
    if dest.exists():  # a half-written directory from a crash: replace it
        shutil.rmtree(dest)
    staging.rename(dest)
