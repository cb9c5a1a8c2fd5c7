"""The SDK's typed exceptions survive pickling and copying with every field (a worker process of a
ProcessPoolExecutor raising one, a task queue storing it), though they take more than ``args`` (the message)."""

from __future__ import annotations

import copy
import pickle
from concurrent.futures import ProcessPoolExecutor

import grpc
import pytest

from learning_engine import errors


def _not_found() -> errors.NotFound:
    return errors.NotFound(grpc.StatusCode.NOT_FOUND, "no such adapter", reason="ADAPTER_NOT_FOUND",
                           metadata={"version": "v9.9"},
                           violations=(errors.FieldViolation("version", "no such version"),))


def _raise_not_found() -> None:
    raise _not_found()


def test_a_typed_error_round_trips_through_pickle_and_copy() -> None:
    error = _not_found()
    error.add_note("while downloading")
    for again in (lambda: pickle.loads(pickle.dumps(error)), lambda: copy.copy(error), lambda: copy.deepcopy(error)):
        other = again()
        assert (type(other), other.code, other.message, other.reason, other.metadata, other.violations) == (
            errors.NotFound, grpc.StatusCode.NOT_FOUND, "no such adapter", "ADAPTER_NOT_FOUND",
            {"version": "v9.9"}, (errors.FieldViolation("version", "no such version"),))
        assert str(other) == str(error) and other.__notes__ == ["while downloading"]


def test_a_subclass_with_its_own_properties_keeps_them() -> None:
    limited = errors.RateLimited(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", reason="RATE_LIMITED",
                                 metadata={"retry_after_seconds": "2.5"})
    assert pickle.loads(pickle.dumps(limited)).retry_after_seconds == 2.5


def test_a_typed_error_raised_in_a_worker_process_reaches_the_caller_typed() -> None:
    with ProcessPoolExecutor(max_workers=1) as pool, pytest.raises(errors.NotFound) as raised:
        pool.submit(_raise_not_found).result(timeout=60)
    assert raised.value.reason == "ADAPTER_NOT_FOUND" and raised.value.metadata == {"version": "v9.9"}
