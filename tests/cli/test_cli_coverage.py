"""The CLI covers the contract: every RPC of every service is called by some ``learning-engine`` command (through
the SDK method of its name), or is listed here with the command that serves its purpose instead.

As the SDK's coverage test, this reads the services from the generated descriptors, so a new RPC fails here until
the CLI calls it or says why it does not.
"""

from __future__ import annotations

import re
from pathlib import Path

import learning_engine.cli
from tests.clients.test_sdk_coverage import services, snake

CLI_SOURCES = sorted(Path(learning_engine.cli.__file__).parent.glob("*.py"))
# RPCs no command calls, and what a user runs instead.
SERVED_OTHERWISE = {
    "ListLoadedAdapters": "status lists the adapters the serving engine has loaded (GetLoraStatus carries them)",
    "AddExamples": "online send streams the examples of a file (StreamExamples), in batches",
    "DeleteUserFeedback": "feedback forget-user calls it as forget_user, which returns both counts",
}


def test_every_rpc_is_called_by_a_command_or_says_what_serves_it():
    source = "".join(path.read_text() for path in CLI_SOURCES)
    rpcs = {method.name for service in services() for method in service.methods}
    uncalled = {rpc for rpc in rpcs if not re.search(rf"\.{snake(rpc)}\(", source)}
    assert uncalled == set(SERVED_OTHERWISE), uncalled ^ set(SERVED_OTHERWISE)
