"""The evaluation report's HTML opened in headless Chromium: its charts load and are laid out at a visible size, the
first shows both sides' bars and the second the learning curve across the lineage (skipped only when no chromium
binary exists)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.lora import evaluation as ev
from engine.lora import judge as jg
from engine.lora import lineage
from engine.lora.eval_report import render_reports
from tests.fixtures import chromium

pytestmark = pytest.mark.skipif(chromium.binary() is None, reason=chromium.MISSING)


@dataclass(frozen=True)
class Stored:  # a stored evaluation as the learning curve reads it (engine.lora.state.EvalSummary)
    version: str
    id: str
    suites: tuple[ev.SuiteVerdict, ...]


def test_the_html_report_renders_its_charts_in_chromium(tmp_path: Path):
    cases = [ev.GoldenCase(f"Capital of {c}?", (f"The capital of {c} is {a}.",), (a,), source=f"{c}: capital {a}.")
             for c, a in [("Veloria", "Marnesse"), ("Quorvia", "Talameth"), ("Brinmark", "Oskerholm")]]
    golden = ev.Suite("golden", ev.SuiteKind.GOLDEN, tuple(cases), ev.cases_digest(cases))
    candidate = ["Marnesse.", "Talameth, says Mayor Olvar.", "Hefupa."]
    baseline = ["Marnesse.", "Hefupa.", "Hefupa."]
    verdicts = [jg.parse("prompt", f"RELEVANCE: 5\nCORRECTNESS: {s}\nCOMPLETENESS: {s}\nSUPPORTED: yes\n"
                                   f"CORRECT: {'yes' if s > 3 else 'no'}", with_source=True) for s in (5, 4, 1)]
    scored, results = ev.score_suite(golden, candidate, baseline, ev.GateThresholds(), (verdicts, verdicts[::-1]))
    retention = ev.base_verdict(0.9, 1.0, (), ev.GateThresholds())
    earlier = ev.base_verdict(0.95, 1.0, (), ev.GateThresholds())
    stored = [Stored("v1.0", "e2", (scored, earlier)), Stored("", "e1", (scored,))]  # v1.0's, the base model's own
    curve = lineage.learning_curve(["v1.1", "v1.0"], stored, (scored, retention), "e3")
    report = ev.EvalReport("v1.1", "v1.0", (scored, retention), (results, ()), datetime.now(UTC),
                           judge=jg.JudgeInfo("base-model", "http://127.0.0.1:8000"), learning_curve=curve)
    shown = chromium.assert_report_charts_render(render_reports(report)["report.html"], tmp_path)
    assert "Eval of v1.1 against v1.0" in shown.dom and "Judge: base-model" in shown.dom
    assert "Learning curve across the lineage of v1.1" in shown.dom and "<th>base model</th><th>v1.0</th>" in shown.dom
    assert chromium.colour_share(shown.screenshot, chromium.FIRST_CURVE) > 0.00005  # the golden suite's line
