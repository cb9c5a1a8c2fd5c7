"""What a stored dataset version is, and how it is named: ``datasets/{dataset}`` and its versions (and ``s3://``
sources), where a version came from, its record, the part of it an evaluation scores, and the ports the catalogue
(engine.training.stored_datasets) keeps them through: the index of versions and the object store it reads S3
sources from.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from engine.domain import Example, FeedbackSource, Pin
from engine.errors import (
    FieldViolation,
    InvalidArgument,
)
from engine.golden import GoldenCase
from engine.training.dataset_content import (
    DatasetContent,
)

DATASET_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")
_NAME_RE = re.compile(r"^datasets/(?P<id>[^/]*)(?:/versions/(?P<version>[^/]*))?$")
_VERSION_RE = re.compile(r"^[1-9][0-9]{0,8}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


# ---- names --------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetName:
    """``datasets/{dataset_id}``, or one version of it."""

    dataset_id: str
    version: int | None = None

    @property
    def dataset(self) -> str:
        return f"datasets/{self.dataset_id}"

    def __str__(self) -> str:
        return self.dataset if self.version is None else f"{self.dataset}/versions/{self.version}"


def parse_dataset_name(name: str, field_path: str = "name", *, versioned: bool | None = None) -> DatasetName:
    """The dataset (and version) ``name`` names; INVALID_ARGUMENT (MALFORMED_NAME) otherwise.

    ``versioned``: True requires ``/versions/{n}``, False forbids it, None takes either. A dataset id is 1-63
    lower-case letters, digits, '.', '_' or '-', starting and ending with a letter or digit and without '..',
    so it is safe as a path segment and an object key."""
    match = _NAME_RE.match(name)
    dataset_id = match["id"] if match else ""
    version = match["version"] if match else None
    good = bool(match) and bool(DATASET_ID_RE.match(dataset_id)) and ".." not in dataset_id \
        and (version is None or bool(_VERSION_RE.match(version)))
    if good and versioned is True and version is None:
        good = False
    if good and versioned is False and version is not None:
        good = False
    if not good:
        shape = "datasets/{dataset} or datasets/{dataset}/versions/{n}" if versioned is None else \
            "datasets/{dataset}/versions/{n}" if versioned else "datasets/{dataset}"
        raise InvalidArgument(
            "MALFORMED_NAME",
            f"{field_path} {name!r} is not a dataset name like {shape}",
            violations=[FieldViolation(field_path, f"must look like {shape}; {{dataset}}: 1-63 lower-case "
                                                   "letters, digits, '.', '_' or '-', starting and ending with a "
                                                   "letter or digit")],
        )
    return DatasetName(dataset_id, int(version) if version is not None else None)


def parse_s3_uri(uri: str, field_path: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``; INVALID_ARGUMENT (MALFORMED_S3_URI) otherwise, also for a key with
    an empty, '.' or '..' segment."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    segments = key.split("/")
    problem = ""
    if not uri.startswith("s3://"):
        problem = "must start with s3://"
    elif not _BUCKET_RE.match(bucket) or ".." in bucket:
        problem = "must name a bucket: 3-63 lower-case letters, digits, '.' and '-'"
    elif not key or len(key.encode()) > 1024:
        problem = "must name an object key of 1-1024 bytes after the bucket"
    elif any(s in ("", ".", "..") for s in segments):
        problem = "the key must not contain empty, '.' or '..' segments"
    if problem:
        raise InvalidArgument("MALFORMED_S3_URI", f"{field_path} {uri!r} {problem}",
                              violations=[FieldViolation(field_path, problem)])
    return bucket, key


# ---- what a version is ------------------------------------------------------------------


@dataclass(frozen=True)
class UploadOrigin:
    filename: str = ""
    kind: Literal["upload"] = "upload"


@dataclass(frozen=True)
class ServerPathOrigin:
    path: str  # relative to the datasets directory
    kind: Literal["server_path"] = "server_path"


@dataclass(frozen=True)
class S3Origin:
    uri: str
    kind: Literal["s3"] = "s3"


@dataclass(frozen=True)
class FeedbackOrigin:
    source: FeedbackSource
    window_start: datetime
    window_end: datetime
    kind: Literal["feedback"] = "feedback"


@dataclass(frozen=True)
class PreparedOrigin:
    """Question-answer pairs a data preparation job wrote from documents (engine.preparation)."""

    job: str  # "preparationJobs/{id}"
    documents: tuple[str, ...] = ()  # their file names
    kind: Literal["prepared"] = "prepared"


Origin = UploadOrigin | ServerPathOrigin | S3Origin | FeedbackOrigin | PreparedOrigin
Source = ServerPathOrigin | S3Origin | FeedbackSource  # what CreateDataset and ValidateDataset take


@dataclass(frozen=True)
class StoredDataset:
    """One version: its content, where it came from, and its object in the artifact store."""

    dataset_id: str
    version: int
    content: DatasetContent
    origin: Origin
    key: str
    uri: str
    create_time: datetime

    @property
    def name(self) -> str:
        return str(DatasetName(self.dataset_id, self.version))


@dataclass(frozen=True)
class ScoredPart:
    """What an evaluation scores of a version: its test split (the part no job trains on), or all of it without a
    split rule (``held_out`` False); as examples of a training version, as cases of a golden one."""

    record: StoredDataset
    examples: tuple[Example, ...] = ()
    cases: tuple[GoldenCase, ...] = ()
    held_out: bool = False


# ---- ports ----------------------------------------------------------------------------


Cursor = tuple[datetime, str]  # (create_time, name) of a listing's last version


class DatasetIndex(Protocol):
    """The versions' records (engine.stores.dataset_store): numbered per dataset, never renumbered."""

    async def register(self, draft: StoredDataset,
                       store: Callable[[], Awaitable[None]]) -> tuple[StoredDataset, bool]:
        """Under the dataset's lock: the live version with ``draft``'s sha256, split rule and kind, if there is one,
        and False; otherwise ``store()`` (which makes the bytes durable), then ``draft`` recorded with the next
        version number and its creation time, and True."""
        ...

    async def get(self, dataset_id: str, version: int | None) -> StoredDataset:
        """The live version, or the newest live one; NOT_FOUND (STORED_DATASET_NOT_FOUND) otherwise."""
        ...

    def pin(self, dataset_id: str, version: int) -> Pin:
        """The version, for what is stored naming it (a training job) to pin (engine.domain.Pin): checked READY in the
        storing transaction (NOT_FOUND, STORED_DATASET_NOT_FOUND, otherwise); a delete waits for that transaction,
        then finds what it stored and refuses (DATASET_IN_USE)."""
        ...

    async def list(self, *, dataset_id: str, limit: int, after: Cursor | None) -> list[StoredDataset]:
        """Live versions (of one dataset, or of all with ``dataset_id`` empty), newest first."""
        ...

    async def delete(self, dataset_id: str, version: int | None,
                     remove: Callable[[builtins.list[str]], Awaitable[None]]) -> builtins.list[StoredDataset]:
        """Under the dataset's lock: refuse (FAILED_PRECONDITION DATASET_IN_USE) if a training job that has not
        ended or a published adapter version names one of the versions; otherwise record them deleted, then
        ``remove`` the objects no live version shares; NOT_FOUND if there is no such live version."""
        ...


class ObjectSource(Protocol):
    """Objects of any bucket, read with the S3 artifact store's client (engine.stores.artifacts_s3)."""

    async def object_size(self, bucket: str, key: str) -> int | None:
        """The object's size, or None if there is no such object."""
        ...

    async def download(self, bucket: str, key: str, dest: Path) -> None: ...
