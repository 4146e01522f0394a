"""Actions the history says nothing about: a new channel or topic is not scored, new
content on a known channel and topic is scored from them and says so."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from nextbest.contract import Dataset
from nextbest.learning import scoring
from nextbest.learning.reasons import NEW_CONTENT, explain
from nextbest.learning.scoring import MIN_TOUCHES_TO_SCORE, ActionEvidence, Scores, ScoringModel
from nextbest.learning.train import TrainResult, fitted_decisions, train
from nextbest.policy.eligibility import EligibilityIndex
from nextbest.policy.exploration import EpsilonGreedy
from nextbest.service.picks import picks_frame
from nextbest.service.recommend import Recommender

from .conftest import QUICK, LearnedWorld


def _catalog(rows: list[tuple[str, str, str]], cost: list[float] | None = None) -> pd.DataFrame:
    catalog = pd.DataFrame(rows, columns=["action_id", "channel", "topic"])
    catalog["content_type"] = "promotional"
    catalog["cost"] = 0.1 if cost is None else cost
    return catalog


def test_a_thin_channel_or_topic_is_not_scored_and_new_content_is_marked() -> None:
    catalog = _catalog(
        [
            ("A1", "email", "dosing"),
            ("A2", "email", "dosing"),  # new content on a known channel and topic
            ("A3", "sms", "dosing"),  # a channel nearly never touched
            ("A4", "email", "launch"),  # a topic never touched
        ]
    )
    enough = MIN_TOUCHES_TO_SCORE
    evidence = ActionEvidence.of(catalog, np.array([2 * enough, 0, enough - 1, 0]))
    assert evidence.unscored.tolist() == [False, False, True, True]
    assert evidence.new.tolist() == [False, True, False, False]
    assert evidence.why[0] == evidence.why[1] == ""
    assert f"{enough - 1} touch(es) on its channel sms" in evidence.why[2]
    assert "0 touch(es) on its topic launch" in evidence.why[3]
    assert evidence.thin == ("channel sms (99)", "topic launch (0)")
    unscored, new = evidence.notes(catalog)
    assert unscored.startswith("2 action(s) are not scored") and unscored.count("A3, A4") == 1
    assert new.startswith("1 action(s) have no fitted touch") and new.endswith(": A2")


def test_exactly_enough_touches_are_scored() -> None:
    catalog = _catalog([("A1", "email", "dosing"), ("A2", "sms", "dosing")])
    evidence = ActionEvidence.of(catalog, np.array([500, MIN_TOUCHES_TO_SCORE]))
    assert not evidence.unscored.any() and not evidence.new.any()
    assert evidence.notes(catalog) == []


def test_new_content_borrows_the_identity_of_the_measured_content_most_like_it() -> None:
    catalog = _catalog(
        [
            ("A1", "email", "dosing"),
            ("A2", "email", "dosing"),
            ("A3", "email", "safety"),
            ("N1", "email", "dosing"),  # a copy of A1 (its cost): A1, though A2 is busier
            ("N2", "email", "dosing"),  # between A1 and A2 in cost: the busier, A2
            ("N3", "email", "access"),  # alone on its topic there: its channel's nearest
            ("W1", "webinar", "access"),
        ],
        cost=[0.02, 0.06, 0.03, 0.02, 0.04, 0.031, 0.5],
    )
    busy = 3 * MIN_TOUCHES_TO_SCORE
    evidence = ActionEvidence.of(catalog, np.array([busy, busy + 9, busy + 5, 0, 0, 0, busy]))
    assert evidence.new.tolist() == [False, False, False, True, True, True, False]
    assert evidence.stand_in.tolist() == [-1, -1, -1, 0, 1, 2, -1]
    catalog.loc[0, "content_type"] = "medical"  # the same purpose comes first
    evidence = ActionEvidence.of(catalog, np.array([busy, busy + 9, busy + 5, 0, 0, 0, busy]))
    assert evidence.stand_in.tolist()[3] == 1


def test_a_model_from_before_the_counts_scores_every_action() -> None:
    catalog = _catalog([("A1", "email", "dosing"), ("A2", "sms", "dosing")])
    evidence = ActionEvidence.of(catalog, None)
    assert not evidence.unscored.any() and not evidence.new.any() and evidence.notes(catalog) == []


def test_a_pilot_in_the_evaluation_slice_is_fitted_not_held_out() -> None:
    """The newest decisions are the slice: a new channel's pilot, all in it, is fitted
    (else the channel stays unscored however many sends the pilot holds)."""
    catalog = _catalog([("A1", "email", "dosing"), ("S1", "sms", "dosing")])
    n = 1000
    seconds = np.arange(n, dtype=np.int64)
    action_rows = np.zeros(n, dtype=np.int64)
    action_rows[-150:] = 1  # the pilot: the newest 15%
    action_rows[::7] = -1  # no touch
    in_fit, n_eval, _ = fitted_decisions(seconds, action_rows, catalog, 0.1)
    assert in_fit[action_rows == 1].all()  # the whole pilot is fitted
    assert n_eval > 0 and not in_fit.all()  # the slice keeps the rest's newest
    pilot_free = action_rows.copy()
    pilot_free[-150:] = 0
    plain, _, _ = fitted_decisions(seconds, pilot_free, catalog, 0.1)
    assert (~plain).sum() == 100  # the newest 10%: nothing moved without a pilot


def test_new_content_mostly_in_the_evaluation_slice_is_fitted_in_full() -> None:
    """Content launched lately on a known channel: its sends mostly in the slice are
    fitted, not only its first week's."""
    catalog = _catalog([("A1", "email", "dosing"), ("A2", "email", "dosing")])
    n = 2000
    seconds = np.arange(n, dtype=np.int64)
    action_rows = np.zeros(n, dtype=np.int64)
    action_rows[-300:] = 1  # launched lately: 100 sends before the slice, 200 in it
    in_fit, n_eval, _ = fitted_decisions(seconds, action_rows, catalog, 0.1)
    assert in_fit[action_rows == 1].all()
    assert (~in_fit).sum() == n_eval == 170  # the newest 10% of the others


@pytest.fixture(scope="module")
def launched(learned: LearnedWorld) -> tuple[TrainResult, list[str]]:
    """The learned world's data with three actions no decision touched: new content on a
    known channel and topic (a copy of the e-mail sent most), one on a new topic, one
    on a new channel."""
    catalog = learned.dataset.catalog
    sent = learned.dataset.interactions["action_id"].value_counts()
    emails = catalog[catalog["channel"] == "email"]
    email = emails.loc[emails["action_id"].map(sent).idxmax()]
    rows = []
    for action_id, channel, topic in (
        ("N001", "email", email["topic"]),
        ("N002", "email", "launch_topic"),
        ("N003", "sms", email["topic"]),
    ):
        row = email.copy()
        row["action_id"], row["content_id"] = action_id, f"C-{action_id}"
        row["channel"], row["topic"] = channel, topic
        rows.append(row)
    wider = pd.concat([catalog, pd.DataFrame(rows)], ignore_index=True)
    dataset = Dataset(
        hcps=learned.dataset.hcps, catalog=wider, interactions=learned.dataset.interactions
    )
    result = train(dataset, config=QUICK, as_of=learned.world.decision_time)
    return result, ["N001", "N002", "N003"]


def test_training_notes_name_the_unscored_and_the_new(
    launched: tuple[TrainResult, list[str]],
) -> None:
    result, _ = launched
    notes = "\n".join(result.notes)
    assert "2 action(s) are not scored, so never served" in notes
    assert "channel sms (0)" in notes and "topic launch_topic (0)" in notes
    assert "N002, N003" in notes
    assert "(new content)" in notes and notes.count("N001") == 1


def test_a_copy_of_content_scores_as_the_original(
    launched: tuple[TrainResult, list[str]], learned: LearnedWorld
) -> None:
    """New content borrows the identity of its channel and topic's most-touched content,
    not LightGBM's "other" side of every split on an id it never saw."""
    result, (copy, _, _) = launched
    model = result.model
    sent = learned.dataset.interactions["action_id"].value_counts()
    catalog = learned.dataset.catalog
    emails = catalog[catalog["channel"] == "email"]
    original = model.action_index.get_loc(
        emails.loc[emails["action_id"].map(sent).idxmax()].action_id
    )
    row = model.action_index.get_loc(copy)
    assert model.evidence.stand_in[row] == original
    hcps = np.arange(model.n_hcps)
    ours = model.score(hcps, np.full(len(hcps), row))
    theirs = model.score(hcps, np.full(len(hcps), original))
    np.testing.assert_allclose(ours.uplift, theirs.uplift, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.p_engage, theirs.p_engage, rtol=0, atol=1e-12)


def test_unscored_actions_are_never_served_and_explain_why(
    launched: tuple[TrainResult, list[str]],
) -> None:
    result, (new, new_topic, new_channel) = launched
    model = result.model
    index = EligibilityIndex.build(model)
    rows = model.action_index.get_indexer([new, new_topic, new_channel])
    on = model.as_of.to_pydatetime()
    for purpose in ("promotional", "medical"):
        mask = index.action_mask(on=on, purpose=purpose)
        assert not mask[rows[1:]].any()
    why = index.reasons_excluded(0, on=on, purpose=str(model.catalog["content_type"][rows[2]]))
    assert any("its channel sms" in w for w in why[rows[2]])
    assert any("its topic launch_topic" in w for w in why[rows[1]])

    # Half the first items explored: any eligible action could be drawn.
    recommender = Recommender(
        model=model, version="t", exploration=EpsilonGreedy(epsilon=0.5, holdout_rate=0, seed=0)
    )
    served = set()
    for hcp_id in model.hcps["hcp_id"][:300]:
        answer = recommender.recommend(hcp_id=str(hcp_id), k=5, on=on)
        served.update(item.action_id for item in answer.items)
        for item in answer.items:
            assert (NEW_CONTENT in item.reasons[1 if item.explored else 0]) == (
                item.action_id == new
            )
    assert new_topic not in served and new_channel not in served
    # Nor chosen by the learned policy on the evaluation slice.
    from nextbest.evaluation.offline import eligible_at

    assert result.eval_rows is not None
    could = eligible_at(model, result.eval_rows)
    assert not could[:, rows[1:]].any() and could[:, rows[0]].any()
    assert new in served  # cheap e-mail content on a known topic: worth sending to some


def _scored_rows(model: ScoringModel, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records how many rows each ``score_rows`` call of ``model`` is given (LightGBM's work)."""
    seen: list[int] = []
    score_rows = model.score_rows

    def recording(X: np.ndarray, action_rows: np.ndarray, **kwargs: Any) -> Scores:
        seen.append(len(X))
        return score_rows(X, action_rows, **kwargs)

    monkeypatch.setattr(model, "score_rows", recording)
    return seen


def test_a_copy_of_content_is_scored_once_with_its_original(
    launched: tuple[TrainResult, list[str]],
    learned: LearnedWorld,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A copy's model rows are its original's for every HCP (it borrows the original's
    identity and has its channel, topic, purpose and cost): one request's candidates
    hold the pair once for LightGBM, and each gets the very same scores and leaves."""
    result, (copy, _, _) = launched
    model = result.model
    sent = learned.dataset.interactions["action_id"].value_counts()
    emails = learned.dataset.catalog[learned.dataset.catalog["channel"] == "email"]
    original = model.action_index.get_loc(
        emails.loc[emails["action_id"].map(sent).idxmax()].action_id
    )
    twin = model.action_index.get_loc(copy)
    assert model.action_twin[twin] == original
    assert (model.action_twin == np.arange(model.n_actions)).sum() == model.n_actions - 1

    actions = np.arange(model.n_actions)
    for h in (0, 7):
        hcps = np.full(model.n_actions, h)
        expected = model.score_rows(model.rows(hcps, actions), actions)
        seen = _scored_rows(model, monkeypatch)
        got = model.score(hcps, actions)
        monkeypatch.undo()
        assert seen == [model.n_actions - 1]  # the copy rides on its original's row
        _assert_same_scores(got, expected)
    assert got.uplift[twin] == got.uplift[original]


def test_the_leaves_and_rows_of_copies_are_held_once_until_taken(
    launched: tuple[TrainResult, list[str]],
) -> None:
    """One request's candidates keep the leaves and model rows of their distinct rows
    only, not one copy per candidate (most are never served): reading them, or taking
    the served pairs, gives each pair its own, as when every pair is scored alone."""
    result, (copy, _, _) = launched
    model = result.model
    twin = model.action_index.get_loc(copy)
    original = int(model.action_twin[twin])
    actions = np.arange(model.n_actions)
    hcps = np.full(model.n_actions, 3)
    expected = model.score_rows(model.rows(hcps, actions), actions)
    got = model.score(hcps, actions)
    assert got.row_of is not None
    assert got.row_of[twin] == got.row_of[original]
    assert len(np.unique(got.row_of)) == model.n_actions - 1
    _assert_same_scores(got, expected)
    np.testing.assert_array_equal(got.rows, expected.rows)
    served = np.array([twin, original, 0, model.n_actions - 1])
    taken = got.take(served)
    assert taken.row_of is None
    _assert_same_scores(taken, expected.take(served))
    np.testing.assert_array_equal(taken.rows, expected.take(served).rows)


def test_copies_score_alike_in_any_order_without_their_original_and_over_hcps(
    launched: tuple[TrainResult, list[str]],
) -> None:
    """The pairs that share a row are found alike for one HCP (a request: by a mark per
    action) and for many (a batch: by sorting): with the copy asked for but not its
    original, actions in any order, a copy asked for twice, and HCPs interleaved,
    every pair gets the scores, leaves and rows of scoring it alone."""
    result, (copy, _, _) = launched
    model = result.model
    twin = model.action_index.get_loc(copy)
    original = int(model.action_twin[twin])
    rng = np.random.default_rng(5)
    others = [a for a in range(model.n_actions) if a not in (twin, original)]
    blocks = [
        (np.full(4, 3), np.array([twin, others[0], twin, others[1]])),  # no original
        (np.full(6, 9), rng.permutation([twin, original, *others[:4]])),
        (np.array([2, 5, 2, 5, 2]), np.array([twin, twin, original, others[0], others[2]])),
    ]
    for hcps, actions in blocks:
        expected = model.score_rows(model.rows(hcps, actions), actions)
        got = model.score(hcps, actions)
        assert got.row_of is not None  # the copy rode on another pair's row
        _assert_same_scores(got, expected)
        np.testing.assert_array_equal(got.rows, expected.rows)


def test_scoring_twins_once_keeps_the_scores_of_a_block_bit_for_bit(
    launched: tuple[TrainResult, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many HCPs at once, where LightGBM's predictions are used rather than the leaves
    (more than PATH_CELLS leaves): scoring the twins once must not switch a block to
    the other way of summing the trees, whose last bits differ."""
    model = launched[0].model
    assert model.uplift_model is not None
    n_hcps = 40
    hcps = np.repeat(np.arange(n_hcps), model.n_actions)
    actions = np.tile(np.arange(model.n_actions), n_hcps)
    # The whole block is over the limit, the block without the copy's pairs under it.
    cells = model.uplift_model.n_path_trees * (len(hcps) - n_hcps)
    monkeypatch.setattr(scoring, "PATH_CELLS", cells)
    expected = model.score_rows(model.rows(hcps, actions), actions)
    assert expected.paths is None
    got = model.score(hcps, actions)
    _assert_same_scores(got, expected)


def test_reasons_read_the_terms_scoring_carried_as_worked_out_afresh(
    launched: tuple[TrainResult, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The served items' reasons weigh their attributions by the gain scale and
    shrinking centre that scoring worked out for their rows and carried in the scores:
    spread over copies of content, then taken for a few served items (a copy, its
    original, a copy twice), they are each item's own, and the contributions and
    reasons are those of scores without them, worked out again."""
    result, (copy, _, _) = launched
    model = result.model
    uplift_model = model.uplift_model
    assert uplift_model is not None and uplift_model.action_mean_uplift_ is not None
    monkeypatch.setattr(uplift_model, "heterogeneity_", 0.5)  # the centres are used
    twin = model.action_index.get_loc(copy)
    original = int(model.action_twin[twin])
    actions = np.arange(model.n_actions)
    got = model.score(np.full(model.n_actions, 3), actions)
    assert got.row_of is not None and got.terms is not None
    served = np.array([twin, 0, original, model.n_actions - 1, twin, 5])
    hcps = np.full(len(served), 3)
    item = got.take(served)
    assert item.terms is not None and item.rows is not None
    afresh = uplift_model._terms(item.rows)
    assert isinstance(afresh.scale, np.ndarray) and afresh.centre is not None
    assert len(np.unique(afresh.scale)) >= 4  # the actions' own scales
    np.testing.assert_array_equal(item.terms.scale, afresh.scale)
    np.testing.assert_array_equal(item.terms.centre, afresh.centre)
    without = Scores(item.p_engage, item.uplift, item.gains, item.paths, item.rows)
    np.testing.assert_array_equal(
        uplift_model.contributions(item.rows, item.p_engage, item.gains, item.paths, item.terms),
        uplift_model.contributions(item.rows, item.p_engage, item.gains, item.paths),
    )
    assert explain(model, item.rows, served, hcps, item) == explain(
        model, model.rows(hcps, served), served, hcps, without
    )


def _assert_same_scores(got: Scores, expected: Scores) -> None:
    np.testing.assert_array_equal(got.p_engage, expected.p_engage)
    np.testing.assert_array_equal(got.uplift, expected.uplift)
    assert got.gains is not None and expected.gains is not None
    for ours, theirs in zip(got.gains, expected.gains, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert (got.paths is None) == (expected.paths is None)
    if got.paths is not None and expected.paths is not None:
        for ours, theirs in zip(got.paths, expected.paths, strict=True):
            np.testing.assert_array_equal(ours, theirs)
    assert got.terms is not None and expected.terms is not None
    for ours, theirs in zip(got.terms, expected.terms, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_recommendations_are_the_same_with_the_copies_scored_once(
    launched: tuple[TrainResult, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items, scores, propensities and reasons as when every pair is its own row."""
    result, (copy, _, _) = launched
    model = result.model
    on = model.as_of.to_pydatetime()
    hcp_ids = [str(h) for h in model.hcps["hcp_id"][:300]]

    def answers() -> list[list[tuple[Any, ...]]]:
        recommender = Recommender(
            model=model, version="t", exploration=EpsilonGreedy(epsilon=0.3, holdout_rate=0, seed=3)
        )
        return [
            [
                (i.action_id, i.score, i.expected_uplift, i.p_engage, i.propensity, i.reasons)
                for i in recommender.recommend(hcp_id=h, k=5, on=on).items
            ]
            for h in hcp_ids
        ]

    once = answers()
    assert any(item[0] == copy for items in once for item in items)
    monkeypatch.setattr(model, "has_twins", False)
    assert answers() == once


def test_picks_score_the_copies_once_and_pick_as_when_every_pair_is_scored(
    launched: tuple[TrainResult, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`nextbest picks` and the batch route: the copy's pairs ride on its original's
    rows, and the picks (scores, reasons and all) are those of scoring every pair."""
    result, (copy, _, _) = launched
    model = result.model
    on = model.as_of.to_pydatetime()
    hcp_ids = [str(h) for h in model.hcps["hcp_id"][:300]]
    seen = _scored_rows(model, monkeypatch)
    once = picks_frame(model, hcp_ids=hcp_ids, k=5, on=on)
    monkeypatch.setattr(model, "has_twins", False)
    every = picks_frame(model, hcp_ids=hcp_ids, k=5, on=on)
    assert (once["action_id"] == copy).any()
    # One row per HCP and candidate, but for the copy's (its candidates: the promotional
    # actions approved on the day).
    scored_once, scored_every = seen
    assert scored_once == scored_every - len(hcp_ids)
    pd.testing.assert_frame_equal(once, every)
