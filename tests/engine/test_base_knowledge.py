"""The base-knowledge probe (engine.continual.base_knowledge): what counts as a right answer, the suite of what
the base model answers right, and base retention measured on a real (tiny) model before and after training."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine.continual import rehearsal
from engine.continual.base_knowledge import (
    BaseKnowledgeProbe,
    GreedyAnswers,
    Question,
    build_suite,
    is_right,
    retention,
    shipped_questions,
)
from engine.jobs.core import Warned
from engine.jobs.ports import CancelToken
from engine.training.loading import load_for_training
from engine.training.models import DevicePlan
from engine.training.recipe import run_training
from engine.training.spec import EvalReported
from tests.engine.test_training import RecordingSink, make_run


@pytest.mark.parametrize(("answer", "accepted", "right"), [
    ("The capital of France is Paris.", ("Paris",), True),
    ("paris, of course", ("Paris",), True),
    ("The capital of France is Parisville.", ("Paris",), False),  # whole words only
    ("2 + 2 = 4", ("4", "four"), True),
    ("There are 40 of them", ("4", "four"), False),
    ("It has four sides", ("4", "four"), True),
    ("Carbon dioxide (CO2)", ("carbon dioxide",), True),
    ("", ("Paris",), False),
])
def test_an_answer_is_right_when_an_accepted_answer_appears_in_it_as_whole_words(
        answer: str, accepted: tuple[str, ...], right: bool) -> None:
    assert is_right(answer, accepted) is right


def test_the_shipped_questions_are_many_distinct_and_answerable() -> None:
    questions = shipped_questions()
    assert len(questions) >= 90
    assert len({q.prompt for q in questions}) == len(questions)
    assert all(q.answers and all(a.strip() for a in q.answers) for q in questions)


def test_the_suite_keeps_what_the_base_answers_right_and_retention_counts_what_stays_right() -> None:
    questions = [Question("Capital of France?", ("Paris",)), Question("2 + 2?", ("4", "four")),
                 Question("Red planet?", ("Mars",))]
    base = {"Capital of France?": "Paris.", "2 + 2?": "It is four.", "Red planet?": "Venus."}
    suite = build_suite(questions, lambda prompts: [base[p] for p in prompts], key="k")
    assert (suite.asked, [c.prompt for c in suite.cases]) == (3, ["Capital of France?", "2 + 2?"])
    assert [c.reference for c in suite.cases] == ["Paris.", "It is four."]

    after = {"Capital of France?": "Hefupa.", "2 + 2?": "4"}
    kept = retention(suite, lambda prompts: [after[p] for p in prompts])
    assert (kept.retention, kept.kept, kept.cases, kept.lost) == (0.5, 1, 2, ("Capital of France?",))


@pytest.mark.model
def test_the_suite_and_the_base_answers_are_cached_per_device_and_precision(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A job in FP32 and one under bf16 autocast (AUTO on a GPU) on one base: each its own suite and answers,
    # computed at its precision; the same plan again reads its cache.
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    fp32, bf16 = DevicePlan("cpu", None, "cpu, fp32"), DevicePlan("cpu", torch.bfloat16, "cpu, bf16 autocast")
    asked: list[str] = []

    def generate(prompts):
        asked.extend(prompts)
        return ["4" for _ in prompts]

    class Answers:
        def __init__(self, model, tokenizer, plan, **kwargs) -> None:
            pass

        def answers(self, prompts):
            return [(a, True) for a in generate(prompts)]

    monkeypatch.setattr(rehearsal, "GreedyAnswers", Answers)
    probe = BaseKnowledgeProbe(tmp_path / "cache", [Question("What is 2 + 2?", ("4",))], min_cases=1)
    answers = rehearsal.SelfRehearsal(tmp_path / "cache", ["Say a number."])
    suites = [probe._suite(object(), generate, plan, base, "none") for plan in (fp32, bf16, fp32)]
    pairs = [answers.pairs(object(), None, plan, base, "none", CancelToken()) for plan in (fp32, bf16, fp32)]
    assert suites[0].key != suites[1].key and suites[2].key == suites[0].key
    assert pairs[0] == pairs[1] == pairs[2]
    cache = tmp_path / "cache"
    assert len(list(cache.glob("base-suite-*.json"))) == len(list(cache.glob("base-rehearsal-*.json"))) == 2
    assert asked == ["What is 2 + 2?", "What is 2 + 2?", "Say a number.", "Say a number."]  # twice each, not thrice


def test_a_base_that_answers_too_little_right_is_not_measured_and_the_job_is_told(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_for_training(make_run(tiny_model_dir, tmp_path / "adapter"))
    sink = RecordingSink()
    probe = BaseKnowledgeProbe(tmp_path / "cache")  # the tiny model's random words answer a few by chance at most
    measured = probe.measure(loaded.model, loaded.tokenizer, loaded.plan, base_model_dir=tiny_model_dir,
                             quantization="NONE", step=0, sink=sink, cancel=CancelToken())
    assert measured is None
    assert [e.code for e in sink.events if isinstance(e, Warned)] == ["BASE_RETENTION_NOT_MEASURED"]
    assert len(list((tmp_path / "cache").glob("base-suite-*.json"))) == 1  # built once, then read


@pytest.mark.model
def test_retention_is_whole_for_an_untrained_adapter_and_falls_after_training_on_other_answers(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    # The tiny model knows nothing; questions whose accepted answers are its own first words make a suite of
    # everything it says, so what training changes shows.
    run = make_run(tiny_model_dir, tmp_path / "adapter", epochs=30, learning_rate=5e-2)
    loaded = load_for_training(run)
    prompts = [f"What is the capital of {c}?" for c in ("France", "Italy", "Spain", "Peru", "Chile", "Japan")]
    said = GreedyAnswers(loaded.model, loaded.tokenizer, loaded.plan, max_new_tokens=4)(prompts)
    questions = [Question(p, (a.split()[0],)) for p, a in zip(prompts, said, strict=True) if a.split()]
    assert questions, "the tiny model said nothing"
    probe = BaseKnowledgeProbe(tmp_path / "cache", questions, max_new_tokens=4, min_cases=1)

    fresh = RecordingSink()  # a fresh LoRA adapter (B = 0) changes nothing
    kept = probe.measure(loaded.model, loaded.tokenizer, loaded.plan, base_model_dir=tiny_model_dir,
                         quantization="NONE", step=0, sink=fresh, cancel=CancelToken())
    assert kept is not None and (kept.retention, kept.kept, kept.cases) == (1.0, len(questions), len(questions))

    sink = RecordingSink()
    result = run_training(replace(run, probe=probe), sink, CancelToken(), loaded)
    after = result.base_retention
    assert after is not None and after.cases == len(questions) and after.retention < 1.0
    assert after.kept + len(after.lost) == after.cases
    reported = [e for e in sink.events if isinstance(e, EvalReported) and e.split == "base_retention"]
    assert [dict(e.metrics)["retention"] for e in reported] == [after.retention]


@pytest.mark.model
def test_an_answer_has_ended_only_when_the_model_stopped_before_the_limit(tiny_model_dir: Path,
                                                                           tmp_path: Path) -> None:
    loaded = load_for_training(make_run(tiny_model_dir, tmp_path / "adapter"))
    tokenizer, prompts = loaded.tokenizer, ["What is the capital of France?", "Name a colour."]
    answers = GreedyAnswers(loaded.model, tokenizer, loaded.plan, max_new_tokens=3)
    cut = answers.answers(prompts)
    assert [ended for _, ended in cut] == [False, False]  # the tiny model never says its stop token first
    # Make the first token it says to the first prompt a stop token: that answer now ends there. Said as
    # GreedyAnswers says it (eval mode, under the plan's autocast: bf16 on a GPU with native bf16, where an fp32
    # pass may pick another first token).
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompts[0]}], tokenize=False,
                                         add_generation_prompt=True)
    batch = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(loaded.plan.torch_device)
    loaded.model.eval()
    with torch.no_grad(), loaded.plan.autocast():
        first = int(loaded.model.generate(**batch, max_new_tokens=1, do_sample=False)[0, -1])
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(first)
    said, ended = answers.answers(prompts[:1])[0]
    assert ended and said == tokenizer.decode([first], skip_special_tokens=True).strip()
    assert answers(prompts[:1]) == [said]  # the texts alone, as the probe reads them
