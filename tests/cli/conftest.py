from tests.server.conftest import (  # noqa: F401 - re-exported fixtures
    client,
    make_memory_server,
    make_pg_server,
    make_server,
)
