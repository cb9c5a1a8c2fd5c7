"""Drift detection on the tiny Llama's embeddings: prompts of another distribution move the statistic over the
threshold, prompts of the same distribution do not; the test's arithmetic; the report's bad input and the cases
with nothing to compare."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from engine.domain import ChatMessage, Example, LoraSpec
from engine.drift.detector import DriftDetector, prompt_of, stable_sample
from engine.drift.embeddings import BaseModelEmbedder
from engine.drift.ports import IncomingPrompts
from engine.drift.report import DriftConfig, DriftOutcome, EvalPoint, FeedbackBucket
from engine.drift.statistic import gaussian_kernel, mmd2, two_sample_test
from engine.errors import FailedPrecondition, InvalidArgument, NotFound
from engine.registry import AdapterRecord, ServingRole
from tests.fixtures.drift_prompts import capitals, recipes_and_code

NOW = datetime(2026, 6, 1, tzinfo=UTC)
BASE = "tiny-llama"


# ---- the statistic ----------------------------------------------------------------------------------------------


def test_the_permuted_statistic_is_the_unbiased_mmd2_computed_pair_by_pair() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3))
    kernel = gaussian_kernel(np.concatenate([x, y]))
    pairs = lambda a, b: [kernel[i, j] for i in a for j in b if i != j]  # noqa: E731
    xs, ys = range(7), range(7, 12)
    by_pairs = np.mean(pairs(xs, xs)) + np.mean(pairs(ys, ys)) - 2 * np.mean(pairs(xs, ys))
    assert mmd2(kernel, 7) == pytest.approx(by_pairs, abs=1e-12)
    result = two_sample_test(x, y, permutations=1000, significance=0.05, seed=0)
    assert result.statistic == pytest.approx(by_pairs, abs=1e-12)
    # Every split of 12 into 7 and 5 is 792 splits: scipy tests them all, and the p-value is exact.
    splits = [mmd2(gaussian_kernel(np.concatenate([np.concatenate([x, y])[list(s)],
                                                   np.delete(np.concatenate([x, y]), list(s), axis=0)])), 7)
              for s in itertools.combinations(range(12), 7)]
    assert result.permutations == 792
    assert result.p_value == pytest.approx(np.mean(np.array(splits) >= by_pairs - 1e-12), abs=1e-9)


def test_shifted_gaussians_are_over_the_threshold_and_equal_ones_are_not() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(100, 16)), rng.normal(size=(100, 16))
    shifted = rng.normal(loc=0.5, size=(100, 16))
    same = two_sample_test(a, b, permutations=300, significance=0.05, seed=0)
    moved = two_sample_test(a, shifted, permutations=300, significance=0.05, seed=0)
    assert same.statistic < same.threshold and same.p_value > 0.05
    assert moved.statistic > moved.threshold and moved.p_value < 0.01


# ---- the detector over honest in-memory ports ---------------------------------------------------------------------


@dataclass
class Source:
    prompts: list[str] = field(default_factory=list)
    buckets: list[FeedbackBucket] = field(default_factory=list)
    evals: list[EvalPoint] = field(default_factory=list)

    async def incoming(self, base_model: str, *, start: datetime, end: datetime, limit: int) -> IncomingPrompts:
        return IncomingPrompts(stable_sample(self.prompts, limit), len(self.prompts))

    async def feedback_buckets(self, base_model, *, start, end, buckets, rating_positive_min, rating_negative_max):
        return self.buckets

    async def evaluations(self, base_model, *, start, end, limit):
        return self.evals[-limit:]


@dataclass
class Serving:
    active: str = ""

    async def versions(self, base_model: str) -> dict[ServingRole, str]:
        return {ServingRole.ACTIVE: self.active} if self.active else {}


class Registry:
    async def get(self, base_model: str, version: str, *, field_path: str = "version") -> AdapterRecord:
        return AdapterRecord(base_model=base_model, version=version, lora=LoraSpec(), create_time=NOW, sha256="",
                             size_bytes=0)


@dataclass(frozen=True)
class Data:
    examples: list[Example]


@dataclass
class TrainingData:
    examples: list[Example] | None

    async def of(self, record: AdapterRecord) -> Data:
        if self.examples is None:
            raise FailedPrecondition("PARENT_DATASET_UNKNOWN", f"the training data of {record.version} is not known")
        return Data(self.examples)


def chat(prompt: str) -> Example:
    return Example(messages=(ChatMessage("user", prompt), ChatMessage("assistant", "An answer.")))


@pytest.fixture(scope="module")
def embedder(tiny_model_dir: Path) -> BaseModelEmbedder:
    return BaseModelEmbedder(lambda _: tiny_model_dir, max_tokens=64)


def detector(embedder, incoming: list[str], *, trained_on: list[str] | None, active: str = "v1.0",
             **config) -> DriftDetector:
    cfg = DriftConfig(**{"permutations": 300, "max_samples": 120, "min_samples": 20, **config})
    return DriftDetector(
        cfg, source=Source(incoming), serving=Serving(active), versions=Registry(),
        training_data=TrainingData(None if trained_on is None else [chat(p) for p in trained_on]),
        embedder=embedder, base_models=lambda: {BASE}, clock=lambda: NOW,
    )


async def test_prompts_of_another_distribution_drift(embedder) -> None:
    trained_on = capitals(120, seed=1)
    report = await detector(embedder, recipes_and_code(80, seed=2), trained_on=trained_on).report(
        BASE, window=timedelta(days=30))
    assert report.outcome is DriftOutcome.DRIFTED and report.drifted
    assert report.statistic > report.threshold > 0
    assert report.p_value < 0.01
    assert (report.incoming, report.reference, report.reference_version) == (80, len(trained_on), "v1.0")
    assert report.window_start == NOW - timedelta(days=30) and report.window_end == NOW
    assert len(report.moved) == 10
    assert all(m.prompt in recipes_and_code(80, seed=2) and m.nearest_reference in trained_on for m in report.moved)
    assert [m.distance for m in report.moved] == sorted((m.distance for m in report.moved), reverse=True)


async def test_prompts_of_the_same_distribution_do_not_drift(embedder) -> None:
    report = await detector(embedder, capitals(80, seed=3), trained_on=capitals(120, seed=1)).report(
        BASE, window=timedelta(days=30))
    assert report.outcome is DriftOutcome.NO_DRIFT and not report.drifted
    assert report.statistic < report.threshold
    assert report.p_value > 0.2  # not a near miss


async def test_a_mix_drifts_by_its_share_of_new_prompts(embedder) -> None:
    """A third of the traffic from elsewhere moves the statistic over the threshold, a smaller share less."""
    trained_on = capitals(120, seed=1)
    statistics = []
    for share in (0, 10, 30):
        mixed = capitals(90 - share, seed=4) + recipes_and_code(share, seed=5)
        statistics.append((await detector(embedder, mixed, trained_on=trained_on).report(BASE)).statistic)
    assert statistics == sorted(statistics)
    report = await detector(embedder, capitals(60, seed=4) + recipes_and_code(30, seed=5),
                            trained_on=trained_on).report(BASE)
    assert report.drifted


async def test_the_same_data_gives_the_same_report(embedder) -> None:
    first = await detector(embedder, recipes_and_code(40, seed=2), trained_on=capitals(60, seed=1)).report(BASE)
    again = await detector(embedder, recipes_and_code(40, seed=2), trained_on=capitals(60, seed=1)).report(BASE)
    assert (first.statistic, first.threshold, first.p_value, first.moved) == (
        again.statistic, again.threshold, again.p_value, again.moved)


async def test_no_active_version_is_no_reference_and_says_why(embedder) -> None:
    report = await detector(embedder, recipes_and_code(40, seed=2), trained_on=capitals(60, seed=1),
                            active="").report(BASE)
    assert report.outcome is DriftOutcome.NO_REFERENCE and not report.drifted
    assert "serves alone" in report.note and report.reference_version == ""
    assert (report.statistic, report.p_value, report.incoming_total) == (0.0, 1.0, 40)


async def test_unknown_training_data_is_no_reference(embedder) -> None:
    report = await detector(embedder, recipes_and_code(40, seed=2), trained_on=None).report(BASE)
    assert report.outcome is DriftOutcome.NO_REFERENCE and report.reference_version == "v1.0"
    assert "not known here" in report.note


async def test_too_few_prompts_are_not_tested(embedder) -> None:
    report = await detector(embedder, recipes_and_code(5, seed=2), trained_on=capitals(60, seed=1)).report(BASE)
    assert report.outcome is DriftOutcome.TOO_FEW_SAMPLES and not report.drifted
    assert "5 incoming" in report.note


@pytest.mark.parametrize(("window", "end", "field_path"), [
    (timedelta(0), None, "window"),
    (timedelta(days=-1), None, "window"),
    (timedelta(days=400), None, "window"),
    (timedelta(days=1), NOW + timedelta(days=1), "end_time"),
    (timedelta(days=1), datetime(2026, 5, 1), "end_time"),
])
async def test_a_bad_window_names_its_field(embedder, window, end, field_path) -> None:
    with pytest.raises(InvalidArgument) as err:
        await detector(embedder, [], trained_on=[]).report(BASE, window=window, end=end)
    assert err.value.reason == "INVALID_DRIFT_REQUEST"
    assert [v.field for v in err.value.violations] == [field_path]


async def test_an_unknown_base_model_is_not_found(embedder) -> None:
    with pytest.raises(NotFound) as err:
        await detector(embedder, [], trained_on=[]).report("no-such-model")
    assert err.value.reason == "BASE_MODEL_NOT_FOUND" and err.value.metadata == {"base_model": "no-such-model"}


def test_the_prompt_of_an_example_is_its_last_user_turn() -> None:
    talk = Example(messages=(ChatMessage("system", "Be brief."), ChatMessage("user", " first "),
                             ChatMessage("assistant", "a"), ChatMessage("user", " second "),
                             ChatMessage("assistant", "b")))
    assert prompt_of(talk) == "second"
    assert prompt_of(Example(prompt=" Capital of Spain? ", completion="Madrid")) == "Capital of Spain?"
