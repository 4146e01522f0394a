"""The single-HCP shape of the hot-path history query, read through a plain Core
connection, gives what the many-HCP shape gives through a session, on each backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nextbest.storage.db import make_engine, make_session_factory, migrate
from nextbest.storage.repository import FeedbackRecord, record_feedback, serving_history

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _events() -> list[FeedbackRecord]:
    rng = np.random.default_rng(3)
    out = []
    for n in range(300):
        kind = str(
            rng.choice(
                [
                    *("delivered", "completed", "opened"),
                    *("dismissed", "snoozed", "accepted"),
                    *("opted_out", "opted_in"),
                ]
            )
        )
        dismissal = kind in ("dismissed", "snoozed", "accepted")
        consent = kind.startswith("opted_")
        channel = str(rng.choice(["email", "rep_visit", "*"]))
        out.append(
            FeedbackRecord(
                event_id=f"e{n}",
                event_type=kind,
                # A few after NOW, which a decision at NOW must not see (but consent).
                occurred_at=NOW - timedelta(days=float(rng.uniform(-5, 60))),
                hcp_id=f"H{rng.integers(5)}",
                channel=None
                if dismissal or (consent and channel == "*")
                else channel.replace("*", "email"),
                action_id=f"A{rng.integers(4)}"
                if not consent and (dismissal or rng.random() < 0.5)
                else None,
                reason="not_relevant" if kind == "dismissed" else None,
            )
        )
    return out


def test_one_hcp_through_a_connection_matches_the_many_hcp_query(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        sessions = make_session_factory(engine)
        with sessions() as session:
            assert not record_feedback(session, events=_events()).rejected
        ids = [f"H{i}" for i in range(6)]  # H5 has no event
        windows = [NOW - timedelta(days=d) for d in (28, 7)]
        since = NOW - timedelta(days=30)
        with sessions() as session:
            many = serving_history(
                session,
                hcp_ids=ids,
                windows=windows,
                dismissed_since=since,
                until=NOW,
                repeated_since=since,
            )
        seen_dismissal = False
        for hcp in ids:
            with engine.connect() as connection:
                one = serving_history(
                    connection,
                    hcp_ids=[hcp, hcp],
                    windows=windows,
                    dismissed_since=since,
                    until=NOW,
                    repeated_since=since,
                )
            for i in range(len(windows)):
                assert one.counts[i] == {k: n for k, n in many.counts[i].items() if k[0] == hcp}
            assert one.last == {k: t for k, t in many.last.items() if k[0] == hcp}
            assert one.dismissed == {k: r for k, r in many.dismissed.items() if k[0] == hcp}
            assert one.sent == {k: at for k, at in many.sent.items() if k[0] == hcp}
            assert one.consent == {k: c for k, c in many.consent.items() if k[0] == hcp}
            assert one.consent_unmatched == {
                k: at for k, at in many.consent_unmatched.items() if k[0] == hcp
            }
            seen_dismissal = seen_dismissal or bool(one.dismissed)
        assert seen_dismissal and many.counts[0] and many.counts[1]
        # The latest contact naming each action within repeated_since, for repeat_days.
        named = [
            e
            for e in _events()
            if e.action_id is not None
            and e.event_type in ("delivered", "completed", "opened")
            and since < e.occurred_at <= NOW
        ]
        assert many.sent and set(many.sent) <= {(e.hcp_id, e.action_id) for e in named}
        assert all(at <= NOW and at > since for at in many.sent.values())
        # Consent is read whatever its time: events after NOW count, for every channel
        # (None) and per channel (stored with no catalog: to be read against one), and
        # both kinds are among the latest.
        assert max(at for at, _ in many.consent.values()) > NOW
        assert max(many.consent_unmatched.values()) > NOW
        assert {channel for _, channel in many.consent} == {None}
        assert {out for _, out in many.consent.values()} == {True, False}
        assert {(c, out) for _, c, out in many.consent_unmatched} == {
            (c, out) for c in ("email", "rep_visit") for out in (True, False)
        }
        with engine.connect() as connection:
            nothing = serving_history(
                connection, hcp_ids=["H5"], windows=windows, dismissed_since=since, until=NOW
            )
        assert nothing.counts == [{}, {}] and not nothing.last and not nothing.dismissed
    finally:
        engine.dispose()


def test_one_hcp_window_bounds_are_exact_whatever_the_callers_offset(database_url: str) -> None:
    # Window starts given at UTC+02:00 and events exactly on a start (not counted:
    # a contact at t counts until t + N days, exclusive) or one microsecond after it
    # (counted); a window on a whole second too, where a stored timestamp and a
    # naive rendering of it differ in text.
    plus_two = timezone(timedelta(hours=2))
    start_7 = (NOW - timedelta(days=7)).astimezone(plus_two)
    start_28 = (NOW - timedelta(days=28, microseconds=250)).astimezone(plus_two)
    tick = timedelta(microseconds=1)
    at = {
        "on_7": start_7,
        "after_7": start_7 + tick,
        "on_28": start_28,
        "after_28": start_28 + tick,
        "now": NOW,  # counted (<= until)
        "after_now": NOW + tick,  # not counted
    }
    events = [
        FeedbackRecord(
            event_id=name, event_type="delivered", occurred_at=when, hcp_id="H", channel="email"
        )
        for name, when in at.items()
    ]
    engine = make_engine(database_url)
    try:
        migrate(engine)
        with make_session_factory(engine)() as session:
            assert not record_feedback(session, events=events).rejected
        with engine.connect() as connection:
            found = serving_history(
                connection,
                hcp_ids=["H"],
                windows=[start_28, start_7],
                dismissed_since=None,
                until=NOW,
            )
        assert found.counts == [{("H", "email"): 4}, {("H", "email"): 2}]
        assert found.last == {("H", "email"): NOW}
        assert found.last[("H", "email")].utcoffset() == timedelta(0)
    finally:
        engine.dispose()


def test_live_history_reads_through_the_reader_and_outlives_a_dropped_connection(
    database_url: str,
) -> None:
    from sqlalchemy import text

    from nextbest.policy.rules import ServingRules
    from nextbest.service.serving import live_history
    from nextbest.storage.db import READER_POOL_SIZE, make_reader

    engine = make_engine(database_url)
    reader = make_reader(engine)
    rules = ServingRules.from_mapping(
        {"channels": {"email": {"max_contacts": 2, "per_days": 28}}, "dismissal_days": 30}
    )
    try:
        migrate(engine)
        events = _events()
        with make_session_factory(engine)() as session:
            assert not record_feedback(session, events=events).rejected
        hcp = "H1"
        expected = sum(
            1
            for e in events
            if e.hcp_id == hcp
            and e.event_type in ("delivered", "completed")
            and e.channel == "email"
            and NOW - timedelta(days=28) <= e.occurred_at <= NOW
        )
        assert expected > 0

        def email_contacts() -> int:
            history = live_history(reader, rules=rules, hcp_ids=[hcp], now=NOW)
            assert history is not None
            return sum(n for (h, key), n in history.counts[28].items() if key == "email")

        assert email_contacts() == expected
        if engine.dialect.name == "sqlite":
            assert reader is engine  # a local file: nothing to save
            return
        # PostgreSQL: autocommit and no ping on checkout (one round trip per read).
        assert reader is not engine and not reader.pool._pre_ping
        assert reader.pool.size() == READER_POOL_SIZE  # what docs/serving.md tells DBAs
        with reader.connect() as connection:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        # The server drops the pooled connection (a restart or an idle timeout would).
        with engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            admin.commit()
        assert email_contacts() == expected  # read again on a fresh connection
    finally:
        if reader is not engine:
            reader.dispose()
        engine.dispose()


def test_the_event_loop_read_matches_and_outlives_dropped_connections(database_url: str) -> None:
    import asyncio

    from sqlalchemy import text

    from nextbest.storage.db import make_async_reader
    from nextbest.storage.repository import serving_history_async

    engine = make_engine(database_url)
    pool = make_async_reader(engine)
    try:
        if pool is None:
            assert engine.dialect.name == "sqlite"  # a local file: read in place
            return
        migrate(engine)
        with make_session_factory(engine)() as session:
            assert not record_feedback(session, events=_events()).rejected
        windows = [NOW - timedelta(days=d) for d in (28, 7)]
        since = NOW - timedelta(days=30)
        with engine.connect() as connection:
            expected = {
                hcp: serving_history(
                    connection,
                    hcp_ids=[hcp],
                    windows=windows,
                    dismissed_since=since,
                    until=NOW,
                    repeated_since=since,
                )
                for hcp in ("H0", "H1", "H5")
            }
        assert expected["H0"].sent or expected["H1"].sent

        async def read_all() -> dict[str, object]:
            return {
                hcp: await serving_history_async(
                    pool,
                    engine.dialect,
                    hcp_id=hcp,
                    windows=windows,
                    dismissed_since=since,
                    until=NOW,
                    repeated_since=since,
                )
                for hcp in expected
            }

        async def scenario() -> None:
            await pool.open(wait=True)
            try:
                assert await read_all() == expected
                # The server drops every pooled connection (a restart would):
                with engine.connect() as admin:
                    admin.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    )
                    admin.commit()
                assert await read_all() == expected  # each read retried on a new one
            finally:
                await pool.close()

        asyncio.run(scenario())
    finally:
        engine.dispose()


def test_a_snooze_suppresses_for_its_own_window(database_url: str) -> None:
    """snooze_days (shorter) and dismissal_days each count from the pair's latest
    dismissal or snooze, read in the one history query, for one HCP and for many."""
    from nextbest.policy.rules import HistoryRules, ServingRules
    from nextbest.service.serving import live_history

    def event(n: int, kind: str, action: str, days_ago: float, hcp: str = "H1") -> FeedbackRecord:
        return FeedbackRecord(
            event_id=f"s{n}",
            event_type=kind,
            occurred_at=NOW - timedelta(days=days_ago),
            hcp_id=hcp,
            action_id=action,
            reason="not_relevant" if kind == "dismissed" else None,
        )

    events = [
        event(1, "dismissed", "A1", 10),  # within 30 days: suppressed
        event(2, "snoozed", "A2", 10),  # beyond 7 days: back
        event(3, "snoozed", "A3", 3),  # within 7 days: suppressed
        event(4, "snoozed", "A4", 20),
        event(5, "dismissed", "A4", 12),  # the latest decides: a dismissal, suppressed
        event(6, "dismissed", "A5", 20),
        event(7, "snoozed", "A5", 10),  # the latest decides: a snooze, 10 days ago, back
        event(8, "snoozed", "A3", 3, hcp="H2"),
    ]
    engine = make_engine(database_url)
    try:
        migrate(engine)
        with make_session_factory(engine)() as session:
            assert not record_feedback(session, events=events).rejected
        both = ServingRules.from_mapping({"dismissal_days": 30, "snooze_days": 7})
        for hcp_ids in (["H1"], ["H1", "H2"]):
            history = live_history(engine, rules=both, hcp_ids=hcp_ids, now=NOW)
            assert history is not None
            mine = {pair for pair in history.dismissed if pair[0] == "H1"}
            assert mine == {("H1", "A1"), ("H1", "A3"), ("H1", "A4")}
            assert ("H1", "A3") in history.snoozed and ("H1", "A4") not in history.snoozed
        actions = np.array(["A1", "A2", "A3", "A4", "A5"], dtype=object)
        said = HistoryRules(
            both, channels=np.array(["email"] * 5, dtype=object), action_ids=actions
        )
        why = said.reasons("H1", live_history(engine, rules=both, hcp_ids=["H1"], now=NOW))

        def lifts(days: float) -> str:
            return f", lifts {NOW + timedelta(days=days):%Y-%m-%d %H:%M} UTC"

        assert why == [
            ["dismissed (not_relevant) in the last 30 days (dismissal_days)" + lifts(20)],
            [],
            ["snoozed in the last 7 days (snooze_days)" + lifts(4)],
            ["dismissed (not_relevant) in the last 30 days (dismissal_days)" + lifts(18)],
            [],
        ]
        # Without snooze_days a snooze lasts as long as a dismissal (as before).
        plain = ServingRules.from_mapping({"dismissal_days": 30})
        history = live_history(engine, rules=plain, hcp_ids=["H1"], now=NOW)
        assert history is not None and len(history.dismissed) == 5
        # Snoozes alone: dismissals suppress nothing.
        only = ServingRules.from_mapping({"snooze_days": 7})
        history = live_history(engine, rules=only, hcp_ids=["H1"], now=NOW)
        assert history is not None and set(history.dismissed) == {("H1", "A3")}
    finally:
        engine.dispose()


def test_a_held_reader_keeps_one_connection_sees_later_commits_and_outlives_its_loss(
    tmp_path,
) -> None:
    import threading

    from sqlalchemy import event

    from nextbest.policy.rules import ServingRules
    from nextbest.service.serving import live_history
    from nextbest.storage.db import HeldReader

    engine = make_engine(f"sqlite:///{tmp_path / 'nextbest.db'}")
    migrate(engine)
    checked_out: list[tuple[int, object]] = []  # (thread, DBAPI connection) per checkout
    event.listen(
        engine,
        "checkout",
        lambda dbapi, _record, _proxy: checked_out.append((threading.get_ident(), dbapi)),
    )
    rules = ServingRules.from_mapping({"channels": {"email": {"max_contacts": 9, "per_days": 28}}})
    sessions = make_session_factory(engine)
    held = HeldReader(engine)

    def deliver(n: int) -> None:
        with sessions() as session:
            events = [
                FeedbackRecord(
                    event_id=f"d{n}",
                    event_type="delivered",
                    occurred_at=NOW - timedelta(days=1, minutes=n),
                    hcp_id="H",
                    channel="email",
                )
            ]
            assert not record_feedback(session, events=events).rejected

    reads: list[object] = []  # the connections the reads checked out

    def contacts() -> int:
        before = len(checked_out)
        history = live_history(held, rules=rules, hcp_ids=["H"], now=NOW)
        reads.extend(dbapi for _, dbapi in checked_out[before:])
        return history.counts[28].get(("H", "email"), 0)

    try:
        for n in range(3):
            assert contacts() == n  # each read sees what was committed before it
            deliver(n)
        assert len(reads) == 1  # one connection kept for the three reads, not one each

        # Read from another thread: through the pool, the kept connection left alone.
        found: list[int] = []
        other = threading.Thread(target=lambda: found.append(contacts()))
        other.start()
        other.join()
        assert found == [3]
        assert [thread for thread, _ in checked_out].count(other.ident) == 1
        del reads[1:]

        # The kept connection dies under it: the read runs again on a new one.
        reads[0].close()  # type: ignore[attr-defined]
        assert contacts() == 3
        assert len(reads) == 2 and reads[1] is not reads[0]
        assert contacts() == 3 and len(reads) == 2
        assert engine.pool.checkedout() == 1
        held.close()
        assert engine.pool.checkedout() == 0
    finally:
        held.close()
        engine.dispose()


def test_the_one_hcp_read_converts_each_timestamp_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statement compares a window's start and the decision time twice each; the
    read converts each to the database's form once per execution, and the answer
    is the one the many-HCP query (SQLAlchemy's own execution) gives."""
    from nextbest.storage import repository
    from nextbest.storage.tables import UTCDateTime

    converted: list[datetime] = []
    original = UTCDateTime.process_bind_param

    def counting(self: UTCDateTime, value: datetime | None, dialect: Any) -> Any:
        if value is not None:
            converted.append(value)
        return original(self, value, dialect)

    engine = make_engine(database_url)
    try:
        migrate(engine)
        with make_session_factory(engine)() as session:
            assert not record_feedback(session, events=_events()).rejected
        windows = [NOW - timedelta(days=d) for d in (28, 7)]
        since = NOW - timedelta(days=30)
        with engine.connect() as connection:
            many = serving_history(
                connection, hcp_ids=["H1", "H2"], windows=windows, dismissed_since=since, until=NOW
            )
        # Compiled afresh: the conversions are taken from the type when compiled.
        monkeypatch.setattr(repository, "_DRIVER_HISTORY", {})
        monkeypatch.setattr(UTCDateTime, "process_bind_param", counting)
        with engine.connect() as connection:
            one = serving_history(
                connection, hcp_ids=["H1"], windows=windows, dismissed_since=since, until=NOW
            )
        assert sorted(converted) == sorted([*windows, since, NOW])
        assert one.counts[0] == {k: n for k, n in many.counts[0].items() if k[0] == "H1"}
        assert one.counts[1] == {k: n for k, n in many.counts[1].items() if k[0] == "H1"}
        assert one.last == {k: t for k, t in many.last.items() if k[0] == "H1"}
        assert one.dismissed_at == {k: t for k, t in many.dismissed_at.items() if k[0] == "H1"}
        assert one.counts[0] and one.dismissed_at  # the comparison compared something
    finally:
        engine.dispose()


def test_the_windows_of_rules_are_worked_out_once_and_follow_new_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each read takes its windows from the rules it is given: the rules served
    (the same object until a reload replaces it) are not asked again per request,
    and rules with other windows read those."""
    from nextbest.policy.rules import ServingRules
    from nextbest.service.serving import live_history

    engine = make_engine(f"sqlite:///{tmp_path / 'nextbest.db'}")
    migrate(engine)
    events = [
        FeedbackRecord(
            event_id=f"d{days}",
            event_type="delivered",
            occurred_at=NOW - timedelta(days=days, hours=1),
            hcp_id="H",
            channel="email",
        )
        for days in (2, 10, 20)
    ]
    with make_session_factory(engine)() as session:
        assert not record_feedback(session, events=events).rejected
    asked: list[ServingRules] = []
    lookbacks = ServingRules.lookbacks

    def counted(rules: ServingRules) -> list[float]:
        asked.append(rules)
        return lookbacks(rules)

    monkeypatch.setattr(ServingRules, "lookbacks", counted)

    def rules_of(days: int) -> ServingRules:
        return ServingRules.from_mapping(
            {"channels": {"email": {"max_contacts": 9, "per_days": days}}}
        )

    try:
        served = rules_of(28)
        for _ in range(3):
            history = live_history(engine, rules=served, hcp_ids=["H"], now=NOW)
            assert history.counts == {28: {("H", "email"): 3}}
        assert asked == [served]
        reloaded = rules_of(7)
        history = live_history(engine, rules=reloaded, hcp_ids=["H"], now=NOW)
        assert history.counts == {7: {("H", "email"): 1}}
        history = live_history(engine, rules=served, hcp_ids=["H"], now=NOW)
        assert history.counts == {28: {("H", "email"): 3}}
    finally:
        engine.dispose()
