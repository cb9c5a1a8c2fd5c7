"""The gate's report of one evaluation (engine.lora.evaluation's :class:`EvalReport`), rendered: JSON, Markdown, a
self-contained HTML page and the charts as PNG, the files an evaluation stores beside its version."""

from __future__ import annotations

import json
from dataclasses import asdict

from engine.domain import SuiteKind, SuiteVerdict
from engine.lora import lineage
from engine.lora.evaluation import CaseResult, EvalReport, described
from engine.lora.judge import RUBRIC, SUPPORTED_RULE, JudgeVerdict


def _result_doc(r: CaseResult) -> dict[str, object]:
    doc = asdict(r)
    doc["regressed"] = r.regressed
    if r.source:
        doc["candidate_hallucinated"], doc["baseline_hallucinated"] = r.candidate_hallucinated, r.baseline_hallucinated
    else:
        for key in ("source", "candidate_unsupported", "baseline_unsupported"):
            del doc[key]
    if r.candidate_judge is None:
        for key in ("candidate_judge", "baseline_judge", "candidate_by_judge", "baseline_by_judge"):
            del doc[key]
    return doc


def render_reports(report: EvalReport) -> dict[str, bytes]:
    """The report as JSON, Markdown, a self-contained HTML page (its charts inlined) and the charts as PNG: the
    suites' bars (report.png) and, with the report's lineage, the learning curve across it (lineage.png)."""
    doc: dict[str, object] = {
        "version": report.version, "base_model_itself": not report.version,
        "baseline_version": report.baseline_version, "time": report.time.isoformat(),
        "passed": report.passed, "failed_checks": list(report.failed_checks), "regressions": report.regressions,
    }
    if report.judge is not None:
        doc["judge"] = {**asdict(report.judge), "rubric": RUBRIC, "supported_rule": SUPPORTED_RULE}
    doc["suites"] = [
        {**asdict(s), "metrics": dict(s.metrics), "results": [_result_doc(r) for r in results]}
        for s, results in zip(report.suites, report.results, strict=True)
    ]
    png = _chart(report)
    curve = lineage.chart(report.learning_curve) if report.learning_curve is not None else b""
    if report.learning_curve is not None:
        doc["lineage"] = lineage.as_doc(report.learning_curve)
    return {
        "report.json": json.dumps(doc, indent=2, ensure_ascii=False).encode(),
        "report.md": _markdown(report).encode(),
        "report.html": _html(report, png, curve).encode(),
        "report.png": png,
        **({"lineage.png": curve} if curve else {}),
    }


def _labels(report: EvalReport) -> tuple[str, str]:
    return f"candidate {report.version or 'base model'}", f"baseline {report.baseline_version or 'base model'}"


def _grade(v: JudgeVerdict | None) -> str:
    """One judge verdict in a few characters: "R4 C5 P3 correct", or "unparseable"."""
    if v is None:
        return "-"
    if not v.parsed:
        return "unparseable"
    said = f"R{v.relevance} C{v.correctness} P{v.completeness} {'correct' if v.correct else 'incorrect'}"
    return said + ("" if v.supported is None else " supported" if v.supported else " UNSUPPORTED")


def _right(r: CaseResult) -> str:
    """ "yes / no": whether the candidate, then the baseline, answered right ("yes (judge)": by the judge's word)."""
    return " / ".join("no" if not right else "yes (judge)" if judged else "yes"
                      for right, judged in ((r.candidate_right, r.candidate_by_judge),
                                            (r.baseline_right, r.baseline_by_judge)))


def _quality(s: SuiteVerdict) -> str:
    """The suite's judge and hallucination figures in one line; "" when it has neither."""
    m = dict(s.metrics)
    said = []
    if "judge_unparseable" in m:
        score = f"{m['judge_score']:.3f}" if "judge_score" in m else "-"
        theirs = f"{m['baseline_judge_score']:.3f}" if "baseline_judge_score" in m else "-"
        said.append(f"judge score {score} (baseline {theirs}), judged correct {m['judge_correct']:.3f} "
                    f"({m['baseline_judge_correct']:.3f}), unparseable verdicts {m['judge_unparseable']:.3f} "
                    f"({m['baseline_judge_unparseable']:.3f})")
    if "hallucination_rate" in m:
        said.append(f"hallucination rate {m['hallucination_rate']:.3f} (baseline "
                    f"{m['baseline_hallucination_rate']:.3f}) over {m['sourced_cases']:.0f} cases with a source")
    return "; ".join(said)


def _markdown(report: EvalReport) -> str:
    candidate, baseline = _labels(report)
    lines = [
        f"# Eval of {described(report.version)} against {described(report.baseline_version)}", "",
        f"- time: {report.time.isoformat()}",
        f"- gate: **{'PASSED' if report.passed else 'FAILED'}**"
        + (f" ({'; '.join(report.failed_checks)})" if report.failed_checks else ""),
        f"- regressions: {report.regressions}",
    ]
    if report.judge is not None:
        lines.append(f"- judge: {report.judge.model} at {report.judge.target} (rubric {report.judge.rubric_digest}; "
                     "R relevance, C correctness, P completeness, 1 to 5; every prompt and raw verdict in report.json)")
    lines += ["", f"| suite | kind | cases | {candidate} | {baseline} | verdict |", "|---|---|---|---|---|---|"]
    for s in report.suites:
        m = dict(s.metrics)
        key = "base_retention" if s.kind is SuiteKind.BASE else "pass_rate"
        cand = f"{m[key]:.3f}" if key in m else "-"
        base = f"{m['baseline_' + key]:.3f}" if "baseline_" + key in m else "-"
        lines.append(f"| {s.name} | {s.kind.value} | {s.cases} | {cand} | {base} | "
                     f"{'passed' if s.passed else 'FAILED: ' + '; '.join(s.failed_checks)} |")
    if report.learning_curve is not None:
        lines += lineage.markdown(report.learning_curve)

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")[:80]

    for s, results in zip(report.suites, report.results, strict=True):
        lines += ["", f"## {s.name} ({s.kind.value})", ""]
        if s.note:
            lines += [s.note, ""]
        m = dict(s.metrics)
        if results:
            judged = results[0].candidate_judge is not None
            sourced = any(r.source for r in results)
            head = ["#", "prompt", "expected", "candidate", "baseline", "right", "regressed"]
            head += ["judge (candidate / baseline)"] if judged else []
            head += ["unsupported (candidate / baseline)"] if sourced else []
            lines += [f"exact match {m['exact_match']:.3f} (baseline {m['baseline_exact_match']:.3f}), token F1 "
                      f"{m['token_f1']:.3f} ({m['baseline_token_f1']:.3f}), BLEU {m['bleu']:.3f} "
                      f"({m['baseline_bleu']:.3f})", ""]
            if _quality(s):
                lines += [_quality(s), ""]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for i, r in enumerate(results, start=1):
                right = _right(r)
                row = [str(i), cell(r.prompt), cell(r.references[0]), cell(r.candidate), cell(r.baseline), right,
                       "yes" if r.regressed else ""]
                if judged:
                    row.append(f"{_grade(r.candidate_judge)} / {_grade(r.baseline_judge)}")
                if sourced:
                    row.append(f"{cell(', '.join(r.candidate_unsupported)) or '-'} / "
                               f"{cell(', '.join(r.baseline_unsupported)) or '-'}" if r.source else "no source")
                lines.append("| " + " | ".join(row) + " |")
            if judged:
                lines += ["", "Judge's raw verdicts (candidate, then baseline):", ""]
                for i, r in enumerate(results, start=1):
                    for side, v in (("candidate", r.candidate_judge), ("baseline", r.baseline_judge)):
                        if v is not None:
                            problem = f" ({v.problem})" if v.problem else ""
                            lines.append(f"- {i} {side}{problem}: `{cell(v.raw.strip()).replace('`', chr(39))}`")
        elif s.regressed:
            lines += ["No longer answered right: " + "; ".join(cell(p) for p in s.regressed)]
    return "\n".join(lines) + "\n"


def _scores(report: EvalReport, key: str) -> tuple[list[str], list[float], list[float]]:
    names, cand, base = [], [], []
    for s in report.suites:
        m = dict(s.metrics)
        k = ("base_retention" if s.kind is SuiteKind.BASE else "pass_rate") if key == "answered" else key
        if k in m and "baseline_" + k in m:
            names.append(s.name)
            cand.append(m[k])
            base.append(m["baseline_" + k])
    return names, cand, base


def _chart(report: EvalReport) -> bytes:
    """Bars per suite, baseline beside candidate: the share answered right and, when any suite has them, the
    judge's score and the hallucination rate, each panel titled and its axes labelled."""
    import io  # noqa: PLC0415

    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415

    candidate, baseline = _labels(report)
    panels = [("answered", "share answered right (base: retention)", "answered right per suite")]
    for key, ylabel, title in (("judge_score", "rubric mean score (0 to 1)", "judge score per suite"),
                               ("hallucination_rate", "share of answers with unsupported claims",
                                "hallucination rate per suite (lower is better)")):
        if _scores(report, key)[0]:
            panels.append((key, ylabel, title))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), dpi=100, squeeze=False)
    for ax, (key, ylabel, title) in zip(axes[0], panels, strict=True):
        names, cand, base = _scores(report, key)
        xs = range(len(names))
        bars = ax.bar([x - 0.2 for x in xs], base, width=0.4, label=baseline)
        ax.bar_label(bars, fmt="%.2f", fontsize="small")
        bars = ax.bar([x + 0.2 for x in xs], cand, width=0.4, label=candidate)
        ax.bar_label(bars, fmt="%.2f", fontsize="small")
        if any(len(n) > 12 for n in names):  # e.g. a dataset's suite, datasets/{dataset}/versions/{n}: slanted
            ax.set_xticks(list(xs), names, rotation=30, ha="right", rotation_mode="anchor", fontsize="small")
        else:
            ax.set_xticks(list(xs), names)
        ax.set_xlabel("suite")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.12)
        ax.set_title(title)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=2)
    fig.suptitle(f"{described(report.version)}: gate {'passed' if report.passed else 'FAILED'}, "
                 f"{report.regressions} regressions")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;
vertical-align:top}th{background:#f4f4f4}.passed{color:#176b2c;font-weight:bold}.failed{color:#a31515;
font-weight:bold}tr.regressed td{background:#fde8e8}.note{color:#555}img{max-width:100%}
details pre{white-space:pre-wrap;background:#f8f8f8;padding:.5em;max-width:60em}"""


def _html(report: EvalReport, png: bytes, curve: bytes = b"") -> str:
    """One self-contained page: the verdict, the charts (inline PNG: the suites' bars, the learning curve across the
    lineage), one table of suites, one of cases each."""
    import base64  # noqa: PLC0415
    from html import escape  # noqa: PLC0415

    candidate, baseline = _labels(report)
    verdict = "PASSED" if report.passed else "FAILED"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>Eval of {escape(described(report.version))}: {verdict}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Eval of {escape(described(report.version))} against {escape(described(report.baseline_version))}</h1>",
        f"<p>Gate: <span class={verdict.lower()}>{verdict}</span>, {report.regressions} regressions, "
        f"{escape(report.time.isoformat())}</p>",
    ]
    if report.judge is not None:
        parts.append(f"<p id=judge>Judge: {escape(report.judge.model)} at {escape(report.judge.target)} (rubric "
                     f"{report.judge.rubric_digest}; R relevance, C correctness, P completeness, 1 to 5; each "
                     "case's prompt and raw verdict under it)</p>")
    if report.failed_checks:
        parts.append("<ul>" + "".join(f"<li>{escape(c)}</li>" for c in report.failed_checks) + "</ul>")
    shown = ", ".join(["answered right"] + [what for key, what in (("judge_score", "judge score"),
                       ("hallucination_rate", "hallucination rate")) if _scores(report, key)[0]])
    parts.append(f'<img id=chart alt="{shown} per suite, {escape(candidate)} against {escape(baseline)}" '
                 f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    if report.learning_curve is not None:
        parts.append(lineage.html(report.learning_curve, curve))
    parts.append(f"<table id=suites><tr><th>suite</th><th>kind</th><th>cases</th><th>{escape(candidate)}</th>"
                 f"<th>{escape(baseline)}</th><th>verdict</th><th>note</th></tr>")
    for s in report.suites:
        m = dict(s.metrics)
        key = "base_retention" if s.kind is SuiteKind.BASE else "pass_rate"
        cells = [f"{m[k]:.3f}" if k in m else "-" for k in (key, "baseline_" + key)]
        state = "passed" if s.passed else "failed"
        said = "passed" if s.passed else "FAILED: " + "; ".join(s.failed_checks)
        parts.append(f"<tr><td>{escape(s.name)}</td><td>{s.kind.value}</td><td>{s.cases}</td><td>{cells[0]}</td>"
                     f"<td>{cells[1]}</td><td class={state}>{escape(said)}</td>"
                     f"<td class=note>{escape(s.note)}</td></tr>")
    parts.append("</table>")
    for s, results in zip(report.suites, report.results, strict=True):
        if not results:
            continue
        judged = results[0].candidate_judge is not None
        sourced = any(r.source for r in results)
        parts.append(f"<h2>{escape(s.name)}</h2>")
        if _quality(s):
            parts.append(f"<p class=quality>{escape(_quality(s))}</p>")
        parts.append("<table class=cases><tr><th>#</th><th>prompt</th><th>expected</th>"
                     f"<th>{escape(candidate)}</th><th>{escape(baseline)}</th><th>right</th>"
                     + ("<th>judge</th>" if judged else "") + ("<th>unsupported claims</th>" if sourced else "")
                     + "</tr>")
        for i, r in enumerate(results, start=1):
            right = _right(r)
            row = (f"<tr{' class=regressed' if r.regressed else ''}><td>{i}</td><td>{escape(r.prompt)}</td>"
                   f"<td>{escape(r.references[0])}</td><td>{escape(r.candidate)}</td>"
                   f"<td>{escape(r.baseline)}</td><td>{right}</td>")
            if judged:
                shown = "".join(
                    f"<details><summary>{side}: {escape(_grade(v))}</summary><pre>{escape(v.prompt)}</pre>"
                    f"<p>raw verdict{escape(' (' + v.problem + ')' if v.problem else '')}:</p>"
                    f"<pre>{escape(v.raw)}</pre></details>"
                    for side, v in (("candidate", r.candidate_judge), ("baseline", r.baseline_judge)) if v is not None)
                row += f"<td>{shown}</td>"
            if sourced:
                said = (f"{escape(', '.join(r.candidate_unsupported)) or '-'} / "
                        f"{escape(', '.join(r.baseline_unsupported)) or '-'}") if r.source else "no source"
                row += f"<td>{said}</td>"
            parts.append(row + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
