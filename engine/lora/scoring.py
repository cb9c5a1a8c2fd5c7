"""How an evaluation is scored on the serving engine, for ServingTarget (engine/lora/target.py): its suites resolved
(the golden suites read, the gate's built: engine.lora.evaluation), both sides' answers, the LLM judge's grades when it
is judged, the base model's retention, the reports rendered and stored, and the decision recorded on the version.

A version's latest evaluation stands for the next one against the same baseline on the same basis (``reusable``), so
a pipeline's EVALUATE and the gate of the activation after it do not answer the same suites twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from engine.errors import EngineError, FailedPrecondition, NotFound, ViolationCollector
from engine.lora import evaluation as ev
from engine.lora import lineage
from engine.lora.eval_report import render_reports
from engine.lora.judge import Judge, JudgeChoice, JudgeVerdict
from engine.lora.state import AdapterFetcher, EvalSummary, GateInputs, LoraStateStore, lora_name
from engine.registry.ports import ArtifactStore
from engine.serving.alias_router import AliasRouter
from engine.serving.client import ServingClient

if TYPE_CHECKING:
    from engine.lora.operation import ControlConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

Progress = Callable[[str, int, int], None]  # (suite being answered, answers so far, answers in all); may raise


@dataclass(frozen=True)
class ScorePlan:
    """What an evaluation scores, resolved before anything is loaded or answered."""

    base_model: str  # as the target's stored state names it
    version: str
    baseline_version: str
    suites: tuple[ev.Suite, ...]
    judge: Judge | None
    basis: str  # engine.lora.evaluation.evaluation_basis
    gated: bool  # the gate's own suites (target, retention, base) are scored: the gate is on and it is a version


class EvalScorer:
    """Scores evaluations of one serving target's versions (loaded by the target) and keeps their reports."""

    def __init__(self, config: ControlConfig, client: ServingClient, router: AliasRouter, store: LoraStateStore,
                 adapters: AdapterFetcher, reports: ArtifactStore, gate: GateInputs | None = None, *,
                 judge_client: ServingClient | None = None) -> None:
        self.config = config
        self.gate = gate if config.gate else None  # the forgetting-aware suites; None when the gate is off
        self._client = client
        self._judge_client = judge_client  # the judge's own serving engine (eval_judge_url); None: this one
        self._router = router
        self._store = store
        self._adapters = adapters
        self._reports = reports

    async def plan(self, base: str, version: str, baseline_version: str, goldens: Sequence[Path | ev.Suite],
                   choice: JudgeChoice | None) -> ScorePlan:
        """What evaluating ``version`` of ``base`` against ``baseline_version`` scores (the golden suites read, the
        gate's built) and on what basis; nothing is loaded or answered. INVALID_ARGUMENT (INVALID_EVALUATION_SPEC)
        when a golden suite's name is the gate's or another's (engine.lora.evaluation.check_suite_names)."""
        issues = ViolationCollector()  # refused before anything is read, loaded or answered
        ev.check_suite_names(issues, [g for g in goldens if not isinstance(g, ev.Suite)], "suite_paths")
        issues.raise_if_any("INVALID_EVALUATION_SPEC", "the evaluation's suites are not told apart")
        suites: list[ev.Suite] = []
        for golden in goldens:  # a file is named by its stem (golden.jsonl is "golden"); a built suite by itself
            if isinstance(golden, ev.Suite):
                suites.append(golden)
                continue
            cases, digest = await asyncio.to_thread(ev.load_suite, golden)
            suites.append(ev.Suite(golden.stem, ev.SuiteKind.GOLDEN, tuple(cases), digest, note=golden.name))
        gate = self.gate if version else None  # the base model itself has no data or lineage of its own
        if gate is not None:
            suites += await gate.suites(base, version, baseline_version)
        judge = self._judge(choice)
        basis = ev.evaluation_basis(suites, gate is not None, self.config.thresholds, self.config.eval_max_tokens,
                                    judge.info if judge else None)
        return ScorePlan(base, version, baseline_version, tuple(suites), judge, basis, gate is not None)

    async def reusable(self, plan: ScorePlan) -> EvalSummary | None:
        """The version's latest evaluation when it was against the same baseline on the same basis
        (evaluation_basis), else None: a pipeline's EVALUATE and the gate of the activation or canary after it do
        not answer the same suites twice. It only reads the store, so callers ask it before loading anything."""
        latest = await self._store.latest_eval(plan.base_model, plan.version)
        if latest is None or latest.baseline_version != plan.baseline_version or latest.basis != plan.basis:
            return None
        log.info("the gate reuses an evaluation", extra={"version": plan.version, "evaluation": latest.id})
        return latest

    async def score(self, plan: ScorePlan, progress: Progress | None = None) -> EvalSummary:
        """Answer ``plan``'s suites with both sides (loaded), score them, and store the reports and the decision.
        When both sides are one model (the base model against itself), it answers once for both."""
        base, version, baseline_version = plan.base_model, plan.version, plan.baseline_version
        suites, judge = plan.suites, plan.judge
        candidate_model = lora_name(base, version) if version else self._router.base_model_name
        baseline_model = lora_name(base, baseline_version) if baseline_version else self._router.base_model_name
        same = candidate_model == baseline_model
        answered, total = 0, (2 if judge else 1) * (1 if same else 2) * sum(len(s.cases) for s in suites)
        verdicts, results = [], []
        for suite in suites:

            def tick(name: str = suite.name) -> None:
                nonlocal answered
                answered += 1
                if progress is not None:
                    progress(name, answered, total)

            candidate = await self._answers(candidate_model, suite.cases, tick)
            baseline = candidate if same else await self._answers(baseline_model, suite.cases, tick)
            judged = None
            if judge is not None:
                graded = await self._graded(judge, suite.cases, candidate, tick)
                judged = (graded, graded if same else await self._graded(judge, suite.cases, baseline, tick))
                judge.check(suite.name, [*judged[0], *judged[1]])
            verdict, scored = ev.score_suite(suite, candidate, baseline, self.config.thresholds, judged)
            verdicts.append(verdict)
            results.append(scored)
        gate = self.gate if plan.gated else None
        if gate is not None:
            mine = await gate.base_retention(base, version)
            theirs: float | None = 1.0  # the base model keeps all it knows
            if baseline_version:
                measured = await gate.base_retention(base, baseline_version)
                theirs = measured.retention if measured else None
            verdicts.append(ev.base_verdict(mine.retention if mine else None, theirs, mine.lost if mine else (),
                                            self.config.thresholds))
            results.append(())
        now = datetime.now(UTC)
        evaluation = f"{now:%Y%m%dT%H%M%S%f}-vs-{baseline_version or 'base'}"
        curve = await self._learning_curve(base, version, verdicts, evaluation)
        report = ev.EvalReport(version=version, baseline_version=baseline_version, suites=tuple(verdicts),
                               results=tuple(results), time=now, judge=judge.info if judge else None,
                               learning_curve=curve)
        rendered = await asyncio.to_thread(render_reports, report)
        uris = []
        for file, data in rendered.items():
            key = report_key(base, version, evaluation, file)
            await self._reports.put_bytes(key, data)
            uris.append(self._reports.uri(key))
        summary = EvalSummary(
            suite_digest=report.digest, version=version, baseline_version=baseline_version, metrics=report.metrics,
            regressions=report.regressions, passed=report.passed, failed_checks=report.failed_checks,
            report_uris=tuple(uris), time=now, suites=report.suites, id=evaluation, basis=plan.basis,
        )
        await self._store.save_eval(base, summary)
        if not version:  # the base model itself has no adapter record
            return summary
        try:
            await self._adapters.record_eval(base, summary)
        except EngineError as exc:
            log.warning("could not attach the eval to the adapter record", extra={"error": exc.message})
        return summary

    async def _learning_curve(self, base: str, version: str, verdicts: Sequence[ev.SuiteVerdict],
                              evaluation: str) -> lineage.LearningCurve:
        """The scores of ``version``'s lineage (as the registry records it) on the suites of this evaluation, from
        their stored evaluations and the base model's own (engine.lora.lineage)."""
        chain = await self._adapters.lineage(base, version) if version else [""]
        stored = await self._store.evaluations(base, ["", *chain[1:lineage.MAX_VERSIONS]],
                                               per_version=lineage.PER_VERSION) if version else []
        return lineage.learning_curve(chain, stored, verdicts, evaluation)

    def _judge(self, choice: JudgeChoice | None) -> Judge | None:
        """The judge of this evaluation, if it is judged: the model it names, the configured one, or the base model
        as the engine serves it."""
        config = self.config.judge
        if not (choice.on if choice is not None else config.enabled):
            return None
        model = (choice.model if choice is not None else "") or config.model or self._router.base_model_name
        return Judge(self._judge_client or self._client, model, config)

    async def _graded(self, judge: Judge, cases: Sequence[ev.GoldenCase], answers: Sequence[str],
                      tick: Callable[[], None]) -> list[JudgeVerdict]:
        gate = asyncio.Semaphore(self.config.eval_concurrency)

        async def one(case: ev.GoldenCase, answer: str) -> JudgeVerdict:
            async with gate:
                reference = case.references[0]
                if case.answers:
                    reference += f" (the key answer: {'; '.join(case.answers)})"
                verdict = await judge.grade(case.prompt, reference, answer, case.source)
                tick()
                return verdict

        return await _all([one(c, a) for c, a in zip(cases, answers, strict=True)])

    async def _answers(self, model: str, cases: Sequence[ev.GoldenCase], tick: Callable[[], None]) -> list[str]:
        gate = asyncio.Semaphore(self.config.eval_concurrency)

        async def one(case: ev.GoldenCase) -> str:
            async with gate:
                budget = ev.token_budget(case, self.config.eval_max_tokens)
                text = (await self._client.complete(model, case.prompt, max_tokens=budget, chat=case.chat)).text
                tick()
                return text

        return await _all([one(c) for c in cases])

    async def report(self, version: str, evaluation: str, file: str) -> tuple[EvalSummary, bytes, str]:
        """One stored report file of an evaluation of ``version`` ("": the base model itself; its latest when
        ``evaluation`` is empty): (the evaluation, the file's bytes, where it is stored); NotFound
        EVALUATION_NOT_FOUND without one."""
        base = self.config.base_model
        summary = await self._store.latest_eval(base, version, evaluation)
        if summary is None or not summary.id:
            which = f"evaluation {evaluation!r}" if evaluation else "evaluation with stored reports"
            raise NotFound("EVALUATION_NOT_FOUND", f"{ev.described(version)} has no {which}",
                           metadata={"version": version, "evaluation_id": evaluation})
        key = report_key(base, version, summary.id, file)
        return summary, await self._reports.get_bytes(key), self._reports.uri(key)


async def _all(coros: Sequence[Coroutine[object, object, T]]) -> list[T]:
    """Every coroutine's result, in order, run concurrently. On the first failure (a request failing, the
    progress callback raising Cancelled) or when the caller is cancelled, the others are cancelled and waited for
    before that error is raised: none still waiting for its turn goes on to ask the serving engine after the
    evaluation has ended (asyncio.gather alone would leave them running)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


BASE_MODEL_REPORTS = "base-model"  # the folder of the base model's own evaluations, beside its versions' folders


def report_key(base_model: str, version: str, evaluation: str, file: str) -> str:
    """Where one report file of an evaluation of ``version`` ("": the base model itself) is stored (the artifact
    store's key)."""
    return f"evaluations/{base_model}/{version or BASE_MODEL_REPORTS}/{evaluation}/{file}"


def refusal(summary: EvalSummary) -> FailedPrecondition:
    """EVAL_GATE_FAILED naming each failed check and the prompts that regressed in a failed suite."""
    named = [f"{s.name} no longer answers: " + "; ".join(repr(p) for p in s.regressed[:5])
             + (f" (+{s.regressions - 5} more)" if s.regressions > 5 else "")
             for s in summary.suites if not s.passed and s.regressed]
    return FailedPrecondition(
        "EVAL_GATE_FAILED",
        f"{summary.version} failed the eval gate: {'; '.join(summary.failed_checks)}"
        + "".join(f". {n}" for n in named) + " (set force to activate anyway)",
        metadata={"version": summary.version, "report": summary.report_uris[0] if summary.report_uris else "",
                  "regressions": str(summary.regressions),
                  "failed_suites": ",".join(s.name for s in summary.suites if not s.passed)},
    )
