"""The learning curve across a candidate's lineage: which score each version gets on each suite (its newest stored
evaluation that scored it), gaps where none did (never zeros), the base model first when it was evaluated itself,
the cap on the versions charted, and the curve in every report format."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from engine.domain import SuiteKind, SuiteVerdict
from engine.lora import evaluation as ev
from engine.lora import lineage
from engine.lora.eval_report import render_reports

K = SuiteKind


@dataclass(frozen=True)
class Stored:  # what the store returns (engine.lora.state.EvalSummary), as far as the curve reads it
    version: str
    id: str
    suites: tuple[SuiteVerdict, ...]


def verdict(name: str, kind: SuiteKind, value: float | None, cases: int = 4) -> SuiteVerdict:
    """A suite's verdict with its score: pass_rate (base: base_retention); None: not checked (no cases, or not
    measured)."""
    key = "base_retention" if kind is K.BASE else "pass_rate"
    metrics = () if value is None else ((key, value), ("baseline_" + key, 0.0))
    return SuiteVerdict(name=name, kind=kind, digest="", cases=0 if value is None else cases, metrics=metrics,
                        regressions=0, passed=True, failed_checks=())


def gate(quiz: float | None, target: float | None, retention: float | None,
         base: float | None) -> tuple[SuiteVerdict, ...]:
    return (verdict("quiz", K.GOLDEN, quiz), verdict("target", K.TARGET, target),
            verdict("retention", K.RETENTION, retention), verdict("base", K.BASE, base))


CHAIN = ["v1.2", "v1.1", "v1.0"]  # as the registry's lineage gives it: the candidate first
STORED = [  # newest first, as the store returns them
    Stored("v1.2", "e6", gate(0.0, 0.0, 0.0, 0.0)),  # the candidate's own earlier one: never read
    Stored("v1.0", "e5", (verdict("quiz", K.GOLDEN, 0.5),)),  # v1.0's newest: the quiz only
    Stored("", "e4", (verdict("quiz", K.GOLDEN, 0.25),)),  # the base model itself, on the quiz
    Stored("v1.0", "e3", gate(0.25, 0.75, None, 0.9)),  # v1.0's gate: the root has no retention cases
    Stored("v1.0", "e1", gate(0.0, 0.5, None, 0.9)),  # older: the newer one stands
]  # v1.1 was never evaluated
NOW = gate(1.0, 0.5, 0.75, 0.8)


def test_each_version_gets_its_newest_recorded_score_per_suite_and_gaps_stay_gaps():
    curve = lineage.learning_curve(CHAIN, STORED, NOW, "e7")
    assert curve.candidate == "v1.2" and curve.versions == ("", "v1.0", "v1.1", "v1.2") and curve.left_out == 0
    lines = {c.suite: (c.kind, c.scores, c.evaluations) for c in curve.suites}
    assert list(lines) == ["quiz", "target", "retention", "base"]  # the evaluation's suites, in its order
    assert lines["quiz"] == (K.GOLDEN, (0.25, 0.5, None, 1.0), ("e4", "e5", "", "e7"))
    assert lines["target"] == (K.TARGET, (None, 0.75, None, 0.5), ("", "e3", "", "e7"))  # from v1.0's gate
    assert lines["retention"] == (K.RETENTION, (None, None, None, 0.75), ("", "", "", "e7"))  # not checked: a gap
    assert lines["base"] == (K.BASE, (None, 0.9, None, 0.8), ("", "e3", "", "e7"))  # base retention
    assert [curve.evaluated(i) for i in range(4)] == [True, True, False, True]  # v1.1: not evaluated


def test_the_base_model_is_charted_only_when_it_was_evaluated_on_one_of_the_suites():
    without = lineage.learning_curve(CHAIN, [s for s in STORED if s.version], NOW, "e7")
    assert without.versions == ("v1.0", "v1.1", "v1.2")
    other = lineage.learning_curve(CHAIN, [Stored("", "e9", (verdict("other", K.GOLDEN, 1.0),))], NOW, "e7")
    assert other.versions == ("v1.0", "v1.1", "v1.2")  # evaluated on another suite only
    itself = lineage.learning_curve([""], [], (verdict("quiz", K.GOLDEN, 0.25),), "e8")  # the base model's own
    assert itself.versions == ("",) and itself.suites[0].scores == (0.25,)
    assert lineage.title(itself) == "learning curve across the lineage of base model"


def test_a_long_lineage_charts_its_newest_versions():
    chain = [f"v1.{i}" for i in range(34, -1, -1)]  # v1.34 continues v1.33 ... back to v1.0: 35 versions
    stored = [Stored("v1.0", "old", NOW), Stored("v1.5", "kept", NOW)]
    curve = lineage.learning_curve(chain, stored, NOW, "now")
    assert curve.versions == tuple(f"v1.{i}" for i in range(5, 35)) and curve.left_out == 5
    assert curve.suites[0].evaluations[:2] == ("kept", "")  # v1.0 is beyond the cap: not charted
    assert lineage.title(curve) == "learning curve across the lineage of v1.34 (its 30 newest versions of 35)"


def test_every_report_format_carries_the_curve():
    curve = lineage.learning_curve(CHAIN, STORED, NOW, "e7")
    report = ev.EvalReport("v1.2", "v1.1", NOW, ((),) * 4, datetime(2026, 1, 1, tzinfo=UTC), learning_curve=curve)
    files = render_reports(report)
    assert list(files) == ["report.json", "report.md", "report.html", "report.png", "lineage.png"]
    assert files["lineage.png"][:8] == b"\x89PNG\r\n\x1a\n" and files["lineage.png"] != files["report.png"]
    doc = json.loads(files["report.json"])["lineage"]
    assert doc["versions"] == ["", "v1.0", "v1.1", "v1.2"] and doc["left_out"] == 0
    assert doc["suites"][0] == {"suite": "quiz", "kind": "golden", "scores": [0.25, 0.5, None, 1.0],
                                "evaluations": ["e4", "e5", "", "e7"]}
    markdown = files["report.md"].decode()
    assert "## Learning curve across the lineage of v1.2" in markdown
    assert "| suite | base model | v1.0 | v1.1 | v1.2 |" in markdown
    assert "| quiz | 0.250 | 0.500 | - | 1.000 |" in markdown
    page = files["report.html"].decode()
    assert page.count("<img id=") == 2 and '<img id=lineage alt="learning curve across the lineage of v1.2' in page
    assert "<tr><td>retention</td><td>-</td><td>-</td><td>-</td><td>0.750</td></tr>" in page
    plain = render_reports(ev.EvalReport("v1.2", "v1.1", NOW, ((),) * 4, datetime(2026, 1, 1, tzinfo=UTC)))
    assert "lineage.png" not in plain and "id=lineage" not in plain["report.html"].decode()
