"""An online session handed back to the queue when a store cannot be reached for a moment.

A session lives for days and reads PostgreSQL twice a second, so one outage (PostgreSQL restarting, the object
store cut off) must not end it. A store error while a worker sets the session up or while it runs stops it as at a
worker's shutdown instead: the job manager releases it QUEUED, and the worker that takes it sets it up again and
goes on from its checkpoint (engine.online.runner). The interruptions in a row are counted on the job
(``OnlineOutput.interruptions``; an update sets it to 0): each after the first waits longer before the hand-back,
and the ``MAX_INTERRUPTIONS``-th fails the session with the error, so one that does not go away (a bucket deleted,
a read-only work directory) does not requeue it forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from engine.errors import Cancelled, Unavailable
from engine.jobs.context import JobContext
from engine.jobs.core import Warned
from engine.jobs.ports import StopReason
from engine.online.spec import OnlineOutput, OnlineSessionSpec

Ctx = JobContext[OnlineSessionSpec, OnlineOutput]

# What a store raises while it cannot be reached for a moment: Unavailable (DATABASE_UNAVAILABLE, which the
# PostgreSQL stores make of the driver's connection errors; ARTIFACT_STORE_UNAVAILABLE), and OSError (refused,
# reset, timeouts; a local disk full writing an archive).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (Unavailable, OSError)
# A session handed back for a store's error more than this many times in a row (no update in between, nor a run
# of STEADY_SECONDS) fails with the last error: an error that does not go away (a bucket deleted, a read-only work
# dir: OSError is among TRANSIENT_ERRORS) would otherwise requeue it forever. With the waits below, that is about
# half an hour of a store staying down, and a model load at most every two minutes meanwhile.
MAX_INTERRUPTIONS = 20
# The wait before handing a session back after its n-th interruption in a row: none after the first (a blip is over
# by the time another worker takes it), then 5 s, doubling, at most 2 min; a stop asked meanwhile ends it early.
INTERRUPTION_WAIT_SECONDS = 5.0
INTERRUPTION_WAIT_CAP_SECONDS = 120.0
STEADY_SECONDS = 600.0  # a session that ran this long before an interruption starts counting again
STOP_POLL_SECONDS = 0.25  # how often the wait looks at the job's cancel token

log = logging.getLogger(__name__)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def hand_back(ctx: Ctx, exc: BaseException, *, steady: bool = False, preparing: bool = False) -> bool:
    """After the store error ``exc``, the session asked to go back to the queue as at a worker's shutdown, with a
    SESSION_INTERRUPTED warning; True then. The interruption is counted first (``steady``: the run it cut short went
    on long enough to start counting again; the ``MAX_INTERRUPTIONS``-th raises the error, which fails the session)
    and its wait waited, while this worker still holds the session. False, with nothing counted or recorded, when a
    client's stop was asked before or during the wait: the caller ends the session as asked. A lost lease raises
    Cancelled at once (nothing more is written). ``preparing``: the error came while a worker set the session up."""
    what = describe(exc)
    log.warning("online session interrupted by a store error" + (" while preparing" if preparing else ""),
                extra={"job_id": ctx.job.id, "error": what})
    if ctx.cancel.reason is StopReason.CANCEL:
        return False
    if ctx.cancel.reason is StopReason.LEASE_LOST:
        raise Cancelled("JOB_CANCELLED", "stopped to continue later")
    count = _count_interruption(ctx, exc, steady=steady)
    await _wait_unless_stopped(ctx, count)
    ctx.cancel.cancel(StopReason.SHUTDOWN)  # the manager releases the job QUEUED, as at a worker's shutdown
    reason = _stop_reason(ctx)  # as it is now: a stop asked during the wait
    if reason is StopReason.CANCEL:
        return False
    if reason is StopReason.LEASE_LOST:
        raise Cancelled("JOB_CANCELLED", "stopped to continue later")
    if preparing:
        said = (f"a store could not be reached while the session was being prepared ({what}): it goes back to the "
                "queue and a worker prepares it again")
    else:
        said = (f"a store could not be reached ({what}): the session goes back to the queue and a worker goes on "
                "from its last checkpoint, reading the examples after it again")
    ctx.record(Warned("SESSION_INTERRUPTED", said + _in_a_row(count)))
    return True


def steady_since(started: float | None) -> bool:
    """Whether a run that started at ``started`` (monotonic; None: not yet) went on long enough to count its
    interruption as the first in a row again."""
    return started is not None and time.monotonic() - started >= STEADY_SECONDS


def _in_a_row(count: int) -> str:
    if count <= 1:
        return ""
    return (f" ({count} interruptions in a row with no update between them; at {MAX_INTERRUPTIONS} the session "
            "fails)")


def _count_interruption(ctx: Ctx, exc: BaseException, *, steady: bool = False) -> int:
    """This interruption counted on the job (``OnlineOutput.interruptions``: in a row, with no update in between;
    ``steady``: the run it cut short went on long enough to start counting again), and how many that makes.
    The ``MAX_INTERRUPTIONS``-th fails the session with the error (UNAVAILABLE, its reason when it has one, else
    ARTIFACT_STORE_UNAVAILABLE)."""
    count = (0 if steady else ctx.job.output.interruptions) + 1
    ctx.set_output(replace(ctx.job.output, interruptions=count))
    if count >= MAX_INTERRUPTIONS:
        what = describe(exc)
        log.error("online session failed: a store error at every try", extra={"job_id": ctx.job.id, "error": what})
        message = (f"a store could not be reached {count} times in a row with no update between them, the last "
                   f"time: {what}; the session ends here rather than going back to the queue again")
        if isinstance(exc, Unavailable):
            raise Unavailable(exc.reason, message, metadata=exc.metadata) from exc
        # an OSError: the stores that can raise one (PostgreSQL's errors come as Unavailable) keep artifacts
        raise Unavailable("ARTIFACT_STORE_UNAVAILABLE", message) from exc
    return count


def _stop_reason(ctx: Ctx) -> StopReason | None:
    """Why the job is asked to stop, read again (another task sets it while this one waits)."""
    return ctx.cancel.reason


def _interruption_wait(count: int) -> float:
    """Seconds to wait before handing the session back after its ``count``-th interruption in a row."""
    if count <= 1:
        return 0.0
    return min(INTERRUPTION_WAIT_CAP_SECONDS, INTERRUPTION_WAIT_SECONDS * 2.0 ** (count - 2))


async def _wait_unless_stopped(ctx: Ctx, count: int) -> None:
    """The wait before handing the session back (``_interruption_wait``), while this worker still holds it; a
    stop (a client's, a pause, this worker's shutdown, a lost lease) ends it at once. A store that stays down then
    costs a model load at most every INTERRUPTION_WAIT_CAP_SECONDS, not as fast as workers can claim the job."""
    deadline = time.monotonic() + _interruption_wait(count)
    while not ctx.cancel.cancelled and (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, STOP_POLL_SECONDS))
