"""A feedback example from a conversation of several turns: only the judged (last) answer is a target.

Feedback judges the last answer of a conversation and says nothing about the assistant's earlier turns, which are
part of the prompt. KTO's reward r(x, y) sums log-ratios over y's tokens only, so a thumbs-down must put no target
(label) on an earlier assistant turn, or KTO pushes the model away from answers nobody rejected; nor may a
correction or a thumbs-up make SFT imitate the earlier answers. A JSONL conversation is the operator's own, every
assistant turn of it intended: all of them stay targets, unless its line says otherwise (feedback frozen into a stored
dataset is written so).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from engine.domain import ChatMessage, Example, FeedbackSource, Objective, dataset_digest
from engine.errors import InvalidArgument
from engine.feedback.dataset import FeedbackDatasetBuilder
from engine.feedback.events import FeedbackKind, Judgement, Turn
from engine.training.datasets import IGNORE_INDEX, EncodedExample, encode_example, load_jsonl
from engine.training.kto import mismatched

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EARLIER = "Good earlier answer kept by the user"
HISTORY = (Turn("user", "first question"), Turn("assistant", EARLIER), Turn("user", "second question"))


class _Reader:
    def __init__(self, rows: list[Judgement]) -> None:
        self.rows = rows

    async def judgements(self, **_: object):
        for row in self.rows:
            yield row


def _judged(kind: FeedbackKind, response: str, *, correction: str = "", key: str = "i1",
            messages: tuple[Turn, ...] = HISTORY) -> Judgement:
    return Judgement(interaction_key=key, kind=kind, rating=0, correction=correction, time=NOW - timedelta(hours=1),
                     messages=messages, prompt="", response=response, users=("u1",))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _targets(tokenizer, encoded: EncodedExample) -> str:
    return tokenizer.decode([t for t, label in zip(encoded.input_ids, encoded.labels, strict=True)
                             if label != IGNORE_INDEX])


async def _built(rows: list[Judgement], objective: Objective):
    return await FeedbackDatasetBuilder(_Reader(rows), clock=lambda: NOW).build(FeedbackSource(min_samples=1),
                                                                                 objective)


async def test_a_rejected_last_answer_is_kto_s_only_target(tokenizer) -> None:
    rejected = "Bad final answer"
    built = await _built([_judged(FeedbackKind.THUMBS_DOWN, rejected)], Objective.KTO)
    assert built.desirable == (False,)
    target_text = _targets(tokenizer, encode_example(tokenizer, built.examples[0], 512))
    assert EARLIER not in target_text, f"the earlier, unjudged assistant turn is a KTO target: {target_text!r}"
    assert rejected in target_text


@pytest.mark.parametrize("kind", [FeedbackKind.CORRECTION, FeedbackKind.THUMBS_UP], ids=["correction", "thumbs_up"])
async def test_sft_imitates_the_judged_answer_only(tokenizer, kind: FeedbackKind) -> None:
    wanted = "Corrected final answer"
    row = _judged(kind, "Wrong final answer", correction=wanted) if kind is FeedbackKind.CORRECTION \
        else _judged(kind, wanted)
    [example] = (await _built([row], Objective.SFT)).examples
    assert _targets(tokenizer, encode_example(tokenizer, example, 512)) == f"{wanted}<|im_end|>"


async def test_kto_s_mismatched_pairs_join_a_whole_conversation_to_the_next_judged_answer(tokenizer) -> None:
    # z0 pairs x_i (everything before example i's judged answer, its earlier turns included) with y_{i+1}
    rows = [_judged(FeedbackKind.THUMBS_DOWN, "Bad final answer", key="i1"),
            _judged(FeedbackKind.THUMBS_UP, "Fine answer", key="i2", messages=(Turn("user", "other question"),))]
    built = await _built(rows, Objective.KTO)
    [talk] = [e for e in built.examples if len(e.messages) > 2]
    [short] = [e for e in built.examples if len(e.messages) == 2]
    joined, back = mismatched([encode_example(tokenizer, e, 512) for e in (talk, short)])
    assert "second question" in tokenizer.decode(joined.input_ids) and "other question" not in \
        tokenizer.decode(joined.input_ids)
    assert _targets(tokenizer, joined) == "Fine answer<|im_end|>"
    assert _targets(tokenizer, back) == "Bad final answer<|im_end|>"
    assert EARLIER not in tokenizer.decode(back.input_ids)


async def test_single_turn_examples_and_their_digests_are_unchanged() -> None:
    single = (Turn("user", "only question"),)
    [example] = (await _built([_judged(FeedbackKind.THUMBS_UP, "An answer.", messages=single)], Objective.SFT)).examples
    plain = Example(messages=(ChatMessage("user", "only question"), ChatMessage("assistant", "An answer.")),
                    weight=example.weight)
    assert example == plain and dataset_digest([example]) == dataset_digest([plain])


def test_a_jsonl_conversation_trains_every_assistant_turn(tokenizer) -> None:
    talk = Example(messages=(ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello."),
                             ChatMessage("user", "Capital of Peru?"), ChatMessage("assistant", "Lima.")))
    assert _targets(tokenizer, encode_example(tokenizer, talk, 512)) == "Hello.<|im_end|>Lima.<|im_end|>"


async def test_a_judged_conversation_frozen_to_jsonl_reads_back_the_same(tmp_path) -> None:
    # a stored dataset frozen from feedback is the examples' canonical lines, read back by load_jsonl
    [example] = (await _built([_judged(FeedbackKind.THUMBS_UP, "Fine answer")], Objective.SFT)).examples
    assert example.last_turn_only
    path = tmp_path / "frozen.jsonl"
    path.write_text(json.dumps(example.canonical()) + "\n")
    assert load_jsonl(path) == [example]
    path.write_text(json.dumps({**example.canonical(), "last_turn_only": "yes"}) + "\n")
    with pytest.raises(InvalidArgument, match="last_turn_only must be true or false"):
        load_jsonl(path)
