"""``metrics --token`` sends the bearer token (the gRPC API's, an admin's perhaps) to the ``--url`` it was given
only: urllib copies a request's headers onto every redirect, to any host, so a metrics endpoint that redirects (an
SSO front, a moved page) handed the token to whatever host it named. Local HTTP servers stand in for both."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.cli.test_local_input_errors import CLI, dead_target

TOKEN = "metrics-reader-token-0123456789"
BODY = b"# TYPE learning_engine_up gauge\nlearning_engine_up 1\n"


@contextmanager
def serving(answer) -> Iterator[tuple[int, list[str | None]]]:
    """An HTTP server on a free port answering GET with ``answer(handler)``; its port and the Authorization header
    of each request it got."""
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Authorization"))
            answer(self)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def metrics_page(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain; version=0.0.4")
    handler.send_header("Content-Length", str(len(BODY)))
    handler.end_headers()
    handler.wfile.write(BODY)


def test_the_token_goes_to_the_url_given_and_not_where_it_redirects() -> None:
    with serving(metrics_page) as (other_port, other_seen):
        elsewhere = f"http://localhost:{other_port}/metrics"  # another host (and port)

        def redirect(handler: http.server.BaseHTTPRequestHandler) -> None:
            handler.send_response(302)
            handler.send_header("Location", elsewhere)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        with serving(redirect) as (port, seen):
            env = {**os.environ, "LEARNING_ENGINE_TARGET": dead_target(), "LEARNING_ENGINE_TOKEN": TOKEN}
            shown = subprocess.run([str(CLI), "--json", "metrics", "--url", f"http://127.0.0.1:{port}/metrics"],
                                   env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "learning_engine_up" in shown.stdout, (shown.returncode, shown.stderr)
    assert seen == [f"Bearer {TOKEN}"]  # the URL it was given for
    assert other_seen == [None], f"{elsewhere} received Authorization: {other_seen}"
