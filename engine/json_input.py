"""JSON a client or a model wrote, read so that any malformed text is a ValueError.

``json.loads`` raises ``ValueError`` (``JSONDecodeError``) for most malformed text, but ``RecursionError`` for text
nested deeper than the interpreter's recursion limit (``"[" * 100000``): a few bytes anyone can send, which a
``except ValueError`` around the parse lets through as an internal error. It also accepts a string escape of a lone
UTF-16 surrogate (``"caf\\ud800"``, valid JSON syntax): the string it returns is no Unicode text, and fails only
later, wherever it is encoded (a digest, PostgreSQL, a gRPC message), as an internal error too. Every parse of text
from outside the process goes through :func:`loads`, which refuses both as ValueError.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A character that is a UTF-16 surrogate: in a str, always a lone one (Python joins no pair of them into one).
_SURROGATE = re.compile("[\ud800-\udfff]")
# What a surrogate in the parsed document comes from: a surrogate character in the text (bytes are decoded as
# json.loads decodes them, with "surrogatepass"), or a \uD800-\uDFFF escape (a lone one, or half of a pair,
# which json joins into one character). Text with neither holds no surrogate: the parsed document is not walked.
_MAYBE_SURROGATE = re.compile(r"[\ud800-\udfff]|\\u[dD][89a-fA-F]")


def loads(text: str | bytes | bytearray) -> Any:
    """``json.loads(text)``; ValueError for any text that is not JSON this process can hold: too deep, or holding a
    string (or key) with a lone UTF-16 surrogate, which is no Unicode text."""
    if isinstance(text, bytes | bytearray):  # decoded as json.loads decodes bytes
        decoded = text.decode(json.detect_encoding(text), "surrogatepass")
    else:
        decoded = text
    try:
        doc = json.loads(decoded)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
    if _MAYBE_SURROGATE.search(decoded):
        _refuse_surrogates(doc)
    return doc


def _refuse_surrogates(doc: Any) -> None:
    """ValueError if a string of ``doc`` (a value or a key, at any depth) holds a surrogate; one walk, no copy."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item)  # the keys, strings
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and not item.isascii() and (found := _SURROGATE.search(item)) is not None:
            raise ValueError(f"a string holds a lone UTF-16 surrogate (U+{ord(found.group()):04X}), "
                             "which is not Unicode text")
