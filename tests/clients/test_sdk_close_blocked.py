"""Closing a blocking Client while other threads are blocked in its calls (a watch that never ends, a job's
``wait()``) ends those calls: each thread gets errors.Cancelled, and a call after the close raises it too."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from learning_engine import Client, errors
from tests.server.conftest import spec


async def test_close_releases_threads_blocked_in_a_watch_and_a_wait(make_server):
    server = await make_server(embedded_worker=False)  # a training job stays QUEUED: wait() blocks
    target = f"127.0.0.1:{server.app.port}"

    def scenario() -> dict[str, str]:
        client = Client(target)
        job = client.start_training_job(spec(epochs=1))
        outcome: dict[str, str] = {}

        def run(label: str, call: Callable[[], object]) -> None:
            try:
                call()
                outcome[label] = "returned"
            except BaseException as exc:  # noqa: BLE001 - the outcome is the test's
                outcome[label] = f"{type(exc).__module__}.{type(exc).__name__}"

        calls = {"watch": lambda: list(client.watch_lora_status()), "wait": job.wait}
        workers = {label: threading.Thread(target=run, args=(label, c), daemon=True) for label, c in calls.items()}
        for worker in workers.values():
            worker.start()
        time.sleep(2)  # both are blocked: the status watch never ends, the job never starts
        client.close()  # e.g. the application shutting down
        for label, worker in workers.items():
            worker.join(15)
            if worker.is_alive():
                outcome[label] = "BLOCKED FOREVER"
        for label, call in (("after", client.health), ("handle after", job.describe)):
            run(label, call)
        client.close()  # closing again does nothing
        return outcome

    outcome = await asyncio.wait_for(asyncio.to_thread(scenario), 60)
    assert outcome == dict.fromkeys(["watch", "wait", "after", "handle after"], "learning_engine.errors.Cancelled")


def test_a_call_after_close_says_the_client_is_closed() -> None:
    client = Client("127.0.0.1:1")
    client.close()
    with pytest.raises(errors.Cancelled, match="the client is closed"):
        client.health()
    assert not client._loop._thread.is_alive()
