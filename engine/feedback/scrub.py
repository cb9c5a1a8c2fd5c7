"""PII scrubbing of free text before it is stored.

Rules run in a fixed order, each on the output of the previous one, and replace
what they find with a placeholder such as ``[EMAIL]``:

1. the operator's extra patterns (settings ``feedback_scrub_patterns``), so that
   site-specific identifiers win over the generic rules below;
2. ``email`` (also the bracketed obfuscations ``name [at] host [dot] com``);
3. ``card``: 13-19 digits, optionally grouped by spaces or dashes, that pass
   the Luhn check (other long numbers, e.g. order ids, are left alone);
4. ``ipv6`` and ``ipv4``: candidates confirmed by parsing, not by shape alone;
5. ``phone``: 7-15 digits in a phone-like grouping (E.164 allows 15), except
   calendar dates and numbers grouped in thousands with a one- or two-digit lead
   (``1 000 000``, ``10.000.000``). A lead of three digits (``612 345 678``) is
   still a phone: several countries write their numbers that way.

Why regular expressions and not a library: the candidates (Presidio, scrubadub)
need NLP models fetched from a hub or pull in large stacks, and run per string
at rates far below the ingestion path's; these rules are linear-time (no nested
ambiguous quantifiers; tested with adversarial inputs), each guarded by a cheap
pre-check so ordinary text costs a few C-level scans.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, compress, count, repeat
from operator import and_, ge, sub

from engine.errors import FieldViolation, InvalidArgument

_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w.%+-]{1,64}"
    r"(?:@|\s*[\[({]\s*at\s*[\])}]\s*)"
    r"(?:[^\W_][\w-]{0,62}(?:\.|\s*[\[({]\s*dot\s*[\])}]\s*)){1,8}"
    r"[^\W\d_]{2,24}\b",
    re.IGNORECASE,
)
_EMAIL_HINT = re.compile(r"@|[\[({]\s*at\s*[\])}]", re.IGNORECASE)
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])[0-9A-Fa-f:]{2,39}(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?:%[\w.]{1,16})?(?![\w:]|\.\d)"
)
_PHONE = re.compile(
    r"(?<![\w+])"
    r"(?:(?:\+|00)\d{1,3}[ .-]?)?"
    r"(?:\(\d{1,4}\)[ .-]?|\d{1,4}[ .-])?"
    r"\d{2,11}(?:[ .-]\d{2,8}){0,3}"
    r"(?![\w])"
)
# A number grouped in thousands (by spaces or dots), e.g. "1 000 000": not a phone. A three-digit lead stays a phone.
_THOUSANDS = re.compile(r"[1-9]\d?([ .])\d{3}(?:\1\d{3})+")
_DATE = re.compile(r"\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2\d{2,4}")
# Gate for the built-in rules, in a few C-level passes over the text's UTF-8: anything a built-in rule can
# match has an "@", a bracketed "at", 7+ digits, 4+ digits and 3+ dots, or 2+ colons, where a digit is any
# Unicode decimal digit (what the rules' \d matches). Text failing all of these (most feedback) skips every rule.
_NOT_ASCII_DIGITS = bytes(c for c in range(256) if not 48 <= c <= 57)
_ASCII = bytes(range(128))
_WHITESPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # every ASCII character str.isspace() (and so \s) accepts
_BRACKET_AT = re.compile(rb"[\[({]at[\])}]")  # on lower-cased text without whitespace


def might_hold_builtin_pii(text: str) -> bool:
    raw = text.encode()
    if b"@" in raw or raw.count(b":") >= 2:
        return True
    digits = len(raw.translate(None, _NOT_ASCII_DIGITS))
    ascii_only = text.isascii()
    if not ascii_only:  # the other characters, UTF-8 sequences of bytes >= 0x80, decode on their own
        digits += sum(map(str.isdecimal, raw.translate(None, _ASCII).decode()))
    if digits >= 7 or (digits >= 4 and raw.count(b".") >= 3):
        return True
    if b"(" not in raw and b"[" not in raw and b"{" not in raw:
        return False
    closed = raw.lower().translate(None, _WHITESPACE)
    if (b"at)" in closed or b"at]" in closed or b"at}" in closed) and _BRACKET_AT.search(closed) is not None:
        return True
    return not ascii_only and _EMAIL_HINT.search(text) is not None  # Unicode whitespace inside the brackets


def _keep_only(chars: bytes) -> bytes:
    """A ``bytes.translate`` deletion table that keeps ``chars`` and NUL (the separator of joined texts)."""
    return bytes(c for c in range(256) if c not in chars and c != 0)


_SHAPE = _keep_only(b"0123456789.:")  # what the digit, dot and colon conditions look at
# A bracketed "at" in closed text (lower-cased, no whitespace) survives as "(at)" in the text cut down to
# brackets and a/t letters, with every bracket made round and the letters lower-cased (one translate).
_BRACKET_AT_LETTERS = _keep_only(b"([{)]}aAtT")
_BRACKET_AT_FOLD = bytes.maketrans(b"[{]}AT", b"(())at")


def _starts(lengths: Iterable[int]) -> list[int]:
    """Start offsets of the parts of a string joined with a one-character separator."""
    return list(accumulate(map((1).__add__, lengths), initial=0))


def _bracket_at(text: str) -> bool:
    closed = text.encode().lower().translate(None, _WHITESPACE)
    return _BRACKET_AT.search(closed) is not None


def builtin_candidates(texts: Sequence[str]) -> set[int]:
    """The indices ``i`` with ``might_hold_builtin_pii(texts[i])``, from a few C-level passes over the whole batch.

    The same test as the per-text gate (tests/feedback/test_scrub.py compares them), at a fraction of its cost
    per text: the texts are joined with NUL, reduced to the characters each condition looks at (one
    ``bytes.translate`` each), split again, and counted with C-level ``map``s.
    """
    n = len(texts)
    joined = "\x00".join(texts)
    raw = joined.encode()  # UTF-8: NUL and ASCII characters stay one byte each, in their own text's segment
    shapes = raw.translate(None, _SHAPE).split(b"\x00")
    if len(shapes) != max(n, 1):  # a text holds NUL itself: text by text
        return {i for i, text in enumerate(texts) if might_hold_builtin_pii(text)}
    found: set[int] = set()
    if not joined.isascii():  # Unicode digits and whitespace: text by text (the passes below see ASCII only)
        found.update(i for i, text in enumerate(texts) if not text.isascii() and might_hold_builtin_pii(text))
    at = joined.find("@")
    if at >= 0:
        starts = _starts(map(len, texts))
        while at >= 0:
            i = bisect_right(starts, at) - 1
            found.add(i)
            at = joined.find("@", starts[i + 1]) if i + 1 < n else -1
    colons = list(map(bytes.count, shapes, repeat(b":")))
    found.update(compress(count(), map(ge, colons, repeat(2))))
    dots = list(map(bytes.count, shapes, repeat(b".")))
    digits = list(map(sub, map(sub, map(len, shapes), dots), colons))
    found.update(compress(count(), map(ge, digits, repeat(7))))
    found.update(compress(count(), map(and_, map(ge, digits, repeat(4)), map(ge, dots, repeat(3)))))
    # A bracketed "at" (whitespace and case aside): find it in the text cut down to brackets and a/t letters,
    # which keeps every real one (and some false ones, which the exact per-text test then drops).
    letters = raw.translate(_BRACKET_AT_FOLD, _BRACKET_AT_LETTERS)
    if b"(at)" in letters:
        for i, part in enumerate(letters.split(b"\x00")):
            if b"(at)" in part and i not in found and _bracket_at(texts[i]):
                found.add(i)
    return found


_DIGITS = re.compile(r"\d")
_SEPARATORS = re.compile(r"[ .()-]")
_NON_DIGITS = re.compile(r"\D")

BUILTIN_RULES = ("email", "card", "ipv6", "ipv4", "phone")


def luhn_valid(digits: str) -> bool:
    """Luhn check of any Unicode decimal digits (``\\d`` matches fullwidth, Arabic-Indic, ... ones too)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = unicodedata.decimal(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_ok(match: str) -> bool:
    digits = _NON_DIGITS.sub("", match)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _ipv4_ok(match: str) -> bool:
    return all(int(part) <= 255 for part in match.split("."))


def _ipv6_ok(match: str) -> bool:
    address = match.split("%", 1)[0]
    groups = [g for g in address.split(":") if g]
    if len(groups) < 2:  # "::1", "a::" and slicing syntax such as "[::2]" are not worth a false positive
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


def _phone_ok(match: str) -> bool:
    digits = len(_NON_DIGITS.sub("", match))
    if not 7 <= digits <= 15:
        return False
    if match[0] != "+" and not _SEPARATORS.search(match) and not 10 <= digits <= 11:
        return False  # a bare run of digits is a phone only at national length (10-11), else a number
    return not _DATE.fullmatch(match) and not _THOUSANDS.fullmatch(match)


@dataclass(frozen=True)
class ScrubRule:
    name: str
    pattern: re.Pattern[str]
    placeholder: str
    accept: Callable[[str], bool] | None = None
    hint: Callable[[str], object] | None = None  # cheap pre-check; the rule is skipped when it is falsy


def _has_digit(text: str) -> object:
    return _DIGITS.search(text)


BUILTINS: tuple[ScrubRule, ...] = (
    ScrubRule("email", _EMAIL, "[EMAIL]", None, _EMAIL_HINT.search),
    ScrubRule("card", _CARD, "[CARD]", _card_ok, _has_digit),
    ScrubRule("ipv6", _IPV6, "[IP]", _ipv6_ok, lambda t: ":" in t),
    ScrubRule("ipv4", _IPV4, "[IP]", _ipv4_ok, lambda t: "." in t),
    ScrubRule("phone", _PHONE, "[PHONE]", _phone_ok, _has_digit),
)


def custom_rules(patterns: Mapping[str, str], *, field_path: str = "feedback_scrub_patterns") -> list[ScrubRule]:
    """Compile the operator's ``name -> regex`` patterns; raise InvalidArgument naming every bad one."""
    rules, violations = [], []
    for name, source in patterns.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name) or name in BUILTIN_RULES:
            violations.append(FieldViolation(f"{field_path}.{name}",
                                             "name must be lower_snake_case and not a built-in rule"))
            continue
        try:
            pattern = re.compile(source)
        except re.error as exc:
            violations.append(FieldViolation(f"{field_path}.{name}", f"invalid regex: {exc}"))
            continue
        if pattern.search(""):
            violations.append(FieldViolation(f"{field_path}.{name}", "must not match the empty string"))
            continue
        rules.append(ScrubRule(name, pattern, f"[{name.upper()}]"))
    if violations:
        raise InvalidArgument("INVALID_SCRUB_PATTERN", "invalid scrub pattern(s)", violations=violations)
    return rules


class Scrubber:
    """Replaces PII in text; ``scrub`` returns the new text and how often each rule fired."""

    def __init__(self, extra: Mapping[str, str] | None = None, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.custom: tuple[ScrubRule, ...] = tuple(custom_rules(extra or {})) if enabled else ()
        self.builtins: tuple[ScrubRule, ...] = BUILTINS if enabled else ()

    def to_scrub(self, texts: Sequence[str]) -> Container[int]:
        """The indices of ``texts`` that ``scrub`` could change; ``scrub`` leaves every other one as it is."""
        if self.custom:
            return range(len(texts))
        return builtin_candidates(texts) if self.builtins else ()

    def scrub(self, text: str, fired: dict[str, int]) -> str:
        """Scrub ``text``, adding the count of replacements per rule name to ``fired``."""
        if not text:
            return text
        for rule in self.custom:
            text = self._apply(rule, text, fired)
        if self.builtins and might_hold_builtin_pii(text):
            for rule in self.builtins:
                if rule.hint is None or rule.hint(text):
                    text = self._apply(rule, text, fired)
        return text

    @staticmethod
    def _apply(rule: ScrubRule, text: str, fired: dict[str, int]) -> str:
        count = 0

        def replace(match: re.Match[str]) -> str:
            nonlocal count
            if rule.accept is not None and not rule.accept(match.group(0)):
                return match.group(0)
            count += 1
            return rule.placeholder

        text = rule.pattern.sub(replace, text)
        if count:
            fired[rule.name] = fired.get(rule.name, 0) + count
        return text
