"""PII scrubbing: what each rule catches, what it must leave alone, and adversarial inputs."""

from __future__ import annotations

import random
import time

import pytest

from engine.errors import InvalidArgument
from engine.feedback.scrub import (
    BUILTINS,
    Scrubber,
    builtin_candidates,
    custom_rules,
    luhn_valid,
    might_hold_builtin_pii,
)

SCRUB = Scrubber({"ticket": r"\bTCK-\d{6}\b"})


def scrub(text: str) -> tuple[str, dict[str, int]]:
    fired: dict[str, int] = {}
    return SCRUB.scrub(text, fired), fired


@pytest.mark.parametrize(
    ("text", "expected", "rule"),
    [
        ("mail john.doe+tag@example.co.uk now", "mail [EMAIL] now", "email"),
        ("JOSÉ@exámple.fr", "[EMAIL]", "email"),
        ("write to john [at] example [dot] com please", "write to [EMAIL] please", "email"),
        ("john(at)example.com", "[EMAIL]", "email"),
        ("ALICE@EXAMPLE.ORG.", "[EMAIL].", "email"),
        ("call +1 (555) 123-4567 today", "call [PHONE] today", "phone"),
        ("555.123.4567", "[PHONE]", "phone"),
        ("+44 20 7946 0958", "[PHONE]", "phone"),
        ("0049 30 1234567", "[PHONE]", "phone"),
        ("(555)123-4567", "[PHONE]", "phone"),
        ("5551234567", "[PHONE]", "phone"),
        ("movil 612 345 678", "movil [PHONE]", "phone"),  # a three-digit lead is a phone, not thousands
        ("card 4111 1111 1111 1111 ok", "card [CARD] ok", "card"),
        ("4111-1111-1111-1111", "[CARD]", "card"),
        ("amex 378282246310005", "amex [CARD]", "card"),
        ("from 192.168.1.20.", "from [IP].", "ipv4"),
        ("host 2001:db8::1 up", "host [IP] up", "ipv6"),
        ("fe80::1%eth0 x", "[IP] x", "ipv6"),
        ("::ffff:192.0.2.1", "[IP]", "ipv6"),
        ("ref TCK-123456 closed", "ref [TICKET] closed", "ticket"),
    ],
)
def test_rule_catches(text: str, expected: str, rule: str) -> None:
    out, fired = scrub(text)
    assert out == expected
    assert fired == {rule: 1}


@pytest.mark.parametrize(
    "text",
    [
        "order 1234567812345678",  # 16 digits failing Luhn: an id, not a card
        "1234 5678 9012 3456",
        "999.1.1.1 is no address",
        "release v1.2.3.4",
        "a[::2] and std::vector and 12:30:45",
        "00:1A:2B:3C:4D:5E",
        "on 2024-01-15 and 15.01.2024",
        "pi is 3.14159, room 42, 12345678 widgets",
        "sold 1 000 000 copies, 10 000 000 views, 1.000.000 EUR, 25 000 000 000 bytes",  # thousands separators
        "user@ alone and @handle and a@b",
        "",
    ],
)
def test_leaves_non_pii_alone(text: str) -> None:
    assert scrub(text) == (text, {})


def test_counts_every_match_and_every_rule() -> None:
    out, fired = scrub("a@b.io, c@d.io; call 555-123-4567 from 10.0.0.1 with 4111111111111111")
    assert out == "[EMAIL], [EMAIL]; call [PHONE] from [IP] with [CARD]"
    assert fired == {"email": 2, "phone": 1, "ipv4": 1, "card": 1}


def test_a_card_is_not_mistaken_for_a_phone() -> None:
    assert scrub("4111 1111 1111 1111") == ("[CARD]", {"card": 1})


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112") and not luhn_valid("79927398710")


@pytest.mark.parametrize(
    "text",
    [
        "a" * 100_000 + "@",
        "a@" + "b." * 50_000,
        "1 " * 50_000,
        "12 " * 40_000,
        "a:" * 50_000,
        "0:" * 50_000,
        "1." * 50_000,
        "[at]" * 30_000 + "x",
        "a " * 50_000 + "@x",
        "+1 " * 30_000,
        "x@" * 50_000,
    ],
    ids=lambda s: f"{s[:6]!r}x{len(s)}",
)
def test_adversarial_inputs_run_in_linear_time(text: str) -> None:
    started = time.perf_counter()
    scrub(text)
    assert time.perf_counter() - started < 0.5  # catastrophic backtracking would take minutes


def test_disabled_scrubber_changes_nothing() -> None:
    fired: dict[str, int] = {}
    assert Scrubber(enabled=False).scrub("a@b.io 555-123-4567", fired) == "a@b.io 555-123-4567"
    assert fired == {}


def test_bad_custom_patterns_are_all_reported() -> None:
    with pytest.raises(InvalidArgument) as err:
        custom_rules({"ok": "x+", "broken": "(", "Bad-Name": "y", "email": "z", "empty": "a*"})
    assert err.value.reason == "INVALID_SCRUB_PATTERN"
    assert sorted(v.field for v in err.value.violations) == [
        "feedback_scrub_patterns.Bad-Name", "feedback_scrub_patterns.broken",
        "feedback_scrub_patterns.email", "feedback_scrub_patterns.empty",
    ]


def test_the_batch_gate_picks_exactly_the_texts_the_per_text_gate_does() -> None:
    rng = random.Random(5)
    alphabet = "ab t@:.([{)]}0123456789 \t\nAT\x00é٣\x1c\u00a0\u2003"
    batches = [
        ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(rng.randint(0, 9))]
        for _ in range(3000)
    ]
    batches.append(["1 " * 50_000, "a:" * 50_000, "[at]" * 30_000, "x@" * 50_000, "plain text", ""])
    for texts in batches:
        assert builtin_candidates(texts) == {i for i, t in enumerate(texts) if might_hold_builtin_pii(t)}, texts


def test_to_scrub_leaves_out_only_texts_scrub_would_not_change() -> None:
    texts = ["hello", "mail a@b.io", "call 555 123 4567", "", "v1.2.3.4", "(at)"]
    dirty = Scrubber().to_scrub(texts)
    for i, text in enumerate(texts):
        if i not in dirty:
            assert Scrubber().scrub(text, {}) == text
    assert {1, 2} <= set(dirty)
    assert list(SCRUB.to_scrub(texts)) == list(range(len(texts)))  # custom rules run on every text
    assert not Scrubber(enabled=False).to_scrub(texts)


def test_the_gate_never_hides_text_a_rule_would_change() -> None:
    rng = random.Random(11)
    tokens = ["john", "x", "@", ".", "com", "(", "at", ")", "[", "]", "dot", " ", "\x1c", "\u00a0", "1", "55", "٣",
              "4111", "-", "+", ":", "::", "fe80", "192", "é", "Ａ", "\n"]
    for _ in range(20_000):
        text = "".join(rng.choice(tokens) for _ in range(rng.randint(1, 14)))
        ungated, fired = text, {}
        for rule in BUILTINS:
            ungated = Scrubber._apply(rule, ungated, fired)
        assert ungated == text or might_hold_builtin_pii(text), text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("john(\x1cat)example(dot)com", "[EMAIL]"),  # ASCII whitespace that \s accepts and the gate once missed
        ("écrivez à josé@exemple.fr", "écrivez à [EMAIL]"),
        ("téléphone ٠١٢٣٤٥٦٧٨٩", "téléphone [PHONE]"),  # Arabic-Indic digits are digits to the rules
        ("réponse complète, merci ! 🙂", "réponse complète, merci ! 🙂"),
    ],
)
def test_non_ascii_and_odd_whitespace_go_through_the_gate_right(text: str, expected: str) -> None:
    assert scrub(text)[0] == expected
