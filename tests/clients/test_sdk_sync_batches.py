"""The blocking Client's streaming uploads (stream_feedback, stream_examples) take a plain iterable of batches; it is
advanced in a worker thread, not on the client's event-loop thread: a generator that calls the same Client between
batches works, and a slow one does not hold up the client's other calls. A blocking call made on the loop thread
itself raises RuntimeError instead of waiting forever."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from learning.v1 import feedback_pb2
from learning_engine import Client
from learning_engine._loop import EventLoopThread


def event(i: int) -> feedback_pb2.FeedbackEvent:
    message = feedback_pb2.FeedbackEvent(
        client_event_id=f"e-{i}", kind=feedback_pb2.FEEDBACK_KIND_THUMBS_UP, user_id="u",
        interaction=feedback_pb2.Interaction(prompt=f"p{i}", response="r"))
    message.time.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    return message


async def _in_thread(use) -> dict[str, object]:
    outcome: dict[str, object] = {}
    worker = threading.Thread(target=use, args=(outcome,), daemon=True)
    worker.start()
    await asyncio.to_thread(worker.join, 30)
    assert not worker.is_alive(), f"the blocking client hung (30 s): {outcome}"
    return outcome


async def test_a_batch_generator_that_uses_the_client_does_not_deadlock(client):
    def use(outcome: dict[str, object]) -> None:
        with Client(f"127.0.0.1:{client.app.port}", timeout=10) as sdk:
            def batches() -> Iterator[list[feedback_pb2.FeedbackEvent]]:
                yield [event(1)]
                outcome["seen"] = sdk.get_feedback_stats().total  # look before sending more
                yield [event(2)]

            outcome["stored"] = sdk.stream_feedback(batches()).stored

    assert (await _in_thread(use))["stored"] == 2


@pytest.mark.slow
async def test_a_slow_batch_generator_does_not_hold_up_other_calls(client):
    def use(outcome: dict[str, object]) -> None:
        with Client(f"127.0.0.1:{client.app.port}", timeout=10) as sdk:
            sending = threading.Event()

            def batches() -> Iterator[list[feedback_pb2.FeedbackEvent]]:
                yield [event(3)]
                sending.set()
                time.sleep(3)  # waiting for more data
                yield [event(4)]

            uploader = threading.Thread(target=lambda: outcome.update(stored=sdk.stream_feedback(batches()).stored))
            uploader.start()
            sending.wait(10)
            started = time.monotonic()
            outcome["health"] = sdk.health()
            outcome["health took"] = time.monotonic() - started
            uploader.join(20)

    outcome = await _in_thread(use)
    assert outcome["health"] == "SERVING" and outcome["stored"] == 2
    assert outcome["health took"] < 2, outcome


def test_a_blocking_call_from_the_loop_thread_raises_instead_of_hanging() -> None:
    loop = EventLoopThread()

    async def calls_back() -> str:
        return loop.run(asyncio.sleep(0, "never"))  # on the loop's own thread: would wait for itself

    try:
        with pytest.raises(RuntimeError, match="its own event-loop thread"):
            loop.run(calls_back())
        assert loop.run(asyncio.sleep(0, "still usable")) == "still usable"
    finally:
        loop.close()
