"""Reason codes as callers send them: in any case, read as the rules file spells them."""

from __future__ import annotations

import pytest

from nextbest.storage.repository import reason_code, reason_problem

CODES = ("not_relevant", "Wrong_Content", "Other", "other")


@pytest.mark.parametrize(
    ("event_type", "sent", "read"),
    [
        ("dismissed", "Not_Relevant", "not_relevant"),
        ("snoozed", "NOT_RELEVANT", "not_relevant"),
        ("dismissed", "wrong_content", "Wrong_Content"),  # the file's spelling, whatever it is
        ("dismissed", "Other", "Other"),  # a code as spelt is that code
        ("dismissed", "OTHER", "OTHER"),  # two codes match in any case: neither is guessed
        ("opted_out", "Not_Relevant", "Not_Relevant"),  # free text, stored as sent
        ("accepted", "Not_Relevant", "Not_Relevant"),  # refused, as sent
    ],
)
def test_a_reason_code_is_read_in_any_case_where_one_code_alone_matches(
    event_type: str, sent: str, read: str
) -> None:
    assert reason_code(event_type, sent, CODES) == read


def test_a_reason_code_matching_two_codes_in_any_case_is_refused_as_sent() -> None:
    said = reason_problem("dismissed", "OTHER", CODES)
    assert said is not None and said.startswith("unknown reason code 'OTHER' for a dismissed event")
    assert reason_problem("dismissed", "Not_Relevant", CODES) is None
    assert reason_problem("dismissed", "Not_Relevant", None) is None  # no rules at hand


@pytest.mark.parametrize(
    ("sent", "hint"),
    [
        ("NOT_RELEVENT", " (did you mean 'not_relevant'?)"),  # a CRM picklist's, misspelt
        ("wrong", " (did you mean 'Wrong_Content'?)"),  # the start of one code's name
        ("OTHER", ""),  # Other or other: which one was meant cannot be told
        ("bored", ""),
    ],
)
def test_an_unknown_reason_code_names_the_code_it_is_near(sent: str, hint: str) -> None:
    """A dismissal's ``not_relevent`` was refused listing the codes, with none named,
    while the rules file's hcp_wide_reasons named the code for the same slip."""
    said = reason_problem("dismissed", sent, CODES, decision="dismiss")
    assert said == (
        f"unknown reason code '{sent}' for decision 'dismiss'{hint}; known: not_relevant, "
        "Wrong_Content, Other, other"
    )
