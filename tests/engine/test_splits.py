"""The split rule: stable per prompt and seed, close to its fractions, and a grown dataset keeps its splits."""

from __future__ import annotations

import pytest

from engine.domain import ChatMessage, Example
from engine.splits import Split, SplitRule, prompt_of


def ask(q: str, a: str) -> Example:
    return Example(messages=(ChatMessage("user", q), ChatMessage("assistant", a)))


def test_one_prompt_one_split_and_fractions_hold():
    rule = SplitRule(eval_fraction=0.2, test_fraction=0.1, seed=3)
    examples = [ask(f"Question {i}?", f"answer {i}") for i in range(2000)]
    parts = rule.apply(examples)
    assert sum(len(p) for p in parts.values()) == 2000
    assert len(parts[Split.EVAL]) / 2000 == pytest.approx(0.2, abs=0.03)
    assert len(parts[Split.TEST]) / 2000 == pytest.approx(0.1, abs=0.03)
    for i in range(50):  # another answer to the same question, differently spaced and cased, lands alike
        assert rule.of(ask(f"  question {i}? ", "something else")) is rule.of(examples[i])
    grown = rule.apply([*examples, *(ask(f"New {i}?", "x") for i in range(100))])
    assert grown[Split.EVAL][: len(parts[Split.EVAL])] == parts[Split.EVAL]  # earlier examples stay put
    assert SplitRule(eval_fraction=0.2, test_fraction=0.1, seed=4).apply(examples) != parts  # the seed matters


def test_prompt_of_and_bad_fractions():
    assert prompt_of(Example(prompt="Q: 2+2?", completion=" 4")) == "Q: 2+2?"
    chat = Example(messages=(ChatMessage("system", "be brief"), ChatMessage("user", "hi"),
                             ChatMessage("assistant", "hello"), ChatMessage("user", "bye"),
                             ChatMessage("assistant", "ciao")))
    assert prompt_of(chat) == "system: be brief\nuser: hi\nassistant: hello\nuser: bye"
    assert not SplitRule().splits and SplitRule().apply([chat])[Split.TRAIN] == [chat]
    with pytest.raises(ValueError):
        SplitRule(eval_fraction=0.6, test_fraction=0.4)
