"""A count and its noun, said the same way by the commands, the reasons and retrain."""

from __future__ import annotations

import pytest

from nextbest.wording import plural


@pytest.mark.parametrize(
    ("n", "one", "many", "said"),
    [
        (1, "HCP", None, "1 HCP"),
        (0, "HCP", None, "0 HCPs"),
        (1200, "logged decision", None, "1,200 logged decisions"),
        (3, "day", None, "3 days"),
        (1, "territory", "territories", "1 territory"),
        (2, "territory", "territories", "2 territories"),
    ],
)
def test_a_count_is_said_with_its_noun(n: int, one: str, many: str | None, said: str) -> None:
    assert plural(n, one, many) == said
