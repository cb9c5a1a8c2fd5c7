"""A value the server cannot use is refused by the settings (exit 2, naming the setting), not after the whole
engine (embedded PostgreSQL, migrations, the serving backend, the worker) has started: max_message_bytes goes to
gRPC's channel options, which take a C int (at most 2**31 - 1) and raise OverflowError beyond."""

from __future__ import annotations

import grpc
import pytest

from server.settings import SettingsError, load_settings

GRPC_INT_MAX = 2**31 - 1


@pytest.fixture
def no_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEARNING_ENGINE_CONFIG", raising=False)
    monkeypatch.delenv("LEARNING_ENGINE_SECRETS_DIR", raising=False)


@pytest.mark.parametrize("value", [GRPC_INT_MAX + 1, 4 << 30])
async def test_max_message_bytes_beyond_what_grpc_takes_is_refused_by_the_settings(value: int, monkeypatch, no_files
                                                                                    ) -> None:
    monkeypatch.setenv("LEARNING_ENGINE_MAX_MESSAGE_BYTES", str(value))
    with pytest.raises(OverflowError):  # what server.main._start would meet, after building the engine
        grpc.aio.server(options=[("grpc.max_receive_message_length", value)])
    with pytest.raises(SettingsError, match="max_message_bytes"):
        load_settings()


async def test_the_largest_max_message_bytes_is_one_grpc_takes(monkeypatch, no_files) -> None:
    monkeypatch.setenv("LEARNING_ENGINE_MAX_MESSAGE_BYTES", str(GRPC_INT_MAX))
    settings = load_settings()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", settings.max_message_bytes),
                                      ("grpc.max_send_message_length", settings.max_message_bytes)])
    await server.stop(0)
