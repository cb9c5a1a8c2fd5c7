"""Version numbers: vMAJOR.MINOR and patches (vMAJOR.MINOR.PATCH), parsed, ordered and handed out."""

from __future__ import annotations

import pytest

from engine.errors import InvalidArgument
from engine.registry import VersionNumber, parse_version
from engine.stores.memory import InMemoryAdapterIndex


@pytest.mark.parametrize(("text", "number"), [
    ("v1.0", (1, 0, 0)), ("v2.13", (2, 13, 0)), ("v1.1.1", (1, 1, 1)), ("v3.0.12", (3, 0, 12)),
])
def test_versions_parse_and_spell_back(text: str, number: tuple[int, int, int]) -> None:
    assert parse_version(text) == number
    assert str(parse_version(text)) == text


@pytest.mark.parametrize("text", ["v1", "v0.1", "v1.01", "v1.1.0", "v1.1.01", "1.1", "v1.1.1.1", "v1.-1"])
def test_what_is_no_version_is_refused_on_its_field(text: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_version(text, "spec.start_version")
    assert raised.value.reason == "MALFORMED_VERSION"
    assert [v.field for v in raised.value.violations] == ["spec.start_version"]


@pytest.mark.parametrize(("text", "hint"), [("v1.0.0", "write v1.0"), ("v2.3.0", "write v2.3"), ("v1.1.0.0", ""),
                                            ("v1.01", "")])
def test_a_spelt_patch_0_is_told_how_to_write_it(text: str, hint: str) -> None:
    """Patch 0 is the minor version itself (v1.1 is v1.1.0) and is never spelt: the refusal says how to write it;
    other refusals say nothing of it."""
    with pytest.raises(InvalidArgument) as raised:
        parse_version(text)
    assert (hint in raised.value.message) if hint else ("write" not in raised.value.message), raised.value.message


def test_patches_order_between_their_minor_and_the_next() -> None:
    texts = ["v1.2", "v1.1.2", "v2.0", "v1.1", "v1.1.10", "v1.1.1"]
    assert [str(n) for n in sorted(map(parse_version, texts))] == ["v1.1", "v1.1.1", "v1.1.2", "v1.1.10", "v1.2",
                                                                    "v2.0"]


async def test_numbers_are_handed_out_under_a_line_a_minor_or_anew() -> None:
    index = InMemoryAdapterIndex()
    taken = [await index.reserve("m", under) for under in [(), (1,), (1, 1), (1, 1), (1,), (), (1, 1), (2, 0)]]
    assert [str(n) for n in taken] == ["v1.0", "v1.1", "v1.1.1", "v1.1.2", "v1.2", "v2.0", "v1.1.3", "v2.0.1"]
    await index.release("m", VersionNumber(1, 1, 3))  # a released number is handed out again
    assert await index.reserve("m", (1, 1)) == (1, 1, 3)
    assert await index.reserve("other", (1, 1)) == (1, 1, 1)  # numbers are per base model
