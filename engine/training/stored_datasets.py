"""Datasets as resources: named, numbered, immutable versions of JSONL examples (the DatasetService).

A dataset is ``datasets/{dataset}``; its versions are ``datasets/{dataset}/versions/{n}``, numbered 1, 2, ... in
the order they were stored (a deleted version's number is never given again). A version is made from bytes a
client uploaded, a file below the datasets directory, an S3 object (read with the artifact store's own client)
or a window of feedback (frozen as JSONL), always the same way:

1. the bytes are copied to scratch space (so what is checked is what is stored), hashed, and validated line by
   line as the version's kind (engine.training.dataset_content): training examples by the training path's own
   validator (``load_jsonl``), golden cases by the evaluations' parser (engine.golden); INVALID_ARGUMENT with
   ``line[N].field`` violations, and nothing is stored unless every line is an example (or a case);
2. under the dataset's lock (:class:`DatasetIndex`), a live version of the same bytes (sha256), the same split
   rule and the same kind is returned as it is; otherwise the bytes go to the artifact store under a key derived
   from their sha256, ``datasets/{dataset}/{sha256}.jsonl`` (the store's create-only, atomic write), and only
   then is the version recorded in the index with the next number. A version is listed only once its record
   exists, and its record only once its bytes are durable, so nothing half-written is ever listed; an upload cut
   short never reaches step 2.

Each version records the sha256 of its bytes, its kind, the digest of its normalised examples (``dataset_digest``,
as a job's DatasetSummary; a golden version's: of its cases), its split rule (engine.splits) and the examples per
split. A golden version is scored as a golden suite (engine.lora.dataset_suites) and never trained on: whatever
trains refuses it (FAILED_PRECONDITION GOLDEN_DATASET_NOT_TRAINABLE). A training job naming a dataset trains on
its train split; the version it resolved to is recorded as the job's and the adapter version's dataset
provenance, so ``engine.continual.version_data`` finds the same examples again. A version is deleted only while
no training job that has not ended, and no published adapter version, names it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from engine.domain import Example, FeedbackSource, Objective, Pin
from engine.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from engine.feedback.dataset import FeedbackDatasetBuilder
from engine.names import PageScope, decode_page_token, encode_page_token
from engine.registry.ports import ArtifactStore
from engine.splits import Split, SplitRule
from engine.training.dataset_content import (
    DatasetContent,
    DatasetKind,
    cases_in_test_split,
    describe,
    load_golden,
    not_trainable,
)
from engine.training.dataset_records import (
    DatasetIndex,
    DatasetName,
    FeedbackOrigin,
    ObjectSource,
    Origin,
    PreparedOrigin,
    S3Origin,
    ScoredPart,
    ServerPathOrigin,
    Source,
    StoredDataset,
    UploadOrigin,
    parse_dataset_name,
    parse_s3_uri,
)
from engine.training.datasets import load_jsonl, resolve_dataset_path

_CHUNK = 1 << 20


# ---- the catalogue ----------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogConfig:
    datasets_dir: Path  # where server paths are resolved (never written)
    scratch_dir: Path  # copies being checked, removed after each call
    max_bytes: int  # the largest dataset accepted (dataset_max_bytes)


class StoredDatasets:
    """Create, read, list and delete dataset versions (see the module docstring)."""

    def __init__(self, config: CatalogConfig, *, index: DatasetIndex, store: ArtifactStore,
                 feedback: FeedbackDatasetBuilder | None = None, objects: ObjectSource | None = None) -> None:
        self._config = config
        self._index = index
        self._store = store
        self._feedback = feedback
        self._objects = objects

    @property
    def max_bytes(self) -> int:
        return self._config.max_bytes

    def too_large(self, size: int, what: str) -> ResourceExhausted:
        limit = self._config.max_bytes
        return ResourceExhausted("DATASET_TOO_LARGE", f"{what} holds {size} bytes, more than the {limit} a dataset "
                                                      "may hold (dataset_max_bytes); nothing was stored",
                                 metadata={"limit": str(limit), "size": str(size)})

    # ---- making versions ----------------------------------------------------------------

    async def upload(self, name: str, received: Path, *, split: SplitRule, sha256: str, size_bytes: int,
                     filename: str = "", kind: DatasetKind = DatasetKind.TRAINING) -> tuple[StoredDataset, bool]:
        """A version of the bytes a client sent (``received``, in scratch space the caller owns), after checking
        them against the size and sha256 it declared."""
        target = parse_dataset_name(name, "metadata.name", versioned=False)
        size = await asyncio.to_thread(lambda: received.stat().st_size)
        if size != size_bytes:
            raise InvalidArgument(
                "UPLOAD_SIZE_MISMATCH", f"received {size} bytes, but metadata.size_bytes declared {size_bytes}; "
                "nothing was stored",
                violations=[FieldViolation("metadata.size_bytes", "does not match the bytes sent")],
                metadata={"declared": str(size_bytes), "received": str(size)})
        content = await self._inspect(received, split, kind, label=filename or "upload", field_path="chunk",
                                      expect_sha256=sha256)
        return await self._register(target, received, content, UploadOrigin(filename))

    async def create(self, name: str, source: Source, *, split: SplitRule, base_model: str = "",
                     kind: DatasetKind = DatasetKind.TRAINING) -> tuple[StoredDataset, bool]:
        """A version from a server path, an S3 object or a window of feedback (on ``base_model``, e.g. a pipeline's;
        "" for every base model's; only of kind training)."""
        target = parse_dataset_name(name, "name", versioned=False)
        _check_kind(source, kind)
        async with self._scratch() as scratch:
            path, origin = await self._fetch(source, scratch / "data.jsonl", base_model)
            content = await self._inspect(path, split, kind, label=_label(origin), field_path=_field(origin))
            return await self._register(target, path, content, origin)

    async def store_prepared(self, name: str, path: Path, *, split: SplitRule,
                             origin: PreparedOrigin) -> tuple[StoredDataset, bool]:
        """A version of the pairs a preparation job wrote to ``path`` (its own file, which it removes)."""
        target = parse_dataset_name(name, "spec.dataset", versioned=False)
        content = await self._inspect(path, split, DatasetKind.TRAINING, label=_label(origin),
                                      field_path="spec.documents")
        return await self._register(target, path, content, origin)

    async def validate(self, source: Source | bytes, *, split: SplitRule, base_model: str = "",
                       kind: DatasetKind = DatasetKind.TRAINING) -> DatasetContent:
        """What a version of ``source`` would hold (a feedback window: on ``base_model``, as ``create``); stores
        nothing."""
        _check_kind(source, kind)
        async with self._scratch() as scratch:
            path = scratch / "data.jsonl"
            if isinstance(source, bytes):
                if len(source) > self.max_bytes:
                    raise self.too_large(len(source), "content")
                await asyncio.to_thread(path.write_bytes, source)
                label, field = "content", "content"
            else:
                path, origin = await self._fetch(source, path, base_model)
                label, field = _label(origin), _field(origin)
            return await self._inspect(path, split, kind, label=label, field_path=field)

    async def _register(self, target: DatasetName, path: Path, content: DatasetContent,
                        origin: Origin) -> tuple[StoredDataset, bool]:
        key = f"datasets/{target.dataset_id}/{content.sha256}.jsonl"
        draft = StoredDataset(dataset_id=target.dataset_id, version=0, content=content, origin=origin, key=key,
                              uri=self._store.uri(key), create_time=datetime.now(UTC))

        async def store() -> None:
            try:
                await self._store.put_file(key, path)
            except AlreadyExists:  # another version of this dataset, or a write whose record never came, holds them
                await self._check_object(key, content.sha256, str(target))

        return await self._index.register(draft, store)

    # ---- reading ------------------------------------------------------------------------

    async def get(self, name: str, field_path: str = "name") -> StoredDataset:
        target = parse_dataset_name(name, field_path)
        return await self._index.get(target.dataset_id, target.version)

    async def list(self, *, dataset: str, page_size: int, page_token: str) -> tuple[list[StoredDataset], str]:
        dataset_id = parse_dataset_name(dataset, "dataset", versioned=False).dataset_id if dataset else ""
        scope = PageScope("datasets", (dataset_id,))  # a token pages the versions of one dataset (or of all: "")
        after = decode_page_token(page_token, scope) if page_token else None
        rows = await self._index.list(dataset_id=dataset_id, limit=page_size + 1, after=after)
        page = rows[:page_size]
        token = encode_page_token(scope, page[-1].create_time, page[-1].name) if len(rows) > page_size and page else ""
        return page, token

    def pin(self, name: str) -> Pin | None:
        """What a job (or adapter version) stored naming the version ``name`` pins (``datasets/<id>/versions/<n>``;
        DatasetIndex.pin); None for a name that pins no version."""
        target = parse_dataset_name(name)
        return None if target.version is None else self._index.pin(target.dataset_id, target.version)

    async def delete(self, name: str) -> builtins.list[StoredDataset]:
        target = parse_dataset_name(name)
        return await self._index.delete(target.dataset_id, target.version, self._store.delete)

    async def trainable(self, name: str, field_path: str) -> StoredDataset:
        """The version ``name`` names (its newest, unpinned), if something may train on it: FAILED_PRECONDITION
        (GOLDEN_DATASET_NOT_TRAINABLE, naming ``field_path``) for a golden one."""
        record = await self.get(name, field_path)
        if record.content.kind is DatasetKind.GOLDEN:
            raise not_trainable(record.name, field_path)
        return record

    async def training_examples(self, name: str, field_path: str,
                                ) -> tuple[StoredDataset, builtins.list[Example], SplitRule | None]:
        """The version ``name`` names (its newest, unpinned; refused if golden), its examples less its test split,
        and the rule that holds its eval split out of them (None: every one is trained on), read back and checked
        against the recorded sha256."""
        record = await self.trainable(name, field_path)
        async with self._read(record) as path:
            examples = await asyncio.to_thread(load_jsonl, path, label=record.name, field_path=field_path)
        rule = record.content.split
        sides = [rule.of(e) for e in examples]
        if Split.TRAIN not in sides:
            raise InvalidArgument(
                "DATASET_EMPTY", f"the train split of {record.name} holds no examples",
                violations=[FieldViolation(field_path, "the train split of this version is empty")])
        if not rule.splits:
            return record, examples, None
        kept = [e for e, side in zip(examples, sides, strict=True) if side is not Split.TEST]
        return record, kept, rule if Split.EVAL in sides else None

    async def scored_part(self, name: str, field_path: str) -> ScoredPart:
        """What an evaluation scores of the version ``name`` names (its newest, unpinned): its test split, the part
        no job trains on, or all of it for a version without a split rule; examples of a training version, cases
        of a golden one. INVALID_ARGUMENT (DATASET_EMPTY) when its split rule leaves its test split empty."""
        record = await self.get(name, field_path)
        rule = record.content.split
        async with self._read(record) as path:
            if record.content.kind is DatasetKind.GOLDEN:
                cases = await asyncio.to_thread(load_golden, path, label=record.name, field_path=field_path)
                part = ScoredPart(record, cases=tuple(cases_in_test_split(cases, rule)), held_out=rule.splits)
            else:
                examples = await asyncio.to_thread(load_jsonl, path, label=record.name, field_path=field_path)
                test = rule.apply(examples)[Split.TEST] if rule.splits else examples
                part = ScoredPart(record, examples=tuple(test), held_out=rule.splits)
        if not (part.examples or part.cases):
            raise InvalidArgument(
                "DATASET_EMPTY", f"the test split of {record.name} holds no examples (its split rule: eval_fraction "
                f"{rule.eval_fraction:g}, test_fraction {rule.test_fraction:g}); store a version with a "
                "test_fraction to evaluate on",
                violations=[FieldViolation(field_path, "the test split of this version is empty")])
        return part

    @contextlib.asynccontextmanager
    async def _read(self, record: StoredDataset) -> AsyncIterator[Path]:
        """A scratch copy of a version's bytes, checked against the recorded sha256, for the block."""
        async with self._scratch() as scratch:
            path = scratch / "data.jsonl"
            try:
                await self._store.get_file(record.key, path)
            except NotFound as exc:
                raise DataLoss("ARTIFACT_MISSING", f"the bytes of {record.name} are missing from the artifact store",
                               metadata={"name": record.name, "key": record.key}) from exc
            if await asyncio.to_thread(_sha256, path) != record.content.sha256:
                raise _checksum_mismatch(record.name)
            yield path

    # ---- pieces -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _scratch(self) -> AsyncIterator[Path]:
        def make() -> Path:
            self._config.scratch_dir.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix="dataset-", dir=self._config.scratch_dir))

        folder = await asyncio.to_thread(make)
        try:
            yield folder
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def _fetch(self, source: Source, dest: Path, base_model: str = "") -> tuple[Path, Origin]:
        """A copy of the source's bytes at ``dest``, and the origin to record."""
        if isinstance(source, ServerPathOrigin):
            path = resolve_dataset_path(self._config.datasets_dir, source.path, "server_path")
            try:
                size = await asyncio.to_thread(lambda: path.stat().st_size)
                if size > self.max_bytes:
                    raise self.too_large(size, source.path)
                await asyncio.to_thread(shutil.copyfile, path, dest)
            except OSError as exc:  # e.g. a file the server may not read
                raise InvalidArgument("DATASET_NOT_FOUND", f"dataset {source.path!r} cannot be read ({exc.strerror})",
                                      violations=[FieldViolation("server_path", "cannot be read")]) from exc
            return dest, source
        if isinstance(source, S3Origin):
            bucket, key = parse_s3_uri(source.uri, "s3_uri")
            if self._objects is None:
                raise FailedPrecondition(
                    "S3_SOURCES_UNAVAILABLE", "this server's artifact store is not S3 (artifact_backend local), so it "
                    "reads no s3:// sources; upload the file (UploadDataset) or name a server path",
                    violations=[FieldViolation("s3_uri", "needs a server with artifact_backend s3")])
            found = await self._objects.object_size(bucket, key)
            if found is None:
                raise InvalidArgument("DATASET_NOT_FOUND", f"there is no object {source.uri}",
                                      violations=[FieldViolation("s3_uri", "no such object")])
            if found > self.max_bytes:
                raise self.too_large(found, source.uri)
            await self._objects.download(bucket, key, dest)
            return dest, source
        if self._feedback is None:
            raise FailedPrecondition("FEEDBACK_DATASETS_UNAVAILABLE", "this server has no feedback store")
        built = await self._feedback.build(source, Objective.SFT, base_model=base_model)
        data = b"".join(_jsonl_line(e) for e in built.examples)
        if len(data) > self.max_bytes:
            raise self.too_large(len(data), "the feedback window")
        await asyncio.to_thread(dest.write_bytes, data)
        return dest, FeedbackOrigin(source, built.window_start, built.window_end)

    async def _inspect(self, path: Path, split: SplitRule, kind: DatasetKind, *, label: str, field_path: str,
                       expect_sha256: str = "") -> DatasetContent:
        """Hash ``path`` (matching ``expect_sha256``, if given), validate it line by line as ``kind`` and count the
        splits."""

        def inspect() -> DatasetContent:
            size = path.stat().st_size
            if size > self.max_bytes:
                raise self.too_large(size, label)
            sha = _sha256(path)
            if expect_sha256 and sha != expect_sha256:
                raise InvalidArgument(
                    "SHA256_MISMATCH", f"the bytes received have sha256 {sha}, not the declared {expect_sha256}; "
                    "nothing was stored",
                    violations=[FieldViolation("metadata.sha256", "does not match the bytes sent")],
                    metadata={"declared": expect_sha256, "received": sha})
            return describe(path, sha256=sha, size=size, split=split, kind=kind, label=label, field_path=field_path)

        return await asyncio.to_thread(inspect)

    async def _check_object(self, key: str, sha256: str, name: str) -> None:
        """The object already at a content key must hold that content."""
        async with self._scratch() as scratch:
            await self._store.get_file(key, scratch / "existing")
            if await asyncio.to_thread(_sha256, scratch / "existing") != sha256:
                raise _checksum_mismatch(name)


def _check_kind(source: Source | bytes, kind: DatasetKind) -> None:
    """Golden cases come from a file; a window of feedback gives training examples only."""
    if kind is DatasetKind.GOLDEN and isinstance(source, FeedbackSource):
        raise InvalidArgument(
            "INVALID_DATASET_REQUEST", "feedback gives training examples, not golden cases; store golden cases from "
            "a file (an upload, server_path or s3_uri)",
            violations=[FieldViolation("kind", "a version frozen from feedback is of kind training")])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _jsonl_line(example: Example) -> bytes:
    """An example as a JSONL line ``load_jsonl`` reads back as the same example (its canonical form)."""
    return json.dumps(example.canonical(), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _label(origin: Origin) -> str:
    if isinstance(origin, ServerPathOrigin):
        return origin.path
    if isinstance(origin, S3Origin):
        return origin.uri
    if isinstance(origin, PreparedOrigin):
        return f"prepared by {origin.job}"
    return "from feedback"


def _field(origin: Origin) -> str:
    return {"server_path": "server_path", "s3": "s3_uri"}.get(origin.kind, "feedback")


def _checksum_mismatch(name: str) -> DataLoss:
    return DataLoss("DATASET_CHECKSUM_MISMATCH", f"the stored bytes of {name} do not match their sha256",
                    metadata={"name": name})

