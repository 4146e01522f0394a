"""The served model's ids with their case-folded lookup (contract.parse.KnownIds): an id
sent in another case names the id meant, whatever case it is stored in."""

from __future__ import annotations

from nextbest.contract.parse import KnownIds, spelled_alike


def test_an_id_in_any_case_names_the_one_stored_and_an_ambiguous_one_names_none() -> None:
    known = KnownIds({"a0B5e00000AbCdEfGH": 0, "H000001": 1, "h-lower": 2, "xY": 3, "Xy": 4})
    assert "a0B5e00000AbCdEfGH" in known and "a0b5e00000abcdefgh" not in known
    assert known("H000001") and not known("h000001")
    assert len(known) == 5 and set(known) == {
        "a0B5e00000AbCdEfGH",
        "H000001",
        "h-lower",
        "xY",
        "Xy",
    }
    for sent in ("A0B5E00000ABCDEFGH", "a0b5e00000abcdefgh", "A0b5E00000aBcDeFgh"):
        assert spelled_alike(sent, known) == "a0B5e00000AbCdEfGH"
    assert spelled_alike("h000001", known) == "H000001"
    assert spelled_alike("H-LOWER", known) == "h-lower"
    # Two ids alike but for case: which one was meant is not known, so neither is named.
    assert spelled_alike("XY", known) is None and spelled_alike("xy", known) is None
    # A known id is no other's, and an unknown one names nothing.
    assert spelled_alike("a0B5e00000AbCdEfGH", known) is None
    assert spelled_alike("a0B5e00000AbCdEfGZ", known) is None
    # A plain membership test, as before, finds no mixed-case id in another case.
    assert spelled_alike("A0B5E00000ABCDEFGH", known.__contains__) is None
