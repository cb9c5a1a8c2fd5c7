"""A stored dataset's examples as golden cases (engine.lora.dataset_suites): made as the gate's own suites make
them (engine.lora.suites.case_of), one case per question with every answer given to it as a reference."""

from __future__ import annotations

from engine.domain import ChatMessage, Example
from engine.lora.dataset_suites import dataset_cases
from engine.lora.evaluation import GoldenCase


def chat(*turns: tuple[str, str]) -> Example:
    return Example(messages=tuple(ChatMessage(role, text) for role, text in turns))


def test_examples_become_cases_one_per_question() -> None:
    cases, skipped = dataset_cases([
        chat(("system", "Be brief."), ("user", "Capital of Veloria?"), ("assistant", " Marnesse. ")),
        Example(prompt="Capital of Quorvia? ", completion="Talameth"),
        chat(("user", "Capital of Veloria?"), ("assistant", "Marnesse, in the north.")),
        chat(("user", "Capital of Veloria?"), ("assistant", "Marnesse.")),  # the same answer again: once
        chat(("user", "Tell me of the river."), ("assistant", "It is long."), ("user", "How long?"),
             ("assistant", "Ninety leagues.")),
        Example(prompt="Capital of Veloria?", completion="Marnesse"),  # asked as a completion: its own case
    ])
    assert cases == [
        GoldenCase("Capital of Veloria?", ("Marnesse.", "Marnesse, in the north.")),
        GoldenCase("Capital of Quorvia? ", ("Talameth",), chat=False),
        GoldenCase("Capital of Veloria?", ("Marnesse",), chat=False),
    ]
    assert skipped == 1  # a conversation of several turns is no case
