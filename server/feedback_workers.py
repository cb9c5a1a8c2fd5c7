"""StreamFeedback messages prepared in worker processes (settings ``feedback_ingest_processes``).

One server process converts, validates, scrubs and lays out about 100k events/s of one core at
best, and its threads share one interpreter lock. With worker processes, the server process only
re-serialises each received message (C, about 0.1 us an event) and hands the bytes to a worker,
which parses, converts (``server.convert_feedback``) and prepares the batch
(``engine.feedback.ingest.prepare_batch``) and sends back the COPY data. Several messages of a
stream are prepared at once, ahead of the one being stored; the ingestor still stores them in
order, one transaction each, so a stream's guarantees are those of ``FeedbackIngestor.stream``.

Workers are spawned (not forked: the server runs gRPC threads) at start, import no torch, and
receive the time each message was received from the server process, so a batch is validated and
stamped exactly as it would be in process. If a worker dies, the streams it served fail with
UNAVAILABLE (their ``committed_messages`` say what is stored) and the next message gets a new pool.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime

from engine.errors import Unavailable
from engine.feedback.ingest import FeedbackBases, FeedbackLimits, Prepared, prepare_batch
from engine.feedback.scrub import Scrubber
from engine.stores.feedback_store import encode_rows
from learning.v1 import feedback_pb2 as pb
from server.convert_feedback import events_from_pb

log = logging.getLogger(__name__)
_scrubber: Scrubber | None = None
_limits: FeedbackLimits | None = None
_bases: FeedbackBases | None = None


def _start_worker(scrub_patterns: Mapping[str, str], scrub_enabled: bool, limits: FeedbackLimits,
                  bases: FeedbackBases) -> None:
    global _scrubber, _limits, _bases
    _scrubber = Scrubber(scrub_patterns, enabled=scrub_enabled)
    _limits = limits
    _bases = bases


def _prepare(data: bytes, now: datetime) -> Prepared:
    assert _scrubber is not None and _limits is not None and _bases is not None, "worker not started"
    events = events_from_pb(pb.StreamFeedbackRequest.FromString(data).events)
    return prepare_batch(events, _scrubber, _limits, now, encode_rows, _bases)


def _ready() -> bool:
    return True


class FeedbackWorkers:
    """A pool of worker processes preparing StreamFeedback messages; ``close()`` stops them."""

    def __init__(
        self, processes: int, *, scrub_patterns: Mapping[str, str], scrub_enabled: bool, limits: FeedbackLimits,
        bases: FeedbackBases,
    ) -> None:
        self.processes = processes
        self._initargs = (dict(scrub_patterns), scrub_enabled, limits, bases)
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        executor = ProcessPoolExecutor(
            self.processes, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
            initargs=self._initargs,
        )
        for ready in [executor.submit(_ready) for _ in range(self.processes)]:  # spawn them now, not mid-stream
            ready.result()
        return executor

    def _submit(self, data: bytes, now: datetime) -> Future[Prepared]:
        try:
            return self._executor.submit(_prepare, data, now)
        except BrokenProcessPool:  # a worker died since: start a new pool (this once, in the event loop)
            log.warning("feedback worker pool broken; starting a new one")
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start()
            return self._executor.submit(_prepare, data, now)

    def prepare_stream(
        self, messages: AsyncIterator[pb.StreamFeedbackRequest], clock: Callable[[], datetime]
    ) -> AsyncIterator[Awaitable[Prepared]]:
        """The messages' prepared batches, in order; up to ``2 * processes`` are prepared ahead of the consumer."""
        return self._ahead(messages, clock, 2 * self.processes)

    async def _ahead(
        self, messages: AsyncIterator[pb.StreamFeedbackRequest], clock: Callable[[], datetime], window: int
    ) -> AsyncIterator[Awaitable[Prepared]]:
        queue: asyncio.Queue[asyncio.Future[Prepared] | BaseException | None] = asyncio.Queue(window)

        async def submit_each() -> None:
            try:
                async for message in messages:
                    work = self._submit(message.SerializeToString(), clock())
                    await queue.put(asyncio.wrap_future(work))
                await queue.put(None)
            except Exception as exc:  # the client's stream failed: the consumer raises it in order
                await queue.put(exc)

        producer = asyncio.ensure_future(submit_each())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield _unless_broken(item)
        finally:
            producer.cancel()
            while not queue.empty():  # prepared ahead but never to be stored: let them finish, unheeded
                item = queue.get_nowait()
                if isinstance(item, asyncio.Future):  # not cancelled: a broken pool would then fail to fail it
                    item.add_done_callback(_ignore)

    def pids(self) -> list[int]:
        """The worker processes' ids (for tests and operators)."""
        return [p.pid for p in (self._executor._processes or {}).values() if p.pid is not None]  # no public accessor

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _ignore(work: asyncio.Future[Prepared]) -> None:
    if not work.cancelled():
        work.exception()  # retrieved, so that asyncio does not report it as lost


async def _unless_broken(work: asyncio.Future[Prepared]) -> Prepared:
    try:
        return await work
    except BrokenProcessPool as exc:
        raise Unavailable(
            "FEEDBACK_WORKER_FAILED", "a feedback worker process died; resend the messages not committed"
        ) from exc
