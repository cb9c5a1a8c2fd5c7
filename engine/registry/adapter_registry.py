"""The adapter registry: semantic versions per base model over immutable, verified artifacts.

Versions: the first adapter of a base model is v1.0. A continuation of a parent gets the
next minor in the parent's major line (v1.1, v1.2, ...). A patch of a parent (an online
session's publication) gets the next patch of the parent's minor version (v1.1 -> v1.1.1,
v1.1.2, ...; v1.1 is v1.1.0). A new major line (v2.0, ...) starts for a fresh adapter, a
changed LoRA shape (rank or targets), a changed base model (its digest differs from the
parent's), or on request.

Publishing packs the PEFT directory into a canonical tar.gz, reserves the version number, stores the
artifacts create-only and only then registers the version. engine.registry.publishing holds those steps (and
the sweep of what failed or cut-short attempts left, which ``recover`` runs too); its docstring describes the
protocol: attempts, a number changing hands, what a failed publish removes and what it leaves.

Every read of an archive (download, warm start) checks its sha256 against the record
first; a mismatch is DATA_LOSS and the bytes are never handed out or loaded.

Deleting turns the row into a tombstone first and removes the artifacts after (a delete while
the store is down fails before, and changes nothing): a delete cut short leaves files of a
version no longer listed (deleting it again removes them), never a listed version without
its files.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import builtins
import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from engine import json_input
from engine.domain import DataSource, Pin
from engine.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from engine.names import cursor_int, cursor_text, cursor_time, invalid_page_token
from engine.registry import archive, peft_checks, publishing
from engine.registry.ports import AdapterIndex, ArtifactStore, Cursor, ServingState
from engine.registry.records import (
    ARCHIVE_NAME,
    AdapterEval,
    AdapterRecord,
    AdapterSource,
    PublishRequest,
    check_base_model_id,
    lora_shape,
    new_attempt,
    parse_version,
)

log = logging.getLogger(__name__)

BaseModelResolver = Callable[[str], Path]
_MAX_LINEAGE = 10_000


class AdapterRegistry:
    def __init__(
        self,
        *,
        index: AdapterIndex,
        store: ArtifactStore,
        serving: ServingState,
        base_model_dir: BaseModelResolver,
        scratch_dir: Path,
        retention_keep: int = 0,
        serving_limits: peft_checks.ServingLimits | None = None,
    ) -> None:
        self._index = index
        self._store = store
        self._serving = serving
        self._base_model_dir = base_model_dir
        self._scratch = scratch_dir
        self.retention_keep = retention_keep
        self._serving_limits = serving_limits

    # ---- reading --------------------------------------------------------------------

    async def get(self, base_model: str, version: str, *, field_path: str = "version") -> AdapterRecord:
        return await self._index.get(base_model, parse_version(version, field_path))

    async def list(
        self, *, base_model: str = "", labels: Mapping[str, str] | None = None, page_size: int, page_token: str = ""
    ) -> tuple[list[AdapterRecord], str]:
        """Published versions, newest first, optionally of one base model and carrying all ``labels``."""
        after = _decode_token(page_token) if page_token else None
        rows = await self._index.list(base_model=base_model, labels=labels or {}, limit=page_size + 1, after=after)
        page = rows[:page_size]
        token = _encode_token(page[-1]) if len(rows) > page_size and page else ""
        return page, token

    # ``list`` below names the method above: annotations in this class spell the type ``builtins.list``.
    async def lineage(self, base_model: str, version: str) -> builtins.list[AdapterRecord]:
        """The version, its parent, and so on back to the root (deleted ancestors included)."""
        chain = [await self.get(base_model, version)]
        while chain[-1].parent_version and len(chain) < _MAX_LINEAGE:
            chain.append(await self._index.get(base_model, parse_version(chain[-1].parent_version),
                                               include_deleted=True))
        return chain

    async def sources_in_use(self) -> builtins.list[DataSource]:
        """The data sources of every published version and of its ancestors (deleted ones included): what a job
        continuing one of them may read again (engine.continual: its Fisher on the parent's data, replay of the
        lineage's). Each version is read once."""
        seen: dict[tuple[str, str], AdapterRecord] = {}
        token = ""
        while True:
            page, token = await self.list(page_size=1000, page_token=token)
            for record in page:
                current: AdapterRecord | None = record
                while current is not None and (current.base_model, current.version) not in seen:
                    seen[(current.base_model, current.version)] = current
                    current = await self._parent(current)
            if not token:
                break
        return [r.dataset.source for r in seen.values() if r.dataset is not None and r.dataset.source is not None]

    async def _parent(self, record: AdapterRecord) -> AdapterRecord | None:
        if not record.parent_version:
            return None
        try:
            return await self._index.get(record.base_model, parse_version(record.parent_version), include_deleted=True)
        except NotFound:  # never published (an imported version's parent from elsewhere)
            return None

    async def by_request_id(self, base_model: str, request_id: str) -> AdapterRecord | None:
        """The version a publish with ``request_id`` registered; None if none did (or it was deleted since)."""
        return await self._index.by_request_id(base_model, request_id)

    async def download(self, base_model: str, version: str, dest: Path) -> AdapterRecord:
        """Copy the version's archive to ``dest`` and verify it; DATA_LOSS (and no file) if it was altered."""
        record = await self.get(base_model, version)
        await self._fetch_verified(record, dest)
        return record

    async def fetch(self, record: AdapterRecord, dest_dir: Path) -> Path:
        """The version as a verified, unpacked PEFT directory at ``dest_dir`` (e.g. for a warm start)."""
        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        archive_path = dest_dir.parent / f".{dest_dir.name}.tar.gz"
        try:
            await self._fetch_verified(record, archive_path)
            await asyncio.to_thread(archive.unpack_archive, archive_path, dest_dir)
        finally:
            archive_path.unlink(missing_ok=True)
        return dest_dir

    async def _fetch_verified(self, record: AdapterRecord, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            await self._store.get_file(record.archive_key, dest)
        except NotFound as exc:
            await self._index.get(record.base_model, record.number)  # NOT_FOUND if it was deleted meanwhile
            raise DataLoss(
                "ARTIFACT_MISSING", f"the archive of {record.base_model} {record.version} is missing from the store",
                metadata={"base_model": record.base_model, "version": record.version, "key": record.archive_key},
            ) from exc
        actual = await asyncio.to_thread(archive.sha256_file, dest)
        if actual != record.sha256:
            dest.unlink(missing_ok=True)
            log.error("artifact checksum mismatch", extra={"key": record.archive_key, "expected": record.sha256,
                                                            "actual": actual})
            raise DataLoss(
                "ARTIFACT_CHECKSUM_MISMATCH",
                f"the archive of {record.base_model} {record.version} does not match its recorded sha256; "
                "it was altered or corrupted in the store and will not be used",
                metadata={"base_model": record.base_model, "version": record.version,
                          "expected_sha256": record.sha256, "actual_sha256": actual},
            )

    # ---- publishing -------------------------------------------------------------------

    async def publish(self, request: PublishRequest) -> AdapterRecord:
        """Store a PEFT directory as the next version of its base model (see engine.registry.publishing)."""
        base_model, parent = request.base_model, request.parent
        check_base_model_id(base_model)
        existing = await self._index.by_request_id(base_model, request.request_id) if request.request_id else None
        if existing is not None and request.fence is not None:
            return existing  # a job's own result published again (a retry, or a worker that took the job over)
        work = await asyncio.to_thread(self._workdir)
        try:
            lora = await asyncio.to_thread(peft_checks.read_lora_config, request.adapter_dir)
            archive_path = work / ARCHIVE_NAME
            sha256, size = await asyncio.to_thread(archive.pack_adapter, request.adapter_dir, archive_path)
            if existing is not None:  # a client's retry: the version it published, if it asks for the same
                _check_same_publish(existing, request.request_id, sha256,
                                    request.parent.version if request.parent else "", request.labels)
                return existing
            model_dir = await asyncio.to_thread(self._base_model_dir, base_model)
            base_digest = await asyncio.to_thread(peft_checks.base_model_digest, model_dir)
            same_line = (
                parent is not None
                and not request.major_bump
                and lora_shape(parent.lora) == lora_shape(lora)
                and parent.base_model_digest in ("", base_digest)
            )
            attempt = new_attempt()
            number = await publishing.reserve(
                self._index, self._store, base_model, _under(parent, same_line, request.patch), request.request_id,
                attempt, request.fence,
            )
            record = AdapterRecord(
                base_model=base_model, version=str(number), lora=lora,
                create_time=datetime.now(UTC), sha256=sha256, size_bytes=size, source=request.source,
                base_model_digest=base_digest, parent_version=parent.version if parent else "",
                training_job=request.training_job, dataset=request.dataset, train_loss=request.train_loss,
                eval_loss=request.eval_loss, eval_split=request.eval_split,
                base_retention=request.base_retention, base_protection=request.base_protection,
                base_rehearsed_examples=request.base_rehearsed_examples,
                ewc_lambda=request.ewc_lambda, ewc_gamma=request.ewc_gamma, fisher_snapshot=request.fisher_snapshot,
                ewc_fisher_space=request.ewc_fisher_space, labels=tuple(sorted(request.labels)),
                request_id=request.request_id, attempt=attempt,
            )
            record = replace(record, artifact_uri=self._store.uri(record.archive_key))
            published = await publishing.store_and_register(
                self._index, self._store, record, archive_path, request.fence, request.pins
            )
            await publishing.remove_orphans(self._store, published)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        log.info("published adapter", extra={"base_model": base_model, "version": published.version,
                                              "sha256": published.sha256})
        await self._retain_after_publish(base_model)
        return published

    async def import_base_model_dir(self, base_model: str) -> Path:
        """The folder of the base model an import names (``metadata.base_model``), or INVALID_ARGUMENT on that field:
        checked as the import's metadata arrives, before its archive, and again by ``import_archive``."""
        check_base_model_id(base_model, "metadata.base_model")
        try:
            return await asyncio.to_thread(self._base_model_dir, base_model)
        except InvalidArgument as exc:
            raise InvalidArgument(exc.reason, exc.message, violations=[FieldViolation(
                "metadata.base_model", v.description) for v in exc.violations]) from exc

    async def import_archive(
        self,
        *,
        base_model: str,
        upload: Path,
        expected_sha256: str = "",
        parent_version: str = "",
        major_bump: bool = False,
        labels: tuple[tuple[str, str], ...] = (),
        request_id: str = "",
    ) -> AdapterRecord:
        """Validate an uploaded tar(.gz) of a PEFT LoRA directory and register it as a version: in the form every
        serving engine loads alike (peft_checks.normalise_for_serving), and only if the serving engine (the
        registry's ``serving_limits``) can load it."""
        model_dir = await self.import_base_model_dir(base_model)
        # a retry: answered from what it sends, whatever changed since (its parent deleted, the engine's limits)
        existing = await self._index.by_request_id(base_model, request_id) if request_id else None
        if expected_sha256:
            actual = await asyncio.to_thread(archive.sha256_file, upload)
            if actual != expected_sha256.lower():
                raise InvalidArgument(
                    "SHA256_MISMATCH", f"the upload's sha256 is {actual}, not the {expected_sha256} announced",
                    violations=[FieldViolation("metadata.sha256", "does not match the uploaded bytes")],
                )
        parent = (
            await self.get(base_model, parent_version, field_path="metadata.parent_version")
            if parent_version and existing is None else None
        )
        work = await asyncio.to_thread(self._workdir)
        try:
            peft_dir = await asyncio.to_thread(archive.unpack_archive, upload, work / "peft")
            await asyncio.to_thread(peft_checks.normalise_for_serving, peft_dir)
            if existing is not None:
                sha256, _ = await asyncio.to_thread(archive.pack_adapter, peft_dir, work / ARCHIVE_NAME)
                _check_same_publish(existing, request_id, sha256, parent_version, labels)
                return existing
            await asyncio.to_thread(_validate_peft_dir, peft_dir, model_dir, self._serving_limits)
            return await self.publish(PublishRequest(
                base_model=base_model, adapter_dir=peft_dir, parent=parent, major_bump=major_bump,
                source=AdapterSource.IMPORTED, labels=labels, request_id=request_id,
            ))
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def record_eval(self, base_model: str, version: str, result: AdapterEval) -> AdapterRecord:
        """Attach eval results (LoraControl). The stored metadata.json stays as published."""
        record = replace(await self.get(base_model, version), eval=result)
        await self._index.update(record)
        return record

    # ---- recovery ----------------------------------------------------------------------

    async def recover(self) -> builtins.list[str]:
        """At start: undo what publishes cut short by a dead process left. Removes the store's partial writes
        and this registry's scratch space, releases reservations whose publisher is gone (their numbers are
        handed out again) and removes the objects their attempts may have stored (a manifest, whose key is the
        version's, stays: see ``publishing.store_and_register``). What cannot be removed now (the store down) the
        attempt that registers that number removes. Returns the released versions as ``<base-model> <version>``."""
        partial = await self._store.remove_partial_writes()
        await asyncio.to_thread(shutil.rmtree, self._scratch, True)
        released = await publishing.release_stale(self._index, self._store)
        if partial or released:
            log.warning("cleaned up after publishes cut short by an earlier process",
                        extra={"partial_writes": partial, "released_reservations": released})
        return released

    # ---- deleting ----------------------------------------------------------------------

    async def delete(self, base_model: str, version: str) -> AdapterRecord:
        """Keep a version's row as a tombstone, then remove its artifacts (see the module docstring); refused while
        it is protected. A version deleted before is NOT_FOUND, and what a delete cut short left of it goes."""
        number = parse_version(version)
        try:
            async with self._index.deleting(base_model, number) as record:
                what = (await self._serving.protected_versions(base_model)).get(record.version)
                if what is not None:
                    raise FailedPrecondition(
                        "ADAPTER_PROTECTED",
                        f"{base_model} {record.version} cannot be deleted: it is {what}",
                        metadata={"base_model": base_model, "version": record.version},
                    )
                await self._store.probe()  # a store that is down now fails the delete before the tombstone
        except NotFound:
            with contextlib.suppress(NotFound):  # never published at all
                gone = await self._index.get(base_model, number, include_deleted=True)
                if gone.delete_time is not None:
                    await self._store.delete([gone.manifest_key, gone.archive_key, gone.fisher_key])
            raise
        await self._store.delete([record.manifest_key, record.archive_key, record.fisher_key])
        log.info("deleted adapter", extra={"base_model": base_model, "version": version})
        return record

    def pin(self, record: AdapterRecord) -> Pin:
        """``record``'s version, for what is stored naming it (a training job continuing it, a version published from
        one of that job's checkpoints) to pin (engine.domain.Pin): checked published in the storing transaction
        (NOT_FOUND, ADAPTER_NOT_FOUND, otherwise); a delete waits for that transaction, then finds a job that
        continues it and refuses (ADAPTER_PROTECTED)."""
        return self._index.pin(record.base_model, record.number)

    async def prune(
        self, base_model: str, *, keep: int, dry_run: bool = False
    ) -> tuple[builtins.list[str], builtins.list[str]]:
        """Keep the newest ``keep`` versions and every protected one (what serving relies on, and the parents of
        training jobs that have not ended: what a delete refuses); delete the rest. Returns (deleted, kept), newest
        first; a ``dry_run`` answers the same without deleting (but for what changes meanwhile)."""
        if keep < 1:
            raise InvalidArgument("INVALID_RETENTION", "keep must be at least 1",
                                  violations=[FieldViolation("keep", "must be at least 1")])
        records: list[AdapterRecord] = []
        token = ""
        while True:
            page, token = await self.list(base_model=base_model, page_size=1000, page_token=token)
            records.extend(page)
            if not token:
                break
        protected = (set(await self._serving.protected_versions(base_model))
                     | await self._index.continued_versions(base_model))
        kept = [r.version for i, r in enumerate(records) if i < keep or r.version in protected]
        doomed = [r.version for r in records if r.version not in kept]
        deleted = []
        for version in doomed:
            if dry_run:
                deleted.append(version)
                continue
            try:
                await self.delete(base_model, version)
                deleted.append(version)
            except (FailedPrecondition, NotFound) as exc:  # became protected or went meanwhile
                log.info("retention skipped a version", extra={"version": version, "reason": exc.reason})
                if isinstance(exc, FailedPrecondition):
                    kept.append(version)
        return deleted, kept

    async def _retain_after_publish(self, base_model: str) -> None:
        if self.retention_keep <= 0:
            return
        try:
            deleted, _ = await self.prune(base_model, keep=self.retention_keep)
            if deleted:
                log.info("retention deleted versions", extra={"base_model": base_model, "versions": deleted})
        except Exception:  # noqa: BLE001 - the publish itself succeeded; pruning runs again next time
            log.exception("retention after publish failed")

    def _workdir(self) -> Path:
        self._scratch.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="registry-", dir=self._scratch))


def _validate_peft_dir(peft_dir: Path, model_dir: Path, limits: peft_checks.ServingLimits | None = None) -> None:
    lora = peft_checks.read_lora_config(peft_dir)
    if limits is not None:
        config = archive.CONFIG_FILE
        limits.check(lora, f"{config}.r", f"{config}.target_modules")
    shapes = peft_checks.tensor_shapes(peft_dir)
    peft_checks.check_shapes(shapes, lora, peft_checks.base_linear_shapes(model_dir))


def _under(parent: AdapterRecord | None, same_line: bool, patch: bool) -> tuple[int, ...]:
    """Where a new version's number comes from (AdapterIndex.reserve): a patch of its parent's minor version
    (v1.1 -> v1.1.1, v1.1.2 -> v1.1.3), the next minor of its parent's line, or a new major line."""
    if parent is None or not same_line:
        return ()
    return tuple(parent.number[:2]) if patch else (parent.number.major,)


def _encode_token(record: AdapterRecord) -> str:
    raw = json.dumps([record.create_time.isoformat(), record.base_model, *record.number]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str) -> Cursor:
    try:
        # A token issued before patch numbers (four parts) continues at patch 0.
        created, base_model, major, minor, patch = [*json_input.loads(base64.urlsafe_b64decode(token.encode())), 0][:5]
        return cursor_time(created), cursor_text(base_model), cursor_int(major), cursor_int(minor), cursor_int(patch)
    except (ValueError, TypeError, OverflowError, binascii.Error) as exc:
        raise invalid_page_token() from exc


def _check_same_publish(existing: AdapterRecord, request_id: str, sha256: str, parent_version: str,
                        labels: tuple[tuple[str, str], ...]) -> None:
    """ALREADY_EXISTS REQUEST_ID_REUSED unless a publish with ``request_id`` asks for what ``existing``, the version
    that request id published, was published from: the same adapter (its canonical archive's sha256), parent and
    labels. A client that reuses a request id for another adapter would otherwise be told the earlier version was
    its new one."""
    differs = [what for what, same in (
        ("adapter", existing.sha256 == sha256),
        ("parent", existing.parent_version == parent_version),
        ("labels", sorted(map(tuple, existing.labels)) == sorted(map(tuple, labels))),
    ) if not same]
    if differs:
        raise AlreadyExists(
            "REQUEST_ID_REUSED", f"request_id {request_id!r} was used for another publish ({existing.version}, "
                                 f"whose {', '.join(differs)} differ): use a new request_id for a new version",
            metadata={"request_id": request_id, "version": existing.version},
        )
