"""Protobuf <-> domain conversion for the adapter registry, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from engine.domain import LEGACY_FISHER_SPACE, SuiteKind, SuiteVerdict
from engine.errors import FieldViolation, InvalidArgument, ViolationCollector
from engine.lora.state import EvalSummary
from engine.registry import AdapterEval, AdapterRecord, AdapterSource
from learning.v1 import adapter_pb2 as pb
from learning.v1 import common_pb2 as common
from server.convert import FISHER_SPACE_TO_PB, base_protection_to_pb, base_retention_to_pb
from server.convert_dataset_source import dataset_to_pb
from server.convert_jobs import timestamp_to_pb

_SOURCE = {
    AdapterSource.TRAINED: pb.ADAPTER_SOURCE_TRAINED,
    AdapterSource.IMPORTED: pb.ADAPTER_SOURCE_IMPORTED,
    AdapterSource.ONLINE: pb.ADAPTER_SOURCE_ONLINE,
}
MAX_LABELS = 64
MAX_LABEL_LENGTH = 256


_SUITE_KIND = {k: cast(pb.EvalSuiteKind, pb.EvalSuiteKind.Value(f"EVAL_SUITE_KIND_{k.name}")) for k in SuiteKind}


def suite_to_pb(v: SuiteVerdict) -> pb.EvalSuiteVerdict:
    return pb.EvalSuiteVerdict(
        name=v.name, kind=_SUITE_KIND[v.kind], digest=v.digest, cases=v.cases,
        metrics=[common.EvalMetric(name=n, value=x) for n, x in v.metrics], regressions=v.regressions,
        passed=v.passed, failed_checks=list(v.failed_checks), regressed_prompts=list(v.regressed), note=v.note,
    )


def eval_to_pb(result: AdapterEval | EvalSummary) -> pb.AdapterEvalSummary:
    """A gate decision, as recorded on the version or returned by LoraControl."""
    return pb.AdapterEvalSummary(
        suite_digest=result.suite_digest, baseline_version=result.baseline_version,
        metrics=[common.EvalMetric(name=n, value=v) for n, v in result.metrics],
        regressions=result.regressions, passed=result.passed, report_uris=list(result.report_uris),
        time=timestamp_to_pb(result.time), suites=[suite_to_pb(v) for v in result.suites],
        failed_checks=[f"{v.name}: {check}" for v in result.suites for check in v.failed_checks],
        evaluation_id=result.id,
    )


def _ewc_space_to_pb(record: AdapterRecord) -> common.FisherSpace:
    """The record's EWC space; one trained with EWC before spaces were recorded was on the entries."""
    if record.ewc_fisher_space is not None:
        return FISHER_SPACE_TO_PB[record.ewc_fisher_space]
    if record.fisher_snapshot:
        return FISHER_SPACE_TO_PB[LEGACY_FISHER_SPACE]
    return common.FISHER_SPACE_UNSPECIFIED


def adapter_to_pb(record: AdapterRecord) -> pb.Adapter:
    lora = record.lora
    msg = pb.Adapter(
        name=record.name,
        base_model=record.base_model,
        version=record.version,
        base_model_digest=record.base_model_digest,
        source=_SOURCE[record.source],
        training_job=record.training_job,
        parent_version=record.parent_version,
        lora_config=common.LoraConfig(
            rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout, target_modules=list(lora.target_modules)
        ),
        train_loss=record.train_loss,
        ewc_lambda=record.ewc_lambda,
        ewc_gamma=record.ewc_gamma,
        fisher_snapshot=record.fisher_snapshot,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
        create_time=timestamp_to_pb(record.create_time),
        labels=dict(record.labels),
        artifact_uri=record.artifact_uri,
        delete_time=timestamp_to_pb(record.delete_time),
        request_id=record.request_id,
        ewc_fisher_space=_ewc_space_to_pb(record),
    )
    if record.dataset is not None:
        msg.dataset.CopyFrom(dataset_to_pb(record.dataset))
    if record.eval is not None:
        msg.eval.CopyFrom(eval_to_pb(record.eval))
    if record.base_retention is not None:
        msg.base_retention.CopyFrom(base_retention_to_pb(record.base_retention))
    if record.base_protection is not None:
        msg.base_protection.CopyFrom(base_protection_to_pb(record.base_protection))
    msg.base_rehearsed_examples = record.base_rehearsed_examples
    if record.eval_loss is not None:
        msg.eval_loss = record.eval_loss
    if record.eval_split is not None:
        msg.eval_fraction = record.eval_split.eval_fraction
    return msg


def labels_from_pb(labels: Mapping[str, str], field_path: str = "labels") -> tuple[tuple[str, str], ...]:
    issues = ViolationCollector()
    issues.check(len(labels) <= MAX_LABELS, field_path, f"at most {MAX_LABELS} labels")
    for key, value in labels.items():
        issues.check(0 < len(key) <= MAX_LABEL_LENGTH and key.isprintable(), f"{field_path}[{key}]",
                     f"keys must be 1..{MAX_LABEL_LENGTH} printable characters")
        issues.check(len(value) <= MAX_LABEL_LENGTH and value.isprintable(), f"{field_path}[{key}]",
                     f"values must be at most {MAX_LABEL_LENGTH} printable characters")
    issues.raise_if_any("INVALID_LABELS", "invalid labels")
    return tuple(sorted(labels.items()))


def required_version(version: str, field_path: str = "version") -> str:
    if not version:
        raise InvalidArgument(
            "MISSING_VERSION", f"{field_path} is required",
            violations=[FieldViolation(field_path, "name a version, e.g. v1.0")],
        )
    return version
