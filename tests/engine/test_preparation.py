"""Data preparation's pieces: documents into text and chunks with exact offsets, generator replies read
leniently, and pairs their chunk does not support filtered out."""

from __future__ import annotations

import pytest

from engine.errors import InvalidArgument
from engine.preparation import generation as gen
from engine.preparation.documents import chunks, document_kind, read_text
from tests.fixtures.pdf import text_pdf

CHUNK = ("Veloria is a small country. Its capital is Marnesse, on the Orl river; 12,000 people live there and "
         "they weave wool.")


def test_replies_are_read_leniently_and_strays_counted() -> None:
    reply = """Sure! Here are 3 pairs:
**Q1:** What is the capital
of Veloria?
**A1:** Marnesse.
2) Question - How many people live there?
Answer = 12,000 people.
A: an answer nobody asked for
Q: a question left without its answer"""
    reading = gen.parse(reply)
    assert reading.pairs == (gen.Pair("What is the capital of Veloria?", "Marnesse."),
                             gen.Pair("How many people live there?", "12,000 people."))
    assert reading.unparseable == 2
    as_json = gen.parse('Here: [{"question": "What river?", "answer": "The Orl."}, {"question": "x"}]')
    assert as_json == gen.Reading((gen.Pair("What river?", "The Orl."),), 0)
    assert gen.parse("I cannot help with that.") == gen.Reading((), 1)
    assert gen.parse("") == gen.Reading((), 0)


def test_only_answers_the_chunk_supports_are_kept() -> None:
    kept = gen.check(gen.Pair("What is the capital of Veloria?", "Its capital is Marnesse."), CHUNK)
    assert kept.kept
    # a name and a number the chunk lacks (engine.lora.grounding's claims)
    named = gen.check(gen.Pair("Who rules Veloria?", "King Zorbald has ruled since 1203."), CHUNK)
    assert named.problem == "unsupported" and named.detail == "claims the text lacks: King, Zorbald, 1203"
    # nothing grounding would flag, but words the chunk does not hold
    invented = gen.check(gen.Pair("What do they make?", "they forge bronze swords"), CHUNK)
    assert invented.problem == "unsupported" and "forge, bronze, swords" in invented.detail
    # a name the question itself gives is no invention (and 4 of the answer's 5 words are the chunk's)
    assert gen.check(gen.Pair("Is Talameth near Veloria?", "No, Talameth is not in Veloria; people weave wool "
                                                           "there."), CHUNK).kept
    assert gen.check(gen.Pair("Where is Marnesse?", "Marnesse is on the Orl river."), CHUNK).kept
    assert gen.check(gen.Pair("Why?", "Yes."), CHUNK).detail == "the answer has no content words to check"
    # an echo of the question (as SmolLM2-135M writes) says nothing
    for question, answer in [("The Orl river (Veloria)", "the Orl river, Veloria"),
                             ("from the engine (a pipeline's drift trigger)", "from the engine (a")]:
        echo = gen.check(gen.Pair(question, answer), CHUNK + " The engine has a pipeline.")
        assert echo.problem == "unsupported" and echo.detail == "the answer only repeats words of the question"
    assert gen.check(gen.Pair("What do people do there?", "They weave wools and sheeps."), CHUNK).kept  # a final s


def test_a_question_asked_twice_about_one_document_is_kept_once() -> None:
    seen: set[str] = set()
    pairs = [gen.Pair("What is the capital of Veloria?", "Marnesse."),
             gen.Pair("what is the CAPITAL of Veloria", "Its capital is Marnesse."),
             gen.Pair("Who rules?", "Queen Mab.")]
    verdicts = gen.select(pairs, CHUNK, seen)
    assert [v.problem for v in verdicts] == ["", "duplicate", "unsupported"]
    assert [v.problem for v in gen.select(pairs[:1], CHUNK, seen)] == ["duplicate"]  # later chunks of it too


def test_chunks_keep_exact_character_offsets() -> None:
    text = "# Été\n\n" + "Ça coûte 3 € à Zürich, naïvement. " * 40 + "\n\n## Suite\n\n" + "Fin du texte ici. " * 30
    found = chunks("notes.md", text, max_chars=300)
    assert len(found) > 4 and all(len(c.text) <= 300 for c in found)
    assert all(text[c.start:c.end] == c.text for c in found)
    assert [c.index for c in found] == list(range(len(found)))
    assert any(c.text.startswith("## Suite") for c in found)  # Markdown splits at its headings


def test_documents_are_read_by_their_extension_and_refused_when_unreadable() -> None:
    assert read_text("a.pdf", text_pdf(["First page.", "Second (page)."]), "f") == "First page.\n\nSecond (page)."
    assert read_text("a.txt", "\ufeffplain".encode(), "f") == "plain"
    for name, data, why in [("a.txt", b"\xff\xfe bad", "is not UTF-8 text"), ("a.md", b"a\x00b", "NUL"),
                            ("a.pdf", b"%PDF-1.4 garbage", "is not a PDF pypdf can read"),
                            ("a.pdf", text_pdf([""]), "has no text (a scanned PDF needs OCR first)"),
                            ("a.md", b"  \n", "has no text")]:
        with pytest.raises(InvalidArgument) as err:
            read_text(name, data, "spec.documents[0]")
        assert err.value.reason == "DOCUMENT_UNREADABLE" and why in err.value.message, (name, err.value.message)
        assert err.value.violations[0].field == "spec.documents[0]"
    assert document_kind("Notes 2024.MD", "f") == "markdown"
    for bad in ("../a.md", "a/b.md", "..md", ".hidden.md", "a.docx", "a", "a.md\n"):
        with pytest.raises(InvalidArgument) as err:
            document_kind(bad, "spec.documents[0].name")
        assert err.value.reason == "INVALID_PREPARATION_SPEC", bad
