"""JSON a client or a model wrote, read so that any malformed text is a ValueError.

``json.loads`` raises ``ValueError`` (``JSONDecodeError``) for most malformed text, but ``RecursionError`` for text
nested deeper than the interpreter's recursion limit (``"[" * 100000``): a few bytes anyone can send, which a
``except ValueError`` around the parse lets through as an internal error. Every parse of text from outside the
process goes through :func:`loads`.
"""

from __future__ import annotations

import json
from typing import Any


def loads(text: str | bytes | bytearray) -> Any:
    """``json.loads(text)``; ValueError for any text that is not JSON this process can hold, too deep included."""
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
