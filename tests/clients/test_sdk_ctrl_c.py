"""Ctrl-C in a blocking call (an iterator's next item, a job's ``wait()``) raises KeyboardInterrupt after the call
was cancelled on the client's event loop (its server stream too), and the client stays usable."""

from __future__ import annotations

import asyncio
import sys

import pytest

from learning_engine import AsyncClient
from tests.server.conftest import spec

SCRIPT = """
import asyncio, os, signal, sys, threading
from learning_engine import Client

async def running() -> int:
    for _ in range(50):  # gRPC's own tasks of the cancelled call may take a moment to end
        if len(asyncio.all_tasks()) == 1:  # this one
            break
        await asyncio.sleep(0.1)
    return len(asyncio.all_tasks()) - 1

def interrupted(label, call):
    threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()  # the user presses Ctrl-C
    try:
        call()
    except KeyboardInterrupt:
        print(label, "KeyboardInterrupt", client._loop.run(running()))
    except BaseException as exc:
        print(label, "OTHER", type(exc).__name__, exc)

with Client(sys.argv[1]) as client:
    interrupted("watch", lambda: [status for status in client.watch_lora_status()])
    interrupted("wait", client.get_training_job_handle(sys.argv[2]).wait)
    print("after", client.health())
"""


@pytest.mark.slow
async def test_ctrl_c_in_a_blocking_watch_and_wait_raises_keyboard_interrupt(make_server):
    server = await make_server(embedded_worker=False)  # a training job stays QUEUED: wait() blocks
    target = f"127.0.0.1:{server.app.port}"
    async with AsyncClient(target) as client:
        job = await client.start_training_job(spec(epochs=1))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRIPT, target, job.name,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    # "0": nothing of the interrupted call is left running on the client's loop
    assert out.decode().splitlines() == ["watch KeyboardInterrupt 0", "wait KeyboardInterrupt 0", "after SERVING"], (
        err.decode()[-600:])
