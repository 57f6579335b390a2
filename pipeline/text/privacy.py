"""Personal data out of example tickets before anyone sees them (alerts, reports)."""

from __future__ import annotations

import re

__all__ = ["mask_personal"]

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(\.[\w-]+)+\b")
#: ``(?<!\w)\+?\d[\d ()./-]{7,}\d(?!\w)`` and ``\b\d{6,}\b``, written to start with the
#: character they consume (a digit or plus not after a word character is one after a
#: boundary), so that the engine scans for it instead of trying the boundary at every
#: position: the same matches (tests/test_privacy.py), 15.5 -> 9.3 and 12.8 -> 6.4 us a
#: masked NLBSE'24 opening
_PHONE = re.compile(r"(?:\+(?<!\w\+)\d|\d(?<!\w\d))[\d ()./-]{7,}\d(?!\w)")
_LONG_NUMBER = re.compile(r"\d(?<!\w\d)\d{5,}\b")
_URL_QUERY = re.compile(r"(https?://[^\s?#]+)[?#]\S*")
_SIGNATURE = re.compile(r"\n\s*(--\s*|(thanks|thank you|regards|best|cheers|kind regards)[,!.]?\s*)\n.*", re.S | re.I)
_GREETING = re.compile(r"^(hi|hello|dear|hey)\s+[A-Z][\w-]*", re.I | re.M)


def mask_personal(text: str, limit: int = 280) -> str:
    """The text with e-mail addresses, phone and account numbers, URL parameters,
    signatures and greeted names masked, cut to ``limit`` characters on one line.

    >>> mask_personal("Hi Maria,\\nCall me at +1 (415) 555-0199 or ana.b@corp.example.\\nThanks,\\nAna Berg")
    'Hi [name], Call me at [phone] or [email].'
    >>> mask_personal("Card 4111111111111111 fails, see https://app.example/pay?token=abc123")
    'Card [number] fails, see https://app.example/pay?[…]'
    """
    head = text[: limit * _HEAD_FACTOR]
    if len(head) < len(text):
        # Only ``limit`` characters are shown: masking the head alone gives the same ones
        # when its masked text runs well past them (every pattern's match that the cut
        # could split starts within the margin). A ticket's pasted log made the alert
        # examples and patterns cost 16 % of the worker on real issue text.
        flat = _masked(head)
        if len(flat) > limit + _MARGIN:
            return flat[: limit - 1].rstrip() + "…"
    flat = _masked(text)
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


#: characters of a text masked first (times the limit), and the room past the limit its
#: masked text must have for the shown part to be the whole text's
_HEAD_FACTOR = 4
_MARGIN = 100


def _masked(text: str) -> str:
    text = _SIGNATURE.sub("\n", text)
    if "@" in text:  # the pattern is slow to find nothing, and most texts have no address
        text = EMAIL.sub("[email]", text)
    text = _URL_QUERY.sub(r"\1?[…]", text)
    text = _LONG_NUMBER.sub("[number]", text)
    text = _PHONE.sub("[phone]", text)
    text = _GREETING.sub(lambda m: m.group(1) + " [name]", text)
    return " ".join(text.split())
