"""Users who almost gave up: tickets that say the user was about to cancel or leave.

"I was about to cancel but..." marks where the product nearly lost someone. The flag
is a set of phrase patterns, not a model: a user's own words about leaving are few
and direct, a wrong flag is costly in a monthly review, and a pattern says why it
fired. Precision is measured on a labelled sample kept in the tests
(tests/fixtures/near_churn.jsonl; figures in docs/benchmarks.md).

Support vocabulary is full of "cancel" that is not churn ("how do I cancel an
export?"), so every phrase needs the user, their account or the product around it.
"""

from __future__ import annotations

import re

__all__ = ["near_churn", "near_churn_reason"]

_PHRASES = [
    # about to cancel / leave / quit / switch / give up
    r"\b(about|going|ready|close|tempted|planning|thinking|considering|deciding|this close)"
    r" (to|of|about)? ?(cancel|leave|leaving|quit|quitting|switch|switching|churn|drop|dropping|move|moving|give up)",
    r"\b(almost|nearly|was going to|seriously considered|considered|contemplat\w*) "
    r"(cancel\w*|left|leaving|quit\w*|switch\w*|gave up|giving up|drop\w*|unsubscrib\w*|mov\w* to)",
    # cancelling the account, subscription or plan (not a job, an export, an order line)
    r"\bcancel\w* (my|our|the) (whole )?(subscription|account|plan|contract|membership|license|licence|seats?)\b",
    r"\b(end|terminate|close) (my|our) (subscription|account|contract)\b",
    # switching to a competitor, looking at alternatives
    r"\b(switch\w*|mov\w*|go\w*|migrat\w*) (over )?to (a |an )?"
    r"(competitor|another (tool|product|service|provider|vendor)|a different (tool|product|service|provider|vendor))",
    r"\b(look\w*|shop\w*) (at|for|around for) (other )?(alternatives|competitors|another (tool|provider|vendor))",
    r"\b(evaluat\w*|trying|tried|testing) (a )?(competitor|alternatives?)\b",
    # gave up, then found a way / fed up
    r"\b(i|we) (almost |nearly |had |have |just )?(gave up|given up)\b",
    r"\b(i|we) give up\b(?! (a|an|the|my|our|one|some|\d))",
    r"\b(i'?m|i am|we'?re|we are) (so )?(done with|fed up with|sick of) (this|your|you)\b",
    r"\bfed up\b",
    r"\blast (chance|straw)\b",
    r"\bwe will (leave|cancel|switch)\b|\bi will (leave|cancel|switch)\b",
]
_NEAR_CHURN = re.compile("|".join(f"(?:{p})" for p in _PHRASES), re.IGNORECASE)
# The same phrases on lower-cased text: twice as fast as IGNORECASE (38 -> 19 us a ticket
# on generated tickets and NLBSE'24 issues, the same matches), which keeps Python's
# regular-expression engine from its case-folding path at every position.
_NEAR_CHURN_LOWER = re.compile("|".join(f"(?:{p})" for p in _PHRASES))
#: Every phrase above contains one of these, phrase by phrase: the verbs of leaving
#: (cancel, leav-, left, quit, switch, churn, drop, mov-, give/gave/giving/given up,
#: unsubscrib-), what is ended (subscription, account, contract), where users go
#: (competitor, another, different, alternative), and the rest (done with, fed up, sick
#: of, last chance, last straw). A text with none of them cannot match, and most have
#: none (69 % of NLBSE'24's issues, nearly every generated ticket), so the expression,
#: 84 us on a 2,000-character issue and tried at every position, is skipped for them.
#: ``tests/test_patterns.py`` keeps an example of every phrase to hold this list to them.
_KEYWORDS = (
    "cancel", "leav", "left", "quit", "switch", "churn", "drop", "mov", "give up", "gave up", "giving up",
    "given up", "unsubscrib", "subscription", "account", "contract", "competitor", "another", "different",
    "alternative", "done with", "fed up", "sick of", "last chance", "last straw",
)  # fmt: skip


def near_churn_reason(text: str) -> str | None:
    """The words that flag ``text`` as near-churn, or ``None``.

    >>> near_churn_reason("I was about to cancel but then found the export button")
    'about to cancel'
    >>> near_churn_reason("How do I cancel an export job?") is None
    True
    """
    flat = " ".join(text.split())
    lowered = flat.lower()
    if len(lowered) != len(flat):  # a character whose lower case is longer: positions would shift
        match = _NEAR_CHURN.search(flat)
        return match.group(0) if match else None
    if not any(word in lowered for word in _KEYWORDS):
        return None
    found = _NEAR_CHURN_LOWER.search(lowered)
    return flat[found.start() : found.end()] if found else None


def near_churn(subject: str, body: str) -> bool:
    """Whether the ticket says the user was about to cancel, switch, or gave up.

    >>> near_churn("Export", "We almost switched to a competitor over this.")
    True
    >>> near_churn("Cancel button", "The cancel button on the invoice page does nothing")
    False
    """
    return near_churn_reason(f"{subject}. {body}") is not None
