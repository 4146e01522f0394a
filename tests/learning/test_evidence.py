"""Actions the history says nothing about: a new channel or topic is not scored, new
content on a known channel and topic is scored from them and says so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nextbest.contract import Dataset
from nextbest.learning.reasons import NEW_CONTENT
from nextbest.learning.scoring import MIN_TOUCHES_TO_SCORE, ActionEvidence
from nextbest.learning.train import TrainResult, train
from nextbest.policy.eligibility import EligibilityIndex
from nextbest.policy.exploration import EpsilonGreedy
from nextbest.service.recommend import Recommender

from .conftest import QUICK, LearnedWorld


def _catalog(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["action_id", "channel", "topic"])


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


def test_a_model_from_before_the_counts_scores_every_action() -> None:
    catalog = _catalog([("A1", "email", "dosing"), ("A2", "sms", "dosing")])
    evidence = ActionEvidence.of(catalog, None)
    assert not evidence.unscored.any() and not evidence.new.any() and evidence.notes(catalog) == []


@pytest.fixture(scope="module")
def launched(learned: LearnedWorld) -> tuple[TrainResult, list[str]]:
    """The learned world's data with three actions no decision touched: new content on a
    known channel and topic, one on a new topic, one on a new channel."""
    catalog = learned.dataset.catalog
    email = catalog[catalog["channel"] == "email"].iloc[0]
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
    assert new in served  # cheap e-mail content on a known topic: worth sending to some
