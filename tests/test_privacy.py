"""Example tickets are shown to people (alerts, reports): personal data must not be."""

from __future__ import annotations

import pytest

from pipeline.text.privacy import mask_personal

CASES = [
    ("Please reset, my login is jane.doe+work@acme-corp.co.uk", "Please reset, my login is [email]"),
    ("Call +44 20 7946 0958 after 5pm", "Call [phone] after 5pm"),
    ("Call 415-555-0199", "Call [phone]"),
    ("Invoice for account 00123456789 is wrong", "Invoice for account [number] is wrong"),
    (
        "Reset link https://app.example/reset?token=s3cr3t&u=42 expired",
        "Reset link https://app.example/reset?[…] expired",
    ),
    ("Hello Marcus, the export fails", "Hello [name], the export fails"),
    ("The export fails.\n\nThanks,\nMarcus Weber\nHead of Ops, ACME\n+49 30 1234567", "The export fails."),
    ("The export fails.\n--\nMarcus", "The export fails."),
    ("Error 500 since version 4.28.0 on 2 of 3 machines", "Error 500 since version 4.28.0 on 2 of 3 machines"),
]


@pytest.mark.parametrize(("text", "masked"), CASES)
def test_personal_data_is_masked_and_the_rest_kept(text: str, masked: str) -> None:
    assert mask_personal(text) == masked


def test_long_text_is_cut_on_one_line() -> None:
    out = mask_personal("word " * 200, limit=50)
    assert len(out) == 50 and out.endswith("…") and "\n" not in out


@pytest.mark.parametrize("at", [1080, 1110, 1118, 1119, 1120, 1121, 1125, 1200])
@pytest.mark.parametrize(
    "item", ["ana.berg@corp.example", "+1 (415) 555-0199", "4111111111111111", "\nThanks,\nAna Berg\n", "\nHi Maria,\n"]
)
def test_a_long_text_shows_what_masking_all_of_it_shows(at: int, item: str) -> None:
    # only the head of a long text is masked when its masked text runs well past the limit
    from pipeline.text.privacy import _masked

    words = "The export of the sales report fails again after the update. " * 40
    text = words[:at] + item + words[at:]
    whole = _masked(text)
    assert mask_personal(text) == whole[:279].rstrip() + "…"
    early = "Call +1 (415) 555-0199 or ana.berg@corp.example. " + text
    shown = mask_personal(early)
    assert shown.startswith("Call [phone] or [email].") and "555" not in shown and "ana.berg" not in shown


def test_numbers_and_phones_are_found_where_the_boundary_patterns_find_them() -> None:
    import random
    import re

    from pipeline.text.privacy import _LONG_NUMBER, _PHONE

    # the patterns as first written, with a boundary before the first character
    phone = re.compile(r"(?<!\w)\+?\d[\d ()./-]{7,}\d(?!\w)")
    number = re.compile(r"\b\d{6,}\b")
    rng = random.Random(4)
    texts = ["call +1 (415) 555-0199 or a+44 20 7946 0958", "order 1234567 and x1234567 and 123456_"]
    texts += ["".join(rng.choices("0123456789 +-()./a_\né", k=rng.randrange(0, 40))) for _ in range(50_000)]
    for text in texts:
        assert _PHONE.sub("[phone]", text) == phone.sub("[phone]", text), text
        assert _LONG_NUMBER.sub("[number]", text) == number.sub("[number]", text), text
