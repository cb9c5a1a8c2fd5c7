"""The forgetting benchmarks' invented facts (bench/forgetting.py make_tasks, which bench/base_retention.py and
bench/base_protection_cost.py take too): every invented name distinct up to the most the name space allows, and a
count beyond it refused at once (drawing distinct names from a space too small never ended: `--facts 250` spun
without a word)."""

from __future__ import annotations

import re

import pytest

from bench.forgetting import MAX_FACTS, make_tasks


def test_the_most_facts_a_task_can_take_have_distinct_names() -> None:
    capitals, founders = make_tasks(MAX_FACTS, seed=3)
    assert len(capitals) == len(founders) == MAX_FACTS
    answers = [e.messages[-1].content for e in (*capitals, *founders)]
    names = [n for a in answers for n in re.findall(r"(?:is|by) (\w+)(?: (\w+))?\.", a)[0] if n]
    assert len(names) == 3 * MAX_FACTS == len(set(names))


@pytest.mark.parametrize("facts", [0, MAX_FACTS + 1, 250])
def test_more_facts_than_names_are_refused(facts: int) -> None:
    with pytest.raises(ValueError, match=f"between 1 and {MAX_FACTS}"):
        make_tasks(facts, seed=0)
