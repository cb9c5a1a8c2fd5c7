"""What every command shares: connection options, running a call, output, exit codes."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc
import typer
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Column, Table

from learning.v1.error_reason_pb2 import ERROR_REASON_USAGE, ErrorReason
from learning_engine.client import AsyncClient
from learning_engine.connection import TlsConfig
from learning_engine.errors import LearningEngineError, reason_name

T = TypeVar("T")

# The largest values of the protobuf integer fields options fill (an option bounded by them is a usage error past
# them, not a ValueError from the message).
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@dataclass
class Options:
    target: str
    token: str | None
    json: bool
    timeout: float
    tls: TlsConfig | None
    actor: str | None = None
    client_pair: tuple[Path, Path] | None = None  # --tls-cert and --tls-key as given: HTTPS (metrics) loads files

    def client(self) -> AsyncClient:
        return AsyncClient(self.target, token=self.token, actor=self.actor, tls=self.tls, timeout=self.timeout)


def options(ctx: typer.Context) -> Options:
    return ctx.ensure_object(Options)


def run(ctx: typer.Context, call: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """Run ``call`` with a connected client; map a failed call to its gRPC status exit code."""
    opts = options(ctx)

    async def main() -> T:
        async with opts.client() as client:
            return await call(client)

    try:
        return asyncio.run(main())
    except LearningEngineError as exc:
        fail(
            opts,
            exc.code,
            exc.message,
            reason=exc.reason,
            metadata=exc.metadata,
            violations=[(v.field, v.description) for v in exc.violations],
        )


def fail(
    opts: Options,
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str | ErrorReason = "",
    metadata: dict[str, str] | None = None,
    violations: list[tuple[str, str]] | None = None,
) -> NoReturn:
    """Report an error (JSON on stdout with --json, text on stderr otherwise) and exit with ``code``."""
    reason = reason if isinstance(reason, str) else reason_name(reason)
    if opts.json:
        print(
            json.dumps(
                {
                    "error": {
                        "code": code.name,
                        "reason": reason,
                        "message": message,
                        "metadata": metadata or {},
                        "violations": [{"field": f, "description": d} for f, d in violations or []],
                    }
                }
            )
        )
    else:
        label = f"{code.name}" + (f" ({reason})" if reason and reason != code.name else "")
        # the server's text as it is: "[...]" in a field (a tensor's name) is no Rich style tag to drop
        err.print(f"[bold red]error[/]: {escape(label)}: {escape(message)}", highlight=False)
        for field, description in violations or []:
            err.print(f"  - {escape(field)}: {escape(description)}", highlight=False)
    raise typer.Exit(code.value[0])


def as_dict(message: Message, *, defaults: bool = True) -> dict[str, Any]:
    """``message`` as proto3 JSON with the field names of the .proto; a field at its default value (false, 0, "",
    an enum's first value) is there too unless ``defaults`` is False, so that a script reads ``drifted`` as false,
    not as missing. A message field that is not set stays out, as do the optional fields that are not."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=defaults)


def emit(opts: Options, message: Message | dict[str, Any], render: Callable[[], None] | None = None) -> None:
    """JSON for scripts with --json, else the human rendering (or a key/value table of the fields that are set)."""
    if opts.json:
        print(json.dumps(as_dict(message) if isinstance(message, Message) else message), flush=True)
    elif render is not None:
        render()
    else:
        out.print(key_values(as_dict(message, defaults=False) if isinstance(message, Message) else message))


def print_table(table: Table) -> None:
    """Print ``table`` whole: nothing in it is cut short with an ellipsis (resource names are pasted into the next
    command). A table wider than the terminal is printed at its own width, for the terminal to wrap, rather than
    squeezed: rich's squeezing can cut a cell even when the narrowest layout would have fitted."""
    needed = Measurement.get(out, out.options.update_width(1 << 16), table).maximum
    width = out.width
    out.width = max(width, needed)  # print(width=...) cannot go beyond the terminal's width; this can
    try:
        out.print(table)
    finally:
        out.width = width


def when(ts: timestamp_pb2.Timestamp) -> str:
    """A timestamp as ISO 8601 to the second (UTC), "-" when unset."""
    return ts.ToDatetime().isoformat(timespec="seconds") if ts.seconds or ts.nanos else "-"


def grid(headers: list[str | Column], rows: Iterable[Iterable[object]]) -> Table:
    """A table of ``rows`` under ``headers``, each cell as text."""
    table = Table(*headers)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    return table


def key_values(data: dict[str, Any], title: str | None = None) -> Table:
    table = Table(show_header=False, title=title, box=None, pad_edge=False)
    table.add_column(style="bold cyan")
    table.add_column()
    for key, value in data.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
    return table


def labels(pairs: list[str] | None) -> dict[str, str]:
    result = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--label")
        result[key] = value
    return result


def local_bytes(opts: Options, path: Path, what: str = "") -> bytes:
    """The bytes of a file on this machine. One that cannot be read (missing, a directory, not allowed) is a usage
    error naming ``what`` (the option it was given to, if any) and the path: one line, exit 3, never a traceback."""
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"{_local(what, path)}: cannot read it ({exc.strerror or exc})",
             reason=ERROR_REASON_USAGE, metadata={"path": str(path)})


def local_path(opts: Options, path: Path, what: str = "", *, directory_ok: bool = False) -> Path:
    """``path`` once it is a file on this machine that can be read (or, with ``directory_ok``, a directory that can
    be listed); else a usage error as in :func:`local_bytes` (one line, exit 3, the JSON error object with --json).
    For a path argument the command hands on (to the client, which reads it later) rather than reads here."""
    try:
        if directory_ok and path.is_dir():
            os.listdir(path)
        else:
            with path.open("rb"):
                pass
    except OSError as exc:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"{_local(what, path)}: cannot read it ({exc.strerror or exc})",
             reason=ERROR_REASON_USAGE, metadata={"path": str(path)})
    return path


def local_text(opts: Options, path: Path, what: str = "") -> str:
    """A file on this machine as UTF-8 text (JSONL); one that cannot be read, or is not UTF-8 text, is a usage
    error as in :func:`local_bytes`."""
    data = local_bytes(opts, path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT,
             f"{_local(what, path)}: not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r})",
             reason=ERROR_REASON_USAGE, metadata={"path": str(path)})


def local_write(opts: Options, path: Path, data: bytes, what: str = "") -> None:
    """Write ``data`` to the file ``path`` on this machine, making its missing parent directories. A path that
    cannot be written (a directory, under a file, not allowed) is a usage error as in :func:`local_bytes`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        # mkdir says a file where a directory goes exists, or that a path under it is no directory: name the file
        blocker = next((parent for parent in path.parents if parent.exists()), None)
        if blocker is not None and not blocker.is_dir():
            unwritable(opts, path, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(blocker)), what)
        unwritable(opts, path, exc, what)


def unwritable(opts: Options, path: Path, exc: OSError, what: str = "") -> NoReturn:
    """The usage error for a file on this machine that cannot be written (``exc`` says why): one line, exit 3."""
    where = f"{exc.filename}: " if exc.filename is not None and str(exc.filename) != str(path) else ""
    why = f"{where}{exc.strerror or exc}"
    fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"{_local(what, path)}: cannot write it ({why})",
         reason=ERROR_REASON_USAGE, metadata={"path": str(path)})


def _local(what: str, path: Path) -> str:
    return f"{what} {path}" if what else str(path)


def tls_from(
    opts: Options, ca: Path | None, cert: Path | None, key: Path | None, server_name: str | None
) -> TlsConfig | None:
    """The TLS material the --tls-* options name, read here (a file that cannot be read is a usage error naming
    its option); None without any of them."""
    if not (ca or cert or key or server_name):
        return None
    if (cert is None) != (key is None):
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT,
             f"--tls-cert and --tls-key go together: {'--tls-key' if key is None else '--tls-cert'} is missing",
             reason=ERROR_REASON_USAGE)
    opts.client_pair = (cert, key) if cert is not None and key is not None else None
    return TlsConfig(
        root_certificates=local_bytes(opts, ca, "--tls-ca") if ca else None,
        client_certificate=local_bytes(opts, cert, "--tls-cert") if cert else None,
        client_key=local_bytes(opts, key, "--tls-key") if key else None,
        server_name_override=server_name,
    )


def interrupted(message: str) -> NoReturn:
    err.print(message)
    sys.exit(130)


def window_days(max_days: int) -> Callable[[float | None], float | None]:
    """The check of a ``--days`` window: more than 0 and at most ``max_days`` (not NaN), else typer's usage error
    (exit 2), as any option value out of its range; None (unset) passes."""

    def check(value: float | None) -> float | None:
        if value is not None and not 0 < value <= max_days:  # NaN fails every comparison
            raise typer.BadParameter(f"must be more than 0 and at most {max_days} (days), got {value:g}")
        return value

    return check
