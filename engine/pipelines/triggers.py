"""When a pipeline's triggers fire: cron ticks (croniter, in the trigger's time zone), feedback counts since the
last run, and drift. Pure checks and the occasion keys; engine.pipelines.service acts on them.

Every occasion has a key that names it: ``cron:<tick>`` for a tick (UTC, ISO 8601), ``feedback:<since>`` and
``negative:<since>`` for a count reached since the run that started at ``<since>`` (or the pipeline's creation),
``drift:<version>`` for drift measured against the active version ``<version>``: once per active version, so a run
that leaves the active version as it was (publish only, refused by the gate, canary rolled back) does not make the
same drift another occasion. A fired occasion starts one run whose request id is ``<pipeline>/<created>/<key>``
(:func:`request_id`), so however many replicas see it at once, one run exists (the job store's unique request id);
``<created>`` is the pipeline's creation time, which tells a pipeline from an earlier one deleted under the same id,
whose runs (jobs) outlive it. The run an occasion started is found by that request id, so also when its decision
was never recorded (engine.pipelines.service). That request id is the run's dedup key and stays internal: what the
API shows as the run's ``request_id`` is the key it was started with, as pipeline.proto defines it
(:func:`shown_request_id`). A RunPipeline is an occasion too: ``manual:<request_id>`` (:func:`manual_key`), or,
when the request gave none, ``manual#<random>``, which no request_id makes.

A cron expression is refused (INVALID_CRON) unless its schedule has a tick both before and after now: croniter
accepts fields that name no date (``0 2 30 2 *``, February 30th), whose every tick would raise.
"""

from __future__ import annotations

import uuid
import zoneinfo
from datetime import UTC, datetime

from croniter import CroniterError, croniter

from engine.errors import FieldViolation, InvalidArgument
from engine.pipelines.spec import CronTrigger, DriftTrigger, FeedbackTrigger, Trigger, TriggerKind

MAX_COUNT = 1_000_000


def time_zone(name: str, field_path: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone ``name`` ("": UTC); INVALID_TIME_ZONE naming ``field_path`` for any name that is not one.
    ZoneInfo reads the name as a path below the tz database: besides a missing zone (ZoneInfoNotFoundError) and a
    name that is no normalised relative path or names another file of the database (ValueError), a folder
    (``Europe``: IsADirectoryError) or a name too long for a file name (ENAMETOOLONG) raise an OSError."""
    try:
        return zoneinfo.ZoneInfo(name or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidArgument("INVALID_TIME_ZONE", f"{field_path}: {name!r} is not an IANA time zone",
                              violations=[FieldViolation(field_path, "not an IANA time zone (e.g. Europe/Paris)")]
                              ) from exc


def check_trigger(trigger: Trigger, field_path: str) -> None:
    """INVALID_ARGUMENT naming the field for an expression, a time zone or a count that cannot work."""
    if isinstance(trigger, CronTrigger):
        if len(trigger.expression.split()) != 5 or not croniter.is_valid(trigger.expression):
            raise InvalidArgument("INVALID_CRON", f"{field_path}.cron.expression: {trigger.expression!r} is not a "
                                                  "cron expression",
                                  violations=[FieldViolation(f"{field_path}.cron.expression",
                                                             "not a cron expression (e.g. '0 2 * * 1')")])
        time_zone(trigger.time_zone, f"{field_path}.cron.time_zone")
        try:  # croniter searches a bounded span of years: fields that name no date (February 30th) find no tick
            now = datetime.now(UTC)
            last_tick(trigger, now)
            next_tick(trigger, now)
        except CroniterError as exc:
            raise InvalidArgument("INVALID_CRON", f"{field_path}.cron.expression: {trigger.expression!r} matches no "
                                                  "date",
                                  violations=[FieldViolation(f"{field_path}.cron.expression",
                                                             "matches no date (e.g. February 30th)")]) from exc
    elif isinstance(trigger, FeedbackTrigger):
        if not 0 < trigger.count <= MAX_COUNT:
            raise InvalidArgument("INVALID_TRIGGER", f"{field_path}.feedback.count must be in 1..{MAX_COUNT}",
                                  violations=[FieldViolation(f"{field_path}.feedback.count",
                                                             f"must be in 1..{MAX_COUNT}")])
    elif isinstance(trigger, DriftTrigger) and not 0 <= trigger.threshold < float("inf"):
        raise InvalidArgument("INVALID_TRIGGER", f"{field_path}.drift.threshold must be a finite number >= 0",
                              violations=[FieldViolation(f"{field_path}.drift.threshold", "must be finite and >= 0")])


def last_tick(trigger: CronTrigger, now: datetime) -> datetime:
    """The latest tick of the schedule at or before ``now`` (in UTC). A tick is a wall time of the trigger's time
    zone: one that clocks falling back show twice is one tick, at its first instant (croniter names both)."""
    zone = time_zone(trigger.time_zone, "cron.time_zone")
    minute = now.astimezone(zone).replace(second=0, microsecond=0)
    tick: datetime = minute if croniter.match(trigger.expression, minute) else (
        croniter(trigger.expression, minute).get_prev(datetime))
    return tick.replace(fold=0).astimezone(UTC)


def next_tick(trigger: CronTrigger, now: datetime) -> datetime:
    zone = time_zone(trigger.time_zone, "cron.time_zone")
    tick: datetime = croniter(trigger.expression, now.astimezone(zone)).get_next(datetime)
    return tick.astimezone(UTC)


def request_id(pipeline_id: str, created: datetime | None, key: str) -> str:
    """The request id of the run an occasion (``key``) of the pipeline created at ``created`` starts. The creation
    time is the pipeline's incarnation: one deleted and created again under the same id has another (its runs are
    found by it too, engine.stores.pipeline_store)."""
    when = created.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ") if created is not None else "-"
    return f"{pipeline_id}/{when}/{key}"


MANUAL_PREFIX = "manual:"  # the occasion of a RunPipeline request that gave a request_id: manual:<request_id>


def manual_key(request_id: str) -> str:
    """The occasion key of a RunPipeline request: ``manual:<request_id>``, so the same request_id finds its run
    again; a request without one gets a key of its own that no request_id makes (``manual#<random>``), so the run
    never shows a request_id its client did not send (:func:`shown_request_id`)."""
    return f"{MANUAL_PREFIX}{request_id}" if request_id else f"manual#{uuid.uuid4().hex[:12]}"


def shown_request_id(pipeline_id: str, trigger: TriggerKind, key: str) -> str:
    """A run's ``request_id`` as pipeline.proto defines it: RunPipeline's request_id ("" when it gave none), or
    ``<pipeline>/<occasion>`` for a trigger's run. Not the run's dedup key (:func:`request_id`), whose pipeline
    creation time is internal: it only tells one incarnation of a pipeline id from another."""
    if trigger is TriggerKind.MANUAL:
        return key.removeprefix(MANUAL_PREFIX) if key.startswith(MANUAL_PREFIX) else ""
    return f"{pipeline_id}/{key}"


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def kind_of(trigger: Trigger) -> TriggerKind:
    if isinstance(trigger, CronTrigger):
        return TriggerKind.CRON
    if isinstance(trigger, FeedbackTrigger):
        return TriggerKind.NEGATIVE_FEEDBACK if trigger.negative_only else TriggerKind.FEEDBACK
    return TriggerKind.DRIFT


def occasion_key(trigger: Trigger, *, tick: datetime | None = None, since: datetime | None = None,
                 reference: str | None = None) -> str:
    """The key of the occasion: a cron ``tick``, the watermark ``since`` a count is measured from, or the
    ``reference`` version a drift is measured against."""
    if isinstance(trigger, CronTrigger):
        assert tick is not None
        return f"cron:{stamp(tick)}"
    if isinstance(trigger, DriftTrigger):
        assert reference is not None
        return f"drift:{reference or '-'}"
    assert since is not None
    prefix = "negative" if trigger.negative_only else "feedback"
    return f"{prefix}:{stamp(since)}"
