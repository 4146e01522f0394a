"""How nextbest words a count in what it says to people: the number, then its noun."""

from __future__ import annotations


def plural(n: int, one: str, many: str | None = None) -> str:
    """``n`` with its noun: "1 HCP", "1,200 HCPs", "3 days"; ``many`` for a noun whose
    plural is not ``one`` + "s" ("2 territories")."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"
