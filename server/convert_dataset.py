"""Protobuf <-> domain conversion for stored datasets (the DatasetService)."""

from __future__ import annotations

from engine.domain import FeedbackSource
from engine.errors import FieldViolation, InvalidArgument, ViolationCollector
from engine.splits import SplitRule
from engine.training.dataset_content import DatasetContent, DatasetKind, SplitCounts
from engine.training.dataset_records import (
    FeedbackOrigin,
    PreparedOrigin,
    S3Origin,
    ServerPathOrigin,
    Source,
    StoredDataset,
    UploadOrigin,
)
from learning.v1 import common_pb2 as common
from learning.v1 import dataset_pb2 as pb
from server.convert_dataset_source import feedback_source_from_pb, feedback_source_to_pb
from server.convert_jobs import timestamp_to_pb

MAX_FILENAME = 255
_KINDS: dict[int, DatasetKind] = {
    pb.DATASET_KIND_UNSPECIFIED: DatasetKind.TRAINING, pb.DATASET_KIND_TRAINING: DatasetKind.TRAINING,
    pb.DATASET_KIND_GOLDEN: DatasetKind.GOLDEN,
}
_KINDS_PB = {DatasetKind.TRAINING: pb.DATASET_KIND_TRAINING, DatasetKind.GOLDEN: pb.DATASET_KIND_GOLDEN}


def kind_from_pb(value: int, field_path: str) -> DatasetKind:
    """A request's dataset kind (unspecified: training); INVALID_ARGUMENT (INVALID_DATASET_REQUEST) for a number the
    contract does not define."""
    kind = _KINDS.get(value)
    if kind is None:
        raise InvalidArgument(
            "INVALID_DATASET_REQUEST", f"{field_path} {value} is not a dataset kind",
            violations=[FieldViolation(field_path, "DATASET_KIND_TRAINING (or unspecified) or DATASET_KIND_GOLDEN")])
    return kind


def split_from_pb(msg: pb.SplitRule, field_path: str) -> SplitRule:
    """The split rule of a request; INVALID_ARGUMENT (INVALID_SPLIT_RULE) naming the bad fraction otherwise."""
    try:
        return SplitRule(eval_fraction=msg.eval_fraction, test_fraction=msg.test_fraction, seed=msg.seed)
    except ValueError:
        violations = [FieldViolation(f"{field_path}.{name}", "must be a finite number >= 0")
                      for name in ("eval_fraction", "test_fraction")
                      if not getattr(msg, name) >= 0 or getattr(msg, name) == float("inf")]
        if violations:  # a fraction negative or not a number: said as such, not as what it leaves to train on
            named = ", ".join(v.field for v in violations)
            raise InvalidArgument("INVALID_SPLIT_RULE", f"{named}: must be a finite number >= 0",
                                  violations=violations) from None
        raise InvalidArgument(
            "INVALID_SPLIT_RULE",
            f"{field_path} (eval {msg.eval_fraction:g}, test {msg.test_fraction:g}) does not leave examples to "
            "train on", violations=[FieldViolation(field_path, "eval_fraction + test_fraction must be below 1")],
        ) from None


def source_from_pb(msg: pb.CreateDatasetRequest | pb.ValidateDatasetRequest) -> Source | None:
    """The source a Create or Validate request names (ValidateDataset's content is the caller's), or None."""
    which = msg.WhichOneof("source")
    if which == "server_path":
        return ServerPathOrigin(msg.server_path)
    if which == "s3_uri":
        return S3Origin(msg.s3_uri)
    if which == "feedback":
        return feedback_from_pb(msg.feedback)
    return None


def feedback_from_pb(f: common.FeedbackDataset) -> FeedbackSource:
    """A feedback source of a dataset request, its window and weights checked (INVALID_DATASET_REQUEST)."""
    issues = ViolationCollector()
    source = feedback_source_from_pb(f, issues, "feedback")
    issues.raise_if_any("INVALID_DATASET_REQUEST", "invalid feedback source")
    return source


def missing_source() -> InvalidArgument:
    return InvalidArgument(
        "INVALID_DATASET_REQUEST", "name where the examples come from: server_path, s3_uri or feedback",
        violations=[FieldViolation("source", "set server_path, s3_uri or feedback")],
    )


def check_filename(filename: str) -> str:
    if len(filename) > MAX_FILENAME or not filename.isprintable():
        raise InvalidArgument(
            "INVALID_DATASET_REQUEST", f"metadata.filename must be at most {MAX_FILENAME} printable characters",
            violations=[FieldViolation("metadata.filename", f"at most {MAX_FILENAME} printable characters")],
        )
    return filename


def counts_to_pb(c: SplitCounts) -> pb.SplitCounts:
    return pb.SplitCounts(train=c.train, eval=c.eval, test=c.test)


def dataset_to_pb(d: StoredDataset) -> pb.Dataset:
    c = d.content
    msg = pb.Dataset(
        name=d.name, dataset=f"datasets/{d.dataset_id}", version=d.version, sha256=c.sha256, size_bytes=c.size_bytes,
        digest=c.digest, example_count=c.example_count, composition=dict(c.composition),
        split_counts=counts_to_pb(c.counts), create_time=timestamp_to_pb(d.create_time), uri=d.uri,
        kind=_KINDS_PB[c.kind],
    )
    if c.split.splits:
        msg.split.CopyFrom(pb.SplitRule(eval_fraction=c.split.eval_fraction, test_fraction=c.split.test_fraction,
                                        seed=c.split.seed))
    origin = d.origin
    if isinstance(origin, UploadOrigin):
        msg.upload.filename = origin.filename
    elif isinstance(origin, ServerPathOrigin):
        msg.server_path = origin.path
    elif isinstance(origin, S3Origin):
        msg.s3_uri = origin.uri
    elif isinstance(origin, FeedbackOrigin):
        msg.feedback.CopyFrom(feedback_source_to_pb(origin.source))
        msg.window_start.CopyFrom(timestamp_to_pb(origin.window_start))
        msg.window_end.CopyFrom(timestamp_to_pb(origin.window_end))
    elif isinstance(origin, PreparedOrigin):
        msg.prepared.CopyFrom(pb.PreparedDataset(preparation_job=origin.job, documents=list(origin.documents)))
    return msg


def content_to_pb(c: DatasetContent) -> pb.ValidateDatasetResponse:
    return pb.ValidateDatasetResponse(
        sha256=c.sha256, size_bytes=c.size_bytes, digest=c.digest, example_count=c.example_count,
        composition=dict(c.composition), split_counts=counts_to_pb(c.counts), kind=_KINDS_PB[c.kind],
    )
