"""A cron trigger's time zone: any name that is not an IANA zone is INVALID_TIME_ZONE naming the field. ZoneInfo
reads the name as a path below the tz database, so besides unknown zones (ZoneInfoNotFoundError) and names that are
no normalised relative path (ValueError) it fails on a folder of it ("Europe": IsADirectoryError) and on a name too
long for a file name (OSError ENAMETOOLONG); those escaped as bare OSErrors (CreatePipeline answered INTERNAL). The
gRPC side: tests/server/test_pipelines.py (test_bad_pipelines_are_refused_naming_the_field)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.errors import InvalidArgument
from engine.pipelines import triggers as tr
from engine.pipelines.spec import CronTrigger


@pytest.mark.parametrize("zone", ["Europe", "America/" + "x" * 300, "x" * 5000],
                         ids=["folder", "too-long-in-a-folder", "too-long"])
def test_a_folder_or_a_name_too_long_is_invalid_time_zone_naming_the_field(zone: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        tr.check_trigger(CronTrigger("0 2 * * 1", zone), "pipeline.triggers[0]")
    assert caught.value.reason == "INVALID_TIME_ZONE"
    assert [v.field for v in caught.value.violations] == ["pipeline.triggers[0].cron.time_zone"]
    tr.check_trigger(CronTrigger("0 2 * * 1", "Europe/Paris"), "pipeline.triggers[0]")  # its zones still are


def test_a_folder_stored_as_a_zone_fails_its_tick_as_invalid_time_zone() -> None:
    # a trigger stored before such names were refused: deciding it fails with the engine's error, which the tick
    # records as a decision that did not fire (engine.pipelines.service._failed), not as an OSError
    with pytest.raises(InvalidArgument) as caught:
        tr.last_tick(CronTrigger("0 2 * * 1", "Europe"), datetime.now(UTC))
    assert caught.value.reason == "INVALID_TIME_ZONE"
