"""Text from outside the process that is not JSON is a ValueError however it is malformed: json.loads raises
RecursionError for nesting deeper than the interpreter's limit, which every ``except ValueError`` around a parse
would let through as an internal error (engine.json_input)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import json_input
from engine.errors import InvalidArgument
from engine.registry.peft_checks import read_lora_config


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 100_000, "nope", b"\xff"])
def test_any_malformed_text_is_a_value_error(text) -> None:
    with pytest.raises(ValueError):
        json_input.loads(text)


def test_well_formed_text_is_json() -> None:
    assert json_input.loads(b'{"a": [1, 2]}') == {"a": [1, 2]}


def test_an_adapter_config_nested_too_deeply_is_invalid_argument(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("[" * 100_000)
    with pytest.raises(InvalidArgument) as err:
        read_lora_config(tmp_path)
    assert err.value.reason == "MALFORMED_ADAPTER_CONFIG"
