"""The server's version: its Python package's (pyproject.toml), reported in the start log line and in
``LoraStatus.server_version`` (GetLoraStatus, WatchLoraStatus)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    SERVER_VERSION = version("learning-engine")
except PackageNotFoundError:  # run from a source tree that was never installed
    SERVER_VERSION = "unknown"
