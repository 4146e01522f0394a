"""Uplift report: outcomes of served versus randomized-holdout requests.

The holdout is drawn independently of everything the serving model knows (per HCP
and week, or per request), so within any group defined *before* the draw, served
and holdout requests are comparable and the difference of their mean outcomes
estimates the incremental effect of serving.
Groups: the channel and the action group (topic) the serving model would have put
first (re-scored with the logged model version, so holdout requests get one too),
an HCP segment (an ``hcps`` attribute, default ``specialty``), the requester
(the API key's name, ``nextbest picks`` for a file served with ``--log``), the
model version that served (each against the holdout drawn while it served) and
the week of the decision (its Monday, UTC: the week its holdout was drawn for).

Interval: the difference of two means with a 95% interval whose standard error is
clustered by HCP (Cameron & Miller, "A Practitioner's Guide to
Cluster-Robust Inference", J. Human Resources 50(2), 2015): the requests about
one HCP share its holdout week and its prescribing habits, so they are not
independent, and an HCP asked about daily would otherwise count as many
independent outcomes. It is clustered across both arms (:func:`difference_error`):
an HCP held out one week and served the next is in both, and its habits, which
move both means alike, cancel from their difference. With one request per HCP it
is Welch's standard error. An arm whose outcomes show no spread (every one 0, or
every one 1) has a clustered error of 0, as if its mean were exact: each arm's
squared error is at least that of a yes/no outcome seen in none of its HCPs, by the
adjusted interval of Agresti & Coull ("Approximate is better than 'exact' for
interval estimation of binomial proportions", The American Statistician 52(2),
1998: two successes and two failures added), in the outcome's unit
(:func:`no_spread_variance`). The critical value is Student's t, not the normal's,
with the degrees of freedom the HCPs carry (Welch-Satterthwaite over the two arms,
at most one fewer than the HCPs: :func:`difference_error`): an error estimated from
a few HCPs is itself uncertain, and 2 of 2 served HCPs against 0 of 2 held out read
"serving helps" with the normal's 1.96. A group whose outcomes in either arm come
from fewer than ``min_per_arm`` HCPs is reported as "not enough data" (the HCPs are
the independent units); the page says so plainly at the top when the whole
comparison is not yet conclusive.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd

from nextbest import registry
from nextbest.errors import InvalidRequestError
from nextbest.evaluation.ope import (
    critical_value,
    no_spread_variance,
    standard_error,
    welch_dof,
)
from nextbest.loop.evidence import (
    greedy_actions,
    load_decisions,
    replay_contacts,
    with_outcome_only,
)
from nextbest.settings import Settings, without_password
from nextbest.signals import signals_held
from nextbest.storage.db import store_session
from nextbest.storage.repository import OUTCOME_WINDOW, decision_times, hcp_outcomes
from nextbest.wording import plural
from nextbest.yamlfile import near_hint

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from nextbest.learning.scoring import ScoringModel

logger = logging.getLogger(__name__)

UNKNOWN = "(unknown)"
NOTHING = "(no action)"
TOO_FEW = "not enough data"  # the verdict of a group with too few outcomes in an arm
# The verdicts of a row whose 95% interval excludes zero.
HELPS = "serving helps"
HURTS = "serving hurts"
# The uplift figure's legend entry of its hollow markers: an arm's outcomes are from
# one HCP, so the estimate has no interval (clustered by HCP, it needs two).
NO_INTERVAL = "from 1 HCP in an arm: no interval, too few to conclude"
# The table's count columns (the page's and the terminal's): requests with an outcome,
# and in brackets the HCPs behind them, the units --min-per-arm counts.
COUNT_COLUMNS = ("served requests (HCPs)", "holdout requests (HCPs)")

# Groups a dimension shows one by one (--max-groups); the rest are one group. With a
# key per rep, the requester dimension had a row per rep: hundreds of rows, nearly
# every one "not enough data", in the terminal, the page and a figure 10,000 pixels
# tall, hiding the few that said something.
MAX_GROUPS = 20
# Dimensions whose groups follow one another in time, by their plural: past
# --max-groups the newest are shown, the older as one.
IN_TIME = {"week": "weeks", "model version": "model versions"}
BEFORE = "(before "  # the older groups of such a dimension as one: "(before 2026-07-27)"


@dataclass(frozen=True)
class ArmComparison:
    """Served versus holdout in one group; ``uplift`` = served mean - holdout mean."""

    dimension: str
    group: str
    n_served: int
    n_holdout: int
    mean_served: float
    mean_holdout: float
    uplift: float
    ci_low: float
    ci_high: float
    verdict: str
    hcps_served: int = 0  # distinct HCPs behind the outcomes of each arm
    hcps_holdout: int = 0


@dataclass
class UpliftReport:
    rows: list[ArmComparison]
    overall: ArmComparison
    conclusion: str
    since: datetime | None
    n_decisions: int
    # Holdout requests of the report with a contact event (delivered, completed) or
    # an engagement only a contact brings (opened, clicked, attended): the caller
    # contacted an HCP it was told to leave alone.
    holdout_contacted: int = 0
    # Holdout requests of the report whose HCP was served an item through another
    # request in the outcome window after it (the next holdout period had begun, or
    # the holdout is drawn per request).
    holdout_served_elsewhere: int = 0
    # Outcomes from how many HCPs each arm of a row needs for a verdict (--min-per-arm).
    min_per_arm: int = 30
    # Dimensions whose smaller (or, by week and version, older) groups were put together as one:
    # how many groups went into it (:func:`fold_groups`), and the --max-groups.
    folded: dict[str, int] = field(default_factory=dict)
    max_groups: int = MAX_GROUPS
    # Share of the logged requests of each arm whose outcome came back (named for the
    # request, or sent for its HCP within its outcome window: :func:`reported`).
    outcome_coverage: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    run_id: str | None = None


def _group_order(group: Any) -> tuple[int, float, str]:
    """Numbers in numeric order (deciles 1, 2, ..., 10), before any other label; the
    older weeks or versions put together as one (:func:`fold_groups`) first of all."""
    if str(group).startswith(BEFORE):
        return (-1, 0.0, "")
    try:
        return (0, float(group), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(group))


def _arm(values: np.ndarray, cluster: np.ndarray) -> tuple[float, int]:
    """The mean of ``values`` (NaN when empty) and the number of clusters behind it."""
    mean = float(values.mean()) if len(values) else float("nan")
    return mean, len(np.unique(cluster))


def difference_error(
    outcome: np.ndarray, holdout: np.ndarray, cluster: np.ndarray
) -> tuple[float, float]:
    """Standard error of the served mean minus the holdout mean, shapes ``(n,)``,
    clustered by ``cluster`` across both arms (each arm needs two clusters), each
    arm's share at least :func:`no_spread_variance` of its HCPs; and the degrees of
    freedom of Student's t its intervals take (:func:`critical_value`).

    An HCP held out one week and served the next is in both arms, and its habits
    move both means alike: that covariance cancels from their difference. Each
    arm's clustered error on its own, added as if the arms were independent, kept
    it: under a weekly holdout, with HCPs that differ more than their weeks do, the
    interval was twice as wide as it should be (in 300 seeded reports without an
    effect none read "helps" or "hurts", not 5%, and a real effect was found in 6%,
    not 60%).

    It is :func:`nextbest.evaluation.ope.standard_error` of the terms of the
    difference (each row's deviation from its arm's mean over the arm's size,
    negated in the holdout), each arm's scaled by its own small-sample factor
    ``G_arm / (G_arm - 1)`` in place of the helper's over all ``G`` clusters: when
    no HCP is in both arms it is the two arms' clustered errors combined, and with
    one row per HCP, Welch's. An arm whose own clustered variance falls short of
    :func:`no_spread_variance` adds the shortfall (its outcomes, nearly all alike,
    hold no information on how they spread).

    Degrees of freedom: an error estimated from a few HCPs is itself uncertain, and
    the normal critical value then gives intervals too short (Cameron & Miller,
    "A Practitioner's Guide to Cluster-Robust Inference", J. Human Resources 50(2),
    2015, section VI: few clusters). Each arm's squared error (floored) rests on
    ``G_arm - 1`` degrees of freedom, combined by the approximation of Satterthwaite
    (Biometrics Bulletin 2(6), 1946) and Welch (Biometrika 34, 1947):
    ``(v_s + v_h)^2 / (v_s^2 / (G_s - 1) + v_h^2 / (G_h - 1))``, so the arm whose
    error dominates, often the one with fewer HCPs, sets them; and at most ``G - 1``
    for the ``G`` HCPs of both arms, the clusters the error is taken over. With one
    row per HCP and no HCP in both arms the interval is Welch's t-test's; with
    every HCP once in each arm, the paired t-test's.
    """
    n, g_all = len(outcome), len(np.unique(cluster))
    terms = np.zeros(n, dtype=np.float64)
    shortfall = 0.0
    arms: list[tuple[float, int]] = []  # each arm's squared error and its G_arm - 1
    for arm, sign in ((~holdout, 1.0), (holdout, -1.0)):
        g_arm = len(np.unique(cluster[arm]))
        scale = math.sqrt(g_arm / (g_arm - 1) * (g_all - 1) / g_all)
        values = outcome[arm]
        terms[arm] = sign * scale * n * (values - values.mean()) / len(values)
        own = standard_error(values, cluster[arm]) ** 2
        floor = no_spread_variance(g_arm)
        shortfall += max(0.0, floor - own)
        arms.append((max(own, floor), g_arm - 1))
    dof = min(welch_dof(arms), g_all - 1.0)
    return math.sqrt(standard_error(terms, cluster) ** 2 + shortfall), dof


def compare(
    outcome: np.ndarray,
    holdout: np.ndarray,
    *,
    dimension: str,
    group: str,
    min_per_arm: int,
    cluster: np.ndarray | None = None,
) -> ArmComparison:
    """Served vs holdout mean outcome with a 95% interval, shapes ``(n,)``; the
    standard error clustered by ``cluster`` (HCP codes; None: each outcome alone,
    Welch's), no arm's below :func:`no_spread_variance`, times Student's t with the
    degrees of freedom of :func:`difference_error`. An arm needs two HCPs for an
    interval, whatever ``min_per_arm``."""
    if cluster is None:
        cluster = np.arange(len(outcome))
    needed = max(min_per_arm, 2)
    mean_s, g_s = _arm(outcome[~holdout], cluster[~holdout])
    mean_h, g_h = _arm(outcome[holdout], cluster[holdout])
    n_s, n_h = int((~holdout).sum()), int(holdout.sum())
    half = float("nan")
    if min(g_s, g_h) >= 2:
        se, dof = difference_error(outcome, holdout, cluster)
        half = critical_value(dof) * se
    uplift = mean_s - mean_h
    low, high = uplift - half, uplift + half
    if g_s < needed or g_h < needed:
        verdict = f"{TOO_FEW} (need outcomes from {needed} HCPs per arm)"
    elif low > 0:
        verdict = HELPS
    elif high < 0:
        verdict = HURTS
    else:
        verdict = "no clear difference yet"
    return ArmComparison(
        dimension,
        group,
        n_s,
        n_h,
        mean_s,
        mean_h,
        uplift,
        low,
        high,
        verdict,
        hcps_served=g_s,
        hcps_holdout=g_h,
    )


def build_rows(
    decisions: pd.DataFrame, groups: dict[str, pd.Series], *, min_per_arm: int
) -> tuple[ArmComparison, list[ArmComparison]]:
    """The overall comparison and one per group of each dimension in ``groups``."""
    outcome = decisions["outcome"].to_numpy(dtype=np.float64)
    holdout = decisions["holdout"].to_numpy(dtype=bool)
    # Intervals clustered by HCP (each row alone without an hcp_id column).
    hcp = (
        pd.factorize(decisions["hcp_id"])[0] if "hcp_id" in decisions else np.arange(len(decisions))
    )
    overall = compare(
        outcome, holdout, dimension="overall", group="all", min_per_arm=min_per_arm, cluster=hcp
    )
    rows: list[ArmComparison] = []
    for dimension, labels in groups.items():
        values = labels.to_numpy()
        for group in sorted(pd.unique(values).tolist(), key=_group_order):
            mask = values == group
            rows.append(
                compare(
                    outcome[mask],
                    holdout[mask],
                    dimension=dimension,
                    group=str(group),
                    min_per_arm=min_per_arm,
                    cluster=hcp[mask],
                )
            )
    return overall, rows


def max_groups_problem(max_groups: int) -> str | None:
    """Why ``max_groups`` (--max-groups) is no number of groups to show, or None."""
    if max_groups == 1 or max_groups < 0:
        return (
            f"{max_groups} is not a number of groups to show: give 2 or more (the rest of a "
            "dimension's groups are shown as one), or 0 to show every group"
        )
    return None


def fold_groups(
    labels: pd.Series, max_groups: int, *, by_time: bool = False
) -> tuple[pd.Series, int]:
    """``labels`` with at most ``max_groups`` groups (0: as they are), and how many of
    its groups were put together as one (0 when none was).

    The ``max_groups - 1`` groups with the most requests keep their own rows (ties in
    the table's order) and the others become one, ``(N others)``, compared as any
    group is: served against holdout over all of their requests. ``by_time`` (groups
    that follow one another, in the table's order: the weeks, the model versions): the
    newest keep their rows and the older become ``(before <the oldest kept>)``, so the
    groups stay a time line.
    """
    if (problem := max_groups_problem(max_groups)) is not None:
        raise ValueError(problem)
    counts = labels.value_counts(sort=False)
    if max_groups == 0 or len(counts) <= max_groups:
        return labels, 0
    if by_time:
        kept = sorted(counts.index, key=_group_order)[len(counts) - (max_groups - 1) :]
        label = f"{BEFORE}{kept[0]})"
    else:
        largest = sorted(counts.index, key=lambda g: (-int(counts[g]), _group_order(g)))
        kept = largest[: max_groups - 1]
        label = f"({len(counts) - len(kept):,} others)"
    return labels.where(labels.isin(kept), label), len(counts) - len(kept)


def folded_said(report: UpliftReport) -> str | None:
    """The sentence saying which dimensions show some groups as one
    (:func:`fold_groups`), or None when every group has its own row."""
    if not report.folded:
        return None
    kept = report.max_groups - 1
    parts = [
        (
            f"the {kept} newest {IN_TIME[dimension]}, the {n:,} before them as one"
            if dimension in IN_TIME
            else f"{kept} {dimension} groups with the most requests, the other {n:,} as one"
        )
        for dimension, n in report.folded.items()
    ]
    return (
        f"Shown one by one: {'; '.join(parts)} (--max-groups {report.max_groups}; 0 shows "
        "every group)."
    )


def _would_serve(settings: Settings, decisions: pd.DataFrame) -> pd.DataFrame:
    """Channel and topic each logged request's model would have put first (with
    ``NEXTBEST_FRESH_HISTORY``, on the history it was served with that day)."""
    channel = pd.Series(UNKNOWN, index=decisions.index, dtype=object)
    topic = pd.Series(UNKNOWN, index=decisions.index, dtype=object)
    segment_source: pd.DataFrame | None = None
    models: dict[str, ScoringModel] = {}
    for version in dict.fromkeys(decisions["model_version"].astype(str)):
        try:
            models[version] = registry.load_version(settings, version)
        except Exception as exc:  # a version deleted from the registry stays "(unknown)"
            logger.warning("model version %s cannot be loaded for the report: %s", version, exc)
    contacts = replay_contacts(settings, list(models.values()), decisions)
    for version, part in decisions.groupby(decisions["model_version"].astype(str)):
        model = models.get(str(version))
        if model is None:
            continue
        segment_source = model.hcps if segment_source is None else segment_source
        actions = greedy_actions(model, part, contacts)
        catalog = model.catalog.set_index(model.catalog["action_id"].astype(str))
        for index, action in zip(part.index, actions, strict=True):
            if action is None:
                channel[index], topic[index] = NOTHING, NOTHING
            else:
                channel[index] = str(catalog.at[action, "channel"])
                topic[index] = str(catalog.at[action, "topic"])
    frame = pd.DataFrame({"channel": channel, "action group": topic})
    frame.attrs["hcps"] = segment_source
    return frame


def uplift_report(
    settings: Settings,
    *,
    out_dir: Path,
    since: datetime | None = None,
    segment: str = "specialty",
    min_per_arm: int = 30,
    max_groups: int = MAX_GROUPS,
    log: bool = True,
) -> UpliftReport:
    """Build the report from the feedback store, write HTML + PNGs, log to MLflow.

    ``max_groups``: the groups a dimension shows one by one, the rest as one
    (:func:`fold_groups`); 0 shows every group.
    """
    if (problem := max_groups_problem(max_groups)) is not None:
        raise InvalidRequestError("max-groups", problem)
    with store_session(settings.resolved_database_url) as session:
        # The log is read once: the decisions with an outcome are a part of it, and
        # the outcomes sent by HCP are those the decisions' outcomes were matched from.
        by_hcp_events = hcp_outcomes(session, since=since)
        logged = load_decisions(
            session, since=since, with_outcome=False, hcp_outcome_events=by_hcp_events
        )
        decisions = with_outcome_only(logged)
        every = logged if len(decisions) else None
    groups: dict[str, pd.Series] = {}
    if len(decisions):
        would = _would_serve(settings, decisions)
        groups = {"channel": would["channel"], "action group": would["action group"]}
        hcps = would.attrs.get("hcps")
        if hcps is not None and segment not in hcps.columns:
            attributes = sorted(str(c) for c in hcps.columns if c != "hcp_id")
            near = near_hint(segment, attributes, words=True)
            raise InvalidRequestError(
                "segment",
                f"'{segment}' is not an HCP attribute of the served models{near}; "
                f"known: {', '.join(attributes)}",
            )
        if hcps is not None:
            lookup = hcps.set_index("hcp_id")[segment]
            groups[segment] = decisions["hcp_id"].map(lookup).fillna(UNKNOWN).astype(str)
        # Who asked: the e-mail system's key, a rep's, ``nextbest picks`` for a sent
        # file. Its holdout answers are HCPs it asked about: each has its own comparison.
        groups["requester"] = decisions["requester"].astype(str)
        # Each version against the holdout drawn while it served: a promotion's effect
        # shows as the next version's row, not mixed into one average.
        groups["model version"] = decisions["model_version"].astype(str)
        # Week of the decision (Monday, UTC), as its holdout was drawn: the request's
        # date, or when it was served if that is later. Whether the uplift holds.
        weeks = _effective(decisions).dt.tz_localize(None).dt.to_period("W").dt.start_time
        groups["week"] = weeks.dt.strftime("%Y-%m-%d")
    folded: dict[str, int] = {}
    for dimension, labels in groups.items():
        groups[dimension], n = fold_groups(labels, max_groups, by_time=dimension in IN_TIME)
        if n:
            folded[dimension] = n
    overall, rows = build_rows(decisions, groups, min_per_arm=min_per_arm)
    contacted = (
        int((decisions["holdout"].astype(bool) & (decisions["contacted"] > 0)).sum())
        if len(decisions)
        else 0
    )
    elsewhere = served_elsewhere(decisions, every) if every is not None else 0
    coverage: dict[str, float] = {}
    coverage_apart = False
    if every is not None:
        got = reported(decisions, every, by_hcp_events)
        coverage = outcome_coverage(every, got)
        coverage_apart = coverage_differs(every, got)
    by_hcp, unmatched = decisions.attrs.get("outcomes_by_hcp", (0, 0))
    said = conclusion(
        overall,
        min_per_arm=min_per_arm,
        n_logged=len(logged),
        log_url=without_password(settings.resolved_database_url),
        holdout_contacted=contacted,
        holdout_served_elsewhere=elsewhere,
        coverage=coverage,
        coverage_apart=coverage_apart,
    )
    if by_hcp or unmatched:
        days = OUTCOME_WINDOW / timedelta(days=1)
        said += (
            f" {by_hcp:,} outcome events sent without a recommendation_id counted for their "
            f"HCP's latest decision in the {days:g} days before them"
            + (f"; {unmatched:,} found no such decision and count nowhere" if unmatched else "")
            + "."
        )
    report = UpliftReport(
        rows=rows,
        overall=overall,
        conclusion=said,
        since=since,
        n_decisions=len(decisions),
        holdout_contacted=contacted,
        holdout_served_elsewhere=elsewhere,
        outcome_coverage=coverage,
        min_per_arm=min_per_arm,
        folded=folded,
        max_groups=max_groups,
    )
    report.files = write_report(report, out_dir)
    if log:
        report.run_id = _log_report(settings, report, out_dir)
    return report


def figure(value: float, signed: bool = True) -> str:
    """A table cell for an estimate: "n/a" where an arm has no outcome to estimate it."""
    if math.isnan(value):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def counted(n: int, hcps: int) -> str:
    """'394 (301)': requests with an outcome, and the HCPs behind them."""
    return f"{n:,} ({hcps:,})"


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float (a missing figure) as None."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def interval(row: ArmComparison) -> str:
    if math.isnan(row.ci_low) or math.isnan(row.ci_high):
        return "n/a"
    return f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}]"


def verdict(row: ArmComparison) -> str:
    """A table cell for a row's verdict: "not enough data" alone, what a verdict needs
    said once under the table (:func:`too_few_said`). On every row of a new
    deployment's report, the whole "not enough data (need outcomes from 30 HCPs per
    arm)" was the widest cell, repeated."""
    return TOO_FEW if row.verdict.startswith(TOO_FEW) else row.verdict


def too_few_said(rows: list[ArmComparison], min_per_arm: int) -> str | None:
    """The line under a table of ``rows`` saying what "not enough data" means, or None
    when no row says it."""
    if not any(r.verdict.startswith(TOO_FEW) for r in rows):
        return None
    return (
        f"{TOO_FEW}: outcomes from fewer than {max(min_per_arm, 2):,} HCPs in an arm "
        "(--min-per-arm)"
    )


def served_elsewhere(decisions: pd.DataFrame, every: pd.DataFrame) -> int:
    """How many holdout requests of ``decisions`` have their HCP served an item by
    another logged request (of ``every``) in the outcome window after them.

    An HCP is held out for a whole period (``NEXTBEST_HOLDOUT_DAYS``), but a holdout
    answer late in one may be followed by an item served in the next (or by any
    later request, with a holdout drawn per request), and an outcome reported for
    that answer (by its recommendation_id) then reflects that contact. Outcomes sent
    for the HCP alone count for its latest decision, so they never span one: only
    holdout answers with a named outcome are counted.
    """

    def effective(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"hcp_id": frame["hcp_id"], "at": _effective(frame)})

    held_out = decisions["holdout"].astype(bool)
    if "outcome_named" in decisions:
        # An outcome sent for the HCP alone counts for its latest decision, so a
        # later answer takes the outcomes from then on: only one named for this
        # holdout answer can span a contact made after it.
        held_out &= decisions["outcome_named"].astype(bool)
    held = effective(decisions[held_out])
    served = effective(every[~every["holdout"].astype(bool) & every["action_id"].notna()])
    if not len(held) or not len(served):
        return 0
    # Within the outcome window: one served exactly a window later takes the
    # outcomes from then on (the latest decision does), not this holdout's.
    window = pd.Timedelta(OUTCOME_WINDOW) - pd.Timedelta(1, "us")
    return int(_followed_within(held, served, window).sum())


def _effective(decisions: pd.DataFrame) -> pd.Series:
    """When each logged decision takes effect (UTC), as outcomes are matched to
    decisions: a plan logged ahead at its date (``decided_for``, when there is one)."""
    decided = decisions["decided_for"] if "decided_for" in decisions else decisions["timestamp"]
    return decision_times(decisions["timestamp"], decided)


def reported(
    decisions: pd.DataFrame, every: pd.DataFrame, by_hcp: pd.DataFrame | None = None
) -> np.ndarray:
    """``(len(every),)`` bool: whether an outcome came back for each logged request of
    ``every``: it has one (it is in ``decisions``), or an outcome sent for its HCP
    without a recommendation_id (``by_hcp``: ``hcp_id``, ``at``) occurred in its
    outcome window, whichever of the HCP's requests that outcome counts for.

    The unit stays the logged request, as the comparison's (and a holdout drawn per
    request draws for one): an outcome named for a request reports that request
    only, and a caller sending them for picks alone leaves the rest unreported.
    But an outcome by HCP reports the HCP over a period and counts, as a value, for
    its latest request only (:func:`nextbest.storage.repository.logged_decisions`):
    counted per request with an outcome, a complete NRx feed would cover
    1 / (requests per HCP) of an arm, and an arm whose HCPs are asked about more
    often would look worse reported though every HCP's outcome came back. So every
    request whose window the HCP's outcome falls in counts as reported.
    """
    got = every["recommendation_id"].isin(decisions["recommendation_id"]).to_numpy()
    if by_hcp is None or by_hcp.empty or got.all():
        return got
    requests = pd.DataFrame(
        {
            "hcp_id": every["hcp_id"].astype(str),
            "at": _effective(every).astype("datetime64[ns, UTC]"),
        }
    )
    events = pd.DataFrame(
        {
            "hcp_id": by_hcp["hcp_id"].astype(str),
            "at": by_hcp["at"].astype("datetime64[ns, UTC]"),
        }
    )
    # The first outcome of the HCP at or after the request takes effect, within the
    # window an outcome by HCP is matched over (both ends in, as it is matched).
    return got | _followed_within(requests, events, pd.Timedelta(OUTCOME_WINDOW))


def _followed_within(
    earlier: pd.DataFrame, later: pd.DataFrame, tolerance: pd.Timedelta
) -> np.ndarray:
    """``(len(earlier),)`` bool: whether a row of ``later`` for the same HCP is at or
    after each row of ``earlier`` and at most ``tolerance`` after it. Both frames have
    ``hcp_id`` and ``at`` (UTC timestamps, of one dtype in both)."""
    first = pd.merge_asof(
        earlier[["hcp_id", "at"]].assign(row=np.arange(len(earlier))).sort_values("at"),
        later[["hcp_id", "at"]].assign(later_at=later["at"]).sort_values("at"),
        on="at",
        by="hcp_id",
        direction="forward",
        tolerance=tolerance,
    )
    found = np.zeros(len(earlier), dtype=bool)
    found[first["row"].to_numpy()] = first["later_at"].notna().to_numpy()
    return found


def outcome_coverage(every: pd.DataFrame, got: np.ndarray) -> dict[str, float]:
    """The share of each arm's logged requests (``every``) whose outcome came back
    (``got``, :func:`reported`): ``{"served": ..., "holdout": ...}`` (an arm without
    requests is left out)."""
    out: dict[str, float] = {}
    held_out = every["holdout"].to_numpy(dtype=bool)
    for arm, held in (("served", False), ("holdout", True)):
        in_arm = held_out == held
        if in_arm.any():
            out[arm] = float(got[in_arm].mean())
    return out


# Outcome shares of the two arms further apart than this (and beyond chance) break
# the randomization: which requests report back then depends on the arm.
COVERAGE_GAP = 0.05
# and beyond what chance gives this rarely on each side: 3 standard errors of a
# normal difference, Student's t's quantile on the HCPs' degrees of freedom.
COVERAGE_TAIL = float(NormalDist().cdf(-3.0))


def coverage_differs(every: pd.DataFrame, got: np.ndarray) -> bool:
    """Whether the arms got outcomes back (``got``, :func:`reported`) for clearly
    different shares of their logged requests (``every``): more than
    ``COVERAGE_GAP`` apart and beyond chance: more than 3 standard errors of the
    difference with many HCPs, the critical value being Student's t at the normal's
    tail beyond 3 (0.135% on each side).

    The standard error is clustered by HCP across both arms, as the report's
    intervals are (:func:`difference_error`): whether outcomes come back is decided
    per HCP as often as per request (a feed that leaves an HCP out leaves out all its
    requests), so an HCP's requests are not independent draws, and an HCP in both
    arms is left out of both alike, which cancels from the difference. Its degrees
    of freedom are the HCPs', as the intervals': with the normal's 3, 3 HCPs per arm
    each reported with even odds were told apart in 3.2% of seeded reports, not
    0.27%."""
    held_out = every["holdout"].to_numpy(dtype=bool)
    if held_out.all() or not held_out.any():
        return False
    values = got.astype(np.float64)
    hcp = pd.factorize(every["hcp_id"])[0]
    if min(len(np.unique(hcp[held_out])), len(np.unique(hcp[~held_out]))) < 2:
        return False  # fewer than two HCPs in an arm: too few to tell
    p_s, p_h = values[~held_out].mean(), values[held_out].mean()
    se, dof = difference_error(values, held_out, hcp)
    return bool(abs(p_s - p_h) > max(COVERAGE_GAP, critical_value(dof, COVERAGE_TAIL) * se))


def conclusion(
    overall: ArmComparison,
    *,
    min_per_arm: int,
    holdout_contacted: int = 0,
    holdout_served_elsewhere: int = 0,
    coverage: dict[str, float] | None = None,
    coverage_apart: bool = False,
    n_logged: int | None = None,
    log_url: str | None = None,
) -> str:
    """One plain sentence on what the data allow to conclude, and a warning when
    held-out HCPs were contacted anyway (the comparison then understates uplift) or
    the arms' outcomes came back in different shares (``coverage``, when
    ``coverage_apart``, as :func:`coverage_differs` finds them: it is then not
    randomized). ``n_logged``: the requests logged in the report's period, with an
    outcome or not (None: not known), to tell no outcome from no request; ``log_url``:
    the recommendation log read, named when it holds no request."""
    said = _verdict_sentence(overall, min_per_arm=min_per_arm, n_logged=n_logged, log_url=log_url)
    if coverage and coverage_apart:
        said += (
            f" Warning: outcomes came back for {coverage['served']:.0%} of served requests "
            f"but {coverage['holdout']:.0%} of holdout requests. When outcomes come back for "
            "some answers and not others (e.g. only for the recommendation_ids of picks, "
            "while empty answers have none to send), the arms no longer hold comparable "
            "HCPs and their difference is not the effect of serving: send an outcome for "
            "every HCP asked about, served, empty and held out alike (an outcome feed by "
            "HCP, without recommendation_id, does)."
        )
    if holdout_served_elsewhere:
        days = OUTCOME_WINDOW / timedelta(days=1)
        said += (
            f" Warning: {holdout_served_elsewhere:,} of {overall.n_holdout:,} holdout "
            f"requests' HCPs were served by another request in the {days:g} days after "
            "(after their holdout week, or drawn per request): their outcomes partly reflect "
            "that contact, "
            "which pulls the measured uplift toward zero."
        )
    if holdout_contacted:
        said += (
            f" Warning: {holdout_contacted:,} of {overall.n_holdout:,} holdout requests got a "
            "contact event (delivered or completed) or an open, click or attendance: "
            "held-out HCPs were contacted anyway, "
            "which pulls the holdout's outcomes toward the served ones and the measured "
            "uplift toward zero; check that every caller honours holdout: true."
        )
    return said


def _verdict_sentence(
    overall: ArmComparison,
    *,
    min_per_arm: int,
    n_logged: int | None = None,
    log_url: str | None = None,
) -> str:
    if overall.n_served + overall.n_holdout == 0 and n_logged is not None:
        # "0 served and 0 holdout requests have an outcome" said neither whether
        # anything was logged nor what is missing.
        if n_logged == 0 and log_url is not None:
            # Named: a shell without the NEXTBEST_MODELS_DIR of the service reads
            # another log (the demo's, an empty one) and said nothing of it.
            return (
                f"Nothing to conclude yet: no request is logged in the report's period in "
                f"{log_url} (the recommendation log NEXTBEST_MODELS_DIR or "
                "NEXTBEST_DATABASE_URL names: is it the one the service logs to?)."
            )
        if n_logged == 0:
            return "Nothing to conclude yet: no request is logged in the report's period."
        logged = (
            "the one request logged in the report's period has no outcome"
            if n_logged == 1
            else f"none of the {n_logged:,} requests logged in the report's period has an outcome"
        )
        return (
            f"Nothing to conclude yet: {logged}. Outcomes come as outcome feedback events, "
            "naming the recommendation_id or only the HCP (an NRx feed by HCP: nextbest "
            "feedback FILE)."
        )
    if overall.verdict.startswith(TOO_FEW) and min(overall.n_served, overall.n_holdout) == 0:
        have, lack = ("served", "holdout") if overall.n_served else ("holdout", "served")
        why = (
            "is a holdout drawn (NEXTBEST_HOLDOUT_RATE), and are the held-out HCPs' "
            "outcomes sent too?"
            if lack == "holdout"
            else "are the served requests' outcomes sent?"
        )
        n_have = max(overall.n_served, overall.n_holdout)
        return (
            f"Not enough data to conclude yet: {n_have:,} {have} requests have an outcome "
            f"but no {lack} request does, and there is nothing to compare them with ({why})"
        )
    if overall.verdict.startswith(TOO_FEW):
        return (
            f"Not enough data to conclude yet: {overall.n_served} served and "
            f"{overall.n_holdout} holdout requests have an outcome, from "
            f"{overall.hcps_served} and {overall.hcps_holdout} HCPs; outcomes from at least "
            f"{max(min_per_arm, 2)} HCPs in each arm are needed before any difference means "
            "anything."
        )
    interval = f"[{overall.ci_low:+.3f}, {overall.ci_high:+.3f}]"
    if overall.ci_low > 0:
        return (
            f"Serving recommendations raised the outcome by {overall.uplift:+.3f} per request "
            f"(95% CI {interval}) against the randomized holdout."
        )
    if overall.ci_high < 0:
        return (
            f"Serving recommendations lowered the outcome by {overall.uplift:+.3f} per request "
            f"(95% CI {interval}) against the randomized holdout: investigate before going on."
        )
    return (
        f"No conclusion yet: the difference is {overall.uplift:+.3f} per request, but its "
        f"95% CI {interval} includes zero; collect more outcomes."
    )


def uplift_figure(rows: list[ArmComparison], dimension: str, *, min_per_arm: int) -> Figure:
    """One dimension's groups top down, as the table lists them: served - holdout mean
    outcome per request with its 95% interval, groups whose outcomes come from fewer
    than ``min_per_arm`` HCPs in an arm pale.

    Each group is labelled with its requests and the HCPs behind them (``safety: 546
    served (144 HCPs), 30 holdout (28 HCPs)``): the verdict counts HCPs, and a group
    labelled with its 30 holdout requests alone, drawn pale as too few beside a
    ``--min-per-arm`` of 30, could not be read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [r for r in rows if r.dimension == dimension]
    labels = [
        f"{_named(r.group)}: {r.n_served:,} served ({plural(r.hcps_served, 'HCP')}), "
        f"{r.n_holdout:,} holdout ({plural(r.hcps_holdout, 'HCP')})"
        for r in chosen
    ]
    height = 0.45 * max(len(chosen), 2) + 1.5
    # Wide enough for the labels beside axes of about 5 inches (a character of the
    # default font is about 0.075 inch).
    width = max(8.0, 5.0 + 0.075 * max((len(label) for label in labels), default=0))
    fig, ax = plt.subplots(figsize=(width, height))
    y = np.arange(len(chosen))
    values = np.array([r.uplift for r in chosen], dtype=np.float64)
    low = np.array([r.ci_low for r in chosen], dtype=np.float64)
    high = np.array([r.ci_high for r in chosen], dtype=np.float64)
    finite = np.isfinite(low) & np.isfinite(high)
    # Groups with too few outcomes in an arm are drawn pale, so the eye goes to the
    # estimates that mean something; an estimate without an interval (an arm with
    # outcomes from one HCP) is a hollow marker with a legend entry of its own (beside
    # pale dots it read as one whose interval was lost), none at all (an empty arm)
    # says so in words.
    enough = np.array([not r.verdict.startswith(TOO_FEW) for r in chosen], dtype=bool)
    shown = _shown_range(values, low, high, enough & finite)
    needed = max(min_per_arm, 2)
    # The legend in the order drawn (matplotlib lists lines before error bars).
    keys: list[tuple[Any, str]] = []
    for keep, colour, label in (
        (enough, "tab:blue", f"outcomes from {needed:,} HCPs or more in each arm"),
        (~enough, "silver", f"from fewer than {needed:,} HCPs in an arm: too few to conclude"),
    ):
        bars = keep & finite
        if bars.any():
            drawn = ax.errorbar(
                values[bars],
                y[bars],
                xerr=np.vstack([values[bars] - low[bars], high[bars] - values[bars]]),
                fmt="o",
                capsize=3,
                color=colour,
            )
            keys.append((drawn, label))
        bare = keep & ~finite & np.isfinite(values)
        if bare.any():
            [hollow] = ax.plot(values[bare], y[bare], "o", mfc="none", color=colour)
            keys.append((hollow, NO_INTERVAL))
        if shown is not None:  # an arrow at the edge an interval runs past
            for side, ends, marker in ((0, low, "<"), (1, high, ">")):
                past = keep & finite & ((ends < shown[0]) if side == 0 else (ends > shown[1]))
                if not past.any():
                    continue
                ax.plot(
                    [shown[side]] * int(past.sum()),
                    y[past],
                    marker,
                    color=colour,
                    ms=7,
                    clip_on=False,
                )
    for i, r in enumerate(chosen):
        if not np.isfinite(values[i]):
            missing = " and ".join(
                arm for arm, n in (("served", r.n_served), ("holdout", r.n_holdout)) if n == 0
            )
            ax.text(
                0.5,
                i,
                f"not enough data: no {missing} outcome",
                transform=ax.get_yaxis_transform(),
                ha="center",
                va="center",
                color="dimgrey",
                fontsize="small",
            )
    legend = not enough.all() and bool(keys)
    if legend:  # what pale markers mean; under the figure, never over an interval
        fig.legend(
            [k for k, _ in keys],
            [said for _, said in keys],
            loc="lower center",
            ncol=1,
            fontsize="small",
            frameon=False,
        )
    ax.axvline(0.0, color="grey", linewidth=1)
    if shown is not None:
        ax.set_xlim(*shown)
    ax.set_yticks(y, labels)
    ax.set_ylim(len(chosen) - 0.5, -0.5)  # the first group on top, as the page's table
    xlabel = "served - holdout mean outcome per request (95% CI)"
    if shown is not None:
        xlabel += "\n< >: the interval runs past the edge (the table gives it)"
    ax.set_xlabel(xlabel)
    ax.set_title(f"Uplift by {dimension}")
    # About 0.2 inch a legend entry, under the axis' label.
    fig.tight_layout(rect=(0, (0.15 + 0.2 * len(keys)) / height if legend else 0, 1, 1))
    plt.close(fig)
    return fig


def _named(group: str) -> str:
    """A group as a figure's label names it: ``no action``, not ``(no action)``
    (the brackets keep the table's placeholders apart from a channel's name)."""
    return {UNKNOWN: "unknown", NOTHING: "no action"}.get(group, group)


def _shown_range(
    values: np.ndarray, low: np.ndarray, high: np.ndarray, trusted: np.ndarray
) -> tuple[float, float] | None:
    """The x range to draw when some interval is far wider than those of the groups
    with enough outcomes (an arm of 2 HCPs: +-12 beside +-0.4), or None for all of it.

    Drawn whole, one such interval shrank every estimate that means something to a
    dot; the range kept covers zero, every point estimate and the trusted intervals.
    """
    if not trusted.any():
        return None
    points = values[np.isfinite(values)]
    lo = float(min(low[trusted].min(), points.min(), 0.0))
    hi = float(max(high[trusted].max(), points.max(), 0.0))
    pad = 0.08 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    ends = np.concatenate([low[np.isfinite(low)], high[np.isfinite(high)]])
    if ends.min() >= lo - (hi - lo) and ends.max() <= hi + (hi - lo):
        return None  # no wider than the kept range on either side: drawn whole
    return lo, hi


def write_report(report: UpliftReport, out_dir: Path) -> dict[str, Path]:
    """Write ``uplift_report.html``, ``uplift_report.json`` and one PNG per dimension.

    Each file is written beside its place under a name of this process's own
    (``.uplift_report.<pid>.partial.html``) and all are renamed into place once every
    one is whole, the page last, with Ctrl-C and SIGTERM held for the renames: a run
    stopped or failing part way leaves a directory's earlier report as it was, where
    it left the new PNGs under the earlier page and tables, which then showed figures
    of another period than its own. The earlier report's figures this one does not
    draw (a segment's after ``--segment`` changed, every one when nothing has an
    outcome) go with the renames: the directory holds this report alone, not a figure
    of another period beside it. Only figures that report named are removed, never
    another file of the directory."""
    made = not out_dir.exists()  # taken away again by a run that writes no report
    out_dir.mkdir(parents=True, exist_ok=True)
    earlier = _figures_of_the_report_in(out_dir)  # read before this one replaces it
    staged: dict[Path, Path] = {}  # each file's place -> where it is written first

    def beside(place: Path) -> Path:
        staged[place] = place.with_name(f".{place.stem}.{os.getpid()}.partial{place.suffix}")
        return staged[place]

    files: dict[str, Path] = {}
    try:
        files = _write_staged(report, out_dir, beside)
        with signals_held():
            for place, written in staged.items():
                os.replace(written, place)
            for name in sorted(earlier - {place.name for place in staged}):
                try:
                    (out_dir / name).unlink(missing_ok=True)
                except OSError as exc:
                    logger.warning(
                        "%s of the earlier report could not be removed (%s): it is not "
                        "one of this report's figures",
                        out_dir / name,
                        exc.strerror or exc,
                    )
    finally:
        for written in staged.values():
            written.unlink(missing_ok=True)
        if made and not files:
            with contextlib.suppress(OSError):  # not empty: something else put there
                out_dir.rmdir()
    return files


# A figure's name as write_report gives it: what a report's record may name for removal.
_FIGURE = re.compile(r"uplift_[^/\\]+\.png")


def _figures_of_the_report_in(out_dir: Path) -> set[str]:
    """The names of the figures of the report ``out_dir`` holds: as its
    ``uplift_report.json`` lists them (``figures``), or, for a report written before
    it did, as its page shows them; none when it holds no report that can be read."""
    try:
        record = json.loads((out_dir / "uplift_report.json").read_text())
    except (OSError, ValueError):  # none, or not one a report wrote
        record = None
    named = record.get("figures") if isinstance(record, dict) else None
    if isinstance(named, dict):
        names = [str(name) for name in named.values()]
    else:
        try:
            page = (out_dir / "uplift_report.html").read_text()
        except (OSError, ValueError):
            return set()
        names = [unquote(html.unescape(name)) for name in re.findall(r'<img src="([^"]+)"', page)]
    return {name for name in names if _FIGURE.fullmatch(name)}


_NOT_IN_A_NAME = re.compile(r"[\s/\\]")


def _figure_name(dimension: str) -> str:
    """The PNG file name of ``dimension``'s figure, in the report's own directory: spaces
    and path separators (a segment column named 'region/area') become '_'."""
    return "uplift_" + _NOT_IN_A_NAME.sub("_", dimension) + ".png"


def _write_staged(
    report: UpliftReport, out_dir: Path, beside: Callable[[Path], Path]
) -> dict[str, Path]:
    """:func:`write_report`'s files, each written where ``beside`` says for its place
    in ``out_dir`` (the page last); their places by name."""
    files: dict[str, Path] = {}
    dimensions = list(dict.fromkeys(r.dimension for r in report.rows))
    for dimension in dimensions:
        path = out_dir / _figure_name(dimension)
        figure_of = uplift_figure(report.rows, dimension, min_per_arm=report.min_per_arm)
        figure_of.savefig(beside(path), dpi=100)
        files[dimension] = path
    table = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (
                r.dimension,
                r.group,
                counted(r.n_served, r.hcps_served),
                counted(r.n_holdout, r.hcps_holdout),
                figure(r.mean_served, signed=False),
                figure(r.mean_holdout, signed=False),
                figure(r.uplift),
                interval(r),
                verdict(r),
            )
        )
        + "</tr>"
        for r in [report.overall, *report.rows]
    )
    note = too_few_said([report.overall, *report.rows], report.min_per_arm)
    caption = (
        ""
        if note is None
        else f'<caption style="caption-side:bottom;text-align:left">{html.escape(note)}</caption>\n'
    )
    images = "\n".join(
        # The file's name as a link, then as HTML: a segment column named 'a"b', 'a<b' or
        # 'a#b' (a file name and a URL's fragment) broke the page or the image.
        f'<h2>By {html.escape(d)}</h2><img src="{html.escape(quote(files[d].name))}" '
        f'alt="uplift by {html.escape(d)}">'
        for d in dimensions
    )
    since = _utc_text(report.since) if report.since else "the beginning of the log"
    made_at = datetime.now(UTC)
    weeks = (
        " Weeks run Monday to Sunday, UTC, named by their Monday." if "week" in dimensions else ""
    )
    folded = "" if (said := folded_said(report)) is None else html.escape(said)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>nextbest uplift report</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:right}}
td:nth-child(-n+2){{text-align:left}}.conclusion{{font-size:1.2em;font-weight:bold}}</style>
</head><body>
<h1>Uplift report: served versus randomized holdout</h1>
<p class="conclusion">{html.escape(report.conclusion)}</p>
<p>{report.n_decisions:,} logged requests with an outcome since {html.escape(since)}.
Groups are what the serving model would have put first, so holdout requests are
grouped the same way as served ones. Outcome in the business unit of the feedback
(e.g. NRx); intervals are 95%, clustered by HCP, each on its own. Counts are requests
with an outcome and, in brackets, the HCPs behind them: a verdict needs outcomes from
{max(report.min_per_arm, 2):,} HCPs in each arm (--min-per-arm). {_groups_compared(report)}
{folded}{weeks}
Made {_utc_text(made_at)}.</p>
<table>{caption}<tr><th>dimension</th><th>group</th><th>{COUNT_COLUMNS[0]}</th><th>{COUNT_COLUMNS[1]}</th>
<th>mean served</th><th>mean holdout</th><th>uplift</th><th>95% CI</th><th>verdict</th></tr>
{table}
</table>
{images}
</body></html>
"""
    files["json"] = out_dir / "uplift_report.json"
    beside(files["json"]).write_text(
        json.dumps(
            json_safe(
                {
                    "conclusion": report.conclusion,
                    "made_at": made_at.isoformat(timespec="seconds"),
                    "since": _as_utc(report.since).isoformat() if report.since else None,
                    "n_decisions": report.n_decisions,
                    "holdout_contacted": report.holdout_contacted,
                    "holdout_served_elsewhere": report.holdout_served_elsewhere,
                    "outcome_coverage": report.outcome_coverage,
                    # Groups put together as one row, by dimension (--max-groups).
                    "folded": report.folded,
                    "max_groups": report.max_groups,
                    # The PNG of each dimension: what a later report in this directory
                    # removes when it draws no such figure.
                    "figures": {d: files[d].name for d in dimensions},
                    "overall": report.overall.__dict__,
                    "rows": [r.__dict__ for r in report.rows],
                }
            ),
            indent=1,
            allow_nan=False,  # a figure that does not exist is null: JSON has no NaN
        )
    )
    files["html"] = out_dir / "uplift_report.html"
    beside(files["html"]).write_text(page)
    return files


def _groups_compared(report: UpliftReport) -> str:
    """The page's sentence on the group rows: how many are compared, and what chance
    makes of that many; when none is, what a group needs to be."""
    compared = sum(not r.verdict.startswith(TOO_FEW) for r in report.rows)
    needed = max(report.min_per_arm, 2)
    if not compared:
        return (
            "No group has outcomes from enough HCPs in both arms to compare yet: a group "
            f"is compared once outcomes from {needed} served HCPs and {needed} held-out "
            "HCPs came back for it (--min-per-arm)."
        )
    rows = f"{compared} group row{' is' if compared == 1 else 's are'}"
    return (
        f"{rows} compared, and among 20 groups where serving changes nothing about one "
        'would still read "serving helps" or "serving hurts" by chance. Trust the overall '
        "row first, and a group's verdict when it recurs in later reports."
    )


def chance_said(report: UpliftReport) -> str | None:
    """What the terminal says under the report's table when a group row reads "serving
    helps" or "serving hurts" (the page's sentence on the group rows, which the page
    always shows): a reader of the terminal took a group's verdict at its word, with a
    score of groups each tested at 95%. None when no group row reads either."""
    if not any(r.verdict in (HELPS, HURTS) for r in report.rows):
        return None
    return _groups_compared(report)


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _utc_text(moment: datetime) -> str:
    """'2026-12-02 00:00 UTC': the report's times, whatever the zone they were given in."""
    return f"{_as_utc(moment):%Y-%m-%d %H:%M} UTC"


def _log_report(settings: Settings, report: UpliftReport, out_dir: Path) -> str:
    # The experiment first: it names the store that cannot be read, where opening
    # MLflow before it said "a database cannot be used", naming every store.
    experiment_id = registry.experiment_id(settings, "-reports")
    mlflow = registry._mlflow(settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name="uplift-report") as run:
        metrics: dict[str, Any] = {
            "n_decisions": report.n_decisions,
            "n_served": report.overall.n_served,
            "n_holdout": report.overall.n_holdout,
            "hcps_served": report.overall.hcps_served,
            "hcps_holdout": report.overall.hcps_holdout,
            **{f"outcome_coverage_{arm}": v for arm, v in report.outcome_coverage.items()},
            "holdout_contacted": report.holdout_contacted,
            "holdout_served_elsewhere": report.holdout_served_elsewhere,
            "uplift": report.overall.uplift,
        }
        if not report.overall.verdict.startswith(TOO_FEW):
            # An interval from a handful of HCPs is no evidence: charted beside other
            # runs' (MLflow's compare view), it read as one. The page says why it has none.
            metrics["uplift_ci_low"] = report.overall.ci_low
            metrics["uplift_ci_high"] = report.overall.ci_high
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if np.isfinite(float(v))})
        mlflow.set_tags({"verdict": report.overall.verdict, "conclusion": report.conclusion[:4000]})
        for path in report.files.values():
            mlflow.log_artifact(str(path), artifact_path="uplift_report")
        return str(run.info.run_id)
