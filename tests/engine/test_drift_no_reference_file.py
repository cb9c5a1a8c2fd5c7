"""An active version trained on a JSONL file that was removed (or rewritten into no valid dataset) after training has
training data that is not known here. VersionDatasets says so as FAILED_PRECONDITION PARENT_DATASET_UNKNOWN naming
the file (as PARENT_DATASET_CHANGED does for a file that changed), not as INVALID_ARGUMENT DATASET_NOT_FOUND on
spec.jsonl.path, a field no drift request (nor the continuation asking for its parent's data) holds. So the drift
report says NO_REFERENCE with a note (docs/drift.md, "No reference"), and a continuation gets a clear status."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from engine.continual.version_data import VersionDatasets
from engine.domain import DatasetSummary, JsonlSource, LoraSpec, dataset_digest
from engine.drift.detector import DriftDetector
from engine.drift.report import DriftConfig, DriftOutcome
from engine.errors import FailedPrecondition
from engine.registry import AdapterRecord
from engine.training.datasets import load_jsonl
from tests.engine.test_drift import BASE, NOW, Serving, Source

CHANGES = ["removed", "rewritten-invalid", "rewritten-empty", "replaced-by-a-directory"]


class Registry:
    def __init__(self, summary: DatasetSummary) -> None:
        self.summary = summary

    async def get(self, base_model: str, version: str, *, field_path: str = "version") -> AdapterRecord:
        return record(version, self.summary)


class NoEmbedder:
    def embed(self, base_model, texts):
        raise AssertionError("nothing is embedded without a reference")


def record(version: str, summary: DatasetSummary) -> AdapterRecord:
    return AdapterRecord(base_model=BASE, version=version, lora=LoraSpec(), create_time=NOW, sha256="", size_bytes=0,
                         dataset=summary)


def trained_then_changed(datasets_dir: Path, change: str) -> DatasetSummary:
    """The summary of a version trained on datasets/week-1.jsonl, and the file changed as ``change`` says since."""
    datasets_dir.mkdir(exist_ok=True)
    trained = datasets_dir / "week-1.jsonl"
    trained.write_text("".join(f'{{"prompt": "question {i}?", "completion": "answer {i}"}}\n' for i in range(30)))
    summary = DatasetSummary(digest=dataset_digest(load_jsonl(trained)), example_count=30,
                             source=JsonlSource("week-1.jsonl"))
    if change == "removed":  # the operator cleaned up the datasets directory after training
        trained.unlink()
    elif change == "rewritten-invalid":
        trained.write_text("not json any more\n")
    elif change == "rewritten-empty":
        trained.write_text("\n")
    elif change == "replaced-by-a-directory":
        trained.unlink()
        trained.mkdir()
    return summary


@pytest.mark.parametrize("change", CHANGES)
async def test_version_data_of_a_gone_jsonl_file_is_parent_dataset_unknown(tmp_path: Path, change: str) -> None:
    summary = trained_then_changed(tmp_path / "datasets", change)
    with pytest.raises(FailedPrecondition) as err:
        await VersionDatasets(datasets_dir=tmp_path / "datasets").of(record("v1.0", summary))
    assert err.value.reason == "PARENT_DATASET_UNKNOWN", \
        f"a {change} JSONL file should be PARENT_DATASET_UNKNOWN, got {err.value.reason}: {err.value.message}"
    assert err.value.metadata == {"version": "v1.0", "path": "week-1.jsonl"}, err.value.metadata
    assert "week-1.jsonl" in err.value.message and "v1.0" in err.value.message, err.value.message
    assert not err.value.violations, f"no request field is to blame: {err.value.violations}"


async def test_a_jsonl_file_still_there_is_read_back(tmp_path: Path) -> None:
    """The unchanged file is still the version's data (the error above is only for a file that is gone)."""
    summary = trained_then_changed(tmp_path / "datasets", "kept")
    data = await VersionDatasets(datasets_dir=tmp_path / "datasets").of(record("v1.0", summary))
    assert len(data.examples) == 30 and not data.note, data


@pytest.mark.parametrize("change", CHANGES)
async def test_an_active_version_whose_jsonl_file_is_gone_is_no_reference(tmp_path: Path, change: str) -> None:
    datasets_dir = tmp_path / "datasets"
    summary = trained_then_changed(datasets_dir, change)
    detector = DriftDetector(
        DriftConfig(permutations=100, min_samples=2), source=Source([f"question {i}?" for i in range(30)]),
        serving=Serving("v1.0"), versions=Registry(summary),
        training_data=VersionDatasets(datasets_dir=datasets_dir), embedder=NoEmbedder(),
        base_models=lambda: {BASE}, clock=lambda: NOW,
    )
    report = await detector.report(BASE, window=timedelta(days=30))
    assert report.outcome is DriftOutcome.NO_REFERENCE and not report.drifted, \
        f"a {change} training file should give NO_REFERENCE, got {report.outcome}: {report.note}"
    assert "week-1.jsonl" in report.note and "v1.0" in report.note, f"the note does not say which file: {report.note}"
    # what a training job's EWC could do instead is not a drift report's remedy (it read "name a Fisher snapshot in
    # spec.ewc.fisher_snapshot or disable EWC")
    assert "EWC" not in report.note and "fisher" not in report.note.lower(), report.note
    assert (report.statistic, report.p_value, report.incoming_total) == (0.0, 1.0, 30), report
