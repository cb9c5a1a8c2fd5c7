"""Experiment trackers (TensorBoard, Weights & Biases, MLflow, ... what ``accelerate.tracking`` supports): a training
job's metrics logged to each through accelerate's own tracker classes, one run per job, named after the job.

Logged, at their step: every ``StepMetrics`` the job records on this worker as ``loss``, ``task_loss``,
``ewc_penalty``, ``learning_rate``, ``grad_norm``, ``tokens_per_second`` and ``epoch`` (the CSV's columns,
engine.training.metrics), and every ``EvalReported`` metric as ``eval/<split>/<name>`` (``eval/train_end/loss``);
the job's spec as the run's configuration. Trackers that log locally (tensorboard, aim) write below the logging
folder, TensorBoard to ``<folder>/trainingJobs/<id>``; the others are configured their usual way (e.g. W&B's
``WANDB_API_KEY``, MLflow's ``MLFLOW_TRACKING_URI``).

The trackers are made and started in the job's worker thread, before the job loads anything: their imports must not
race the training libraries' imports on another thread. Logging then goes to a thread of the run's own, in order, so
a slow tracker never holds the event loop or the training. A tracker that fails is reported once as a warning
(``TRACKER_FAILED``) and left out; the job goes on. A job resumed from a checkpoint starts a new run of the same
name and logs the steps after the checkpoint again.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.training.spec import EvalReported, StepMetrics, TrainingJob, TrainingJobSpec

log = logging.getLogger(__name__)

Value = str | int | float | bool


def tracker_problems(names: Sequence[str]) -> list[str]:
    """What is wrong with a list of tracker names: unknown to accelerate, named twice, or its library missing."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers  # noqa: PLC0415 - torch-heavy

    available = {str(t) for t in get_available_trackers()}
    problems = []
    for i, name in enumerate(names):
        if name not in LOGGER_TYPE_TO_CLASS:
            problems.append(f"{name!r} is not a tracker accelerate supports (one of "
                            f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))})")
        elif name in names[:i]:
            problems.append(f"{name!r} is named twice")
        elif name not in available:
            hint = " (pip install 'learning-engine[tracking]')" if name == "tensorboard" else ""
            problems.append(f"tracker {name!r} needs its library, which is not installed{hint}")
    return problems


def tracked_values(payload: object) -> tuple[dict[str, Value], int] | None:
    """The values an event logs and their step; None for events trackers do not get."""
    if isinstance(payload, StepMetrics):
        m = payload
        return {"loss": m.loss, "task_loss": m.task_loss, "ewc_penalty": m.ewc_penalty,
                "learning_rate": m.learning_rate, "grad_norm": m.grad_norm,
                "tokens_per_second": m.tokens_per_second, "epoch": m.epoch}, m.step
    if isinstance(payload, EvalReported) and payload.metrics:
        return {f"eval/{payload.split}/{name}": value for name, value in payload.metrics}, payload.step
    return None


def run_config(spec: TrainingJobSpec) -> dict[str, Value]:
    """A job's spec as flat values, the run's configuration."""
    config: dict[str, Value] = {
        "base_model": spec.base_model, "objective": spec.objective.value,
        "parent_adapter_version": spec.parent_adapter_version, "lora_rank": spec.lora.rank,
        "lora_alpha": spec.lora.alpha, "lora_dropout": spec.lora.dropout,
        "lora_target_modules": ",".join(spec.lora.target_modules),
        "ewc_lambda": 0.0 if spec.ewc.disabled or not spec.parent_adapter_version else spec.ewc.ewc_lambda,
    }
    for name, value in asdict(spec.hyperparameters).items():
        config[name] = value.value if isinstance(value, enum.Enum) else value
    return config


class Trackers:
    """The trackers every training job of this worker logs to (the server's ``training_trackers``)."""

    def __init__(self, names: Sequence[str], logging_dir: Path) -> None:
        self.names = tuple(names)
        self.logging_dir = logging_dir

    def start(self, job: TrainingJob, warn: Callable[[str], None]) -> TrackerRun:
        """A run for ``job`` in each tracker. Blocking (imports, files, network): call it in the job's thread.
        ``warn`` reports a tracker that fails (from any thread)."""
        from accelerate.state import PartialState  # noqa: PLC0415
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS  # noqa: PLC0415

        PartialState()  # the process state accelerate's trackers consult (one process here); made once, as Accelerator
        started: list[tuple[str, Any]] = []
        for name in self.names:
            cls = LOGGER_TYPE_TO_CLASS[name]
            try:
                if cls.requires_logging_directory:
                    self.logging_dir.mkdir(parents=True, exist_ok=True)
                    tracker = cls(job.name, str(self.logging_dir))
                else:
                    tracker = cls(job.name)
                tracker.start()
                tracker.store_init_configuration(run_config(job.spec))
            except Exception as exc:  # noqa: BLE001 - a tracker misconfigured: the job goes on without it
                log.warning("tracker not started", extra={"job_id": job.id, "tracker": name}, exc_info=True)
                warn(f"{name}: not started ({type(exc).__name__}: {exc}); the job is not logged to it")
                continue
            started.append((name, tracker))
        return TrackerRun(started, warn)


class TrackerRun:
    """One job's run in the started trackers: values are logged in order on a thread of its own."""

    def __init__(self, trackers: list[tuple[str, Any]], warn: Callable[[str], None]) -> None:
        self._trackers = trackers
        self._warn = warn
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracker")

    def log(self, payload: object) -> None:
        """Log an event's values (if it has any) soon; returns at once."""
        values = tracked_values(payload)
        if values is not None and self._trackers:
            self._thread.submit(self._log, *values)

    def _log(self, values: dict[str, Value], step: int) -> None:
        for entry in list(self._trackers):
            name, tracker = entry
            try:
                tracker.log(values, step=step)
            except Exception as exc:  # noqa: BLE001 - left out from now on
                self._trackers.remove(entry)
                log.warning("tracker failed", extra={"tracker": name}, exc_info=True)
                self._warn(f"{name}: {type(exc).__name__}: {exc}; the job's later metrics are not logged to it")

    def close(self) -> None:
        """Log what is pending, then finish each tracker's run. Blocking."""
        self._thread.submit(self._finish)
        self._thread.shutdown(wait=True)

    def _finish(self) -> None:
        for name, tracker in self._trackers:
            try:
                tracker.finish()
            except Exception:  # noqa: BLE001 - its run stays open; nothing else to do
                log.warning("tracker did not finish", extra={"tracker": name}, exc_info=True)
        self._trackers = []


__all__ = ["TrackerRun", "Trackers", "run_config", "tracked_values", "tracker_problems"]
