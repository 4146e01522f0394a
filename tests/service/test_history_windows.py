"""The contact-history windows serving reads back over, worked out once per rules object
and shared by every request made under those rules."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nextbest.policy.rules import ServingRules
from nextbest.service.serving import _lookbacks

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def test_the_shared_windows_cannot_be_changed_by_one_request(tmp_path: Path) -> None:
    """The windows came back as the cached list itself: a caller that sorted it its own
    way (shortest first) changed every later request's, whose 7-day cap was then
    counted from 28 days back, its starts still longest first. They come back as a
    tuple, and the next request reads what the rules say."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        "channels:\n  email:\n    max_contacts: 2\n    per_days: 7\n"
        "all_channels:\n  max_contacts: 4\n  per_days: 28\n"
    )
    rules = ServingRules.load(path)
    windows, starts, _, _ = _lookbacks(rules, NOW)
    with contextlib.suppress(AttributeError):  # a tuple has no sort
        windows.sort()  # type: ignore[attr-defined]
    starts.reverse()  # a request's own list: the next one gets its own
    windows, starts, _, _ = _lookbacks(rules, NOW)
    assert list(windows) == rules.lookbacks() == [28.0, 7.0]
    assert starts == [NOW - timedelta(days=28), NOW - timedelta(days=7)]
    assert isinstance(windows, tuple)
