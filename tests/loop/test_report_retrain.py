"""Uplift report on data with a known effect; retraining joins logged feedback."""

from __future__ import annotations

import json
import math
import re
import shutil
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as student_t
from sqlalchemy import Engine, event
from typer.testing import CliRunner

from nextbest import registry
from nextbest.cli import app
from nextbest.evaluation.ope import Z_95, standard_error
from nextbest.learning.config import load_train_config
from nextbest.learning.train import TrainResult
from nextbest.loop import gate
from nextbest.loop.gate import GateConfig
from nextbest.loop.report import (
    UpliftReport,
    build_rows,
    compare,
    conclusion,
    coverage_differs,
    fold_groups,
    served_elsewhere,
    uplift_report,
    write_report,
)
from nextbest.loop.retrain import (
    FeedbackRows,
    HistoryOnlyError,
    OtherDataError,
    feedback_note,
    history_repeats,
    missing_engagement,
    refuse_other_data,
    retrain,
)
from nextbest.settings import Settings, get_settings
from nextbest.storage import make_engine, make_session_factory, migrate
from nextbest.storage.repository import (
    FeedbackRecord,
    RecommendationRecord,
    ServedItem,
    log_recommendations,
    logged_decisions,
    record_feedback,
)
from nextbest.storage.testing import recommendation_record

from .conftest import FAST_CONFIG, LoopWorld, ServedStore, register

pytestmark = pytest.mark.xdist_group("loop")

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _known_effect_store(
    settings: Settings,
    *,
    n: int,
    effect: float,
    seed: int,
    by_hcp: bool = False,
    served_reported: float = 1.0,
    decided_for: datetime | None = None,
    requesters: int = 0,
    versions: int = 1,
) -> None:
    """``n`` logged requests, 30% holdout; served outcome = holdout outcome + ``effect``.

    ``by_hcp``: one request per HCP, and outcomes sent as an NRx feed sends them,
    naming the HCP and not the recommendation. ``served_reported``: the share of
    served requests whose outcome is sent (every holdout one is). ``decided_for``:
    the date every request was asked for. ``requesters``: that many API keys take turns
    asking (``rep-000``, ...), 0: one, ``test``; ``versions``: model versions 1, 2, ...
    serve in turn, each a run of consecutive requests."""
    rng = np.random.default_rng(seed)
    url = settings.resolved_database_url
    migrate(url)
    engine = make_engine(url)
    records, events = [], []
    for i in range(n):
        holdout = bool(rng.random() < 0.3)
        rid = f"r{i}"
        hcp_id = f"H{i:06d}" if by_hcp else f"H{i % 50:06d}"
        items = () if holdout else (ServedItem(1, "A1", "email", "C1", 0.1, 0.2, 0.3, 0.65, False),)
        records.append(
            RecommendationRecord(
                recommendation_id=rid,
                created_at=T0 + timedelta(minutes=i),
                hcp_id=hcp_id,
                requester=f"rep-{i % requesters:03d}" if requesters else "test",
                purpose="promotional",
                channel_filter=None,
                model_version=str(1 + i * versions // n),
                holdout=holdout,
                policy="epsilon_greedy",
                epsilon=0.1,
                holdout_rate=0.3,
                n_candidates=10,
                items=items,
                decided_for=decided_for,
            )
        )
        value = rng.poisson(2.0) + (0.0 if holdout else effect)
        if not holdout and served_reported < 1.0 and rng.random() >= served_reported:
            continue
        events.append(
            FeedbackRecord(
                event_id=f"e{i}",
                event_type="outcome",
                occurred_at=T0 + timedelta(days=3 if by_hcp else 7, minutes=i),
                hcp_id=hcp_id,
                recommendation_id=None if by_hcp else rid,
                value=float(value),
            )
        )
    with make_session_factory(engine)() as session:
        log_recommendations(session, records=records)
        session.commit()
        assert not record_feedback(session, events=events).rejected
    engine.dispose()


@pytest.mark.parametrize(
    ("n", "effect", "verdict", "opening"),
    [
        (2000, 0.5, "serving helps", "Serving recommendations raised the outcome"),
        (2000, -0.5, "serving hurts", "Serving recommendations lowered the outcome"),
        (2000, 0.0, "no clear difference yet", "No conclusion yet"),
        (40, 0.5, "not enough data", "Not enough data to conclude yet"),
    ],
)
def test_report_finds_a_known_effect(
    tmp_path: Path, n: int, effect: float, verdict: str, opening: str
) -> None:
    settings = Settings(models_dir=tmp_path / "models")
    _known_effect_store(settings, n=n, effect=effect, seed=7)
    report = uplift_report(settings, out_dir=tmp_path / "report", log=False)
    assert report.n_decisions == n
    assert report.overall.verdict.startswith(verdict)
    assert report.conclusion.startswith(opening)
    if n >= 2000:
        assert report.overall.ci_low < effect < report.overall.ci_high
        assert report.overall.ci_high - report.overall.ci_low < 0.5
    html = (tmp_path / "report" / "uplift_report.html").read_text()
    assert opening in html


def test_a_dimension_of_many_groups_shows_the_largest_and_the_rest_as_one(
    tmp_path: Path,
) -> None:
    settings = Settings(models_dir=tmp_path / "models")
    # 40 keys take turns, 50 requests each: the ties are kept in the table's order.
    _known_effect_store(settings, n=2000, effect=0.5, seed=7, requesters=40, versions=7)
    report = uplift_report(settings, out_dir=tmp_path / "report", max_groups=5, log=False)
    requesters = [r for r in report.rows if r.dimension == "requester"]
    assert [r.group for r in requesters] == ["(36 others)", *(f"rep-{i:03d}" for i in range(4))]
    assert report.folded == {"requester": 36, "model version": 3}
    versions = [r.group for r in report.rows if r.dimension == "model version"]
    assert versions == ["(before 4)", "4", "5", "6", "7"]
    rest = requesters[0]
    kept = requesters[1:]
    assert rest.n_served + sum(r.n_served for r in kept) == report.overall.n_served
    assert rest.n_holdout + sum(r.n_holdout for r in kept) == report.overall.n_holdout
    # Compared as any group is: 1,800 requests of a known effect.
    assert rest.verdict.startswith("serving helps") and rest.ci_low < 0.5 < rest.ci_high
    said = (
        "Shown one by one: 4 requester groups with the most requests, the other 36 as one; "
        "the 4 newest model versions, the 3 before them as one (--max-groups 5; 0 shows every "
        "group)."
    )
    assert said in (tmp_path / "report" / "uplift_report.html").read_text()
    record = json.loads((tmp_path / "report" / "uplift_report.json").read_text())
    assert record["folded"] == report.folded and record["max_groups"] == 5
    assert next(r["group"] for r in record["rows"] if r["dimension"] == "requester") == rest.group

    every = uplift_report(settings, out_dir=tmp_path / "every", max_groups=0, log=False)
    assert len([r for r in every.rows if r.dimension == "requester"]) == 40
    assert len([r for r in every.rows if r.dimension == "model version"]) == 7
    assert every.folded == {}
    assert "Shown one by one" not in (tmp_path / "every" / "uplift_report.html").read_text()


def test_weeks_past_the_groups_shown_are_the_oldest_as_one() -> None:
    # The newest weeks are kept, however few requests they hold.
    weeks = pd.Series(["2026-01-05"] * 5 + ["2026-01-12"] * 4 + ["2026-01-19", "2026-01-26"])
    folded, n = fold_groups(weeks, 3, by_time=True)
    assert n == 2
    assert folded.tolist() == ["(before 2026-01-19)"] * 9 + ["2026-01-19", "2026-01-26"]
    _, rows = build_rows(
        pd.DataFrame({"outcome": [1.0] * 11, "holdout": [True, False] * 5 + [True]}),
        {"week": folded},
        min_per_arm=1,
    )
    assert [r.group for r in rows] == ["(before 2026-01-19)", "2026-01-19", "2026-01-26"]
    # Model versions in number order, not as text: 9 is older than 10.
    versions = pd.Series(["9", "10", "10", "11", "2", "2", "2"])
    assert fold_groups(versions, 3, by_time=True)[0].tolist() == [
        "(before 10)",
        "10",
        "10",
        "11",
        *["(before 10)"] * 3,
    ]


@pytest.mark.parametrize(("max_groups", "n"), [(0, 0), (4, 0), (5, 0), (3, 2)])
def test_groups_are_folded_only_past_the_number_shown(max_groups: int, n: int) -> None:
    labels = pd.Series(list("aabbbcd"))
    folded, count = fold_groups(labels, max_groups)
    assert count == n
    if n:  # the largest (b, then a) keep their rows; ties go in the table's order
        assert folded.tolist() == ["a", "a", "b", "b", "b", "(2 others)", "(2 others)"]
    else:
        assert folded is labels


@pytest.mark.parametrize("max_groups", [1, -1])
def test_a_number_of_groups_that_shows_nothing_is_refused_before_the_log_is_read(
    tmp_path: Path, max_groups: int
) -> None:
    # Said before anything else is checked: there is not even a models directory.
    result = CliRunner().invoke(
        app,
        ["uplift-report", "--max-groups", str(max_groups), "--out", str(tmp_path / "r")],
        env={"NEXTBEST_MODELS_DIR": str(tmp_path / "models")},
    )
    assert result.exit_code != 0
    assert f"error: --max-groups: {max_groups} is not a number of groups to show" in " ".join(
        result.output.split()
    )
    assert not (tmp_path / "r").exists()


def test_the_report_measures_outcomes_sent_by_hcp(tmp_path: Path) -> None:
    # A weekly NRx feed names HCPs only: each outcome counts for the HCP's latest
    # decision in the 7 days before, served or held out, and the effect is found.
    settings = Settings(models_dir=tmp_path / "models")
    _known_effect_store(settings, n=2000, effect=0.5, seed=7, by_hcp=True)
    engine = make_engine(settings.resolved_database_url)
    with make_session_factory(engine)() as session:
        # And one more that no decision precedes within 7 days: counted nowhere.
        late = FeedbackRecord("late", "outcome", T0 + timedelta(days=20), "H000001", value=9.0)
        assert not record_feedback(session, events=[late]).rejected
    engine.dispose()
    sent: list[str] = []

    def keep(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(" ".join(statement.split()))

    event.listen(Engine, "before_cursor_execute", keep)  # the report makes its own
    try:
        report = uplift_report(settings, out_dir=tmp_path / "report", log=False)
    finally:
        event.remove(Engine, "before_cursor_execute", keep)
    # The log, and the outcomes sent by HCP, each read once: the events matched to
    # decisions are those the report's coverage is told from.
    by_hcp = [s for s in sent if "feedback_events.recommendation_id IS NULL" in s]
    log = [s for s in sent if s.startswith("SELECT recommendations.recommendation_id")]
    assert (len(by_hcp), len(log)) == (1, 1), sent
    assert report.n_decisions == 2000
    assert report.overall.ci_low < 0.5 < report.overall.ci_high
    assert report.overall.ci_low > 0
    assert (
        "2,000 outcome events sent without a recommendation_id counted for their HCP's "
        "latest decision in the 7 days before them; 1 found no such decision"
    ) in report.conclusion


def test_the_report_warns_when_held_out_hcps_were_contacted(tmp_path: Path) -> None:
    settings = Settings(models_dir=tmp_path / "models")
    _known_effect_store(settings, n=400, effect=0.5, seed=7)
    url = settings.resolved_database_url
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        decisions = logged_decisions(session, details=True)
        assert decisions["contacted"].eq(0).all()
        held_out = decisions[decisions["holdout"]]
        # An e-mail system that sent to every HCP, held out or not: 25 deliveries
        # reported, and 10 sends that only their opens or clicks tell of.
        contacts = [
            FeedbackRecord(
                event_id=f"sent-{rid}",
                event_type="delivered" if i < 25 else ("opened", "clicked")[i % 2],
                occurred_at=T0 + timedelta(days=1),
                hcp_id=hcp_id,
                recommendation_id=rid,
                channel="email",
            )
            for i, (rid, hcp_id) in enumerate(
                zip(held_out["recommendation_id"], held_out["hcp_id"], strict=True)
            )
        ][:35]
        assert not record_feedback(session, events=contacts).rejected
        again = logged_decisions(session, details=True).set_index("recommendation_id")
    engine.dispose()
    assert again.loc[[c.recommendation_id for c in contacts], "contacted"].eq(1).all()
    assert int(again["contacted"].sum()) == 35
    report = uplift_report(settings, out_dir=tmp_path / "report", log=False)
    assert report.holdout_contacted == 35
    warning = f"Warning: 35 of {report.overall.n_holdout:,} holdout requests got a contact event"
    assert warning in report.conclusion
    assert warning in (tmp_path / "report" / "uplift_report.html").read_text()
    # Without contacts on held-out HCPs, and one request per HCP, no warning.
    clean = Settings(models_dir=tmp_path / "clean")
    _known_effect_store(clean, n=400, effect=0.5, seed=7, by_hcp=True)
    assert "Warning" not in uplift_report(clean, out_dir=tmp_path / "r2", log=False).conclusion


def test_the_report_warns_when_held_out_hcps_were_served_by_another_request(
    tmp_path: Path,
) -> None:
    """With a holdout drawn per request (NEXTBEST_HOLDOUT_DAYS=0): 400 requests a
    minute apart about 50 HCPs serve nearly every held-out HCP again within the
    outcome window."""
    settings = Settings(models_dir=tmp_path / "models")
    _known_effect_store(settings, n=400, effect=0.5, seed=7)
    report = uplift_report(settings, out_dir=tmp_path / "report", log=False)
    n_holdout = report.overall.n_holdout
    # Only the last few held-out requests of an HCP have no served one after them.
    assert n_holdout - 50 <= report.holdout_served_elsewhere <= n_holdout
    warning = (
        f"Warning: {report.holdout_served_elsewhere:,} of {n_holdout:,} holdout requests' HCPs "
        "were served by another request in the 7 days after"
    )
    assert warning in report.conclusion
    saved = json.loads((tmp_path / "report" / "uplift_report.json").read_text())
    assert saved["holdout_served_elsewhere"] == report.holdout_served_elsewhere


def test_an_arm_without_outcomes_reads_n_a_not_nan(tmp_path: Path) -> None:
    settings = Settings(models_dir=tmp_path / "models")
    _known_effect_store(settings, n=3, effect=0.5, seed=7)  # seed 7: no holdout in 3
    report = uplift_report(settings, out_dir=tmp_path / "report", log=False)
    assert report.overall.n_holdout == 0 and math.isnan(report.overall.uplift)
    html = (tmp_path / "report" / "uplift_report.html").read_text()
    assert "nan" not in html and "<td>n/a</td>" in html

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    text = (tmp_path / "report" / "uplift_report.json").read_text()
    saved = json.loads(text, parse_constant=refuse)  # NaN would not parse in a browser
    assert saved["overall"]["mean_holdout"] is None and saved["overall"]["n_holdout"] == 0


def test_one_request_without_an_outcome_is_said_in_the_singular(tmp_path: Path) -> None:
    settings = Settings(models_dir=tmp_path / "models")
    migrate(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    item = ServedItem(1, "A1", "email", "C1", 0.1, 0.2, 0.3, 0.65, False)
    with make_session_factory(engine)() as session:
        log_recommendations(session, records=[recommendation_record("r0", "H000", items=(item,))])
        session.commit()
    report = uplift_report(settings, out_dir=tmp_path / "one", log=False)
    assert report.conclusion.startswith(
        "Nothing to conclude yet: the one request logged in the report's period has no "
        "outcome. Outcomes come as outcome feedback events"
    ), report.conclusion


def test_without_outcomes_the_report_says_what_is_missing(tmp_path: Path) -> None:
    """Nothing logged, requests logged without any outcome, and outcomes of one arm
    only each get their own sentence: all three read "0 served and 0 holdout requests
    have an outcome ... before any difference means anything" or the like."""
    settings = Settings(models_dir=tmp_path / "models")
    empty = uplift_report(settings, out_dir=tmp_path / "empty", log=False)
    url = settings.resolved_database_url
    # Named: a misspelt NEXTBEST_MODELS_DIR reads a new, empty log, and said nothing else.
    assert empty.conclusion == (
        f"Nothing to conclude yet: no request is logged in the report's period in {url} "
        "(the recommendation log NEXTBEST_MODELS_DIR or NEXTBEST_DATABASE_URL names: is it "
        "the one the service logs to?)."
    )
    engine = make_engine(url)
    item = ServedItem(1, "A1", "email", "C1", 0.1, 0.2, 0.3, 0.65, False)
    records = [
        recommendation_record(
            f"r{i}", f"H{i:03d}", holdout=i % 4 == 0, items=() if i % 4 == 0 else (item,)
        )
        for i in range(80)
    ]
    with make_session_factory(engine)() as session:
        log_recommendations(session, records=records)
        session.commit()
        unreported = uplift_report(settings, out_dir=tmp_path / "none", log=False)
        assert unreported.conclusion.startswith(
            "Nothing to conclude yet: none of the 80 requests logged in the report's period "
            "has an outcome. Outcomes come as outcome feedback events"
        ), unreported.conclusion
        # Outcomes of the served requests only.
        served = [
            FeedbackRecord(
                event_id=f"e{i}",
                event_type="outcome",
                occurred_at=T0 + timedelta(days=1),
                hcp_id=f"H{i:03d}",
                recommendation_id=f"r{i}",
                value=1.0,
            )
            for i in range(80)
            if i % 4
        ]
        assert not record_feedback(session, events=served).rejected
    engine.dispose()
    one_arm = uplift_report(settings, out_dir=tmp_path / "served", log=False)
    assert one_arm.conclusion.startswith(
        "Not enough data to conclude yet: 60 served requests have an outcome but no holdout "
        "request does, and there is nothing to compare them with (is a holdout drawn"
    ), one_arm.conclusion


def test_compare_is_welchs_t_test_with_one_outcome_per_hcp() -> None:
    """One outcome per HCP, no HCP in both arms: the interval is Welch's t-test's
    (unequal variances, Welch-Satterthwaite degrees of freedom), not the normal one,
    which with 3 HCPs per arm was 0.7 shorter on each side."""
    from scipy.stats import ttest_ind

    outcome = np.array([3.0, 5.0, 4.0, 1.0, 2.0, 0.0])
    holdout = np.array([False, False, False, True, True, True])
    row = compare(outcome, holdout, dimension="d", group="g", min_per_arm=2)
    assert row.uplift == pytest.approx(3.0)
    welch = ttest_ind(outcome[~holdout], outcome[holdout], equal_var=False)
    assert (row.ci_low, row.ci_high) == pytest.approx(tuple(welch.confidence_interval(0.95)))
    assert row.ci_low < 3.0 - Z_95 * np.sqrt(1.0 / 3 + 1.0 / 3) - 0.5
    assert conclusion(row, min_per_arm=2).startswith("Serving recommendations raised")
    # Unequal arms, spreads and sizes: still Welch's.
    rng = np.random.default_rng(4)
    served, held = rng.normal(1.0, 2.0, 5), rng.normal(0.0, 0.5, 12)
    row = compare(
        np.concatenate([served, held]),
        np.arange(17) >= 5,
        dimension="d",
        group="g",
        min_per_arm=2,
    )
    welch = ttest_ind(served, held, equal_var=False)
    assert (row.ci_low, row.ci_high) == pytest.approx(tuple(welch.confidence_interval(0.95)))


def test_every_hcp_once_in_each_arm_is_the_paired_t_test() -> None:
    """Each HCP once served and once held out (a weekly holdout over two weeks): its
    habits cancel from the difference, and the interval is the paired t-test's, on
    G - 1 degrees of freedom for G HCPs."""
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(5)
    habit = rng.normal(0.0, 2.0, 6)
    served, held = habit + rng.normal(0.8, 0.5, 6), habit + rng.normal(0.0, 0.5, 6)
    decisions = pd.DataFrame(
        {
            "hcp_id": np.tile(np.arange(6), 2),
            "holdout": np.repeat([False, True], 6),
            "outcome": np.concatenate([served, held]),
        }
    )
    overall, _ = build_rows(decisions, {}, min_per_arm=2)
    paired = ttest_rel(served, held)
    assert (overall.ci_low, overall.ci_high) == pytest.approx(
        tuple(paired.confidence_interval(0.95))
    )


def test_intervals_of_hundreds_of_hcps_barely_move_from_the_normal() -> None:
    """With 300 HCPs per arm, Student's t critical value is 0.2% above the
    normal's: the intervals of a realistic report are as they were."""
    rng = np.random.default_rng(6)
    hcp = np.repeat(np.arange(600), rng.integers(1, 6, 600))
    decisions = pd.DataFrame(
        {"hcp_id": hcp, "holdout": hcp >= 300, "outcome": rng.poisson(2.0, len(hcp))}
    )
    overall, _ = build_rows(decisions, {}, min_per_arm=30)
    served, held = decisions[~decisions["holdout"]], decisions[decisions["holdout"]]
    se_s = standard_error(served["outcome"].to_numpy(float), served["hcp_id"].to_numpy())
    se_h = standard_error(held["outcome"].to_numpy(float), held["hcp_id"].to_numpy())
    # Welch-Satterthwaite over the two arms' squared errors, 299 degrees of freedom each.
    dof = (se_s**2 + se_h**2) ** 2 / ((se_s**4 + se_h**4) / 299)
    ratio = (overall.ci_high - overall.uplift) / (Z_95 * math.hypot(se_s, se_h))
    assert ratio == pytest.approx(student_t.isf(0.025, dof) / Z_95, rel=1e-9)


def test_groups_split_both_arms() -> None:
    decisions = pd.DataFrame(
        {"outcome": [1.0, 2.0, 3.0, 4.0], "holdout": [True, False, True, False]}
    )
    labels = pd.Series(["email", "email", "rep_visit", "rep_visit"])
    overall, rows = build_rows(decisions, {"channel": labels}, min_per_arm=1)
    assert overall.n_served == 2 and overall.n_holdout == 2
    assert [(r.group, r.n_served, r.n_holdout, r.uplift) for r in rows] == [
        ("email", 1, 1, 1.0),
        ("rep_visit", 1, 1, 1.0),
    ]


def test_report_on_a_served_log_groups_by_channel_and_segment(
    honest_loop: ServedStore, tmp_path: Path
) -> None:
    report = uplift_report(honest_loop.settings, out_dir=tmp_path / "r")
    assert report.n_decisions == honest_loop.n_outcomes
    dimensions = {r.dimension for r in report.rows}
    assert dimensions == {
        "channel",
        "action group",
        "specialty",
        "requester",
        "model version",
        "week",
    }
    # Holdout requests are grouped by what would have been served, like served ones.
    by_channel = [r for r in report.rows if r.dimension == "channel"]
    assert sum(r.n_holdout for r in by_channel) == report.overall.n_holdout
    by_requester = [
        (r.group, r.n_served + r.n_holdout) for r in report.rows if r.dimension == "requester"
    ]
    assert by_requester == [("t", report.n_decisions)]  # who asked: the loop's one key
    by_version = [
        (r.group, r.n_served + r.n_holdout) for r in report.rows if r.dimension == "model version"
    ]
    assert by_version == [(honest_loop.champion, report.n_decisions)]  # one version served
    weeks = [r for r in report.rows if r.dimension == "week"]
    assert sum(r.n_served + r.n_holdout for r in weeks) == report.n_decisions
    # Each label is the Monday of its week; the newest, that of the week the fixture
    # served in (the Monday of either clock reading around it, should a week turn).
    latest = date.fromisoformat(weeks[-1].group)
    assert latest.weekday() == 0

    def monday(at: datetime) -> date:
        return at.date() - timedelta(days=at.weekday())

    assert monday(honest_loop.served_from) <= latest <= monday(honest_loop.served_until)
    assert all(p.exists() for p in report.files.values())
    run = registry.client(honest_loop.settings).get_run(report.run_id)
    assert run.data.metrics["n_decisions"] == honest_loop.n_outcomes
    assert not report.overall.verdict.startswith("not enough data")
    assert run.data.metrics["uplift_ci_low"] == pytest.approx(report.overall.ci_low)
    assert run.data.tags["verdict"] == report.overall.verdict


def test_a_thin_reports_run_logs_no_interval(honest_loop: ServedStore, tmp_path: Path) -> None:
    """Outcomes from too few HCPs in an arm: the MLflow run holds the counts and the
    difference, but no interval to chart beside conclusive runs', and says why."""
    from dataclasses import replace

    from nextbest.loop.report import _log_report

    outcome = np.array([1.0, 0.0, 2.0, 0.0, 1.0, 0.0])
    holdout = np.array([False, False, False, True, True, True])
    thin = compare(outcome, holdout, dimension="overall", group="all", min_per_arm=30)
    assert np.isfinite(thin.ci_low)  # an interval exists, from 3 HCPs per arm
    report = uplift_report(honest_loop.settings, out_dir=tmp_path / "r", log=False)
    run_id = _log_report(honest_loop.settings, replace(report, overall=thin), tmp_path / "r")
    run = registry.client(honest_loop.settings).get_run(run_id)
    assert run.data.metrics["hcps_holdout"] == 3
    assert run.data.metrics["uplift"] == pytest.approx(thin.uplift)
    assert "uplift_ci_low" not in run.data.metrics and "uplift_ci_high" not in run.data.metrics
    assert run.data.tags["verdict"] == "not enough data (need outcomes from 30 HCPs per arm)"


def test_report_refuses_a_segment_the_hcps_lack(honest_loop: ServedStore, tmp_path: Path) -> None:
    from nextbest.errors import InvalidRequestError

    out = tmp_path / "typo"
    with pytest.raises(
        InvalidRequestError,
        match=r"'decil' is not an HCP attribute of the served models \(did you mean 'decile'\?\); "
        r"known: .*decile",
    ):
        uplift_report(honest_loop.settings, out_dir=out, segment="decil", log=False)
    assert not out.exists()  # nothing half-written


def test_retrain_joins_history_and_feedback(
    loop_world: LoopWorld, honest_loop: ServedStore
) -> None:
    settings = honest_loop.settings
    engine = make_engine(settings.resolved_database_url)
    with make_session_factory(engine)() as session:
        logged = logged_decisions(session)
    engine.dispose()
    with_outcome = logged[np.isfinite(logged["outcome"])]
    outcome = retrain(settings, dataset=loop_world.dataset, config=FAST_CONFIG, reserved_share=0.3)
    rows = outcome.feedback.interactions
    reserved = outcome.feedback.n_reserved
    assert len(rows) + reserved == len(with_outcome) == honest_loop.n_outcomes
    assert 0.2 * len(with_outcome) < reserved < 0.4 * len(with_outcome)
    # The gate evaluates on exactly the decisions retraining left out.
    gate_n = gate.evaluate(
        settings, config=GateConfig(evaluation_share=0.3, min_decisions=1), log=False
    ).decision.n_decisions
    assert gate_n == reserved
    assert int(rows["holdout"].sum()) == outcome.feedback.n_holdout > 0
    assert (rows["propensity"] > 0).all() and (rows["propensity"] <= 1).all()
    assert rows.loc[rows["holdout"], "action_id"].isna().all()
    assert outcome.result.params["n_decisions"] == len(loop_world.dataset.interactions) + len(rows)
    # Every joined decision is fitted: the evaluation slice is the history's newest
    # (the logged decisions are the newest of all and would otherwise fill it).
    stamps = np.sort(loop_world.dataset.interactions["timestamp"].to_numpy())
    cut = stamps[-int(len(stamps) * FAST_CONFIG.eval_fraction)]
    n_eval = int((stamps >= cut).sum())  # the history's newest decisions, whole days
    assert outcome.result.metrics["eval_decisions"] == n_eval
    assert outcome.result.metrics["train_decisions"] == len(stamps) - n_eval + len(rows)
    assert registry.alias_version(settings, "challenger") == outcome.version
    assert registry.alias_version(settings, "champion") == honest_loop.champion
    run = registry.client(settings).get_run(outcome.run_id)
    assert run.data.params["feedback_rows"] == str(len(rows))
    # This store's feedback is outcomes only: every touch joined as not engaged, and
    # the run says so first, naming the channels and the fix.
    touched = rows[rows["action_id"].notna()]
    assert len(touched) and not touched["engaged"].any()
    channels = set(touched["channel"].astype(str))
    assert len(outcome.warnings) == 1
    warning = outcome.warnings[0]
    assert outcome.result.notes[0] == warning
    assert all(f"{c}: 0 of " in warning for c in channels), warning
    assert "Send the engagement events" in warning
    assert set(run.data.tags["feedback_engagement_missing"].split(",")) == channels
    listed = {v.version: v for v in registry.list_versions(settings)}
    assert set(listed[outcome.version].feedback_engagement_missing or []) == channels
    assert listed[honest_loop.champion].feedback_engagement_missing is None  # trained only
    notes = registry.client(settings).download_artifacts(run.info.run_id, "notes.txt")
    assert Path(notes).read_text().startswith(warning)
    # What evaluate checks its gate config against.
    version = registry.client(settings).get_model_version(settings.model_name, outcome.version)
    assert version.tags["evaluation_share"] == "0.3"


def test_retrain_keeps_a_gate_config_named_as_its_training_config_apart(
    loop_world: LoopWorld, honest_copy: Settings, tmp_path: Path
) -> None:
    """Both kept under config/ by their names: the second would have replaced the first."""
    train_yaml, gate_yaml = tmp_path / "train" / "config.yaml", tmp_path / "gate" / "config.yaml"
    for path, text in (
        (
            train_yaml,
            "engagement: {n_estimators: 40, num_leaves: 15}\nuplift: {n_estimators: 60}\n",
        ),
        (gate_yaml, "evaluation_share: 0.25\nmin_differing_effective_n: 20\n"),
    ):
        path.parent.mkdir()
        path.write_text(text)
    outcome = retrain(
        honest_copy,
        dataset=loop_world.dataset,
        config=load_train_config(train_yaml),
        gate=gate.load_gate_config(gate_yaml),
    )
    assert outcome.feedback.n_reserved > 0
    client = registry.client(honest_copy)
    kept = {a.path for a in client.list_artifacts(outcome.run_id, "config")}
    assert kept == {"config/config.yaml", "config/gate.file"}, kept
    copy = client.download_artifacts(outcome.run_id, "config/gate.file/config.yaml", str(tmp_path))
    assert Path(copy).read_text() == gate_yaml.read_text()
    params = client.get_run(outcome.run_id).data.params
    assert (params["gate.file"], params["gate.evaluation_share"]) == (str(gate_yaml), "0.25")
    assert params["gate.min_differing_effective_n"] == "20"
    version = client.get_model_version(honest_copy.model_name, outcome.version)
    assert version.tags["evaluation_share"] == "0.25"
    # A share given beside a gate config must be its own.
    with pytest.raises(
        ValueError, match=re.escape("reserved_share 0.3 is not the evaluation_share 0.25")
    ):
        retrain(
            honest_copy,
            dataset=loop_world.dataset,
            config=FAST_CONFIG,
            gate=gate.load_gate_config(gate_yaml),
            reserved_share=0.3,
        )


def test_retrain_refuses_data_that_holds_too_few_of_the_logged_hcps(
    loop_world: LoopWorld, honest_copy: Settings
) -> None:
    """A models directory (and its log) of another world, or the wrong --data: only
    noted ("N for HCPs not in the hcps file were left out"), a challenger was trained
    and registered that the gate then refused. Over half of the decisions unknown, it
    is refused before training, naming the data and the log."""
    from nextbest.contract.dataset import Dataset

    full = loop_world.dataset
    kept = full.hcps["hcp_id"].iloc[: len(full.hcps) // 4]
    other = Dataset(
        full.hcps[full.hcps["hcp_id"].isin(kept)].reset_index(drop=True),
        full.catalog,
        full.interactions[full.interactions["hcp_id"].isin(kept)].reset_index(drop=True),
        source=Path("other-world"),
    )
    before = [v.version for v in registry.list_versions(honest_copy)]
    with pytest.raises(OtherDataError) as raised:
        retrain(honest_copy, dataset=other, config=FAST_CONFIG)
    said = str(raised.value)
    assert re.search(
        r"^[\d,]+ of the [\d,]+ logged decisions with an outcome to learn from \((\d+)%\) "
        r"are for HCPs not in the hcps file of other-world \(which holds "
        rf"{len(kept)} HCPs; logged, not in it: H\d+, H\d+, H\d+, ...\): the recommendation "
        r"log \(sqlite:///.*\) was served from other data than this",
        said,
    ), said
    assert int(re.search(r"\((\d+)%\)", said).group(1)) > 50, said
    assert said.endswith("nothing was trained"), said
    assert [v.version for v in registry.list_versions(honest_copy)] == before


@pytest.mark.parametrize(("unknown", "refused"), [(0, False), (50, False), (51, True)])
def test_retrain_refuses_only_when_over_half_of_the_logged_hcps_are_unknown(
    loop_world: LoopWorld, unknown: int, refused: bool
) -> None:
    rows = FeedbackRows(
        interactions=pd.DataFrame({"hcp_id": ["h"] * (100 - unknown)}),
        n_logged=100,
        n_unknown_hcp=unknown,
        n_holdout=0,
        unknown_hcp_ids=("X1",),
    )
    if refused:
        with pytest.raises(OtherDataError, match="51 of the 100 logged decisions"):
            refuse_other_data(Settings(), loop_world.dataset, rows)
    else:
        refuse_other_data(Settings(), loop_world.dataset, rows)


def test_retrain_refuses_a_since_no_logged_decision_reaches(
    loop_world: LoopWorld, honest_loop: ServedStore
) -> None:
    """A --since after every logged decision would register a model of the history
    alone as the challenger: refused, before any training."""
    with pytest.raises(ValueError, match="no logged decision with an outcome since then"):
        retrain(
            honest_loop.settings,
            dataset=loop_world.dataset,
            config=FAST_CONFIG,
            since=datetime.now(UTC),
        )


def test_retrain_with_nothing_logged_is_refused_unless_history_only_is_allowed(
    loop_world: LoopWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No decision with an outcome in the log: the challenger would be a model of the
    history alone, registered as if it had learned from feedback. Refused (exit 2),
    saying whether nothing was served or no outcome came back, before any training."""
    settings = Settings(models_dir=tmp_path / "models", seed=1)
    register(loop_world.honest, settings)
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(settings.models_dir))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["retrain", "--data", str(loop_world.data_dir)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "holds no logged decision with an outcome: no decision was served" in said, said
    assert "a model of the history alone" in said and "--allow-history-only" in said, said
    assert registry.alias_version(settings, "challenger") is None

    # Served, but the outcome feed never came: said as such.
    hcps = list(loop_world.dataset.hcps["hcp_id"][:3])
    engine = make_engine(settings.resolved_database_url)
    with make_session_factory(engine)() as session:
        log_recommendations(
            session, records=[recommendation_record(f"r{i}", h) for i, h in enumerate(hcps)]
        )
        session.commit()
    engine.dispose()
    with pytest.raises(HistoryOnlyError, match="3 decisions were served, and no outcome came"):
        retrain(settings, dataset=loop_world.dataset, config=FAST_CONFIG)
    assert registry.alias_version(settings, "challenger") is None

    outcome = retrain(
        settings, dataset=loop_world.dataset, config=FAST_CONFIG, allow_history_only=True
    )
    assert registry.alias_version(settings, "challenger") == outcome.version
    assert any(
        n.startswith("--allow-history-only: the recommendation log") for n in outcome.result.notes
    ), outcome.result.notes


def test_retrain_records_the_code_as_it_was_when_it_began(
    loop_world: LoopWorld, git_checkout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout edited while a retraining runs: the challenger's run records the
    edits as they were when the retraining began, and says the checkout changed."""
    from functools import partial

    module = git_checkout.module
    for name in ("source_commit", "source_edits", "source_patch"):
        monkeypatch.setattr(registry, name, partial(getattr(registry, name), module))
    settings = Settings(models_dir=tmp_path / "models", seed=1)
    register(loop_world.honest, settings)
    module.write_text("x = 2\n")
    began = registry.source_edits()

    def edit_while_training(stage: str) -> None:
        if stage == "features":
            module.write_text("x = 3\n")

    outcome = retrain(
        settings,
        dataset=loop_world.dataset,
        config=FAST_CONFIG,
        allow_history_only=True,
        progress=edit_while_training,
    )
    assert registry.source_edits() not in (None, began)
    assert outcome.run_id is not None
    tags = registry.client(settings).get_run(outcome.run_id).data.tags
    assert began is not None and tags[registry.EDITS_TAG] == began
    assert tags[registry.SOURCE_CHANGED_TAG] in outcome.result.notes
    assert outcome.registered is not None and outcome.registered.source_patch is not None
    patch = Path(outcome.registered.source_patch.removeprefix("file://")).read_text()
    assert "+x = 2" in patch and "+x = 3" not in patch

    # The command says where the patch of a retraining's edits is kept.
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(settings.models_dir))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app,
            ["retrain", "--data", str(loop_world.data_dir), "--allow-history-only"],
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    (run_id,) = re.findall(r"\(run (\w+)\)", said)
    where = Path(
        registry.client(settings).get_run(run_id).info.artifact_uri.removeprefix("file://")
    )
    commit = git_checkout.git("rev-parse", "HEAD")[:12]
    assert (
        f"source: trained from commit {commit} with uncommitted edits: their patch is "
        f"{where / registry.PATCH_ARTIFACT};"
    ) in said, said


def test_decisions_on_content_retired_from_the_catalog_are_left_out_and_counted(
    loop_world: LoopWorld, honest_loop: ServedStore
) -> None:
    from nextbest.contract import Dataset
    from nextbest.loop.evidence import load_decisions
    from nextbest.loop.retrain import feedback_interactions

    engine = make_engine(honest_loop.settings.resolved_database_url)
    with make_session_factory(engine)() as session:
        decisions = load_decisions(session)
    engine.dispose()
    retired = decisions["action_id"].dropna().value_counts().index[0]
    data = loop_world.dataset
    catalog = data.catalog[data.catalog["action_id"] != retired].reset_index(drop=True)
    history = data.interactions[data.interactions["action_id"] != retired]
    rows = feedback_interactions(decisions, Dataset(data.hcps, catalog, history))
    served_retired = int((decisions["action_id"] == retired).sum())
    assert rows.n_unknown_action == served_retired > 0
    assert len(rows.interactions) == len(decisions) - served_retired
    assert retired not in set(rows.interactions["action_id"].dropna())


def test_engagement_reported_for_a_no_action_answer_does_not_stop_retraining(
    tmp_path: Path, loop_world: LoopWorld
) -> None:
    """The store accepts an open or a completed visit naming a holdout or an empty
    answer (a caller that contacted the HCP anyway); joined as engaged = 1 on a
    no-touch row, it broke the contract and every later retrain failed on it."""
    from nextbest.loop.retrain import read_feedback_rows

    settings = Settings(models_dir=tmp_path / "models")
    url = settings.resolved_database_url
    migrate(url)
    engine = make_engine(url)
    hcps = [str(h) for h in loop_world.dataset.hcps["hcp_id"].iloc[:3]]
    action = loop_world.dataset.catalog.iloc[0]
    item = ServedItem(
        1, str(action["action_id"]), str(action["channel"]), "C1", 1, 1, 0.5, 0.8, False
    )
    records = [
        recommendation_record("held", hcps[0], holdout=True, created_at=T0, p_no_action=0.3),
        recommendation_record("empty", hcps[1], created_at=T0, p_no_action=0.9),
        recommendation_record("served", hcps[2], created_at=T0, items=(item,)),
    ]
    events = []
    for rid, hcp_id in zip(("held", "empty", "served"), hcps, strict=True):
        events += [
            FeedbackRecord(f"out-{rid}", "outcome", T0 + timedelta(days=3), hcp_id, rid, value=1.0),
            FeedbackRecord(f"open-{rid}", "opened", T0 + timedelta(days=1), hcp_id, rid),
        ]
    with make_session_factory(engine)() as session:
        log_recommendations(session, records=records)
        session.commit()
        stored = record_feedback(session, events=events)
        assert len(stored.accepted) == 6, stored.rejected
        rows = read_feedback_rows(session, loop_world.dataset, since=None).interactions
    engine.dispose()
    engaged = dict(zip(rows["hcp_id"], rows["engaged"], strict=True))
    assert engaged == {hcps[0]: 0, hcps[1]: 0, hcps[2]: 1}
    assert rows.loc[rows["action_id"].isna(), "hcp_id"].tolist() == sorted(hcps[:2])


def test_evaluate_refuses_a_share_that_reaches_into_training(
    honest_loop: ServedStore, loop_world: LoopWorld
) -> None:
    """A larger evaluation_share than retrain's (or 0: all) would count decisions the
    challenger learned from as evidence; a smaller one is a subset of the reserved ones."""
    settings = honest_loop.settings
    retrain(settings, dataset=loop_world.dataset, config=FAST_CONFIG, reserved_share=0.3)
    for share in (0.6, 0.0):
        with pytest.raises(gate.GateError, match=r"retrained with evaluation_share 0\.3"):
            gate.evaluate(settings, config=GateConfig(evaluation_share=share), log=False)
    smaller = gate.evaluate(
        settings, config=GateConfig(evaluation_share=0.2, min_decisions=1), log=False
    )
    assert smaller.decision.n_decisions > 0


def test_a_challenger_retrained_on_every_decision_is_judged_by_none(
    honest_loop: ServedStore, loop_world: LoopWorld
) -> None:
    """evaluation_share 0 in retrain leaves nothing for the gate: evaluated with share 0
    too, the challenger was judged on the very outcomes it was fitted to (the check
    let equal shares through); with any other share it is refused as well."""
    settings = honest_loop.settings
    outcome = retrain(settings, dataset=loop_world.dataset, config=FAST_CONFIG, reserved_share=0.0)
    assert outcome.feedback.n_reserved == 0
    assert any("evaluation_share 0 (gate config)" in note for note in outcome.result.notes)
    said = rf"challenger, version {outcome.version}, was retrained with evaluation_share 0: "
    for share in (0.0, 0.3):
        with pytest.raises(gate.NoEvidenceError, match=said):
            gate.evaluate(
                settings, config=GateConfig(evaluation_share=share, min_decisions=1), log=False
            )
    with pytest.raises(gate.NoEvidenceError, match=said):
        gate.promote(settings, config=GateConfig(evaluation_share=0.0, min_decisions=1))
    assert registry.alias_version(settings, "champion") == honest_loop.champion


def test_a_challenger_retrained_on_every_decision_can_still_be_forced(
    tmp_path: Path, loop_world: LoopWorld
) -> None:
    settings = Settings(models_dir=tmp_path / "models")
    result = TrainResult(model=loop_world.honest, metrics={}, params={"variant": "test"})
    champion = registry.log_training_run(result, settings).version
    challenger = registry.log_training_run(
        result, settings, alias="challenger", extra_tags={gate.SHARE_TAG: "0"}
    ).version
    forced = gate.promote(settings, config=GateConfig(), force=True, reason="field request")
    assert forced.promoted and forced.decision.n_decisions == 0
    assert "retrained with evaluation_share 0" in forced.decision.reasons[0]
    assert registry.alias_version(settings, "champion") == challenger != champion


@pytest.mark.parametrize(
    ("engaged", "flagged"),
    [
        (0, True),  # an outcome feed without engagement events
        (30, False),  # the history's rate
        (20, False),  # a policy that targets differently moves the rate a little
        (5, True),  # a feed that lost most of them
    ],
)
def test_missing_engagement_compares_with_the_history_rate(engaged: int, flagged: bool) -> None:
    history = pd.DataFrame(
        {
            "action_id": ["e1"] * 1000 + [None] * 200,
            "channel": ["email"] * 1000 + [None] * 200,
            "engaged": [1] * 300 + [0] * 900,
        }
    )
    feedback = pd.DataFrame(
        {
            "action_id": ["e1"] * 100 + [None] * 50,
            "channel": ["email"] * 100 + [None] * 50,
            "engaged": [1] * engaged + [0] * (150 - engaged),
        }
    )
    found = missing_engagement(feedback, history)
    assert [s.channel for s in found] == (["email"] if flagged else [])
    assert missing_engagement(feedback.iloc[:0], history) == []  # no feedback: history only


@pytest.mark.parametrize(
    ("joined", "holdout", "reserved", "unknown_hcp", "said"),
    [
        (
            2_900,
            290,
            2_391,
            5,
            "2,900 logged decisions with outcomes joined the history and were all fitted, 290 "
            "of them from the holdout; 2,391 more were reserved for the gate and 5 for HCPs "
            "not in the hcps file were left out; the evaluation slice is the newest of the "
            "history",
        ),
        (
            290,
            29,
            120,
            0,
            "290 logged decisions with outcomes joined the history and were all fitted, 29 of "
            "them from the holdout; 120 more were reserved for the gate; the evaluation slice "
            "is the newest of the history",
        ),
        (
            40,
            0,
            0,
            3,
            "40 logged decisions with outcomes joined the history and were all fitted; 3 for "
            "HCPs not in the hcps file were left out; the evaluation slice is the newest of "
            "the history",
        ),
        (
            1,
            0,
            1,
            1,
            "1 logged decision with outcomes joined the history and was fitted; 1 more was "
            "reserved for the gate and 1 for HCPs not in the hcps file was left out; the "
            "evaluation slice is the newest of the history",
        ),
        (
            0,
            0,
            0,
            0,
            "no logged decision with an outcome joined the history; the evaluation slice is "
            "the newest of the history",
        ),
        (
            0,
            0,
            30,
            0,
            "no logged decision with an outcome joined the history; 30 were reserved for the "
            "gate; the evaluation slice is the newest of the history",
        ),
    ],
)
def test_retrain_says_what_became_of_the_logged_decisions_leaving_out_counts_of_none(
    joined: int, holdout: int, reserved: int, unknown_hcp: int, said: str
) -> None:
    rows = FeedbackRows(
        interactions=pd.DataFrame({"hcp_id": ["h"] * joined}),
        n_logged=joined + unknown_hcp,
        n_unknown_hcp=unknown_hcp,
        n_holdout=holdout,
        n_reserved=reserved,
    )
    assert feedback_note(rows) == said


def _gate_run(settings: Settings, version: str) -> str:
    """The run of the last gate verdict on ``version`` (its ``gate`` tag names it)."""
    tag = registry.client(settings).get_model_version(settings.model_name, version).tags["gate"]
    return tag.rsplit("(run ", 1)[1].rstrip(")")


def test_cli_walkthrough(
    loop_world: LoopWorld,
    honest_loop: ServedStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The README's commands, as a data scientist types them."""
    settings = honest_loop.settings
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(settings.models_dir))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        config = tmp_path / "train.yaml"
        config.write_text("engagement: {n_estimators: 40, num_leaves: 15}\n")
        # The CRM's export now carries the HCPs' e-mail addresses: retrain says what
        # validate and train say of the data, and keeps it in the run's notes.
        data = tmp_path / "data"
        shutil.copytree(loop_world.data_dir, data)
        hcps = pd.read_parquet(data / "hcps.parquet")
        hcps["email"] = [f"dr{i}@clinic.example" for i in range(len(hcps))]
        hcps.to_parquet(data / "hcps.parquet")
        result = runner.invoke(app, ["retrain", "--data", str(data), "--config", str(config)])
        assert result.exit_code == 0, result.output
        said = " ".join(result.output.split())
        assert "hcps columns email look like personal data" in said, said
        challenger = registry.alias_version(settings, "challenger")
        assert "as 'challenger'" in result.output
        # Its figures on its held-out slice, as `nextbest models` has them, and what the
        # learned policy adds over the logged one: retrain printed no figure at all.
        [v] = [v for v in registry.list_versions(settings) if v.version == challenger]
        assert v.eval_auc is not None and v.policy_value_dr is not None
        assert (
            f"version {challenger} on its held-out slice ({v.eval_decisions:,} decisions): "
            f"AUC {v.eval_auc:.3f}; policy value (DR) "
            "{:.3f} [{:.3f}, {:.3f}]; ".format(*v.policy_value_dr)
        ) in said, said
        assert "the logged policy" in said.split("on its held-out slice")[1], said
        # Off a terminal (a cron job's log) each step is a line, and the last says the
        # run is done, not the last step's name again. Reading --data is a step: the
        # first line, "feedback: 0/6", came once it was read, and none said when the
        # logged decisions were.
        lines = result.output.splitlines()
        stages = (
            "load: 0/7 (0:00:00)",
            "feedback: 1/7",
            "features: 2/7",
            "models: 3/7",
            "register: 6/7",
            "done: 7/7",
        )
        found = [next(i for i, ln in enumerate(lines) if ln.startswith(s)) for s in stages]
        assert found == sorted(found), result.output
        assert "register: 7/7" not in result.output, result.output
        # What became of the logged decisions, a count of none left unsaid.
        assert "logged decisions with outcomes joined the history and were all fitted" in said
        assert "more were reserved for the gate; the evaluation slice is" in said, said
        assert "0 for HCPs" not in said and "0 holdout" not in said, said
        # Outcome-only feedback: said last, where it is read.
        last = result.output.strip().splitlines()[-1]
        assert last.startswith("WARNING: the feedback carries outcomes but hardly any"), last

        assert "gate config: training/gate.yaml (evaluation_share 0.3)" in result.output
        # The run keeps the gate config it read beside its training config, as read.
        client = registry.client(settings)
        gate_yaml = Path("training/gate.yaml").read_text()
        run_id = client.get_model_version(settings.model_name, challenger).run_id
        kept = {a.path for a in client.list_artifacts(run_id, "config")}
        assert kept == {"config/train.yaml", "config/gate.yaml"}, kept
        (tmp_path / "run").mkdir()
        copy = client.download_artifacts(run_id, "config/gate.yaml", str(tmp_path / "run"))
        assert Path(copy).read_text() == gate_yaml
        params = client.get_run(run_id).data.params
        assert params["gate.file"] == "training/gate.yaml"
        assert params["gate.evaluation_share"] == "0.3"

        result = runner.invoke(app, ["evaluate"], terminal_width=240)
        assert result.exit_code == 0, result.output
        assert "gate (dr)" in result.output
        assert "gate config: training/gate.yaml (evaluation_share 0.3)" in result.output
        # So does the evaluation that applied it.
        evaluated = _gate_run(settings, challenger)
        kept = {a.path for a in client.list_artifacts(evaluated, "config")}
        assert kept == {"config/gate.yaml"}, kept
        (tmp_path / "eval").mkdir()
        copy = client.download_artifacts(evaluated, "config/gate.yaml", str(tmp_path / "eval"))
        assert Path(copy).read_text() == gate_yaml
        first = registry.alias_version(settings, "champion")
        assert "evaluating challenger vs champion ..." in result.output
        assert f"champion v{first} vs challenger v{challenger} on " in result.output
        # Judged on the champion's answers alone, kept out: told how to give it its own.
        assert ": 0% by the challenger itself" in result.output
        assert "not passed" in result.output
        said = " ".join(result.output.split())
        assert "the challenger served none of this evidence" in said
        assert "servers with NEXTBEST_CHALLENGER_SHARE answer a share of HCPs with it" in said
        # --version naming the alias's version: the challenger, said as without it.
        result = runner.invoke(app, ["evaluate", "--version", challenger], terminal_width=240)
        assert result.exit_code == 0, result.output
        assert f"champion v{first} vs challenger v{challenger} on " in result.output
        # What the challenger would answer one HCP, beside the champion's answer.
        hcp = str(loop_world.dataset.hcps["hcp_id"].iat[0])
        for asked, version in (
            (["--model", "challenger"], challenger),
            ([], registry.alias_version(settings, "champion")),
        ):
            result = runner.invoke(app, ["explain", hcp, "--json", *asked])
            assert result.exit_code == 0, result.output
            assert json.loads(result.stdout)["model_version"] == version

        # A gate config with another share than retrain's is refused, naming both.
        wider = tmp_path / "wider.yaml"
        wider.write_text("evaluation_share: 0.6\n")
        for command in ("evaluate", "promote"):
            result = runner.invoke(app, [command, "--config", str(wider)])
            said = " ".join(result.output.split())
            assert result.exit_code == 2, result.output
            assert f"gate config: {wider} (evaluation_share 0.6)" in said
            assert f"version {challenger}, was retrained with evaluation_share 0.3" in said
            assert "or retrain with --gate naming this one" in said  # the challenger's way out
        assert registry.alias_version(settings, "challenger") == challenger  # not promoted

        champion = registry.alias_version(settings, "champion")
        result = runner.invoke(app, ["promote", "--force", "--reason", "pilot of the new model"])
        assert result.exit_code == 0, result.output
        passed = "gate (dr): passed" in result.output
        assert registry.alias_version(settings, "champion") == challenger
        # Promoted, it is no longer the challenger: nothing left to evaluate.
        assert registry.alias_version(settings, "challenger") is None
        result = runner.invoke(app, ["evaluate"])
        assert result.exit_code == 2 and "has no 'challenger' version" in result.output
        # The refusal is all it says: no line of a gate that did not run.
        assert "gate config" not in result.output and "evaluating" not in result.output
        # A retried promote job: done already, said, exit 0, nothing logged or moved.
        result = runner.invoke(app, ["promote", "--force", "--reason", "pilot of the new model"])
        said = " ".join(result.output.split())
        assert result.exit_code == 0, result.output
        assert said.startswith(f"nothing to promote: version {challenger}, the newest, is ")
        assert "gate config" not in said, said  # of a gate that did not run

        result = runner.invoke(app, ["rollback", "--reason", "odd picks in the field"])
        assert result.exit_code == 0, result.output
        assert registry.alias_version(settings, "champion") == champion
        recorded = re.search(r"recorded: MLflow run (\w+)", result.output)
        assert recorded, result.output
        run = registry.client(settings).get_run(recorded.group(1))
        assert run.data.tags["reason"] == "odd picks in the field"
        # Rolled back, there is no challenger to promote: refused first, nothing else said.
        result = runner.invoke(app, ["promote"])
        said = " ".join(result.output.split())
        assert result.exit_code == 2, result.output
        assert said.startswith("error: model 'nextbest' has no 'challenger' version"), said
        assert "gate config" not in said and "evaluating" not in said, said

        # What happened, as `nextbest models` lists it.
        result = runner.invoke(app, ["models", "--json"])
        assert result.exit_code == 0, result.output
        listed = json.loads(result.stdout)
        by_version = {v["version"]: v for v in listed["versions"]}
        assert by_version[champion]["aliases"] == ["champion"]
        assert by_version[challenger]["aliases"] == []  # promoted, then rolled back
        assert by_version[challenger]["gate"].startswith(("passed vs v", "failed vs v"))
        assert by_version[challenger]["promoted_at"] and by_version[challenger]["rolled_back_at"]
        assert by_version[challenger]["promotion"] == ("gate passed" if passed else "forced")
        for v in listed["versions"]:  # every time ISO 8601 with its UTC offset
            for key in ("registered_at", "data_as_of"):  # None: a test version without one
                if v[key] is not None:
                    assert datetime.fromisoformat(v[key]).utcoffset() == timedelta(0), v
        assert by_version[challenger]["data_as_of"] is not None
        assert by_version[challenger]["feedback_rows"] > 0
        held_out = by_version[challenger]
        assert held_out["eval_from"] <= held_out["eval_until"] <= held_out["data_as_of"]
        assert listed["champion_history"][-1] == champion
        changes = listed["champion_changes"]
        assert [(c["decision"], c["version"]) for c in changes[-2:]] == [
            ("promote" if passed else "forced promote", challenger),
            ("rollback", champion),
        ]
        assert [c["reason"] for c in changes[-2:]] == [
            "pilot of the new model",
            "odd picks in the field",
        ]
        assert [v["version"] for v in listed["versions"]] == sorted(
            by_version, key=int, reverse=True
        )
        result = runner.invoke(app, ["models"])
        assert result.exit_code == 0, result.output
        said = " ".join(result.output.split())
        assert f"v{challenger} trained" in said and "rolled back" in said
        promoted = "promoted" if passed else "promoted by --force"
        assert re.search(
            rf"{promoted} \d{{4}}-\d\d-\d\d \d\d:\d\d UTC; rolled back \S+ \S+ UTC", said
        )
        # The retrained one's slice is cut from its --data history alone: the logged
        # decisions that joined it are all fitted.
        assert re.search(
            rf"v{challenger} .*?\(\d[\d,]* from the recommendation log\).*? on its held-out "
            r"slice \(the newest 10% of its --data history, [\d,]+ decisions\): "
            r"AUC 0\.\d{3}, policy value \(DR\) -?\d",
            said,
        ), said
        assert f"v{champion} champion trained" in said

        # A version --version names that no alias calls challenger (rolled back) is
        # named by its number, in the title, the columns and the reasons.
        result = runner.invoke(app, ["evaluate", "--version", challenger], terminal_width=240)
        assert result.exit_code == 0, result.output
        assert f"evaluating version {challenger} against the champion ..." in result.output
        title = f"champion v{champion} vs version {challenger} on "
        assert title in result.output, result.output
        assert "challenger vs champion" not in result.output

        since = datetime.now(UTC).isoformat()  # after every logged request
        result = runner.invoke(
            app, ["uplift-report", "--since", since, "--out", str(tmp_path / "rep")]
        )
        assert result.exit_code == 0, result.output
        assert "no request is logged in the report's period" in " ".join(result.output.split())
        # Two days ahead: tomorrow read before midnight is today after it, not future.
        future = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
        result = runner.invoke(app, ["uplift-report", "--since", future])
        assert result.exit_code == 2
        assert "is in the future: no request is logged that late" in result.output

        before = registry.alias_version(settings, "challenger")
        result = runner.invoke(
            app, ["retrain", "--data", str(loop_world.data_dir), "--since", future]
        )
        assert result.exit_code == 2 and "is in the future" in result.output, result.output
        # Past, but after every logged decision: refused all the same.
        result = runner.invoke(
            app, ["retrain", "--data", str(loop_world.data_dir), "--since", since]
        )
        assert result.exit_code == 2, result.output
        assert "no logged decision with an outcome since then" in result.output
        assert registry.alias_version(settings, "challenger") == before  # nothing registered

        result = runner.invoke(app, ["promote", "--since", "yesterday"])
        assert result.exit_code == 2
        assert "--since 'yesterday' is not a date" in result.output
    finally:
        get_settings.cache_clear()


def test_intervals_are_clustered_by_hcp() -> None:
    """An HCP asked about many times is one HCP, not many independent outcomes: the
    same outcomes repeated per HCP leave the interval as wide as one row per HCP."""
    rng = np.random.default_rng(0)
    n = 40
    base = pd.DataFrame(
        {
            "hcp_id": [f"H{i}" for i in range(n)],
            "outcome": rng.normal(1.0, 1.0, n),
            "holdout": np.arange(n) % 2 == 0,
        }
    )
    once, _ = build_rows(base, {}, min_per_arm=2)
    repeated, _ = build_rows(pd.concat([base] * 10, ignore_index=True), {}, min_per_arm=2)
    assert repeated.uplift == pytest.approx(once.uplift)
    # Welch on the 400 rows would be sqrt(10) narrower; clustered, the factor
    # G / (G - 1) is all that differs (20 HCPs per arm both times).
    assert repeated.ci_high - repeated.ci_low == pytest.approx(once.ci_high - once.ci_low)
    no_ids = pd.concat([base] * 10, ignore_index=True).drop(columns="hcp_id")
    naive, _ = build_rows(no_ids, {}, min_per_arm=2)
    assert (naive.ci_high - naive.ci_low) < 0.4 * (once.ci_high - once.ci_low)
    one_hcp = pd.DataFrame(
        {"hcp_id": ["A"] * 5 + ["B"] * 5, "outcome": range(10), "holdout": [True] * 5 + [False] * 5}
    )
    alone, _ = build_rows(one_hcp, {}, min_per_arm=2)
    assert alone.verdict.startswith("not enough data") and "2 HCPs" in alone.verdict


def test_models_cautions_that_figures_on_different_histories_do_not_rank_versions() -> None:
    from dataclasses import replace

    from nextbest.cli.versions import held_out_figures, not_comparable
    from nextbest.registry import VersionSummary

    v1 = VersionSummary(
        version="1",
        aliases=("champion",),
        registered_at=datetime(2026, 12, 1, tzinfo=UTC),
        data_as_of="2026-11-28T00:00:00+00:00",
        n_hcps=2_000,
        n_decisions=52_000,
        feedback_rows=None,
        uplift_source="uplift",
        eval_auc=0.711,
        policy_value_dr=(2.05, 1.778, 2.323),
        gain_over_logged_dr=None,  # trained before it was recorded
        gate=None,
        promoted_at=None,
        rolled_back_at=None,
        eval_fraction=0.1,
        eval_decisions=5_200,
    )
    assert held_out_figures(v1) == (
        "on its held-out slice (the newest 10% of its history, 5,200 decisions): "
        "AUC 0.711, policy value (DR) 2.050 [1.778, 2.323] (gain over logged -)"
    )
    retrained = replace(v1, n_decisions=57_581, feedback_rows=5_581)
    assert str(held_out_figures(retrained)).startswith(
        "on its held-out slice (the newest 10% of its --data history, 5,200 decisions): "
    )
    gained = replace(v1, gain_over_logged_dr=(0.31, -0.024, 0.644))
    assert held_out_figures(gained) == (
        "on its held-out slice (the newest 10% of its history, 5,200 decisions): "
        "AUC 0.711, policy value (DR) 2.050 [1.778, 2.323] (gain over logged +0.310 "
        "[-0.024, +0.644])"
    )
    same_history = replace(v1, version="2", aliases=(), eval_auc=0.70)
    assert not_comparable([same_history, v1]) is None
    # Retrained on the same history and logged decisions: the same held-out slice.
    retrained = replace(v1, version="3", aliases=(), n_decisions=57_672, feedback_rows=5_672)
    assert not_comparable([retrained, v1]) is None
    other_history = replace(v1, version="5", aliases=(), n_decisions=60_000)
    caution = not_comparable([other_history, v1])
    assert caution is not None and "do not rank them" in caution
    # Recorded with the slice's dates: those decide.
    dated = replace(
        v1, eval_from="2026-11-01T00:00:00+00:00", eval_until="2026-11-28T00:00:00+00:00"
    )
    assert not_comparable([replace(dated, version="6"), dated]) is None
    later = replace(dated, version="7", eval_from="2026-11-08T00:00:00+00:00")
    assert not_comparable([later, dated]) is not None
    unmeasured = replace(v1, version="4", eval_auc=None, policy_value_dr=None, n_decisions=1)
    assert not_comparable([unmeasured, v1]) is None
    assert held_out_figures(unmeasured) is None


def test_verdicts_count_hcps_not_requests() -> None:
    """30 outcomes per arm from 2 HCPs each are 2 independent units, not 30: not enough."""
    rng = np.random.default_rng(3)
    decisions = pd.DataFrame(
        {
            "hcp_id": np.repeat(["A", "B", "C", "D"], 15),
            "holdout": np.repeat([True, True, False, False], 15),
            "outcome": np.concatenate([rng.normal(m, 0.5, 15) for m in (1.0, 1.2, 1.8, 2.1)]),
        }
    )
    overall, _ = build_rows(decisions, {}, min_per_arm=30)
    assert (overall.n_served, overall.n_holdout) == (30, 30)
    assert (overall.hcps_served, overall.hcps_holdout) == (2, 2)
    assert overall.verdict == "not enough data (need outcomes from 30 HCPs per arm)"
    said = conclusion(overall, min_per_arm=30)
    assert said.startswith("Not enough data to conclude yet: 30 served and 30 holdout")
    assert "from 2 and 2 HCPs" in said


def test_the_report_warns_when_the_arms_reported_outcomes_in_different_shares(
    tmp_path: Path,
) -> None:
    """Outcomes sent back for a fifth of the served requests and every holdout one (as
    when only picks' recommendation_ids are reported): the arms are no longer
    comparable, and the conclusion says so."""
    settings = Settings(models_dir=tmp_path / "models")
    _known_effect_store(settings, n=1000, effect=0.0, seed=5, served_reported=0.2)
    report = uplift_report(settings, out_dir=tmp_path / "report", log=False)
    assert report.outcome_coverage["holdout"] == 1.0
    assert 0.15 < report.outcome_coverage["served"] < 0.25
    assert "Warning: outcomes came back for 2" in report.conclusion
    assert "of served requests but 100% of holdout requests" in report.conclusion
    saved = json.loads((tmp_path / "report" / "uplift_report.json").read_text())
    assert saved["outcome_coverage"] == report.outcome_coverage
    # Every outcome back: no warning.
    whole = Settings(models_dir=tmp_path / "whole")
    _known_effect_store(whole, n=1000, effect=0.0, seed=5)
    full = uplift_report(whole, out_dir=tmp_path / "r2", log=False)
    assert full.outcome_coverage == {"served": 1.0, "holdout": 1.0}
    assert "came back" not in full.conclusion


def test_arms_reported_apart_are_told_though_a_feed_leaves_whole_hcps_out() -> None:
    """A feed that leaves out whole HCPs (half of them report a fifth of their requests)
    leaves them out of both arms alike, and the holdout's requests are reported 15
    points less besides: a gap of 8 points that the randomization does not explain.
    Each arm's error taken alone kept the HCPs' differences in it (3 standard errors:
    13 points, against 7 clustered across both arms) and said nothing."""
    rng = np.random.default_rng(2)
    hcp = np.repeat(np.arange(200), 10)
    held = rng.random(len(hcp)) < 0.3
    share = np.where(np.arange(200) < 100, 0.2, 1.0)[hcp]
    got = rng.random(len(hcp)) < share * np.where(held, 0.85, 1.0)
    every = pd.DataFrame({"hcp_id": hcp, "holdout": held})
    gap = got[~held].mean() - got[held].mean()
    assert 0.07 < gap < 0.11, gap
    assert coverage_differs(every, got)
    # HCPs left out alike in both arms, and nothing more: no warning.
    fair = rng.random(len(hcp)) < share
    assert not coverage_differs(every, fair)


@pytest.mark.parametrize(("hcps", "starkest_warns"), [(3, False), (5, True), (8, True)])
def test_a_coverage_gap_among_a_few_hcps_is_held_to_the_same_bar(
    hcps: int, starkest_warns: bool
) -> None:
    """The warning's bar is 3 standard errors, a gap that arises by chance 0.27% of
    the time; with a few HCPs per arm, each reported or not with its whole feed,
    the normal bar was met by chance far more often (3 HCPs per arm each reported
    with even odds: 3.2% of 2000 seeded reports). Student's t at the same tail, on
    the HCPs' degrees of freedom as the report's intervals, keeps it near its
    rate."""
    rng = np.random.default_rng(hcps)
    hcp = np.repeat(np.arange(2 * hcps), 4)
    every = pd.DataFrame({"hcp_id": hcp, "holdout": hcp >= hcps})
    trials = 2000
    warned = sum(coverage_differs(every, (rng.random(2 * hcps) < 0.5)[hcp]) for _ in range(trials))
    assert warned / trials < 0.006, warned  # 0.0027 + 2.5 sd
    # Every held-out HCP reported, no served one: among 3 HCPs per arm that happens
    # by chance (Barnard's exact test: p = 0.031), among 5 hardly (p = 0.002).
    assert coverage_differs(every, hcp >= hcps) is starkest_warns


def _hcp_feed_store(settings: Settings, *, seed: int, holdout_reported: bool = True) -> None:
    """400 HCPs, 30% held out for the week; a served HCP asked about 1-6 times, a
    held-out one 2-8 times (a day apart), then one outcome per HCP without a
    recommendation_id, as a weekly NRx feed sends it. ``holdout_reported=False``: the
    feed names only the HCPs that were served (contacted)."""
    rng = np.random.default_rng(seed)
    migrate(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    records, events = [], []
    for h in range(400):
        hcp_id = f"H{h:06d}"
        holdout = bool(rng.random() < 0.3)
        asked = int(rng.integers(2, 9) if holdout else rng.integers(1, 7))
        item = ServedItem(1, "A1", "email", "C1", 0.1, 0.2, 0.3, 0.65, False)
        items = () if holdout else (item,)
        records += [
            recommendation_record(
                f"r{h}-{k}",
                hcp_id,
                items=items,
                holdout=holdout,
                created_at=T0 + timedelta(hours=18 * k, minutes=h),
                model_version="1",
                epsilon=0.1,
                holdout_rate=0.3,
            )
            for k in range(asked)
        ]
        if holdout and not holdout_reported:
            continue
        events.append(
            FeedbackRecord(
                event_id=f"nrx-{h}",
                event_type="outcome",
                occurred_at=T0 + timedelta(days=6, minutes=h),
                hcp_id=hcp_id,
                value=float(rng.poisson(2.0)),
            )
        )
    with make_session_factory(engine)() as session:
        log_recommendations(session, records=records)
        session.commit()
        assert not record_feedback(session, events=events).rejected
    engine.dispose()


def test_a_complete_outcome_feed_by_hcp_covers_both_arms_however_often_they_were_asked(
    tmp_path: Path,
) -> None:
    """One outcome per HCP, by HCP, counts for its latest request only: per request,
    the arm asked about less often looked better reported (about 29% against 20%).
    Every request's HCP reported an outcome within its window: both arms are covered
    and nothing warns; a feed of only the served HCPs still warns."""
    settings = Settings(models_dir=tmp_path / "models")
    _hcp_feed_store(settings, seed=11)
    report = uplift_report(settings, out_dir=tmp_path / "report", log=False)
    assert report.outcome_coverage == {"served": 1.0, "holdout": 1.0}
    assert "came back" not in report.conclusion
    # Only for the HCPs that were contacted: the holdout's outcomes never came back.
    partial = Settings(models_dir=tmp_path / "partial")
    _hcp_feed_store(partial, seed=11, holdout_reported=False)
    half = uplift_report(partial, out_dir=tmp_path / "r2", log=False)
    assert half.outcome_coverage == {"served": 1.0, "holdout": 0.0}
    assert "Warning: outcomes came back for 100% of served requests but 0%" in half.conclusion


def test_the_week_of_a_request_asked_for_a_later_date_is_that_dates_week(
    tmp_path: Path,
) -> None:
    settings = Settings(models_dir=tmp_path / "models")
    later = T0 + timedelta(days=10)
    _known_effect_store(settings, n=100, effect=0.5, seed=7, decided_for=later)
    report = uplift_report(settings, out_dir=tmp_path / "report", log=False)
    weeks = {r.group for r in report.rows if r.dimension == "week"}
    monday = (later - timedelta(days=later.weekday())).date().isoformat()
    assert weeks == {monday}


def test_clustered_intervals_keep_their_error_rate_under_a_weekly_holdout() -> None:
    """No effect, a holdout per HCP, 1-11 requests per HCP sharing its habits: the
    overall verdict says "helps" or "hurts" in about 5% of 400 seeded reports with
    intervals clustered by HCP, against nearly half with one row per outcome."""
    rng = np.random.default_rng(0)
    wrong = {"clustered": 0, "per outcome": 0}
    trials = 400
    for _ in range(trials):
        habit = rng.normal(0.0, 1.0, 300)
        held = rng.random(300) < 0.2
        hcp = np.repeat(np.arange(300), rng.integers(1, 12, 300))
        decisions = pd.DataFrame(
            {
                "hcp_id": hcp,
                "holdout": held[hcp],
                "outcome": habit[hcp] + rng.normal(0.0, 0.5, len(hcp)),
            }
        )
        for kind, frame in (
            ("clustered", decisions),
            ("per outcome", decisions.drop(columns="hcp_id")),
        ):
            overall, _ = build_rows(frame, {}, min_per_arm=30)
            wrong[kind] += overall.verdict in ("serving helps", "serving hurts")
    assert 0.025 < wrong["clustered"] / trials < 0.085, wrong  # 0.05 +- 2.5 sd
    assert wrong["per outcome"] / trials > 0.3, wrong


def test_intervals_under_a_weekly_holdout_let_an_hcps_habits_cancel_between_the_arms() -> None:
    """A holdout drawn per HCP and week puts most HCPs in both arms, and an HCP's
    habits move both means alike. Without an effect the overall verdict says "helps"
    or "hurts" in about 5% of 300 seeded reports, and a real effect of 0.1 is found
    in most: each arm's error taken alone, as if the arms were independent, gave
    intervals twice as wide (no such verdict at all without an effect, the effect
    found in about 6%)."""
    rng = np.random.default_rng(1)
    trials = 300
    found = {0.0: 0, 0.1: 0}
    for effect in found:
        for _ in range(trials):
            habit = rng.normal(0.0, 1.0, 300)
            hcp = np.repeat(np.arange(300), 12)  # 12 weeks, one request a week
            held = rng.random(len(hcp)) < 0.2
            decisions = pd.DataFrame(
                {
                    "hcp_id": hcp,
                    "holdout": held,
                    "outcome": habit[hcp] + rng.normal(0.0, 0.5, len(hcp)) + effect * ~held,
                }
            )
            overall, _ = build_rows(decisions, {}, min_per_arm=30)
            found[effect] += overall.verdict in ("serving helps", "serving hurts")
    assert 0.025 < found[0.0] / trials < 0.085, found  # 0.05 +- 2.5 sd
    assert found[0.1] / trials > 0.4, found


@pytest.mark.parametrize("hcps", [2, 3])
def test_the_fewest_hcps_the_cli_allows_keep_the_error_rate(hcps: int) -> None:
    """No effect, 2 or 3 HCPs per arm (--min-per-arm 2 allows them), each asked about
    1-5 times, Poisson outcomes around its own habit: the normal interval read
    "helps" or "hurts" in 19% (2 HCPs) and 13% (3) of 400 seeded reports; Student's
    t on the HCPs' degrees of freedom in 3.8% and 2.5%, so the minimum need not rise."""
    rng = np.random.default_rng(hcps)
    trials, wrong = 400, 0
    for _ in range(trials):
        hcp = np.repeat(np.arange(2 * hcps), rng.integers(1, 6, 2 * hcps))
        habit = 2.0 * np.exp(rng.normal(0.0, 0.5, 2 * hcps))
        row = compare(
            rng.poisson(habit[hcp]).astype(np.float64),
            hcp >= hcps,
            dimension="overall",
            group="all",
            min_per_arm=2,
            cluster=hcp,
        )
        wrong += row.verdict in ("serving helps", "serving hurts")
    assert wrong / trials < 0.075, wrong  # 0.05 + 2.5 sd


def test_with_no_hcp_in_both_arms_the_interval_is_each_arms_clustered_error_combined() -> None:
    decisions = pd.DataFrame(
        {
            "hcp_id": ["A", "A", "B", "C", "C", "C", "D", "E", "E", "F"],
            "holdout": [False] * 6 + [True] * 4,
            "outcome": [1.0, 3.0, 2.0, 5.0, 4.0, 0.0, 1.0, 2.0, 0.5, 0.0],
        }
    )
    overall, _ = build_rows(decisions, {}, min_per_arm=2)
    served, held = decisions[~decisions["holdout"]], decisions[decisions["holdout"]]
    v_s = standard_error(served["outcome"].to_numpy(), served["hcp_id"].to_numpy()) ** 2
    v_h = standard_error(held["outcome"].to_numpy(), held["hcp_id"].to_numpy()) ** 2
    # Each arm's variance rests on its 3 HCPs (2 degrees of freedom each), combined
    # by Welch-Satterthwaite: between 2 (one arm's alone) and 4 (equal variances).
    dof = (v_s + v_h) ** 2 / (v_s**2 / 2 + v_h**2 / 2)
    assert 2 < dof < 4
    critical = student_t.isf(0.025, dof)
    assert overall.ci_high - overall.uplift == pytest.approx(critical * math.sqrt(v_s + v_h))


def test_each_plot_lists_its_groups_top_down_in_the_tables_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader goes from the table's rows to the plot's: the first group on top in
    both (the plot drew the first at the bottom, every group in reverse)."""
    from matplotlib.figure import Figure

    decisions = pd.DataFrame(
        {
            "hcp_id": [f"H{i}" for i in range(12)],
            "outcome": [1.0, 2.0, 0.0, 3.0] * 3,
            "holdout": [True, False] * 6,
        }
    )
    labels = pd.Series(["email", "email", "email", "email", "rep_visit", "rep_visit"] * 2)
    labels.iloc[8:] = "webinar"
    _, rows = build_rows(decisions, {"channel": labels}, min_per_arm=2)
    drawn: list[Figure] = []

    def kept(figure: Figure, path: Path, *_: Any, **__: Any) -> None:
        drawn.append(figure)
        Path(path).write_bytes(b"")  # a file to put in place, as savefig leaves one

    monkeypatch.setattr(Figure, "savefig", kept)
    write_report(UpliftReport(rows=rows, overall=rows[0], conclusion="", since=None,
                              n_decisions=12), tmp_path)  # fmt: skip
    [figure] = drawn
    ax = figure.axes[0]
    # Top down: by where each tick is drawn on the figure, highest first.
    ticks = sorted(ax.get_yticklabels(), key=lambda t: -ax.transData.transform(t.get_position())[1])
    assert [t.get_text().split(":")[0] for t in ticks] == [r.group for r in rows]
    assert [r.group for r in rows] == ["email", "rep_visit", "webinar"]


def test_served_elsewhere_reads_the_weeks_plans_were_logged_for() -> None:
    """Weekly plans logged ahead on one day: a holdout for the week of 12-07 followed
    by a served plan for 12-14 (7 days later) is no contamination of its outcome
    window; one served the 12-10 of the same HCP is."""
    logged = pd.Timestamp("2026-12-02 09:00")
    every = pd.DataFrame(
        {
            "hcp_id": ["H1", "H1", "H2", "H2"],
            "timestamp": [logged + pd.Timedelta(minutes=m) for m in range(4)],
            "decided_for": pd.to_datetime(["2026-12-07", "2026-12-14", "2026-12-07", "2026-12-10"]),
            "holdout": [True, False, True, False],
            "action_id": [None, "A1", None, "A1"],
        }
    )
    held = every[every["holdout"]]
    assert served_elsewhere(held, every) == 1  # H2 only
    # Its outcome sent for the HCP alone (a weekly NRx feed), H2's holdout answer
    # takes the outcomes until the served answer takes over: nothing spans it.
    assert served_elsewhere(held.assign(outcome_named=[True, False]), every) == 0
    assert served_elsewhere(held.assign(outcome_named=[True, True]), every) == 1


def test_numeric_segments_are_in_numeric_order() -> None:
    decisions = pd.DataFrame(
        {"hcp_id": list("abcdef"), "outcome": [1.0] * 6, "holdout": [True, False] * 3}
    )
    deciles = pd.Series(["10", "2", "1", "10", "2", "(unknown)"])
    _, rows = build_rows(decisions, {"decile": deciles}, min_per_arm=1)
    assert [r.group for r in rows] == ["1", "2", "10", "(unknown)"]


def test_the_report_states_its_times_in_utc(tmp_path: Path) -> None:
    """A --since written with an offset is shown, in the page and the JSON, as its UTC
    instant; both say when the report was made, and the page how weeks are cut."""
    settings = Settings(models_dir=tmp_path / "models")
    _known_effect_store(settings, n=40, effect=0.5, seed=7)
    berlin = timezone(timedelta(hours=1))
    before = datetime.now(UTC).replace(microsecond=0)
    uplift_report(
        settings,
        out_dir=tmp_path / "report",
        since=datetime(2020, 1, 1, 0, 30, tzinfo=berlin),
        log=False,
    )
    saved = json.loads((tmp_path / "report" / "uplift_report.json").read_text())
    assert saved["since"] == "2019-12-31T23:30:00+00:00"
    assert before <= datetime.fromisoformat(saved["made_at"]) <= datetime.now(UTC)
    page = (tmp_path / "report" / "uplift_report.html").read_text()
    assert "since 2019-12-31 23:30 UTC." in page
    assert f"Made {datetime.fromisoformat(saved['made_at']):%Y-%m-%d %H:%M} UTC." in page
    assert "Weeks run Monday to Sunday, UTC" in page


def _per_hcp_store(settings: Settings, *, served: list[float], held: list[float]) -> None:
    """One logged request per HCP, served (an item) or held out, each with its outcome
    sent naming the request."""
    migrate(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    item = ServedItem(1, "A1", "email", "C1", 0.1, 0.2, 0.3, 0.65, False)
    records, events = [], []
    arms = [(False, v) for v in served] + [(True, v) for v in held]
    for i, (holdout, value) in enumerate(arms):
        at = T0 + timedelta(minutes=i)
        records.append(
            recommendation_record(
                f"r{i}",
                f"H{i:04d}",
                items=() if holdout else (item,),
                holdout=holdout,
                created_at=at,
            )
        )
        events.append(
            FeedbackRecord(
                f"e{i}", "outcome", at + timedelta(days=1), f"H{i:04d}", f"r{i}", value=value
            )
        )
    with make_session_factory(engine)() as session:
        log_recommendations(session, records=records)
        session.commit()
        assert not record_feedback(session, events=events).rejected
    engine.dispose()


@pytest.mark.parametrize("value", [0.0, 1.0, 3.0])
def test_arms_whose_outcomes_are_all_alike_keep_an_interval(value: float) -> None:
    """Every outcome of both arms the same (no HCP prescribed, or all did): each arm's
    clustered error is 0 and the interval was [0, 0], an exact "no effect" from 60
    yes/no answers. Each arm keeps at least the error of a yes/no outcome seen in none
    of its 30 HCPs (Agresti & Coull's two successes and two failures added); the two
    equal errors on 29 degrees of freedom each give Student's t on 58."""
    outcome = np.full(60, value)
    holdout = np.arange(60) < 30
    row = compare(outcome, holdout, dimension="d", group="g", min_per_arm=30)
    p = 2 / 34
    half = student_t.isf(0.025, 58) * math.sqrt(2 * p * (1 - p) / 34)
    assert (row.uplift, row.ci_low, row.ci_high) == pytest.approx((0.0, -half, half))
    assert row.ci_high - row.ci_low > 0.15
    assert row.verdict == "no clear difference yet"


def test_no_outcome_in_one_arm_against_a_few_in_the_other_is_no_conclusion(
    tmp_path: Path,
) -> None:
    """30 served HCPs none of whom prescribed, 4 of 30 held-out ones who did: the
    served arm's error was 0, the interval [-0.257, -0.010] and the verdict "serving
    hurts", where Fisher's exact test gives p = 0.11. The page, the JSON and the
    MLflow run now all say no conclusion, with an interval that holds zero."""
    settings = Settings(models_dir=tmp_path / "models")
    _per_hcp_store(settings, served=[0.0] * 30, held=[1.0] * 4 + [0.0] * 26)
    report = uplift_report(settings, out_dir=tmp_path / "report")
    overall = report.overall
    assert (overall.hcps_served, overall.hcps_holdout) == (30, 30)
    assert overall.uplift == pytest.approx(-4 / 30)
    assert overall.ci_low < overall.uplift < 0 < overall.ci_high
    assert overall.verdict == "no clear difference yet"
    assert report.conclusion.startswith("No conclusion yet: the difference is -0.133")
    saved = json.loads((tmp_path / "report" / "uplift_report.json").read_text())
    assert saved["overall"]["verdict"] == "no clear difference yet"
    run = registry.client(settings).get_run(report.run_id)
    assert run.data.tags["verdict"] == "no clear difference yet"
    assert run.data.metrics["uplift_ci_high"] == pytest.approx(overall.ci_high)


def test_two_hcps_per_arm_all_alike_are_no_conclusion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --min-per-arm 2 (the lowest the CLI takes), 2 of 2 served HCPs prescribed
    and 0 of 2 held out: the normal interval was [+0.467, +1.533] and every output said
    "serving helps", where Fisher's exact test gives p = 0.33 (Barnard's 0.125). The
    interval's critical value is Student's t with the degrees of freedom 4 HCPs carry
    (Welch-Satterthwaite over the arms: 2), so the page, the JSON, the MLflow run's
    tag and its logged interval all say no conclusion."""
    settings = Settings(models_dir=tmp_path / "models")
    _per_hcp_store(settings, served=[1.0, 1.0], held=[0.0, 0.0])
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(settings.models_dir))
    get_settings.cache_clear()
    try:
        out = tmp_path / "report"
        result = CliRunner().invoke(app, ["uplift-report", "--min-per-arm", "2", "--out", str(out)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "uplift_report.json").read_text())
    overall = saved["overall"]
    assert (overall["hcps_served"], overall["hcps_holdout"]) == (2, 2)
    assert overall["uplift"] == pytest.approx(1.0)
    assert overall["ci_low"] < 0 < 1 < overall["ci_high"]
    assert overall["verdict"] == "no clear difference yet"
    assert saved["conclusion"].startswith("No conclusion yet: the difference is +1.000")
    assert "no clear difference yet" in (out / "uplift_report.html").read_text()
    [run] = registry.client(settings).search_runs([registry.experiment_id(settings, "-reports")])
    assert run.data.tags["verdict"] == "no clear difference yet"
    assert run.data.metrics["uplift_ci_low"] == pytest.approx(overall["ci_low"])
    assert run.data.metrics["uplift_ci_high"] == pytest.approx(overall["ci_high"])


@pytest.mark.parametrize(
    ("served", "held", "min_per_arm"),
    [
        ([1.0], [0.0], 1),  # one HCP per arm: no spread to estimate, no interval
        ([1.0, 2.0, 3.0], [], 1),  # one arm empty
        ([], [0.0, 1.0], 1),
        ([1.0], [0.0, 1.0, 0.0], 1),
    ],
)
def test_an_arm_of_fewer_than_two_hcps_is_never_concluded_on(
    served: list[float], held: list[float], min_per_arm: int
) -> None:
    outcome = np.array(served + held)
    holdout = np.arange(len(outcome)) >= len(served)
    row = compare(outcome, holdout, dimension="d", group="g", min_per_arm=min_per_arm)
    assert math.isnan(row.ci_low) and math.isnan(row.ci_high)
    assert row.verdict == "not enough data (need outcomes from 2 HCPs per arm)"
    said = conclusion(row, min_per_arm=min_per_arm)
    assert said.startswith("Not enough data to conclude yet"), said
    assert "nan" not in said


def _reexported(loop_world: LoopWorld, store: ServedStore, out: Path, *, ids: bool) -> int:
    """A data directory whose interactions are the history plus the service's served
    decisions as a CRM export lists its sends after the fact (one second after the
    decision, engaged and outcome as the feedback said), with the recommendation_id
    each send was made under when ``ids``. Returns how many sends it lists."""
    engine = make_engine(store.settings.resolved_database_url)
    with make_session_factory(engine)() as session:
        logged = logged_decisions(session)
    engine.dispose()
    sent = logged[logged["action_id"].notna() & np.isfinite(logged["outcome"])]
    crm = pd.DataFrame(
        {
            "hcp_id": sent["hcp_id"],
            "timestamp": pd.to_datetime(sent["timestamp"]) + pd.Timedelta(seconds=1),
            "action_id": sent["action_id"],
            "channel": sent["channel"],
            "content_id": sent["content_id"],
            "engaged": sent["engaged"].astype("int64"),
            "outcome": sent["outcome"],
        }
    )
    if ids:
        crm["recommendation_id"] = sent["recommendation_id"]
    out.mkdir()
    for table in ("hcps", "catalog"):
        shutil.copy(loop_world.data_dir / f"{table}.parquet", out / f"{table}.parquet")
    history = pd.read_parquet(loop_world.data_dir / "interactions.parquet")
    pd.concat([history, crm], ignore_index=True).to_parquet(
        out / "interactions.parquet", index=False
    )
    return len(crm)


def _models_say(
    settings: Settings, version: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, dict[str, object]]:
    """What ``nextbest models`` says of ``version``: its two lines, whitespace
    collapsed, and its row of ``--json``."""
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(settings.models_dir))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        listed = runner.invoke(app, ["models"])
        as_json = runner.invoke(app, ["models", "--json"])
    finally:
        get_settings.cache_clear()
    assert listed.exit_code == 0, listed.output
    assert as_json.exit_code == 0, as_json.output
    lines = listed.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"v{version} "))
    said = " ".join(" ".join(lines[start : start + 2]).split())
    (row,) = [v for v in json.loads(as_json.stdout)["versions"] if v["version"] == version]
    return said, row


def test_history_rows_naming_a_logged_decision_are_learned_once(
    loop_world: LoopWorld,
    honest_loop: ServedStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CRM export refreshed after the service's sends lists them again, each with
    the recommendation_id it was sent under: those rows are left out of the history
    (the logged decision, with its propensity, is learned instead, or kept for the
    gate), counted in the run; before, each was learned twice."""
    from nextbest.contract import load_dataset

    n_sent = _reexported(loop_world, honest_loop, tmp_path / "data", ids=True)
    dataset = load_dataset(tmp_path / "data")
    n_history = len(loop_world.dataset.interactions)
    assert len(dataset.interactions) == n_history + n_sent
    outcome = retrain(
        honest_loop.settings,
        dataset=dataset,
        config=FAST_CONFIG,
        reserved_share=0.3,
        alias="reexported",
    )
    joined = len(outcome.feedback.interactions)
    assert outcome.result.params["n_decisions"] == n_history + joined
    said = [n for n in outcome.result.notes if "name the recommendation_id" in n]
    assert len(said) == 1 and said[0].startswith(f"{n_sent:,} rows of the history"), said
    assert not any("learned twice" in w for w in outcome.warnings)
    run = registry.client(honest_loop.settings).get_run(outcome.run_id)
    assert run.data.params["history_rows_logged"] == str(n_sent)
    # Where a data scientist looks at the version: its line and its JSON.
    said, row = _models_say(honest_loop.settings, outcome.version, monkeypatch)
    assert (
        f"{n_sent:,} history rows naming the recommendation_id of a logged decision left "
        "out (learned from the recommendation log)" in said
    ), said
    assert "look like logged sends" not in said, said
    assert (row["history_rows_logged"], row["history_repeats_logged"]) == (n_sent, 0)


def test_history_repeating_logged_sends_without_their_ids_is_warned(
    loop_world: LoopWorld,
    honest_loop: ServedStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same export without recommendation_ids: the sends cannot be told from the
    CRM's own touches for sure, so they stay, and the run warns with their number."""
    from nextbest.contract import load_dataset

    n_sent = _reexported(loop_world, honest_loop, tmp_path / "data", ids=False)
    dataset = load_dataset(tmp_path / "data")
    outcome = retrain(
        honest_loop.settings,
        dataset=dataset,
        config=FAST_CONFIG,
        reserved_share=0.3,
        alias="reexported",
    )
    assert outcome.result.params["n_decisions"] == len(dataset.interactions) + len(
        outcome.feedback.interactions
    )
    warned = [w for w in outcome.warnings if "learned twice" in w]
    assert len(warned) == 1, outcome.warnings
    assert warned[0].startswith(f"WARNING: {n_sent:,} touches of the history repeat"), warned
    assert "recommendation_id" in warned[0]
    assert outcome.result.notes[: len(outcome.warnings)] == outcome.warnings
    run = registry.client(honest_loop.settings).get_run(outcome.run_id)
    # Both counts are facts of the run, recorded alike: parameters.
    assert run.data.params["history_rows_logged"] == "0"
    assert run.data.params["history_repeats_logged"] == str(n_sent)
    assert "history_repeats_logged" not in run.data.tags
    said, row = _models_say(honest_loop.settings, outcome.version, monkeypatch)
    assert (
        f"{n_sent:,} history touches look like logged sends without a recommendation_id "
        "(kept: maybe learned twice)" in said
    ), said
    assert "left out (learned from" not in said, said
    assert (row["history_rows_logged"], row["history_repeats_logged"]) == (0, n_sent)
    # A version trained, not retrained, records neither.
    said, row = _models_say(honest_loop.settings, honest_loop.champion, monkeypatch)
    assert "history rows" not in said and "history touches" not in said, said
    assert (row["history_rows_logged"], row["history_repeats_logged"]) == (None, None)


@pytest.mark.parametrize("newest_first", [False, True])
def test_a_send_is_matched_to_the_decision_made_before_it_of_two_on_one_day(
    newest_first: bool,
) -> None:
    """An HCP served the same action twice in a day: the CRM's export of each send (a
    second after its decision) repeats a logged send, whatever order the log lists the
    two in; a touch that day before either is the CRM's own, and a date without a
    time is a send of that day's decisions."""
    logged = pd.DataFrame(
        {
            "hcp_id": ["H1", "H1"],
            "action_id": ["A1", "A1"],
            "at": pd.to_datetime(["2026-12-01 10:00:00", "2026-12-01 14:00:00"], utc=True),
        }
    )
    if newest_first:
        logged = logged.iloc[::-1].reset_index(drop=True)
    stamps = ["10:00:01", "14:00:01", "00:00:00", "09:00:00"]
    history = pd.DataFrame(
        {
            "hcp_id": ["H1"] * 5,
            "action_id": ["A1"] * 5,
            "timestamp": pd.to_datetime(
                [f"2026-12-01 {t}" for t in stamps] + ["2026-11-30 00:00:00"], utc=True
            ),
        }
    )
    assert history_repeats(history, logged).tolist() == [True, True, True, False, False]


def test_a_version_retrained_by_an_earlier_nextbest_shows_its_history_repeats(
    loop_world: LoopWorld,
    honest_loop: ServedStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An earlier nextbest recorded the likely repeats as a tag of the run and of the
    version, the rows left out as a parameter: `models` reads both still."""
    settings = honest_loop.settings
    mlflow = registry.client(settings)
    current = mlflow.get_model_version(settings.model_name, honest_loop.champion)
    experiment = mlflow.get_run(current.run_id).info.experiment_id
    run = mlflow.create_run(experiment, tags={"history_repeats_logged": "7"})
    mlflow.log_param(run.info.run_id, "history_rows_logged", "3")
    mlflow.set_terminated(run.info.run_id)
    earlier = mlflow.create_model_version(
        settings.model_name, current.source, run_id=run.info.run_id
    )
    mlflow.set_model_version_tag(
        settings.model_name, earlier.version, "history_repeats_logged", "7"
    )
    said, row = _models_say(settings, str(earlier.version), monkeypatch)
    assert (row["history_rows_logged"], row["history_repeats_logged"]) == (3, 7)
    assert "3 history rows naming the recommendation_id of a logged decision left out" in said
    assert "7 history touches look like logged sends without a recommendation_id" in said


def test_a_history_touch_repeats_a_logged_send_at_or_after_it_within_the_window() -> None:
    from nextbest.loop.retrain import history_repeats

    logged = pd.DataFrame(
        {
            "recommendation_id": ["r1", "r2"],
            "hcp_id": ["H1", "H3"],
            "action_id": ["A1", None],  # a holdout answer sends nothing
            "at": pd.to_datetime(["2026-11-30 10:00", "2026-11-30 10:00"]),
        }
    )
    cases = [
        ("H1", "2026-11-30 10:00:01", "A1", True),  # the send, a second after
        ("H1", "2026-11-30", "A1", True),  # a history giving the day only
        ("H1", "2026-11-30 09:00", "A1", False),  # before the decision
        ("H1", "2026-12-07 10:00", "A1", True),  # the window's last moment
        ("H1", "2026-12-07 10:01", "A1", False),
        ("H1", "2026-11-30 11:00", "A2", False),  # another action
        ("H2", "2026-11-30 11:00", "A1", False),  # another HCP
        ("H1", "2026-11-30 11:00", None, False),  # no touch
        ("H3", "2026-11-30 11:00", "A1", False),
    ]
    history = pd.DataFrame(
        {
            "hcp_id": [c[0] for c in cases],
            "timestamp": pd.to_datetime([c[1] for c in cases], format="ISO8601"),
            "action_id": [c[2] for c in cases],
        }
    )
    assert history_repeats(history, logged).tolist() == [c[3] for c in cases]
    # A row that names its recommendation is told by its id, not by this guess.
    named = history.assign(recommendation_id=["r9"] + [None] * (len(cases) - 1))
    assert history_repeats(named, logged).tolist() == [False] + [c[3] for c in cases[1:]]


def test_a_report_stopped_while_it_writes_leaves_the_earlier_one_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C (or a scheduler's SIGTERM) while a weekly report was written over last
    week's: the figures written so far replaced last week's under last week's page and
    tables, which then showed figures of another period. Each file is written under a
    name of its own and all are put in place once whole: stopped, the earlier report
    is left as it was, and nothing of the run's."""
    from nextbest.loop import report as report_module

    out = tmp_path / "report"
    settings = Settings(models_dir=tmp_path / "models")
    _known_effect_store(settings, n=400, effect=0.5, seed=7)
    uplift_report(settings, out_dir=out, log=False)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    assert len([name for name in before if name.endswith(".png")]) >= 2, sorted(before)

    later = Settings(models_dir=tmp_path / "later")  # next week's log: other figures
    _known_effect_store(later, n=900, effect=-0.5, seed=8)
    real = report_module.uplift_figure
    drawn: list[str] = []

    def stopped_at_the_second(rows, dimension, **kwargs):  # type: ignore[no-untyped-def]
        drawn.append(dimension)
        if len(drawn) == 2:
            raise KeyboardInterrupt
        return real(rows, dimension, **kwargs)

    monkeypatch.setattr(report_module, "uplift_figure", stopped_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        uplift_report(later, out_dir=out, log=False)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before

    monkeypatch.setattr(report_module, "uplift_figure", real)
    report = uplift_report(later, out_dir=out, log=False)  # run again: this week's, whole
    assert sorted(path.name for path in out.iterdir()) == sorted(before)
    saved = json.loads((out / "uplift_report.json").read_text())
    assert saved["n_decisions"] == report.n_decisions == 900


@pytest.mark.parametrize("written_by", ["this release", "a release before figures were listed"])
def test_a_report_leaves_none_of_the_earlier_reports_figures_it_does_not_draw(
    tmp_path: Path, written_by: str
) -> None:
    """A weekly report written over last week's left last week's PNGs of dimensions it
    no longer has (a segment changed, nothing with an outcome this time) beside its own
    page, figures of another period. They go as the new report is put in place; what
    else the directory holds, a figure of the user's named like a report's too, stays."""
    out = tmp_path / "report"
    settings = Settings(models_dir=tmp_path / "models")
    _known_effect_store(settings, n=400, effect=0.5, seed=7)
    first = uplift_report(settings, out_dir=out, log=False)
    drawn = {path.name for key, path in first.files.items() if key not in ("html", "json")}
    assert len(drawn) >= 2 and all(name.endswith(".png") for name in drawn), drawn
    record = json.loads((out / "uplift_report.json").read_text())
    if written_by == "this release":
        assert sorted(record["figures"].values()) == sorted(drawn)
    else:  # its page alone says which figures are its own
        record.pop("figures", None)
        (out / "uplift_report.json").write_text(json.dumps(record))
    kept = {"notes.txt": b"mine", "uplift_mine.png": b"my own figure"}
    for name, content in kept.items():
        (out / name).write_bytes(content)

    # Nothing logged since: a report without a figure.
    later = uplift_report(settings, out_dir=out, since=T0 + timedelta(days=365), log=False)
    assert later.n_decisions == 0
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["uplift_report.html", "uplift_report.json", *kept]
    )
    assert all((out / name).read_bytes() == content for name, content in kept.items())
    assert json.loads((out / "uplift_report.json").read_text())["figures"] == {}

    # Its figures back: the report has none to remove, the user's files stay.
    again = uplift_report(settings, out_dir=out, log=False)
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["uplift_report.html", "uplift_report.json", *drawn, *kept]
    )
    assert again.files["html"].read_text().count("<img src=") == len(drawn)


def test_a_report_stopped_by_sigterm_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler's SIGTERM while `uplift-report` drew its figures: exit code 143 and
    not a word, a job's log ending on `building the uplift report ...`. It says it was
    stopped, and that the report directory holds no file cut short or mixed."""
    import signal

    from nextbest.loop import report as report_module

    settings = Settings(models_dir=tmp_path / "models")
    _known_effect_store(settings, n=400, effect=0.5, seed=7)

    def stopped(*args: Any, **kwargs: Any) -> Any:
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(report_module, "uplift_figure", stopped)
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(settings.models_dir))
    get_settings.cache_clear()
    out = tmp_path / "report"
    try:
        result = CliRunner().invoke(app, ["uplift-report", "--out", str(out)])
    finally:
        get_settings.cache_clear()
    said = " ".join(result.output.split())
    assert result.exit_code == 143, said
    assert (
        f"error: uplift-report was stopped (SIGTERM) before it said its report was written: "
        f"no file in {out} is cut short or mixed with an earlier report's"
    ) in said, said
    assert not out.exists()  # made by the run, and taken away again
