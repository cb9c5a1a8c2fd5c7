from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.domain import ChatMessage, Example, dataset_digest
from engine.errors import InvalidArgument
from engine.training.datasets import (
    IGNORE_INDEX,
    collate,
    encode_dataset,
    encode_example,
    load_jsonl,
    resolve_dataset_path,
)

SAMPLE = Path(__file__).resolve().parents[2] / "scripts" / "samples" / "capitals.jsonl"


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def chat(*pairs: tuple[str, str]) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in pairs]})


# ---- paths -------------------------------------------------------------------------


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "datasets"
    (root / "team").mkdir(parents=True)
    (root / "team" / "a.jsonl").write_text("{}\n")
    (tmp_path / "secret.jsonl").write_text("{}\n")
    return root


def test_resolve_dataset_path_accepts_a_file_inside_the_root(data_root: Path) -> None:
    assert resolve_dataset_path(data_root, "team/a.jsonl") == (data_root / "team" / "a.jsonl").resolve()


@pytest.mark.parametrize("relative", ["../secret.jsonl", "team/../../secret.jsonl", "/etc/passwd", "", "."])
def test_resolve_dataset_path_rejects_escapes(data_root: Path, relative: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        resolve_dataset_path(data_root, relative)
    assert info.value.reason == "DATASET_PATH_OUTSIDE_ROOT"
    assert [v.field for v in info.value.violations] == ["spec.jsonl.path"]


def test_resolve_dataset_path_rejects_a_symlink_escaping_the_root(data_root: Path) -> None:
    os.symlink(data_root.parent / "secret.jsonl", data_root / "link.jsonl")
    with pytest.raises(InvalidArgument) as info:
        resolve_dataset_path(data_root, "link.jsonl")
    assert info.value.reason == "DATASET_PATH_OUTSIDE_ROOT"


def test_resolve_dataset_path_reports_a_missing_file(data_root: Path) -> None:
    for relative in ("team/missing.jsonl", "team"):
        with pytest.raises(InvalidArgument) as info:
            resolve_dataset_path(data_root, relative)
        assert info.value.reason == "DATASET_NOT_FOUND"
        assert info.value.violations[0].field == "spec.jsonl.path"


# ---- JSONL validation ----------------------------------------------------------------


def test_load_jsonl_accepts_chat_and_prompt_completion_lines(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "good.jsonl",
        [
            chat(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello.")),
            "",
            json.dumps({"prompt": "2+2=", "completion": "4", "weight": 2}),
        ],
    )
    assert load_jsonl(path) == [
        Example(
            messages=(
                ChatMessage("system", "Be brief."),
                ChatMessage("user", "Hi"),
                ChatMessage("assistant", "Hello."),
            )
        ),
        Example(prompt="2+2=", completion="4", weight=2.0),
    ]


def test_the_bundled_sample_dataset_is_valid() -> None:
    examples = load_jsonl(SAMPLE)
    assert len(examples) >= 20 and all(e.is_chat for e in examples)


def test_load_jsonl_reports_every_problem_with_line_numbers(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "bad.jsonl",
        [
            chat(("user", "Hi"), ("assistant", "Hello.")),  # 1: fine
            '{"messages": [',  # 2: invalid JSON
            chat(("user", "Hi"), ("robot", "Beep")),  # 3: bad role
            "",  # 4: blank, ignored
            json.dumps({"prompt": "p", "completion": ""}),  # 5: empty completion
            json.dumps({"text": "x"}),  # 6: no known fields
            chat(("user", "Hi"), ("assistant", "Yo"), ("user", "?")),  # 7: does not end with assistant
            json.dumps({"prompt": "p", "completion": "c", "weight": -1}),  # 8: bad weight
            chat(("user", "only a question")),  # 9: no assistant
        ],
    )
    with pytest.raises(InvalidArgument) as info:
        load_jsonl(path)
    error = info.value
    assert error.reason == "DATASET_INVALID"
    assert [v.field for v in error.violations] == [
        "line[2]",
        "line[3].messages[1].role",
        "line[5].completion",
        "line[6]",
        "line[7].messages[2].role",
        "line[8].weight",
        "line[9].messages",
    ]
    assert (
        error.violations[1].description == "line 3: messages[1].role must be one of assistant, system, user"
    )
    assert error.violations[2].description == "line 5: completion must be a non-empty string"
    assert all(v.description.startswith(f"line {v.field[5]}:") for v in error.violations)
    assert error.metadata["problem_count"] == "7"


def test_load_jsonl_caps_the_number_of_reported_problems(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", ["not json"] * 30)
    with pytest.raises(InvalidArgument) as info:
        load_jsonl(path, max_problems=20)
    assert len(info.value.violations) == 20
    assert info.value.metadata == {"problem_count": "30", "problems_not_shown": "10"}


def test_load_jsonl_rejects_an_empty_dataset(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "empty.jsonl", ["", "   "])
    with pytest.raises(InvalidArgument) as info:
        load_jsonl(path)
    assert info.value.reason == "DATASET_EMPTY"


def test_dataset_digest_ignores_formatting_but_not_content(tmp_path: Path) -> None:
    a = write_lines(tmp_path / "a.jsonl", ['{"prompt": "p", "completion": "c"}'])
    b = write_lines(tmp_path / "b.jsonl", ['{ "completion":"c",  "prompt":"p", "weight": 1.0 }', ""])
    c = write_lines(tmp_path / "c.jsonl", ['{"prompt": "p", "completion": "C"}'])
    assert dataset_digest(load_jsonl(a)) == dataset_digest(load_jsonl(b)) != dataset_digest(load_jsonl(c))
    assert len(dataset_digest(load_jsonl(a))) == 64


# ---- completion-only labels -------------------------------------------------------------


def labelled_text(tokenizer, encoded) -> str:
    return tokenizer.decode(
        [t for t, label in zip(encoded.input_ids, encoded.labels, strict=True) if label != IGNORE_INDEX]
    )


def test_chat_labels_cover_exactly_the_assistant_turns(tiny_tokenizer) -> None:
    example = Example(
        messages=(
            ChatMessage("user", "What is the capital of France?"),
            ChatMessage("assistant", "Paris."),
            ChatMessage("user", "And Italy?"),
            ChatMessage("assistant", "Rome."),
        )
    )
    encoded = encode_example(tiny_tokenizer, example, 512)
    assert labelled_text(tiny_tokenizer, encoded) == "Paris.<|im_end|>Rome.<|im_end|>"
    assert tiny_tokenizer.decode(encoded.input_ids).startswith("<|im_start|>system\n")
    pairs = zip(encoded.input_ids, encoded.labels, strict=True)
    assert all(label in (IGNORE_INDEX, token) for token, label in pairs)


def test_prompt_completion_labels_cover_the_completion_and_eos(tiny_tokenizer) -> None:
    encoded = encode_example(
        tiny_tokenizer, Example(prompt="The capital of Spain is", completion=" Madrid."), 512
    )
    assert tiny_tokenizer.decode(encoded.input_ids) == "The capital of Spain is Madrid.<|im_end|>"
    assert labelled_text(tiny_tokenizer, encoded) == " Madrid.<|im_end|>"


def test_an_unfinished_answer_is_trained_without_its_end(tiny_tokenizer) -> None:
    # A generation cut at its token limit did not end there: its end-of-turn (end-of-sequence) is no target.
    turns = (ChatMessage("user", "Describe Paris."), ChatMessage("assistant", "Paris is the capital of"))
    cut = encode_example(tiny_tokenizer, Example(messages=turns, unfinished=True), 512)
    whole = encode_example(tiny_tokenizer, Example(messages=turns), 512)
    assert labelled_text(tiny_tokenizer, cut) == "Paris is the capital of"
    assert tiny_tokenizer.decode(cut.input_ids).endswith("<|im_start|>assistant\nParis is the capital of")
    assert cut.input_ids == whole.input_ids[:len(cut.input_ids)] and len(cut.input_ids) < len(whole.input_ids)
    # Earlier turns of a conversation keep theirs; only the last one is cut.
    longer = Example(messages=(ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello."), *turns),
                     unfinished=True)
    assert labelled_text(tiny_tokenizer, encode_example(tiny_tokenizer, longer, 512)) == \
        "Hello.<|im_end|>Paris is the capital of"
    completion = Example(prompt="The capital of Spain is", completion=" Mad", unfinished=True)
    assert labelled_text(tiny_tokenizer, encode_example(tiny_tokenizer, completion, 512)) == " Mad"
    assert Example(messages=turns, unfinished=True).canonical()["unfinished"] is True
    assert "unfinished" not in Example(messages=turns).canonical()  # datasets' digests are unchanged


def test_truncation_keeps_the_start_and_can_leave_no_target(tiny_tokenizer) -> None:
    example = Example(prompt="What is the capital of France? " * 4, completion="Paris")
    encoded = encode_example(tiny_tokenizer, example, 8)
    assert len(encoded.input_ids) == 8 and encoded.target_token_count == 0
    with pytest.raises(InvalidArgument) as info:
        encode_dataset(tiny_tokenizer, [example], 8)
    assert info.value.reason == "DATASET_NO_TARGET_TOKENS"


def test_collate_pads_with_ignored_labels_and_a_mask(tiny_tokenizer) -> None:
    short = encode_example(tiny_tokenizer, Example(prompt="Hi", completion=" yes", weight=2.0), 64)
    long = encode_example(
        tiny_tokenizer, Example(prompt="What is the capital of Spain?", completion=" Madrid"), 64
    )
    batch = collate([short, long], pad_id=tiny_tokenizer.pad_token_id)
    n = len(short.input_ids)
    assert batch.input_ids.shape == batch.labels.shape == (2, len(long.input_ids))
    assert batch.attention_mask[0].tolist() == [1] * n + [0] * (len(long.input_ids) - n)
    assert (batch.labels[0, n:] == IGNORE_INDEX).all()
    assert (batch.input_ids[0, n:] == tiny_tokenizer.pad_token_id).all()
    assert batch.weights.tolist() == [2.0, 1.0]
