"""Every Prometheus metric and the OpenTelemetry tracer, defined once, with small functions to record.

No gRPC here: the server records RPC latency through :func:`rpc_finished`, the
job manager records state changes through :func:`job_state_changed` (and the jobs its worker lets go of through
:func:`job_let_go`) and training steps through :func:`training_step`, LoRA control calls :func:`swap_finished`
and :func:`active_adapter`, and feedback ingestion :func:`feedback_ingested` as each batch commits. Without a
configured tracer provider the spans are no-ops; without a metrics port nobody scrapes the registry.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from engine.jobs.core import JobState

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series beside counters

tracer = trace.get_tracer("learning_engine.engine")


def trace_carrier() -> tuple[tuple[str, str], ...]:
    """The current trace context as W3C headers, to carry a trace across the job queue to another process."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(sorted(carrier.items()))


def carried_context(carrier: tuple[tuple[str, str], ...]) -> Context:
    """The trace context a :func:`trace_carrier` carried (spans started under it join that trace)."""
    return propagate.extract(dict(carrier))

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS = Gauge(
    "learning_engine_jobs",
    "Jobs this process's worker holds in a state that is not final, by kind and state; a job ended or let go of "
    "(paused, queued again, taken over) leaves it (jobs by state, wherever held: learning_engine_jobs_stored).",
    ["kind", "state"],
    registry=REGISTRY,
)
JOBS_STORED = Gauge(
    "learning_engine_jobs_stored",
    "Jobs in the database by kind and state, whichever process created or ran them, read when /metrics is "
    "scraped (every state of a kind present, 0 where none; as last read if the database did not answer).",
    ["kind", "state"],
    registry=REGISTRY,
)
JOB_TRANSITIONS = Counter(
    "learning_engine_job_transitions",
    "Jobs entering a state in this process, by kind and state (rate() of SUCCEEDED or FAILED: jobs ending).",
    ["kind", "state"],
    registry=REGISTRY,
)
STEP_LOSS = Gauge(
    "learning_engine_training_step_loss", "Loss of the latest step of each training job running here; a job's "
    "series goes when this process lets go of the job (it ended, or was paused, queued again or taken over).",
    ["job"], registry=REGISTRY
)
TOKENS_PER_SECOND = Gauge(
    "learning_engine_training_tokens_per_second", "Throughput at the latest step of each training job running "
    "here; a job's series goes with the job (see learning_engine_training_step_loss).", ["job"], registry=REGISTRY
)
STEPS = Counter("learning_engine_training_steps", "Optimiser steps taken.", registry=REGISTRY)
ONLINE_UPDATES = Counter(
    "learning_engine_online_updates", "Updates of the online sessions run here, by outcome: TRAINED, SKIPPED (a loss "
    "that was not finite; nothing changed) or SPIKE (a loss spike: the adapter was put back, learning disabled).",
    ["outcome"], registry=REGISTRY,
)
ONLINE_LOSS = Gauge(
    "learning_engine_online_loss", "Loss of the latest update of each online session running here; a session's "
    "series goes when it ends.", ["session"], registry=REGISTRY
)
RPC_SECONDS = Histogram(
    "learning_engine_rpc_duration_seconds",
    "Server-side latency of unary RPCs by method and status code (streams are counted apart).",
    ["method", "code"],
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
RPC_STREAMS = Counter(
    "learning_engine_rpc_streams",
    "Streaming RPCs ended, by method and status code (their durations are how long clients watch or send, "
    "not latency).",
    ["method", "code"],
    registry=REGISTRY,
)
FEEDBACK = Counter(
    "learning_engine_feedback_ingested",
    "Feedback events of the batches committed, by outcome: stored, duplicate (stored before) or forgotten (of an "
    "erased user or event: refused).",
    ["outcome"],
    registry=REGISTRY,
)
ACTIVE_ADAPTER = Gauge(
    "learning_engine_active_adapter",
    "1 for the adapter version serving traffic per base model.",
    ["base_model", "version"],
    registry=REGISTRY,
)
SWAP_SECONDS = Histogram(
    "learning_engine_adapter_swap_seconds",
    "Time to switch the serving adapter, by operation kind.",
    ["kind"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
GATEWAY_REQUESTS = Counter(
    "learning_engine_gateway_requests",
    "Completion requests through the gateway, by the upstream model that served them (the adapter's versioned "
    "name, or the base model) and HTTP status.",
    ["model", "status"],
    registry=REGISTRY,
)
GATEWAY_SECONDS = Histogram(
    "learning_engine_gateway_request_duration_seconds",
    "Gateway completion latency (to the last byte, streams included) by upstream model.",
    ["model"],
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


TRAFFIC_REQUESTS = Counter(
    "learning_engine_traffic_requests",
    "Requests to the gateway's alias, by the adapter version that served them ('base' for the base model) and "
    "its role: active, or candidate of a traffic split (canary or manual).",
    ["version", "role"],
    registry=REGISTRY,
)
TRAFFIC_ERRORS = Counter(
    "learning_engine_traffic_errors",
    "Requests to the alias that failed at the serving engine (HTTP 5xx or no answer), by version and role; a "
    "candidate's failed request retried on the active version counts here for the candidate.",
    ["version", "role"],
    registry=REGISTRY,
)
TRAFFIC_FAILOVERS = Counter(
    "learning_engine_traffic_failovers",
    "Candidate requests the serving engine failed that were retried on the active version, by candidate version.",
    ["version"],
    registry=REGISTRY,
)
TRAFFIC_SECONDS = Histogram(
    "learning_engine_traffic_request_duration_seconds",
    "Latency of requests to the alias (to the last byte) by version and role.",
    ["version", "role"],
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
TRAFFIC_SHARE = Gauge(
    "learning_engine_traffic_share",
    "Share of the alias's requests each side of the traffic split in force is meant to get, by version and role; "
    "no series without a split.",
    ["version", "role"],
    registry=REGISTRY,
)
CANARY_DECISIONS = Counter(
    "learning_engine_canary_decisions",
    "Canaries ended, by decision: PROMOTED, ROLLED_BACK (worse, or an error spike) or ABORTED.",
    ["decision"],
    registry=REGISTRY,
)


_job_states: dict[tuple[str, str], str] = {}


def job_state_changed(kind: str, job_id: str, state: str, held: bool) -> None:
    """One job of ``kind`` (training, fisher, evaluation) entered ``state``: counted, and, while this process's
    worker holds it in a state that is not final (``held``), in the gauge of jobs held here; otherwise let go of.

    Only a job held here is in the gauge: one created or moved here that a worker elsewhere runs would never be
    seen to end, and stay in it for ever."""
    JOB_TRANSITIONS.labels(kind, state).inc()
    if not held:
        job_let_go(kind, job_id)
        return
    previous = _job_states.get((kind, job_id))
    if previous is not None:
        JOBS.labels(kind, previous).dec()
    _job_states[(kind, job_id)] = state
    JOBS.labels(kind, state).inc()


def job_let_go(kind: str, job_id: str) -> None:
    """This process's worker no longer holds the job (it ended, was released or taken over): it leaves the gauge,
    with its training series."""
    previous = _job_states.pop((kind, job_id), None)
    if previous is not None:
        JOBS.labels(kind, previous).dec()
    for gauge in (STEP_LOSS, TOKENS_PER_SECOND, ONLINE_LOSS):
        try:
            gauge.remove(job_id)
        except KeyError:
            pass  # it stopped before a step, or is of another kind


_stored_kinds: set[str] = set()  # every kind jobs_stored has seen: its states stay as series, 0 once none is left


def jobs_stored(counts: Mapping[tuple[str, str], int]) -> None:
    """The jobs the database holds, by (kind, state): every state of each kind read now or before, 0 where none."""
    kinds = {kind for kind, _ in counts} | _stored_kinds
    _stored_kinds.update(kinds)
    for kind in kinds:
        for state in JobState:
            JOBS_STORED.labels(kind, state.value).set(counts.get((kind, state.value), 0))


def training_step(job_id: str, loss: float, tokens_per_second: float) -> None:
    """One optimiser step of a training job."""
    STEPS.inc()
    STEP_LOSS.labels(job_id).set(loss)
    TOKENS_PER_SECOND.labels(job_id).set(tokens_per_second)


def online_update(session_id: str, outcome: str, loss: float) -> None:
    """One update of an online session (its loss is kept only when it TRAINED)."""
    ONLINE_UPDATES.labels(outcome).inc()
    if outcome == "TRAINED":
        ONLINE_LOSS.labels(session_id).set(loss)


def rpc_finished(method: str, code: str, seconds: float) -> None:
    RPC_SECONDS.labels(method, code).observe(seconds)


def stream_finished(method: str, code: str) -> None:
    RPC_STREAMS.labels(method, code).inc()


def feedback_ingested(stored: int, duplicates: int, forgotten: int) -> None:
    """One batch of feedback committed, with the store's outcome for its events."""
    FEEDBACK.labels("stored").inc(stored)
    FEEDBACK.labels("duplicate").inc(duplicates)
    FEEDBACK.labels("forgotten").inc(forgotten)


_active: dict[str, str] = {}


def active_adapter(base_model: str, version: str | None) -> None:
    """The version now serving ``base_model`` (None: LoRA disabled / base model only)."""
    previous = _active.pop(base_model, None)
    if previous is not None:
        ACTIVE_ADAPTER.remove(base_model, previous)
    if version:
        _active[base_model] = version
        ACTIVE_ADAPTER.labels(base_model, version).set(1)


def gateway_request(model: str, status: int, seconds: float) -> None:
    """One completion through the gateway, served by ``model`` (502 when the serving engine did not answer)."""
    GATEWAY_REQUESTS.labels(model, str(status)).inc()
    GATEWAY_SECONDS.labels(model).observe(seconds)


def _version_label(version: str) -> str:
    return version or "base"


def traffic_request(version: str, role: str, *, error: bool, seconds: float, failover: bool = False) -> None:
    """One request to the alias, served (or failed) by ``version`` in ``role`` (active or candidate)."""
    label = _version_label(version)
    TRAFFIC_REQUESTS.labels(label, role).inc()
    TRAFFIC_SECONDS.labels(label, role).observe(seconds)
    if error:
        TRAFFIC_ERRORS.labels(label, role).inc()
    if failover:
        TRAFFIC_FAILOVERS.labels(label).inc()


_shares: list[tuple[str, str]] = []


def traffic_share(active: str, candidate: str, share: float) -> None:
    """The split in force: ``share`` to ``candidate``, the rest to ``active``; share 0 ends it (no series)."""
    while _shares:
        TRAFFIC_SHARE.remove(*_shares.pop())
    if share > 0:
        for labels, value in (((_version_label(active), "active"), 1.0 - share),
                              ((_version_label(candidate), "candidate"), share)):
            TRAFFIC_SHARE.labels(*labels).set(value)
            _shares.append(labels)


def canary_decided(decision: str) -> None:
    CANARY_DECISIONS.labels(decision).inc()


def swap_finished(kind: str, seconds: float) -> None:
    """One activation/rollback/enable/disable took ``seconds`` end to end."""
    SWAP_SECONDS.labels(kind).observe(seconds)


DRIFT_STATISTIC = Gauge(
    "learning_engine_drift_statistic", "The drift statistic (MMD² of the incoming prompts against the active "
    "version's training data, on the base model's embeddings) of the latest report computed here, per base model.",
    ["base_model"], registry=REGISTRY,
)
DRIFT_THRESHOLD = Gauge(
    "learning_engine_drift_threshold", "The statistic over which the latest drift test said drifted (where its p-value "
    "falls to drift_significance, about the permutation null's 1 - drift_significance quantile), per base model.",
    ["base_model"], registry=REGISTRY,
)
DRIFT_P_VALUE = Gauge(
    "learning_engine_drift_p_value", "The permutation p-value of the latest drift report, per base model.",
    ["base_model"], registry=REGISTRY,
)
DRIFTED = Gauge(
    "learning_engine_drifted", "1 when the latest drift report of the base model found drift, else 0.",
    ["base_model"], registry=REGISTRY,
)


def drift_reported(base_model: str, statistic: float, threshold: float, p_value: float, drifted: bool) -> None:
    """A drift report was computed (one that tested: not NO_REFERENCE or TOO_FEW_SAMPLES)."""
    DRIFT_STATISTIC.labels(base_model).set(statistic)
    DRIFT_THRESHOLD.labels(base_model).set(threshold)
    DRIFT_P_VALUE.labels(base_model).set(p_value)
    DRIFTED.labels(base_model).set(1.0 if drifted else 0.0)


PIPELINE_TRIGGERS = Counter(
    "learning_engine_pipeline_trigger_decisions",
    "Pipeline trigger decisions: an occasion (a cron tick, a count reached, drift) fired a run or was skipped.",
    ["pipeline", "kind", "fired"], registry=REGISTRY,
)


def pipeline_triggered(pipeline: str, kind: str, fired: bool) -> None:
    PIPELINE_TRIGGERS.labels(pipeline, kind, "true" if fired else "false").inc()
