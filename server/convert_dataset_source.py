"""Protobuf <-> domain conversion for a job's dataset source (see server/convert.py): a dataset built from feedback
(shared by training, Fisher and stored-dataset requests), the labels check it and a training spec's labels share,
and the summary of the dataset a job was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from engine.domain import DatasetSummary, FeedbackSource, JsonlSource, OnlineExamplesSource, StoredDatasetSource
from engine.errors import InvalidArgument, ViolationCollector
from learning.v1 import common_pb2 as common
from server.convert_jobs import timestamp_to_pb

MAX_FEEDBACK_DAYS = 3650  # a window longer than ten years is a mistake (and past a point, a date overflow)


def feedback_source_from_pb(f: common.FeedbackDataset, issues: ViolationCollector,
                            field_path: str) -> FeedbackSource:
    """A dataset built from feedback, its window and weights checked into ``issues`` (violations named
    ``<field_path>.days``, ...); zero fields take the defaults (7 days, 100 samples, weights 2.0 / 0.5)."""
    issues.check(f.days <= MAX_FEEDBACK_DAYS, f"{field_path}.days", f"at most {MAX_FEEDBACK_DAYS}")
    for name in ("thumbs_up_weight", "thumbs_down_weight"):
        value = getattr(f, name)
        issues.check(math.isfinite(value) and value >= 0, f"{field_path}.{name}",
                     "a finite number >= 0 (0: the default)")
    fd = FeedbackSource()
    return FeedbackSource(
        days=f.days or fd.days,
        labels=checked_labels(f.labels, f"{field_path}.labels", issues),
        adapter_version=f.adapter_version,
        min_samples=f.min_samples or fd.min_samples,
        force=f.force,
        thumbs_up_weight=f.thumbs_up_weight or fd.thumbs_up_weight,
        thumbs_down_weight=f.thumbs_down_weight or fd.thumbs_down_weight,
    )


def checked_labels(labels: Mapping[str, str], field_path: str,
                   issues: ViolationCollector) -> tuple[tuple[str, str], ...]:
    """``labels`` checked as AdapterService checks an adapter's (labels_from_pb: at most 64, keys and values
    printable, keys 1..256 characters, values at most 256), into ``issues``: a training job's labels are copied onto
    the adapter it publishes, and a feedback dataset's select feedback by the labels it was given."""
    from server.convert_adapter import labels_from_pb  # noqa: PLC0415 - that module imports this one

    try:
        return labels_from_pb(labels, field_path)
    except InvalidArgument as exc:
        issues.violations.extend(exc.violations)
        return ()


def feedback_source_to_pb(f: FeedbackSource) -> common.FeedbackDataset:
    return common.FeedbackDataset(
        days=f.days, labels=dict(f.labels), adapter_version=f.adapter_version, min_samples=f.min_samples,
        force=f.force, thumbs_up_weight=f.thumbs_up_weight, thumbs_down_weight=f.thumbs_down_weight,
    )


def dataset_to_pb(s: DatasetSummary) -> common.DatasetSummary:
    msg = common.DatasetSummary(
        digest=s.digest, example_count=s.example_count, composition=dict(s.composition),
        target_token_count=s.target_token_count, window_start=timestamp_to_pb(s.window_start),
        window_end=timestamp_to_pb(s.window_end),
    )
    if isinstance(s.source, JsonlSource):
        msg.jsonl.path = s.source.path
    elif isinstance(s.source, FeedbackSource):
        msg.feedback.CopyFrom(feedback_source_to_pb(s.source))
    elif isinstance(s.source, StoredDatasetSource):
        msg.dataset_name = s.source.name
    elif isinstance(s.source, OnlineExamplesSource):
        msg.online_examples.CopyFrom(common.OnlineExamples(session=f"onlineSessions/{s.source.session_id}",
                                                           first_sequence=s.source.first,
                                                           last_sequence=s.source.last))
    return msg
