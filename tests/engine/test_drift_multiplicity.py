"""Drift with repeated prompts: both sides keep their multiplicity (a question asked by 40 interactions is 40
incoming prompts, a prompt 40 examples were trained on is 40 reference prompts), so traffic that asks what the
active version was trained on, as often, does not drift; traffic that asks it in other proportions, or asks
something else, does. A repeated prompt is embedded once."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from engine.drift.detector import DriftDetector, stable_sample
from engine.drift.embeddings import BaseModelEmbedder
from engine.drift.ports import Embedder
from engine.drift.report import DriftConfig, DriftOutcome
from tests.engine.test_drift import BASE, NOW, Registry, Serving, Source, TrainingData, chat
from tests.fixtures.drift_prompts import capitals, recipes_and_code

COMMON = "What are your opening hours?"
TRAINED_ON = [COMMON] * 40 + [f"Question number {i}?" for i in range(20)]


class HashEmbedder:
    """A fixed random unit vector per text (the same text, the same vector); records every text it embeds."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, base_model: str, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        self.calls.append(list(texts))
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).normal(size=16)
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows)


@pytest.fixture(scope="module")
def llama(tiny_model_dir: Path) -> BaseModelEmbedder:
    return BaseModelEmbedder(lambda _: tiny_model_dir, max_tokens=64)


def detector(embedder: Embedder, incoming: list[str], trained_on: list[str], *,
             max_samples: int = 256) -> DriftDetector:
    return DriftDetector(
        DriftConfig(permutations=500, max_samples=max_samples, min_samples=20), source=Source(incoming),
        serving=Serving("v1.0"), versions=Registry(), training_data=TrainingData([chat(p) for p in trained_on]),
        embedder=embedder, base_models=lambda: {BASE}, clock=lambda: NOW)


# ---- the sample ---------------------------------------------------------------------------------------------------


def test_the_stable_sample_keeps_repeats_in_their_proportion() -> None:
    texts = ["A"] * 100 + ["B"] * 100 + [f"q{i}" for i in range(100)]
    sample = Counter(stable_sample(texts, 60))
    assert sum(sample.values()) == 60
    # Each copy is drawn on its own: about a third of the sample each, not all of one text and none of another.
    assert 10 <= sample["A"] <= 30 and 10 <= sample["B"] <= 30
    assert set(sample) <= set(texts)


def test_the_stable_sample_is_the_same_whatever_the_order() -> None:
    texts = ["A"] * 30 + ["B"] * 10 + [f"q{i}" for i in range(40)]
    shuffled = list(texts)
    random.Random(7).shuffle(shuffled)
    assert stable_sample(texts, 25) == stable_sample(shuffled, 25)
    assert Counter(stable_sample(texts, 1000)) == Counter(texts)


def test_the_stable_sample_of_distinct_texts_is_in_the_order_of_their_hash() -> None:
    texts = [f"q{i}" for i in range(30)]
    assert stable_sample(texts, 10) == tuple(sorted(texts, key=lambda t: hashlib.sha256(t.encode()).digest())[:10])


# ---- the detector -------------------------------------------------------------------------------------------------


async def test_incoming_identical_to_the_training_data_does_not_drift() -> None:
    report = await detector(HashEmbedder(), list(TRAINED_ON), TRAINED_ON).report(BASE, window=timedelta(days=30))
    assert report.outcome is DriftOutcome.NO_DRIFT, (
        f"{report.outcome}: p={report.p_value:.4f}, incoming {report.incoming} prompts vs reference "
        f"{report.reference} (of {report.reference_total}) although both sides are the same multiset")
    assert (report.incoming, report.reference, report.reference_total) == (60, 60, 60)


async def test_a_sampled_reference_keeps_its_repeats() -> None:
    report = await detector(HashEmbedder(), list(TRAINED_ON), TRAINED_ON, max_samples=30).report(
        BASE, window=timedelta(days=30))
    assert (report.incoming, report.reference, report.reference_total) == (30, 30, 60)
    assert report.outcome is DriftOutcome.NO_DRIFT


async def test_the_same_prompts_in_other_proportions_drift() -> None:
    # The common question is hardly asked any more; the others three times as often.
    incoming = [COMMON] * 2 + [f"Question number {i}?" for i in range(20)] * 3
    report = await detector(HashEmbedder(), incoming, TRAINED_ON).report(BASE, window=timedelta(days=30))
    assert report.outcome is DriftOutcome.DRIFTED and report.p_value < 0.01


async def test_a_repeated_prompt_is_embedded_once() -> None:
    hashes = HashEmbedder()
    incoming = [COMMON] * 25 + [f"Question number {i}?" for i in range(10, 30)]
    await detector(hashes, incoming, TRAINED_ON).report(BASE, window=timedelta(days=30))
    [texts] = hashes.calls
    assert sorted(texts) == sorted(set(incoming) | set(TRAINED_ON))


async def test_the_tiny_llama_tells_repeated_training_data_from_other_requests(llama: BaseModelEmbedder) -> None:
    trained_on = capitals(30, seed=1) * 3 + [capitals(1, seed=5)[0]] * 30
    same = list(trained_on)
    random.Random(3).shuffle(same)
    kept = await detector(llama, same, trained_on, max_samples=120).report(BASE, window=timedelta(days=30))
    assert kept.outcome is DriftOutcome.NO_DRIFT and kept.p_value > 0.2
    assert (kept.incoming, kept.reference) == (120, 120)
    other = recipes_and_code(40, seed=2) * 2
    moved = await detector(llama, other, trained_on, max_samples=120).report(BASE, window=timedelta(days=30))
    assert moved.outcome is DriftOutcome.DRIFTED and moved.p_value < 0.01
