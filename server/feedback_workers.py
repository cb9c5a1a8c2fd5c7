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
stamped exactly as it would be in process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime

from engine.feedback.ingest import FeedbackLimits, Prepared, prepare_batch
from engine.feedback.scrub import Scrubber
from engine.stores.feedback_store import encode_rows
from learning.v1 import feedback_pb2 as pb
from server.convert_feedback import events_from_pb

_scrubber: Scrubber | None = None
_limits: FeedbackLimits | None = None


def _start_worker(scrub_patterns: Mapping[str, str], scrub_enabled: bool, limits: FeedbackLimits) -> None:
    global _scrubber, _limits
    _scrubber = Scrubber(scrub_patterns, enabled=scrub_enabled)
    _limits = limits


def _prepare(data: bytes, now: datetime) -> Prepared:
    assert _scrubber is not None and _limits is not None, "worker not started"
    events = events_from_pb(pb.StreamFeedbackRequest.FromString(data).events)
    return prepare_batch(events, _scrubber, _limits, now, encode_rows)


def _ready() -> bool:
    return True


class FeedbackWorkers:
    """A pool of worker processes preparing StreamFeedback messages; ``close()`` stops them."""

    def __init__(
        self, processes: int, *, scrub_patterns: Mapping[str, str], scrub_enabled: bool, limits: FeedbackLimits
    ) -> None:
        self.processes = processes
        self._executor = ProcessPoolExecutor(
            processes, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
            initargs=(dict(scrub_patterns), scrub_enabled, limits),
        )
        for ready in [self._executor.submit(_ready) for _ in range(processes)]:  # spawn them now, not mid-stream
            ready.result()

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
                    work: Future[Prepared] = self._executor.submit(_prepare, message.SerializeToString(), clock())
                    await queue.put(asyncio.wrap_future(work))
                await queue.put(None)
            except Exception as exc:  # the client's stream failed: the consumer raises it in order
                await queue.put(exc)

        producer = asyncio.ensure_future(submit_each())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            producer.cancel()
            while not queue.empty():  # prepared ahead but never stored: drop them (and their errors)
                item = queue.get_nowait()
                if isinstance(item, asyncio.Future):
                    item.cancel()
                    if item.done() and not item.cancelled():
                        item.exception()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
