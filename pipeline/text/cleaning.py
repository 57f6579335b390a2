"""Cleaning a ticket's text for the models: code, quotes, traces, addresses and numbers out; the opening kept."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: a fenced code block, as :func:`_without_code_blocks` finds them (with ``str.find``; the tests
#: compare the two)
_CODE_BLOCK = re.compile(r"```.*?```", re.S)
_QUOTED = re.compile(r"^\s*>.*$", re.M)
_STACK = re.compile(r"^\s*(at |File \"|Traceback|\w+(\.\w+)+(Error|Exception)\b).*$", re.M)
_URL = re.compile(r"https?://\S+")
_HEADER = re.compile(r"^#+ .*$", re.M)
_SIGNATURE = re.compile(r"\n(--\s*\n|(thanks|regards|best|cheers)[,!.]?\s*\n).*", re.S | re.I)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b")
#: a number: ``\b\d[\d.,:]*\b``, written to start with the digit (a digit not after a
#: word character is a digit after a word boundary) so that the regular-expression engine
#: scans for digits instead of trying a boundary at every position: 20.4 -> 9.8 us a
#: 2,000-character NLBSE'24 body, the same matches (tests/test_tagger.py)
_NUMBER = re.compile(r"\d(?<!\w\d)[\d.,:]*\b")
#: The passes after code and signatures, each with a string every match contains: a text
#: without it skips the pass. The e-mail pattern alone cost 93 us a ticket on NLBSE'24's
#: bodies (1 in 10 has an "@"); clean_text 78.5 -> 55.1 us there, the same output
#: (checked on NLBSE'24 and on generated tickets; docs/benchmarks.md).
_PASSES = ((_QUOTED, ">"), (_STACK, ""), (_URL, "://"), (_HEADER, "#"), (_EMAIL, "@"), (_NUMBER, ""))


def clean_text(subject: str, body: str, body_chars: int | None = None) -> str:
    """Subject and body with what says nothing about the case taken out.

    Code blocks, quoted replies, stack traces, URLs, form-template headings,
    signatures, e-mail addresses and numbers are removed; the subject counts twice.
    With ``body_chars``, only that many characters of the cleaned body are kept (whole
    words).

    >>> clean_text("Export fails", "It fails when I export. Steps: open, click", body_chars=24)
    'export fails export fails it fails when i export.'
    >>> clean_text("Export fails", "It fails.\\n```\\ncode\\n```\\n> old reply\\nThanks,\\nAna\\nana@x.io")
    'export fails export fails it fails.'
    """
    text = _without_code_blocks(body) if "```" in body else body
    if body_chars is None:
        text = _clean_prose(text)
    else:
        # Only the opening is cleaned when it gives enough words: a real ticket's body runs
        # to thousands of characters, of which the reading keeps a few hundred (NLBSE'24's
        # bodies: 47 -> 26 us a reading, docs/benchmarks.md). It is cut at the end of a line, where
        # no pass's match crosses but for spacing (every pass matches within a line, but
        # for a signature, which runs to the end, and the leading blanks of a quoted or
        # stack line), so the cleaned opening begins the cleaned text
        # (``tests/test_tagger.py`` checks it against cleaning everything).
        raw_chars = _RAW_OPENING_FACTOR * body_chars
        end = text.find("\n", raw_chars) + 1 if len(text) > raw_chars else 0
        opening = " ".join(_clean_prose(text[:end]).split()) if end else ""
        # the cut counts characters of words, not of spacing; an opening of mostly quotes or
        # logs that cleans down to too few words: the whole text, rather than ever longer tries
        text = opening if len(opening) > body_chars else " ".join(_clean_prose(text).split())
        if len(text) > body_chars:
            text = text[: body_chars + 1].rsplit(" ", 1)[0]  # whole words only
    return " ".join(f"{subject} {subject} {text}".lower().split())


#: The raw characters (to the end of their line) first cleaned for a reading of
#: ``body_chars``, in multiples of it. On NLBSE'24 the opening gives enough words for 760 of
#: the 858 bodies longer than that (the others are cleaned whole: quotes, logs).
_RAW_OPENING_FACTOR = 2


def _without_code_blocks(body: str) -> str:
    """``_CODE_BLOCK.sub(" ", body)``, found with ``str.find``: the regular expression tried
    its closing fence at every character of a block (1.1 ms for one 200 KB log)."""
    pieces, at = [], 0
    while (opening := body.find("```", at)) >= 0 and (closing := body.find("```", opening + 3)) >= 0:
        pieces += [body[at:opening], " "]
        at = closing + 3
    return "".join(pieces) + body[at:] if pieces else body


def _clean_prose(text: str) -> str:
    """What :func:`clean_text` does after the code blocks are out."""
    text = _SIGNATURE.sub("\n", text)
    for pattern, needed in _PASSES:
        if needed in text:
            text = pattern.sub(" ", text)
    return text


#: Characters of the cleaned body the tagger reads. A ticket's opening says what the
#: case is; what follows (steps, versions, logs, pleasantries) is mostly words every
#: kind of case shares, and naive Bayes counts each as evidence: on NLBSE'24 reading the
#: first 300 gives macro-F1 0.689 against 0.651 for the whole body (200: 0.685, 400:
#: 0.677, 1000: 0.649; docs/benchmarks.md).
OPENING_CHARS = 300


def reading_text(subject: str, body: str) -> str:
    """What the tagger reads of a ticket: the cleaned subject and opening of the body.

    Every feature comes from this text alone, so it is all that travels to the label
    join and the training topic: about 300 characters, with e-mail addresses, numbers,
    quotes and signatures already out, instead of the raw body (cleaned once, by the
    worker that predicted it, not again by every worker that learns from it).

    >>> reading_text("Export fails", "It fails.\\n> old reply\\nThanks,\\nAna\\nana@x.io")
    'export fails export fails it fails.'
    """
    return clean_text(subject, body, OPENING_CHARS)


def document_reading(doc: Mapping[str, Any]) -> str:
    """A document's :func:`reading_text`: carried as ``reading``, or made from ``subject`` and ``body``."""
    reading = doc.get("reading")
    if reading is not None:
        return str(reading)
    return reading_text(str(doc.get("subject", "")), str(doc.get("body", "")))
