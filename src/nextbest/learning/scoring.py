"""The served artifact: everything needed to score (HCP, action) pairs quickly.

A :class:`ScoringModel` bundles the fitted feature space, the preference and
uplift models, a snapshot of every HCP's attributes and history at the
training cut-off, and the catalog. Scoring a block of pairs builds the rows with
numpy only (no pandas) and makes one LightGBM call per model, or for one
request's candidates a single call for the leaves of all the models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nextbest.features.history import ENGAGEMENT_WAIT_DAYS, FATIGUE_WINDOWS_DAYS, Touches
from nextbest.features.space import ACTION_ID_COLUMN, FeatureSpace
from nextbest.learning.levers import Levers
from nextbest.learning.preference import CalibratedEngagementClassifier
from nextbest.learning.uplift import EngagementStratifiedUplift, Paths, RowTerms

# The layout of a pickled ScoringModel (its fields and those of the learners it
# holds). Bump it whenever a change makes older pickles unusable, so a registry
# version from before the change is refused with a clear message, not a traceback.
ARTIFACT_FORMAT = 1

# Blocks whose leaves number at most this many (rows x trees of the uplift model)
# keep them (see ScoringModel.score_rows): 16 MB at most, one request's
# candidates even on a model of thousands of trees, not a batch's.
PATH_CELLS = 2_000_000

# A channel or topic with fewer fitted touches than this has no estimate of its own:
# LightGBM puts a category with fewer rows than its ``min_data_per_group`` (default
# 100) in with others when it splits, so the action's scores would be borrowed from
# other channels or topics. Such actions are not scored (see ActionEvidence).
MIN_TOUCHES_TO_SCORE = 100

UPLIFT_MODEL = "uplift_model"
PREFERENCE_X_VALUE = "preference_x_value"


class Scores:
    """Per-pair model outputs, each of shape ``(n_pairs,)``.

    ``gains``: the uplift model's (g_1, g_0), kept so reasons need not predict them
    again; ``terms``: its per-pair gain scale and shrinking centre
    (:class:`~nextbest.learning.uplift.RowTerms`), kept so reasons need not work them
    out again (None: not kept, as in a cache's stored scores). ``paths``: the leaves
    the pairs reached in the uplift model's trees, kept (for blocks of at most
    PATH_CELLS leaves) so reasons need not ask LightGBM for them again. ``rows``:
    the pairs' model rows ``(n_pairs, n_features)``, kept with the leaves so the
    reasons of the served items need not build them again.

    ``row_of`` (n_pairs,): which of ``paths``' and ``rows``' entries each pair's are,
    when pairs share a model row (copies of content, :meth:`ScoringModel.score`);
    None: one entry per pair, in order. Reading :attr:`paths` or :attr:`rows` gives
    one entry per pair either way; the shared entries are copied out per pair only
    when read or taken, which for one request is its few served items rather than
    its hundred candidates.
    """

    __slots__ = ("_paths", "_row_of", "_rows", "gains", "p_engage", "terms", "uplift")

    def __init__(
        self,
        p_engage: np.ndarray,
        uplift: np.ndarray,
        gains: tuple[np.ndarray, np.ndarray] | None = None,
        paths: Paths | None = None,
        rows: np.ndarray | None = None,
        *,
        row_of: np.ndarray | None = None,
        terms: RowTerms | None = None,
    ) -> None:
        self.p_engage = p_engage
        self.uplift = uplift
        self.gains = gains
        self.terms = terms
        self._paths = paths
        self._rows = rows
        self._row_of = row_of

    @property
    def row_of(self) -> np.ndarray | None:
        """Per pair, its entry in the shared leaves and rows (None: its own, in order)."""
        return self._row_of

    @property
    def paths(self) -> Paths | None:
        if self._paths is None or self._row_of is None:
            return self._paths
        return self._paths.take(self._row_of)

    @property
    def rows(self) -> np.ndarray | None:
        if self._rows is None or self._row_of is None:
            return self._rows
        return self._rows[self._row_of]

    def take(self, index: np.ndarray) -> Scores:
        """The scores of the pairs at ``index``."""
        gains = None if self.gains is None else (self.gains[0][index], self.gains[1][index])
        at = index if self._row_of is None else self._row_of[index]
        return Scores(
            p_engage=self.p_engage[index],
            uplift=self.uplift[index],
            gains=gains,
            paths=None if self._paths is None else self._paths.take(at),
            rows=None if self._rows is None else self._rows[at],
            terms=None if self.terms is None else self.terms.take(index),
        )

    def spread(self, row_of: np.ndarray) -> Scores:
        """The scores of pairs that share these rows' outputs: pair ``i`` gets row
        ``row_of[i]``'s. The leaves and model rows stay shared (see ``row_of``)."""
        if self._row_of is not None:
            row_of = self._row_of[row_of]
        gains = None if self.gains is None else (self.gains[0][row_of], self.gains[1][row_of])
        return Scores(
            p_engage=self.p_engage[row_of],
            uplift=self.uplift[row_of],
            gains=gains,
            paths=self._paths,
            rows=self._rows,
            row_of=row_of,
            terms=None if self.terms is None else self.terms.take(row_of),
        )


@dataclass(frozen=True)
class ActionEvidence:
    """What the fitted history says about each catalog action, shape ``(n_actions,)``.

    ``unscored``: the action's channel or topic had fewer than
    :data:`MIN_TOUCHES_TO_SCORE` fitted touches, so the model has no estimate for it
    (a new channel, a new topic) and it is never served; ``why`` says so per action
    ('' for the others). ``new``: scored, but no touch of the action itself was
    fitted (new content on a known channel and topic): its estimate comes from its
    channel, topic and the HCP, and its reasons say so.
    """

    unscored: np.ndarray
    why: tuple[str, ...]
    new: np.ndarray
    # The channels and topics too thin to score, as notes name them: "channel sms (0)".
    thin: tuple[str, ...] = ()
    # Per action, the catalog row whose identity a new one is scored with (-1: its
    # own). LightGBM sends an action id it never saw down the "other" side of every
    # split on the id, an arbitrary bonus or penalty (a copy of an e-mail scored 50%
    # above its twin): new content borrows the identity of the measured content most
    # like it (_stand_ins) and keeps its own channel, topic, purpose and cost.
    stand_in: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @classmethod
    def of(cls, catalog: pd.DataFrame, touches: np.ndarray | None) -> ActionEvidence:
        """From each action's count of fitted touches (None: a model trained before
        the counts were kept, whose actions are all taken as measured)."""
        n = len(catalog)
        if touches is None:
            none = np.zeros(n, dtype=bool)
            return cls(none, ("",) * n, none, stand_in=np.full(n, -1, dtype=np.int64))
        counts = np.asarray(touches, dtype=np.int64)
        why = [""] * n
        thin = []
        for column in ("channel", "topic"):
            names = catalog[column].astype(str).tolist()
            per_name: dict[str, int] = {}
            for name, count in zip(names, counts.tolist(), strict=True):
                per_name[name] = per_name.get(name, 0) + count
            few = {name: total for name, total in per_name.items() if total < MIN_TOUCHES_TO_SCORE}
            thin += [f"{column} {name} ({total:,})" for name, total in sorted(few.items())]
            for j, name in enumerate(names):
                if name in few and not why[j]:
                    why[j] = (
                        f"not scored: the model was fitted on {few[name]:,} touch(es) on its "
                        f"{column} {name} (needs {MIN_TOUCHES_TO_SCORE}), too few to estimate its "
                        "effect; retrain once the interactions hold more (a pilot campaign's sends)"
                    )
        unscored = np.array([bool(w) for w in why], dtype=bool)
        new = ~unscored & (counts == 0)
        return cls(unscored, tuple(why), new, tuple(thin), _stand_ins(catalog, counts, new))

    def notes(self, catalog: pd.DataFrame) -> list[str]:
        """For people: the actions never served for want of evidence, and the new ones."""
        notes = []
        ids = catalog["action_id"].astype(str).to_numpy()
        if self.unscored.any():
            notes.append(
                f"{int(self.unscored.sum()):,} action(s) are not scored, so never served: "
                f"fewer than {MIN_TOUCHES_TO_SCORE} fitted touches, too few to estimate an "
                f"effect, on {listed(list(self.thin))}: {listed(sorted(ids[self.unscored]))}; "
                "add a pilot campaign's sends to the interactions, then retrain"
            )
        if self.new.any():
            notes.append(
                f"{int(self.new.sum()):,} action(s) have no fitted touch of their own (new "
                "content): they are scored from their channel, topic and the HCP, and their "
                f"reasons say so: {listed(sorted(ids[self.new]))}"
            )
        return notes


def _stand_ins(catalog: pd.DataFrame, counts: np.ndarray, new: np.ndarray) -> np.ndarray:
    """For each new action, the measured action most like it: of its channel, topic
    and purpose (else channel and topic, else channel), the one nearest in cost, the
    most touched among equals (a copy of content borrows its original); -1 for the
    others and where none."""
    stand_in = np.full(len(catalog), -1, dtype=np.int64)
    channel = catalog["channel"].astype(str).to_numpy()
    topic = catalog["topic"].astype(str).to_numpy()
    purpose = catalog["content_type"].astype(str).to_numpy()
    cost = catalog["cost"].to_numpy(dtype=np.float64)
    touched = counts > 0
    for j in np.flatnonzero(new):
        same_channel = touched & (channel == channel[j])
        same_topic = same_channel & (topic == topic[j])
        for kin in (same_topic & (purpose == purpose[j]), same_topic, same_channel):
            if kin.any():
                rows = np.flatnonzero(kin)
                # Nearest cost first, then most touches, then catalog order.
                order = np.lexsort((rows, -counts[rows], np.abs(cost[rows] - cost[j])))
                stand_in[j] = int(rows[order[0]])
                break
    return stand_in


def _first_alike(*blocks: np.ndarray) -> np.ndarray:
    """For each row (an action), the first row whose values in every block are byte for
    byte its own (NaN alike), shape ``(n_rows,)`` int64; itself when none comes before."""
    first: dict[bytes, int] = {}
    parts = [np.ascontiguousarray(block).reshape(len(block), -1) for block in blocks]
    keys = (b"".join(part[j].tobytes() for part in parts) for j in range(len(parts[0])))
    return np.array([first.setdefault(key, j) for j, key in enumerate(keys)], dtype=np.int64)


def _distinct_pairs(
    hcp_rows: np.ndarray, twins: np.ndarray, n_actions: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The distinct model rows of pairs ``(hcp_rows, twins)`` (``twins``: each pair's
    ``action_twin``), in order of HCP then twin, as ``(hcp rows, twin rows, inverse)``
    with ``inverse`` (n_pairs,) each pair's place among them; None when every pair is
    distinct.

    A twin stands for each action it is the twin of: their model rows and values
    are the same, byte for byte. One HCP's pairs (a request's candidates) are told
    apart by a mark per action, where sorting them (``np.unique``) cost several
    times more."""
    h = int(hcp_rows[0])
    if (hcp_rows == h).all():
        present = np.zeros(n_actions, dtype=bool)
        present[twins] = True
        rows = np.flatnonzero(present)
        if len(rows) == len(twins):
            return None
        inverse = (np.cumsum(present) - 1)[twins]
        return np.full(len(rows), h, dtype=hcp_rows.dtype), rows, inverse
    pair = hcp_rows.astype(np.int64) * n_actions + twins
    keys, inverse = np.unique(pair, return_inverse=True)
    if len(keys) == len(pair):
        return None
    return keys // n_actions, keys % n_actions, inverse.reshape(-1)


def utc_timestamp(stamp: pd.Timestamp) -> pd.Timestamp:
    """``stamp`` in UTC (a naive one read as UTC, as the history's times are)."""
    stamp = pd.Timestamp(stamp)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _seconds(stamp: pd.Timestamp) -> int:
    return int(utc_timestamp(stamp).value // 10**9)


def _unix_seconds(stamps: pd.Series) -> np.ndarray:
    """``(n,)`` int64 Unix seconds of ``stamps`` (naive: UTC), -1 where missing."""
    stamps = pd.to_datetime(stamps, utc=True)
    seconds = stamps.to_numpy(dtype="datetime64[s]").astype(np.int64)
    return np.where(stamps.isna().to_numpy(), -1, seconds)


def listed(names: list[str], shown: int = 5) -> str:
    """The first ``shown`` of ``names``, then how many more: ``A1, A2 and 3 more``."""
    more = f" and {len(names) - shown:,} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


@dataclass
class ScoringModel:
    """A trained model plus the snapshot it scores against."""

    space: FeatureSpace
    engagement: CalibratedEngagementClassifier
    uplift_model: EngagementStratifiedUplift | None
    uplift_source: str
    value_per_engagement: dict[str, float]
    hcps: pd.DataFrame
    catalog: pd.DataFrame
    hcp_attrs: np.ndarray
    hcp_history: np.ndarray
    as_of: pd.Timestamp
    metadata: dict[str, Any] = field(default_factory=dict)
    levers: Levers = field(default_factory=Levers)
    # Fitted touches per catalog action (see ActionEvidence); None in older artifacts.
    action_touches: np.ndarray | None = None
    # The history's touches within the longest fatigue window before ``as_of``, what
    # ``advanced`` moves the windows with; None in artifacts from before it.
    recent_touches: Touches | None = None
    # When ``hcp_history`` is as of, if ``advanced`` moved it past ``as_of`` (else None).
    history_day: pd.Timestamp | None = None

    def __post_init__(self) -> None:
        # Read on every request: a DataFrame's length and a sum over the uplift model's
        # stages cost more than the arithmetic they feed.
        self.n_actions = len(self.catalog)
        self.path_trees = 0 if self.uplift_model is None else self.uplift_model.n_path_trees
        self.hcp_index = pd.Index(self.hcps["hcp_id"])
        self.action_index = pd.Index(self.catalog["action_id"])
        self.evidence = ActionEvidence.of(self.catalog, self.action_touches)
        self.action_attrs = self.space.action_block(self.catalog)
        borrows = self.evidence.stand_in >= 0
        self.action_attrs[borrows, ACTION_ID_COLUMN] = self.action_attrs[
            self.evidence.stand_in[borrows], ACTION_ID_COLUMN
        ]
        self.cross_cols = self.space.cross_columns(self.catalog)
        channel_codes = pd.Categorical(
            self.catalog["channel"], categories=list(self.space.channels)
        ).codes
        self.action_value = np.array(
            [self.value_per_engagement.get(c, 1.0) for c in self.catalog["channel"]]
        )
        self.action_channel_code = np.asarray(channel_codes, dtype=np.int64)
        self.action_cost = self.catalog["cost"].to_numpy(dtype=np.float64)
        self.action_channel_name = self.catalog["channel"].astype(str).to_numpy()
        self.action_topic_name = self.catalog["topic"].astype(str).to_numpy()
        self.channel_by_action = dict(
            zip(self.catalog["action_id"].astype(str), self.action_channel_name, strict=True)
        )
        self.feature_names = self.space.feature_names
        self.feature_position = {name: j for j, name in enumerate(self.feature_names)}
        self._hcp_text: dict[str, np.ndarray] = {}
        self._hcp_sharing: dict[str, np.ndarray] = {}
        weight, cost_weight, offset = self.levers.per_action(self.catalog)
        self.lever_weight = weight
        # Cost and offset are per action only, so they fold into one term.
        self.lever_charge = self.action_cost * cost_weight - offset
        self.lever_text = self.levers.per_action_text(self.catalog)
        # Actions whose model rows are the same for every HCP (new content scored with
        # its stand-in's identity, of its channel, topic, purpose and cost): each one's
        # first such action. A block of pairs scores each HCP's once (see score).
        self.action_twin = _first_alike(self.action_attrs, self.cross_cols, self.action_value)
        self.has_twins = bool((self.action_twin != np.arange(self.n_actions)).any())

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for derived in (
            "n_actions",
            "path_trees",
            "hcp_index",
            "action_index",
            "action_attrs",
            "cross_cols",
            "action_value",
            "action_channel_code",
            "action_cost",
            "lever_weight",
            "lever_charge",
            "lever_text",
            "action_twin",
            "has_twins",
            "evidence",
            "action_channel_name",
            "action_topic_name",
            "channel_by_action",
            "feature_names",
            "feature_position",
            "_hcp_text",
            "_hcp_sharing",
        ):
            state.pop(derived, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("levers", Levers())  # artifacts from before levers existed
        state.setdefault("action_touches", None)  # and from before touches were counted
        state.setdefault("recent_touches", None)  # and from before snapshots were moved
        state.setdefault("history_day", None)
        self.__dict__.update(state)
        self.__post_init__()

    @property
    def n_hcps(self) -> int:
        return len(self.hcps)

    @property
    def advances(self) -> bool:
        """Whether :meth:`advanced` can move this model's history (artifacts trained
        before the snapshot kept its recent touches cannot)."""
        return self.recent_touches is not None

    @property
    def features_as_of(self) -> pd.Timestamp:
        """When the served history features are as of: the training cut-off, or the
        day :meth:`advanced` moved them to."""
        return self.as_of if self.history_day is None else self.history_day

    @property
    def contacts_needed_from(self) -> pd.Timestamp:
        """The earliest contact (UTC) :meth:`advanced` needs to move this model on: its
        cut-off, or once moved, the longest fatigue window before the day it was moved
        to (every older contact is in its gaps and, its engagement waited for, in its
        records), so a server moving on each day reads a month of contacts, not all
        since the cut-off."""
        as_of = utc_timestamp(self.as_of)
        if self.history_day is None:
            return as_of
        span = pd.Timedelta(days=max(*FATIGUE_WINDOWS_DAYS, ENGAGEMENT_WAIT_DAYS))
        return max(as_of, utc_timestamp(self.history_day) - span)

    def contact_touches(self, contacts: pd.DataFrame) -> Touches:
        """``contacts`` (columns ``hcp_id``, ``channel``, ``timestamp``, and, to move
        the records too, ``action_id`` and ``engaged_at``: when the contact's first
        engagement was, NaT for none) as codes of this model's HCPs, channels and
        topics; rows of an HCP or channel it does not know are left out, an action it
        does not know has no topic."""
        hcp = self.hcp_index.get_indexer(pd.Index(contacts["hcp_id"].astype(str)))
        channel = np.asarray(
            pd.Categorical(contacts["channel"], categories=list(self.space.channels)).codes,
            dtype=np.int64,
        )
        seconds = _unix_seconds(contacts["timestamp"])
        known = (hcp >= 0) & (channel >= 0)
        topic = engaged_at = None
        if {"action_id", "engaged_at"} <= set(contacts.columns):
            history = self.space.history
            assert history is not None, "a trained model's feature space is fitted"
            action = self.action_index.get_indexer(pd.Index(contacts["action_id"].astype(str)))
            action_topic = np.asarray(
                pd.Categorical(self.action_topic_name, categories=list(history.topics)).codes,
                dtype=np.int64,
            )
            topic = np.where(action >= 0, action_topic[action], -1)[known]
            engaged_at = _unix_seconds(contacts["engaged_at"])[known]
        return Touches(
            hcp=hcp[known].astype(np.int64),
            channel=channel[known],
            seconds=seconds[known],
            topic=topic,
            engaged_at=engaged_at,
        )

    def advanced(self, day: pd.Timestamp, contacts: pd.DataFrame) -> ScoringModel:
        """This model with its HCP history features moved on to ``day`` by
        ``contacts``: every HCP's contacts since the cut-off (columns as
        :meth:`contact_touches` reads them, what
        :func:`~nextbest.storage.contacts_between` returns; those outside
        ``as_of <= t < day`` are left out; see
        :meth:`~nextbest.features.history.HistoryFeaturizer.advance` for what moves).
        A model already moved moves on from its :attr:`features_as_of`. The learned
        models, catalog and cut-off are shared; this model is unchanged.

        Raises:
            ValueError: the model cannot advance (:attr:`advances`), or ``day`` is
                before its :attr:`features_as_of`.
        """
        if self.recent_touches is None:
            raise ValueError(
                "this model's artifact does not keep its snapshot's recent touches "
                "(trained before they were kept): retrain it to move its history"
            )
        history = self.space.history
        assert history is not None, "a trained model's feature space is fitted"
        day = utc_timestamp(day)
        moved_to = utc_timestamp(self.features_as_of)
        if day < moved_to:
            raise ValueError(
                f"cannot move the history back to {day:%Y-%m-%d %H:%M} UTC: the model's "
                f"history is as of {moved_to:%Y-%m-%d %H:%M} UTC"
            )
        moved = history.advance(
            self.hcp_history,
            as_of=_seconds(self.as_of),
            day=_seconds(day),
            recent=self.recent_touches,
            contacts=self.contact_touches(contacts),
            moved_to=_seconds(moved_to),
        )
        state = self.__getstate__()
        state["hcp_history"] = moved
        state["history_day"] = day
        copy = ScoringModel.__new__(ScoringModel)
        copy.__setstate__(state)
        return copy

    def hcp_text(self, column: str) -> np.ndarray:
        """An HCP attribute as strings, one per snapshot row (kept: reasons read it per item)."""
        found = self._hcp_text.get(column)
        if found is None:
            found = self.hcps[column].astype(str).to_numpy(dtype=object)
            self._hcp_text[column] = found
        return found

    def hcp_sharing(self, column: str) -> np.ndarray:
        """How many snapshot HCPs hold each HCP's value of an attribute, itself included
        (int64, one per snapshot row; 0 for a missing value). Kept: reasons quote a
        value only when enough HCPs share it."""
        found = self._hcp_sharing.get(column)
        if found is None:
            values = self.hcps[column]
            counts = values.map(values.value_counts(dropna=True))
            found = counts.fillna(0).to_numpy(dtype=np.int64)
            self._hcp_sharing[column] = found
        return found

    def keep_hcp_attributes(self) -> None:
        """Compute what reasons read of each HCP attribute (its text, how many HCPs
        share each value) now, when a model is loaded beside the served one, rather
        than in the first requests after it is swapped in: a column of 500,000
        distinct numbers takes 0.2 s to count."""
        for column in self.space.hcp_feature_names:
            self.hcp_sharing(column)
        for column in self.space.categorical_hcp_columns:
            self.hcp_text(column)

    def hcp_row(self, hcp_id: str) -> int | None:
        """Row of ``hcp_id`` in the snapshot, or None when the model does not know it."""
        row = self.hcp_index.get_indexer([hcp_id])[0]
        return None if row < 0 else int(row)

    def rows(self, hcp_rows: np.ndarray, action_rows: np.ndarray) -> np.ndarray:
        """Model rows for aligned pairs, shape ``(n_pairs, n_features)``."""
        return self.space.rows(
            self.hcp_attrs[hcp_rows],
            self.hcp_history[hcp_rows],
            self.action_attrs[action_rows],
            self.cross_cols[action_rows],
        )

    def score(self, hcp_rows: np.ndarray, action_rows: np.ndarray) -> Scores:
        """Calibrated P(engaged) and expected uplift (outcome units) of each pair.

        Pairs of an HCP with actions the model cannot tell apart (``action_twin``) are
        one row for LightGBM: each gets that row's scores and leaves, bit for bit the
        ones it would get alone (a catalog's copies of content cost nothing to score).
        """
        # Whether the leaves are kept is decided on the whole block, as score_rows would:
        # the two ways of summing the trees differ in the last bits.
        keep_paths = self._keeps_paths(len(action_rows))
        if self.has_twins and len(action_rows) > 1:
            hcp_rows, action_rows = np.asarray(hcp_rows), np.asarray(action_rows)
            distinct = _distinct_pairs(hcp_rows, self.action_twin[action_rows], self.n_actions)
            if distinct is not None:
                hcp_first, action_first, inverse = distinct
                X = self.rows(hcp_first, action_first)
                scores = self.score_rows(X, action_first, keep_paths=keep_paths)
                return scores.spread(inverse)
        X = self.rows(hcp_rows, action_rows)
        return self.score_rows(X, action_rows, keep_paths=keep_paths)

    def _keeps_paths(self, n_rows: int) -> bool:
        """Whether scoring ``n_rows`` rows keeps their leaves (see :meth:`score_rows`)."""
        return self.uplift_model is not None and n_rows * self.path_trees <= PATH_CELLS

    def net_value(self, uplift: np.ndarray, action_rows: np.ndarray) -> np.ndarray:
        """Arbitration score of each pair: expected incremental value minus cost, with levers.

        ``weight * uplift - cost * cost_weight + offset`` (see :mod:`nextbest.learning.levers`);
        with no levers configured this is ``uplift - cost``. Positive means worth doing.
        """
        return self.lever_weight[action_rows] * uplift - self.lever_charge[action_rows]

    def score_rows(
        self, X: np.ndarray, action_rows: np.ndarray, *, keep_paths: bool | None = None
    ) -> Scores:
        """Scores of the pairs whose model rows are ``X``.

        With ``keep_paths`` (default: when the leaves number at most ``PATH_CELLS``,
        as for one request's candidates) the uplift model's scores come from the
        leaves the rows reach (one LightGBM call for the trees of every model,
        cheaper than a prediction of each), and the leaves are kept in the scores
        for the reasons of the served items. Either way the scores are the same, up to the order of
        summing the trees (~1e-16).
        """
        uplift_model = self.uplift_model
        if uplift_model is None:
            p_engage = self.engagement.engage_probability(X)
            return Scores(p_engage=p_engage, uplift=p_engage * self.action_value[action_rows])
        # The leaves are the uplift model's own; its engagement model is ours (as
        # training builds it), else P(engaged) must come from our model's predict.
        shared = self.engagement is uplift_model.engagement_
        if keep_paths is None:
            keep_paths = self._keeps_paths(len(X))
        paths = uplift_model.paths(X) if keep_paths and shared else None
        p_engage = self.engagement.engage_probability(
            X, None if paths is None else paths.engagement
        )
        parts = uplift_model.uplift_parts(X, p_engage, paths)
        rows = None if paths is None else X
        return Scores(
            p_engage=p_engage,
            uplift=parts.uplift,
            gains=parts.gains,
            paths=paths,
            rows=rows,
            terms=parts.terms,
        )
