"""Reasons a rep can read, from LightGBM's own per-row feature contributions.

For each served item the features that pushed its score up the most are turned
into short sentences with the HCP's actual values ("engaged with email 80% of
the time over 5 touches", "no rep_visit in 63 days"). The first sentence always
states the expected value, so every item carries at least one reason.
"""

from __future__ import annotations

import math

import numpy as np

from nextbest.learning.scoring import PREFERENCE_X_VALUE, ScoringModel

MAX_REASONS = 3


def _pretty(name: str) -> str:
    return name.replace("_", " ")


def _sentence(feature: str, value: float, channel: str, topic: str) -> str | None:
    """A sentence for one feature with its value, or None when it says nothing useful."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    ch, tp = _pretty(channel), _pretty(topic)
    if feature == "this_channel__eng_rate":
        return f"engages with {ch} about {value:.0%} of the time"
    if feature == "this_channel__touches":
        return f"reached by {ch} {int(value)} times so far" if not missing else None
    if feature == "this_channel__days_since":
        return f"never reached by {ch} before" if missing else f"no {ch} in {value:.0f} days"
    if feature in ("this_channel__touches_7d", "this_channel__touches_30d"):
        days = "7" if feature.endswith("7d") else "30"
        if missing:
            return None
        if value == 0:
            return f"no {ch} in the last {days} days, so no fatigue"
        return f"{int(value)} {ch} touches in the last {days} days"
    if feature == "this_topic__eng_rate":
        return f"engages with {tp} content about {value:.0%} of the time"
    if feature == "this_topic__touches":
        return f"has seen {tp} content {int(value)} times" if not missing else None
    if feature == "action__topic":
        return f"{tp} content suits HCPs like this one"
    if feature == "action__channel":
        return f"{ch} works well for HCPs like this one"
    if feature == "action__action" or feature.startswith("action__"):
        return None
    if feature == "all__outcome_mean":
        return None if missing else f"averages {value:.1f} outcome units per period"
    if feature == "all__outcome_mean_untouched":
        return None if missing else f"averages {value:.1f} outcome units when not contacted"
    if feature == "all__days_since_touch":
        return "never contacted before" if missing else f"last contacted {value:.0f} days ago"
    if feature.startswith("all__"):
        return None
    if "__" in feature:  # another channel's or topic's history
        scope, stat = feature.split("__", 1)
        scope = _pretty(scope.removeprefix("topic_"))
        if stat == "eng_rate":
            return f"engages with {scope} about {value:.0%} of the time"
        if stat == "days_since" and not missing:
            return f"last {scope} {value:.0f} days ago"
        return None
    if missing:
        return None
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{_pretty(feature)} is {shown}"


def explain(
    model: ScoringModel,
    X: np.ndarray,
    action_rows: np.ndarray,
    hcp_rows: np.ndarray,
    uplift: np.ndarray,
    p_engage: np.ndarray,
) -> list[list[str]]:
    """Reasons for each of the ``n`` items scored by rows ``X`` (n, n_features).

    ``action_rows`` and ``hcp_rows`` (n,) say which action and HCP each row is;
    one contributions call covers all items.
    """
    if len(action_rows) == 0:
        return []
    source = model.uplift_model if model.uplift_model is not None else model.engagement
    contrib = source.contributions(X)
    names = model.space.feature_names
    catalog = model.catalog
    out: list[list[str]] = []
    for i, a in enumerate(action_rows):
        channel = str(catalog["channel"].iat[a])
        topic = str(catalog["topic"].iat[a])
        cost = float(model.action_cost[a])
        if model.uplift_source == PREFERENCE_X_VALUE:
            lead = (
                f"expected engagement {p_engage[i]:.0%} x value (no measured uplift yet; "
                f"cost {cost:.2f})"
            )
        else:
            lead = f"expected +{uplift[i]:.2f} outcome versus no contact, for a cost of {cost:.2f}"
        reasons = [lead]
        for j in np.argsort(-contrib[i]):
            if contrib[i, j] <= 0 or len(reasons) > MAX_REASONS:
                break
            feature = names[j]
            value = _display_value(model, feature, float(X[i, j]), int(hcp_rows[i]))
            sentence = _sentence(feature, value, channel, topic)  # type: ignore[arg-type]
            if sentence and sentence not in reasons:
                reasons.append(sentence)
        out.append(reasons)
    return out


def _display_value(model: ScoringModel, feature: str, value: float, hcp_row: int) -> float | str:
    """Categorical HCP attributes are stored as codes; show their names."""
    vocab = model.space.categorical_hcp_columns.get(feature)
    if vocab is not None:
        return str(model.hcps[feature].iat[hcp_row])
    return value
