"""The one settings object: environment variables, an optional YAML file, then CLI flags.

Precedence (highest first): command-line flags, ``LEARNING_ENGINE_*`` environment
variables (and ``DATABASE_URL``), secret files in the folder named by
``LEARNING_ENGINE_SECRETS_DIR`` (one file per setting, named like its environment variable, e.g.
``/run/secrets/learning_engine_s3_secret_key`` or ``database_url``: Docker/compose secrets), the
YAML file named by ``--config`` or ``LEARNING_ENGINE_CONFIG``, defaults. Read once at start and validated with
precise messages; everything else receives it (or parts of it) as arguments.
"""

from __future__ import annotations

import difflib
import os
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml  # type: ignore[import-untyped]  # (no types-PyYAML in the environment)
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as SourceError

from engine.names import is_loopback
from server.settings_drift import DriftSettings
from server.settings_lora import LoraControlSettings
from server.settings_online import OnlineSettings
from server.settings_server import ServerSettings
from server.settings_training import TrainingSettings

ImplicitKind = Literal["COPY", "TASK_COMPLETED", "CLICK_THROUGH", "REGENERATE"]
KtoLabel = Literal["desirable", "undesirable", "ignore"]
DEFAULT_KTO_IMPLICIT: dict[ImplicitKind, KtoLabel] = {
    "COPY": "desirable", "TASK_COMPLETED": "desirable", "CLICK_THROUGH": "desirable", "REGENERATE": "undesirable",
}


class SettingsError(Exception):
    """Settings are invalid; the message lists every problem."""


class AuthToken(BaseModel):
    """One bearer token: who holds it, its role, and the sha256 hex digest of the secret (never the secret)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    role: Literal["reader", "feedback", "trainer", "operator", "inference"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex sha256 of the token")


class Settings(BaseSettings, ServerSettings, TrainingSettings, LoraControlSettings, DriftSettings, OnlineSettings):
    # hide_input_in_errors: a value refused (a database_url with its password, a secret) never reaches an error text
    model_config = SettingsConfigDict(env_prefix="LEARNING_ENGINE_", extra="forbid", frozen=True,
                                      hide_input_in_errors=True)
    _config_data: ClassVar[dict[str, Any] | None] = None  # the YAML file's settings (load_settings)

    # ---- feedback (engine/feedback) ----------------------------------------------
    feedback_scrub_enabled: bool = Field(
        True, description="Scrub PII (emails, phones, cards, IPs, feedback_scrub_patterns) from feedback text before "
        "it is stored. On by default; turn off only where the text is known to hold no personal data.",
    )
    feedback_scrub_patterns: dict[str, str] = Field(
        default_factory=dict,
        description="Extra scrubbing rules as {name: regex} (name lower_snake_case); matches become [NAME]. "
        "They run before the built-in rules.",
    )
    feedback_max_text_chars: int = Field(
        32_768, ge=1, le=1_000_000, description="Longest prompt, message, response or correction accepted."
    )
    feedback_max_events_per_batch: int = Field(
        10_000, ge=1, le=1_000_000, description="Most events in one SubmitFeedback call or StreamFeedback message."
    )
    feedback_ingest_processes: int = Field(
        0, ge=0, le=64,
        description="Worker processes that parse, validate, scrub and lay out StreamFeedback messages, several "
        "messages of a stream at once (stored in order all the same); 0 does that work in the server process. "
        "Worth it only with CPU cores to spare beside the server and PostgreSQL (see docs/benchmarks.md).",
    )
    feedback_rating_positive_min: int = Field(4, ge=1, le=5, description="Ratings at or above count as positive.")
    feedback_rating_negative_max: int = Field(2, ge=1, le=5, description="Ratings at or below count as negative.")
    feedback_correction_weight: float = Field(
        1.0, gt=0, le=100, description="Example weight of a correction in datasets built from feedback."
    )
    feedback_kto_implicit: dict[ImplicitKind, KtoLabel] = Field(
        default_factory=lambda: dict(DEFAULT_KTO_IMPLICIT),
        description="KTO labels from implicit signals, for interactions without explicit feedback (explicit "
        "feedback always wins). Entries override these defaults one kind at a time; `ignore` leaves a kind out. "
        "Weighted like thumbs. SFT ignores implicit signals.",
    )
    feedback_kto_dwell_desirable_seconds: float | None = Field(
        None, gt=0, le=86_400,
        description="Under KTO, a dwell time of at least this many seconds marks the response desirable; unset "
        "ignores dwell time (a short dwell can mean a quick answer as well as a bad one).",
    )

    # ---- access, TLS, limits (server/access.py) --------------------------------
    auth_tokens: tuple[AuthToken, ...] = Field(
        (),
        description="Bearer tokens as [{name, role, sha256}] (role: reader|feedback|trainer|operator|inference; "
        "sha256: hex digest of the token, from `learning-engine hash-token`). They guard every door: gRPC, the "
        "gateway (role inference, or operator) and /metrics (role reader, or above). Empty turns auth off and "
        "restricts `host` to loopback.",
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM server certificate (chain); with tls_key_file enables TLS."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(
        None, description="PEM CA bundle; when set, clients must present a certificate it signed (mTLS)."
    )
    rate_limit_jobs_per_minute: float = Field(
        30.0, ge=0, description="Training/Fisher jobs each principal may create per minute (without auth_tokens: all "
        "callers together); 0 disables the limit."
    )
    rate_limit_jobs_burst: int = Field(10, ge=1, description="Job creations allowed at once before the rate applies.")
    rate_limit_feedback_per_second: float = Field(
        100_000.0, ge=0,
        description="Feedback events and online examples each principal may send per second, one budget for "
        "SubmitFeedback, StreamFeedback, AddExamples and StreamExamples (a stream message is charged its events or "
        "examples as it arrives); about what one server ingests. Without "
        "auth_tokens all callers share one budget. 0 disables the limit.",
    )
    rate_limit_feedback_burst: int = Field(
        200_000, ge=1, description="Feedback events allowed at once before the rate applies (a batch larger than "
        "this waits for the whole burst)."
    )

    # ---- health (server/health_checks.py) ----------------------------------------
    health_check_interval_seconds: float = Field(
        5.0, gt=0, le=3600,
        description="How often PostgreSQL, the artifact store and the serving engine are probed; a service whose "
        "dependency fails its probe is NOT_SERVING in grpc.health.v1 until it answers again.",
    )
    health_check_timeout_seconds: float = Field(
        3.0, gt=0, le=600, description="How long one probe may take before its dependency counts as unreachable."
    )

    # ---- telemetry (server/telemetry.py) ---------------------------------------
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus /metrics port on `host`; unset disables it, 0 picks a free one."
    )
    otlp_endpoint: str | None = Field(
        None, description="OTLP/gRPC collector for traces, e.g. http://otel-collector:4317 (http:// plaintext, "
        "https:// TLS; another scheme or none is refused); unset exports none."
    )

    # ---- adapter registry (engine/registry) ------------------------------------
    artifact_backend: Literal["local", "s3"] = Field(
        "local", description="Where adapter artifacts live: `local` (<data-dir>/artifacts) or `s3`."
    )
    s3_endpoint: str = Field("", description="S3 endpoint as host:port, e.g. minio:9000 (backend s3).")
    s3_bucket: str = Field("learning-engine", description="Bucket for adapter artifacts; created if missing.")
    s3_access_key: str = Field("", description="S3 access key (backend s3).")
    s3_secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key (backend s3).")
    s3_secure: bool = Field(True, description="Use HTTPS for S3; false for a plain-HTTP MinIO.")
    s3_region: str = Field("us-east-1", description="S3 region (MinIO ignores it).")
    adapter_retention_keep: int = Field(
        0, ge=0, le=100_000,
        description="Keep the newest N versions per base model (plus active/known-good ones, those online "
        "sessions' live aliases serve and the parents of training jobs that have not ended); older ones are "
        "deleted after each publish and by PruneAdapters. 0 keeps every version.",
    )

    @field_validator("feedback_scrub_patterns")
    @classmethod
    def _scrub_patterns_compile(cls, v: dict[str, str]) -> dict[str, str]:
        from engine.errors import InvalidArgument
        from engine.feedback.scrub import custom_rules

        try:
            custom_rules(v)
        except InvalidArgument as exc:
            raise ValueError("; ".join(f"{x.field}: {x.description}" for x in exc.violations)) from None
        return v

    @field_validator("feedback_kto_implicit")
    @classmethod
    def _implicit_over_defaults(cls, v: dict[ImplicitKind, KtoLabel]) -> dict[ImplicitKind, KtoLabel]:
        return {**DEFAULT_KTO_IMPLICIT, **v}

    @model_validator(mode="after")
    def _rating_thresholds(self) -> Settings:
        if self.feedback_rating_negative_max >= self.feedback_rating_positive_min:
            raise ValueError(
                f"feedback_rating_negative_max {self.feedback_rating_negative_max} must be below "
                f"feedback_rating_positive_min {self.feedback_rating_positive_min}"
            )
        return self

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_scheme(cls, v: str | None) -> str | None:
        """The endpoint as this one parse read it (scheme in lowercase; leading blanks, tabs and newlines gone): its
        scheme decides plaintext or TLS (server/telemetry.py), so what is checked here must be what is kept. The
        exporter takes an endpoint without http:// as TLS, so a plaintext collector named host:port (or
        HTTP://host:port, kept as written) would get TLS handshakes and no spans, without a word in this service's
        logs."""
        if not v:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{v!r} must start with http:// (plaintext) or https:// (TLS), e.g. "
                             "http://otel-collector:4317")
        return urlunsplit(parts)

    @model_validator(mode="after")
    def _access(self) -> Settings:
        if not self.auth_tokens and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is not a loopback address and no auth_tokens are configured; "
                "configure auth_tokens to serve beyond this machine, or bind 127.0.0.1"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        for path in (self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} {'is not a file' if path.exists() else 'does not exist'}")
        _check_tls_files(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)
        names = [t.name for t in self.auth_tokens]
        if len(set(names)) != len(names):
            raise ValueError("auth_tokens names must be unique")
        hashes = [t.sha256 for t in self.auth_tokens]
        if len(set(hashes)) != len(hashes):  # one token, two entries: which role it had would be a matter of order
            shared = sorted({t.name for t in self.auth_tokens if hashes.count(t.sha256) > 1})
            raise ValueError(f"auth_tokens {', '.join(shared)} have the same sha256: each entry is a token of its own")
        return self

    @model_validator(mode="after")
    def _artifact_store(self) -> Settings:
        if self.artifact_backend != "s3":
            return self
        problems = []
        if not self.s3_endpoint or "/" in self.s3_endpoint:
            problems.append(f"s3_endpoint must be host:port (no scheme, no path), got {self.s3_endpoint!r}")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.s3_bucket) or ".." in self.s3_bucket:
            problems.append(f"s3_bucket {self.s3_bucket!r} is not a valid bucket name (3-63 of a-z 0-9 . -)")
        if not self.s3_access_key or not self.s3_secret_key.get_secret_value():
            problems.append("s3_access_key and s3_secret_key are required with artifact_backend s3")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _heartbeats(self) -> Settings:
        if self.worker_stalled_seconds < 2 * self.worker_heartbeat_seconds:
            raise ValueError(
                f"worker_stalled_seconds {self.worker_stalled_seconds:g} must be at least two heartbeats "
                f"(worker_heartbeat_seconds {self.worker_heartbeat_seconds:g}), or a live worker is taken for dead"
            )
        return self

    # ---- derived locations -------------------------------------------------

    @property
    def datasets_dir(self) -> Path:
        return self.datasets_path or self.data_dir / "datasets"

    @property
    def artifacts_dir(self) -> Path:
        return self.artifacts_path or self.data_dir / "artifacts"

    @property
    def trackers_dir(self) -> Path:
        return self.training_trackers_dir or self.data_dir / "trackers"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def postgres_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("secrets_dir"):
            sources.append(file_secret_settings)
        config_data = getattr(settings_cls, "_config_data", None)
        if config_data is not None:
            sources.append(InitSettingsSource(settings_cls, config_data))
        return tuple(sources)


ENV_PREFIX = "LEARNING_ENGINE_"
# LEARNING_ENGINE_* variables that are not settings but are read elsewhere: where the settings come from
# (load_settings), and the clients' (the CLI, the SDKs, the TypeScript client), which a shell running both exports.
OTHER_VARIABLES = frozenset(f"{ENV_PREFIX}{name}" for name in (
    "CONFIG", "SECRETS_DIR", "TARGET", "TOKEN", "URL", "METRICS_URL", "TLS_CA", "TLS_CERT", "TLS_KEY"))


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line for each ``LEARNING_ENGINE_*`` variable of ``environ`` that is neither a setting nor read elsewhere
    (a misspelt setting is otherwise ignored without a word: pydantic-settings reads only the variables of its
    fields), with the settings its name is close to."""
    fields = sorted(name.upper() for name in Settings.model_fields)
    lines = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in OTHER_VARIABLES or upper[len(ENV_PREFIX):] in fields:
            continue
        close = difflib.get_close_matches(upper[len(ENV_PREFIX):], fields, n=2, cutoff=0.8)  # by the part after
        hint = f" (did you mean {' or '.join(ENV_PREFIX + c for c in close)}?)" if close else ""
        lines.append(f"{name} is not a setting and is ignored{hint}")
    return lines


def load_settings(overrides: dict[str, Any] | None = None, *, config_file: Path | None = None) -> Settings:
    """Build and validate the settings; raise SettingsError listing every problem.

    ``config_file`` (else ``$LEARNING_ENGINE_CONFIG``) names an optional YAML file.
    """
    yaml_file = config_file or (Path(os.environ["LEARNING_ENGINE_CONFIG"]) if os.environ.get(
        "LEARNING_ENGINE_CONFIG") else None)
    secrets_dir = Path(os.environ["LEARNING_ENGINE_SECRETS_DIR"]) if os.environ.get(
        "LEARNING_ENGINE_SECRETS_DIR") else None
    cls: type[Settings] = Settings
    extra: SettingsConfigDict = {}
    config_data = _read_config_file(yaml_file) if yaml_file is not None else None
    if secrets_dir is not None:
        if not secrets_dir.is_dir():
            raise SettingsError(f"secrets dir {secrets_dir} (LEARNING_ENGINE_SECRETS_DIR) does not exist")
        extra["secrets_dir"] = secrets_dir
    if extra or config_data is not None:

        class FileSettings(Settings):
            model_config = SettingsConfigDict(**{**Settings.model_config, **extra})
            _config_data = config_data

        cls = FileSettings
    try:
        return cls(**{k: v for k, v in (overrides or {}).items() if v is not None})
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        ]
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None
    except SourceError as exc:  # a value pydantic-settings could not even parse (not JSON where JSON is due)
        raise SettingsError("invalid settings:\n  " + _unparsable(exc, secrets_dir)) from None


def _read_config_file(path: Path) -> dict[str, Any]:
    """The YAML file's settings: a mapping (an empty file is none); SettingsError naming the file otherwise."""
    if not path.is_file():
        raise SettingsError(f"config file {path} {'is not a file' if path.exists() else 'does not exist'}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise SettingsError(f"config file {path} is not valid YAML{at}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(
            f"config file {path} must be a YAML mapping of settings (key: value lines, e.g. `port: 50051`), "
            f"not a {type(data).__name__}"
        )
    return {str(key): value for key, value in data.items()}


def _unparsable(exc: SourceError, secrets_dir: Path | None) -> str:
    """One line for a value pydantic-settings could not parse: the setting, where it came from, that it is JSON.
    Never the value (it may be a secret)."""
    found = re.search(r'field "([^"]+)" from source "([^"]+)"', str(exc))
    if found is None:
        return f"{exc}; structured values (lists, mappings) are written as JSON"
    field, source = found.groups()
    variable = f"LEARNING_ENGINE_{field.upper()}"
    origin = (f"the secret file {secrets_dir / variable.lower()}"
              if source.startswith("Secrets") and secrets_dir is not None else f"the environment variable {variable}")
    return (f"{field}: {origin} is not valid JSON; structured values (lists, mappings) are written as "
            """JSON, e.g. ["q_proj", "v_proj"] or {"name": "value"} (strings in double quotes)""")


def _check_tls_files(cert: Path | None, key: Path | None, client_ca: Path | None) -> None:
    """The TLS files read as every door will read them, so that one that is no PEM, or a key that is not the
    certificate's, is a settings error naming the setting, before anything starts (it failed the gateway's start,
    after the database and the serving engine had started, said as a port in use)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if cert is not None and key is not None:
        try:  # a key under a passphrase is refused, not asked for on the terminal (the doors take none)
            context.load_cert_chain(cert, key, password=_no_passphrase)
        except _EncryptedKey:
            raise ValueError(f"tls_key_file {key} is encrypted: the server takes a key without a passphrase") from None
        except OSError as exc:  # ssl.SSLError, or a file the server may not read
            raise ValueError(f"tls_cert_file {cert} and tls_key_file {key} are not a readable PEM certificate and its "
                             f"private key, without a passphrase ({getattr(exc, 'reason', None) or exc})") from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except OSError as exc:
            raise ValueError(f"tls_client_ca_file {client_ca} holds no readable PEM CA certificate "
                             f"({getattr(exc, 'reason', None) or exc})") from None


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> bytes:
    raise _EncryptedKey
