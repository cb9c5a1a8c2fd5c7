"""LoraControl's part of the one settings object (mixed into ``server.settings.Settings``).

Kept in its own module so the serving knobs are read in one place; every field is a
``LEARNING_ENGINE_<NAME>`` environment variable or a YAML key like all other settings.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from engine.lora.evaluation import reserved_suite_name
from engine.registry.peft_checks import MAX_LORA_RANK, ServingLimits


class LoraControlSettings(BaseModel):
    serving_url: str | None = Field(
        None,
        description="Base URL of the serving engine (MAX Serve or vLLM), e.g. http://127.0.0.1:8000. Unset starts "
        "the CPU reference backend (engine/serving/reference_backend.py, NOT MAX) as a subprocess on "
        "reference_backend_port with the default base model.",
    )
    serving_mode: Literal["max", "vllm", "custom"] = Field(
        "max", description="LoRA control API flavour: MAX Serve, vLLM (runtime LoRA updating), or custom paths."
    )
    serving_max_lora_rank: int = Field(
        16, ge=1, le=MAX_LORA_RANK, description="Highest LoRA rank the serving engine loads: must match its "
        "--max-lora-rank (MAX Serve and vLLM refuse a higher rank at activation). A training job or an import of a "
        "higher rank is refused (LORA_NOT_SERVABLE), as are, in max mode, LoRA target modules other than q_proj, "
        "k_proj, v_proj and o_proj (all MAX Serve loads)."
    )
    serving_load_path: str = Field("/v1/load_lora_adapter", description="Load route (custom mode).")
    serving_unload_path: str = Field("/v1/unload_lora_adapter", description="Unload route (custom mode).")
    serving_models_path: str = Field("/v1/models", description="Model list route (custom mode).")
    serving_base_model_name: str = Field(
        "", description="The base model's id in the engine's /v1/models; empty takes the first non-adapter entry."
    )
    serving_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="Timeout of list/health/smoke calls, and of connecting to the engine for a "
        "completion through the gateway."
    )
    serving_load_timeout_seconds: float = Field(120.0, gt=0, le=3600, description="Timeout of load/unload calls.")
    serving_retries: int = Field(3, ge=0, le=10, description="Retries of idempotent serving calls.")
    serving_backoff_seconds: float = Field(0.2, ge=0, le=30, description="First retry delay; doubles each time.")
    lora_alias: str = Field("active", min_length=1, max_length=128,
                            description="The `model` name clients send to the gateway to get the active adapter.")
    gateway_port: int = Field(8088, ge=0, le=65535,
                              description="Port of the OpenAI-compatible routing gateway on `host`; 0 picks one.")
    gateway_read_timeout_seconds: float = Field(
        120.0, gt=0, le=3600, description="Longest the serving engine may stay silent on a completion through the "
        "gateway: before the first byte of its answer (a whole answer, unstreamed) and between chunks of a stream; a "
        "stream that keeps producing tokens is never cut. Past it the request fails (502; a stream is broken off). "
        "Connecting is bounded by serving_timeout_seconds."
    )
    reference_backend_port: int = Field(0, ge=0, le=65535,
                                        description="Port of the embedded reference backend; 0 picks a free one.")
    reference_backend_start_timeout_seconds: float = Field(
        180.0, gt=0, description="How long the embedded reference backend may take to load the base model."
    )
    drain_timeout_seconds: float = Field(
        30.0, ge=0, le=3600, description="Time the requests other serving processes of the target sent a replaced "
        "adapter (a version swapped out, rolled back from, a split's candidate) get to end once they follow the "
        "change: the adapter is unloaded, by a later follow of any serving process, after serving_follow_seconds plus "
        "this, and only once no serving process has requests to it in flight (however long they take)."
    )
    smoke_prompt: str = Field("Hello", min_length=1, description="Prompt of the one smoke request before a switch.")
    eval_suite_path: str = Field(
        "", description="Golden suite JSONL below <data-dir>/datasets, checked at every activation besides the "
        "gate's own suites; empty: none. Its suite is named by its file's stem, which must not be one of the gate's "
        "(target, retention, base)."
    )
    eval_gate: bool = Field(
        True, description="The forgetting-aware gate at every activation: the candidate must answer more of its "
        "own training data than the active version (target), keep what its ancestors and the active version were "
        "taught (retention), and keep the base model's general knowledge (base)."
    )
    eval_max_cases: int = Field(50, ge=1, le=10_000,
                                description="Gate: most cases of the target and of the retention suite each.")
    eval_max_forgetting: float = Field(
        0.1, ge=0, le=1, description="Gate: largest share of the retention cases the active version answers right "
        "that the candidate may get wrong."
    )
    eval_max_base_forgetting: float = Field(
        0.1, ge=0, le=1, description="Gate: largest drop in base retention below the active version's (the base "
        "model's own is 1)."
    )
    eval_max_tokens: int = Field(32, ge=1, le=4096,
                                 description="Least answer length for gate prompts (longer for longer references).")
    eval_max_regressions: int = Field(3, ge=0,
                                      description="Golden suite: most cases the baseline answers right and the "
                                      "candidate does not.")
    eval_max_mean_score_drop: float = Field(0.05, ge=0, le=1, description="Golden suite: largest mean token-F1 drop.")
    eval_min_pass_rate: float = Field(0.5, ge=0, le=1,
                                      description="Golden suite: smallest fraction of cases answered right.")
    eval_max_hallucination_rate: float = Field(
        0.2, ge=0, le=1, description="Any suite whose cases carry their `source` text: largest share of the "
        "candidate's answers with a claim the source does not support (a number or name absent from it, or the "
        "judge's SUPPORTED: no)."
    )
    eval_judge: bool = Field(
        False, description="LLM-as-judge: a served model grades every answer (relevance, correctness, "
        "completeness, support by the source) with a fixed rubric; a case it calls correct is answered right. "
        "Off by default: it doubles an evaluation's requests, and a small base model is a poor judge. An "
        "evaluation job may turn it on or off for itself (spec.judge)."
    )
    eval_judge_model: str = Field(
        "", max_length=256, description="The judge's model id as its serving engine names it; empty: the base "
        "model of the serving target. An evaluation job may name another (spec.judge_model)."
    )
    eval_judge_url: str = Field(
        "", description="Base URL of another OpenAI-compatible serving engine to ask the judge on (e.g. a larger "
        "model's vLLM); empty: the serving target's engine."
    )
    eval_judge_max_tokens: int = Field(64, ge=8, le=1024, description="Longest verdict the judge may write.")
    eval_judge_max_unparseable: float = Field(
        0.2, ge=0, le=1, description="Largest share of a suite's verdicts the judge may answer in no readable "
        "format; more fails the evaluation with UNAVAILABLE JUDGE_UNPARSEABLE."
    )
    eval_min_judge_score: float = Field(
        0.0, ge=0, le=1, description="Golden suite, with the judge on: smallest mean rubric score (0 to 1); 0: not "
        "checked."
    )
    auto_rollback_enabled: bool = Field(False, description="Roll back automatically on bad feedback.")
    auto_rollback_margin: float = Field(0.1, gt=0, le=1,
                                        description="Negative-rate excess over the known-good that triggers it.")
    auto_rollback_min_samples: int = Field(
        50, ge=1, description="Ratings of each of the active and the known-good version (in its 7-day window) "
        "needed first.")
    auto_rollback_interval_seconds: float = Field(60.0, gt=0, description="How often feedback is checked.")
    serving_follow_seconds: float = Field(
        5.0, gt=0, le=600, description="How often a serving process takes up the LoRA state another serving process "
        "of the same target recorded (its gateway then routes the alias the same way). Every serving process of a "
        "target must have the same (or a shorter) one: a replaced adapter stays loaded this long plus "
        "drain_timeout_seconds, so that none still routes to it when it goes."
    )
    prepare_generator_model: str = Field(
        "", max_length=256, description="The model a data preparation job asks for question-answer pairs, as its "
        "serving engine names it; empty: the base model of the serving target. A job may name another "
        "(spec.generator_model)."
    )
    prepare_generator_url: str = Field(
        "", description="Base URL of another OpenAI-compatible serving engine to ask the generator on (e.g. a larger "
        "model's vLLM); empty: the serving target's engine."
    )
    prepare_max_tokens: int = Field(512, ge=16, le=8192,
                                    description="Longest reply the generator may write about one chunk.")
    pipeline_trigger_interval_seconds: float = Field(
        30.0, gt=0, le=3600, description="How often a serving process looks at the pipelines' triggers (a cron "
        "tick fires within this much of its time)."
    )
    pipeline_max_concurrent_runs: int = Field(8, ge=1, le=256,
                                              description="Pipeline runs one serving process holds at once (a run "
                                              "mostly waits for its training job).")
    pipeline_drift_check_seconds: float = Field(
        3600.0, gt=0, description="How often a drift trigger measures drift (a report embeds up to "
        "drift_max_samples prompts of each side with the base model)."
    )
    pipeline_poll_seconds: float = Field(2.0, gt=0, le=60,
                                         description="How often a pipeline run looks at the job it waits for.")

    @property
    def serving_limits(self) -> ServingLimits:
        """What the serving engine can load, checked when a training job is created and when an adapter is
        imported."""
        return ServingLimits.for_engine(self.serving_mode, self.serving_max_lora_rank)

    @field_validator("serving_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/") if v else None

    @field_validator("eval_judge_url", "prepare_generator_url")
    @classmethod
    def _judge_url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://, or be empty")
        return v.rstrip("/")

    @field_validator("serving_load_path", "serving_unload_path", "serving_models_path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with /")
        return v

    @field_validator("eval_suite_path")
    @classmethod
    def _suite(cls, v: str) -> str:
        if v.startswith("/") or ".." in v.split("/"):
            raise ValueError("must be a relative path below <data-dir>/datasets")
        if v and (reserved := reserved_suite_name(v)):  # else every activation would be refused
            raise ValueError(f"{v!r} {reserved}")
        return v

    @model_validator(mode="after")
    def _training_defaults_servable(self) -> LoraControlSettings:
        # training_lora_* are the training settings': a default the engine cannot load would fail every job
        rank = getattr(self, "training_lora_rank", None)
        if rank is not None and rank > self.serving_max_lora_rank:
            raise ValueError(f"training_lora_rank {rank} is above serving_max_lora_rank {self.serving_max_lora_rank} "
                             "(the serving engine's --max-lora-rank)")
        limits = self.serving_limits
        targets = getattr(self, "training_lora_target_modules", ())
        refused = limits.refused(targets)
        if refused:
            raise ValueError(f"training_lora_target_modules names {', '.join(refused)}, which {limits.engine} "
                             f"(serving_mode {self.serving_mode}) cannot load LoRA on; it loads "
                             f"{', '.join(sorted(limits.target_modules or ()))}")
        return self

    @model_validator(mode="after")
    def _ports_differ(self) -> LoraControlSettings:
        # metrics_port is the server's (telemetry settings): checked here, before anything starts, with the others
        ports = {"port": getattr(self, "port", None), "gateway_port": self.gateway_port,
                 "reference_backend_port": self.reference_backend_port if self.serving_url is None else None,
                 "metrics_port": getattr(self, "metrics_port", None)}
        by_port: dict[int, list[str]] = {}
        for name, port in ports.items():
            if port:  # 0 picks a free one, None is off
                by_port.setdefault(port, []).append(name)
        clashes = [f"{' and '.join(names)} are all {port}" if len(names) > 2 else
                   f"{' and '.join(names)} are both {port}" for port, names in by_port.items() if len(names) > 1]
        if clashes:
            raise ValueError(f"port, gateway_port, reference_backend_port and metrics_port must differ: "
                             f"{'; '.join(clashes)}")
        return self
