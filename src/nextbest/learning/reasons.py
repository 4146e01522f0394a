"""Reasons a rep can read, from the model's own per-row feature contributions.

For each served item the features that pushed its score up the most are turned
into short sentences with the HCP's actual values ("opened 4 of the last 5
e-mails", "no rep visit in 63 days"), speaking of the action's own channel and
topic. Contributions come from path attributions precomputed at fit time
(:mod:`nextbest.learning.attribution`), so explaining ten items costs well
under a millisecond. Every item carries at least one reason: the first states
the expected value and where it comes from (measured uplift, or the
preference x value fallback), followed, when the training data had one, by the
holdout-measured effect of the channel in the HCP's segment.
"""

from __future__ import annotations

import math

import numpy as np

from nextbest.features.history import SMOOTHING
from nextbest.learning.scoring import PREFERENCE_X_VALUE, ScoringModel

MAX_REASONS = 3

# How a rep says "engaged" and names the touches, per channel of the simulator
# and common CRM exports; anything else falls back to the channel's own name.
_VERB = {"email": "opened", "rep_visit": "had", "rep_phone": "took", "webinar": "attended"}
_NOUN = {
    "email": "e-mails",
    "rep_visit": "rep visits",
    "rep_phone": "phone calls",
    "webinar": "webinars",
}
_SINGULAR = {"email": "e-mail", "rep_visit": "visit", "rep_phone": "call", "webinar": "webinar"}


def _pretty(name: str) -> str:
    return name.replace("_", " ")


def _missing(value: float | str) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _engaged_count(rate: float, touches: float, prior: float) -> int:
    """Undo the smoothing of an engagement rate: the raw count of engaged touches."""
    return max(0, min(int(touches), round(rate * (touches + SMOOTHING) - SMOOTHING * prior)))


class _Row:
    """One item's feature values by name, with the priors to read rates back as counts."""

    def __init__(self, model: ScoringModel, x: np.ndarray, action: int) -> None:
        self.model = model
        self.x = x
        self.action = action
        self.channel = str(model.action_channel_name[action])
        self.topic = str(model.action_topic_name[action])

    def value(self, feature: str) -> float:
        return float(self.x[self.model.feature_position[feature]])

    def channel_prior(self) -> float:
        history = self.model.space.history
        assert history is not None
        code = int(self.model.action_channel_code[self.action])
        return float(history.channel_prior_[code]) if code >= 0 else 0.0

    def topic_prior(self) -> float:
        history = self.model.space.history
        assert history is not None
        code = (
            self.model.space.topics.index(self.topic)
            if self.topic in self.model.space.topics
            else -1
        )
        return float(history.topic_prior_[code]) if code >= 0 else 0.0


def _sentence(feature: str, row: _Row, hcp_value: float | str) -> str | None:
    """A sentence for one feature of one item, or None when it says nothing useful."""
    ch, tp = row.channel, _pretty(row.topic)
    noun = _NOUN.get(ch, f"{_pretty(ch)} touches")
    verb = _VERB.get(ch, "engaged with")
    if feature in ("this_channel__eng_rate", "this_channel__touches"):
        touches = row.value("this_channel__touches")
        if _missing(touches) or touches == 0:
            return f"no {noun} so far: a fresh channel for this HCP"
        engaged = _engaged_count(row.value("this_channel__eng_rate"), touches, row.channel_prior())
        return f"{verb} {engaged} of {int(touches)} {noun} so far"
    if feature in ("this_topic__eng_rate", "this_topic__touches"):
        touches = row.value("this_topic__touches")
        if _missing(touches) or touches == 0:
            return f"has not seen {tp} content yet"
        engaged = _engaged_count(row.value("this_topic__eng_rate"), touches, row.topic_prior())
        return f"engaged with {engaged} of {int(touches)} pieces on {tp}"
    if feature == "this_channel__days_since":
        days = row.value(feature)
        single = _SINGULAR.get(ch, _pretty(ch))
        return (
            f"never had a {single} before" if _missing(days) else f"no {single} in {days:.0f} days"
        )
    if feature in ("this_channel__touches_7d", "this_channel__touches_30d"):
        value = row.value(feature)
        window = "7" if feature.endswith("7d") else "30"
        if _missing(value):
            return None
        if value == 0:
            return f"no {noun} in the last {window} days, so no fatigue"
        return None  # recent touches only ever argue against another one
    if feature == "action__topic":
        return f"{tp} content moves HCPs like this one"
    if feature == "action__channel":
        return f"{_pretty(ch)} works for HCPs like this one"
    if feature.startswith("action__"):
        return None
    if feature == "all__outcome_mean_unengaged":
        value = row.value(feature)
        return None if _missing(value) else f"writes about {value:.1f} a period on their own"
    if feature in ("all__eng_rate", "all__eng_excess"):
        return "responds to outreach more than most HCPs"
    if feature == "all__days_since_touch":
        value = row.value(feature)
        return (
            "never contacted before" if _missing(value) else f"last contacted {value:.0f} days ago"
        )
    if "__" in feature:  # another channel's or topic's history: not this item's story
        return None
    if _missing(hcp_value):
        return None
    shown = f"{hcp_value:g}" if isinstance(hcp_value, float) else str(hcp_value)
    return f"{_pretty(feature)} is {shown}"


def segment_sentence(model: ScoringModel, hcp_row: int, action: int) -> str | None:
    """The holdout-measured effect of the action's channel in the HCP's segment, if known."""
    table = model.metadata.get("segment_uplift")
    column = model.metadata.get("segment_column")
    if not table or not column:
        return None
    segment = str(model.hcps[column].iat[hcp_row])
    channel = str(model.action_channel_name[action])
    found = table.get(f"{segment}|{channel}")
    if found is None:
        return None
    effect, low, high = found
    if low <= 0 <= high:
        return None  # not distinguishable from no effect: say nothing rather than mislead
    noun = _NOUN.get(channel, _pretty(channel))
    return (
        f"among {segment} HCPs, {noun} measured {effect:+.2f} outcome versus the holdout "
        f"(95% CI {low:+.2f} to {high:+.2f})"
    )


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
    ``uplift`` and ``p_engage`` (n,) are the item's scores. One contributions
    call covers all items. Returns ``n`` lists of at least one sentence each.
    """
    if len(action_rows) == 0:
        return []
    if model.uplift_model is not None:
        contrib = model.uplift_model.contributions(X, np.asarray(p_engage))
    else:
        contrib = model.engagement.contributions(X)
    names = model.space.feature_names
    out: list[list[str]] = []
    for i, a in enumerate(np.asarray(action_rows)):
        a = int(a)
        h = int(hcp_rows[i])
        cost = float(model.action_cost[a])
        if model.uplift_source == PREFERENCE_X_VALUE:
            lead = (
                f"expected engagement {p_engage[i]:.0%} x value (no measured uplift yet; "
                f"cost {cost:.2f})"
            )
        else:
            lead = f"expected {uplift[i]:+.2f} outcome versus no contact, for a cost of {cost:.2f}"
        reasons = [lead]
        segment = segment_sentence(model, h, a)
        if segment:
            reasons.append(segment)
        row = _Row(model, X[i], a)
        budget = len(reasons) + MAX_REASONS
        # The item's own channel and topic history first (what a rep can act on),
        # then what describes the HCP; each in order of contribution.
        top = [j for j in np.argsort(-contrib[i])[: 4 * MAX_REASONS] if contrib[i, j] > 0]
        own = [j for j in top if names[j].startswith(("this_", "action__"))]
        for j in own + [j for j in top if j not in own]:
            if len(reasons) >= budget:
                break
            feature = names[j]
            sentence = _sentence(feature, row, _display_value(model, feature, float(X[i, j]), h))
            if sentence and sentence not in reasons:
                reasons.append(sentence)
        out.append(reasons)
    return out


def _display_value(model: ScoringModel, feature: str, value: float, hcp_row: int) -> float | str:
    """Categorical HCP attributes are stored as codes; show their names."""
    if feature in model.space.categorical_hcp_columns:
        return str(model.hcps[feature].iat[hcp_row])
    return value
