"""The gate: suites of cases scored on the answer, one verdict per suite, and the report (rendered by
engine.lora.eval_report).

A golden suite is JSONL, one case per line: ``{"prompt": ..., "expected": ...}`` or
``{"prompt": ..., "references": [...]}`` (``reference`` works too), optionally with ``"answer"`` (a string
or a list): the answer-bearing span, e.g. ``"Tegusu"`` for the reference "The capital of X is Tegusu". The
format and its parser are engine.golden's, shared with the golden dataset versions that store it.
Candidate and baseline answer every prompt greedily through the serving engine; scores are computed here.

A case is answered right when the normalised answer (SQuAD normalisation: lower case, no punctuation, no
articles, collapsed whitespace; punctuation is ASCII's and Unicode's, so typographic quotes and apostrophes and a
CJK full stop are dropped as '"' and "." are) equals a normalised reference, or contains one of its answer spans as
whole words. A reference that normalisation empties (only an article, as the option "A") is compared, the answer
too, with the articles kept; an answer without words is never right. A case without an ``answer`` uses its full
references as spans, so "The capital of X is Y" never passes for "The capital of X is Z", however many words the
two share. Token F1 and BLEU (sacrebleu) are reported beside it and decide nothing but the golden suite's
mean-drop check.

A regression is a case the baseline answers right and the candidate does not. What each kind of suite asks
(:class:`SuiteKind`):

- golden (the operator's suite): a pass rate of at least ``min_pass_rate``, at most ``max_regressions``
  regressions, a mean token-F1 drop of at most ``max_mean_score_drop``;
- target (the candidate's own data): the candidate answers more of it right than the baseline does (or all
  of it);
- retention (the data of the candidate's ancestors): of the cases the baseline answers right, the candidate
  loses at most ``max_forgetting``;
- base (the base model's general knowledge, as measured on each version after training): the candidate's
  base retention is at most ``max_base_forgetting`` below the baseline's (the base model's own is 1).

The gate passes when every suite does. "At most" and "at least" include the threshold: every threshold is compared
through :func:`engine.thresholds.at_most` and :func:`engine.thresholds.at_least`, which count a rounding
error as on it.

A file suite is named by its file's stem; the gate's names (GATE_SUITES) and a stem named twice are refused before
anything runs (:func:`check_suite_names`), as suites are told apart by name alone.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path, PurePath

from engine.domain import SuiteKind, SuiteVerdict
from engine.errors import FailedPrecondition, InvalidArgument, ViolationCollector
from engine.golden import GoldenCase, cases_digest, read_cases
from engine.lora import lineage
from engine.lora.grounding import APOSTROPHES, unsupported
from engine.lora.judge import JudgeInfo, JudgeVerdict
from engine.thresholds import at_least, at_most

MAX_CASES = 10_000
MAX_NAMED_REGRESSIONS = 20  # prompts listed per suite on the version and in the operation

# re-exported: the gate's vocabulary lives in engine.domain, the golden-case format in engine.golden
__all__ = ["GoldenCase", "SuiteKind", "SuiteVerdict", "cases_digest"]

GATE_SUITES = ("target", "retention", "base")  # the names of the gate's own suites (engine.lora.suites, base_verdict)


@dataclass(frozen=True)
class Suite:
    name: str
    kind: SuiteKind
    cases: tuple[GoldenCase, ...]
    digest: str
    note: str = ""  # where the cases come from, and what was left out


@dataclass(frozen=True)
class GateThresholds:
    min_pass_rate: float = 0.5
    max_regressions: int = 3
    max_mean_score_drop: float = 0.05
    max_forgetting: float = 0.1
    max_base_forgetting: float = 0.1
    max_hallucination_rate: float = 0.2  # any suite whose cases carry a source
    min_judge_score: float = 0.0  # golden suites, when the judge is on; 0: not checked


@dataclass(frozen=True)
class CaseResult:
    prompt: str
    references: tuple[str, ...]
    candidate: str
    baseline: str
    candidate_right: bool
    baseline_right: bool
    candidate_f1: float
    baseline_f1: float
    source: str = ""
    candidate_unsupported: tuple[str, ...] = ()  # claims of the answer its source does not hold (engine.lora.grounding)
    baseline_unsupported: tuple[str, ...] = ()
    candidate_judge: JudgeVerdict | None = None  # None: the judge is off
    baseline_judge: JudgeVerdict | None = None
    candidate_by_judge: bool = False  # right only because the judge says it is correct
    baseline_by_judge: bool = False

    @property
    def regressed(self) -> bool:
        return self.baseline_right and not self.candidate_right

    @property
    def candidate_hallucinated(self) -> bool | None:
        """None when the case has no source; else whether either check finds an unsupported claim."""
        return _hallucinated(self.source, self.candidate_unsupported, self.candidate_judge)

    @property
    def baseline_hallucinated(self) -> bool | None:
        return _hallucinated(self.source, self.baseline_unsupported, self.baseline_judge)


def _hallucinated(source: str, unsupported: tuple[str, ...], judge: JudgeVerdict | None) -> bool | None:
    if not source:
        return None
    return bool(unsupported) or (judge is not None and judge.supported is False)


def described(version: str) -> str:
    """A candidate or baseline as reports and messages name it: the version, or "the base model" for ""."""
    return version or "the base model"


@dataclass(frozen=True)
class EvalReport:
    version: str  # "": the base model itself
    baseline_version: str  # "": the base model
    suites: tuple[SuiteVerdict, ...]
    results: tuple[tuple[CaseResult, ...], ...]  # per suite, in the order of ``suites``
    time: datetime
    judge: JudgeInfo | None = None  # who graded the answers, when the judge is on
    learning_curve: lineage.LearningCurve | None = None  # the candidate's scores across its lineage

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.suites)

    @property
    def failed_checks(self) -> tuple[str, ...]:
        return tuple(f"{s.name}: {check}" for s in self.suites for check in s.failed_checks)

    @property
    def regressions(self) -> int:
        return sum(s.regressions for s in self.suites)

    @property
    def digest(self) -> str:
        """One digest over the suites scored (name and digest of each)."""
        return hashlib.sha256("\n".join(f"{s.name}:{s.digest}" for s in self.suites).encode()).hexdigest()

    @property
    def metrics(self) -> tuple[tuple[str, float], ...]:
        """Every suite's metrics, named ``<suite>.<metric>``."""
        return tuple((f"{s.name}.{name}", value) for s in self.suites for name, value in s.metrics)


def evaluation_basis(suites: Sequence[Suite], base: bool, thresholds: GateThresholds, max_tokens: int,
                     judge: JudgeInfo | None) -> str:
    """A digest of what a verdict rests on besides the two versions' weights: the suites scored, whether base
    retention was checked, the thresholds, the answers' token budget and the judge. Versions are immutable and
    answers greedy, so an evaluation of the same two versions on the same basis gives the same verdict."""
    doc = {"suites": [[s.name, s.digest] for s in suites], "base": base, "thresholds": asdict(thresholds),
           "max_tokens": max_tokens, "judge": asdict(judge) if judge is not None else None}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def suite_name(path: str | PurePath) -> str:
    """The name of a golden file's suite: its file's stem (``week2/golden.jsonl`` is "golden")."""
    return PurePath(path).stem


def reserved_suite_name(path: str | PurePath) -> str:
    """Why ``path`` cannot be a golden file: its suite name (:func:`suite_name`) is one of the gate's own suites'
    (GATE_SUITES); "" when it is not."""
    name = suite_name(path)
    if name not in GATE_SUITES:
        return ""
    return (f"names its suite {name!r} (its file's stem), the name of one of the gate's own suites "
            f"({', '.join(GATE_SUITES)}): rename the file")


def check_suite_names(issues: ViolationCollector, paths: Sequence[str | PurePath], field: str) -> None:
    """A violation on ``{field}[i]`` for each golden file whose suite name (:func:`suite_name`) is one of the gate's
    own suites' (GATE_SUITES: :func:`reserved_suite_name`) or repeats an earlier file's. The suites of an evaluation
    are told apart by name alone: in its failed checks, its report and the learning curve, which charts a version's
    score on a suite from whichever stored evaluation has a suite of that name (engine.lora.lineage). The gate's
    names are reserved even where the gate does not run (the base model itself), as the curve's first point comes
    from there. Every entry point that takes suite paths calls this before anything runs (EvaluateAdapter, whose
    one ``suite_path`` cannot repeat another, :func:`reserved_suite_name`), and the configured suite (the
    ``eval_suite_path`` setting) is checked so when the settings are read. (A stored dataset's suite is named by
    its version, ``datasets/...``, which no file's stem can be; two naming one version score the same cases.)"""
    seen: dict[str, int] = {}
    for i, path in enumerate(paths):
        name = suite_name(path)
        if reserved := reserved_suite_name(path):
            issues.add(f"{field}[{i}]", reserved)
        elif name in seen:
            issues.add(f"{field}[{i}]", f"names its suite {name!r}, as {field}[{seen[name]}] does: suites are told "
                                        "apart by name (a file's by its stem), rename one")
        else:
            seen[name] = i


def load_suite(path: Path) -> tuple[list[GoldenCase], str]:
    """The cases of a golden suite and the sha256 of its bytes; InvalidArgument with a ``line[N].field`` violation
    for each bad line (the first 20), ``line[N]`` alone for one that is not UTF-8 (read as a golden dataset's lines
    are: a Latin-1 "München" would otherwise be read as "M\ufffdnchen", which no answer matches)."""
    if not path.is_file():
        raise FailedPrecondition("EVAL_SUITE_MISSING", f"golden suite {path} does not exist",
                                 metadata={"path": str(path)})
    raw = path.read_bytes()
    cases, bad = read_cases(raw.splitlines())  # bytes: a line that is not UTF-8 is a bad line, never "repaired"
    if bad:
        first = bad[0]
        raise InvalidArgument(
            "EVAL_SUITE_INVALID", f"{path.name} {first.field.replace('[', ' ').replace(']', '')}: "
            f"{first.description}" + (f" (+{len(bad) - 1} more bad lines)" if len(bad) > 1 else ""),
            violations=bad[:20], metadata={"path": str(path), "line": first.field[5:].split("]")[0]},
        )
    if not cases or len(cases) > MAX_CASES:
        raise InvalidArgument("EVAL_SUITE_INVALID", f"{path.name} must hold 1..{MAX_CASES} cases, has {len(cases)}")
    return cases, hashlib.sha256(raw).hexdigest()


class _Unpunctuated(dict[int, int | None]):
    """A str.translate table that drops punctuation: ASCII's (string.punctuation, as SQuAD's normalisation does,
    symbols such as "$" and "|" included), every Unicode punctuation character (category P*: typographic quotes
    “ ” ‘ ’ « », dashes, the CJK full stop and comma 。 、, the full-width forms) and the apostrophes that are not
    punctuation (engine.lora.grounding.APOSTROPHES: "ʼ" is a letter, "´" a symbol), so "“Tegusu”." and "It’s"
    compare as "Tegusu" and "It's" do. Filled in per character as texts meet them."""

    def __missing__(self, code: int) -> int | None:
        char = chr(code)
        kept = None if (char in string.punctuation or char in APOSTROPHES
                        or unicodedata.category(char).startswith("P")) else code
        self[code] = kept
        return kept


_PUNCTUATION = _Unpunctuated()


def _unpunctuated(text: str) -> str:
    """Lower case, no punctuation (:class:`_Unpunctuated`)."""
    return text.lower().translate(_PUNCTUATION)


def normalise(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation (Unicode's too), no articles, collapsed
    whitespace."""
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", _unpunctuated(text)).split())


def _words(text: str) -> str:
    """Lower case, no punctuation, collapsed whitespace: SQuAD's normalisation with the articles kept."""
    return " ".join(_unpunctuated(text).split())


def _compared(prediction: str, reference: str) -> tuple[str, str]:
    """The prediction and the reference as they are compared: normalised, or, when normalising leaves nothing of
    the reference (one that is only an article, such as the option "A"), both with their articles kept, so the
    reference is still compared by its letters and an answer of articles and punctuation does not equal it."""
    if ref := normalise(reference):
        return normalise(prediction), ref
    return _words(prediction), _words(reference)


def token_budget(case: GoldenCase, floor: int) -> int:
    """Tokens to let a model answer ``case``: ``floor``, or enough for its longest reference (about three
    characters a token, so a right answer is never cut short), at most 256."""
    return max(floor, min(256, max(len(r) for r in case.references) // 3 + 8))


def exact_match(prediction: str, references: tuple[str, ...]) -> float:
    """1 when the answer equals a reference (as :func:`_compared` forms them); an empty answer never does."""
    return 1.0 if any(said and said == ref for said, ref in (_compared(prediction, r) for r in references)) else 0.0


def answered(prediction: str, case: GoldenCase) -> bool:
    """Exact match, or an answer span (the references when the case names none) present as whole words."""
    if exact_match(prediction, case.references):
        return True
    return any(span and f" {span} " in f" {said} "
               for said, span in (_compared(prediction, s) for s in case.answers or case.references))


def token_f1(prediction: str, references: tuple[str, ...]) -> float:
    """The best token F1 over the references; 0 for an answer without words, whatever the reference."""
    best = 0.0
    for ref in references:
        said, gold = (text.split() for text in _compared(prediction, ref))
        common = sum((Counter(said) & Counter(gold)).values())
        if common:
            precision, recall = common / len(said), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def corpus_bleu(predictions: list[str], references: list[tuple[str, ...]]) -> float:
    import sacrebleu  # noqa: PLC0415

    width = max(len(r) for r in references)
    streams = [[refs[i] if i < len(refs) else refs[0] for refs in references] for i in range(width)]
    return sacrebleu.corpus_bleu(predictions, streams).score / 100.0


Verdicts = Sequence[JudgeVerdict]


def score_suite(suite: Suite, candidate: list[str], baseline: list[str], thresholds: GateThresholds,
                judged: tuple[Verdicts, Verdicts] | None = None) -> tuple[SuiteVerdict, tuple[CaseResult, ...]]:
    """The suite's verdict from both models' answers to its cases (in order) and, when the judge is on, its
    verdicts on them (candidate's, baseline's); a suite without cases passes, with a note saying it was not
    checked. With a judge, a case is also answered right when the judge says it is correct."""
    if not suite.cases:
        return SuiteVerdict(name=suite.name, kind=suite.kind, digest=suite.digest, cases=0, metrics=(),
                            regressions=0, passed=True, failed_checks=(),
                            note=f"not checked: no cases ({suite.note})" if suite.note else "not checked: no cases"), ()
    n = len(suite.cases)
    cand_judged, base_judged = judged if judged is not None else ([None] * n, [None] * n)

    def by_judge(answer: str, case: GoldenCase, verdict: JudgeVerdict | None) -> bool:
        return verdict is not None and verdict.correct is True and not answered(answer, case)

    results = tuple(
        CaseResult(
            prompt=case.prompt, references=case.references, candidate=cand, baseline=base,
            candidate_right=answered(cand, case) or by_judge(cand, case, cj),
            baseline_right=answered(base, case) or by_judge(base, case, bj),
            candidate_by_judge=by_judge(cand, case, cj), baseline_by_judge=by_judge(base, case, bj),
            candidate_f1=token_f1(cand, case.references), baseline_f1=token_f1(base, case.references),
            source=case.source,
            candidate_unsupported=unsupported(cand, case.source, case.prompt) if case.source else (),
            baseline_unsupported=unsupported(base, case.source, case.prompt) if case.source else (),
            candidate_judge=cj, baseline_judge=bj,
        )
        for case, cand, base, cj, bj in zip(suite.cases, candidate, baseline, cand_judged, base_judged, strict=True)
    )
    refs = [c.references for c in suite.cases]
    known = sum(r.baseline_right for r in results)
    regressed = [r.prompt for r in results if r.regressed]
    metrics = {
        "pass_rate": sum(r.candidate_right for r in results) / n,
        "baseline_pass_rate": known / n,
        "exact_match": sum(exact_match(r.candidate, r.references) for r in results) / n,
        "baseline_exact_match": sum(exact_match(r.baseline, r.references) for r in results) / n,
        "token_f1": sum(r.candidate_f1 for r in results) / n,
        "baseline_token_f1": sum(r.baseline_f1 for r in results) / n,
        "bleu": corpus_bleu(candidate, refs),
        "baseline_bleu": corpus_bleu(baseline, refs),
    }
    metrics["mean_score_drop"] = metrics["baseline_token_f1"] - metrics["token_f1"]
    metrics["forgetting"] = len(regressed) / known if known else 0.0
    sourced = [r for r in results if r.source]
    if sourced:
        metrics["sourced_cases"] = float(len(sourced))
        metrics["hallucination_rate"] = sum(bool(r.candidate_hallucinated) for r in sourced) / len(sourced)
        metrics["baseline_hallucination_rate"] = sum(bool(r.baseline_hallucinated) for r in sourced) / len(sourced)
    if judged is not None:
        for side, verdicts in (("", cand_judged), ("baseline_", base_judged)):
            metrics.update({side + k: v for k, v in _judge_metrics(verdicts).items()})
    failed = _checks(suite.kind, metrics, len(regressed), thresholds)
    verdict = SuiteVerdict(
        name=suite.name, kind=suite.kind, digest=suite.digest, cases=n, metrics=tuple(metrics.items()),
        regressions=len(regressed), passed=not failed, failed_checks=tuple(failed),
        regressed=tuple(regressed[:MAX_NAMED_REGRESSIONS]), note=suite.note,
    )
    return verdict, results


def _judge_metrics(verdicts: Sequence[JudgeVerdict | None]) -> dict[str, float]:
    """judge_score (the mean rubric score, 0..1), each criterion's mean, judge_correct (the share of cases the
    judge calls correct) and judge_unparseable (the share it gave no readable verdict on)."""
    n = len(verdicts)
    read = [v for v in verdicts if v is not None and v.parsed]
    out = {"judge_unparseable": (n - len(read)) / n, "judge_correct": sum(v.correct is True for v in read) / n}
    if read:
        out["judge_score"] = sum(v.score or 0.0 for v in read) / len(read)
        for name in ("relevance", "correctness", "completeness"):
            out[f"judge_{name}"] = sum((getattr(v, name) - 1) / 4 for v in read) / len(read)
    return out




def _checks(kind: SuiteKind, m: dict[str, float], regressions: int, t: GateThresholds) -> list[str]:
    failed = []
    if kind is SuiteKind.GOLDEN:
        if not at_least(m["pass_rate"], t.min_pass_rate):
            failed.append(f"pass rate {m['pass_rate']:.3f} < min_pass_rate {t.min_pass_rate:g}")
        if regressions > t.max_regressions:
            failed.append(f"regressions {regressions} > max_regressions {t.max_regressions}")
        if not at_most(m["mean_score_drop"], t.max_mean_score_drop):
            failed.append(f"mean token-F1 drop {m['mean_score_drop']:.3f} > max_mean_score_drop "
                          f"{t.max_mean_score_drop:g}")
        if t.min_judge_score > 0 and "judge_unparseable" in m and not at_least(m.get("judge_score", 0.0),
                                                                               t.min_judge_score):
            failed.append(f"judge score {m.get('judge_score', 0.0):.3f} < min_judge_score {t.min_judge_score:g}")
    elif kind is SuiteKind.TARGET:
        # both rates are counts over the same cases: compared exactly (an improvement is one more case right)
        if m["pass_rate"] <= m["baseline_pass_rate"] and m["pass_rate"] < 1.0:
            failed.append(f"no improvement on its own data: pass rate {m['pass_rate']:.3f}, "
                          f"baseline {m['baseline_pass_rate']:.3f}")
    elif kind is SuiteKind.RETENTION and not at_most(m["forgetting"], t.max_forgetting):
        failed.append(f"forgot {m['forgetting']:.3f} of what the baseline answers ({regressions} cases) > "
                      f"max_forgetting {t.max_forgetting:g}")
    if "hallucination_rate" in m and not at_most(m["hallucination_rate"], t.max_hallucination_rate):
        failed.append(f"hallucination rate {m['hallucination_rate']:.3f} of {m['sourced_cases']:.0f} sourced cases "
                      f"> max_hallucination_rate {t.max_hallucination_rate:g}")
    return failed


def base_verdict(candidate: float | None, baseline: float | None, lost: Sequence[str],
                 thresholds: GateThresholds) -> SuiteVerdict:
    """The base-knowledge suite's verdict from the base retention measured on each version after training
    (1.0 for the base model itself); it passes with a note when either was not measured."""
    if candidate is None or baseline is None:
        which = "the candidate" if candidate is None else "the baseline"
        return SuiteVerdict(name="base", kind=SuiteKind.BASE, digest="", cases=0, metrics=(), regressions=0,
                            passed=True, failed_checks=(),
                            note=f"not checked: the base retention of {which} was not measured")
    drop = baseline - candidate
    failed = () if at_most(drop, thresholds.max_base_forgetting) else (
        f"base retention {candidate:.3f} is {drop:.3f} below the baseline's {baseline:.3f} > "
        f"max_base_forgetting {thresholds.max_base_forgetting:g}",)
    return SuiteVerdict(
        name="base", kind=SuiteKind.BASE, digest="", cases=0,
        metrics=(("base_retention", candidate), ("baseline_base_retention", baseline), ("base_forgetting", drop)),
        regressions=0, passed=not failed, failed_checks=failed, regressed=tuple(lost[:MAX_NAMED_REGRESSIONS]),
        note="the base model's general questions, measured on each version after training",
    )
