"""Self-rehearsal (engine.continual.rehearsal): the base model's own answers to the shipped general prompts,
mixed into a job's examples at the asked share, built with the adapter disabled and cached."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.continual.base_knowledge import GreedyAnswers
from engine.continual.ewc import replay_count
from engine.continual.rehearsal import SelfRehearsal, shipped_prompts
from engine.jobs.ports import CancelToken
from engine.training.loading import load_for_training
from tests.engine.test_training import examples, make_run


def test_the_shipped_prompts_are_many_and_none_is_a_probe_question() -> None:
    from engine.continual.base_knowledge import shipped_questions

    prompts = shipped_prompts()
    assert len(prompts) >= 75 and len(set(prompts)) == len(prompts)
    assert not {" ".join(p.lower().split()) for p in prompts} & {" ".join(q.prompt.lower().split())
                                                                  for q in shipped_questions()}


@pytest.mark.model
def test_the_base_models_answers_are_mixed_in_at_the_share_asked_whatever_the_adapter(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_for_training(make_run(tiny_model_dir, tmp_path / "adapter"))
    prompts = [f"Name a colour number {i}." for i in range(12)]
    args = {"model": loaded.model, "tokenizer": loaded.tokenizer, "plan": loaded.plan,
            "base_model_dir": tiny_model_dir, "quantization": "NONE", "max_seq_length": 64, "cancel": CancelToken()}
    rehearsal = SelfRehearsal(tmp_path / "cache", prompts, max_new_tokens=6)
    own = examples() * 4  # 20
    mixed = rehearsal.mix(own, 0.2, **args)
    # An epoch trains 5 of them (a fifth of its 25), in rotation over all of those answered.
    assert mixed.rehearsed == replay_count(20, 0.2, 12) == 5
    assert mixed.examples[:20] == own and mixed.pool == len(mixed.examples) - 20 == 12
    added = mixed.examples[20:]
    assert [e.messages[0].content for e in added] == prompts
    assert all(e.is_chat and e.messages[1].content for e in added)
    # An answer cut at the token limit is unfinished: trained without an end-of-turn target.
    said = GreedyAnswers(loaded.model, loaded.tokenizer, loaded.plan, max_new_tokens=6).answers(prompts)
    assert [e.unfinished for e in added] == [not ended for _, ended in said]
    assert len(list((tmp_path / "cache").glob("base-rehearsal-*.json"))) == 1
    # With each answer's base reference for the KL term, computed once and cached.
    assert len(mixed.references) == 12 and all(r.ids.shape[0] == r.logp.shape[0] > 0 for r in mixed.references)
    assert len(list((tmp_path / "cache").glob("base-reference-*.safetensors"))) == 1
    assert_same_references(rehearsal.mix(own, 0.2, **args).references, mixed.references)

    # The answers are the base model's: an adapter that changes the model's outputs changes nothing here.
    with torch.no_grad():
        for name, parameter in loaded.model.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.5)
    again = SelfRehearsal(tmp_path / "other-cache", prompts, max_new_tokens=6).mix(own, 0.2, **args)
    assert again.examples == mixed.examples
    assert_same_references(again.references, mixed.references)


def assert_same_references(got, want) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g.ids, w.ids)
        torch.testing.assert_close(g.logp, w.logp, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g.rest, w.rest, rtol=1e-5, atol=1e-6)
