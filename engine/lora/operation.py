"""How a LoraControl operation is configured, run and recorded, apart from the serving target it acts on
(engine/lora/target.py).

``ControlConfig`` is the target's settings every operation runs under (the alias, the drain timeout and the follow
period a retired version waits for, the smoke request, the gate and its judge). ``to_the_end`` makes an operation
finish even if its caller goes away.
``RecordedOperation`` is an operation being recorded: who asked and why, its phase timings (each also a span), the
gate's summary and the split's figures, and at its end its error, as the ``OperationRecord`` the target stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from engine import telemetry
from engine.errors import EngineError
from engine.jobs.core import JobFailure
from engine.lora import evaluation as ev
from engine.lora.canary import TrafficFigures
from engine.lora.judge import JudgeConfig
from engine.lora.state import EvalSummary, OperationKind, OperationRecord

if TYPE_CHECKING:
    from engine.lora.target import ServingTarget


@dataclass(frozen=True)
class ControlConfig:
    base_model: str
    alias: str
    served_base_name: str = ""  # the base model's id in /v1/models; "" = discover
    drain_timeout_seconds: float = 30.0
    follow_seconds: float = 5.0  # how often every serving process of the target takes up its state
    smoke_prompt: str = "Hello"
    smoke_max_tokens: int = 4
    gateway_url: str = ""  # where clients reach the alias (reported in the status)
    eval_suite: Path | None = None  # the operator's golden suite, if any
    gate: bool = True  # the forgetting-aware suites (target, retention, base) on every activation
    eval_max_tokens: int = 32
    eval_concurrency: int = 4
    thresholds: ev.GateThresholds = ev.GateThresholds()
    judge: JudgeConfig = JudgeConfig()  # LLM-as-judge (engine.lora.judge); off unless enabled


P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="ServingTarget")


def to_the_end(operation: Callable[Concatenate[S, P], Coroutine[Any, Any, T]],
               ) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """An operation on the serving target runs to its end even if its caller goes away (a client's deadline, a
    dropped connection, a cancelled pipeline run): it finishes, or fails and unloads what it loaded, and is
    recorded; the caller, while it waits, gets its result. Interrupted, an activation would leave its candidate
    loaded and its record unexplained. Stopping the server interrupts it (ServingTarget.close); the next start
    reconciles the engine with the stored state."""

    @functools.wraps(operation)
    async def run(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.shield(self._spawn(operation(self, *args, **kwargs), operation.__name__))

    return run


class RecordedOperation:
    def __init__(self, kind: OperationKind, version: str, actor: str, reason: str) -> None:
        self.kind, self.version, self.actor, self.reason = kind, version, actor, reason
        self.start_wall = datetime.now(UTC)
        self.start = time.perf_counter()
        self.phases: list[tuple[str, float]] = []
        self.gate: EvalSummary | None = None
        self.traffic: TrafficFigures | None = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase of the operation, recorded on it and as a span (``lora.<phase>``) under the RPC's."""
        began = time.perf_counter()
        attributes = {"operation": self.kind.value, "version": self.version}
        try:
            with telemetry.tracer.start_as_current_span(f"lora.{name.split()[0]}", attributes=attributes):
                yield
        finally:
            self.phases.append((name, time.perf_counter() - began))

    def mark(self, name: str) -> None:
        """Record the time from the start of the operation to now, e.g. ``to_serving``."""
        self.phases.append((name, time.perf_counter() - self.start))

    def record(self, error: BaseException | None) -> OperationRecord:
        failure = None
        if isinstance(error, EngineError):
            failure = JobFailure(error.code, error.reason, error.message, tuple(sorted(error.metadata.items())))
        elif isinstance(error, asyncio.CancelledError):  # only ServingTarget.close: to_the_end shields callers'
            failure = JobFailure("UNAVAILABLE", "OPERATION_INTERRUPTED", "interrupted: its serving process stopped "
                                 "before it ended; the next start reconciles the serving engine, run it again")
        elif error is not None:
            failure = JobFailure("INTERNAL", "INTERNAL", "internal error; see the server log")
        return OperationRecord(
            kind=self.kind, version=self.version, actor=self.actor, reason=self.reason,
            start_time=self.start_wall, duration_seconds=time.perf_counter() - self.start,
            phases=tuple(self.phases), error=failure, gate=self.gate, traffic=self.traffic,
        )
