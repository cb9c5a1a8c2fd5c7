"""Card numbers written in non-ASCII decimal digits must be scrubbed like ASCII ones.

The scrubber treats every Unicode decimal digit as a digit (the gate counts them, ``\\d`` matches them, and
tests/feedback/test_scrub.py scrubs an Arabic-Indic phone number), but the Luhn check computes each digit as
``ord(ch) - 48``, which is only right for ASCII: a valid card number typed with fullwidth (CJK IMEs) or
Arabic-Indic digits fails Luhn and is stored as is.
"""

from __future__ import annotations

import pytest

from engine.feedback.scrub import Scrubber

ZEROS = {"fullwidth": 0xFF10, "arabic_indic": 0x0660, "bengali": 0x09E6}
CARDS = ["5500 0000 0000 0004", "4012 8888 8888 1881", "4111 1111 1111 1111"]


def _in(zero: int, card: str) -> str:
    return "".join(chr(zero + int(c)) if c.isdigit() else c for c in card)


@pytest.mark.parametrize("script", sorted(ZEROS))
@pytest.mark.parametrize("card", CARDS)
def test_a_card_number_in_other_digits_is_scrubbed(script: str, card: str) -> None:
    assert Scrubber().scrub(f"my card is {card}", {}) == "my card is [CARD]"  # the ASCII form is
    text = f"my card is {_in(ZEROS[script], card)}"
    fired: dict[str, int] = {}
    assert Scrubber().scrub(text, fired) == "my card is [CARD]", fired
