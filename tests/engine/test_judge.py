"""LLM-as-judge and the hallucination check: verdicts read from rambling replies, unsupported claims found against
the source, both as scores of a suite and checks of the gate, and a judge that is down or unreadable failing the
evaluation with UNAVAILABLE."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from engine.errors import InvalidArgument, Unavailable
from engine.lora import evaluation as ev
from engine.lora import grounding
from engine.lora import judge as jg
from engine.lora.eval_report import render_reports
from engine.serving.client import ServingClient, ServingConfig
from engine.serving.reference_backend import start_site

K = ev.SuiteKind
T = datetime(2026, 1, 1, tzinfo=UTC)
STRICT = "RELEVANCE: 5\nCORRECTNESS: 4\nCOMPLETENESS: 3\nSUPPORTED: yes\nCORRECT: yes"


@pytest.mark.parametrize(("raw", "expected"), [
    (STRICT, (5, 4, 3, True, True)),
    ("Sure! Here is my grade.\n**Relevance:** 4/5\n**Correctness:** 2 out of 5\n- Completeness = 3\n"
     "Supported: No, it invents a mayor.\nCorrect: no.", (4, 2, 3, False, False)),
    ("1. RELEVANCE: 2\n2. CORRECTNESS: 2\n3. COMPLETENESS: 2\n4. SUPPORTED: yes\n5. CORRECT: no\n"
     "On second thought:\nCORRECT: yes", (2, 2, 2, True, True)),  # a key said twice: the last one counts
    ("RELEVANCE (1 to 5): 5 if it addresses the question\nRELEVANCE: 3\nCORRECTNESS: 3\nCOMPLETENESS: 3\n"
     "SUPPORTED: true\nCORRECT: false", (3, 3, 3, True, False)),  # the rubric echoed is not a value
    ('```json\n{"relevance": 5, "correctness": "2", "completeness": 1, "supported": false, "correct": "no"}\n```',
     (5, 2, 1, False, False)),  # JSON instead of lines
    ('RELEVANCE: 4\n{"correctness": 3, "completeness": 3, "supported": "yes", "correct": true, "relevance": 1}',
     (4, 3, 3, True, True)),  # a line wins over JSON
])
def test_verdicts_are_read_from_rambling_replies(raw, expected):
    v = jg.parse("p", raw, with_source=True)
    assert v.parsed and (v.relevance, v.correctness, v.completeness, v.supported, v.correct) == expected
    assert v.raw == raw and v.prompt == "p"


@pytest.mark.parametrize(("raw", "problem"), [
    ("RELEVANCE: <1 to 5>\nCORRECTNESS: 1-5\nCOMPLETENESS: 3\nSUPPORTED: yes\nCORRECT: yes",
     "no readable RELEVANCE, CORRECTNESS"),  # the format echoed back
    ("RELEVANCE: 3.5\nCORRECTNESS: 5\nCOMPLETENESS: 9\nSUPPORTED: yes\nCORRECT: yes",
     "no readable RELEVANCE, COMPLETENESS"),  # out of the scale
    ("RELEVANCE: 5\nCORRECTNESS: 5\nCOMPLETENESS: 5\nCORRECT: yes", "no readable SUPPORTED"),
    ("The answer is good and correct.", "no readable RELEVANCE, CORRECTNESS, COMPLETENESS, SUPPORTED, CORRECT"),
    ('{"relevance": true, "correctness": 6, "completeness": 3, "supported": 1, "correct": "maybe"}',
     "no readable RELEVANCE, CORRECTNESS, SUPPORTED, CORRECT"),  # JSON of the wrong types or range
])
def test_unreadable_verdicts_are_counted_as_such(raw, problem):
    v = jg.parse("p", raw, with_source=True)
    assert not v.parsed and v.problem == problem and v.correct is None and v.score is None


def test_supported_is_only_asked_with_a_source():
    plain = jg.prompt_for("Capital of Varnia?", "Tegusu", "Tegusu")
    assert "SUPPORTED" not in plain and "Source text" not in plain and "RELEVANCE: <1 to 5>" in plain
    v = jg.parse(plain, "RELEVANCE: 5\nCORRECTNESS: 5\nCOMPLETENESS: 5\nCORRECT: yes", with_source=False)
    assert v.parsed and v.supported is None and v.score == 1.0
    sourced = jg.prompt_for("Q", "R", "A", "x" * (jg.MAX_SOURCE_CHARS + 10))
    assert "SUPPORTED: <yes or no>" in sourced and "[... 10 more characters not shown]" in sourced


def test_unsupported_claims():
    source = "Varnia's capital is Tegusu, home to 40,000 people, on the river Oss."
    assert grounding.unsupported("Tegusu.", source, "Capital of Varnia?") == ()
    assert grounding.unsupported("The capital is Tegusu's old town, with 40000 people.", source) == ()
    assert grounding.unsupported("Hefupa.", source, "Capital of Varnia?") == ("Hefupa",)  # a name opening it
    assert grounding.unsupported("It is Tegusu. It has 52,000 people and Mayor Olvar.", source) == (
        "52000", "Mayor", "Olvar")
    assert grounding.unsupported("Yes, it lies on the Oss.", source) == ()  # "Yes" opens it: no claim
    assert grounding.unsupported("it is hefupa", source) == ()  # lower case: what the check cannot see


def sourced_suite() -> ev.Suite:
    cases = [ev.GoldenCase("Capital of Varnia?", ("The capital of Varnia is Tegusu.",), ("Tegusu",),
                           source="Varnia's capital is Tegusu, on the river Oss."),
             ev.GoldenCase("River of Tegusu?", ("The Oss.",), ("Oss",), source="Tegusu lies on the river Oss."),
             ev.GoldenCase("Colour of the Orvel bird?", ("Saffron",))]
    return ev.Suite("golden", K.GOLDEN, tuple(cases), ev.cases_digest(cases))


def verdict(correct: bool, supported: bool | None = True, score: int = 5) -> jg.JudgeVerdict:
    return jg.JudgeVerdict("prompt", "raw", score, score, score, supported, correct)


def test_hallucination_rate_and_the_judge_in_the_gate():
    suite = sourced_suite()
    candidate = ["Tegusu, said Mayor Olvar.", "It is on the Oss.", "Deep orange-yellow"]
    baseline = ["Tegusu.", "The river Oss.", "Saffron"]
    plain, results = ev.score_suite(suite, candidate, baseline, ev.GateThresholds(max_mean_score_drop=1))
    m = dict(plain.metrics)
    assert m["sourced_cases"] == 2 and m["hallucination_rate"] == 0.5 and m["baseline_hallucination_rate"] == 0
    assert results[0].candidate_unsupported == ("Mayor", "Olvar") and results[0].candidate_hallucinated
    assert results[2].candidate_hallucinated is None  # no source: not counted
    assert "judge_score" not in m and plain.failed_checks == (
        "hallucination rate 0.500 of 2 sourced cases > max_hallucination_rate 0.2",)
    assert ev.score_suite(suite, candidate, baseline, ev.GateThresholds(max_hallucination_rate=0.5,
                                                                        max_mean_score_drop=1))[0].passed

    # The judge: "Deep orange-yellow" fails the span check, passes when the judge says correct; the judge's
    # SUPPORTED: no on case 2 counts as a hallucination too; an unparseable verdict passes nothing.
    unread = jg.JudgeVerdict("prompt", "I think it is fine", problem="no readable RELEVANCE")
    judged = ([verdict(True), verdict(True, supported=False, score=3), verdict(True, None, score=4)],
              [verdict(True), verdict(True), unread])
    with_judge, results = ev.score_suite(suite, candidate, baseline, ev.GateThresholds(
        max_hallucination_rate=1, min_judge_score=0.9, max_mean_score_drop=1), judged)
    m = dict(with_judge.metrics)
    assert [r.candidate_right for r in results] == [True, True, True]
    assert [r.baseline_right for r in results] == [True, True, True]  # "Saffron" is right without the judge
    assert m["hallucination_rate"] == 1.0 and m["pass_rate"] == 1.0
    assert m["judge_score"] == pytest.approx((1 + 0.5 + 0.75) / 3) and m["judge_correct"] == 1.0
    assert m["judge_unparseable"] == 0 and m["baseline_judge_unparseable"] == pytest.approx(1 / 3)
    assert m["baseline_judge_correct"] == pytest.approx(2 / 3) and m["baseline_judge_score"] == 1.0
    assert with_judge.failed_checks == ("judge score 0.750 < min_judge_score 0.9",)

    report = ev.EvalReport("v1.1", "v1.0", (with_judge,), (results,), T, judge=jg.JudgeInfo("base", "http://e"))
    rendered = render_reports(report)
    doc = json.loads(rendered["report.json"])
    assert doc["judge"]["model"] == "base" and doc["judge"]["rubric"] == jg.RUBRIC
    case = doc["suites"][0]["results"][2]
    assert case["candidate_judge"]["prompt"] == "prompt" and case["baseline_judge"]["raw"] == "I think it is fine"
    assert "source" not in case and doc["suites"][0]["results"][0]["candidate_hallucinated"] is True
    md = rendered["report.md"].decode()
    assert "| 3 | Colour of the Orvel bird? | Saffron | Deep orange-yellow | Saffron | yes (judge) / yes |" in md
    assert "| Tegusu, said Mayor Olvar. | Tegusu. | yes / yes |" in md  # the span: right without the judge
    assert "R5 C5 P5 correct supported / R5 C5 P5 correct supported | Mayor, Olvar / - |" in md
    assert "- 3 baseline (no readable RELEVANCE): `I think it is fine`" in md
    page = rendered["report.html"].decode()
    assert "<summary>baseline: unparseable</summary>" in page and "hallucination rate 1.000" in page
    assert 'alt="answered right, judge score, hallucination rate per suite' in page


def test_a_suite_carries_its_source_and_bad_lines_are_named(tmp_path: Path):
    path = tmp_path / "suite.jsonl"
    path.write_text('{"prompt": "a", "expected": "b", "source": "b is here"}\n'
                    '{"prompt": "c", "expected": "d", "context": "d too"}\n')
    cases, _ = ev.load_suite(path)
    assert [c.source for c in cases] == ["b is here", "d too"]
    path.write_text('{"prompt": "a", "expected": "b", "source": ""}\nnot json\n{"expected": "x"}\n'
                    '{"prompt": "a", "expected": "b", "source": "s", "context": "t"}\n')
    with pytest.raises(InvalidArgument) as err:
        ev.load_suite(path)
    assert err.value.reason == "EVAL_SUITE_INVALID"
    assert [v.field for v in err.value.violations] == ["line[1].source", "line[2]", "line[3].prompt",
                                                       "line[4].context"]
    assert err.value.message.startswith("suite.jsonl line 1.source: 'source' must be a non-empty string")


async def judge_engine(reply):
    """A serving engine whose /v1/chat/completions answers with ``reply(prompt)``; records the requests."""
    asked: list[dict] = []

    async def complete(request: web.Request) -> web.Response:
        body = await request.json()
        asked.append(body)
        if body["model"] == "absent":  # as the reference backend and MAX answer for a model they do not serve
            return web.json_response({"error": {"code": "404", "message": "model 'absent' does not exist"}},
                                     status=404)
        return web.json_response({"choices": [{"message": {"content": reply(body["messages"][0]["content"])}}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", complete)
    runner, port = await start_site(app, "127.0.0.1", 0)
    return runner, f"http://127.0.0.1:{port}", asked


async def test_the_judge_asks_the_served_model_and_fails_loudly():
    runner, url, asked = await judge_engine(lambda prompt: "Well.\n" + STRICT if "Tegusu" in prompt else "Hmm")
    try:
        async with ServingClient(ServingConfig(base_url=url, retries=0)) as client:
            judge = jg.Judge(client, "judge-model", jg.JudgeConfig(max_tokens=40, max_unparseable=0.5))
            good = await judge.grade("Capital?", "Tegusu", "Tegusu", "Varnia's capital is Tegusu.")
            assert good.parsed and good.correct and good.supported
            assert asked[0]["model"] == "judge-model" and asked[0]["max_tokens"] == 40
            assert asked[0]["temperature"] == 0 and asked[0]["messages"][0]["content"] == good.prompt
            bad = await judge.grade("Capital?", "Hefupa", "Hefupa")
            assert not bad.parsed and bad.raw == "Hmm"
            judge.check("golden", [good, bad])  # half unreadable: at the limit, counted, not fatal
            with pytest.raises(Unavailable) as err:
                judge.check("golden", [good, bad, bad])
            assert err.value.reason == "JUDGE_UNPARSEABLE" and err.value.metadata["unparseable"] == "2"
            assert "2 of 3 verdicts of suite golden" in err.value.message and "'Hmm'" in err.value.message
            with pytest.raises(Unavailable) as err:  # a model the engine does not serve
                await jg.Judge(client, "absent", jg.JudgeConfig()).grade("Q", "R", "A")
            assert err.value.reason == "JUDGE_UNAVAILABLE" and err.value.metadata["cause"] == "LORA_NOT_LOADED"
            assert "model 'absent' does not exist" in err.value.message
    finally:
        await runner.cleanup()
    async with ServingClient(ServingConfig(base_url=url, retries=0, timeout_seconds=2)) as client:
        with pytest.raises(Unavailable) as err:  # the engine is gone
            await jg.Judge(client, "judge-model", jg.JudgeConfig()).grade("Q", "R", "A")
    assert err.value.reason == "JUDGE_UNAVAILABLE" and err.value.metadata["cause"] == "SERVING_UNAVAILABLE"
    assert err.value.metadata["judge_model"] == "judge-model"


def test_words_float_reads_are_names_not_numbers():
    """float() reads "Infinity", "NaN" and "inf": as numbers their case was kept, so an answer's "Infinity" was not
    found in a source's "infinity" (names are compared lower-cased), and "Nan" was a number, not a name."""
    source = "The loop runs to infinity; Nan Olvar wrote it in 1,204."
    assert grounding.unsupported("It runs to Infinity.", source) == ()
    assert grounding.unsupported("Nan Olvar wrote it in 1204.", source) == ()
    assert grounding.claims("Nan wrote 3.5 pages in 1_000 days.") == ["Nan", "3.5"]
