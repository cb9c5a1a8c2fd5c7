"""Datasets built from stored feedback: window, filters, weights, corrections, dedup, KTO labels, erasure."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.domain import ChatMessage, Example, FeedbackSource, Objective
from engine.errors import FailedPrecondition
from engine.feedback.dataset import DatasetPolicy, FeedbackDatasetBuilder, prompt_key
from engine.feedback.events import FeedbackKind, Turn
from tests.feedback.conftest import event

UP, DOWN, RATING, CORRECTION = (FeedbackKind.THUMBS_UP, FeedbackKind.THUMBS_DOWN, FeedbackKind.RATING,
                                FeedbackKind.CORRECTION)
ANY = FeedbackSource(min_samples=1)


def pairs(dataset) -> list[tuple[str, str, float]]:
    return [(e.prompt, e.completion, e.weight) for e in dataset.examples]


async def test_thumbs_weighted_corrections_as_targets_window_and_composition(ingestor, store) -> None:
    await ingestor.submit([
        event("1", UP, prompt="p1", response="good", age=timedelta(hours=3)),
        event("2", DOWN, prompt="p2", response="bad", age=timedelta(hours=2)),
        event("3", CORRECTION, prompt="p3", response="wrong", correction="right", age=timedelta(hours=1)),
        event("4", RATING, rating=5, prompt="p4", response="great", age=timedelta(minutes=30)),
        event("5", RATING, rating=3, prompt="p5", response="meh"),  # neutral: no example
        event("6", FeedbackKind.COPY, prompt="p6", response="copied"),  # implicit: no example
        event("old", UP, prompt="p7", response="stale", age=timedelta(days=8)),  # outside 7 days
    ])
    built = await FeedbackDatasetBuilder(store).build(ANY, Objective.SFT)
    # a response voted down is never a target: SFT would imitate it (KTO takes it as undesirable, below)
    assert pairs(built) == [("p1", "good", 2.0), ("p3", "right", 1.0), ("p4", "great", 2.0)]
    assert dict(built.composition) == {"thumbs_up": 1, "correction": 1, "rating_high": 1}
    assert built.window_end - built.window_start == timedelta(days=7)
    assert len(built.digest) == 64

    longer = await FeedbackDatasetBuilder(store).build(FeedbackSource(days=9, min_samples=1), Objective.SFT)
    assert ("p7", "stale", 2.0) in pairs(longer)

    custom = FeedbackSource(min_samples=1, thumbs_up_weight=3.0, thumbs_down_weight=0.25)
    policy = DatasetPolicy(correction_weight=1.5)
    weights = [w for _, _, w in pairs(await FeedbackDatasetBuilder(store, policy).build(custom, Objective.SFT))]
    assert weights == [3.0, 1.5, 3.0]


async def test_votes_of_one_interaction_combine_by_reference(ingestor, store) -> None:
    await ingestor.submit([
        event("carrier", FeedbackKind.REGENERATE, interaction_id="i1", prompt="q", response="a"),
        event("v1", UP, ref="i1", user="u1"),
        event("v2", UP, ref="i1", user="u2"),
        event("v3", DOWN, ref="i1", user="u3"),
        event("tie-carrier", UP, interaction_id="i2", prompt="q2", response="a2"),
        event("tie", DOWN, ref="i2"),
        event("dangling", UP, ref="nowhere"),
    ])
    built = await FeedbackDatasetBuilder(store).build(ANY, Objective.SFT)
    assert pairs(built) == [("q", "a", 2.0)]  # 2 up vs 1 down; the tie and the dangling ref make nothing


async def test_chat_interactions_become_chat_examples(ingestor, store) -> None:
    turns = (Turn("system", "Be brief."), Turn("user", "Capital of Italy?"))
    await ingestor.submit([event("c", CORRECTION, messages=turns, response="Milan", correction="Rome")])
    [example] = (await FeedbackDatasetBuilder(store).build(ANY, Objective.SFT)).examples
    assert example == Example(messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Capital of Italy?"),
                                        ChatMessage("assistant", "Rome")), weight=1.0)


async def test_near_identical_prompts_are_deduplicated(ingestor, store) -> None:
    assert prompt_key((), "  What is the capital of FRANCE?! ") == prompt_key((), "what is the capital of france")
    await ingestor.submit([
        event("1", UP, prompt="What is the capital of France?", response="Paris", age=timedelta(hours=3)),
        event("2", UP, prompt="what is the capital of france", response="Paris!", age=timedelta(hours=2)),
        event("3", DOWN, prompt="WHAT IS THE CAPITAL OF FRANCE", response="Lyon", age=timedelta(hours=1)),
        event("4", CORRECTION, prompt="Capital of Spain?", response="Barcelona", correction="Madrid",
              age=timedelta(hours=2)),
        event("5", UP, prompt="capital of spain", response="Madrid.", age=timedelta(hours=1)),
    ])
    sft = await FeedbackDatasetBuilder(store).build(ANY, Objective.SFT)
    # per prompt: the newest thumbs-up beats older ones (a thumbs-down is no SFT target); a correction beats votes
    assert sorted(pairs(sft)) == [
        ("Capital of Spain?", "Madrid", 1.0), ("what is the capital of france", "Paris!", 2.0),
    ]
    assert sft.duplicates_removed == 2


async def test_kto_labels_from_thumbs_ratings_and_corrections(ingestor, store) -> None:
    await ingestor.submit([
        event("1", UP, prompt="p1", response="good", age=timedelta(hours=5)),
        event("2", DOWN, prompt="p2", response="bad", age=timedelta(hours=4)),
        event("3", RATING, rating=1, prompt="p3", response="awful", age=timedelta(hours=3)),
        event("4", RATING, rating=4, prompt="p4", response="fine", age=timedelta(hours=2)),
        event("5", CORRECTION, prompt="p5", response="wrong", correction="right", age=timedelta(hours=1)),
    ])
    built = await FeedbackDatasetBuilder(store).build(ANY, Objective.KTO)
    labelled = sorted(
        (e.prompt, e.completion, e.weight, d) for e, d in zip(built.examples, built.desirable, strict=True)
    )
    assert labelled == [
        ("p1", "good", 2.0, True), ("p2", "bad", 0.5, False), ("p3", "awful", 0.5, False),
        ("p4", "fine", 2.0, True), ("p5", "right", 1.0, True), ("p5", "wrong", 0.5, False),
    ]
    assert dict(built.composition) == {"thumbs_up": 1, "thumbs_down": 1, "rating_low": 1, "rating_high": 1,
                                       "correction": 1, "corrected": 1}
    sft = await FeedbackDatasetBuilder(store).build(ANY, Objective.SFT)
    assert built.digest != sft.digest  # labels are part of a KTO dataset's identity


async def test_rating_thresholds_come_from_the_policy(ingestor, store) -> None:
    await ingestor.submit([event("1", RATING, rating=3, prompt="p", response="r")])
    strict = await FeedbackDatasetBuilder(store, DatasetPolicy(rating_negative_max=3)).build(ANY, Objective.KTO)
    assert strict.desirable == (False,)


async def test_filters_by_labels_and_adapter_version(ingestor, store) -> None:
    await ingestor.submit([
        event("1", UP, prompt="a", labels=(("app", "chat"), ("lang", "en")), adapter_version="1.0.0"),
        event("2", UP, prompt="b", labels=(("app", "chat"),), adapter_version="2.0.0"),
        event("3", UP, prompt="c", labels=(("app", "search"),), adapter_version="1.0.0"),
    ])
    build = FeedbackDatasetBuilder(store).build
    chat = await build(FeedbackSource(min_samples=1, labels=(("app", "chat"),)), Objective.SFT)
    assert [e.prompt for e in chat.examples] == ["a", "b"]
    v1_chat = await build(FeedbackSource(min_samples=1, labels=(("app", "chat"),), adapter_version="1.0.0"),
                          Objective.SFT)
    assert [e.prompt for e in v1_chat.examples] == ["a"]


async def test_below_min_samples_fails_stating_the_count_unless_forced(ingestor, store) -> None:
    await ingestor.submit([event(str(i), UP, prompt=f"p{i}") for i in range(3)])
    builder = FeedbackDatasetBuilder(store)
    with pytest.raises(FailedPrecondition) as err:
        await builder.build(FeedbackSource(min_samples=5), Objective.SFT)
    assert err.value.reason == "FEEDBACK_DATASET_TOO_SMALL"
    assert "found 3 usable feedback examples" in err.value.message
    assert err.value.metadata == {"found": "3", "min_samples": "5", "days": "7"}
    forced = await builder.build(FeedbackSource(min_samples=5, force=True), Objective.SFT)
    assert len(forced.examples) == 3
    with pytest.raises(FailedPrecondition) as empty:
        await builder.build(FeedbackSource(min_samples=5, force=True, adapter_version="9.9.9"), Objective.SFT)
    assert empty.value.reason == "FEEDBACK_DATASET_EMPTY"


async def test_forgotten_users_never_reach_a_later_dataset(ingestor, store) -> None:
    await ingestor.submit([
        event("a-carrier", UP, user="alice", interaction_id="ia", prompt="alice's question", response="x"),
        event("b-vote", UP, user="bob", ref="ia"),  # bob voted on alice's interaction
        event("b-own", UP, user="bob", prompt="bob's question", response="y"),
    ])
    before = await FeedbackDatasetBuilder(store).build(ANY, Objective.SFT)
    assert sorted(e.prompt for e in before.examples) == ["alice's question", "bob's question"]
    await store.delete_user("alice")
    await ingestor.submit([event("a-late", UP, user="alice", prompt="alice's question", response="x")])  # resend
    after = await FeedbackDatasetBuilder(store).build(ANY, Objective.SFT)
    assert [e.prompt for e in after.examples] == ["bob's question"]


async def test_kto_labels_from_implicit_signals_only_where_there_is_no_explicit_feedback(ingestor, store) -> None:
    copy, done, click, regen, dwell = (FeedbackKind.COPY, FeedbackKind.TASK_COMPLETED, FeedbackKind.CLICK_THROUGH,
                                       FeedbackKind.REGENERATE, FeedbackKind.DWELL_TIME)
    await ingestor.submit([
        event("c", copy, prompt="p1", response="copied", age=timedelta(hours=9)),
        event("t", done, prompt="p2", response="done", age=timedelta(hours=8)),
        event("k", click, prompt="p3", response="clicked", age=timedelta(hours=7)),
        event("r", regen, prompt="p4", response="redone", age=timedelta(hours=6)),
        event("d", dwell, dwell_seconds=120.0, prompt="p5", response="read", age=timedelta(hours=5)),
        # explicit feedback wins: a thumbs-down, then a copy of the same interaction
        event("x1", DOWN, prompt="p6", response="bad", interaction_id="i6", age=timedelta(hours=4)),
        event("x2", copy, ref="i6", age=timedelta(hours=3)),
        # implicit signals vote against each other: a tie makes no example
        event("y1", copy, prompt="p7", response="torn", interaction_id="i7", age=timedelta(hours=2)),
        event("y2", regen, ref="i7", age=timedelta(hours=1)),
    ])

    def labelled(built) -> list[tuple[str, str, float, bool]]:
        return [(e.prompt, e.completion, e.weight, d) for e, d in zip(built.examples, built.desirable, strict=True)]

    kto = await FeedbackDatasetBuilder(store).build(ANY, Objective.KTO)
    assert labelled(kto) == [
        ("p1", "copied", 2.0, True), ("p2", "done", 2.0, True), ("p3", "clicked", 2.0, True),
        ("p4", "redone", 0.5, False), ("p6", "bad", 0.5, False),
    ]  # dwell time is ignored without a threshold
    assert dict(kto.composition) == {"implicit_desirable": 3, "implicit_undesirable": 1, "thumbs_down": 1}

    # SFT ignores implicit signals, and the one explicit signal is a thumbs-down, which it never imitates
    with pytest.raises(FailedPrecondition) as empty:
        await FeedbackDatasetBuilder(store).build(ANY, Objective.SFT)
    assert empty.value.reason == "FEEDBACK_DATASET_EMPTY"

    dwell_60 = await FeedbackDatasetBuilder(store, DatasetPolicy(dwell_desirable_seconds=60)).build(ANY, Objective.KTO)
    assert ("p5", "read", 2.0, True) in labelled(dwell_60)
    dwell_300 = await FeedbackDatasetBuilder(store, DatasetPolicy(dwell_desirable_seconds=300)).build(
        ANY, Objective.KTO)
    assert "p5" not in [p for p, *_ in labelled(dwell_300)]

    only_regenerate = DatasetPolicy(implicit=((regen, False),))
    assert labelled(await FeedbackDatasetBuilder(store, only_regenerate).build(ANY, Objective.KTO)) == [
        ("p4", "redone", 0.5, False), ("p6", "bad", 0.5, False), ("p7", "torn", 0.5, False),
    ]  # with copy ignored, p7's regenerate is no longer outvoted
    with pytest.raises(ValueError):
        DatasetPolicy(implicit=((FeedbackKind.THUMBS_UP, True),))
