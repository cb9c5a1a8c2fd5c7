"""The learning curve across a candidate's lineage, one chart of its evaluation's report.

The lineage is the chain of versions the candidate continues, as the adapter registry records it (its parent, its
grandparent, ... back to the root, deleted ones included), charted oldest first with the candidate last. Each line
is one suite of the evaluation (by name: ``target``, ``retention``, ``base``, each golden suite), and a point is
what a version's stored evaluations recorded for it: the newest stored evaluation of that version that scored the
suite, its share answered right (``pass_rate``), or for ``base`` its base retention. The candidate's points are the
evaluation's own. A version none of whose evaluations scored a suite (never evaluated, a suite without cases, a
base retention not measured) is a gap in that line, never a zero. The base model is charted first, as the root every
lineage grows from, when it was evaluated itself (``base_model_itself``) on one of the suites.

Read it knowing what each suite asks of each version: ``target`` is each version's own data, ``retention`` what
the versions before it were taught, so those lines follow how each version did on what it learnt and what it kept,
not one fixed test; a golden suite of one name is the same questions unless its file was changed.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.domain import SuiteKind, SuiteVerdict

MAX_VERSIONS = 30  # the candidate and its nearest ancestors charted; older ones are counted, not drawn
PER_VERSION = 20  # the newest stored evaluations read per version
Y_LABEL = "share answered right (base: base retention)"
X_LABEL = "version, oldest first (the candidate last)"
NOT_EVALUATED = "(not evaluated)"


class Scored(Protocol):  # engine.lora.state.EvalSummary
    @property
    def version(self) -> str: ...  # "": the base model itself

    @property
    def id(self) -> str: ...

    @property
    def suites(self) -> tuple[SuiteVerdict, ...]: ...


@dataclass(frozen=True)
class SuiteCurve:
    """One suite's line: its score at each version of the curve, and the evaluation each score comes from."""

    suite: str
    kind: SuiteKind
    scores: tuple[float | None, ...]  # None: no stored evaluation of that version scored it (a gap)
    evaluations: tuple[str, ...]  # "" with a gap


@dataclass(frozen=True)
class LearningCurve:
    candidate: str  # "": the base model itself
    versions: tuple[str, ...]  # oldest first, the candidate last; "" is the base model
    suites: tuple[SuiteCurve, ...]  # in the evaluation's order of suites
    left_out: int = 0  # older ancestors beyond MAX_VERSIONS, not charted

    def evaluated(self, index: int) -> bool:
        """Whether any suite has a score at ``versions[index]``."""
        return any(c.scores[index] is not None for c in self.suites)


def score(verdict: SuiteVerdict) -> float | None:
    """A suite's point: the share it answered right, or the ``base`` suite's base retention; None when the suite
    was not checked (no cases, or not measured)."""
    return dict(verdict.metrics).get("base_retention" if verdict.kind is SuiteKind.BASE else "pass_rate")


def learning_curve(chain: Sequence[str], stored: Iterable[Scored], suites: Sequence[SuiteVerdict],
                   evaluation: str) -> LearningCurve:
    """The curve of the evaluation ``evaluation`` (its ``suites``) of ``chain[0]``: ``chain`` is the candidate's
    lineage, the candidate first (AdapterRegistry.lineage; ``[""]`` for the base model itself), and ``stored`` the
    stored evaluations of its ancestors and of the base model, newest first (the candidate's own are not read)."""
    candidate = chain[0]
    ancestors = list(reversed(chain[1:MAX_VERSIONS]))
    newest: dict[tuple[str, str], tuple[float, str]] = {}  # (version, suite) -> (score, evaluation id)
    for summary in stored:
        for verdict in summary.suites:
            value = score(verdict)
            if value is not None:
                newest.setdefault((summary.version, verdict.name), (value, summary.id))
    if candidate and any(("", s.name) in newest for s in suites):
        ancestors.insert(0, "")
    curves = []
    for verdict in suites:
        points = [newest.get((version, verdict.name)) for version in ancestors]
        mine = score(verdict)
        points.append((mine, evaluation) if mine is not None else None)
        curves.append(SuiteCurve(verdict.name, verdict.kind, tuple(p[0] if p else None for p in points),
                                 tuple(p[1] if p else "" for p in points)))
    return LearningCurve(candidate, (*ancestors, candidate), tuple(curves), max(0, len(chain) - MAX_VERSIONS))


def _label(version: str) -> str:
    return version or "base model"


def _heading(curve: LearningCurve) -> str:
    said = title(curve)
    return said[0].upper() + said[1:]


def title(curve: LearningCurve) -> str:
    shown = f"learning curve across the lineage of {_label(curve.candidate)}"
    return shown + (f" (its {MAX_VERSIONS} newest versions of {MAX_VERSIONS + curve.left_out})"
                    if curve.left_out else "")


def chart(curve: LearningCurve) -> bytes:
    """One PNG: a line per suite over the versions, oldest first, its points marked; a gap where a version has no
    score (the line breaks, nothing is drawn at 0); versions with no score at all are labelled so."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415

    n = len(curve.versions)
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.4, 0.8 * n + 3.5)), 4.4), dpi=100)
    # Colours apart from the bar chart's (matplotlib's first two defaults): each chart reads on its own.
    colours = plt.get_cmap("Dark2").colors  # type: ignore[attr-defined]  # a ListedColormap; matplotlib types Colormap
    drawn = [c for c in curve.suites if any(s is not None for s in c.scores)]
    for i, c in enumerate(drawn):
        ys = [float("nan") if s is None else s for s in c.scores]  # NaN breaks the line: a gap, not a zero
        ax.plot(range(n), ys, marker="o", linewidth=2, color=colours[i % len(colours)],
                linestyle=("-", "--", ":")[i // len(colours) % 3], label=c.suite)
    labels = [_label(v) + ("" if curve.evaluated(i) else f"\n{NOT_EVALUATED}") for i, v in enumerate(curve.versions)]
    labels[-1] += "\n(candidate)"
    ax.set_xticks(list(range(n)), labels, rotation=30 if n > 8 else 0, ha="right" if n > 8 else "center",
                  fontsize="small")
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(Y_LABEL)
    ax.set_title(title(curve))
    if drawn:
        ax.legend(title="suite", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    else:
        ax.text(0.5, 0.5, "no scores recorded", ha="center", va="center", transform=ax.transAxes)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def as_doc(curve: LearningCurve) -> dict[str, object]:
    """The curve's data, for the JSON report (None at a gap)."""
    return {"candidate": curve.candidate, "versions": list(curve.versions), "left_out": curve.left_out,
            "suites": [{"suite": c.suite, "kind": c.kind.value, "scores": list(c.scores),
                        "evaluations": list(c.evaluations)} for c in curve.suites]}


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(curve: LearningCurve) -> list[str]:
    """The curve as a Markdown table: a row per suite, a column per version ("-" at a gap)."""
    lines = ["", f"## {_heading(curve)}", "", f"{Y_LABEL}; - : no stored evaluation scored it", "",
             "| suite | " + " | ".join(map(_label, curve.versions)) + " |", "|---|" + "---|" * len(curve.versions)]
    lines += ["| " + " | ".join([c.suite, *map(_cell, c.scores)]) + " |" for c in curve.suites]
    return lines


def html(curve: LearningCurve, png: bytes) -> str:
    """The chart inlined, and its data as a table beneath it."""
    import base64  # noqa: PLC0415
    from html import escape  # noqa: PLC0415

    names = ", ".join(c.suite for c in curve.suites)
    rows = "".join(f"<tr><td>{escape(c.suite)}</td>" + "".join(f"<td>{_cell(s)}</td>" for s in c.scores) + "</tr>"
                   for c in curve.suites)
    return (f"<h2 id=lineage-title>{escape(_heading(curve))}</h2>"
            "<p class=note>Each version's score on each suite as its newest stored evaluation recorded it (the "
            "candidate's: this evaluation), oldest first; a gap where no evaluation of that version scored the "
            "suite.</p>"
            f'<img id=lineage alt="{escape(title(curve))}: {escape(names)} per version" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            "<table id=lineage-scores><tr><th>suite</th>"
            + "".join(f"<th>{escape(_label(v))}</th>" for v in curve.versions) + f"</tr>{rows}</table>")
