"""The eval gate: a golden suite scored with exact match, token F1, BLEU and a regression count.

A suite is JSONL, one case per line: ``{"prompt": ..., "expected": ...}`` or
``{"prompt": ..., "references": [...]}`` (``reference`` works too). Candidate and baseline
answer every prompt greedily through the serving engine; scores are computed here.

- exact match: the normalised answer (lower case, collapsed whitespace, no trailing
  punctuation) equals a normalised reference;
- token F1: SQuAD-style overlap of whitespace tokens, best over the references;
- BLEU: sacrebleu corpus BLEU over the suite, scaled to 0..1;
- a case passes if it matches exactly or its token F1 reaches ``pass_f1``;
- a regression is a case whose token F1 fell by more than ``regression_tolerance``
  against the baseline.
The gate fails on more than ``max_regressions`` regressions, a mean token-F1 drop above
``max_mean_score_drop``, or a pass rate below ``min_pass_rate``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from engine.errors import FailedPrecondition, InvalidArgument

MAX_CASES = 10_000


@dataclass(frozen=True)
class GoldenCase:
    prompt: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class GateThresholds:
    max_regressions: int = 3
    max_mean_score_drop: float = 0.05
    min_pass_rate: float = 0.0
    pass_f1: float = 0.8
    regression_tolerance: float = 0.05


@dataclass(frozen=True)
class CaseResult:
    prompt: str
    references: tuple[str, ...]
    candidate: str
    baseline: str
    candidate_exact: float
    baseline_exact: float
    candidate_f1: float
    baseline_f1: float
    passed: bool
    regressed: bool


@dataclass(frozen=True)
class EvalReport:
    suite_digest: str
    version: str
    baseline_version: str
    metrics: tuple[tuple[str, float], ...]
    regressions: int
    passed: bool
    failed_checks: tuple[str, ...]
    cases: tuple[CaseResult, ...]
    time: datetime


def load_suite(path: Path) -> tuple[list[GoldenCase], str]:
    """The cases of a golden suite and the sha256 of its bytes; InvalidArgument on a bad line."""
    if not path.is_file():
        raise FailedPrecondition("EVAL_SUITE_MISSING", f"golden suite {path} does not exist",
                                 metadata={"path": str(path)})
    raw = path.read_bytes()
    cases: list[GoldenCase] = []
    for number, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            prompt = doc["prompt"]
            refs = doc.get("references") or [doc.get("expected", doc.get("reference"))]
            refs = tuple(str(r) for r in refs if r is not None)
            if not isinstance(prompt, str) or not prompt or not refs:
                raise ValueError("needs a non-empty 'prompt' and 'expected' or 'references'")
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument("EVAL_SUITE_INVALID", f"{path.name} line {number}: {exc}",
                                  metadata={"path": str(path), "line": str(number)}) from exc
        cases.append(GoldenCase(prompt, refs))
    if not cases or len(cases) > MAX_CASES:
        raise InvalidArgument("EVAL_SUITE_INVALID", f"{path.name} must hold 1..{MAX_CASES} cases, has {len(cases)}")
    return cases, hashlib.sha256(raw).hexdigest()


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(" .!?")


def exact_match(prediction: str, references: tuple[str, ...]) -> float:
    return 1.0 if normalise(prediction) in {normalise(r) for r in references} else 0.0


def token_f1(prediction: str, references: tuple[str, ...]) -> float:
    pred = normalise(prediction).split()
    best = 0.0
    for ref in references:
        gold = normalise(ref).split()
        if not pred or not gold:
            best = max(best, float(pred == gold))
            continue
        common = sum((Counter(pred) & Counter(gold)).values())
        if common:
            precision, recall = common / len(pred), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def corpus_bleu(predictions: list[str], references: list[tuple[str, ...]]) -> float:
    import sacrebleu  # noqa: PLC0415

    width = max(len(r) for r in references)
    streams = [[refs[i] if i < len(refs) else refs[0] for refs in references] for i in range(width)]
    return sacrebleu.corpus_bleu(predictions, streams).score / 100.0


def score(
    cases: list[GoldenCase], candidate: list[str], baseline: list[str], thresholds: GateThresholds, *,
    suite_digest: str, version: str, baseline_version: str, time: datetime,
) -> EvalReport:
    results = []
    for case, cand, base in zip(cases, candidate, baseline, strict=True):
        c_em, b_em = exact_match(cand, case.references), exact_match(base, case.references)
        c_f1, b_f1 = token_f1(cand, case.references), token_f1(base, case.references)
        results.append(CaseResult(
            prompt=case.prompt, references=case.references, candidate=cand, baseline=base,
            candidate_exact=c_em, baseline_exact=b_em, candidate_f1=c_f1, baseline_f1=b_f1,
            passed=c_em == 1.0 or c_f1 >= thresholds.pass_f1,
            regressed=b_f1 - c_f1 > thresholds.regression_tolerance,
        ))
    n = len(results)
    refs = [c.references for c in cases]
    metrics = {
        "exact_match": sum(r.candidate_exact for r in results) / n,
        "token_f1": sum(r.candidate_f1 for r in results) / n,
        "bleu": corpus_bleu(candidate, refs),
        "baseline_exact_match": sum(r.baseline_exact for r in results) / n,
        "baseline_token_f1": sum(r.baseline_f1 for r in results) / n,
        "baseline_bleu": corpus_bleu(baseline, refs),
        "pass_rate": sum(r.passed for r in results) / n,
    }
    metrics["mean_score_drop"] = metrics["baseline_token_f1"] - metrics["token_f1"]
    regressions = sum(r.regressed for r in results)
    failed = []
    if regressions > thresholds.max_regressions:
        failed.append(f"regressions {regressions} > max_regressions {thresholds.max_regressions}")
    if metrics["mean_score_drop"] > thresholds.max_mean_score_drop:
        failed.append(f"mean token-F1 drop {metrics['mean_score_drop']:.3f} > max_mean_score_drop "
                      f"{thresholds.max_mean_score_drop:g}")
    if metrics["pass_rate"] < thresholds.min_pass_rate:
        failed.append(f"pass rate {metrics['pass_rate']:.3f} < min_pass_rate {thresholds.min_pass_rate:g}")
    return EvalReport(
        suite_digest=suite_digest, version=version, baseline_version=baseline_version,
        metrics=tuple(metrics.items()), regressions=regressions, passed=not failed,
        failed_checks=tuple(failed), cases=tuple(results), time=time,
    )


def write_reports(report: EvalReport, out_dir: Path) -> list[Path]:
    """report.json, report.md and report.png (matplotlib, Agg) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = asdict(report)
    doc["time"] = report.time.isoformat()
    doc["metrics"] = dict(report.metrics)
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False))
    md_path = out_dir / "report.md"
    md_path.write_text(_markdown(report))
    png_path = out_dir / "report.png"
    _chart(report, png_path)
    return [json_path, md_path, png_path]


def _markdown(report: EvalReport) -> str:
    baseline = report.baseline_version or "base model"
    metrics = dict(report.metrics)
    lines = [
        f"# Eval of {report.version} against {baseline}", "",
        f"- suite sha256: `{report.suite_digest}`", f"- time: {report.time.isoformat()}",
        f"- gate: **{'PASSED' if report.passed else 'FAILED'}**"
        + (f" ({'; '.join(report.failed_checks)})" if report.failed_checks else ""),
        f"- regressions: {report.regressions} of {len(report.cases)} cases", "",
        "| metric | candidate | baseline |", "|---|---|---|",
    ]
    for name in ("exact_match", "token_f1", "bleu"):
        lines.append(f"| {name} | {metrics[name]:.4f} | {metrics['baseline_' + name]:.4f} |")
    lines += ["", f"pass rate {metrics['pass_rate']:.4f}, mean token-F1 drop {metrics['mean_score_drop']:.4f}", "",
              "| # | prompt | expected | candidate | baseline | F1 cand | F1 base | regressed |",
              "|---|---|---|---|---|---|---|---|"]

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")[:80]

    for i, c in enumerate(report.cases, start=1):
        lines.append(f"| {i} | {cell(c.prompt)} | {cell(c.references[0])} | {cell(c.candidate)} | "
                     f"{cell(c.baseline)} | {c.candidate_f1:.2f} | {c.baseline_f1:.2f} | "
                     f"{'yes' if c.regressed else ''} |")
    return "\n".join(lines) + "\n"


def _chart(report: EvalReport, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415

    metrics = dict(report.metrics)
    names = ["exact_match", "token_f1", "bleu"]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=80)
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [metrics["baseline_" + n] for n in names], width=0.4,
           label=report.baseline_version or "base model")
    ax.bar([x + 0.2 for x in xs], [metrics[n] for n in names], width=0.4, label=report.version)
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0, 1)
    ax.set_title(f"{report.version}: gate {'passed' if report.passed else 'FAILED'}, "
                 f"{report.regressions} regressions")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
