"""Reasons read as support, state each fact once and agree in number."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbest.features.history import SMOOTHING
from nextbest.learning import reasons as reasons_module
from nextbest.learning.reasons import (
    _number,
    _record,
    _Row,
    _sentence,
    _span,
    explain,
    segment_sentence,
)
from nextbest.learning.scoring import ScoringModel

from .conftest import LearnedWorld

# What one sentence is about, so a test can tell two sentences stating one fact.
RECORD = re.compile(r" so far(: a fresh channel for this HCP)?$")  # the own channel's record
RECENCY = re.compile(
    r"^(no .+ in \d+ (day|days|week|weeks)|last contacted .+ ago|never .+ before)$"
)
TOPIC_RECORD = re.compile(r"(pieces? on .+|has not seen .+ content yet)$")
CHANNEL_EFFECT = re.compile(
    r"(work for HCPs like this one|measured .+ versus HCPs left untouched at random)"
)
COUNTS = re.compile(r"\b(\d+) of (\d+)\b")


def _items(model: ScoringModel, n_hcps: int) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    hcp_rows = np.repeat(np.arange(n_hcps), model.n_actions)
    action_rows = np.tile(np.arange(model.n_actions), n_hcps)
    X = model.rows(hcp_rows, action_rows)
    scores = model.score_rows(X, action_rows)
    said = explain(model, X, action_rows, hcp_rows, scores)
    return hcp_rows, action_rows, said


@pytest.fixture(scope="module")
def served(learned: LearnedWorld) -> list[list[str]]:
    """Reasons for every action of 200 HCPs (several thousand items)."""
    return _items(learned.result.model, 200)[2]


@pytest.fixture
def every_feature_pushes_up(
    learned: LearnedWorld, monkeypatch: pytest.MonkeyPatch
) -> list[list[str]]:
    """Reasons when every feature has a positive contribution, in random orders, and
    there is room for all of them: the worst case for repeats and contrary reasons."""
    model = learned.result.model
    rng = np.random.default_rng(0)

    def contributions(
        X: np.ndarray,
        p_engage: object = None,
        gains: object = None,
        paths: object = None,
        terms: object = None,
    ) -> np.ndarray:
        return rng.uniform(0.1, 1.0, size=X.shape)

    monkeypatch.setattr(model.uplift_model, "contributions", contributions)
    monkeypatch.setattr(reasons_module, "MAX_REASONS", 50)
    said: list[list[str]] = []
    for _ in range(3):
        said += _items(model, 100)[2]
    return said


def test_the_segment_evidence_says_what_it_was_measured_against(
    learned: LearnedWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison group is every untouched decision chance chose: the holdout's,
    and no-touch decisions logged with a propensity. "versus the holdout" told a rep
    of a narrower group than the one measured."""
    model = learned.result.model
    segment = str(model.hcp_text("specialty")[0])
    channel = str(model.action_channel_name[0])
    monkeypatch.setitem(model.metadata, "segment_column", "specialty")
    monkeypatch.setitem(
        model.metadata, "segment_uplift", {f"{segment}|{channel}": (0.31, 0.12, 0.5)}
    )
    said = segment_sentence(model, 0, 0)
    assert said is not None
    assert said.endswith(
        "measured +0.31 outcome versus HCPs left untouched at random (95% CI +0.12 to +0.50)"
    ), said
    assert "holdout" not in said


def _assert_each_fact_once(items: list[list[str]]) -> None:
    for reasons in items:
        assert len(set(reasons)) == len(reasons), reasons
        for kind in (RECORD, RECENCY, TOPIC_RECORD, CHANNEL_EFFECT):
            assert sum(bool(kind.search(s)) for s in reasons) <= 1, (kind.pattern, reasons)
        # An item's HCP attributes are said in one sentence, not one each.
        assert sum(s.startswith("expected to do more for HCPs like") for s in reasons) <= 1
        if any("fresh channel" in s for s in reasons):
            # "no e-mails so far" already says there was no e-mail in any window.
            assert not any(s.startswith("no ") and " in " in s for s in reasons), reasons
            assert "never contacted before" not in reasons, reasons


def _assert_reads_as_support(items: list[list[str]]) -> None:
    for reasons in items:
        for s in reasons[1:]:
            for engaged, _touches in COUNTS.findall(s):
                assert int(engaged) >= 1, s  # "opened 0 of 7 e-mails" argues against
            assert not re.search(r"\bnone of\b|\bwrites about 0(\.0+)? ", s), s
            assert not s.startswith("among ") or "measured +" in s, s  # a measured harm


def _assert_grammar(items: list[list[str]]) -> None:
    plural_after_one = re.compile(
        r"\b1 (days|weeks|e-mails|rep visits|phone calls|webinars|pieces)\b"
    )
    singular_after_many = re.compile(
        r"\b(0|[2-9]|\d{2,}) (day|week|e-mail|rep visit|phone call|webinar|piece)\b"
    )
    for reasons in items:
        for s in reasons:
            assert not plural_after_one.search(s), s
            assert not singular_after_many.search(s), s
            assert not re.search(r"\b1 of 1\b|\ball [12] \b|\ba e-mail\b", s), s
            assert not re.search(r"\d\.\d{3,}", s), s  # no long decimals
            assert "nan" not in s.lower() and "_" not in s, s
            days = re.search(r"\b(\d+) days\b", s)
            assert days is None or int(days.group(1)) < 14, s  # longer gaps read in weeks
            weeks = re.search(r"\b(\d+) weeks?\b", s)
            assert weeks is None or int(weeks.group(1)) >= 2, s


def test_every_item_keeps_its_lead_reason(served: list[list[str]]) -> None:
    assert len(served) > 1000
    assert all(len(r) >= 1 and r[0].startswith("expected ") for r in served)
    assert all(len(r) <= 1 + 1 + reasons_module.MAX_REASONS for r in served)
    # Not only the lead: most items also get a reason from their own features.
    assert np.mean([len(r) > 1 for r in served]) > 0.5


def test_served_reasons_state_each_fact_once(served: list[list[str]]) -> None:
    _assert_each_fact_once(served)


def test_served_reasons_read_as_support(served: list[list[str]]) -> None:
    _assert_reads_as_support(served)
    # The own channel's record still shows, when it is a good one.
    assert any(COUNTS.search(s) and s.endswith("so far") for r in served for s in r)


def test_served_reasons_agree_in_number(served: list[list[str]]) -> None:
    _assert_grammar(served)


def test_worst_case_contributions_still_give_honest_distinct_reasons(
    every_feature_pushes_up: list[list[str]],
) -> None:
    items = every_feature_pushes_up
    assert all(r and r[0].startswith("expected ") for r in items)
    like = [s for r in items for s in r if s.startswith("expected to do more for HCPs like")]
    assert any(s.count(": ") >= 2 for s in like), like[:5]  # several attributes, one sentence
    _assert_each_fact_once(items)
    _assert_reads_as_support(items)
    _assert_grammar(items)


def _own_channel_row(model: ScoringModel, channel: str, **values: float) -> _Row:
    """An item of ``channel`` for HCP 0 with some of its own-channel features set."""
    action = int(np.flatnonzero(model.action_channel_name == channel)[0])
    x = model.rows(np.zeros(1, dtype=np.int64), np.array([action]))[0].copy()
    for name, value in values.items():
        x[model.feature_position[name]] = value
    return _Row(model, x, action)


def _rate(engaged: int, touches: int, prior: float) -> float:
    return (engaged + SMOOTHING * prior) / (touches + SMOOTHING)


@pytest.mark.parametrize(
    ("engaged", "touches", "expected"),
    [
        (0, 7, None),  # no engagement is never a reason
        (1, 9, None),  # nor a record below the channel's average
        (4, 5, "opened 4 of 5 e-mails so far"),
        (2, 2, "opened both e-mails so far"),
        (3, 3, "opened all 3 e-mails so far"),
        (1, 1, "opened the only e-mail so far"),
    ],
)
def test_own_channel_record(
    learned: LearnedWorld, engaged: int, touches: int, expected: str | None
) -> None:
    model = learned.result.model
    prior = _own_channel_row(model, "email").channel_prior()
    row = _own_channel_row(
        model,
        "email",
        this_channel__touches=touches,
        this_channel__eng_rate=_rate(engaged, touches, prior),
        this_channel__days_since=20.0,
    )
    for feature in ("this_channel__touches", "this_channel__eng_rate"):
        said = _sentence(feature, row, float("nan"))
        assert (said[0] if said else None) == expected


def test_a_fresh_channel_is_one_fact_whichever_feature_says_it(learned: LearnedWorld) -> None:
    model = learned.result.model
    row = _own_channel_row(
        model,
        "rep_visit",
        this_channel__touches=0,
        this_channel__days_since=float("nan"),
        this_channel__touches_7d=0,
        this_channel__touches_30d=0,
    )
    said = {
        _sentence(f, row, float("nan"))
        for f in (
            "this_channel__touches",
            "this_channel__eng_rate",
            "this_channel__days_since",
            "this_channel__touches_7d",
            "this_channel__touches_30d",
        )
    }
    assert len(said) == 1
    (only,) = said
    assert only is not None and only[0] == "no rep visits so far: a fresh channel for this HCP"


def test_a_recent_touch_is_no_reason(learned: LearnedWorld) -> None:
    model = learned.result.model
    row = _own_channel_row(
        model,
        "email",
        this_channel__touches=3,
        this_channel__days_since=2.0,
        this_channel__touches_7d=1,
        this_channel__touches_30d=1,
    )
    for feature in ("this_channel__days_since", "this_channel__touches_7d"):
        assert _sentence(feature, row, float("nan")) is None
    rested = _own_channel_row(model, "email", this_channel__touches=3, this_channel__days_since=63)
    said = _sentence("this_channel__days_since", rested, float("nan"))
    assert said is not None and said[0] == "no e-mail in 9 weeks"


@pytest.mark.parametrize(
    ("days", "expected"),
    [(1.0, "1 day"), (7.9, "7 days"), (13.5, "13 days"), (14.0, "2 weeks"), (63.0, "9 weeks")],
)
def test_spans_read_in_days_then_weeks(days: float, expected: str) -> None:
    assert _span(days) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5.0, "5"), (0.30000001192092896, "0.3"), (1 / 3, "0.33"), (12345.6, "12,346")],
)
def test_numbers_read_as_written(value: float, expected: str) -> None:
    assert _number(value) == expected


def test_records_agree_in_number() -> None:
    assert _record("took", 1, 1, "phone call", "phone calls") == "took the only phone call"
    assert _record("took", 2, 2, "phone call", "phone calls") == "took both phone calls"
    assert _record("took", 2, 5, "phone call", "phone calls") == "took 2 of 5 phone calls"


def test_an_hcp_attribute_reads_as_who_the_item_suits(learned: LearnedWorld) -> None:
    model = learned.result.model
    row = _own_channel_row(model, "email")
    numeric = [f for f in model.feature_names if "__" not in f and f not in ("specialty",)]
    assert numeric, model.feature_names
    said = _sentence(numeric[0], row, 11.0)
    assert said == (
        f"expected to do more for HCPs like this one ({numeric[0].replace('_', ' ')}: 11)",
        (numeric[0], reasons_module._LIKE),
    )
    assert _sentence("specialty", row, "primary_care") == (
        "expected to do more for HCPs like this one (specialty: primary care)",
        ("specialty", reasons_module._LIKE),
    )
    assert _sentence("specialty", row, "") is None  # no value, nothing to say


def test_features_skipped_as_never_a_reason_never_give_one(learned: LearnedWorld) -> None:
    """explain only asks the features _can_speak admits: every other feature must give
    no sentence for any item, whatever its values (else a reason would go unsaid)."""
    model = learned.result.model
    silent = [f for f in model.feature_names if not reasons_module._can_speak(f)]
    spoken = [f for f in model.feature_names if reasons_module._can_speak(f)]
    assert silent and spoken  # other channels' history and action columns; the rest
    assert "this_channel__touches" in spoken and "action__topic" in spoken
    rng = np.random.default_rng(3)
    n = 300
    hcp_rows = rng.integers(0, model.n_hcps, n)
    action_rows = rng.integers(0, model.n_actions, n)
    X = model.rows(hcp_rows, action_rows)
    for i in range(n):
        row = _Row(model, X[i], int(action_rows[i]))
        for feature in silent:
            value = float(X[i, model.feature_position[feature]])
            assert _sentence(feature, row, value) is None, feature


def test_history_sentences_speak_as_of_the_decision(learned: LearnedWorld) -> None:
    """A lapse since the cut-off lengthens gaps; contacts since then silence what
    they may have made untrue."""
    model = learned.result.model
    lapse = reasons_module.Lapse
    fresh = _own_channel_row(
        model, "email", this_channel__touches=0, this_channel__days_since=float("nan")
    )
    rested = _own_channel_row(model, "email", this_channel__touches=3, this_channel__days_since=50)
    for row, feature in ((fresh, "this_channel__touches"), (rested, "this_channel__days_since")):
        assert _sentence(feature, row, float("nan")) is not None
        row.lapse = lapse(14, frozenset({"webinar"}))  # another channel contacted since
        said = _sentence(feature, row, float("nan"))
        assert said is not None
        if row is rested:
            assert said[0] == "no e-mail in 9 weeks"  # 50 + 14 days
        row.lapse = lapse(14, frozenset({"email"}))
        assert _sentence(feature, row, float("nan")) is None
    unseen = _own_channel_row(model, "email", this_topic__touches=0)
    assert _sentence("this_topic__touches", unseen, float("nan")) is not None
    unseen.lapse = lapse(3, frozenset({"webinar"}))  # a topic the live history cannot tell
    assert _sentence("this_topic__touches", unseen, float("nan")) is None
    gap = _own_channel_row(model, "email", all__days_since_touch=30.0)
    assert _sentence("all__days_since_touch", gap, float("nan")) == (
        "last contacted 4 weeks ago",
        ("gap",),
    )
    gap.lapse = lapse(20, frozenset())
    said = _sentence("all__days_since_touch", gap, float("nan"))
    assert said is not None and said[0] == "last contacted 7 weeks ago"
    gap.lapse = lapse(20, frozenset({"rep_visit"}))
    assert _sentence("all__days_since_touch", gap, float("nan")) is None


@pytest.mark.parametrize(
    ("days", "said"),
    [
        (7.0, "a week"),
        (6.5, "a week"),
        (1.0, "a day"),
        (14.0, "every two weeks"),
        (30.0, "a month"),
        (10.0, "every 10 days"),
        (None, "per decision period"),
    ],
)
def test_the_baseline_is_said_per_the_datas_decision_period(days: float | None, said: str) -> None:
    from nextbest.learning.reasons import _period

    assert _period(days) == said


def test_training_records_the_decision_period() -> None:
    import pandas as pd

    from nextbest.learning.train import _decision_period_days

    weekly = pd.DataFrame(
        {
            "hcp_id": ["a", "a", "a", "b", "b"],
            "timestamp": pd.to_datetime(
                ["2026-01-01", "2026-01-08", "2026-01-15", "2026-01-03", "2026-01-10"]
            ),
        }
    )
    assert _decision_period_days(weekly) == 7.0
    assert _decision_period_days(weekly.iloc[:1]) is None


def test_reasons_never_quote_a_value_that_could_point_at_one_hcp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Birth dates, IP addresses and positions written as text were features, and a
    reason read "HCPs like this one (birthday: 2.7.1951, ip: 10.0.0.0, ...)"; reasons
    reach CRMs, reps and the recommendation log."""
    from nextbest.contract import load_dataset
    from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams
    from nextbest.learning.train import train
    from nextbest.simulate import simulate_world

    out = tmp_path / "world"
    simulate_world(n_hcps=400, periods=6, seed=3).write(out, fmt="csv")
    hcps = pd.read_csv(out / "hcps.csv", dtype=str, keep_default_na=False)
    n = len(hcps)
    rng = np.random.default_rng(1)
    identifying = {
        "doctor": [f"Dr. Anna{i} Fischer" for i in range(n)],
        "nachname": [f"Fischer{i}" for i in range(n)],
        "birthday": [f"{1 + i % 28}.{1 + i % 12}.{1940 + i % 50}" for i in range(n)],
        "ip": [f"10.0.{i // 200}.{i % 200}" for i in range(n)],
        "geo": [f"{v:.4f},{w:.4f}" for v, w in rng.uniform(47, 55, (n, 2))],
    }
    for column, values in identifying.items():
        hcps[column] = values
    # Features, though their values point at one HCP or two: a number nearly unique
    # per HCP, and text too varied to be a trait but not unique enough to be dropped.
    hcps["patients_per_week"] = [f"{v:.2f}" for v in rng.uniform(20, 200, n)]
    hcps["practice"] = [f"Praxis {i % 280}" for i in range(n)]
    hcps.to_csv(out / "hcps.csv", index=False)
    dataset = load_dataset(out)
    assert dataset.hcps.attrs["identifier_columns"] == list(identifying)
    config = TrainConfig(
        engagement=EngagementParams(n_estimators=30), uplift=UpliftParams(n_estimators=40)
    )
    model = train(dataset, config=config).model
    assert not set(identifying) & set(model.feature_names)
    assert {"patients_per_week", "practice"} <= set(model.feature_names)

    # Every feature pushing every item up, with room for all: each could be said.
    rng = np.random.default_rng(0)

    def contributions(X: np.ndarray, *_: object) -> np.ndarray:
        return rng.uniform(0.1, 1.0, size=X.shape)

    learner = model.uplift_model if model.uplift_model is not None else model.engagement
    monkeypatch.setattr(learner, "contributions", contributions)
    monkeypatch.setattr(reasons_module, "MAX_REASONS", 50)
    said = "\n".join(s for reasons in _items(model, n)[2] for s in reasons)
    for column, values in identifying.items():
        assert not any(value in said for value in values), column
    assert "patients per week:" not in said and "Praxis" not in said
    # Traits many HCPs share are still said.
    assert re.search(r"HCPs like this one \(.*decile: \d+", said), said[:2000]
    assert "region: " in said
