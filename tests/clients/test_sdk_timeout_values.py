"""A client's ``timeout`` and ``operation_timeout`` are deadlines in seconds (None: no deadline). 0, a negative
number or nan made every call fail at once with DEADLINE_EXCEEDED, as if the server were slow, and inf (meant as
"no deadline") did the same: each is refused with ValueError naming the parameter when the client is made."""

from __future__ import annotations

import math

import pytest

from learning_engine import AsyncClient, Client

BAD = [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("value", BAD, ids=str)
@pytest.mark.parametrize("parameter", ["timeout", "operation_timeout"])
def test_a_deadline_no_call_can_have_is_refused(parameter: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"^{parameter} must be a positive, finite number of seconds"):
        AsyncClient("127.0.0.1:1", **{parameter: value})
    with pytest.raises(ValueError, match=f"^{parameter} must be a positive, finite number of seconds"):
        Client("127.0.0.1:1", **{parameter: value})


async def test_none_and_a_positive_number_are_deadlines() -> None:
    async with AsyncClient("127.0.0.1:1", timeout=None, operation_timeout=0.25) as client:
        assert (client.timeout, client.operation_timeout) == (None, 0.25)
    async with AsyncClient("127.0.0.1:1", timeout=1e-3) as client:
        assert client.timeout == 1e-3 and client.operation_timeout is None
