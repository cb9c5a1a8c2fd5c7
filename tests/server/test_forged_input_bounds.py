"""Input a client can forge that is well formed on the wire but out of what the server or PostgreSQL can hold: a
drift report's end too close to the earliest timestamp for its window, and page tokens (base64 JSON anyone can
build) with a time before year 1 in UTC or a NUL in their id. Each is INVALID_ARGUMENT with the field, not
INTERNAL."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import timestamp_pb2

from engine.names import PageScope
from learning.v1 import adapter_pb2, adapter_pb2_grpc
from learning.v1 import dataset_pb2 as pb
from learning.v1 import dataset_pb2_grpc as pb_grpc
from learning.v1 import drift_pb2 as dp
from learning.v1 import drift_pb2_grpc as dp_grpc
from learning.v1 import training_pb2 as tp
from tests.server.conftest import error_details


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


async def test_a_drift_report_ending_too_near_the_earliest_timestamp_for_its_window(pg_client) -> None:
    # A valid Timestamp (year 1), with the default 30-day window: the window would start before 0001-01-01.
    request = dp.GetDriftReportRequest(end_time=timestamp(datetime(1, 1, 5, tzinfo=UTC)))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await dp_grpc.DriftServiceStub(pg_client.channel).GetDriftReport(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    info, violations = error_details(err.value)
    assert info.reason == "INVALID_DRIFT_REQUEST" and [f for f, _ in violations] == ["end_time"]


def adapter_token(cursor: list[str] | str) -> str:
    """The adapter list's own cursor (time, base model, version numbers) with the same forged parts."""
    raw = cursor.encode() if isinstance(cursor, str) else json.dumps([*cursor, 1, 0, 0]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def scoped_token(scope: PageScope, cursor: list[str] | str) -> str:
    """A token carrying the scope of the list it is sent to (engine.names.PageScope: any other is refused before its
    cursor is read) with the forged cursor: what the list must refuse is the cursor itself."""
    raw = cursor.encode() if isinstance(cursor, str) else json.dumps([scope.digest, *cursor]).encode()
    return base64.urlsafe_b64encode(raw).decode()


async def test_a_forged_adapter_page_token_with_a_number_out_of_range(pg_client) -> None:
    token = base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00+00:00", "m", 2**40, 0, 0]).encode()).decode()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await adapter_pb2_grpc.AdapterServiceStub(pg_client.channel).ListAdapters(
            adapter_pb2.ListAdaptersRequest(page_token=token))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()


async def test_a_scoped_token_with_a_cursor_in_bounds_is_taken(pg_client) -> None:
    # The tokens below are refused for their cursor: with one in bounds, the same scope is accepted.
    cursor = ["2026-01-01T00:00:00+00:00", "datasets/a/versions/1"]
    datasets = await pb_grpc.DatasetServiceStub(pg_client.channel).ListDatasets(pb.ListDatasetsRequest(
        page_token=scoped_token(PageScope("datasets", ("",)), cursor)))
    jobs = await pg_client.training.ListTrainingJobs(tp.ListTrainingJobsRequest(
        page_token=scoped_token(PageScope("trainingJobs"), cursor)))
    assert (list(datasets.datasets), list(jobs.training_jobs)) == ([], [])  # nothing stored before that cursor


@pytest.mark.parametrize("cursor", [
    ["2026-01-01T00:00:00+00:00", "datasets/a\x00/versions/1"],  # a NUL in the cursor's id
    ["0001-01-01T00:00:00+05:00", "datasets/a/versions/1"],  # before 0001-01-01 in UTC
    ["9999-12-31T23:00:00-05:00", "datasets/a/versions/1"],  # after 9999 in UTC
    "[" * 100_000,  # nested deeper than json can parse: a RecursionError, not a ValueError
], ids=["nul", "before-year-1", "after-9999", "too-deep"])
async def test_a_forged_page_token_is_invalid_in_every_list(pg_client, cursor) -> None:
    calls = [
        pb_grpc.DatasetServiceStub(pg_client.channel).ListDatasets(pb.ListDatasetsRequest(
            page_token=scoped_token(PageScope("datasets", ("",)), cursor))),
        pg_client.training.ListTrainingJobs(tp.ListTrainingJobsRequest(
            page_token=scoped_token(PageScope("trainingJobs"), cursor))),
        adapter_pb2_grpc.AdapterServiceStub(pg_client.channel).ListAdapters(
            adapter_pb2.ListAdaptersRequest(page_token=adapter_token(cursor))),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        info, violations = error_details(err.value)
        assert info.reason == "INVALID_PAGE_TOKEN" and [f for f, _ in violations] == ["page_token"]
