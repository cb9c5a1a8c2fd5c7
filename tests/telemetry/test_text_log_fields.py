"""log_format text keeps a record's ``extra`` fields, as the JSON lines do: the address a server listens on (port 0
picked by the system) and the job a line is about were dropped from the text lines."""

from __future__ import annotations

import logging
import sys

from server.logs import TextFormatter


def test_text_lines_carry_the_extra_fields_before_a_traceback() -> None:
    formatter = TextFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord("server.main", logging.INFO, __file__, 1, "serving", (), None)
    record.address, record.port = "127.0.0.1:50051", 9464
    assert formatter.format(record) == "INFO server.main: serving address='127.0.0.1:50051' port=9464"
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    failed.job_id = "j1"
    first, *rest = formatter.format(failed).splitlines()
    assert first == "ERROR x: failed job_id='j1'" and rest[0].startswith("Traceback"), rest
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "no fields", (), None)
    assert formatter.format(plain) == "INFO x: no fields"
