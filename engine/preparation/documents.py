"""Documents into text, and text into chunks with their character offsets.

What is read: plain text (``.txt``), Markdown (``.md``, ``.markdown``) as UTF-8, and PDF (``.pdf``) with pypdf
(pure Python; text PDFs only: a scanned PDF has no text layer, and OCR is not attempted). Chunks come from
semantic-text-splitter (a compiled splitter with no Python dependencies): it splits at the largest semantic
boundary that keeps a chunk within its size (Markdown headings, then paragraphs, sentences, words; plain text
from paragraphs down) and reports each chunk's character offset in the document's text, which is what a pair's
source span records. LangChain's splitters need langchain-core (and its dependencies); chonkie needs numpy and
tokenizers' models for its better chunkers.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass

from engine.errors import FieldViolation, InvalidArgument, ResourceExhausted

KINDS = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown", ".pdf": "pdf"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,254}$")


@dataclass(frozen=True)
class Chunk:
    """``text`` is ``document_text[start:end]`` (character offsets)."""

    document: str
    index: int  # within its document, from 0
    start: int
    end: int
    text: str


def document_kind(name: str, field_path: str) -> str:
    """How a document of that name is read ("text", "markdown", "pdf"); INVALID_ARGUMENT for a name that is not
    a plain file name (no directories, no '..') or an extension not read."""
    if not _NAME_RE.match(name) or ".." in name:
        raise InvalidArgument(
            "INVALID_PREPARATION_SPEC", f"{field_path} {name!r} is not a plain file name",
            violations=[FieldViolation(field_path, "a file name of 1-255 letters, digits, '.', '_', '-' or spaces, "
                                                   "starting with a letter or digit, without '/' or '..'")])
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix not in KINDS:
        raise InvalidArgument(
            "INVALID_PREPARATION_SPEC", f"{field_path} {name!r}: only .txt, .md, .markdown and .pdf documents are read",
            violations=[FieldViolation(field_path, "must end in .txt, .md, .markdown or .pdf")])
    return KINDS[suffix]


def unreadable(field_path: str, name: str, why: str) -> InvalidArgument:
    return InvalidArgument("DOCUMENT_UNREADABLE", f"document {name} {why}",
                           violations=[FieldViolation(field_path, why)], metadata={"document": name})


def read_text(name: str, data: bytes, field_path: str, *, max_text_bytes: int | None = None,
              text_before: int = 0) -> str:
    """The document's text; INVALID_ARGUMENT DOCUMENT_UNREADABLE when there is none to read.

    With ``max_text_bytes``, RESOURCE_EXHAUSTED DOCUMENTS_TOO_LARGE when ``text_before`` (the UTF-8 bytes of the
    text of a job's earlier documents) and this document's text come to more than that. A text document's text is
    never larger than its bytes; a PDF's can be far larger (pages that all show one compressed content stream), so
    its pages are read one by one and the reading stops as soon as the limit is passed."""
    kind = document_kind(name, field_path)
    if kind == "pdf":
        text = _pdf_text(name, data, field_path, max_text_bytes, text_before)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise unreadable(field_path, name, f"is not UTF-8 text (byte {exc.start})") from None
        if "\x00" in text:
            raise unreadable(field_path, name, "holds NUL characters: not a text file")
        if max_text_bytes is not None and text_before + len(text.encode()) > max_text_bytes:
            raise text_too_large(field_path, name, max_text_bytes, text_before + len(text.encode()))
    if not text.strip():
        scanned = " (a scanned PDF needs OCR first)" if kind == "pdf" else ""
        raise unreadable(field_path, name, f"has no text{scanned}")
    return text


def text_too_large(field_path: str, name: str, limit: int, size: int) -> ResourceExhausted:
    """The refusal of a document whose text brings a job's text to ``size`` bytes (at least: reading stopped
    there), more than ``limit``."""
    return ResourceExhausted(
        "DOCUMENTS_TOO_LARGE", f"the text extracted from the documents comes to more than the {limit} bytes (as "
        f"UTF-8) a preparation may read (dataset_max_bytes) at document {name}; nothing was stored",
        violations=[FieldViolation(field_path, f"its text brings the documents' text to more than {limit} bytes")],
        metadata={"limit": str(limit), "size": str(size), "document": name, "measured": "extracted_text"})


class _TextLimitPassed(Exception):
    """Raised from pypdf's text visitor to stop reading a page whose text passes the limit."""


class _TextCounter:
    """pypdf's ``visitor_text``: counts the characters of the text it reports, and stops it past ``limit``."""

    def __init__(self, seen: int, limit: int | None) -> None:
        self.seen, self.limit, self.passed = seen, limit, False

    def __call__(self, text: str, *_: object) -> None:
        self.seen += len(text)
        if self.limit is not None and self.seen > self.limit:
            self.passed = True
            raise _TextLimitPassed(self.seen)


def _pdf_text(name: str, data: bytes, field_path: str, max_text_bytes: int | None, text_before: int) -> str:
    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # it warns on every slightly malformed object
    pages: list[str] = []
    size = text_before  # UTF-8 bytes of the text so far, "\n\n" between pages included
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise unreadable(field_path, name, "is an encrypted PDF")
        for page in reader.pages:
            # A page's pieces of text as pypdf reports them (its forms' too) stop the page as soon as they pass the
            # limit: one page can show one content stream, or one form, many times (pypdf's own bounds, 75 MB a
            # decompressed stream and 5000 forms a page, are far above any limit here). A character is at least one
            # byte of UTF-8, so counting characters stops only a page whose text, as reported, passes the limit.
            counter = _TextCounter(size, max_text_bytes)
            text = (page.extract_text(visitor_text=counter if max_text_bytes is not None else None) or "").strip()
            if counter.passed:  # passed within a form, whose errors pypdf logs and skips: this text is cut short
                raise _TextLimitPassed(counter.seen)
            # pypdf decodes ToUnicode maps with surrogatepass: pair split surrogates, and a lone one (which no
            # UTF-8 writer can encode) becomes U+FFFD
            text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
            pages.append(text)
            size += len(text.encode()) + (2 if len(pages) > 1 else 0)
            if max_text_bytes is not None and size > max_text_bytes:
                raise _TextLimitPassed(size)
    except InvalidArgument:
        raise
    except _TextLimitPassed as passed:
        assert max_text_bytes is not None
        raise text_too_large(field_path, name, max_text_bytes, passed.args[0]) from None
    except Exception as exc:  # noqa: BLE001 - pypdf raises nearly anything on a broken file (its own errors, and
        # ValueError, KeyError, AssertionError, NotImplementedError for an unknown filter, DependencyError, ...)
        raise unreadable(field_path, name, f"is not a PDF pypdf can read ({type(exc).__name__})") from None
    return "\n\n".join(pages).strip()


def chunks(name: str, text: str, *, max_chars: int) -> list[Chunk]:
    """The document's chunks of at most ``max_chars`` characters, as full as the text's boundaries allow,
    trimmed, with their offsets in ``text``."""
    from semantic_text_splitter import MarkdownSplitter, TextSplitter

    capacity = max_chars
    splitter = MarkdownSplitter(capacity) if KINDS.get("." + name.rsplit(".", 1)[-1].lower()) == "markdown" \
        else TextSplitter(capacity)
    found: list[Chunk] = []
    for offset, piece in splitter.chunk_indices(text):
        if piece.strip():
            found.append(Chunk(name, len(found), offset, offset + len(piece), piece))
    return found
