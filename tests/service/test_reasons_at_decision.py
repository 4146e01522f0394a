"""Reasons speak as of the decision, not of the model's history cut-off: gaps count
the days since the cut-off, and a channel the HCP was contacted on since then says
nothing of its old record or gap (nor does any contact leave "last contacted")."""

from __future__ import annotations

import re
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from nextbest import registry
from nextbest.errors import InvalidRequestError
from nextbest.features.history import ENGAGEMENT_WAIT_DAYS
from nextbest.learning import reasons as reasons_module
from nextbest.learning.scoring import ScoringModel
from nextbest.policy.exploration import EpsilonGreedy
from nextbest.policy.rules import LiveHistory
from nextbest.service.recommend import (
    Recommendation,
    Recommender,
    cutoff,
    history_day,
    lapses,
)

GAP = re.compile(r"^no (.+) in (\d+) (day|days|week|weeks)$")
NO_CONTACTS = pd.DataFrame({"hcp_id": [], "channel": [], "timestamp": []})
RECORD = re.compile(r" so far(: a fresh channel for this HCP)?$")  # the own channel's record
CONTACTED = re.compile(r"^(last contacted .+ ago|never contacted before)$")
TOPIC = re.compile(r" pieces? on .+$")  # the topic's record: "engaged with 2 of 3 pieces on dosing"


@pytest.fixture(scope="module")
def model(trained) -> ScoringModel:
    loaded, _ = registry.load_alias(trained.settings)
    return loaded


def _recommender(model: ScoringModel, cache_hcps: int = 0) -> Recommender:
    return Recommender(
        model=model,
        version="1",
        exploration=EpsilonGreedy(epsilon=0.0, holdout_rate=0.0, seed=0),
        cache_pairs=cache_hcps * model.n_actions,
    )


def _gaps(model: ScoringModel, rec: Recommender, n_hcps: int = 150) -> list[tuple[str, str, str]]:
    """(hcp_id, action_id, gap sentence) of served items, decided at the cut-off."""
    at_cutoff = cutoff(model)
    found = []
    for hcp_id in model.hcps["hcp_id"].astype(str).tolist()[:n_hcps]:
        answer = rec.recommend(hcp_id=hcp_id, k=5, on=at_cutoff)
        for item in answer.items:
            found += [(hcp_id, item.action_id, r) for r in item.reasons if GAP.match(r)]
    assert found, "some served items should give a channel's gap as a reason"
    return found


def _expected_span(model: ScoringModel, hcp_id: str, action_id: str, extra: int) -> str:
    row = model.hcp_row(hcp_id)
    action = int(model.action_index.get_loc(action_id))
    x = model.rows(np.array([row]), np.array([action]))[0]
    days = float(x[model.feature_position["this_channel__days_since"]]) + extra
    return reasons_module._span(days)


@pytest.mark.parametrize("cache_hcps", [0, 200])
def test_a_gap_counts_the_days_since_the_cutoff(model: ScoringModel, cache_hcps: int) -> None:
    rec = _recommender(model, cache_hcps)
    gaps = _gaps(model, rec)
    at_cutoff = cutoff(model)
    checked = 0
    for hcp_id, action_id, sentence in gaps[:20]:
        assert sentence.endswith(_expected_span(model, hcp_id, action_id, 0))
        later = rec.recommend(hcp_id=hcp_id, k=5, on=at_cutoff + timedelta(days=16))
        for item in later.items:
            if item.action_id != action_id:
                continue
            said = [r for r in item.reasons if GAP.match(r)]
            # The same feature, 16 days on: the span grows (or the sentence gives way
            # to another reason), it is never the cut-off's.
            assert sentence not in said, (sentence, item.reasons)
            for gap in said:
                assert gap.endswith(_expected_span(model, hcp_id, action_id, 16)), gap
                checked += 1
        # Asked again at the cut-off (the cache held the later reasons): as before.
        again = rec.recommend(hcp_id=hcp_id, k=5, on=at_cutoff)
        assert any(sentence in i.reasons for i in again.items if i.action_id == action_id)
    assert checked > 0


def test_a_channel_contacted_since_the_cutoff_says_nothing_of_its_old_record(
    model: ScoringModel,
) -> None:
    rec = _recommender(model, cache_hcps=200)
    at_cutoff = cutoff(model)
    gaps = _gaps(model, rec)
    now = at_cutoff + timedelta(days=10)
    checked = 0
    for hcp_id, action_id, _ in gaps[:20]:
        channel = str(model.catalog.set_index("action_id").loc[action_id, "channel"])
        rec.recommend(hcp_id=hcp_id, k=5, on=now)  # cached without contacts first
        history = LiveHistory(
            now=now, counts={30.0: {}}, last={(hcp_id, channel): at_cutoff + timedelta(days=3)}
        )
        answer = rec.recommend(hcp_id=hcp_id, k=5, on=now, history=history)
        checked += _nothing_stale(answer, channel)
    assert checked > 0


def _nothing_stale(answer: Recommendation, channel: str, *, overall: bool = True) -> int:
    """Assert ``answer`` says nothing the contact on ``channel`` made stale: no overall
    gap (unless ``overall`` is False: the contact is older than the snapshot's latest),
    no "has not seen", no record or gap of ``channel``. Returns how many of its items
    were on ``channel``."""
    on_channel = 0
    for item in answer.items:
        if overall:
            assert not any(CONTACTED.match(r) for r in item.reasons), item.reasons
            # The contact may have been on the item's topic: its record may be stale.
            assert not any(TOPIC.search(r) for r in item.reasons), item.reasons
        assert not any(r.startswith("has not seen") for r in item.reasons), item.reasons
        if item.channel == channel:
            on_channel += 1
            for r in item.reasons:
                assert not RECORD.search(r), r  # "opened 4 of 5 e-mails so far"
                assert not GAP.match(r), r  # "no e-mail in 9 weeks"
    return on_channel


def test_lapses_know_contacts_only_as_far_back_as_the_history_reaches(
    model: ScoringModel,
) -> None:
    at_cutoff = cutoff(model)
    now = at_cutoff + timedelta(days=10, hours=5)
    history = LiveHistory(
        now=now,
        counts={30.0: {}},
        last={
            ("H1", "email"): at_cutoff + timedelta(days=2),
            ("H1", "webinar"): at_cutoff - timedelta(days=2),
            ("H2", "email"): at_cutoff - timedelta(days=1),
        },
    )
    h1, h2 = lapses(at_cutoff, ["H1", "H2"], now, history)
    assert (h1.days, h1.touched, h2.touched) == (10, frozenset({"email"}), frozenset())
    # Contacts at or before the cut-off, by how many days before it.
    assert (h1.before, h2.before) == ((("webinar", 2.0),), (("email", 1.0),))
    assert not (h1.unseen or h2.unseen) and history.reaches(at_cutoff)
    # The history holds 30 days: of a cut-off 40 days back it knows the contacts of
    # the last 30, and that it may have missed some on any channel.
    long_ago = now - timedelta(days=40)
    assert not history.reaches(long_ago)
    h1, h2 = lapses(long_ago, ["H1", "H2"], now, history)
    assert (h1.unseen, h2.unseen) == (True, True)
    assert h1.touched == frozenset({"email", "webinar"}) and h2.touched == frozenset({"email"})
    assert h2.touched_channel("rep_visit") and h2.touched_any  # possibly: unknown
    assert lapses(at_cutoff, ["H1"], now, None)[0] == reasons_module.Lapse(10, None)
    # A decision before the cut-off counts no days.
    assert lapses(at_cutoff, ["H1"], at_cutoff - timedelta(days=3), None)[0].days == 0
    # A cut-off a second after the newest interaction: the days are still whole.
    just_after = at_cutoff + timedelta(seconds=1)
    assert lapses(just_after, ["H1"], at_cutoff + timedelta(days=10), None)[0].days == 10


def test_a_contact_before_the_cutoff_the_snapshot_lacks_silences_its_channel(
    model: ScoringModel,
) -> None:
    # A retrained model's snapshot lacks the logged decisions reserved for the gate,
    # and an export can miss contacts: the live history shows a visit 5 days before
    # the cut-off where the snapshot's latest is weeks older. "no rep visit in 9
    # weeks" would be false; the record and the gap of that channel say nothing.
    rec = _recommender(model, cache_hcps=200)
    at_cutoff = cutoff(model)
    now = at_cutoff + timedelta(days=3)
    checked = unchanged = 0
    for hcp_id, action_id, _ in _gaps(model, rec)[:20]:
        channel = str(model.catalog.set_index("action_id").loc[action_id, "channel"])
        said_before = rec.recommend(hcp_id=hcp_id, k=5, on=now)  # cached without contacts
        assert any(i.action_id == action_id for i in said_before.items)
        # The same contact as the snapshot's (within a day of it) changes nothing.
        row = model.hcp_row(hcp_id)
        action = int(model.action_index.get_loc(action_id))
        x = model.rows(np.array([row]), np.array([action]))[0]
        snapshot_days = float(x[model.feature_position["this_channel__days_since"]])
        same = LiveHistory(
            now=now,
            counts={30.0: {}},
            last={(hcp_id, channel): at_cutoff - timedelta(days=snapshot_days - 0.5)},
        )
        if snapshot_days < 26:  # within the history's 30 days
            kept = rec.recommend(hcp_id=hcp_id, k=5, on=now, history=same)
            for item in kept.items:
                if item.action_id == action_id:
                    assert any(GAP.match(r) for r in item.reasons), item.reasons
                    unchanged += 1
        newer = LiveHistory(
            now=now, counts={30.0: {}}, last={(hcp_id, channel): at_cutoff - timedelta(days=5)}
        )
        answer = rec.recommend(hcp_id=hcp_id, k=5, on=now, history=newer)
        # The overall gap stays true when the snapshot knows a later contact elsewhere.
        snapshot_any = float(x[model.feature_position["all__days_since_touch"]])
        missed = np.isnan(snapshot_any) or snapshot_any > 5 + reasons_module.SAME_CONTACT_DAYS
        checked += _nothing_stale(answer, channel, overall=missed)
    assert checked > 0
    assert unchanged > 0


def test_a_live_history_that_does_not_reach_the_cutoff_states_no_record_or_gap(
    model: ScoringModel,
) -> None:
    # 40 days after the cut-off, a history of the rules' 28 days cannot tell whether
    # the HCP was visited in the 12 days before it: "no rep visit in 28 weeks" could
    # be false (a visit 30 days ago), so no channel's record or gap is stated.
    rec = _recommender(model, cache_hcps=200)
    at_cutoff = cutoff(model)
    now = at_cutoff + timedelta(days=40)
    checked = 0
    for hcp_id, action_id, _ in _gaps(model, rec)[:20]:
        channel = str(model.catalog.set_index("action_id").loc[action_id, "channel"])
        unknown = LiveHistory(now=now, counts={28.0: {}})
        answer = rec.recommend(hcp_id=hcp_id, k=5, on=now, history=unknown)
        assert all(item.reasons for item in answer.items)  # other reasons remain
        for item in answer.items:
            checked += _nothing_stale(answer, item.channel)
        # A history long enough to reach the cut-off knows: the gap is stated again.
        known = LiveHistory(now=now, counts={60.0: {}})
        again = rec.recommend(hcp_id=hcp_id, k=5, on=now, history=known)
        gaps = [r for i in again.items if i.channel == channel for r in i.reasons if GAP.match(r)]
        assert gaps, [i.reasons for i in again.items]
    assert checked > 0


def test_what_reasons_read_of_hcp_attributes_is_ready_before_the_first_request(
    trained,
) -> None:
    """Built when a model is loaded beside the served one, not by the first requests
    after the swap."""
    fresh, _ = registry.load_alias(trained.settings)
    attributes = fresh.space.hcp_feature_names
    assert attributes and not fresh._hcp_sharing
    _recommender(fresh)
    assert set(fresh._hcp_sharing) == set(attributes)
    assert set(fresh._hcp_text) >= set(fresh.space.categorical_hcp_columns)


def test_a_moved_history_counts_its_gaps_from_the_day_it_was_moved_to(
    model: ScoringModel,
) -> None:
    """A model whose history was moved on (no contacts since the cut-off) says each gap
    as the cut-off's model would: the days since its move, not since the cut-off, are
    added to gaps that already count the move's; it answers no day before the move."""
    at_cutoff = cutoff(model)
    none = pd.DataFrame({"hcp_id": [], "channel": [], "timestamp": []})
    moved = model.advanced(pd.Timestamp(at_cutoff + timedelta(days=9)), none)
    rec = _recommender(moved)
    now = at_cutoff + timedelta(days=16)
    checked = 0
    for hcp_id in model.hcps["hcp_id"].astype(str).tolist()[:150]:
        for item in rec.recommend(hcp_id=hcp_id, k=5, on=now).items:
            for gap in (r for r in item.reasons if GAP.match(r)):
                assert gap.endswith(_expected_span(model, hcp_id, item.action_id, 16)), gap
                checked += 1
    assert checked > 0
    with pytest.raises(InvalidRequestError, match="before the served model's history ends"):
        rec.recommend(hcp_id=hcp_id, k=5, on=at_cutoff + timedelta(days=3))
    # A contact 2 days before the cut-off, where the moved gap (moved 9 days) reads 11.
    history = LiveHistory(
        now=now, counts={30.0: {}}, last={("H1", "email"): at_cutoff - timedelta(days=2)}
    )
    (lapse,) = lapses(at_cutoff, ["H1"], now, history, history_day(moved))
    assert (lapse.days, lapse.moved) == (7, 9.0)
    assert not lapse.missed_by_snapshot(11.0, "email")  # the snapshot's own contact
    assert lapse.missed_by_snapshot(20.0, "email")  # newer than the snapshot's latest


def test_a_moved_history_speaks_of_every_contact_it_has_counted(model: ScoringModel) -> None:
    """Moved on, the snapshot counts in its gaps and records every contact whose
    engagement it waited for: only a contact within that wait before the day moved
    to (or after it) silences its channel's record and gap, and a live history that
    reaches back to the wait, not to the cut-off, sees all it needs to."""
    at_cutoff = cutoff(model)
    moved_to = at_cutoff + timedelta(days=9)
    moved = model.advanced(pd.Timestamp(moved_to), NO_CONTACTS)
    now = at_cutoff + timedelta(days=16)
    wait = timedelta(days=ENGAGEMENT_WAIT_DAYS)
    counted = {
        ("H1", "email"): moved_to - wait,
        ("H2", "email"): moved_to - wait + timedelta(hours=1),
    }
    history = LiveHistory(now=now, counts={30.0: {}}, last=counted)
    first, second = lapses(at_cutoff, ["H1", "H2"], now, history, history_day(moved))
    assert first.touched == frozenset() and not first.touched_any
    assert second.touched == frozenset({"email"})
    # Not moved, both contacts came after the snapshot: both silence the channel.
    unmoved = lapses(at_cutoff, ["H1", "H2"], now, history)
    assert [lapse.touched for lapse in unmoved] == [frozenset({"email"})] * 2
    # A live history of the last 12 days reaches the wait before the move, not the cut-off.
    short = LiveHistory(now=now, counts={12.0: {}}, last=counted)
    assert not lapses(at_cutoff, ["H1"], now, short, history_day(moved))[0].unseen
    assert lapses(at_cutoff, ["H1"], now, short)[0].unseen
