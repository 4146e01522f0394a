"""A served policy is replayed as it was served: with ``NEXTBEST_FRESH_HISTORY`` a
server moves its model's history on to each day by the contacts since the cut-off,
so the gate replays each logged decision with the history of the day it was served."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from nextbest.learning.scoring import ScoringModel
from nextbest.loop import gate, report, retrain
from nextbest.loop.evidence import (
    greedy_actions,
    load_decisions,
    serving_greedy_empty,
    version_loader,
)
from nextbest.loop.gate import GateConfig
from nextbest.settings import Settings
from nextbest.storage.db import store_session
from nextbest.storage.repository import FeedbackRecord, record_feedback
from nextbest.storage.tables import Recommendation

from .conftest import LoopWorld, ServedStore, register

pytestmark = pytest.mark.xdist_group("loop")

NO_CONTACTS = pd.DataFrame({"hcp_id": [], "channel": [], "timestamp": []})


def _decisions(hcp_ids: list[str], served: pd.Timestamp) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "hcp_id": hcp_ids,
            "timestamp": served,
            "decided_for": served,
            "purpose": "promotional",
            "channel_filter": None,
        }
    )


def _contacts_on_first_picks(
    model: ScoringModel, decisions: pd.DataFrame, at: list[pd.Timestamp]
) -> pd.DataFrame:
    """A contact at each of ``at`` for every HCP of ``decisions`` with a first pick, on
    that pick's channel: what tires it of the channel the snapshot would pick."""
    firsts = greedy_actions(model, decisions)
    rows = [
        (hcp_id, model.channel_by_action[action], when)
        for hcp_id, action in zip(decisions["hcp_id"], firsts, strict=True)
        if action is not None
        for when in at
    ]
    return pd.DataFrame(rows, columns=["hcp_id", "channel", "timestamp"])


def _without_recent_touches(model: ScoringModel) -> ScoringModel:
    state = model.__getstate__()
    state.pop("recent_touches")  # an artifact from before snapshots kept them
    old = ScoringModel.__new__(ScoringModel)
    old.__setstate__(state)
    return old


def test_each_decision_is_replayed_with_the_history_of_the_day_it_was_served(
    loop_world: LoopWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = loop_world.honest
    as_of = pd.Timestamp(model.as_of)
    day = as_of.normalize() + pd.Timedelta(days=3)
    later = day + pd.Timedelta(days=2)
    hcp_ids = model.hcps["hcp_id"].astype(str).tolist()[:200]
    on_cut_off = _decisions(hcp_ids, as_of + pd.Timedelta(minutes=5))
    on_day = _decisions(hcp_ids, day + pd.Timedelta(hours=10))
    on_later = _decisions(hcp_ids, later + pd.Timedelta(hours=10))
    # Contacts before ``day``, and one between it and ``later``.
    contacts = _contacts_on_first_picks(
        model,
        on_day,
        [day - pd.Timedelta(days=2), day - pd.Timedelta(days=1), day + pd.Timedelta(days=1)],
    )
    # One frame, days and channel filters mixed, labels not positions.
    decisions = pd.concat(
        [on_cut_off, on_day, on_day.assign(channel_filter="email"), on_later], ignore_index=True
    )
    decisions.index = decisions.index + 1000
    moves: list[pd.Timestamp] = []
    advanced = ScoringModel.advanced

    def counted(self: ScoringModel, day: pd.Timestamp, contacts: pd.DataFrame) -> ScoringModel:
        moves.append(pd.Timestamp(day))
        return advanced(self, day, contacts)

    monkeypatch.setattr(ScoringModel, "advanced", counted)
    replayed = greedy_actions(model, decisions, contacts)
    # Once per day served after the cut-off's, however many groups it has.
    assert sorted(moves) == [day.tz_localize("UTC"), later.tz_localize("UTC")]
    monkeypatch.setattr(ScoringModel, "advanced", advanced)

    n = len(hcp_ids)
    expected = np.concatenate(
        [
            greedy_actions(model, on_cut_off),  # served on the cut-off's day: as it is
            greedy_actions(model.advanced(day, contacts), on_day),
            greedy_actions(model.advanced(day, contacts), on_day.assign(channel_filter="email")),
            greedy_actions(model.advanced(later, contacts), on_later),
        ]
    )
    assert replayed.tolist() == expected.tolist()
    # The contacts change first picks, beyond what the days alone change.
    by_day = replayed[n : 2 * n]
    days_only = greedy_actions(model.advanced(day, NO_CONTACTS), on_day)
    frozen = greedy_actions(model, on_day)
    assert (by_day != days_only).sum() > n // 10
    assert (by_day != frozen).sum() > n // 10
    # The contact between the two days moves the later day's picks too.
    before_day = model.advanced(later, contacts[contacts["timestamp"] < day])
    assert replayed[3 * n :].tolist() != greedy_actions(before_day, on_later).tolist()

    # Without contacts, or for a model that cannot move: the snapshot, as before.
    assert greedy_actions(model, decisions)[n : 2 * n].tolist() == frozen.tolist()
    old = _without_recent_touches(model)
    assert not old.advances
    as_before = greedy_actions(old, decisions)
    assert greedy_actions(old, decisions, contacts).tolist() == as_before.tolist()


def test_a_day_is_replayed_with_the_contacts_reported_by_its_start(
    loop_world: LoopWorld,
) -> None:
    """A feed that reports yesterday's sends this morning: a server that moved its
    history at midnight moved it by none of them, and so does the replay, which read
    every contact stored since and gave the replayed policy what the served one never
    had. An engagement reported after midnight is not one yet either."""
    model = loop_world.honest
    day = pd.Timestamp(model.as_of).normalize() + pd.Timedelta(days=3)
    midnight = day.tz_localize("UTC")
    hcp_ids = model.hcps["hcp_id"].astype(str).tolist()[:200]
    on_day = _decisions(hcp_ids, day + pd.Timedelta(hours=10))
    contacts = _contacts_on_first_picks(model, on_day, [day - pd.Timedelta(days=1)])
    n = len(hcp_ids)

    def reported(at: pd.Timestamp, engaged: pd.Timestamp | None = None) -> pd.DataFrame:
        """``contacts`` as the store reads them: reported at ``at``, with their engagement."""
        never = pd.Series(pd.NaT, index=contacts.index, dtype="datetime64[ns, UTC]")
        return contacts.assign(
            action_id=None,
            engaged_at=never if engaged is None else engaged,
            reported_at=at,
            engagement_reported_at=never if engaged is None else at,
        )

    untouched = greedy_actions(model.advanced(day, NO_CONTACTS), on_day)
    touched = greedy_actions(model.advanced(day, contacts), on_day)
    assert (touched != untouched).sum() > n // 10  # the contacts move the picks
    evening = midnight - pd.Timedelta(hours=6)
    assert greedy_actions(model, on_day, reported(evening)).tolist() == touched.tolist()
    morning = midnight + pd.Timedelta(hours=6)
    assert greedy_actions(model, on_day, reported(morning)).tolist() == untouched.tolist()

    # Engaged an hour after the send: known that evening, or only the next morning.
    engaged = day - pd.Timedelta(days=1) + pd.Timedelta(hours=1)
    on_time = reported(evening, engaged.tz_localize("UTC"))
    late = on_time.assign(engagement_reported_at=morning)
    opened = greedy_actions(model.advanced(day, on_time), on_day)
    assert (opened != touched).sum() > 0  # an engagement moves some picks
    assert greedy_actions(model, on_day, on_time).tolist() == opened.tolist()
    assert greedy_actions(model, on_day, late).tolist() == touched.tolist()


def test_holdout_answers_are_rescored_with_the_history_of_their_day(
    loop_world: LoopWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nextbest.loop import evidence

    model = loop_world.honest
    day = pd.Timestamp(model.as_of).normalize() + pd.Timedelta(days=3)
    decisions = _decisions(model.hcps["hcp_id"].astype(str).tolist()[:5], day).assign(
        model_version="4", holdout=True, p_no_action=np.nan, action_id=None
    )
    contacts = _contacts_on_first_picks(model, decisions, [day - pd.Timedelta(days=1)])
    given: list[pd.DataFrame | None] = []
    replay = evidence.greedy_actions

    def spied(
        model: ScoringModel, decisions: pd.DataFrame, contacts: pd.DataFrame | None = None
    ) -> np.ndarray:
        given.append(contacts)
        return replay(model, decisions, contacts)

    monkeypatch.setattr(evidence, "greedy_actions", spied)
    serving_greedy_empty(decisions, lambda version: model, contacts)
    assert len(given) == 1 and given[0] is contacts


def _fresh(settings: Settings, on: bool = True) -> Settings:
    return settings.model_copy(update={"fresh_history": on})


def _contacted_yesterday(model: ScoringModel, settings: Settings) -> pd.DataFrame:
    """Store a contact for every HCP of the logged decisions the day before they were
    served (after ``model``'s cut-off), on the channel of its first pick by the
    snapshot, reported that day; returns them."""
    with store_session(settings.resolved_database_url) as session:
        logged = load_decisions(session)
    # The day the rounds were served on (UTC; the first, should they straddle midnight).
    day = pd.to_datetime(logged["timestamp"], utc=True).dt.normalize().min()
    yesterday = day - pd.Timedelta(days=1)
    assert pd.Timestamp(model.as_of).tz_localize("UTC") < yesterday  # contacts after it
    hcps = _decisions(logged["hcp_id"].drop_duplicates().tolist(), day.tz_localize(None))
    contacts = _contacts_on_first_picks(model, hcps, [yesterday.tz_localize(None)])
    with store_session(settings.resolved_database_url) as session:
        result = record_feedback(
            session,
            events=[
                FeedbackRecord(
                    event_id=f"contact-{i}",
                    event_type="delivered",
                    occurred_at=(when + timedelta(hours=9)).to_pydatetime(),
                    hcp_id=hcp_id,
                    channel=channel,
                )
                for i, (hcp_id, channel, when) in enumerate(contacts.itertuples(index=False))
            ],
            # Reported before the day served began: a server moving its history at
            # midnight read them (the replay moves it by what the store held then).
            received_at=(yesterday + pd.Timedelta(hours=10)).to_pydatetime(),
        )
        session.commit()
    assert len(result.accepted) == len(contacts) > 100
    return contacts


def test_the_gate_replays_both_with_the_history_the_store_moves_them_to(
    loop_world: LoopWorld,
    honest_loop: ServedStore,
    honest_copy: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = loop_world.honest
    register(loop_world.honest, honest_copy, alias="challenger")
    contacts = _contacted_yesterday(model, honest_copy)
    replays: list[tuple[ScoringModel, pd.DataFrame, pd.DataFrame | None, np.ndarray]] = []

    def spied(
        model: ScoringModel, decisions: pd.DataFrame, contacts: pd.DataFrame | None = None
    ) -> np.ndarray:
        actions = greedy_actions(model, decisions, contacts)
        replays.append((model, decisions, contacts, actions))
        return actions

    monkeypatch.setattr(gate, "greedy_actions", spied)
    config = GateConfig(evaluation_share=0.0)

    evaluation = gate.evaluate(_fresh(honest_copy), config=config, log=False)

    assert evaluation.history_contacts == len(contacts)
    assert len(replays) == 2  # the champion and the challenger
    for replayed, decisions, given, actions in replays:
        assert given is not None
        assert sorted(given["hcp_id"]) == sorted(contacts["hcp_id"])
        assert set(given["channel"]) == set(contacts["channel"])
        # Moved to the day served by yesterday's contacts: not the snapshot's picks.
        frozen = greedy_actions(replayed, decisions)
        assert (actions != frozen).mean() > 0.1
    replays.clear()

    off = gate.evaluate(_fresh(honest_copy, on=False), config=config, log=False)

    assert off.history_contacts is None
    assert [given for _, _, given, _ in replays] == [None, None]
    assert off.decision.n_decisions == evaluation.decision.n_decisions


def test_the_uplift_report_groups_by_what_was_served_on_the_moved_history(
    loop_world: LoopWorld, honest_loop: ServedStore, honest_copy: Settings
) -> None:
    """The report's "would serve" channel of each logged decision is the served
    version's first pick on the history it was served with (moved, with the setting)."""
    _contacted_yesterday(loop_world.honest, honest_copy)
    with store_session(honest_copy.resolved_database_url) as session:
        decisions = load_decisions(session)

    moved = report._would_serve(_fresh(honest_copy), decisions)
    frozen = report._would_serve(_fresh(honest_copy, on=False), decisions)

    # Contacted yesterday on the channel the snapshot would pick: often not picked again.
    assert (moved["channel"] != frozen["channel"]).mean() > 0.1
    assert (frozen["channel"] != report.UNKNOWN).all()


def test_retraining_rescores_old_holdout_answers_on_the_moved_history(
    loop_world: LoopWorld,
    honest_loop: ServedStore,
    honest_copy: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Holdout answers logged without their probability of no action (before schema
    revision 0004) are re-scored with the history their version served that day."""
    contacts = _contacted_yesterday(loop_world.honest, honest_copy)
    with store_session(honest_copy.resolved_database_url) as session:
        session.execute(sa.update(Recommendation).values(p_no_action=None))
        session.commit()
    given: list[pd.DataFrame | None] = []
    rescore = retrain.serving_greedy_empty

    def spied(
        decisions: pd.DataFrame, load_model: Any, contacts: pd.DataFrame | None = None
    ) -> tuple[np.ndarray, int]:
        given.append(contacts)
        return rescore(decisions, load_model, contacts)

    monkeypatch.setattr(retrain, "serving_greedy_empty", spied)
    for on in (True, False):
        settings = _fresh(honest_copy, on)
        with store_session(settings.resolved_database_url) as session:
            rows = retrain.read_feedback_rows(
                session,
                loop_world.dataset,
                since=None,
                load_model=version_loader(settings),
                settings=settings,
            )
        assert rows.n_holdout_unresolved == 0
    moved, frozen = given
    assert moved is not None and len(moved) == len(contacts)
    assert frozen is None
