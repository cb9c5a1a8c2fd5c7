"""``learning-engine-server [serve|worker] --host H --port P --data-dir D [--config FILE]`` (``python -m server``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from server.logs import configure_logging
from server.settings import SettingsError, load_settings, unknown_variables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="learning-engine-server", description="Learning Engine gRPC server")
    parser.add_argument("command", nargs="?", choices=("serve", "worker"), default="serve",
                        help="serve: the gRPC API (with an embedded worker unless embedded_worker is false); "
                        "worker: run jobs only, sharing the database and artifact store (default: serve)")
    parser.add_argument("--host", help="bind address (env LEARNING_ENGINE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="gRPC port (env LEARNING_ENGINE_PORT, default 50051)")
    parser.add_argument("--data-dir", type=Path, help="state directory (env LEARNING_ENGINE_DATA_DIR, default ./var)")
    parser.add_argument("--config", type=Path, help="YAML settings file (env LEARNING_ENGINE_CONFIG)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(
            {"host": args.host, "port": args.port, "data_dir": args.data_dir}, config_file=args.config
        )
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    for line in unknown_variables(os.environ):
        logging.getLogger("server.settings").warning(line)
    from server.main import serve, work  # noqa: PLC0415 - after logging is configured

    return asyncio.run(work(settings) if args.command == "worker" else serve(settings))


if __name__ == "__main__":
    sys.exit(main())
