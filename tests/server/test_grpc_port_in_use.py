"""A second server on a gRPC port another server listens on is refused at start. gRPC turns SO_REUSEPORT on by
default, so both bound the port and the kernel split the connections between them: calls without a token reached
the server without auth_tokens beside the one with them, and the data of two data dirs answered by turns."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.startup import StartError


async def test_a_second_server_on_a_grpc_port_in_use_is_refused(make_memory_server, tmp_path: Path) -> None:
    first = await make_memory_server()
    with pytest.raises(StartError, match=f"gRPC port {first.app.port} on 127.0.0.1 is in use"):
        await make_memory_server(port=first.app.port, data_dir=tmp_path / "other")
