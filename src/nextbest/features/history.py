"""Point-in-time history features per HCP x channel and HCP x topic.

Every feature of a query ``(hcp, t)`` is computed from the events of that HCP with
``timestamp < t`` only, so a feature at time ``t`` never changes when rows at or
after ``t`` are added. All counting is done with sorted keys and
``np.searchsorted`` (no Python loop per row): an event key is
``hcp_code * SPAN + seconds``, and "events of this HCP before t" is the slice
between ``searchsorted(key(hcp, 0))`` and ``searchsorted(key(hcp, t))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# Seconds in one key slot: about 544 years, so no HCP's events spill into the next.
SPAN = np.int64(1) << np.int64(34)
SMOOTHING = 2.0  # pseudo-touches pulling a sparse engagement rate towards the prior
DAY = 86_400
FATIGUE_WINDOWS_DAYS = (7, 30)
EFFECT = "eng_effect"
# How long a moved history waits for a contact's engagement before it counts the
# contact in the HCP's records as not engaged (see HistoryFeaturizer.advance).
ENGAGEMENT_WAIT_DAYS = 3


@dataclass(frozen=True)
class EventLog:
    """Past decisions as flat arrays, in any order.

    Shapes: all arrays are ``(n_events,)``. ``hcp`` are integer codes into the
    HCP table, ``seconds`` are Unix seconds, ``channel``/``topic`` are codes into
    the feature space's vocabularies (``-1`` for a no-touch decision), ``engaged``
    is 0/1 and ``outcome`` is NaN when unknown.
    """

    hcp: np.ndarray
    seconds: np.ndarray
    channel: np.ndarray
    topic: np.ndarray
    engaged: np.ndarray
    outcome: np.ndarray


@dataclass(frozen=True)
class EngagementCounts:
    """Engaged decisions and touches, overall and per channel and topic code.

    Sums of 0/1 values, so counts of parts of a log add up to the whole log's
    exactly, whatever the order.
    """

    engaged: float
    touches: float
    channel_engaged: np.ndarray
    channel_touches: np.ndarray
    topic_engaged: np.ndarray
    topic_touches: np.ndarray

    def __add__(self, other: EngagementCounts) -> EngagementCounts:
        return EngagementCounts(
            engaged=self.engaged + other.engaged,
            touches=self.touches + other.touches,
            channel_engaged=self.channel_engaged + other.channel_engaged,
            channel_touches=self.channel_touches + other.channel_touches,
            topic_engaged=self.topic_engaged + other.topic_engaged,
            topic_touches=self.topic_touches + other.topic_touches,
        )


@dataclass(frozen=True)
class Touches:
    """Contacts as flat arrays, each ``(n,)`` int64: ``hcp`` codes into the HCP
    table, ``channel`` codes into the feature space's channels, ``seconds`` Unix
    seconds. What :meth:`HistoryFeaturizer.advance` moves a snapshot with.

    ``topic`` (codes into the feature space's topics, -1: none known) and
    ``engaged_at`` (Unix seconds of the contact's first engagement, -1: none) let
    it move the HCPs' records as well; None: not known (the records stay)."""

    hcp: np.ndarray
    channel: np.ndarray
    seconds: np.ndarray
    topic: np.ndarray | None = None
    engaged_at: np.ndarray | None = None

    def engaged_within(
        self, wait: int = ENGAGEMENT_WAIT_DAYS * DAY, *, before: int | None = None
    ) -> np.ndarray:
        """``(n,)`` bool: each contact engaged within ``wait`` seconds of it (and, given
        ``before``, Unix seconds, before then), which is what a moved history counts
        engaged (a later engagement is left to a retrain). Raises ValueError without
        ``engaged_at``."""
        if self.engaged_at is None:
            raise ValueError("these touches do not know their engagement (engaged_at)")
        engaged = (self.engaged_at >= 0) & (self.engaged_at < self.seconds + wait)
        return engaged if before is None else engaged & (self.engaged_at < before)

    @classmethod
    def of(cls, log: EventLog, start: int, end: int) -> Touches:
        """The touches of ``log`` (decisions with a channel) at ``start <= t < end``."""
        kept = (log.channel >= 0) & (log.seconds >= start) & (log.seconds < end)
        return cls(
            hcp=log.hcp[kept].astype(np.int64),
            channel=log.channel[kept].astype(np.int64),
            seconds=log.seconds[kept].astype(np.int64),
        )


@dataclass
class _SortedGroup:
    keys: np.ndarray
    engaged_cum: np.ndarray  # cumulative engaged count, with a leading 0
    seconds: np.ndarray


def _key(hcp: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    return hcp.astype(np.int64) * SPAN + np.clip(seconds.astype(np.int64), 0, SPAN - 1)


def _group(mask: np.ndarray, log: EventLog) -> _SortedGroup:
    keys = _key(log.hcp[mask], log.seconds[mask])
    order = np.argsort(keys, kind="stable")
    engaged = log.engaged[mask][order].astype(np.float64)
    return _SortedGroup(
        keys=keys[order],
        engaged_cum=np.concatenate([[0.0], np.cumsum(engaged)]),
        seconds=log.seconds[mask][order].astype(np.int64),
    )


@dataclass
class HistoryFeaturizer:
    """Computes history features for ``(hcp, t)`` queries from an :class:`EventLog`.

    ``channels`` and ``topics`` fix the column layout; ``priors`` hold the global
    engagement rate per channel and topic used for smoothing (learned by ``fit``).
    """

    channels: tuple[str, ...]
    topics: tuple[str, ...]
    channel_prior_: np.ndarray = field(default_factory=lambda: np.zeros(0))
    topic_prior_: np.ndarray = field(default_factory=lambda: np.zeros(0))
    overall_prior_: float = 0.0
    # Whether the block ends with the effect columns (False in artifacts from before them).
    effects: bool = False

    PER_CHANNEL = ("touches", "eng_rate", "days_since", "touches_7d", "touches_30d")
    PER_TOPIC = ("touches", "eng_rate")
    OVERALL = (
        "decisions",
        "touches",
        "days_since_touch",
        "outcome_mean",
        "outcome_mean_untouched",
        "eng_rate",
        "eng_excess",
        "outcome_mean_unengaged",
    )

    def fit(self, log: EventLog) -> HistoryFeaturizer:
        """Learn the smoothing priors (global engagement rate per channel and topic)."""
        return self.fit_counts(self.engagement_counts(log))

    def engagement_counts(self, log: EventLog) -> EngagementCounts:
        """What :meth:`fit` learns from, as sums that add up across parts of a log."""
        touched = log.channel >= 0

        def tally(codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
            inside = codes >= 0
            return (
                np.bincount(codes[inside], weights=log.engaged[inside], minlength=n),
                np.bincount(codes[inside], minlength=n).astype(np.float64),
            )

        channel_engaged, channel_touches = tally(log.channel, len(self.channels))
        topic_engaged, topic_touches = tally(log.topic, len(self.topics))
        return EngagementCounts(
            engaged=float(log.engaged[touched].sum()),
            touches=float(touched.sum()),
            channel_engaged=channel_engaged,
            channel_touches=channel_touches,
            topic_engaged=topic_engaged,
            topic_touches=topic_touches,
        )

    def fit_counts(self, counts: EngagementCounts) -> HistoryFeaturizer:
        """Learn the priors from :meth:`engagement_counts` (of one log or summed over parts)."""
        overall = counts.engaged / counts.touches if counts.touches else 0.0
        self.overall_prior_ = overall
        self.channel_prior_ = _rates(counts.channel_engaged, counts.channel_touches, overall)
        self.topic_prior_ = _rates(counts.topic_engaged, counts.topic_touches, overall)
        return self

    @property
    def feature_names(self) -> list[str]:
        names = [f"{c}__{f}" for c in self.channels for f in self.PER_CHANNEL]
        names += [f"topic_{t}__{f}" for t in self.topics for f in self.PER_TOPIC]
        names += [f"all__{f}" for f in self.OVERALL]
        return names + self.effect_names

    @property
    def effect_names(self) -> list[str]:
        """The per-HCP engagement effect columns (:class:`EngagementEffects`), last in
        the block: one per channel, then one per topic. ``transform`` leaves them
        missing; training fills them in."""
        if not getattr(self, "effects", False):
            return []
        return [f"{c}__{EFFECT}" for c in self.channels] + [
            f"topic_{t}__{EFFECT}" for t in self.topics
        ]

    def column(self, name: str) -> int:
        return self.feature_names.index(name)

    def channel_column(self, feature: str) -> np.ndarray:
        """Column index of ``feature`` for each channel code, shape ``(n_channels,)``."""
        names = self.feature_names
        return np.array([names.index(f"{c}__{feature}") for c in self.channels])

    def topic_column(self, feature: str) -> np.ndarray:
        names = self.feature_names
        return np.array([names.index(f"topic_{t}__{feature}") for t in self.topics])

    def transform(self, log: EventLog, hcp: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        """Features of each query ``(hcp[i], seconds[i])`` from events strictly before it.

        Returns a float32 array of shape ``(n_queries, len(feature_names))``; rates
        without history equal the prior, recencies without history are NaN.
        """
        n = len(hcp)
        out = np.empty((n, len(self.feature_names)), dtype=np.float32)
        start_keys = _key(hcp, np.zeros(n, dtype=np.int64))
        query_keys = _key(hcp, seconds)
        col = 0
        for c in range(len(self.channels)):
            group = _group(log.channel == c, log)
            lo, hi = _before(group, start_keys, query_keys)
            out[:, col] = hi - lo
            out[:, col + 1] = _smoothed_rate(group, lo, hi, self.channel_prior_[c])
            out[:, col + 2] = _days_since(group, lo, hi, seconds)
            for j, days in enumerate(FATIGUE_WINDOWS_DAYS):
                window_keys = _key(hcp, np.maximum(seconds - days * DAY, 0))
                lo_w = np.maximum(np.searchsorted(group.keys, window_keys, side="left"), lo)
                out[:, col + 3 + j] = hi - lo_w
            col += len(self.PER_CHANNEL)
        for t in range(len(self.topics)):
            group = _group(log.topic == t, log)
            lo, hi = _before(group, start_keys, query_keys)
            out[:, col] = hi - lo
            out[:, col + 1] = _smoothed_rate(group, lo, hi, self.topic_prior_[t])
            col += len(self.PER_TOPIC)
        out[:, col : col + len(self.OVERALL)] = self._overall(log, hcp, seconds)
        out[:, col + len(self.OVERALL) :] = np.nan  # the effects: EngagementEffects
        return out

    def advance(
        self,
        history: np.ndarray,
        *,
        as_of: int,
        day: int,
        recent: Touches,
        contacts: Touches,
        moved_to: int | None = None,
        wait: int = ENGAGEMENT_WAIT_DAYS * DAY,
    ) -> np.ndarray:
        """The history rows ``history`` (one per HCP code) of a snapshot cut off at
        ``as_of``, moved on to ``day`` (Unix seconds) by the ``contacts`` since.

        What time and a contact alone tell moves at once: each channel's days since
        its last touch and its touches in the fatigue windows, and the days since any
        touch. The records move when ``contacts`` know their engagement
        (``engaged_at``): each contact counts in its HCP's touches and engagement
        rates (its channel's, its topic's, the overall rate and the engagement excess
        over the channels' priors) and decisions once its engagement has arrived or,
        without one, ``wait`` seconds after it (then as not engaged; an engagement
        later than ``wait`` after the contact is left to a retrain). What a contact
        leads to later (the outcome means) and the engagement effects (they need the
        population model's P(engaged) of each touch) stay those of ``as_of``.

        ``recent`` holds the touches the snapshot counted within the longest fatigue
        window before ``as_of``; ``contacts`` are those from ``as_of`` on (others are
        left out: the snapshot has those before, and those from ``day`` on are not
        known at its start). ``moved_to``: the day ``history`` was already moved to
        (None: ``as_of``), so a snapshot moves on day by day with the same
        ``contacts`` from ``as_of``. Returns a new float32 array shaped like
        ``history``.
        """
        start = as_of if moved_to is None else moved_to
        if day < start:
            raise ValueError(f"cannot move history back: day {day} is before {start}")
        n, n_channels = len(history), len(self.channels)
        out = np.array(history, dtype=np.float32, copy=True)
        elapsed = (day - start) / DAY
        new = (contacts.seconds >= as_of) & (contacts.seconds < day)
        new &= (contacts.hcp >= 0) & (contacts.hcp < n)
        new &= (contacts.channel >= 0) & (contacts.channel < n_channels)
        hcp, channel, seconds = contacts.hcp[new], contacts.channel[new], contacts.seconds[new]
        cell = hcp * n_channels + channel
        flat = np.full(n * n_channels, -1, dtype=np.int64)
        np.maximum.at(flat, cell, seconds)
        newest = flat.reshape(n, n_channels)
        # Gaps: the snapshot's, older by the days since, unless a contact is newer.
        since = self.channel_column("days_since")
        gaps = out[:, since] + np.float32(elapsed)
        touched = newest >= 0
        gaps[touched] = ((day - newest[touched]) / DAY).astype(np.float32)
        out[:, since] = gaps
        overall = self.column("all__days_since_touch")
        any_touch = touched.any(axis=1)
        gap = out[:, overall] + np.float32(elapsed)
        gap[any_touch] = ((day - newest.max(axis=1)[any_touch]) / DAY).astype(np.float32)
        out[:, overall] = gap
        # Windows: the touches within each at ``day``, from the snapshot's recent ones
        # (at most the longest window before ``as_of``) and the contacts since.
        window_hcp = np.concatenate([recent.hcp, hcp])
        window_channel = np.concatenate([recent.channel, channel])
        window_seconds = np.concatenate([recent.seconds, seconds])
        keep = (window_hcp >= 0) & (window_hcp < n) & (window_seconds < day)
        for j, days in enumerate(FATIGUE_WINDOWS_DAYS):
            inside = keep & (window_seconds >= day - days * DAY)
            counts = np.bincount(
                window_hcp[inside] * n_channels + window_channel[inside],
                minlength=n * n_channels,
            )
            out[:, self.channel_column(self.PER_CHANNEL[3 + j])] = counts.reshape(n, n_channels)
        if contacts.engaged_at is not None and contacts.topic is not None:
            engaged_at = contacts.engaged_at[new]
            engaged = contacts.engaged_within(wait)[new]
            # Counted from the second after its engagement (an engagement reported as
            # before the contact: at it), or once the wait is over.
            known = np.where(engaged, np.maximum(engaged_at, seconds) + 1, seconds + wait)
            counted = (known <= day) & (known > start)
            self._count(
                out,
                hcp[counted],
                channel[counted],
                contacts.topic[new][counted],
                engaged[counted].astype(np.float64),
            )
        return out

    def _count(
        self,
        out: np.ndarray,
        hcp: np.ndarray,
        channel: np.ndarray,
        topic: np.ndarray,
        engaged: np.ndarray,
    ) -> None:
        """Add contacts (``hcp``, ``channel`` and ``topic`` codes, ``engaged`` 0/1, each
        ``(k,)``) to the records of the history rows ``out`` in place. A smoothed rate
        ``r`` over ``T`` touches holds ``r (T + S) - S p`` engagements (``S`` the
        pseudo-touches at the prior ``p``), so with ``k`` more of which ``e`` engaged
        it becomes ``(r (T + S) + e) / (T + k + S)``, the prior cancelling; the
        engagement excess (engagements less the touches' priors, over ``T + S``) moves
        alike with each touch's channel prior taken off."""
        n = len(out)

        def move(touches_cols: np.ndarray, rate_cols: np.ndarray, codes: np.ndarray) -> None:
            width = len(touches_cols)
            inside = codes >= 0
            cell = hcp[inside] * width + codes[inside]
            k = np.bincount(cell, minlength=n * width).reshape(n, width)
            e = np.bincount(cell, weights=engaged[inside], minlength=n * width).reshape(n, width)
            touches = out[:, touches_cols].astype(np.float64)
            rate = out[:, rate_cols].astype(np.float64)
            out[:, rate_cols] = (rate * (touches + SMOOTHING) + e) / (touches + k + SMOOTHING)
            out[:, touches_cols] = touches + k

        everyone = np.zeros(len(hcp), dtype=np.int64)
        # The excess first: it reads the touches before they move.
        touches = out[:, self.column("all__touches")].astype(np.float64)
        excess = self.column("all__eng_excess")
        gain = np.bincount(hcp, weights=engaged - self.channel_prior_[channel], minlength=n)
        k = np.bincount(hcp, minlength=n)
        out[:, excess] = (out[:, excess] * (touches + SMOOTHING) + gain) / (touches + k + SMOOTHING)
        decisions = self.column("all__decisions")
        out[:, decisions] = out[:, decisions] + k
        move(
            np.array([self.column("all__touches")]),
            np.array([self.column("all__eng_rate")]),
            everyone,
        )
        move(self.channel_column("touches"), self.channel_column("eng_rate"), channel)
        move(self.topic_column("touches"), self.topic_column("eng_rate"), topic)

    def _overall(self, log: EventLog, hcp: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        n = len(hcp)
        res = np.full((n, len(self.OVERALL)), np.nan, dtype=np.float64)
        start_keys = _key(hcp, np.zeros(n, dtype=np.int64))
        query_keys = _key(hcp, seconds)

        lo, hi = _before(_group(np.ones(len(log.hcp), dtype=bool), log), start_keys, query_keys)
        res[:, 0] = hi - lo

        touched = _group(log.channel >= 0, log)
        lo_t, hi_t = _before(touched, start_keys, query_keys)
        res[:, 1] = hi_t - lo_t
        res[:, 2] = _days_since(touched, lo_t, hi_t, seconds)

        res[:, 3] = _mean_outcome(np.ones(len(log.hcp), dtype=bool), log, start_keys, query_keys)
        res[:, 4] = _mean_outcome(log.channel < 0, log, start_keys, query_keys)

        # The "engager" tendency pooled over every channel: engagements against
        # what the channels touched would give an average HCP (each touch's prior).
        engaged = touched.engaged_cum[hi_t] - touched.engaged_cum[lo_t]
        touches = hi_t - lo_t
        res[:, 5] = _smoothed_rate(touched, lo_t, hi_t, self.overall_prior_)
        prior = (
            self.channel_prior_[log.channel[log.channel >= 0]] if len(self.channel_prior_) else 0
        )
        expected = _cumulative(log.channel >= 0, log, np.asarray(prior, dtype=np.float64))
        res[:, 6] = (engaged - (expected[hi_t] - expected[lo_t])) / (touches + SMOOTHING)
        # Outcome when no touch engaged: the HCP's own baseline, measured on many
        # more periods than the untouched ones alone.
        res[:, 7] = _mean_outcome(log.engaged == 0, log, start_keys, query_keys)
        return res


@dataclass
class EngagementEffects:
    """Per-HCP engagement effects on the logit scale, one per channel and one per topic.

    A random-intercept view of engagement: the logit of P(engaged) is a population
    model's (one that does not see the HCP's engagement history) plus the HCP's
    effect on the touch's channel plus the one on its topic. Each effect is the
    empirical-Bayes shrunk sum of the HCP's residuals on that channel (topic) before
    the query time, ``S / (V + 1 / s2)``: ``S`` the engagements minus the population
    P(engaged) ``p`` of those touches, ``V`` the sum of ``p (1 - p)`` (the first
    Newton step of a normal-prior logistic intercept from 0), ``s2`` the variance of
    the effects between HCPs, by the method of moments over whole HCPs'
    sums, ``sum(S^2 - V) / sum(V^2)`` (at least 0: no spread beyond noise, no effect).

    Both are bounded by the HCP's own rate (:func:`_rate_gap`, the logit of its
    smoothed engagement rate minus that of its touches' mean ``p``): ``s2`` by the
    mean square of the HCPs' gaps, each effect to between 0 and its gap. Where the
    population model is calibrated neither binds; where its ``p`` nears 0 or 1,
    ``V`` does too and the step alone ran to thousands on the logit scale.

    ``log`` holds the touches the effects are learned from, ``prior`` ``(n_events,)``
    their population P(engaged).
    """

    n_channels: int
    n_topics: int
    channel_variance_: np.ndarray = field(default_factory=lambda: np.zeros(0))
    topic_variance_: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def fit(self, log: EventLog, prior: np.ndarray) -> EngagementEffects:
        """Learn ``s2`` per channel and per topic from every HCP's sums over ``log``."""
        residual, info = log.engaged - prior, prior * (1.0 - prior)

        def variance(codes: np.ndarray, n: int) -> np.ndarray:
            out = np.zeros(n)
            for c in range(n):
                mine = codes == c
                S = np.bincount(log.hcp[mine], weights=residual[mine])
                V = np.bincount(log.hcp[mine], weights=info[mine])
                if (V * V).sum() > 0:
                    moments = max(0.0, float((S * S - V).sum() / (V * V).sum()))
                    touches = np.bincount(log.hcp[mine])
                    expected = np.bincount(log.hcp[mine], weights=prior[mine])
                    seen = touches > 0
                    gap = _rate_gap(S[seen], expected[seen], touches[seen])
                    out[c] = min(moments, float(np.mean(gap * gap)))
            return out

        self.channel_variance_ = variance(log.channel, self.n_channels)
        self.topic_variance_ = variance(log.topic, self.n_topics)
        return self

    def transform(
        self, log: EventLog, prior: np.ndarray, hcp: np.ndarray, seconds: np.ndarray
    ) -> np.ndarray:
        """Effects of each query ``(hcp[i], seconds[i])`` from the touches of ``log``
        strictly before it, ``(n_queries, n_channels + n_topics)`` float32 (the
        columns of :attr:`HistoryFeaturizer.effect_names`); 0 without touches."""
        n = len(hcp)
        out = np.zeros((n, self.n_channels + self.n_topics), dtype=np.float32)
        start_keys = _key(hcp, np.zeros(n, dtype=np.int64))
        query_keys = _key(hcp, seconds)
        residual, info = log.engaged - prior, prior * (1.0 - prior)
        columns = [(log.channel, c, self.channel_variance_[c]) for c in range(self.n_channels)]
        columns += [(log.topic, t, self.topic_variance_[t]) for t in range(self.n_topics)]
        for j, (codes, code, s2) in enumerate(columns):
            if s2 <= 0:
                continue
            mine = codes == code
            S = _cumulative(mine, log, residual[mine])
            V = _cumulative(mine, log, info[mine])
            P = _cumulative(mine, log, prior[mine])
            keys = np.sort(_key(log.hcp[mine], log.seconds[mine]), kind="stable")
            lo = np.searchsorted(keys, start_keys, side="left")
            hi = np.searchsorted(keys, query_keys, side="left")
            residuals = S[hi] - S[lo]
            step = s2 * residuals / (s2 * (V[hi] - V[lo]) + 1.0)
            # The Newton step from 0 is S / V at most, unbounded where the population
            # P(engaged) nears 0 or 1 (V near 0); shrunk, an effect lies between 0
            # and the gap its own smoothed rate shows.
            gap = _rate_gap(residuals, P[hi] - P[lo], hi - lo)
            out[:, j] = np.clip(step, np.minimum(gap, 0.0), np.maximum(gap, 0.0))
        return out


def _rate_gap(residual: np.ndarray, expected: np.ndarray, touches: np.ndarray) -> np.ndarray:
    """The logit of an HCP's smoothed engagement rate on its touches (engagements
    ``residual + expected``, :data:`SMOOTHING` pseudo-touches at their mean population
    P(engaged) ``expected / touches``) minus that mean's logit; 0 without touches.

    Where every touch has the same population P(engaged) it is the maximum-likelihood
    logit effect with those pseudo-touches added: finite, however near 0 or 1 the
    population P(engaged) or the HCP's own rate."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(touches > 0, expected / np.maximum(touches, 1), 0.5)
    rate = (residual + expected + SMOOTHING * mean) / (touches + SMOOTHING)
    mean = np.clip(mean, 1e-12, 1 - 1e-12)
    rate = np.clip(rate, 1e-12, 1 - 1e-12)
    gap = np.log(rate / (1.0 - rate)) - np.log(mean / (1.0 - mean))
    return np.asarray(np.where(touches > 0, gap, 0.0))


def _before(
    group: _SortedGroup, start_keys: np.ndarray, query_keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)``, each ``(n_queries,)``: the events of ``group`` from each query's
    HCP strictly before its time are ``group``'s positions ``lo`` to ``hi - 1``."""
    return (
        np.searchsorted(group.keys, start_keys, side="left"),
        np.searchsorted(group.keys, query_keys, side="left"),
    )


def _smoothed_rate(group: _SortedGroup, lo: np.ndarray, hi: np.ndarray, prior: float) -> np.ndarray:
    """Engagements per touch of the events ``lo`` to ``hi - 1`` of ``group``, pulled
    towards ``prior`` by :data:`SMOOTHING` pseudo-touches (the prior with no touch)."""
    return (group.engaged_cum[hi] - group.engaged_cum[lo] + SMOOTHING * prior) / (
        hi - lo + SMOOTHING
    )


def _cumulative(mask: np.ndarray, log: EventLog, values: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``values`` (one per masked event) in the masked group's key order."""
    keys = _key(log.hcp[mask], log.seconds[mask])
    order = np.argsort(keys, kind="stable")
    return np.concatenate([[0.0], np.cumsum(np.broadcast_to(values, keys.shape)[order])])


def _rates(engaged: np.ndarray, touches: np.ndarray, default: float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(touches > 0, engaged / np.maximum(touches, 1), default)


def _days_since(
    group: _SortedGroup, lo: np.ndarray, hi: np.ndarray, seconds: np.ndarray
) -> np.ndarray:
    has = hi > lo
    last = group.seconds[np.maximum(hi - 1, 0)] if len(group.seconds) else np.zeros(len(hi))
    return np.where(has, (seconds - last) / DAY, np.nan)


def _mean_outcome(
    mask: np.ndarray, log: EventLog, start_keys: np.ndarray, query_keys: np.ndarray
) -> np.ndarray:
    mask = mask & ~np.isnan(log.outcome)
    keys = _key(log.hcp[mask], log.seconds[mask])
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    cum = np.concatenate([[0.0], np.cumsum(log.outcome[mask][order])])
    lo = np.searchsorted(keys, start_keys, side="left")
    hi = np.searchsorted(keys, query_keys, side="left")
    count = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (cum[hi] - cum[lo]) / np.maximum(count, 1), np.nan)


def event_log(
    interactions: pd.DataFrame,
    *,
    hcp_index: pd.Index,
    channels: tuple[str, ...],
    topics: tuple[str, ...],
    action_topic: pd.Series,
) -> EventLog:
    """Turn contract-shaped ``interactions`` into an :class:`EventLog`.

    ``hcp_index`` maps ``hcp_id`` to its row code; ``action_topic`` maps
    ``action_id`` to its topic. Channels or topics outside the vocabularies get -1.
    """
    hcp_codes = hcp_index.get_indexer(pd.Index(interactions["hcp_id"]))
    if (hcp_codes < 0).any():
        unknown = interactions["hcp_id"][hcp_codes < 0].iloc[0]
        raise ValueError(f"interactions refer to hcp_id {unknown!r} that is not in hcps")
    channel = pd.Categorical(interactions["channel"], categories=list(channels)).codes
    topic_names = interactions["action_id"].map(action_topic)
    topic = pd.Categorical(topic_names, categories=list(topics)).codes
    seconds = interactions["timestamp"].to_numpy(dtype="datetime64[s]").astype(np.int64)
    outcome = (
        interactions["outcome"].to_numpy(dtype=np.float64)
        if "outcome" in interactions
        else np.full(len(interactions), np.nan)
    )
    return EventLog(
        hcp=hcp_codes.astype(np.int64),
        seconds=seconds,
        channel=np.asarray(channel, dtype=np.int64),
        topic=np.asarray(topic, dtype=np.int64),
        engaged=interactions["engaged"].to_numpy(dtype=np.float64),
        outcome=outcome,
    )
