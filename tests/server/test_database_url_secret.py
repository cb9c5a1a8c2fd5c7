"""A database_url refused by the settings must not carry its password into the error (printed at start, logged).

masked_url hides only a password in the URL's user information. A libpq keyword/value connection string
(``host=... password=...``: what psycopg and libpq take, an easy thing to put in DATABASE_URL) has no "://",
"@" or ":" and is shown whole; a password given as a URL query parameter (``?password=``, which libpq and
asyncpg read) is shown whole too.
"""

from __future__ import annotations

import pytest

from server.settings import SettingsError, load_settings

SECRET = "hunter2-s3cr3t"


@pytest.fixture
def no_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEARNING_ENGINE_CONFIG", raising=False)
    monkeypatch.delenv("LEARNING_ENGINE_SECRETS_DIR", raising=False)


@pytest.mark.parametrize("url", [
    f"host=db.internal port=5432 user=learning password={SECRET} dbname=learning",  # libpq keyword/value form
    f"postgresql://learning@db.internal:54x2/learning?password={SECRET}",  # a typo in the port, password as a param
])
def test_a_refused_database_url_never_shows_its_password(url: str, monkeypatch: pytest.MonkeyPatch,
                                                          no_files) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "database_url" in message.lower(), message
    assert SECRET not in message, f"the password leaks into the settings error: {message!r}"
