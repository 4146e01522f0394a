"""Recommend next-best actions: rules, scoring, ranking, exploration, reasons.

One code path serves a single HCP, a batch of HCPs (e-mail picks) and a rep's
call plan: the rules build an ``(n_hcps, n_actions)`` mask, every allowed pair is
scored at once (one LightGBM call for a request, see ``ScoringModel.score_rows``),
and ranking and exploration run per HCP on small numpy arrays. No pandas runs per
request: catalog columns are copied to plain arrays when a model is loaded.
"""

from __future__ import annotations

import copy
import os
import time
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import numpy as np

from nextbest.clock import Clock, utc_now
from nextbest.contract.parse import QUOTED_AT_MOST, KnownIds, quoted
from nextbest.contract.schema import (
    REP_CHANNELS_FILTER,
    channels_filter,
    is_rep_channel,
    near_channel,
)
from nextbest.errors import InvalidRequestError, NotFoundError, TerritoriesUnavailableError
from nextbest.features.history import ENGAGEMENT_WAIT_DAYS
from nextbest.learning.reasons import Lapse, explain
from nextbest.learning.scoring import PREFERENCE_X_VALUE, ScoringModel
from nextbest.limits import PURPOSES
from nextbest.policy.eligibility import EligibilityIndex
from nextbest.policy.exploration import Exploration, challenger_draw
from nextbest.policy.ranking import fill_list, ranked_by_value, ranked_positive
from nextbest.policy.rules import HistoryRules, LiveHistory, ServingRules
from nextbest.service.apikeys import catalog_offers
from nextbest.service.blinding import NOT_SUGGESTED
from nextbest.service.score_cache import PairCache
from nextbest.service.territories import (
    TerritoryAlignment,
    near_territories,
    rows_by_territory,
)
from nextbest.yamlfile import near_hint

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.orm import Session

MAX_K = 50
MAX_BATCH = 1000
# At most this many HCPs a rep plan's explain accounts for (``RepPlan.left_out``): a
# territory may hold thousands. The best ranked come first (see ``Recommender.rep_plan``).
MAX_LEFT_OUT = 100


def _decimals_for(net_value: float) -> int:
    """Decimals that show a net value below zero as such: 2, or up to 4 when 2 would
    read -0.00 (an uplift of +0.02 for a cost of 0.02 says nothing to a rep)."""
    return next((d for d in (2, 3) if round(abs(net_value), d) > 0), 4)


@dataclass(frozen=True)
class RecommendedAction:
    rank: int
    action_id: str
    channel: str
    content_id: str
    topic: str
    content_type: str
    score: float
    expected_uplift: float
    p_engage: float
    cost: float
    propensity: float
    explored: bool
    reasons: list[str]


@dataclass(frozen=True)
class Recommendation:
    recommendation_id: str
    hcp_id: str
    created_at: datetime
    model_version: str
    uplift_source: str
    holdout: bool
    purpose: str
    channel: str | None
    n_candidates: int
    # The probability this request had of no action at all, holdout included, as the
    # exploration computed it (``Served.p_nothing``): logged for off-policy evaluation,
    # which cannot replay the live rules that may have emptied the greedy list.
    p_no_action: float
    items: list[RecommendedAction]
    excluded: dict[str, list[str]] = field(default_factory=dict)
    decided_for: datetime | None = None  # the decision time (a request's date), UTC
    rep_id: str | None = None  # the rep a call plan's answer was made for
    k_requested: int | None = None  # the request's k (items asked for)
    # The random split that chose model_version to answer this HCP, with a challenger
    # answering a share (Recommender.split): the version the draw could have chosen
    # instead, and the probability it had of choosing model_version. None where no
    # draw chose (no challenger; an HCP or a day only one version can answer; a plan).
    split_with: str | None = None
    split_share: float | None = None


# Why an HCP of the territory is not among a rep plan's suggestions (``LeftOut.why``):
# reached and drawn into the randomized holdout; worth a visit but ranked below the
# capacity; rep actions allowed, none worth its cost; every rep action excluded by a
# rule; to a caller kept blind to the holdout, either of the first and the third.
LeftOutWhy = Literal[
    "held_out",
    "below_capacity",
    "no_rep_action_worth_its_cost",
    "no_rep_action_allowed",
    "not_suggested",
]


@dataclass(frozen=True)
class LeftOut:
    """An HCP of the territory a rep plan does not suggest, and why (``why``).

    ``rank`` is its place in the plan's ranking (every HCP with a rep action worth
    its cost, held-out ones included; 1 is the best), for held-out HCPs and those
    below the capacity. ``action_id`` and ``score`` are its best allowed rep action
    and that action's net value (None: no rep action allowed). ``excluded``, for an
    HCP with no rep action worth its cost or none allowed, says why each rep action
    is left out, as a single recommendation's explain does.
    """

    hcp_id: str
    why: LeftOutWhy
    rank: int | None = None
    action_id: str | None = None
    score: float | None = None
    recommendation_id: str | None = None  # a held-out HCP's holdout answer, as logged
    excluded: dict[str, list[str]] | None = None


@dataclass(frozen=True)
class RepPlan:
    """A rep's call plan for one day: ``suggestions`` best first (one item each).

    ``held_out`` are HCPs the plan reached but drew into the randomized holdout
    (logged as holdout answers, not shown); ``n_hcps`` is the size of the
    territory, ``n_candidates`` the HCPs with at least one allowed rep action.
    ``left_out`` (asked for, else None) says why each other HCP of the territory
    is not suggested, at most ``MAX_LEFT_OUT`` of them; ``n_left_out`` (asked for,
    else None) counts them all, listed or not: ``n_hcps`` minus the suggestions.
    ``created_at`` is when it was served (UTC): the one clock reading its answers are
    logged with, an empty plan's too.
    """

    rep_id: str
    territory_id: str
    date: date
    capacity: int
    model_version: str
    n_hcps: int
    n_candidates: int
    suggestions: list[Recommendation]
    held_out: list[Recommendation]
    created_at: datetime
    purpose: str = "promotional"
    left_out: list[LeftOut] | None = None
    n_left_out: int | None = None


# The first reason of an item drawn by exploration (see Exploration), and what it adds
# when the model expects the item to cost more than it brings.
EXPLORED = "explored: chosen at random to keep learning"
NOT_EXPECTED_TO_PAY = (
    "the model expects it to bring less than it costs; it is tried so that its estimate "
    "can be checked"
)


def new_recommendation_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: milliseconds since the epoch, then random.

    Time-ordered ids let a process that receives feedback tell a recommendation
    another worker minted a moment ago (its batched log may not be committed
    yet) from one that does not exist (:func:`minted_at`).
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return f"{value:032x}"


def minted_at(recommendation_id: str) -> float | None:
    """Seconds since the epoch at which :func:`new_recommendation_id` minted this id.

    None for anything that is not such an id (older uuid4 ids, client typos).
    """
    if len(recommendation_id) != 32 or recommendation_id[12] != "7":
        return None
    try:
        value = int(recommendation_id, 16)
    except ValueError:
        return None
    if (value >> 62) & 0x3 != 0x2:
        return None
    return (value >> 80) / 1000.0


# Decision dates a request may name. Outside them a date is a typo (0001-01-01,
# 9999-12-31, 20261101 read as seconds since 1970), and the rules' windows would run
# off the calendar.
EARLIEST_DECISION = date(2000, 1, 1)
LATEST_DECISION = date(2099, 12, 31)


def check_decision_date(on: datetime | date) -> datetime | date:
    """``on`` itself, or ValueError when it lies outside the dates a decision may have
    (a time with an offset is checked in UTC)."""
    try:
        day = decision_time(on).date() if isinstance(on, datetime) else on
    except OverflowError:  # 9999-12-31T23:59-23:59 is past the last UTC datetime
        day = LATEST_DECISION + timedelta(days=1)
    if not EARLIEST_DECISION <= day <= LATEST_DECISION:
        raise ValueError(
            f"{on.isoformat()} is not a decision date: use one from "
            f"{EARLIEST_DECISION.isoformat()} to {LATEST_DECISION.isoformat()}"
        )
    return on


def decision_time(on: datetime | date | None, *, now: datetime | None = None) -> datetime:
    """A timezone-aware UTC decision time (naive input is taken as UTC).

    A date alone is the start of that day (00:00 UTC), except today's, which is
    now: a plan or a pick asked for today counts the contacts made earlier today.
    ``now`` is the clock's reading to decide by (None: :func:`utc_now`). A date is
    today's or not by one reading: resolve it once per decision, as a date read
    again after midnight is yesterday's, the start of a day already gone.
    """
    now = utc_now() if now is None else now
    if on is None:
        return now
    if not isinstance(on, datetime):
        return now if on == now.date() else datetime(on.year, on.month, on.day, tzinfo=UTC)
    return on.replace(tzinfo=UTC) if on.tzinfo is None else on.astimezone(UTC)


def _utc_datetime(stamp: pd.Timestamp) -> datetime:
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def cutoff(model: ScoringModel) -> datetime:
    """The model's history cut-off (``as_of``) as a UTC datetime."""
    return _utc_datetime(model.as_of)


def history_day(model: ScoringModel) -> datetime:
    """When the history features ``model`` scores with are as of (UTC): its cut-off, or
    the day they were moved on to (:meth:`ScoringModel.advanced`). No decision is made
    for a day before it: it would be scored with contacts made after."""
    return _utc_datetime(model.features_as_of)


def challenger_answers(
    hcp_id: str,
    now: datetime,
    *,
    version: str,
    share: float,
    known: Collection[str],
    history_day: datetime,
    served: Collection[str],
) -> bool:
    """Whether the challenger ``version`` answers ``hcp_id`` at decision time ``now``
    (NEXTBEST_CHALLENGER_SHARE ``share``): its draw for the HCP
    (:func:`~nextbest.policy.exploration.challenger_draw`, fixed per HCP and version)
    falls below the share, or the served version does not know the HCP (``served``:
    one added to the hcps since it was trained, which it would answer 404), and the
    challenger knows the HCP (``known``) and its history (:func:`history_day`) does
    not end after ``now``'s day, where it could not answer. The rule servers answer
    by (:meth:`Recommender.answering`) and ``nextbest explain`` explains by."""
    return (
        challenger_draw(hcp_id, version) < share or hcp_id not in served
    ) and challenger_can_answer(hcp_id, now, known=known, history_day=history_day)


def challenger_can_answer(
    hcp_id: str, now: datetime, *, known: Collection[str], history_day: datetime
) -> bool:
    """Whether a challenger that knows the HCPs ``known``, its history as of
    ``history_day``, can answer ``hcp_id`` at decision time ``now``: it knows the HCP,
    and its history does not end after ``now``'s day (see :func:`challenger_answers`,
    and :meth:`Recommender.split`, for which HCPs a random draw gives it)."""
    return hcp_id in known and now.astimezone(UTC).date() >= history_day.date()


def history_moved_to(
    model: ScoringModel, session: Session, day: datetime
) -> tuple[ScoringModel, int, int]:
    """``model`` with its history moved on to ``day`` (00:00 UTC of a day) by the HCPs'
    contacts that ``session``'s store holds since its cut-off (read from
    :attr:`~nextbest.learning.scoring.ScoringModel.contacts_needed_from`: a month before
    the day a moved model is as of), as a server with NEXTBEST_FRESH_HISTORY serves that
    day, how many contacts were read and how many of them the move counts as engaged
    (engaged before the day, within the engagement wait of the contact); ``model``
    itself (and 0, 0) when its history is as of that day already, or later."""
    import pandas as pd

    from nextbest.storage.repository import contacts_between

    if day <= history_day(model):
        return model, 0, 0
    start = _utc_datetime(model.contacts_needed_from)
    contacts = contacts_between(session, start=start, end=day)
    # Counted as the move counts them: engaged before the day, within the wait.
    touches = model.contact_touches(contacts)
    engaged = int(touches.engaged_within(before=int(pd.Timestamp(day).timestamp())).sum())
    return model.advanced(pd.Timestamp(day), contacts), len(contacts), engaged


def lapses(
    as_of: datetime,
    hcp_ids: Sequence[str],
    now: datetime,
    history: LiveHistory | None,
    moved_to: datetime | None = None,
) -> list[Lapse]:
    """What each HCP's snapshot (history as of ``as_of``) misses at ``now``: the days
    since, the channels ``history`` shows it was contacted on since, and its newest
    contacts before (see :class:`~nextbest.learning.reasons.Lapse`). ``moved_to``: the
    day the snapshot was moved on to (:func:`history_day`; None: not moved), from
    which the days since are counted; it counts in its gaps and records every contact
    up to :data:`~nextbest.features.history.ENGAGEMENT_WAIT_DAYS` before that day
    (those after may still wait for their engagement), so what was contacted is told
    from there."""
    start = as_of if moved_to is None else moved_to
    counted = as_of
    if moved_to is not None:
        counted = max(as_of, moved_to - timedelta(days=ENGAGEMENT_WAIT_DAYS))
    # Nearest whole day: a cut-off is a second after the newest interaction, so the
    # floor would drop a day that has all but passed (49 days read as 6 weeks).
    days = max(0, round((now - start) / timedelta(days=1)))
    moved = (start - as_of) / timedelta(days=1)
    newest = None if history is None else history.newest_contacts()
    if newest is None or history is None:
        return [Lapse(days, None, moved=moved)] * len(hcp_ids)
    # Contacts between what the snapshot counted and the history's start are unknown:
    # the snapshot's record and gaps may be out of date on any channel.
    unseen = not history.reaches(counted)
    untouched = Lapse(days, frozenset(), unseen=unseen, moved=moved)
    out = []
    for hcp_id in hcp_ids:
        contacts = newest.get(hcp_id)
        if not contacts:
            out.append(untouched)
            continue
        since = frozenset(channel for channel, at in contacts.items() if at > counted)
        # Rounded, so that the lapse (part of the score cache's key) stays put; a
        # contact without a channel is under None.
        before = tuple(
            sorted(
                (
                    (channel, round((as_of - at) / timedelta(days=1), 3))
                    for channel, at in contacts.items()
                    if at <= as_of
                ),
                key=lambda pair: (pair[0] or "", pair[1]),
            )
        )
        out.append(Lapse(days, since, before, unseen=unseen, moved=moved))
    return out


# The HCP ids of each loaded model, built once per model (a reload loads a new one):
# the serving runtime's recommender and the feedback checks share them.
# By the model's id (a model is no dict key), each entry dropped with its model.
_KNOWN_HCPS: dict[int, KnownIds] = {}


def known_hcps_of(model: ScoringModel, rows: Mapping[str, int] | None = None) -> KnownIds:
    """The :class:`~nextbest.contract.parse.KnownIds` of ``model``'s HCPs: built on its
    first use (``rows``: the id-to-row mapping its recommender holds, else one of the
    model's hcps), then the same one for as long as the model is loaded."""
    known = _KNOWN_HCPS.get(id(model))
    if known is None:
        if rows is None:
            ids = model.hcps["hcp_id"].astype(str).tolist()
            rows = {h: i for i, h in enumerate(ids)}
        known = _KNOWN_HCPS[id(model)] = KnownIds(rows)
        weakref.finalize(model, _KNOWN_HCPS.pop, id(model), None)
    return known


class Recommender:
    """Ranks actions for HCPs with one loaded model; safe to share across threads."""

    def __init__(
        self,
        *,
        model: ScoringModel,
        version: str,
        exploration: Exploration,
        rules: ServingRules | None = None,
        max_per_channel: int | None = None,
        cache_pairs: int = 0,
        alignment: TerritoryAlignment | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.model = model
        # What "now" is for a request without a date, and when an answer is served.
        self.clock = clock
        # Scores and reasons of recently asked HCPs (0: none kept); see score_cache.
        self.cache = PairCache(model, cache_pairs)
        self.version = version
        self.exploration = exploration
        self.rules = rules or ServingRules()
        self._max_per_channel_given = max_per_channel
        self.max_per_channel = (
            max_per_channel if max_per_channel is not None else self.rules.max_items_per_channel
        )
        self.eligibility = EligibilityIndex.build(model)
        self.as_of = cutoff(model)
        # The day the served history is as of (the cut-off unless moved on).
        self.history_day = history_day(model)
        catalog, hcps = model.catalog, model.hcps
        self.action_ids = catalog["action_id"].astype(str).to_numpy(dtype=object)
        self.action_channels = catalog["channel"].astype(str).to_numpy(dtype=object)
        # The same as lists, read per served item (a list's item costs less than an array's).
        self._action_id_list: list[str] = self.action_ids.tolist()
        self._action_channel_list: list[str] = self.action_channels.tolist()
        self._content_ids = catalog["content_id"].astype(str).tolist()
        self._topics = catalog["topic"].astype(str).tolist()
        self._content_types = catalog["content_type"].astype(str).tolist()
        self._costs = model.action_cost.astype(float).tolist()
        # What bends each action's cost, said where an exclusion quotes it.
        self._cost_notes = [f", business levers: {t}" if t else "" for t in model.lever_text]
        self.channels = frozenset(self.action_channels.tolist())
        self.offered = catalog_offers(catalog)  # its (channel, content type) pairs
        self.history_rules = HistoryRules(
            self.rules,
            channels=self.action_channels,
            action_ids=self.action_ids,
            consent_on_file=self.eligibility.consent_on_file,
        )
        self.hcp_ids = hcps["hcp_id"].astype(str).to_numpy(dtype=object)
        self._hcp_pos = {h: i for i, h in enumerate(self.hcp_ids.tolist())}
        self._known_hcps = known_hcps_of(model, self._hcp_pos)
        # The model's territories (its hcps file's), unless an alignment replaces them.
        self._model_territory = hcps["territory_id"].astype(str).to_numpy(dtype=object)
        self._align(alignment)
        self.rep_actions = np.array([is_rep_channel(c) for c in self.action_channels], dtype=bool)
        model.keep_hcp_attributes()
        # The challenger version that answers a share of the HCPs (NEXTBEST_CHALLENGER_SHARE;
        # see with_challenger). None: this recommender answers every HCP.
        self.challenger: Recommender | None = None
        self.challenger_share = 0.0

    def with_rules(self, rules: ServingRules) -> Recommender:
        """The same model, exploration and score cache under other serving rules.

        Rules decide what may be served, not how a pair scores, so the cache (shared
        with this recommender while its last requests finish) stays valid.
        """
        other = copy.copy(self)
        other.rules = rules
        other.max_per_channel = (
            self._max_per_channel_given
            if self._max_per_channel_given is not None
            else rules.max_items_per_channel
        )
        other.history_rules = HistoryRules(
            rules,
            channels=self.action_channels,
            action_ids=self.action_ids,
            consent_on_file=self.eligibility.consent_on_file,
        )
        if self.challenger is not None:
            other.challenger = self.challenger.with_rules(rules)
        return other

    def _align(self, alignment: TerritoryAlignment | None) -> None:
        """Set each HCP's territory (``territory``: one per snapshot row, None for an
        HCP in none) and each territory's rows (``territories``): ``alignment``'s,
        else the model's own."""
        self.alignment = alignment
        self.territory: np.ndarray = (
            self._model_territory if alignment is None else alignment.assign(self.hcp_ids)
        )
        self.territories: dict[str, np.ndarray] = rows_by_territory(self.territory)

    def with_alignment(self, alignment: TerritoryAlignment | None) -> Recommender:
        """The same model, rules and score cache under another territory alignment
        (None: the model's own). Territories decide who may see an HCP, not how it
        scores, so the cache stays valid."""
        other = copy.copy(self)
        other._align(alignment)
        if self.challenger is not None:
            other.challenger = self.challenger.with_alignment(alignment)
        return other

    def with_challenger(self, challenger: Recommender | None, share: float) -> Recommender:
        """This recommender (its model, rules and score cache) with ``challenger``
        answering ``share`` of the HCPs it knows (see :meth:`answering`); None: none.

        Both answer under the same rules, territories and exploration; each answer is
        logged under the version that gave it, with that version's propensities, so the
        gate judges the challenger on the choices it made itself. Rules and territories
        given to this recommender later (:meth:`with_rules`, :meth:`with_alignment`)
        are given to its challenger too."""
        other = copy.copy(self)
        other.challenger = challenger
        other.challenger_share = share if challenger is not None else 0.0
        return other

    def by_answering(self, hcp_ids: Sequence[str], now: datetime) -> dict[Recommender, list[int]]:
        """The places in ``hcp_ids`` each recommender answers at ``now`` (see
        :meth:`answering`): all of them this one's without a challenger."""
        if self.challenger is None:
            return {self: list(range(len(hcp_ids)))}
        by: dict[Recommender, list[int]] = {}
        for i, hcp_id in enumerate(hcp_ids):
            by.setdefault(self.answering(hcp_id, now), []).append(i)
        return by

    def answering(self, hcp_id: str, now: datetime) -> Recommender:
        """Who answers ``hcp_id`` at decision time ``now``: the challenger where
        :func:`challenger_answers` says so (its share of the HCPs, and those only it
        knows), else this recommender. Rep plans are the
        served version's alone (a plan ranks a whole territory by one model), and so
        are a rep key's requests (the API asks without the challenger)."""
        challenger = self.challenger
        if challenger is None or not challenger_answers(
            hcp_id,
            now,
            version=challenger.version,
            share=self.challenger_share,
            known=challenger._hcp_pos,
            history_day=challenger.history_day,
            served=self._hcp_pos,
        ):
            return self
        return challenger

    def split(self, hcp_id: str, version: str, now: datetime) -> tuple[str, float] | None:
        """The random split that chose ``version`` (this recommender's or its
        challenger's) to answer ``hcp_id`` at decision time ``now``: the other version
        and the probability the draw had of choosing ``version`` (the challenger's
        share, or the rest). None where no draw chose: no challenger, or an HCP or a
        day only one of the two can answer (see :meth:`answering`).

        Logged with the answer (``split_with``, ``split_share``): the gate values such a
        decision with the mixture of both versions' probabilities of its action, which
        the random split makes the probability it was served with."""
        challenger = self.challenger
        if (
            challenger is None
            or hcp_id not in self._hcp_pos
            or not challenger_can_answer(
                hcp_id, now, known=challenger._hcp_pos, history_day=challenger.history_day
            )
        ):
            return None
        share = self.challenger_share
        if version == challenger.version:
            return self.version, share
        return challenger.version, 1.0 - share

    def _split_named(self, rec: Recommendation, now: datetime) -> Recommendation:
        """``rec`` naming the random split that chose its version (:meth:`split`)."""
        split = self.split(rec.hcp_id, rec.model_version, now)
        if split is None:
            return rec
        return replace(rec, split_with=split[0], split_share=split[1])

    def self_check(self) -> None:
        """Score and explain one pair, drawing nothing: raises if the model cannot serve."""
        one = np.zeros(1, dtype=np.int64)
        X = self.model.rows(one, one)
        scores = self.model.score_rows(X, one)
        self.model.net_value(scores.uplift, one)
        explain(self.model, X, one, one, scores)

    def warm_from(self, previous: Recommender, *, seconds: float, block: int = 256) -> int:
        """Score and explain what ``previous`` was last asked; returns the HCPs warmed.

        Run before this recommender replaces ``previous``, so that the first
        requests after the swap about the HCPs in use find their scores and
        reasons cached instead of all going to LightGBM at once. Most recently
        asked HCPs first, ``block`` at a time, until ``seconds`` are spent (the
        block under way finishes); HCPs and actions this model does not know are
        skipped. The warmed HCPs count as asked about again (the protected
        segment), in their old order of recency.
        """
        if seconds <= 0 or self.cache.capacity == 0:
            return 0
        deadline = time.perf_counter() + seconds
        old_hcps, old_scored, old_explained = previous.cache.asked()
        hcps = np.array([self._hcp_pos.get(h, -1) for h in previous.hcp_ids[old_hcps].tolist()])
        here = {a: j for j, a in enumerate(self.action_ids.tolist())}
        moved = [here.get(a, -1) for a in previous.action_ids.tolist()]
        actions = np.array(moved, dtype=np.int64)
        common = np.flatnonzero(actions >= 0)
        known = np.flatnonzero(hcps >= 0)[-self.cache.capacity :]
        hcps = hcps[known]
        scored = np.zeros((len(known), self.model.n_actions), dtype=bool)
        scored[:, actions[common]] = old_scored[np.ix_(known, common)]
        explained = [[moved[a] for a in old_explained[i] if moved[a] >= 0] for i in known]
        done = self._fill_newest_first(hcps, scored, explained, deadline=deadline, block=block)
        self.cache.touch(hcps[done:])
        return len(hcps) - done

    def warm_hcps(
        self,
        hcp_ids: Sequence[str],
        *,
        seconds: float,
        block: int = 256,
        stop: Callable[[], bool] | None = None,
    ) -> int:
        """Score every pair any request could ask about these HCPs; returns the HCPs warmed.

        For a process that starts with an empty cache: ``hcp_ids`` most recently
        asked first (the recommendation log's newest), scored ``block`` at a time
        until ``seconds`` are spent or ``stop()`` says so, on probation in the
        cache in that order of recency. The pairs are those
        the HCP's consent, the content's specialty fit and today's approval windows
        allow for either purpose, any channel. Reasons are left to the first
        request (which items it serves is not known yet).
        """
        if seconds <= 0 or self.cache.capacity == 0:
            return 0
        deadline = time.perf_counter() + seconds
        known = [r for r in (self._hcp_pos.get(h) for h in hcp_ids) if r is not None]
        rows = np.asarray(known[: self.cache.capacity], dtype=np.int64)[::-1]
        now = self.clock()
        scored = self.allowed(rows, purpose="promotional", channel=None, now=now, history=None)
        scored |= self.allowed(rows, purpose="medical", channel=None, now=now, history=None)
        explained: list[list[int]] = [[] for _ in range(len(rows))]
        done = self._fill_newest_first(
            rows, scored, explained, deadline=deadline, block=block, stop=stop
        )
        return len(rows) - done

    def _fill_newest_first(
        self,
        hcps: np.ndarray,
        scored: np.ndarray,
        explained: list[list[int]],
        *,
        deadline: float,
        block: int,
        stop: Callable[[], bool] | None = None,
    ) -> int:
        """Fill the cache from the end of ``hcps`` (newest) backwards, ``block`` at a time,
        until ``deadline`` or ``stop()``; returns the index of the first HCP filled.

        The filled HCPs end up in the cache's order of recency as in ``hcps``
        (the last one the most recent)."""
        done = len(hcps)
        lapse = self._lapse_without_contacts(self.clock())
        for end in range(len(hcps), 0, -block):
            start = max(0, end - block)
            self.cache.fill(hcps[start:end], scored[start:end], explained[start:end], lapse)
            done = start
            if time.perf_counter() >= deadline or (stop is not None and stop()):
                break
        self.cache.settle(hcps[done:])
        return done

    def _lapse_without_contacts(self, now: datetime) -> Lapse:
        """The lapse at ``now`` of an HCP not contacted since the cut-off: what warming
        the cache explains as of (a request that finds contacts explains again)."""
        history = None
        if self.rules.reads_history:
            history = LiveHistory(now=now, counts={w: {} for w in self.rules.lookbacks()})
        return lapses(self.as_of, [""], now, history, self.history_day)[0]

    # -- lookups ---------------------------------------------------------------------

    def hcp_row(self, hcp_id: str) -> int | None:
        return self._hcp_pos.get(hcp_id)

    def knows(self, hcp_id: str) -> bool:
        """Whether this recommender or its challenger knows ``hcp_id``: whose live
        history to read for an answer (the challenger answers those only it knows,
        :meth:`answering`)."""
        return hcp_id in self._hcp_pos or (
            self.challenger is not None and hcp_id in self.challenger._hcp_pos
        )

    @property
    def known_hcps(self) -> KnownIds:
        """The HCP ids this model knows (set-like: a membership test is a dict lookup),
        with the case-folded lookup a refusal names the id meant by."""
        return self._known_hcps

    def check_territories(self) -> None:
        """Raise :class:`TerritoriesUnavailableError` (503) when the territory
        alignment file could not be read since this worker started: what a rep key
        may see, and what a rep plan holds, is not known."""
        if self.alignment is not None and self.alignment.error is not None:
            raise TerritoriesUnavailableError(
                "rep territories are unavailable: the territory alignment file "
                "(NEXTBEST_TERRITORIES_FILE) cannot be read; rep keys and rep plans are "
                "served once it is fixed (an operator sees why in /readyz)"
            )

    def territory_of(self, hcp_id: str) -> str | None:
        """The HCP's territory; None for an HCP the model does not know or (with a
        territory alignment) one the alignment does not list."""
        row = self._hcp_pos.get(hcp_id)
        if row is None:
            return None
        territory: str | None = self.territory[row]
        return territory

    def check_request(
        self, *, k: int, channel: str | None, purpose: str, now: datetime | None = None
    ) -> None:
        """Refuse options no answer can satisfy, and a decision time ``now`` before
        the model's history (:func:`check_day`)."""
        check_options(self.channels, k=k, channel=channel, purpose=purpose)
        if now is not None:
            check_day(now, self.history_day)

    # -- requests --------------------------------------------------------------------

    def recommend(
        self,
        *,
        hcp_id: str,
        k: int = 5,
        channel: str | None = None,
        purpose: str = "promotional",
        on: datetime | None = None,
        explain_exclusions: bool = False,
        history: LiveHistory | None = None,
        channels: Collection[str] | None = None,
        blind: bool = False,
    ) -> Recommendation:
        """A ranked, logged-ready recommendation for ``hcp_id``.

        ``history`` is the live contact history of this HCP (see
        :func:`nextbest.service.serving.live_history`); None applies no history
        rules. ``channels``: the only channels it may hold (a channel-bound API
        key's; None: any), besides the ``channel`` filter. ``blind`` (a caller kept
        blind to the holdout, :mod:`nextbest.service.blinding`): the explanation of
        an answer with no items says ``NOT_SUGGESTED`` of every action the rules
        allow, held out or not worth its cost alike. Raises
        :class:`NotFoundError` for an HCP the model does not know and
        :class:`InvalidRequestError` for a bad ``k``, ``channel`` or ``purpose``.
        """
        now = decision_time(on, now=self.clock())
        self.check_request(k=k, channel=channel, purpose=purpose, now=now)
        answering = self.answering(hcp_id, now)
        if answering is not self:
            rec = answering.recommend(
                hcp_id=hcp_id,
                k=k,
                channel=channel,
                purpose=purpose,
                on=now,
                explain_exclusions=explain_exclusions,
                history=history,
                channels=channels,
                blind=blind,
            )
            return self._split_named(rec, now)
        row = self._hcp_pos.get(hcp_id)
        if row is None:
            raise NotFoundError("hcp_id", hcp_id)
        rec = self._decide(
            np.array([row]),
            k=k,
            channel=channel,
            purpose=purpose,
            now=now,
            history=history,
            channels=channels,
        )[0][0]
        if self.challenger is not None:
            rec = self._split_named(rec, now)
        if not explain_exclusions:
            return rec
        if blind and not rec.items:
            # Neither the value of the actions a held-out HCP's list would have held
            # (left unsaid, they would tell it from one with nothing worth doing) nor
            # that of the others.
            (allowed,) = self.allowed(
                np.array([row]),
                purpose=purpose,
                channel=channel,
                now=now,
                history=history,
                channels=channels,
            )
            by_value = [(j, NOT_SUGGESTED) for j in np.flatnonzero(allowed).tolist()]
        else:
            served = {item.action_id for item in rec.items}  # exploration may serve one
            # The list as served: an explored first item counts toward its channel's limit.
            first = (
                int(np.flatnonzero(self.action_ids == rec.items[0].action_id)[0])
                if rec.items
                else None
            )
            (left_out,) = self._left_out_by_value(
                np.array([row]),
                k=k,
                purpose=purpose,
                channel=channel,
                now=now,
                history=history,
                channels=channels,
                firsts=[first],
            )
            by_value = [(j, w) for j, w in left_out if str(self.action_ids[j]) not in served]
        excluded = self._excluded(
            row,
            purpose=purpose,
            channel=channel,
            now=now,
            history=history,
            by_value=by_value,
            channels=channels,
        )
        return replace(rec, excluded=excluded)

    def _excluded(
        self,
        row: int,
        *,
        purpose: str,
        channel: str | None,
        now: datetime,
        history: LiveHistory | None,
        by_value: list[tuple[int, str]],
        rep_only: bool = False,
        channels: Collection[str] | None = None,
    ) -> dict[str, list[str]]:
        """Why each action (``rep_only``: each rep action) is left out for snapshot row
        ``row``: the rules that exclude it, and what ``by_value`` (from
        :meth:`_left_out_by_value`) says of it; actions nothing leaves out are not listed."""
        why = self.eligibility.reasons_excluded(
            row, on=_naive(now), purpose=purpose, channel=channel
        )
        if channels is not None:
            bound = ", ".join(channels)
            for j, on_channel in enumerate(self.action_channels.tolist()):
                if on_channel not in channels:
                    why[j].append(f"channel is {on_channel}, this API key speaks for {bound} only")
        for j, ruled in self.history_rules.ruled_out_why.items():
            why[j].extend(ruled)
        if history is not None:
            hcp_id = str(self.hcp_ids[row])
            for j, extra in enumerate(self.history_rules.reasons(hcp_id, history)):
                why[j].extend(extra)
        for j, said in by_value:
            why[j].append(said)
        return {
            str(self.action_ids[j]): w
            for j, w in enumerate(why)
            if w and (self.rep_actions[j] or not rep_only)
        }

    def _left_out_by_value(
        self,
        rows: np.ndarray,
        *,
        k: int,
        purpose: str,
        channel: str | None,
        now: datetime,
        history: LiveHistory | None,
        rep_only: bool = False,
        channels: Collection[str] | None = None,
        firsts: Sequence[int | None] | None = None,
    ) -> list[list[tuple[int, str]]]:
        """For each snapshot row of ``rows``, the actions the rules allow that the greedy
        list of ``k`` leaves out, each with why: an expected net value of zero or less
        (never served; why in numbers), or, worth its cost and ranked among the first
        ``k``, ``max_per_channel`` items of its channel ranked above it. Actions ranked
        below the first ``k`` are not listed: no rule left them out.

        ``firsts`` (one per row; None: the greedy list) is the first item of the list
        as served: after an explored first item the list is that item and the best
        ``k - 1`` others, the explored item counted toward its channel's limit, and
        the limit is said of what it cut from those."""
        allowed = self.allowed(
            rows,
            purpose=purpose,
            channel=channel,
            now=now,
            history=history,
            rep_only=rep_only,
            channels=channels,
        )
        out: list[list[tuple[int, str]]] = [[] for _ in range(len(rows))]
        pair_h, pair_a = np.nonzero(allowed)
        if not len(pair_h):
            return out
        # From the model, not the cache: asking it would count as asking about the HCPs again.
        scores = self.model.score(rows[pair_h], pair_a)
        net = self.model.net_value(scores.uplift, pair_a)
        # Under the fallback the value is engagement's, not a measured outcome's.
        gained = "engagement value" if self.model.uplift_source == PREFERENCE_X_VALUE else "outcome"
        for i, a, gain, value in zip(
            pair_h.tolist(), pair_a.tolist(), scores.uplift.tolist(), net.tolist(), strict=True
        ):
            if value <= 0:
                d = _decimals_for(value)
                out[i].append(
                    (
                        a,
                        f"not worth its cost: expected {gain:+.{d}f} {gained} for a cost of "
                        f"{self._costs[a]:.{d}f}{self._cost_notes[a]} (net value {value:+.{d}f})",
                    )
                )
        if self.max_per_channel is not None:
            # Ranked as _decide ranks them; the list without the limit, against the one
            # with it: what the limit cut, not everything worth its cost.
            score = np.full(allowed.shape, -np.inf)
            score[pair_h, pair_a] = net
            for i in range(len(rows)):
                ranked = ranked_positive(score[i], np.isfinite(score[i])).tolist()
                first = None if firsts is None else firsts[i]
                if first is None:
                    reach = ranked[:k]
                    kept = set(
                        fill_list(
                            ranked,
                            k,
                            channel_code=self.model.action_channel_code,
                            max_per_channel=self.max_per_channel,
                        )
                    )
                else:
                    # What the list would hold after its first item without the limit,
                    # against what it holds with it.
                    reach = [first, *fill_list(ranked, k - 1, first=first)]
                    kept = {
                        first,
                        *fill_list(
                            ranked,
                            k - 1,
                            channel_code=self.model.action_channel_code,
                            max_per_channel=self.max_per_channel,
                            first=first,
                        ),
                    }
                out[i] += [
                    (
                        a,
                        f"at most {self.max_per_channel} items of one channel in one list "
                        "(max_items_per_channel)",
                    )
                    for a in reach
                    if a not in kept
                ]
        return out

    def recommend_many(
        self,
        *,
        hcp_ids: Sequence[str],
        k: int = 1,
        channel: str | None = None,
        purpose: str = "promotional",
        on: datetime | None = None,
        history: LiveHistory | None = None,
        channels: Collection[str] | None = None,
    ) -> tuple[list[Recommendation], list[str]]:
        """Recommendations for many HCPs (one scoring call), and the unknown ``hcp_ids``;
        ``channels`` as :meth:`recommend` takes them."""
        now = decision_time(on, now=self.clock())
        self.check_request(k=k, channel=channel, purpose=purpose, now=now)
        if len(hcp_ids) > MAX_BATCH:
            raise InvalidRequestError(
                "hcp_ids", f"at most {MAX_BATCH} HCPs per call, got {len(hcp_ids)}"
            )
        known: list[str] = []
        unknown: list[str] = []
        for h in hcp_ids:
            # One the served version lacks may be its challenger's (see answering).
            answers = h in self._hcp_pos or (
                self.challenger is not None and self.answering(h, now) is not self
            )
            (known if answers else unknown).append(h)
        if not known:
            return [], unknown
        # Each HCP answered by the version that answers it (one scoring call each), in
        # the order asked.
        recs: list[Recommendation | None] = [None] * len(known)
        served_at = self.clock()
        for answering, places in self.by_answering(known, now).items():
            splits = (
                [self.split(known[i], answering.version, now) for i in places]
                if self.challenger is not None
                else None
            )
            answered, _ = answering._decide(
                np.array([answering._hcp_pos[known[i]] for i in places], dtype=np.int64),
                k=k,
                channel=channel,
                purpose=purpose,
                now=now,
                history=history,
                channels=channels,
                served_at=served_at,
                splits=splits,
            )
            for i, rec in zip(places, answered, strict=True):
                recs[i] = rec
        return [rec for rec in recs if rec is not None], unknown

    def rep_plan(
        self,
        *,
        rep_id: str,
        territory_id: str,
        capacity: int | None = None,
        on: datetime | date | None = None,
        purpose: str = "promotional",
        history: LiveHistory | None = None,
        explain_left_out: bool = False,
        served_at: datetime | None = None,
        blind: bool = False,
    ) -> RepPlan:
        """The HCPs of ``territory_id`` ranked by best expected net value of a rep channel.

        HCPs are ranked by the net value of their best allowed rep action (the greedy
        choice: no exploration or holdout draw moves an HCP in the plan); an HCP with
        no action worth its cost is not in it. Walking down that ranking, each HCP is
        drawn as for any request: held out (``held_out``: logged as a holdout answer,
        taking no capacity) or suggested with its served rep action, possibly
        explored, until ``capacity`` HCPs are suggested. Held-out HCPs thus come from
        the ranks the plan suggests from, each drawn with the holdout rate whatever
        its rank: a randomized control for the rep channel. HCPs below the last one
        reached are not logged.

        With ``explain_left_out``, ``left_out`` says why each HCP not suggested is
        left out (see :meth:`_left_out_of_plan`); without it no more work is done.
        ``served_at`` is the clock's reading the plan is decided and served at (None:
        read it now); every answer, and the plan, says it was served then. ``blind``
        (a rep's own answer, :mod:`nextbest.service.blinding`): ``left_out`` says the
        held-out HCPs are ``not_suggested``, as those with no rep action worth its
        cost, so that a rep cannot tell the two apart.
        """
        rules = self.rules
        capacity = rules.rep_default_capacity if capacity is None else capacity
        if not 1 <= capacity <= rules.rep_max_capacity:
            raise InvalidRequestError(
                "capacity",
                f"must be between 1 and {rules.rep_max_capacity} (rep_plan.max_capacity of "
                f"the serving rules), got {capacity}",
                location="query",
            )
        if purpose not in PURPOSES:
            raise InvalidRequestError("purpose", _not_a_purpose(purpose), location="query")
        served_at = self.clock() if served_at is None else served_at
        now = decision_time(on, now=served_at)
        check_day(now, self.history_day, location="query")
        rows = self.territories.get(territory_id)
        if rows is None:
            listed = self._unserved_territory_size(territory_id)
            if listed:
                raise NotFoundError(
                    "territory_id",
                    territory_id,
                    known_to=f"the served model (version {self.version})",
                    advice=self._unserved_territory_advice(listed),
                )
            raise NotFoundError(
                "territory_id",
                territory_id,
                known_to=None if self.alignment is None else "the territory alignment file",
                advice=self._unknown_territory_advice(territory_id),
            )
        ranked, value = self._decide(
            rows,
            k=1,
            channel=None,
            purpose=purpose,
            now=now,
            history=history,
            rep_only=True,
            served_at=served_at,
        )
        # Each HCP's greedy first item's net value (-inf: nothing worth its cost).
        greedy_value = np.where(value > 0, value, -np.inf).max(axis=1, initial=-np.inf)
        if self.max_per_channel is not None and self.max_per_channel < 1:
            greedy_value[:] = -np.inf  # no list may hold any item
        # Ranked by a value no draw changes (ties: territory order). The served item's
        # score would move an explored HCP down and leave a held-out one (no item)
        # out of the walk: the holdout would never be logged.
        order = np.argsort(-greedy_value, kind="stable")
        # Each answer logged keeps its own draw's ``p_no_action``, the holdout rate
        # here (the walk reaches only HCPs with a rep action worth serving). It is
        # exact for the logged answers: whether the walk reaches an HCP depends on
        # the draws of those ranked above it, never on its own.
        suggestions: list[Recommendation] = []
        held_out: list[Recommendation] = []
        ranking = order[np.isfinite(greedy_value[order])]
        for n in ranking.tolist():
            rec = replace(ranked[n], rep_id=rep_id)  # logged with the rep it was planned for
            if rec.holdout:
                held_out.append(rec)
            elif rec.items:  # always, outside the holdout, with a greedy item
                suggestions.append(rec)
            if len(suggestions) == capacity:
                break
        left_out = None
        if explain_left_out:
            left_out = self._left_out_of_plan(
                rows,
                value,
                ranking,
                suggested={r.hcp_id for r in suggestions},
                held_out=held_out,
                purpose=purpose,
                now=now,
                history=history,
                blind=blind,
            )
        return RepPlan(
            rep_id=rep_id,
            territory_id=territory_id,
            date=now.date(),
            capacity=capacity,
            model_version=self.version,
            n_hcps=len(rows),
            n_candidates=sum(1 for r in ranked if r.n_candidates),
            suggestions=suggestions,
            held_out=held_out,
            created_at=served_at,
            purpose=purpose,
            left_out=left_out,
            n_left_out=None if left_out is None else len(rows) - len(suggestions),
        )

    def _unserved_territory_size(self, territory_id: str) -> int:
        """How many HCPs the territory alignment file lists in ``territory_id``, a
        territory no HCP of the served model is in (0: the file does not hold it, or
        there is no file)."""
        if self.alignment is None:
            return 0
        return sum(t == territory_id for t in self.alignment.territory_of.values())

    def _unserved_territory_advice(self, listed: int) -> str:
        """What to check of a territory the alignment file holds with ``listed`` HCPs,
        none of which the served model knows."""
        many = listed > 1
        unknown = "none of which the served model knows" if many else "unknown to the served model"
        return (
            f"the territory alignment file lists it with {listed:,} HCP{'s' if many else ''}, "
            f"{unknown} (served once a model trained with {'them' if many else 'it'} is); "
            "a rep key for it is refused until then: `nextbest keys list "
            "--check-territories` lists such keys"
        )

    def _unknown_territory_advice(self, territory_id: str) -> str:
        """What to check of a territory no HCP is in: its spelling (the nearest known,
        case aside), and the rep keys for it, every request of which is refused."""
        near = near_territories(territory_id, self.territories)
        spelling = f"; did you mean {' or '.join(near)}?" if near else ""
        return (
            f"none of its HCPs is in that territory (ids match exactly, case included"
            f"{spelling}); a rep key for it is refused until one is: "
            "`nextbest keys list --check-territories` lists such keys"
        )

    def _left_out_of_plan(
        self,
        rows: np.ndarray,
        value: np.ndarray,
        ranking: np.ndarray,
        *,
        suggested: set[str],
        held_out: list[Recommendation],
        purpose: str,
        now: datetime,
        history: LiveHistory | None,
        blind: bool = False,
    ) -> list[LeftOut]:
        """Why each HCP of a plan's territory (snapshot rows ``rows``) is not suggested,
        at most ``MAX_LEFT_OUT`` of them, the best ranked first.

        ``value`` is each allowed rep pair's net value (``-inf``: not allowed) and
        ``ranking`` the positions of ``rows`` the plan ranks, best first. First come
        the ranked HCPs not suggested, in their order: held out (with their logged
        holdout answer) or below the capacity; then those with a rep action allowed
        but none worth its cost, the closest to paying first; then those with none
        allowed, in territory order. The last two say why of each rep action, with
        the exclusion reasons of a single recommendation's explain.

        ``blind`` (a rep's own answer): the held-out HCPs are neither listed nor counted
        among the ranked (``rank`` counts the others), but said with those with no rep
        action worth its cost, as ``not_suggested``, all in territory order, each
        saying ``NOT_SUGGESTED`` of its allowed rep actions, without their value: no
        place, number or word tells a held-out HCP from one with nothing worth doing.
        """
        best = value.max(axis=1, initial=-np.inf)
        best_action = value.argmax(axis=1)
        holdout_of = {r.hcp_id: r.recommendation_id for r in held_out}
        hcp_ids = self.hcp_ids[rows].tolist()
        out: list[LeftOut] = []
        hidden: list[int] = []  # blind: the held-out HCPs, said with those worth nothing
        place = 0
        for n in ranking.tolist():
            if blind and hcp_ids[n] in holdout_of:
                hidden.append(n)
                continue
            place += 1
            if hcp_ids[n] in suggested:
                continue
            out.append(
                LeftOut(
                    hcp_id=hcp_ids[n],
                    why="held_out" if hcp_ids[n] in holdout_of else "below_capacity",
                    rank=place,
                    action_id=str(self.action_ids[best_action[n]]),
                    score=float(best[n]),
                    recommendation_id=holdout_of.get(hcp_ids[n]),
                )
            )
            if len(out) == MAX_LEFT_OUT:
                return out
        ranked = np.zeros(len(rows), dtype=bool)
        ranked[ranking] = True
        unranked = np.flatnonzero(~ranked)
        said: list[list[tuple[int, str]]]
        if blind:
            # The held-out HCPs among those with nothing worth doing, in territory
            # order: neither their place nor a value sets them apart.
            allowed = np.isfinite(best[unranked])
            unsuggested = np.concatenate([np.array(hidden, dtype=np.intp), unranked[allowed]])
            unranked = np.concatenate([np.sort(unsuggested), unranked[~allowed]])
            unranked = unranked[: MAX_LEFT_OUT - len(out)]
            said = [
                [(j, NOT_SUGGESTED) for j in np.flatnonzero(np.isfinite(value[n])).tolist()]
                for n in unranked.tolist()
            ]
        else:
            # Closest to paying first; none allowed (-inf) last, each in territory order.
            unranked = unranked[np.argsort(-best[unranked], kind="stable")]
            unranked = unranked[: MAX_LEFT_OUT - len(out)]
            said = self._left_out_by_value(
                rows[unranked],
                k=1,
                purpose=purpose,
                channel=None,
                now=now,
                history=history,
                rep_only=True,
            )
        for n, by_value in zip(unranked.tolist(), said, strict=True):
            allowed_any = bool(np.isfinite(best[n]))
            worth = allowed_any and not blind
            out.append(
                LeftOut(
                    hcp_id=hcp_ids[n],
                    why=(
                        ("not_suggested" if blind else "no_rep_action_worth_its_cost")
                        if allowed_any
                        else "no_rep_action_allowed"
                    ),
                    action_id=str(self.action_ids[best_action[n]]) if worth else None,
                    score=float(best[n]) if worth else None,
                    excluded=self._excluded(
                        int(rows[n]),
                        purpose=purpose,
                        channel=None,
                        now=now,
                        history=history,
                        by_value=by_value,
                        rep_only=True,
                    ),
                )
            )
        return out

    # -- the shared core -------------------------------------------------------------

    def allowed(
        self,
        rows: np.ndarray,
        *,
        purpose: str,
        channel: str | None,
        now: datetime,
        history: LiveHistory | None,
        rep_only: bool = False,
        channels: Collection[str] | None = None,
    ) -> np.ndarray:
        """Every rule at once: shape ``(len(rows), n_actions)`` bool. ``channels``: the
        only channels allowed (a channel-bound API key's), None: any."""
        per_action = self.eligibility.action_mask(on=_naive(now), purpose=purpose, channel=channel)
        if rep_only:
            per_action = per_action & self.rep_actions
        if channels is not None:
            per_action = per_action & self.eligibility.channels_mask(channels)
        if self.history_rules.ruled_out_why:
            per_action = per_action & ~self.history_rules.ruled_out
        allowed = self.eligibility.consent[rows] & self.eligibility.specialty_ok[rows] & per_action
        if history is not None:
            allowed &= ~self.history_rules.blocked(self.hcp_ids[rows].tolist(), history)
        return allowed

    def _decide(
        self,
        rows: np.ndarray,
        *,
        k: int,
        channel: str | None,
        purpose: str,
        now: datetime,
        history: LiveHistory | None,
        rep_only: bool = False,
        channels: Collection[str] | None = None,
        served_at: datetime | None = None,
        splits: Sequence[tuple[str, float] | None] | None = None,
    ) -> tuple[list[Recommendation], np.ndarray]:
        """The answers for snapshot rows ``rows``, and, for ``rep_only`` (else empty),
        ``(len(rows), n_actions)`` the net value of each allowed pair (``-inf`` for the
        others), which no exploration or holdout draw changes. ``served_at``: the
        clock's reading the answers are served at (None: read it now). ``splits``: per
        row, the random split that chose this version to answer it (:meth:`split`;
        None: none did)."""
        model = self.model
        allowed = self.allowed(
            rows,
            purpose=purpose,
            channel=channel,
            now=now,
            history=history,
            rep_only=rep_only,
            channels=channels,
        )
        # Logged, so that the report and the gate replay the answer on its channels.
        channel_filter = channel
        if rep_only:
            channel_filter = REP_CHANNELS_FILTER
        elif channel is None and channels is not None:
            channel_filter = channels_filter(
                [c for c in channels if c in self.channels] or channels
            )
        n_h = len(rows)
        # Row-major: row i's allowed pairs are pair_h's run of i, its actions ascending.
        # (Array methods, not NumPy's module functions: on one request's arrays, of a
        # hundred actions, the functions' own Python layers cost more than the work.)
        pair_h, pair_a = allowed.nonzero()
        bounds = pair_h.searchsorted(np.arange(n_h + 1)).tolist()
        net = np.empty(0)
        if len(pair_h):
            scores = self.cache.scores(rows, pair_h, pair_a)
            net = model.net_value(scores.uplift, pair_a)
        channel_code = model.action_channel_code
        hcp_ids = self.hcp_ids[rows].tolist()
        # The holdout's week: the decision's, or this one for a decision dated in the
        # past (its contact can only happen now), so that no date sent by a caller
        # serves an HCP held out this week, today. One clock reading for both: the
        # week is that of when the answer takes effect as logged (the later of its
        # date and when it was served), even when a Monday 00:00 UTC falls in between.
        served_at = self.clock() if served_at is None else served_at
        day = max(now, served_at).astimezone(UTC).date()
        served = []
        item_pairs = []  # per row, the pairs (into pair_h, pair_a) of its served items
        for i in range(n_h):
            start, end = bounds[i], bounds[i + 1]
            eligible, value = pair_a[start:end], net[start:end]
            s = self.exploration.serve(
                ranked_by_value(eligible, value),
                eligible,
                k=k,
                scores=value,
                channel_code=channel_code,
                max_per_channel=self.max_per_channel,
                hcp_id=hcp_ids[i],
                on=day,
            )
            served.append(s)
            if len(s.actions):
                item_pairs.append(start + eligible.searchsorted(s.actions))
        # One contributions call covers every served item of every HCP.
        reasons: list[list[str]] = []
        if item_pairs:
            pairs = np.concatenate(item_pairs) if len(item_pairs) > 1 else item_pairs[0]
            item_h, item_a = pair_h[pairs], pair_a[pairs]
            item = scores.take(pairs)
            lapse = lapses(self.as_of, hcp_ids, now, history, self.history_day)
            item_lapse = [lapse[i] for i in item_h.tolist()]
            reasons = self.cache.explain(rows[item_h], item_a, item, item_lapse)
            item_uplift = item.uplift.tolist()
            item_p = item.p_engage.tolist()
            item_score = net[pairs].tolist()
        out: list[Recommendation] = []
        cursor = 0
        action_ids, action_channels = self._action_id_list, self._action_channel_list
        for i, s in enumerate(served):
            split = None if splits is None else splits[i]
            items = []
            for rank, (a, explored, propensity) in enumerate(
                zip(s.actions.tolist(), s.explored.tolist(), s.propensity.tolist(), strict=True),
                start=1,
            ):
                why = reasons[cursor]
                items.append(
                    RecommendedAction(
                        rank=rank,
                        action_id=action_ids[a],
                        channel=action_channels[a],
                        content_id=self._content_ids[a],
                        topic=self._topics[a],
                        content_type=self._content_types[a],
                        score=item_score[cursor],
                        expected_uplift=item_uplift[cursor],
                        p_engage=item_p[cursor],
                        cost=self._costs[a],
                        propensity=propensity,
                        explored=explored,
                        # An explored item the model rates not worth its cost gets no
                        # sentence arguing for it: only its expected value, and that a
                        # rep should not expect it to pay off.
                        reasons=(
                            [EXPLORED, *why]
                            if item_score[cursor] > 0
                            else [f"{EXPLORED}: {NOT_EXPECTED_TO_PAY}", *why[:1]]
                        )
                        if explored
                        else why,
                    )
                )
                cursor += 1
            out.append(
                Recommendation(
                    recommendation_id=new_recommendation_id(),
                    hcp_id=hcp_ids[i],
                    created_at=served_at,
                    model_version=self.version,
                    uplift_source=model.uplift_source,
                    holdout=s.holdout,
                    purpose=purpose,
                    channel=channel_filter,
                    n_candidates=bounds[i + 1] - bounds[i],
                    p_no_action=s.p_nothing,
                    decided_for=now,
                    items=items,
                    k_requested=k,
                    split_with=None if split is None else split[0],
                    split_share=None if split is None else split[1],
                )
            )
        if not rep_only:
            return out, np.empty(0)
        score = np.full(allowed.shape, -np.inf)
        score[pair_h, pair_a] = net
        return out, score


def check_options(
    channels: Collection[str],
    *,
    k: int,
    channel: str | None,
    purpose: str,
    max_k: int | None = MAX_K,
) -> None:
    """Refuse options no answer can satisfy, naming the field (InvalidRequestError).

    ``channels`` are the channels of the model's catalog; ``max_k`` bounds ``k``
    (None: no bound, for picks over whole files).
    """
    if max_k is None and k < 1:
        raise InvalidRequestError("k", f"must be at least 1, got {k}")
    if max_k is not None and not 1 <= k <= max_k:
        raise InvalidRequestError("k", f"must be between 1 and {max_k}, got {k}")
    if channel is not None and channel not in channels:
        known = ", ".join(sorted(channels))
        near = near_channel(channel, channels)
        hint = f"; did you mean '{near}'?" if near is not None else ""
        said = quoted(channel, at_most=QUOTED_AT_MOST)
        raise InvalidRequestError("channel", f"unknown channel {said}{hint} (known: {known})")
    if purpose not in PURPOSES:
        raise InvalidRequestError("purpose", _not_a_purpose(purpose))


def _not_a_purpose(purpose: str) -> str:
    """``must be one of promotional, medical (did you mean 'promotional'?)``."""
    return f"must be one of {', '.join(PURPOSES)}" + near_hint(purpose.strip().lower(), PURPOSES)


def check_day(
    now: datetime, as_of: datetime, *, field: str = "date", location: str = "body"
) -> None:
    """Refuse a decision on a day before the model's history cut-off ``as_of``: its
    features, scores and reasons would use history that was not known that day
    (a plan for June quoting a visit of July)."""
    if now.astimezone(UTC).date() < as_of.date():
        raise InvalidRequestError(
            field,
            f"{now.astimezone(UTC):%Y-%m-%d} (UTC) is before the served model's history ends "
            f"({as_of:%Y-%m-%d %H:%M} UTC): its scores and reasons would use what was not "
            f"known that day; ask for {as_of:%Y-%m-%d} or later",
            location=location,
        )


def _naive(moment: datetime) -> datetime:
    """UTC wall time without tzinfo, the convention of the catalog's approval dates."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
