"""The feature space: how HCPs, actions and their history become model rows.

A model row for a candidate ``(hcp, action)`` at time ``t`` is

    [HCP attributes | history of the HCP before t | action attributes | cross]

where *cross* picks, from the HCP's history, the columns of this action's own
channel and topic (touches, smoothed engagement rate, recency, fatigue), so one
model can compare actions on different channels. The control model (outcome
without a touch) sees only the first two blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nextbest.contract.schema import is_identifier_column
from nextbest.features.history import EFFECT, EventLog, HistoryFeaturizer, event_log

# A categorical HCP attribute with more values than this stays out of the engagement
# model's linear base (its trees still see it): a coefficient per value and action
# attribute would be too many to learn.
MAX_LINEAR_LEVELS = 32
# The row's touches on its own channel the linear base crosses with the channel (fatigue).
_LINEAR_FATIGUE = ("touches_7d", "touches_30d")
# Columns that identify rather than describe, or that decide eligibility only.
_NOT_FEATURES = {"hcp_id", "territory_id"}
_ACTION_FEATURES = ("action", "channel", "topic", "medical", "cost", "restricted")
# The column of the action's own identity in FeatureSpace.action_block.
ACTION_ID_COLUMN = _ACTION_FEATURES.index("action")
_CROSS = (
    ("channel", "touches"),
    ("channel", "eng_rate"),
    ("channel", "days_since"),
    ("channel", "touches_7d"),
    ("channel", "touches_30d"),
    ("topic", "touches"),
    ("topic", "eng_rate"),
    ("channel", EFFECT),
    ("topic", EFFECT),
)


@dataclass
class FeatureSpace:
    """Vocabularies and column layout learned from a training data set."""

    channels: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    action_ids: tuple[str, ...] = ()
    numeric_hcp_columns: tuple[str, ...] = ()
    categorical_hcp_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    history: HistoryFeaturizer | None = None
    # Per-HCP engagement effects learned by training (columns: history.effect_names,
    # index: hcp_id), for rows at or after ``effects_as_of`` (Unix seconds, the cut-off).
    effects: pd.DataFrame | None = None
    effects_as_of: int | None = None

    def fit(
        self, hcps: pd.DataFrame, catalog: pd.DataFrame, log: EventLog | None = None
    ) -> FeatureSpace:
        """Learn vocabularies from ``hcps`` and ``catalog`` and smoothing priors from ``log``."""
        self.channels = tuple(sorted(catalog["channel"].unique()))
        self.topics = tuple(sorted(catalog["topic"].unique()))
        self.action_ids = tuple(catalog["action_id"])
        numeric, categorical = [], {}
        for name in hcps.columns:
            if name in _NOT_FEATURES or name.startswith("consent_"):
                continue
            column = hcps[name]
            if is_identifier_column(name) and column.nunique() > len(column) // 2:
                # An identifier (npi, a zip per HCP) that is nearly unique names an
                # HCP rather than describing one: as a feature it would memorise HCPs.
                continue
            if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
                numeric.append(name)
            else:
                categorical[name] = tuple(sorted(column.astype(str).unique()))
        self.numeric_hcp_columns = tuple(numeric)
        self.categorical_hcp_columns = categorical
        self.history = HistoryFeaturizer(self.channels, self.topics, effects=True)
        if log is not None:
            self.history.fit(log)
        return self

    # -- vocabularies -------------------------------------------------------------

    def log(
        self, interactions: pd.DataFrame, hcps: pd.DataFrame, catalog: pd.DataFrame
    ) -> EventLog:
        """An :class:`EventLog` of ``interactions`` with HCP codes = row positions in ``hcps``."""
        return event_log(
            interactions,
            hcp_index=pd.Index(hcps["hcp_id"]),
            channels=self.channels,
            topics=self.topics,
            action_topic=catalog.set_index("action_id")["topic"],
        )

    @property
    def hcp_feature_names(self) -> list[str]:
        return list(self.numeric_hcp_columns) + list(self.categorical_hcp_columns)

    @property
    def history_feature_names(self) -> list[str]:
        assert self.history is not None, "FeatureSpace is not fitted"
        return self.history.feature_names

    @property
    def control_feature_names(self) -> list[str]:
        return self.hcp_feature_names + self.history_feature_names

    @property
    def _cross(self) -> tuple[tuple[str, str], ...]:
        """The cross features (without the effects in artifacts from before them)."""
        assert self.history is not None, "FeatureSpace is not fitted"
        return _CROSS if self.history.effect_names else _CROSS[:-2]

    @property
    def action_feature_names(self) -> list[str]:
        return [f"action__{n}" for n in _ACTION_FEATURES] + [
            f"this_{s}__{f}" for s, f in self._cross
        ]

    @property
    def feature_names(self) -> list[str]:
        return self.control_feature_names + self.action_feature_names

    @property
    def effect_offset_columns(self) -> list[int]:
        """The row's own channel's and topic's engagement effect (the logit offset)."""
        names = self.feature_names
        return [names.index(f"this_channel__{EFFECT}"), names.index(f"this_topic__{EFFECT}")]

    @property
    def effect_columns(self) -> list[int]:
        """Every engagement effect column of a full row: the history's and the cross ones."""
        return [j for j, name in enumerate(self.feature_names) if name.endswith(f"__{EFFECT}")]

    @property
    def engagement_history_columns(self) -> list[int]:
        """Every column that says how the HCP engaged before (rates, excess, effects)."""
        return [
            j
            for j, name in enumerate(self.feature_names)
            if name.endswith(("__eng_rate", "__eng_excess", f"__{EFFECT}"))
        ]

    @property
    def linear_terms(self) -> dict[str, list[Any]]:
        """The columns the engagement model's linear base crosses
        (:class:`~nextbest.learning.preference.LinearBase`): on the left the HCP's
        attributes (a categorical one of at most :data:`MAX_LINEAR_LEVELS` values) and
        its recent touches on the action's channel, on the right the action's
        channel, topic and content type."""
        names = self.feature_names
        left_numeric = [names.index(c) for c in self.numeric_hcp_columns]
        left_numeric += [names.index(f"this_channel__{f}") for f in _LINEAR_FATIGUE]
        return {
            "left_numeric": left_numeric,
            "left_categorical": [
                [names.index(c), len(vocab)]
                for c, vocab in self.categorical_hcp_columns.items()
                if len(vocab) <= MAX_LINEAR_LEVELS
            ],
            "right_categorical": [
                [names.index("action__channel"), len(self.channels)],
                [names.index("action__topic"), len(self.topics)],
                [names.index("action__medical"), 2],
            ],
        }

    @property
    def categorical_features(self) -> list[int]:
        """Indices of categorical columns in a full model row (for LightGBM)."""
        names = self.feature_names
        cats = [*self.categorical_hcp_columns, "action__action", "action__channel", "action__topic"]
        return [names.index(c) for c in cats]

    @property
    def control_categorical_features(self) -> list[int]:
        names = self.control_feature_names
        return [names.index(c) for c in self.categorical_hcp_columns]

    # -- blocks -------------------------------------------------------------------

    def hcp_block(self, hcps: pd.DataFrame) -> np.ndarray:
        """HCP attributes, shape ``(n_hcps, len(hcp_feature_names))``, float32."""
        parts = [
            pd.to_numeric(hcps[c], errors="coerce").to_numpy(dtype=np.float32)
            if c in hcps
            else np.full(len(hcps), np.nan, dtype=np.float32)
            for c in self.numeric_hcp_columns
        ]
        for name, vocab in self.categorical_hcp_columns.items():
            values = hcps[name].astype(str) if name in hcps else pd.Series([""] * len(hcps))
            codes = pd.Categorical(values, categories=list(vocab)).codes.astype(np.float32)
            codes[codes < 0] = np.nan
            parts.append(codes)
        if not parts:
            return np.zeros((len(hcps), 0), dtype=np.float32)
        return np.column_stack(parts).astype(np.float32)

    def action_block(self, catalog: pd.DataFrame) -> np.ndarray:
        """Action attributes, shape ``(n_actions, len(_ACTION_FEATURES))``, float32."""
        action = pd.Categorical(catalog["action_id"], categories=list(self.action_ids)).codes
        channel = pd.Categorical(catalog["channel"], categories=list(self.channels)).codes
        topic = pd.Categorical(catalog["topic"], categories=list(self.topics)).codes
        block = np.column_stack(
            [
                action,
                channel,
                topic,
                (catalog["content_type"] == "medical").to_numpy(),
                catalog["cost"].to_numpy(dtype=np.float64),
                (catalog["specialties"].astype(str) != "").to_numpy(),
            ]
        ).astype(np.float32)
        for j in range(3):
            block[block[:, j] < 0, j] = np.nan
        return block

    def cross_columns(self, catalog: pd.DataFrame) -> np.ndarray:
        """For each action, the history column of each cross feature, ``(n_actions, n_cross)``."""
        assert self.history is not None, "FeatureSpace is not fitted"
        channel = pd.Categorical(catalog["channel"], categories=list(self.channels)).codes
        topic = pd.Categorical(catalog["topic"], categories=list(self.topics)).codes
        columns = []
        for scope, feature in self._cross:
            if scope == "channel":
                columns.append(self.history.channel_column(feature)[channel])
            else:
                columns.append(self.history.topic_column(feature)[topic])
        return np.column_stack(columns).astype(np.int64)

    def add_effects(
        self, history: np.ndarray, hcps: pd.DataFrame, hcp: np.ndarray, seconds: np.ndarray
    ) -> None:
        """Write the engagement effects training learned (:attr:`effects`) into the
        history rows ``history`` ``(n, n_history)`` of queries ``(hcp[i], seconds[i])``
        at or after its cut-off (0 for an HCP it did not know), in place; rows before
        it keep theirs (training writes each of its rows' own, point in time)."""
        if self.effects is None or self.effects_as_of is None or self.history is None:
            return
        late = np.flatnonzero(seconds >= self.effects_as_of)
        if not len(late):
            return
        found = self.effects.index.get_indexer(hcps["hcp_id"].to_numpy()[hcp[late]])
        table = self.effects.to_numpy(dtype=np.float32)
        values = np.where((found >= 0)[:, None], table[np.maximum(found, 0)], 0.0)
        columns = np.array([self.history.column(n) for n in self.history.effect_names])
        history[np.ix_(late, columns)] = values

    def rows(
        self,
        hcp_attrs: np.ndarray,
        history: np.ndarray,
        action_attrs: np.ndarray,
        cross_cols: np.ndarray,
    ) -> np.ndarray:
        """Full model rows from aligned blocks, each with ``n`` rows.

        ``cross_cols`` (n, n_cross) holds, per row, which history columns belong to the
        row's action; the gather is one fancy-indexing call.
        """
        cross = np.take_along_axis(history, cross_cols, axis=1)
        return np.hstack([hcp_attrs, history, action_attrs, cross]).astype(np.float32, copy=False)
