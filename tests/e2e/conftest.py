from tests.server.conftest import make_pg_server, make_server  # noqa: F401 - re-exported fixtures
