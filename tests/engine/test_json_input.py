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


# ---- strings that are no Unicode text --------------------------------------------------------------------------
# JSON syntax allows a \u escape of a lone UTF-16 surrogate; the str json.loads returns cannot be encoded (UTF-8,
# PostgreSQL, protobuf), so it failed later, wherever it was encoded, as an internal error.


@pytest.mark.parametrize("text", [
    '"caf\\ud800"', '{"prompt": "x\\udfff"}', '{"caf\\udc00": 1}', '[1, {"a": ["ok", "\\ud83d"]}]',
    '"\\ud83d\\ud83d"', '"\\ude00\\ud83d"', b'{"a": "\\uDBFF"}', bytearray(b'["\\udbff"]'),
    b'"\xed\xa0\x80"',  # the surrogate's UTF-8 form, which json.loads decodes from bytes with "surrogatepass"
    '["\ud800"]',  # a str that already holds one
], ids=["value", "nested-value", "key", "deep-list", "two-highs", "low-then-high", "bytes-upper-case", "bytearray",
        "encoded-surrogate-bytes", "surrogate-character"])
def test_a_lone_surrogate_is_a_value_error_that_says_so(text) -> None:
    with pytest.raises(ValueError, match="lone UTF-16 surrogate") as err:
        json_input.loads(text)
    str(err.value).encode("utf-8")  # the message itself is text (it names the code point, not the character)


@pytest.mark.parametrize(("text", "parsed"), [
    ('"smile \\ud83d\\ude00"', "smile \U0001F600"),  # a pair is one character (json.dumps writes emoji so)
    ('"\\\\ud800"', "\\ud800"),  # an escaped backslash, then the letters
    ('{"caf\\u00e9": "\\u2603"}', {"café": "☃"}),
    ('"\ue000 \uffff"', "\ue000 \uffff"),  # around the surrogate range
], ids=["pair", "escaped-backslash", "bmp-escapes", "private-use"])
def test_text_around_surrogates_is_read(text, parsed) -> None:
    assert json_input.loads(text) == parsed


def test_an_adapter_config_with_a_lone_surrogate_is_invalid_argument(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA", "target_modules": ["q_proj\\ud800"]}')
    with pytest.raises(InvalidArgument) as err:
        read_lora_config(tmp_path)
    assert err.value.reason == "MALFORMED_ADAPTER_CONFIG", err.value


@pytest.mark.parametrize("alpha", ["1" * 400, "1e400", "-1e400", "true"])
def test_an_adapter_alpha_no_float_holds_is_a_field_violation(tmp_path: Path, alpha: str) -> None:
    """JSON numbers have no size limit: a 400-digit lora_alpha parses and overflows float (it was INTERNAL), 1e400
    parses as infinity (it was accepted as alpha inf)."""
    (tmp_path / "adapter_config.json").write_text(
        f'{{"peft_type": "LORA", "r": 8, "lora_alpha": {alpha}, "target_modules": ["q_proj"]}}')
    with pytest.raises(InvalidArgument) as err:
        read_lora_config(tmp_path)
    assert err.value.reason == "INVALID_ADAPTER_CONFIG", err.value
    assert [v.field for v in err.value.violations] == ["adapter_config.json.lora_alpha"], err.value.violations
