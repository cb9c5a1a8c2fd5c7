"""What the registry stores about a version: semantic version numbers and the adapter record.

A record is the persisted metadata of one version (its lineage, what it was trained on,
its artifact's sha256, the publish attempt whose objects it names), kept apart from runtime
settings. It is stored as JSON in PostgreSQL and, at publish time, as ``metadata.json`` beside
the archive.
"""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from engine.domain import BaseProtection, BaseRetention, DatasetSummary, FisherSpace, LoraSpec, Pin, SuiteVerdict
from engine.errors import Aborted, FieldViolation, InvalidArgument, NotFound
from engine.names import VERSION_RE
from engine.splits import SplitRule

BASE_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

ARCHIVE_NAME = "adapter.tar.gz"
MANIFEST_NAME = "metadata.json"
FISHER_NAME = "fisher.safetensors"


class VersionNumber(NamedTuple):
    """A version's number; tuples order them (v1.2 < v1.2.1 < v1.3). Patch 0 is the minor version itself."""

    major: int
    minor: int
    patch: int = 0

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}" + (f".{self.patch}" if self.patch else "")


def next_number(under: tuple[int, ...], top: int | None) -> VersionNumber:
    """The number after ``top``, the highest taken under ``under`` (None: none is): under ``()`` a new major line,
    under ``(major,)`` the line's next minor, under ``(major, minor)`` its next patch. Majors and patches count
    from 1 (v1.0, v1.0.1: patch 0 is the minor version itself), minors from 0."""
    if len(under) > 2:
        raise ValueError(f"a version number has three parts; nothing comes under {under}")
    first = 0 if len(under) == 1 else 1
    parts = (*under, first if top is None else max(top + 1, first), 0, 0)
    return VersionNumber(parts[0], parts[1], parts[2])


def parse_version(version: str, field_path: str = "version") -> VersionNumber:
    """``"v1.2"`` -> ``(1, 2, 0)``, ``"v1.2.3"`` -> ``(1, 2, 3)``; anything else is INVALID_ARGUMENT on
    ``field_path``."""
    match = VERSION_RE.match(version)
    if not match:
        spelt = VERSION_RE.match(version.removesuffix(".0"))  # (None unless it ends with ".0": it did not match)
        hint = f" (patch 0 is the minor version itself: write {spelt[0]})" if spelt and spelt["patch"] is None else ""
        raise InvalidArgument(
            "MALFORMED_VERSION",
            f"{field_path} {version!r} is not a version like v1.0, v2.3 or v2.3.1{hint}",
            violations=[FieldViolation(field_path, "must look like vMAJOR.MINOR or vMAJOR.MINOR.PATCH, e.g. v1.2")],
        )
    return VersionNumber(int(match["major"]), int(match["minor"]), int(match["patch"] or 0))


def version_not_found(base_model: str, version: str) -> NotFound:
    """NOT_FOUND (ADAPTER_NOT_FOUND): ``version`` of ``base_model`` is not published."""
    return NotFound(
        "ADAPTER_NOT_FOUND", f"adapter {version} of base model {base_model} does not exist",
        metadata={"base_model": base_model, "version": version},
    )


RESERVATION_LOST = "RESERVATION_LOST"


def reservation_lost(base_model: str, version: str) -> Aborted:
    """ABORTED (RESERVATION_LOST): the reservation of ``version`` is no longer its publisher's (freed as stale, the
    number perhaps another's by now); the publish registered nothing and a retry takes a new reservation."""
    return Aborted(
        RESERVATION_LOST, f"the reservation of {base_model} {version} was lost before it was published; retry",
        metadata={"base_model": base_model, "version": version},
    )


def check_base_model_id(base_model: str, field_path: str = "base_model") -> str:
    """Base model ids become path segments and object keys, so they are restricted."""
    if not BASE_MODEL_RE.match(base_model) or ".." in base_model:
        raise InvalidArgument(
            "MALFORMED_BASE_MODEL",
            f"{field_path} {base_model!r} is not a base model id",
            violations=[FieldViolation(field_path, "letters, digits, '.', '_' and '-', at most 128")],
        )
    return base_model


def version_prefix(base_model: str, version: str) -> str:
    """Object key prefix of a version: ``adapters/<base-model>/<version>/``."""
    return f"adapters/{base_model}/{version}/"


def new_attempt() -> str:
    """A publish attempt's token: the reservation it takes and every object it stores but the manifest carry it."""
    return secrets.token_hex(8)


def attempt_key(base_model: str, version: str, attempt: str, name: str) -> str:
    """The key of the object ``name`` (ARCHIVE_NAME, FISHER_NAME) a publish ``attempt`` of ``version`` stores:
    ``adapters/<base-model>/<version>/<attempt>.<name>``. A number can change hands (a reservation freed as stale),
    so two attempts may publish one number; keys of their own mean neither ever writes, or cleans up, the other's
    objects. Only the manifest's key is the version's, and its create-only write decides between them. An
    ``attempt`` of "" is the layout of versions published before attempts: ``<version>/<name>``."""
    return version_prefix(base_model, version) + (f"{attempt}.{name}" if attempt else name)


class AdapterSource(enum.StrEnum):
    TRAINED = "TRAINED"
    IMPORTED = "IMPORTED"
    ONLINE = "ONLINE"  # published by an online learning session


@dataclass(frozen=True)
class AdapterEval:
    """A version's evaluation against the golden suite (written by LoraControl)."""

    suite_digest: str = ""
    baseline_version: str = ""
    metrics: tuple[tuple[str, float], ...] = ()
    regressions: int = 0
    passed: bool = False
    report_uris: tuple[str, ...] = ()
    time: datetime | None = None
    suites: tuple[SuiteVerdict, ...] = ()  # each suite's verdict (golden, target, retention, base)
    id: str = ""  # the evaluation's id under the version (its reports are stored by it)


@dataclass(frozen=True)
class AdapterRecord:
    """One version of an adapter for a base model. Replaced, never mutated."""

    base_model: str
    version: str
    lora: LoraSpec
    create_time: datetime
    sha256: str
    size_bytes: int
    source: AdapterSource = AdapterSource.TRAINED
    base_model_digest: str = ""
    parent_version: str = ""
    training_job: str = ""
    dataset: DatasetSummary | None = None
    train_loss: float = 0.0
    eval_loss: float | None = None  # on the job's eval split (None: it held none out)
    eval_split: SplitRule | None = None  # how the eval split was held out of ``dataset`` (None: none was)
    base_retention: BaseRetention | None = None  # of the base model's general knowledge (None: not measured)
    base_protection: BaseProtection | None = None  # what protected the base model's knowledge (None: not recorded)
    base_rehearsed_examples: int = 0
    ewc_lambda: float = 0.0
    ewc_gamma: float = 0.0
    fisher_snapshot: str = ""
    fisher_sha256: str = ""
    ewc_fisher_space: FisherSpace | None = None  # None: not trained with EWC, or recorded before spaces
    eval: AdapterEval | None = None
    labels: tuple[tuple[str, str], ...] = ()
    artifact_uri: str = ""
    request_id: str = ""
    delete_time: datetime | None = None
    attempt: str = ""  # the publish attempt whose objects these are (attempt_key); "": published before attempts

    @property
    def name(self) -> str:
        return f"baseModels/{self.base_model}/adapters/{self.version}"

    @property
    def number(self) -> VersionNumber:
        return parse_version(self.version)

    @property
    def prefix(self) -> str:
        return version_prefix(self.base_model, self.version)

    @property
    def archive_key(self) -> str:
        return attempt_key(self.base_model, self.version, self.attempt, ARCHIVE_NAME)

    @property
    def manifest_key(self) -> str:
        return self.prefix + MANIFEST_NAME

    @property
    def fisher_key(self) -> str:
        """A Fisher snapshot beside the archive: publishes no longer store one (engine.stores.fisher_store keeps
        snapshots), but versions published before may have one, removed with them."""
        return attempt_key(self.base_model, self.version, self.attempt, FISHER_NAME)


def lora_shape(lora: LoraSpec) -> tuple[int, frozenset[str]]:
    """What makes two adapters of one base model incompatible: rank and target modules."""
    return lora.rank, frozenset(lora.target_modules)


@dataclass(frozen=True)
class PublishRequest:
    """Everything a new version is published from: the PEFT directory and what it was made from."""

    base_model: str
    adapter_dir: Path
    parent: AdapterRecord | None = None
    major_bump: bool = False
    patch: bool = False  # a patch of the parent's minor version (v1.1 -> v1.1.1), as an online session publishes
    source: AdapterSource = AdapterSource.TRAINED
    training_job: str = ""
    dataset: DatasetSummary | None = None  # with its provenance, so a continuation can get the data again
    train_loss: float = 0.0
    eval_loss: float | None = None
    eval_split: SplitRule | None = None
    base_retention: BaseRetention | None = None
    base_protection: BaseProtection | None = None
    base_rehearsed_examples: int = 0
    ewc_lambda: float = 0.0  # the EWC anchoring a continuation trained with (0: none)
    ewc_gamma: float = 0.0
    fisher_snapshot: str = ""
    ewc_fisher_space: FisherSpace | None = None
    labels: tuple[tuple[str, str], ...] = ()
    request_id: str = ""
    # (job id, lease token): the version is registered only while that job's lease holds, checked in the same
    # transaction, so a worker that lost its job to another (a zombie) never publishes a second version.
    fence: tuple[str, str] | None = None
    # What the version names and needs live (its dataset version, its parent: engine.domain.Pin), checked in the
    # transaction that registers it.
    pins: tuple[Pin, ...] = ()
