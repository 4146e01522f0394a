"""Where each history rule's window ends, read from a real store (SQLite, PostgreSQL).

One meaning for every rule: a contact or decision at time t binds for N days,
until t + N exclusive. At t + N it binds no more, and the "lifts" time its reason
gives is the first whole minute at which it binds no more (never one at which it
still does).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from nextbest.policy.rules import HistoryRules, ServingRules
from nextbest.service.serving import live_history
from nextbest.storage.db import make_engine, make_session_factory, migrate
from nextbest.storage.repository import FeedbackRecord, record_feedback

ON_THE_MINUTE = datetime(2026, 6, 1, 9, 12, tzinfo=UTC)
WITHIN_A_MINUTE = datetime(2026, 6, 1, 9, 12, 30, tzinfo=UTC)
SECOND = timedelta(seconds=1)

# (rules, the event at t, its window N in days, what the reason starts with); each
# binds action A1 (an e-mail) for H1.
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], float, str]] = {
    "frequency cap": (
        {"channels": {"email": {"max_contacts": 1, "per_days": 5}}},
        {"event_type": "delivered", "channel": "email"},
        5,
        "frequency cap: 1 email contact in the last 5 days, max 1",
    ),
    "cool-down": (
        {"channels": {"email": {"cooldown_days": 3}}},
        {"event_type": "delivered", "channel": "email"},
        3,
        "cool-down: last email contact",
    ),
    "contact budget": (
        {"all_channels": {"max_contacts": 1, "per_days": 10}},
        {"event_type": "delivered", "channel": "webinar"},
        10,
        "contact budget: 1 contact on all channels in the last 10 days, max 1",
    ),
    "dismissal": (
        {"dismissal_days": 30},
        {"event_type": "dismissed", "action_id": "A1", "reason": "not_relevant"},
        30,
        "dismissed (not_relevant) in the last 30 days",
    ),
    "snooze": (
        {"dismissal_days": 30, "snooze_days": 7},
        {"event_type": "snoozed", "action_id": "A1"},
        7,
        "snoozed in the last 7 days",
    ),
}


def _lifts(reason: str) -> datetime:
    found = re.search(r", lifts (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", reason)
    assert found, reason
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


@pytest.mark.parametrize("at", [ON_THE_MINUTE, WITHIN_A_MINUTE], ids=["on-minute", "at-:30"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_rule_binds_until_t_plus_its_days_and_lifts_when_its_reason_says(
    database_url: str, case: str, at: datetime
) -> None:
    mapping, event, days, said = CASES[case]
    rules = ServingRules.from_mapping(mapping)
    catalog = HistoryRules(
        rules,
        channels=np.array(["email", "webinar"], dtype=object),
        action_ids=np.array(["A1", "A2"], dtype=object),
    )
    migrate(database_url)
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        stored = record_feedback(
            session, events=[FeedbackRecord(event_id="e1", occurred_at=at, hcp_id="H1", **event)]
        )
        assert not stored.rejected, stored.rejected
    ends = at + timedelta(days=days)

    def a1(now: datetime, hcp_ids: list[str]) -> tuple[bool, list[str]]:
        history = live_history(engine, rules=rules, hcp_ids=hcp_ids, now=now, contact_times=True)
        return bool(catalog.blocked(hcp_ids, history)[0, 0]), catalog.reasons("H1", history)[0]

    try:
        # The one-HCP statement and the batch's agree at every moment.
        for hcp_ids in (["H1"], ["H1", "H0"]):
            blocked, why = a1(ends - SECOND, hcp_ids)
            assert blocked, (case, why)
            (reason,) = why
            assert reason.startswith(said), reason
            lifts = _lifts(reason)
            # Never a minute at which the rule still binds, and no later than the next.
            assert ends <= lifts < ends + timedelta(minutes=1), (reason, ends)
            assert a1(ends, hcp_ids) == (False, []), f"{case} still binds at t + {days} days"
            assert a1(lifts, hcp_ids) == (False, [])
    finally:
        engine.dispose()
