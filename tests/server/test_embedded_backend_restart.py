"""LoraControl keeps its state (the active and known-good versions, a split, its operations) under the serving
engine's name, which was its URL: the embedded reference backend gets a free port at every start, so a server
restarted on the same data dir (`make run` again) came back serving the base model, its active version forgotten,
while the rows of the old URL went on protecting their versions. The embedded backend is named after the machine and
the data dir now (server.lora_wiring.embedded_backend_name)."""

from __future__ import annotations

import pytest

from tests.server.lora_helpers import activate, status, train


@pytest.mark.slow
async def test_a_restarted_server_keeps_its_embedded_backends_active_version(make_pg_server) -> None:
    client = await make_pg_server(serving_url=None)  # the embedded reference backend, as `make run` starts it
    version = await train(client, epochs=1)
    await activate(client, version, mark_known_good=True)
    before = await status(client)
    await client.channel.close()
    await client.app.stop(0)

    again = await make_pg_server(serving_url=None)  # another free port for its backend
    after = await status(again)
    assert (after.target, after.active_version, after.known_good_version) == (
        before.target, version, version), (before, after)
    assert after.target.startswith("reference-backend://"), after.target
