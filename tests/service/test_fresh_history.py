"""NEXTBEST_FRESH_HISTORY: the served model's HCP history (gaps, fatigue windows) moves
on to each new UTC day by the contacts the feedback store holds since its cut-off; off,
it stays the cut-off's."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from nextbest import registry
from nextbest.api.app import create_app
from nextbest.learning.scoring import ScoringModel
from nextbest.service import runtime as runtime_module
from nextbest.service.runtime import ServingRuntime
from nextbest.settings import Settings
from nextbest.storage import repository
from nextbest.storage.db import make_engine, make_session_factory, migrate
from nextbest.storage.repository import FeedbackRecord, record_feedback

DAY = timedelta(days=1)
MOVE_FAILED = "could not move its HCP history on"


class SetClock:
    """A clock that reads ``at`` until a test sets it to another moment."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture(scope="module")
def loaded(trained) -> ScoringModel:
    return registry.load_alias(trained.settings)[0]


@pytest.fixture(scope="module")
def cut_off(loaded: ScoringModel) -> datetime:
    return pd.Timestamp(loaded.as_of).tz_localize("UTC").to_pydatetime()


@pytest.fixture(scope="module")
def day0(cut_off: datetime) -> datetime:
    """A day well after the cut-off: the snapshot's own touches are out of every
    fatigue window (the longest is 30 days) by then."""
    return (pd.Timestamp(cut_off) + pd.Timedelta(days=40)).normalize().to_pydatetime()


@pytest.fixture(scope="module")
def hcp(loaded: ScoringModel) -> str:
    return str(loaded.hcps["hcp_id"].iat[0])


@pytest.fixture
def settings(trained, database_url: str) -> Settings:
    """The trained registry served with the history moved, on a store of its own (a
    SQLite file, and PostgreSQL when NEXTBEST_TEST_POSTGRES_URL names one)."""
    return trained.settings.model_copy(
        update={
            "database_url": database_url,
            "fresh_history": True,
            "auth_enabled": False,
            "start_warm_s": 0.0,
        }
    )


def _store(settings: Settings, *events: FeedbackRecord) -> None:
    engine = make_engine(settings.resolved_database_url)
    try:
        migrate(engine)
        with make_session_factory(engine)() as session:
            stored = record_feedback(session, events=list(events))
        assert not stored.rejected, stored.rejected
    finally:
        engine.dispose()


def _contact(event_id: str, hcp: str, channel: str, at: datetime) -> FeedbackRecord:
    return FeedbackRecord(event_id, "delivered", at, hcp, channel=channel)


def _history(model: ScoringModel, hcp: str, channel: str, feature: str) -> float:
    """The served history's ``feature`` of ``channel`` for ``hcp``."""
    history = model.space.history
    assert history is not None
    column = history.channel_column(feature)[list(history.channels).index(channel)]
    return float(model.hcp_history[model.hcp_index.get_loc(hcp), column])


@contextmanager
def _serving(settings: Settings, clock: SetClock) -> Iterator[tuple[ServingRuntime, TestClient]]:
    runtime = ServingRuntime.start(settings, check_holdout_rate=False, clock=clock)
    try:
        with TestClient(create_app(settings, runtime)) as client:
            yield runtime, client
    finally:
        runtime.close()


def _until(predicate: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _features_as_of(client: TestClient) -> str:
    health = client.get("/healthz")
    assert health.status_code == 200, health.text
    return str(health.json()["features_as_of"])


def test_contacts_stored_since_the_cut_off_move_the_served_history(
    settings: Settings, day0: datetime, hcp: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Loaded on a day 40 days after its cut-off, the served model's history of an HCP
    e-mailed three and one days before and visited 20 days before counts them (its
    snapshot, as of the cut-off, knew none); a contact later that day is not yet. The
    warning of a stale model says what is still the cut-off's."""
    _store(
        settings,
        _contact("e1", hcp, "email", day0 - 3 * DAY),
        _contact("e2", hcp, "email", day0 - DAY),
        _contact("v1", hcp, "rep_visit", day0 - 20 * DAY),
        _contact("e3", hcp, "email", day0 + timedelta(hours=1)),  # after the day's start
    )
    with (
        caplog.at_level(logging.WARNING, logger="nextbest.service.runtime"),
        _serving(settings, SetClock(day0 + timedelta(hours=9))) as (runtime, client),
    ):
        assert _features_as_of(client) == day0.isoformat()
        (stale,) = [m for r in caplog.records if "retrain to refresh" in (m := r.getMessage())]
        moved = f"(recency, fatigue and engagement rates are moved on to {day0.date()})"
        assert f"engagement effects and outcome means are that old {moved}" in stale, stale
        # The gauge stays the cut-off: what a retrain alert measures (the records' age).
        assert REGISTRY.get_sample_value("nextbest_model_features_as_of_seconds") == (
            runtime.recommender.model.as_of.tz_localize("UTC").timestamp()
        )
        served = runtime.recommender.model
        assert served.features_as_of == pd.Timestamp(day0)
        assert _history(served, hcp, "email", "touches_7d") == 2
        assert _history(served, hcp, "email", "touches_30d") == 2
        assert _history(served, hcp, "email", "days_since") == pytest.approx(1.0)
        assert _history(served, hcp, "rep_visit", "touches_7d") == 0
        assert _history(served, hcp, "rep_visit", "touches_30d") == 1
        assert _history(served, hcp, "rep_visit", "days_since") == pytest.approx(20.0)


def test_a_contact_counts_in_the_served_records_once_its_engagement_is_known(
    settings: Settings, loaded: ScoringModel, day0: datetime, hcp: str
) -> None:
    """The served records move by the store's contacts whose engagement is known: a
    completed visit (its own engagement) counts engaged, an e-mail delivered five days
    before without an engagement counts not engaged, one delivered the day before
    waits (its open may still come)."""
    _store(
        settings,
        FeedbackRecord("v1", "completed", day0 - 5 * DAY, hcp, channel="rep_visit"),
        _contact("e1", hcp, "email", day0 - 5 * DAY),
        _contact("e2", hcp, "email", day0 - DAY),
    )
    with _serving(settings, SetClock(day0 + timedelta(hours=9))) as (runtime, client):
        assert _features_as_of(client) == day0.isoformat()
        served = runtime.recommender.model
        for channel, engaged in (("rep_visit", 1), ("email", 0)):
            touches = _history(loaded, hcp, channel, "touches")
            rate = _history(loaded, hcp, channel, "eng_rate")
            assert _history(served, hcp, channel, "touches") == touches + 1
            assert _history(served, hcp, channel, "eng_rate") == pytest.approx(
                (rate * (touches + 2) + engaged) / (touches + 3), rel=1e-5
            )
        assert _history(served, hcp, "email", "touches_7d") == 2  # the gaps know both


def test_the_moves_count_of_engaged_contacts_is_what_it_counts_engaged(
    settings: Settings, loaded: ScoringModel, day0: datetime, hcp: str
) -> None:
    """The number of engaged contacts a move reports (the log line, picks, explain) is
    the number its records count engaged: an open later than the engagement wait after
    its e-mail is read but counted as not engaged (left to a retrain), and so is an
    open after the day moved to."""
    from nextbest.service.recommend import history_moved_to

    _store(
        settings,
        FeedbackRecord("v1", "completed", day0 - 9 * DAY, hcp, channel="rep_visit"),
        _contact("e1", hcp, "email", day0 - 8 * DAY),
        FeedbackRecord("o1", "opened", day0 - 7 * DAY, hcp, channel="email"),
        _contact("e2", hcp, "email", day0 - 6 * DAY),
        FeedbackRecord("o2", "opened", day0 - 2 * DAY, hcp, channel="email"),  # past the wait
        _contact("e3", hcp, "email", day0 - DAY),
        FeedbackRecord("o3", "opened", day0 + timedelta(hours=1), hcp, channel="email"),
    )
    engine = make_engine(settings.resolved_database_url)
    try:
        with make_session_factory(engine)() as session:
            moved, read, engaged = history_moved_to(loaded, session, day0)
    finally:
        engine.dispose()
    assert (read, engaged) == (4, 2)
    touches = _history(loaded, hcp, "email", "touches")
    rate = _history(loaded, hcp, "email", "eng_rate")
    # e1 engaged, e2 not (its open came too late), e3 still waits.
    assert _history(moved, hcp, "email", "touches") == touches + 2
    assert _history(moved, hcp, "email", "eng_rate") == pytest.approx(
        (rate * (touches + 2) + 1) / (touches + 4), rel=1e-5
    )


def test_a_new_day_moves_the_served_history_on_in_the_background(
    settings: Settings, day0: datetime, hcp: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock's day turns: the first request starts one move, in the background,
    reading the store again; the recommender served before answers every request
    until the moved one (same version and rules, its score cache warmed with what the
    old one was asked) is swapped in,
    and /healthz says the new day from then on."""
    _store(settings, _contact("e1", hcp, "email", day0 - DAY))
    clock = SetClock(day0 + timedelta(hours=9))
    read = repository.contacts_between
    reading, release = threading.Event(), threading.Event()
    reads: list[datetime] = []

    def held(session, *, start: datetime, end: datetime) -> pd.DataFrame:
        reads.append(end)
        if end > day0:  # the next day's move waits for the test
            reading.set()
            assert release.wait(10)
        return read(session, start=start, end=end)

    monkeypatch.setattr(repository, "contacts_between", held)
    with _serving(settings, clock) as (runtime, client):
        old = runtime.recommender
        assert _history(old.model, hcp, "email", "touches_7d") == 1
        hcp_asked = client.post("/v1/recommendations", json={"hcp_id": hcp, "k": 2})
        assert hcp_asked.status_code == 200, hcp_asked.text
        assert len(old.cache) > 0
        # Contacted on day0, after its start: the next day's history counts it.
        _store(settings, _contact("e2", hcp, "email", day0 + timedelta(hours=2)))

        day1 = day0 + DAY
        clock.at = day1 + timedelta(hours=1)
        assert _features_as_of(client) == day0.isoformat()  # starts the move
        assert reading.wait(10)
        for _ in range(3):  # meanwhile: the recommender served before
            assert _features_as_of(client) == day0.isoformat()
            answer = client.post("/v1/recommendations", json={"hcp_id": hcp, "k": 2})
            assert answer.status_code == 200, answer.text
            assert runtime.recommender is old
        release.set()
        assert _until(lambda: _features_as_of(client) == day1.isoformat())

        moved = runtime.recommender
        assert moved is not old
        assert (moved.version, moved.rules) == (old.version, old.rules)
        # Warmed as a reload's: the HCP asked before is scored on the moved history.
        assert hcp in moved.hcp_ids[moved.cache.asked()[0]].tolist()
        assert _history(moved.model, hcp, "email", "touches_7d") == 2
        assert _history(moved.model, hcp, "email", "days_since") == pytest.approx(22 / 24)
        assert REGISTRY.get_sample_value("nextbest_model_features_as_of_seconds") == (
            moved.model.as_of.tz_localize("UTC").timestamp()
        )
    assert reads == [day0, day1]  # one move at load, one for the new day: no other


def test_off_or_with_a_model_that_cannot_move_the_history_stays_the_cut_offs(
    settings: Settings,
    loaded: ScoringModel,
    cut_off: datetime,
    day0: datetime,
    hcp: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Off (the default), the served history is the cut-off's, whatever the store
    holds and the day. On, a model trained before its artifact kept its recent touches
    is served as it is too, and the log says why, once."""
    _store(settings, _contact("e1", hcp, "email", day0 - DAY))
    clock = SetClock(day0 + timedelta(hours=9))
    off = settings.model_copy(update={"fresh_history": False})
    with caplog.at_level(logging.INFO, logger="nextbest.service.runtime"):
        with _serving(off, clock) as (runtime, client):
            assert _features_as_of(client) == cut_off.isoformat()
            clock.at += DAY
            assert _features_as_of(client) == cut_off.isoformat()
            assert runtime.wait_history_moved(timeout=5)
            served = runtime.recommender.model
            assert served.features_as_of == loaded.as_of
            np.testing.assert_array_equal(served.hcp_history, loaded.hcp_history)
        assert "HCP history moved on" not in caplog.text
        assert "cannot move its HCP history" not in caplog.text

        load_version = registry.load_version

        def old_artifact(*args, **kwargs) -> ScoringModel:
            model = load_version(*args, **kwargs)
            model.recent_touches = None  # as unpickled from before they were kept
            return model

        monkeypatch.setattr(registry, "load_version", old_artifact)
        with _serving(settings, clock) as (runtime, client):
            assert _features_as_of(client) == cut_off.isoformat()
            clock.at += DAY
            assert _features_as_of(client) == cut_off.isoformat()
            runtime.reload(force=True)  # the same version again: not said again
            assert runtime.wait_history_moved(timeout=5)
            assert _features_as_of(client) == cut_off.isoformat()
    said = [m for r in caplog.records if "cannot move its HCP history" in (m := r.getMessage())]
    assert len(said) == 1, said
    assert "retrained" in said[0] and cut_off.isoformat() in said[0], said[0]


def test_a_failed_move_keeps_the_history_served_and_is_tried_again(
    settings: Settings,
    cut_off: datetime,
    day0: datetime,
    hcp: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The feedback store unreadable: a load serves the cut-off's history and a new
    day's move keeps the day's before, each said in the log, no request failing; tried
    again, they move it once the store reads again."""
    _store(settings, _contact("e1", hcp, "email", day0 - DAY))
    monkeypatch.setattr(runtime_module, "RETRY_INTERVAL_S", 0.2)
    engine = make_engine(settings.resolved_database_url)

    def table(named: str, to: str) -> None:
        with engine.begin() as connection:
            connection.execute(sa.text(f"ALTER TABLE {named} RENAME TO {to}"))

    clock = SetClock(day0 + timedelta(hours=9))
    table("feedback_events", "feedback_events_away")
    try:
        with (
            caplog.at_level(logging.ERROR, logger="nextbest.service.runtime"),
            _serving(settings, clock) as (runtime, client),
        ):
            assert _features_as_of(client) == cut_off.isoformat()  # served as loaded
            assert MOVE_FAILED in caplog.text
            table("feedback_events_away", "feedback_events")
            assert _until(lambda: _features_as_of(client) == day0.isoformat())

            old = runtime.recommender
            caplog.clear()
            table("feedback_events", "feedback_events_away")
            clock.at += DAY
            assert _features_as_of(client) == day0.isoformat()
            assert runtime.wait_history_moved(timeout=10)
            assert runtime.recommender is old
            assert _features_as_of(client) == day0.isoformat()
            said = [r.getMessage() for r in caplog.records]
            assert len(said) == 1 and MOVE_FAILED in said[0], said
            assert "feedback_events" in said[0], said[0]  # the database's own words
            table("feedback_events_away", "feedback_events")
            assert _until(lambda: _features_as_of(client) == (day0 + DAY).isoformat())
    finally:
        engine.dispose()


def test_the_challenger_answering_a_share_of_hcps_moves_on_with_the_champion(
    settings: Settings, loaded: ScoringModel, day0: datetime, hcp: str, tmp_path
) -> None:
    """NEXTBEST_CHALLENGER_SHARE: the challenger's history moves on at its load and on
    each new day as the champion's does, so both answer by the same day's history."""
    from nextbest.learning.train import TrainResult

    own = settings.model_copy(update={"models_dir": tmp_path / "models", "challenger_share": 0.5})
    for alias in (None, "challenger"):  # the same model, registered twice
        result = TrainResult(model=loaded, metrics={}, params={"variant": "fresh"})
        registry.log_training_run(result, own, alias=alias)
    _store(own, _contact("e1", hcp, "email", day0 - DAY))
    clock = SetClock(day0 + timedelta(hours=9))
    with _serving(own, clock) as (runtime, client):
        challenger = runtime.recommender.challenger
        assert challenger is not None and challenger.version != runtime.model_version
        assert pd.Timestamp(challenger.model.features_as_of) == pd.Timestamp(day0)  # at load
        assert _history(challenger.model, hcp, "email", "touches_7d") == 1
        _store(own, _contact("e2", hcp, "email", day0 + timedelta(hours=2)))

        clock.at = day0 + DAY + timedelta(hours=1)
        _features_as_of(client)  # starts the move
        assert _until(lambda: _features_as_of(client) == (day0 + DAY).isoformat())
        assert runtime.wait_history_moved(timeout=10)
        moved = runtime.recommender.challenger
        assert moved is not None and moved.version == challenger.version
        assert moved.model is not challenger.model
        assert _history(moved.model, hcp, "email", "touches_7d") == 2
        assert _history(moved.model, hcp, "email", "days_since") == pytest.approx(22 / 24)
