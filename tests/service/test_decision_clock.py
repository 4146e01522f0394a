"""One decision, one clock reading: answers that straddle midnight UTC (a Monday's
for the weekly holdout) stay consistent with what the log says of them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from nextbest import registry
from nextbest.policy.exploration import HOLDOUT_SALT, EpsilonGreedy, holdout_draw
from nextbest.service.recommend import Recommender, decision_time

SUNDAY = date(2030, 1, 13)
# Two tenths of a second before the week turns.
SUNDAY_NIGHT = datetime(2030, 1, 13, 23, 59, 59, 800_000, tzinfo=UTC)


class SteppingClock:
    """A clock that moves ``step`` on each time it is read, from ``start``."""

    def __init__(self, start: datetime, step: timedelta) -> None:
        self.next = start
        self.step = step

    def __call__(self) -> datetime:
        now, self.next = self.next, self.next + self.step
        return now


@pytest.fixture(scope="module")
def model(trained):
    return registry.load_alias(trained.settings)[0]


@pytest.mark.parametrize(
    ("on", "decided"),
    [
        (None, SUNDAY_NIGHT),
        (SUNDAY, SUNDAY_NIGHT),  # today's date: now
        (date(2030, 1, 12), datetime(2030, 1, 12, tzinfo=UTC)),  # another day: its start
        (datetime(2030, 1, 12, 9, 30), datetime(2030, 1, 12, 9, 30, tzinfo=UTC)),  # naive: UTC
    ],
    ids=["none", "today", "yesterday", "naive-time"],
)
def test_a_decision_time_is_read_against_the_clock_reading_given(
    on: datetime | date | None, decided: datetime
) -> None:
    assert decision_time(on, now=SUNDAY_NIGHT) == decided


def test_an_answer_served_as_the_week_turns_is_held_out_by_the_week_the_log_gives_it(
    model,
) -> None:
    """The holdout's week and the time an answer is logged as served came from two
    clock readings: served as a Monday began, an answer was drawn by the past week's
    holdout and logged in the new week, whose draw the report and the gate read it
    by. One reading: each answer's holdout is the draw of the week it takes effect
    in, as logged (the later of its date and when it was served)."""
    rate = 0.5
    recommender = Recommender(
        model=model,
        version="1",
        exploration=EpsilonGreedy(epsilon=0.0, holdout_rate=rate, holdout_days=7),
        clock=SteppingClock(SUNDAY_NIGHT, timedelta(milliseconds=100)),
    )
    ids = [str(h) for h in model.hcps["hcp_id"][:200]]
    sunday, _ = recommender.recommend_many(hcp_ids=ids, k=1)
    monday, _ = recommender.recommend_many(hcp_ids=ids, k=1)
    for answer in (*sunday, *monday):
        effect = max(answer.decided_for, answer.created_at).date()
        drawn = holdout_draw(answer.hcp_id, effect, days=7, salt=HOLDOUT_SALT) < rate
        assert answer.holdout == drawn, (answer.hcp_id, answer.decided_for, answer.created_at)
    # One answer on each side of midnight.
    assert {r.created_at.date() for r in sunday} == {SUNDAY}
    assert {r.created_at.date() for r in monday} == {SUNDAY + timedelta(days=1)}
    # The two weeks draw apart: the check above could tell one week from the other.
    assert {r.hcp_id for r in sunday if r.holdout} != {r.hcp_id for r in monday if r.holdout}


def test_a_send_for_today_is_decided_for_one_moment_across_midnight(
    trained, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """picks --log for today, its blocks served as midnight passed: the blocks served
    after it read today's date as a day gone and were logged as decided for its
    start, 24 hours before the blocks served before it. The date is read once: the
    whole send is logged as decided for one moment of that day."""
    from sqlalchemy import select

    from nextbest.service import picks
    from nextbest.service.picks import logged_picks
    from nextbest.storage.db import make_engine, make_session_factory
    from nextbest.storage.tables import Recommendation

    settings = trained.settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'store.db'}"}
    )
    ids = [str(h) for h in registry.load_alias(settings)[0].hcps["hcp_id"][:120]]
    monkeypatch.setattr(picks, "MAX_BATCH", 30)  # four blocks
    # Each reading a minute on: the third block is served on Monday.
    start = datetime(2030, 1, 13, 23, 58, tzinfo=UTC)
    done = logged_picks(
        settings, hcp_ids=ids, on=SUNDAY, clock=SteppingClock(start, timedelta(minutes=1))
    )
    assert done.n_logged == len(ids)
    engine = make_engine(settings.resolved_database_url)
    try:
        with make_session_factory(engine)() as session:
            decided = set(session.scalars(select(Recommendation.decided_for)).all())
    finally:
        engine.dispose()
    assert len(decided) == 1, sorted(decided)
    (moment,) = decided
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    assert moment.date() == SUNDAY and moment >= start, moment


def _runtime_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "retrain to refresh" in r.getMessage()]


@pytest.mark.parametrize(("days", "warned"), [(3, False), (100, True)])
def test_a_served_model_is_stale_or_not_by_the_clock_it_serves_by(
    trained, tmp_path, caplog: pytest.LogCaptureFixture, days: int, warned: bool
) -> None:
    """The warning of a stale model at load measured its age from the machine's
    date, whatever clock the runtime's recommenders decide by: a model served by a
    clock three days after its cut-off was warned about as months old. By that clock:
    warned at 100 days, not at three."""
    import logging

    from nextbest.service.recommend import cutoff
    from nextbest.service.runtime import ServingRuntime

    settings = trained.settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'store.db'}"}
    )
    at = cutoff(registry.load_alias(settings)[0]) + timedelta(days=days)
    with caplog.at_level(logging.WARNING, logger="nextbest.service.runtime"):
        runtime = ServingRuntime.start(settings, check_holdout_rate=False, clock=lambda: at)
    try:
        assert runtime.recommender.clock() == at  # the recommender decides by it too
    finally:
        runtime.close()
    said = _runtime_warnings(caplog)
    assert len(said) == warned, said
    if warned:
        assert f"({days} days ago)" in said[0], said[0]


# A moment after the trained world's history ends (its simulated catalog's approvals
# run on after it), and before the machine's date.
def _served_at(model) -> datetime:
    from nextbest.service.recommend import cutoff

    return cutoff(model) + timedelta(days=10, hours=12)


@pytest.mark.parametrize("serve", ["one", "batch"])
def test_serving_reads_the_contact_history_up_to_the_recommenders_clock(
    model, tmp_path, serve: str
) -> None:
    """Serving decided for the machine's date and read the contact history up to it,
    whatever the recommender's clock: an answer decided by a clock months ago missed
    the e-mail delivered an hour before that clock's now (its cool-down long over by
    the machine's date). Up to that clock's reading: the contact an hour before it
    counts, the one two days after does not, and the answer is decided for that
    reading (or, for a day gone, acted on at it)."""
    from nextbest.policy.rules import ServingRules
    from nextbest.service.reclog import RecommendationLog
    from nextbest.service.serving import recommend_batch, recommend_one
    from nextbest.storage.db import make_engine, make_session_factory, migrate
    from nextbest.storage.repository import FeedbackRecord, record_feedback

    at = _served_at(model)
    assert at < datetime.now(UTC) - timedelta(days=3)
    recommender = Recommender(
        model=model,
        version="1",
        exploration=EpsilonGreedy(epsilon=0.0, holdout_rate=0.0),
        rules=ServingRules.from_mapping({"channels": {"email": {"cooldown_days": 3}}}),
        clock=lambda: at,
    )
    # Two HCPs an e-mail is served to when no contact is known.
    plain, _ = recommender.recommend_many(
        hcp_ids=[str(h) for h in model.hcps["hcp_id"][:100]], k=1, channel="email"
    )
    before, after = [r.hcp_id for r in plain if r.items][:2]
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    sessions = make_session_factory(engine)
    with sessions() as session:
        stored = record_feedback(
            session,
            events=[
                FeedbackRecord("e1", "delivered", at - timedelta(hours=1), before, channel="email"),
                FeedbackRecord("e2", "delivered", at + timedelta(days=2), after, channel="email"),
            ],
        )
        assert not stored.rejected
    log = RecommendationLog(engine, flush_ms=0)
    try:
        for on in (None, at.date() - timedelta(days=1)):  # now; a day gone, acted on now
            if serve == "one":
                recs = [
                    recommend_one(
                        recommender,
                        engine,
                        log,
                        requester="test",
                        hcp_id=h,
                        k=1,
                        channel="email",
                        on=on,
                    )
                    for h in (before, after)
                ]
            else:
                recs, _, _ = recommend_batch(
                    recommender,
                    engine,
                    log,
                    requester="test",
                    hcp_ids=[before, after],
                    channel="email",
                    on=on,
                )
            served = {r.hcp_id: bool(r.items) for r in recs}
            assert served == {before: False, after: True}, (on, served)
            decided = at if on is None else datetime(on.year, on.month, on.day, tzinfo=UTC)
            assert {r.decided_for for r in recs} == {decided}, on
    finally:
        log.close()
        engine.dispose()


def test_a_rep_plan_is_for_the_day_of_the_recommenders_clock(model, tmp_path) -> None:
    """A plan asked for without a date was the machine's day's, whatever the
    recommender's clock; now that clock's day."""
    from nextbest.service.reclog import RecommendationLog
    from nextbest.service.serving import rep_call_plan
    from nextbest.storage.db import make_engine, migrate

    at = _served_at(model)
    recommender = Recommender(
        model=model,
        version="1",
        exploration=EpsilonGreedy(epsilon=0.0, holdout_rate=0.0),
        clock=lambda: at,
    )
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    log = RecommendationLog(engine, flush_ms=0)
    try:
        plan = rep_call_plan(
            recommender,
            engine,
            log,
            requester="test",
            rep_id="rep-1",
            territory_id=str(model.hcps["territory_id"].iat[0]),
        )
    finally:
        log.close()
        engine.dispose()
    assert plan.date == at.date() != datetime.now(UTC).date()
    assert plan.suggestions and {r.decided_for for r in plan.suggestions} == {at}
