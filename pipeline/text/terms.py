"""The words of a subject that say what a ticket is about: the top words alerts show."""

from __future__ import annotations

import re

__all__ = ["subject_terms"]

#: Longer "words" (a pasted token, a hash, one 1,000-character word) say nothing a person
#: reads, and would make the watch's state grow with them: left out.
MAX_TERM_CHARS = 40

_WORD = re.compile(r"[a-z][a-z0-9_-]{2,}")
_STOPWORDS = frozenset(
    "the and for with not but you your are was has have had this that from can cannot when what how why where "
    "does did its into out all any our get got please help issue problem since after".split()
)


def subject_terms(subject: str) -> list[str]:
    """The words of a subject that say what it is about (lower case, no stop words, none over 40 characters).

    >>> subject_terms("Export fails since the " + "x" * 500 + " update")
    ['export', 'fails', 'update']
    """
    return [w for w in _WORD.findall(subject.lower()) if w not in _STOPWORDS and len(w) <= MAX_TERM_CHARS]
