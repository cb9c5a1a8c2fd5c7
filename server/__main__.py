"""``learning-engine-server --host H --port P --data-dir D [--config FILE]`` (or ``python -m server``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from server.logs import configure_logging
from server.settings import SettingsError, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="learning-engine-server", description="Learning Engine gRPC server")
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
    from server.main import serve  # noqa: PLC0415 - after logging is configured

    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
