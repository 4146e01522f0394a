"""The one-query history read of the hot path agrees with the per-rule queries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine

from nextbest.storage.db import make_engine, make_session_factory, migrate
from nextbest.storage.repository import (
    FeedbackRecord,
    ServingHistory,
    contact_history,
    dismissals,
    record_feedback,
    serving_history,
)

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
LATER = NOW + timedelta(days=365)


def _events(seed: int = 0) -> list[FeedbackRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for n in range(600):
        kind = rng.choice(["delivered", "completed", "opened", "dismissed", "snoozed", "accepted"])
        dismissal = kind in ("dismissed", "snoozed", "accepted")
        out.append(
            FeedbackRecord(
                event_id=f"e{n}",
                event_type=str(kind),
                # Some after NOW: a decision at NOW does not see them.
                occurred_at=NOW - timedelta(days=float(rng.uniform(-10, 60))),
                hcp_id=f"H{rng.integers(12)}",
                channel=None if dismissal else str(rng.choice(["email", "webinar", "rep_visit"])),
                action_id=f"A{rng.integers(6)}" if dismissal or rng.random() < 0.5 else None,
                reason=str(rng.choice(["not_relevant", "other"])) if kind == "dismissed" else None,
            )
        )
    return out


def test_one_query_matches_contacts_per_window_and_dismissals(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    migrate(engine)
    sessions = make_session_factory(engine)
    with sessions() as session:
        assert not record_feedback(session, events=_events()).rejected
    ids = [f"H{i}" for i in range(14)]  # two without any event
    windows = [NOW - timedelta(days=d) for d in (28, 7, 3)]
    with sessions() as session:
        # The per-rule queries have no upper bound: compare with the whole store.
        found = serving_history(
            session,
            hcp_ids=ids,
            windows=windows,
            dismissed_since=NOW - timedelta(days=30),
            until=LATER,
        )
    with sessions() as session:
        for i, since in enumerate(windows):
            expected = contact_history(session, hcp_ids=ids, since=since)
            assert found.counts[i] == {key: n for key, (n, _) in expected.items()}
            if i == 0:
                assert found.last == {key: last for key, (_, last) in expected.items()}
        assert found.dismissed == dismissals(session, hcp_ids=ids, since=NOW - timedelta(days=30))
        # When, and whether a snooze: the pair's latest dismissal or snooze in the window.
        # An acceptance as the latest decision lifts the pair.
        latest: dict[tuple[str, str], FeedbackRecord] = {}
        for e in sorted(_events(), key=lambda e: (e.occurred_at, e.event_id)):
            decision = e.event_type in ("dismissed", "snoozed", "accepted")
            if decision and e.occurred_at >= NOW - timedelta(days=30):
                latest[(e.hcp_id, str(e.action_id))] = e
        assert found.dismissed_at == {
            pair: (e.occurred_at, e.event_type == "snoozed")
            for pair, e in latest.items()
            if e.event_type != "accepted"
        }
        assert any(e.event_type == "accepted" for e in latest.values())
        assert any(snoozed for _, snoozed in found.dismissed_at.values())
        assert found.counts[0] and found.dismissed and sum(map(len, found.counts)) > 0
        # Only what is asked for.
        bare = serving_history(session, hcp_ids=ids, windows=[], dismissed_since=None, until=NOW)
        assert bare.counts == [] and not bare.last and not bare.dismissed
        no_dismissals = serving_history(
            session, hcp_ids=ids, windows=windows[:1], dismissed_since=None, until=LATER
        )
        assert no_dismissals.counts[0] == found.counts[0] and not no_dismissals.dismissed
    engine.dispose()


def test_a_decision_does_not_see_what_was_reported_after_it(tmp_path: Path) -> None:
    """Read as of NOW, the store gives what a store holding only the events up to
    NOW gives: a plan for a past day counts no later contact or decision."""
    events = _events(seed=1)
    assert any(e.occurred_at > NOW for e in events)
    ids = [f"H{i}" for i in range(12)]
    windows = [NOW - timedelta(days=d) for d in (28, 7, 3)]
    found = []
    for name, stored in (("all", events), ("past", [e for e in events if e.occurred_at <= NOW])):
        engine = make_engine(f"sqlite:///{tmp_path / f'{name}.db'}")
        migrate(engine)
        with make_session_factory(engine)() as session:
            assert not record_feedback(session, events=stored).rejected
            until = NOW if name == "all" else LATER
            found.append(
                serving_history(
                    session,
                    hcp_ids=ids,
                    windows=windows,
                    dismissed_since=NOW - timedelta(days=30),
                    until=until,
                )
            )
        engine.dispose()
    assert found[0] == found[1]
    assert found[0].counts[0] and found[0].dismissed


def test_a_contact_acknowledged_a_few_minutes_ahead_counts_at_once(tmp_path: Path) -> None:
    """Feedback may run up to FUTURE_TOLERANCE ahead of the server's clock (skew); the
    service acknowledged it, so the next decision counts it."""
    from nextbest.policy.rules import ServingRules
    from nextbest.service.serving import live_history

    rules = ServingRules.from_mapping({"channels": {"email": {"cooldown_days": 3}}})
    engine = make_engine(f"sqlite:///{tmp_path / 'skew.db'}")
    migrate(engine)
    now = datetime.now(UTC)
    events = [
        FeedbackRecord(
            event_id=name,
            event_type="delivered",
            occurred_at=now + ahead,
            hcp_id=name,
            channel="email",
        )
        for name, ahead in (("H-skew", timedelta(minutes=10)), ("H-later", timedelta(hours=2)))
    ]
    with make_session_factory(engine)() as session:
        # Stored directly: the API refuses the one two hours ahead.
        assert not record_feedback(session, events=events[:1]).rejected
    with engine.begin() as connection:
        from sqlalchemy import insert

        from nextbest.storage.tables import FeedbackEvent

        connection.execute(
            insert(FeedbackEvent),
            [
                {
                    "event_id": "H-later",
                    "event_type": "delivered",
                    "occurred_at": events[1].occurred_at,
                    "received_at": now,
                    "hcp_id": "H-later",
                    "channel": "email",
                }
            ],
        )
    found = live_history(engine, rules=rules, hcp_ids=["H-skew", "H-later"], now=now)
    engine.dispose()
    assert found is not None
    assert ("H-skew", "email") in found.last  # ten minutes ahead: counted now
    assert ("H-later", "email") not in found.last  # two hours ahead: after the decision


def test_a_contact_without_a_channel_counts_in_the_all_channel_budget(tmp_path: Path) -> None:
    from nextbest.policy.rules import HistoryRules, ServingRules
    from nextbest.service.serving import live_history

    rules = ServingRules.from_mapping(
        {
            "channels": {"email": {"max_contacts": 1, "per_days": 28}},
            "all_channels": {"max_contacts": 2, "per_days": 28},
        }
    )
    engine = make_engine(f"sqlite:///{tmp_path / 'budget.db'}")
    migrate(engine)
    events = [
        FeedbackRecord(f"e{i}", "delivered", NOW - timedelta(days=i + 1), "H1", channel=channel)
        for i, channel in enumerate([None, "webinar"])
    ]
    with make_session_factory(engine)() as session:
        result = record_feedback(session, events=events)
    assert [e for _, e, _ in result.uncounted] == ["e0"]
    found = live_history(engine, rules=rules, hcp_ids=["H1"], now=NOW)
    engine.dispose()
    assert found is not None
    history = HistoryRules(
        rules,
        channels=np.array(["email", "webinar"], dtype=object),
        action_ids=np.array(["A1", "A2"], dtype=object),
    )
    # Two contacts in 28 days, one of them without a channel: the budget of 2 is spent,
    # while e-mail's own cap (no e-mail contact) is not.
    assert history.blocked(["H1"], found)[0].tolist() == [True, True]
    why = history.reasons("H1", found)
    assert why[0] == [
        "contact budget: 2 contacts on all channels in the last 28 days, max 2 "
        "(all_channels.max_contacts), lifts as these contacts leave the 28-day window"
    ]


WINDOWS = [NOW - timedelta(days=d) for d in (28, 3)]
DAY = timedelta(days=1)


def _two_emails_answered(database_url: str, events: list[FeedbackRecord]) -> Engine:
    """A store where answer R1 served H1 two e-mails, A1 and A2, six days before NOW,
    and ``events`` were fed back."""
    from nextbest.storage import log_recommendations
    from nextbest.storage.testing import recommendation_record, served_item

    migrate(database_url)
    engine = make_engine(database_url)
    items = (served_item(1, "A1"), served_item(2, "A2"))
    with make_session_factory(engine)() as session:
        log_recommendations(
            session,
            records=[recommendation_record("R1", "H1", items=items, created_at=NOW - 6 * DAY)],
        )
        session.commit()
        assert not record_feedback(session, events=events).rejected
    return engine


def _read_both_ways(engine: Engine) -> Iterator[ServingHistory]:
    """The history at NOW over WINDOWS by the one-HCP statement (H1) and the batch's."""
    for hcp_ids in (["H1"], ["H1", "H2"]):
        with make_session_factory(engine)() as session:
            yield serving_history(
                session, hcp_ids=hcp_ids, windows=WINDOWS, dismissed_since=None, until=NOW
            )


def _blocked(engine: Engine, *, max_contacts: int) -> list[list[bool]]:
    """Whether e-mail A1 and webinar A9 are closed to H1 and H2 at NOW, under a cap of
    ``max_contacts`` e-mails in 28 days, 3 days apart; disposes of ``engine``."""
    from nextbest.policy.rules import HistoryRules, ServingRules
    from nextbest.service.serving import live_history

    rules = ServingRules.from_mapping(
        {"channels": {"email": {"max_contacts": max_contacts, "per_days": 28, "cooldown_days": 3}}}
    )
    history = live_history(engine, rules=rules, hcp_ids=["H1", "H2"], now=NOW)
    engine.dispose()
    catalog = HistoryRules(
        rules,
        channels=np.array(["email", "webinar"], dtype=object),
        action_ids=np.array(["A1", "A9"], dtype=object),
    )
    assert history.counts[28.0].get(("H1", "email")) == 2
    return catalog.blocked(["H1", "H2"], history).tolist()


def test_a_recommended_item_is_one_contact_however_often_it_is_reported(
    database_url: str,
) -> None:
    engine = _two_emails_answered(
        database_url,
        [
            # A1 reported by the e-mail platform, then again by the CRM two days later
            # (its own event_id), then completed: one e-mail, one contact, 5 days ago.
            FeedbackRecord("esp-1", "delivered", NOW - 5 * DAY, "H1", "R1", "A1", "email"),
            FeedbackRecord("crm-7", "delivered", NOW - 2 * DAY, "H1", "R1", "A1", "email"),
            FeedbackRecord("crm-8", "completed", NOW - 1 * DAY, "H1", "R1", "A1"),
            # A2, the answer's other e-mail, sent too: a second contact.
            FeedbackRecord("esp-2", "delivered", NOW - 4 * DAY, "H1", "R1", "A2", "email"),
            # Contacts naming no item are each their own, as before.
            FeedbackRecord("mail-1", "delivered", NOW - 20 * DAY, "H2", channel="email"),
            FeedbackRecord("mail-2", "delivered", NOW - 20 * DAY, "H2", channel="email"),
        ],
    )
    with make_session_factory(engine)() as session:
        reference = contact_history(session, hcp_ids=["H1", "H2"], since=WINDOWS[0])
    assert reference == {("H1", "email"): (2, NOW - 4 * DAY), ("H2", "email"): (2, NOW - 20 * DAY)}
    for found in _read_both_ways(engine):
        assert found.counts[0][("H1", "email")] == 2
        assert ("H1", "email") not in found.counts[1]  # first reported 4 and 5 days ago
        assert found.last[("H1", "email")] == NOW - 4 * DAY
    # Two e-mails in 28 days, the last 4 days ago: under the cap of 3, past the
    # 3-day cool-down. Counted per report, the CRM's echo made three, 2 days ago.
    assert _blocked(engine, max_contacts=3) == [[False, False], [False, False]]


def test_an_open_of_an_item_never_reported_delivered_is_its_contact(database_url: str) -> None:
    """An e-mail platform that forwards opens and clicks but no deliveries: the open of
    an item proves its e-mail reached the HCP, and the caps count it, once, at the
    open; an open naming no item could belong to any send and counts nowhere."""
    from nextbest.storage.repository import contacts_between

    engine = _two_emails_answered(
        database_url,
        [
            # A1: opened 2 days ago, then clicked: one contact, at the open.
            FeedbackRecord("esp-o1", "opened", NOW - 2 * DAY, "H1", "R1", "A1"),
            FeedbackRecord("esp-c1", "clicked", NOW - 1 * DAY, "H1", "R1", "A1"),
            # A2: delivered 5 days ago, opened after: one contact, at the delivery.
            FeedbackRecord("esp-d2", "delivered", NOW - 5 * DAY, "H1", "R1", "A2"),
            FeedbackRecord("esp-o2", "opened", NOW - 1 * DAY, "H1", "R1", "A2"),
            # An open naming no send: no contact of its own.
            FeedbackRecord("esp-o9", "opened", NOW - 1 * DAY, "H2", channel="email"),
        ],
    )
    with make_session_factory(engine)() as session:
        reference = contact_history(session, hcp_ids=["H1", "H2"], since=WINDOWS[0])
        moved = contacts_between(session, start=NOW - 7 * DAY, end=NOW)
    assert reference == {("H1", "email"): (2, NOW - 2 * DAY)}
    assert moved["action_id"].tolist() == ["A2", "A1"]  # what a fresh history moves with
    assert [t.to_pydatetime() for t in moved["timestamp"]] == [NOW - 5 * DAY, NOW - 2 * DAY]
    assert moved["engaged_at"].iloc[1].to_pydatetime() == NOW - 2 * DAY  # its own open
    for found in _read_both_ways(engine):
        assert found.counts[0] == {("H1", "email"): 2}
        assert found.counts[1] == {("H1", "email"): 1}  # the open of 2 days ago
        assert found.last == {("H1", "email"): NOW - 2 * DAY}
    # H1: two e-mails in 28 days (the cap) and one 2 days ago (the 3-day cool-down):
    # no e-mail. Counted from deliveries alone, it had one, 5 days ago, and got more.
    assert _blocked(engine, max_contacts=2) == [[True, False], [False, False]]


def test_an_open_naming_only_an_answer_of_one_item_is_that_items_contact(
    database_url: str,
) -> None:
    """An e-mail platform that carries the recommendation_id in its tracking but not
    the action: an open of an answer that served one e-mail is that e-mail's open,
    stored naming it, and counts as its contact; one of an answer of two e-mails could
    be either, and counts nowhere. An open an earlier release stored as sent is the
    same event when resent."""
    from sqlalchemy import update

    from nextbest.storage import log_recommendations
    from nextbest.storage.tables import FeedbackEvent
    from nextbest.storage.testing import recommendation_record, served_item

    engine = _two_emails_answered(database_url, [])
    opens = [
        FeedbackRecord("esp-o3", "opened", NOW - 2 * DAY, "H2", "R2"),
        FeedbackRecord("esp-o4", "opened", NOW - 1 * DAY, "H1", "R1"),
    ]
    with make_session_factory(engine)() as session:
        one = recommendation_record(
            "R2", "H2", items=(served_item(1, "A3"),), created_at=NOW - 6 * DAY
        )
        log_recommendations(session, records=[one])
        session.commit()
        result = record_feedback(session, events=opens)
        assert (result.accepted, result.rejected, result.uncounted) == (
            ["esp-o3", "esp-o4"],
            [],
            [],
        )
        stored = {
            event_id: (action_id, channel)
            for event_id, action_id, channel in session.execute(
                select(FeedbackEvent.event_id, FeedbackEvent.action_id, FeedbackEvent.channel)
            )
        }
        assert stored == {"esp-o3": ("A3", "email"), "esp-o4": (None, None)}
        reference = contact_history(session, hcp_ids=["H1", "H2"], since=WINDOWS[0])
    assert reference == {("H2", "email"): (1, NOW - 2 * DAY)}
    for hcp_ids in (["H1"], ["H2"], ["H1", "H2"]):  # the one-HCP statement and the batch's
        with make_session_factory(engine)() as session:
            found = serving_history(
                session, hcp_ids=hcp_ids, windows=WINDOWS, dismissed_since=None, until=NOW
            )
        expected = {("H2", "email"): 1} if "H2" in hcp_ids else {}
        assert (found.counts[0], found.counts[1]) == (expected, expected)
        assert found.last == {key: NOW - 2 * DAY for key in expected}
    with make_session_factory(engine)() as session:
        assert record_feedback(session, events=opens).duplicates == ["esp-o3", "esp-o4"]
        # As a release before this one stored it: no action, no channel.
        session.execute(
            update(FeedbackEvent)
            .where(FeedbackEvent.event_id == "esp-o3")
            .values(action_id=None, channel=None)
        )
        session.commit()
        again = record_feedback(session, events=opens[:1])
        assert (again.duplicates, again.rejected) == (["esp-o3"], [])
    engine.dispose()


def test_an_explanations_contact_times_are_read_by_the_history_query_itself(
    database_url: str,
) -> None:
    """A rep plan or a recommendation with explain reads when each contact was (when a
    cap lifts): by the one history statement every answer reads, on SQLite and
    PostgreSQL, not a second query over the territory's HCPs, which took another
    connection and another snapshot (a reason could give a lift date from contacts
    other than those that made its cap bind). Counts, latest contacts, dismissals and
    consent are those read without the times."""
    import dataclasses

    from sqlalchemy import event

    from nextbest.policy.rules import ServingRules
    from nextbest.service.serving import live_history
    from nextbest.storage.repository import CONTACT_EVENT_TYPES

    rules = ServingRules.from_mapping(
        {
            "channels": {
                "email": {"max_contacts": 2, "per_days": 28, "cooldown_days": 3},
                "rep_visit": {"max_contacts": 1, "per_days": 7},
            },
            "dismissal_days": 30,
        }
    )
    engine = make_engine(database_url)
    migrate(engine)
    events = _events(seed=2)
    with make_session_factory(engine)() as session:
        assert not record_feedback(session, events=events).rejected
    ids = [f"H{i}" for i in range(14)]  # two without any event
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        plain = live_history(engine, rules=rules, hcp_ids=ids, now=NOW)
        statements.clear()
        explained = live_history(engine, rules=rules, hcp_ids=ids, now=NOW, contact_times=True)
        assert len(statements) == 1, statements
        one = live_history(engine, rules=rules, hcp_ids=["H3"], now=NOW, contact_times=True)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
        engine.dispose()
    assert plain.contact_times is None
    assert dataclasses.replace(explained, contact_times=None) == plain
    start = NOW - timedelta(days=max(rules.lookbacks()))
    expected: dict[tuple[str, str | None], list[datetime]] = {}
    for e in events:
        if e.event_type in CONTACT_EVENT_TYPES and start < e.occurred_at <= NOW:
            expected.setdefault((e.hcp_id, e.channel), []).append(e.occurred_at)
    newest_first = {key: tuple(sorted(ats, reverse=True)) for key, ats in expected.items()}
    assert explained.contact_times == newest_first
    assert sum(map(len, newest_first.values())) > len(newest_first)  # several per pair
    assert one.contact_times == {k: v for k, v in newest_first.items() if k[0] == "H3"}
    assert one.contact_times
