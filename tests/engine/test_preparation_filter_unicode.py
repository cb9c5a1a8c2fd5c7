"""The support filter of data preparation (engine.preparation.generation) compares text in one Unicode normal form,
and checks a pair's question as well as its answer."""

from __future__ import annotations

import unicodedata

from engine.preparation import generation as gen

CHUNK = ("The old café of Zürich is famous for its crème brûlée, which the visitors order every morning with "
         "their coffee.")
PAIR = gen.Pair("What is the café famous for?", "the old café is famous for its crème brûlée.")


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def test_an_nfc_document_supports_an_nfc_answer() -> None:
    assert unicodedata.is_normalized("NFC", CHUNK)
    assert gen.check(PAIR, CHUNK).kept


def test_a_decomposed_nfd_document_supports_the_same_answer_as_its_nfc_form() -> None:
    # NFD documents: macOS file names, many PDF text layers; the model writes NFC.
    assert nfd(CHUNK) != CHUNK
    verdict = gen.check(PAIR, nfd(CHUNK))
    assert verdict.kept, verdict.detail
    # and the other way round, and a name (a grounding claim) with a decomposed accent
    assert gen.check(gen.Pair(nfd(PAIR.question), nfd(PAIR.answer)), CHUNK).kept
    named = gen.check(gen.Pair("Where is the old café?", "The old café is in Zürich."), nfd(CHUNK))
    assert named.kept, named.detail
    # the pair is kept as the model wrote it
    assert verdict.pair == PAIR


def test_a_wrong_answer_is_still_rejected_in_either_form() -> None:
    wrong = gen.Pair("What is the café famous for?", "its smörgåsbord, served with aquavit and herring.")
    for chunk in (CHUNK, nfd(CHUNK)):
        verdict = gen.check(wrong, chunk)
        assert verdict.problem == "unsupported", verdict


def test_the_same_question_in_nfc_and_nfd_is_a_duplicate() -> None:
    q = "Where is the café of Zürich?"
    pairs = [gen.Pair(q, "the old café is famous for its crème brûlée."),
             gen.Pair(nfd(q), "the visitors order crème brûlée every morning.")]
    verdicts = gen.select(pairs, CHUNK, set())
    assert [v.problem for v in verdicts] == ["", "duplicate"], [(v.problem, v.detail) for v in verdicts]
    assert gen.normalised_question(q) == gen.normalised_question(nfd(q.upper()))


def test_an_echoed_placeholder_or_empty_question_is_not_kept() -> None:
    # SmolLM2 echoes the prompt's placeholders; a grounded answer under the placeholder question would become a
    # training example whose prompt is "<a question about the text>".
    chunk = "The capital of Veloria is Marnesse. Veloria trades in wool, amber and salted fish."
    reading = gen.parse("Q: <a question about the text>\nA: The capital of Veloria is Marnesse.\n"
                        "Q: ?\nA: Veloria trades in wool and amber.\n"
                        "Q: A question about the text.\nA: Veloria trades in salted fish.")
    assert len(reading.pairs) == 3 and reading.unparseable == 0
    verdicts = gen.select(reading.pairs, chunk, set())
    kept = [v.pair.question for v in verdicts if v.kept]
    assert kept == [], kept
    # counted as unsupported (what the job reports), each with its reason
    assert [v.problem for v in verdicts] == ["unsupported"] * 3
    assert [v.detail for v in verdicts] == ["the question is the prompt's placeholder, echoed",
                                            "the question has no content words",
                                            "the question is the prompt's placeholder, echoed"]
    assert gen.check(gen.Pair("Who?", "Marnesse, the capital of Veloria."), chunk).detail == \
        "the question has no content words"


def test_a_normal_question_is_still_kept() -> None:
    chunk = "The capital of Veloria is Marnesse. Veloria trades in wool, amber and salted fish."
    reading = gen.parse("Q: What is the capital of Veloria?\nA: The capital of Veloria is Marnesse.\n"
                        "Q: What does Veloria trade in?\nA: wool and amber.\n"
                        "Q: What does the text say about amber?\nA: Veloria trades in amber.")
    verdicts = gen.select(reading.pairs, chunk, set())
    assert [v.problem for v in verdicts] == ["", "", ""], [(v.problem, v.detail) for v in verdicts]
