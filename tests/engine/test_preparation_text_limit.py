"""The text a preparation reads from its documents is held to a limit (dataset_max_bytes, as UTF-8): a small PDF can
hold far more text than bytes, and its pages are read one by one, stopping as soon as the limit is passed."""

from __future__ import annotations

import zlib

import pytest

from engine.errors import ResourceExhausted
from engine.preparation.documents import read_text
from tests.fixtures.pdf import pdf_of, text_pdf


def _stream(body: bytes, extra: bytes = b"") -> bytes:
    comp = zlib.compress(body, 9)
    return b"<< /Length %d /Filter /FlateDecode %s>>\nstream\n" % (len(comp), extra) + comp + b"\nendstream"


def bomb_pdf(pages: int, text_bytes: int) -> bytes:
    """A small PDF whose pages all show one Flate-compressed content stream of ``text_bytes`` of text."""
    body = b"BT /F1 10 Tf 40 800 Td (" + b"word " * (text_bytes // 5) + b") Tj ET"
    kids = " ".join(f"{4 + i} 0 R" for i in range(pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    objects += [f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
                f"/Contents {4 + pages} 0 R >>".encode() for _ in range(pages)]
    objects.append(_stream(body))
    return pdf_of(objects)


def form_bomb_pdf(invocations: int, text_bytes: int) -> bytes:
    """One page that shows one form (a Form XObject of ``text_bytes`` of text) ``invocations`` times."""
    form = b"BT /F1 10 Tf 40 800 Td (" + b"word " * (text_bytes // 5) + b") Tj ET"
    page = b"q /Fm1 Do Q\n" * invocations
    return pdf_of([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> "
        b"/XObject << /Fm1 6 0 R >> >> /Contents 5 0 R >>",
        _stream(page),
        _stream(form, b"/Type /XObject /Subtype /Form /BBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "),
    ])


def test_a_pdf_within_the_limit_reads_as_before_and_one_byte_over_is_refused() -> None:
    data = text_pdf(["First page.", "Second (page)."])
    text = "First page.\n\nSecond (page)."
    assert read_text("a.pdf", data, "f") == text
    assert read_text("a.pdf", data, "f", max_text_bytes=len(text.encode())) == text
    assert read_text("a.pdf", data, "f", max_text_bytes=10_000, text_before=9_000) == text
    with pytest.raises(ResourceExhausted) as err:
        read_text("a.pdf", data, "spec.documents[1]", max_text_bytes=len(text.encode()) - 1)
    e = err.value
    assert e.reason == "DOCUMENTS_TOO_LARGE" and e.violations[0].field == "spec.documents[1]"
    assert e.metadata["document"] == "a.pdf" and e.metadata["measured"] == "extracted_text"
    assert e.metadata["limit"] == str(len(text.encode()) - 1) and "a.pdf" in e.message


def test_the_text_of_earlier_documents_counts_toward_the_limit() -> None:
    assert read_text("a.md", "héllo wörld".encode(), "f", max_text_bytes=13) == "héllo wörld"  # 13 bytes of UTF-8
    with pytest.raises(ResourceExhausted) as err:
        read_text("a.md", "héllo wörld".encode(), "spec.documents[2]", max_text_bytes=100, text_before=90)
    assert err.value.reason == "DOCUMENTS_TOO_LARGE" and err.value.metadata["size"] == "103"
    with pytest.raises(ResourceExhausted):
        read_text("a.pdf", text_pdf(["First page."]), "f", max_text_bytes=100, text_before=95)


def test_a_pdf_whose_pages_repeat_one_stream_stops_at_the_first_page_past_the_limit() -> None:
    data = bomb_pdf(10, 1_000_000)  # 3.5 kB of PDF, 10 MB of text
    assert len(data) < 5_000
    with pytest.raises(ResourceExhausted) as err:
        read_text("a.pdf", data, "spec.documents[0]", max_text_bytes=100_000)
    assert err.value.reason == "DOCUMENTS_TOO_LARGE" and err.value.violations[0].field == "spec.documents[0]"
    assert int(err.value.metadata["size"]) < 2_000_000, err.value.metadata  # one page read, not ten


def test_a_page_that_shows_one_form_many_times_is_refused_not_cut_short() -> None:
    # pypdf logs and skips an error within a form: the stop must still refuse the document, not keep part of it
    data = form_bomb_pdf(200, 50_000)  # 10 MB of text on one page
    with pytest.raises(ResourceExhausted) as err:
        read_text("a.pdf", data, "spec.documents[0]", max_text_bytes=120_000)
    assert err.value.reason == "DOCUMENTS_TOO_LARGE"
    assert int(err.value.metadata["size"]) < 1_000_000, err.value.metadata  # stopped within the page
    assert len(read_text("a.pdf", form_bomb_pdf(2, 5_000), "f", max_text_bytes=120_000)) > 9_000  # twice shown
