"""Reasons a rep can read, from the model's own per-row feature contributions.

For each served item the features that pushed its score up the most are turned
into short sentences with the HCP's actual values ("opened 4 of 5 e-mails so
far", "no rep visit in 9 weeks"), speaking of the action's own channel and topic
first. Contributions come from path attributions precomputed at fit time
(:mod:`nextbest.learning.attribution`), so explaining ten items costs well under
a millisecond.

Three rules keep the sentences honest:

- a reason reads as support for the action: a feature that pushed the score up
  but whose value argues against acting (no engagement so far, a below-average
  record, a touch a few days ago) gives no sentence;
- an item states each fact once: the count, rate and recency of one channel
  (and "never contacted") are one fact, so "no rep visits so far" never comes
  with "never had a visit before";
- counts, days and weeks agree in number ("1 day", "both e-mails").

An HCP attribute is quoted only with a value many HCPs share
(:data:`MIN_QUOTED_HCPS`), never one that could point at a person.

Every item carries at least one reason: the first states the expected value and
where it comes from (measured uplift, or the preference x value fallback),
followed, when the training data measured a positive one, by the effect of the
channel in the HCP's segment against HCPs left untouched at random.

The model's history features are as of its training cut-off; a reason speaks as
of the decision (:class:`Lapse`): gaps count the days since the cut-off too
("no rep visit in 9 weeks" a fortnight later reads 11 weeks), and a channel the
live contact history shows the HCP was contacted on since the cut-off says
nothing of its old record or gap, which may no longer hold. So does a channel the
live history shows a contact on that the snapshot lacks (newer than the snapshot's
latest by more than a day): a model retrained on part of the logged decisions,
or on an export that missed some contacts.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from nextbest.features.history import SMOOTHING
from nextbest.learning.scoring import PREFERENCE_X_VALUE, Scores, ScoringModel
from nextbest.wording import plural

MAX_REASONS = 3
# Below this gap a recency says "recently touched", which argues against another touch.
MIN_GAP_DAYS = 7.0
# From this many days on, gaps read in whole weeks ("no visit in 9 weeks").
WEEKS_FROM_DAYS = 14.0
# A live contact at most this much newer than the snapshot's latest on its channel
# is taken for the same one: a decision is in the training history at the time it
# was made, its delivery or completion comes in later.
SAME_CONTACT_DAYS = 1.0
# An HCP attribute's value is quoted ("decile: 6", "region: west") only when at least
# this many HCPs of the model's snapshot hold it. A value fewer hold (a name, a birth
# date, an address or exact count that validate took for a trait) could point at one
# person, and reasons reach CRMs, reps and the recommendation log; such a feature
# gives no sentence, as a feature that argues against acting gives none.
MIN_QUOTED_HCPS = 10


@dataclass(frozen=True)
class _Words:
    """How a rep names the touches of one channel and says that one engaged."""

    verb: str  # past tense of engaging with one touch: "opened", "took"
    one: str  # a single touch: "e-mail"
    many: str  # several touches: "e-mails"


# The channels of the simulator and of common CRM exports; any other channel is
# named after itself (see _words).
_WORDS = {
    "email": _Words("opened", "e-mail", "e-mails"),
    "rep_visit": _Words("accepted", "rep visit", "rep visits"),
    "rep_phone": _Words("took", "phone call", "phone calls"),
    "webinar": _Words("attended", "webinar", "webinars"),
}

# Facts a sentence states. Related features (the count, rate and recency of one
# channel) state overlapping facts; an item states each fact at most once.
_CHANNEL = "channel"  # the record of the item's own channel
_CHANNEL_GAP = "channel_gap"  # how long since the item's own channel was used
_GAP = "gap"  # how long since any contact
_TOPIC = "topic"  # the record of the item's own topic
_ENGAGER = "engager"  # the HCP's engagement across all channels
# Marks an HCP attribute that raised the item's expected effect: an item's such
# attributes are said in one sentence ("... (decile: 7, region: west)").
_LIKE = "hcp_like"
_NEVER_CONTACTED = (_CHANNEL, _CHANNEL_GAP, _GAP, _TOPIC, _ENGAGER)
# The engagement effect (the HCP's own, shrunk) is said as the record it comes from.
_CHANNEL_RECORD = frozenset(
    {"this_channel__touches", "this_channel__eng_rate", "this_channel__eng_effect"}
)
_CHANNEL_RECENCY = frozenset(
    {"this_channel__days_since", "this_channel__touches_7d", "this_channel__touches_30d"}
)
_TOPIC_RECORD = frozenset({"this_topic__touches", "this_topic__eng_rate", "this_topic__eng_effect"})
# The HCP's history over every channel that can be a reason (see _sentence).
_ALL_HISTORY = frozenset(
    {"all__outcome_mean_unengaged", "all__eng_rate", "all__eng_excess", "all__days_since_touch"}
)


@dataclass(frozen=True)
class Lapse:
    """What an HCP's snapshot misses at the decision: ``days`` (whole days) since the
    model's history cut-off, the channels the HCP was contacted on since then (from
    the live contact history; None when no live history was read), ``before``: per
    channel, how many days before the cut-off the newest live contact at or before
    it was (the snapshot may lack it), and ``unseen``: the live history does not
    reach back to the cut-off (older than the rules' longest window), so a contact on
    any channel may have been missed and every record and gap may be out of date.
    ``moved``: the days the snapshot's gaps were moved on past the cut-off
    (:meth:`~nextbest.learning.scoring.ScoringModel.advanced`), from where ``days``
    counts."""

    days: int = 0
    touched: frozenset[str | None] | None = frozenset()
    before: tuple[tuple[str | None, float], ...] = ()
    unseen: bool = False
    moved: float = 0.0

    def touched_channel(self, channel: str) -> bool:
        return self.unseen or (self.touched is not None and channel in self.touched)

    @property
    def touched_any(self) -> bool:
        return self.unseen or bool(self.touched)

    def missed_by_snapshot(self, snapshot_days: float, channel: str | None = None) -> bool:
        """Whether a live contact before the cut-off (on ``channel``, or on any) is
        newer than the snapshot's latest, ``snapshot_days`` before the day the gaps are
        as of (the cut-off, or :attr:`moved` days after it; NaN: none), by more than
        :data:`SAME_CONTACT_DAYS`."""
        latest = snapshot_days - self.moved
        return any(
            (channel is None or seen == channel)
            and (math.isnan(latest) or days < latest - SAME_CONTACT_DAYS)
            for seen, days in self.before
        )


AT_CUTOFF = Lapse()


def _words(channel: str) -> _Words:
    found = _WORDS.get(channel)
    if found is not None:
        return found
    name = _pretty(channel)
    return _Words("engaged with", f"{name} touch", f"{name} touches")


def _pretty(name: str) -> str:
    return name.replace("_", " ")


def _missing(value: float | str) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _span(days: float) -> str:
    """A gap in whole days under two weeks, else in whole weeks (rounded down, so
    "no visit in 9 weeks" stays true)."""
    if days < WEEKS_FROM_DAYS:
        return plural(int(days), "day")
    return plural(int(days // 7), "week")


def _period(days: float | None) -> str:
    """The data's decision period in words: "a day", "a week", "a month", "every 10
    days"; "per decision period" when unknown."""
    if days is None or not days > 0:
        return "per decision period"
    for length, words in ((1, "a day"), (7, "a week"), (14, "every two weeks"), (30.4, "a month")):
        if abs(days - length) <= 0.15 * length:
            return words
    return f"every {_number(round(days))} days"


def _number(value: float) -> str:
    """A number as a rep would write it: "5", "1.25", "12,400"."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value - round(value)) < 1e-6:
        return str(round(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _engaged_count(rate: float, touches: float, prior: float) -> int:
    """Undo the smoothing of an engagement rate: the raw count of engaged touches."""
    return max(0, min(int(touches), round(rate * (touches + SMOOTHING) - SMOOTHING * prior)))


def _record(verb: str, engaged: int, touches: int, one: str, many: str) -> str:
    """A record in words: "opened 3 of 5 e-mails", "opened both e-mails", "opened the
    only e-mail" (``one`` and ``many`` name a single touch and several)."""
    if engaged == touches == 1:
        return f"{verb} the only {one}"
    if engaged == touches == 2:
        return f"{verb} both {many}"
    if engaged == touches:
        return f"{verb} all {touches} {many}"
    return f"{verb} {engaged} of {touches} {one if touches == 1 else many}"


def _supports(engaged: int, touches: int, prior: float) -> bool:
    """Whether a record of ``engaged`` out of ``touches`` reads as a reason to go on:
    at least one engagement and a rate above the channel's (or topic's) average."""
    return engaged >= 1 and engaged / touches > prior


class _Row:
    """One item's feature values by name, with the priors to read rates back as counts."""

    def __init__(
        self,
        model: ScoringModel,
        x: np.ndarray | Sequence[float],
        action: int,
        lapse: Lapse = AT_CUTOFF,
    ) -> None:
        self.model = model
        self.x = x
        self.action = action
        self.channel = str(model.action_channel_name[action])
        self.topic = str(model.action_topic_name[action])
        self.lapse = lapse

    def value(self, feature: str) -> float:
        return float(self.x[self.model.feature_position[feature]])

    def contacted_since_snapshot(self) -> bool:
        """Whether the live history shows a contact newer than the snapshot's latest on
        any channel (what the overall gap would miss)."""
        return self.lapse.touched_any or self.lapse.missed_by_snapshot(
            self.value("all__days_since_touch")
        )

    def missed_any_contact(self) -> bool:
        """Whether the live history shows any contact the snapshot lacks, each checked
        against the snapshot's latest on its own channel (a topic it does not say may
        have been shown then)."""
        if self.lapse.touched_any:
            return True
        position = self.model.feature_position
        for channel, _ in self.lapse.before:
            feature = f"{channel}__days_since"
            own = feature if channel is not None and feature in position else None
            latest = self.value(own or "all__days_since_touch")
            if self.lapse.missed_by_snapshot(latest, None if own is None else channel):
                return True
        return False

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


# A sentence and the facts it states, or None when a feature gives no reason to act.
_Said: TypeAlias = tuple[str, tuple[str, ...]] | None


def _channel_sentence(feature: str, row: _Row) -> _Said:
    """The item's own channel: its engagement record, or how long it has rested."""
    if row.lapse.touched_channel(row.channel) or row.lapse.missed_by_snapshot(
        row.value("this_channel__days_since"), row.channel
    ):
        return None  # contacted on it since the snapshot: its record and gap are out of date
    words = _words(row.channel)
    touches = row.value("this_channel__touches")
    if _missing(touches) or touches < 1:
        return f"no {words.many} so far: a fresh channel for this HCP", (_CHANNEL, _CHANNEL_GAP)
    if feature in _CHANNEL_RECORD:
        n = int(touches)
        prior = row.channel_prior()
        engaged = _engaged_count(row.value("this_channel__eng_rate"), touches, prior)
        if not _supports(engaged, n, prior):
            return None  # a poor record is no reason to try again, whatever the model made of it
        return f"{_record(words.verb, engaged, n, words.one, words.many)} so far", (_CHANNEL,)
    # Recency: the count in a fatigue window is 0 or the gap is long, said as the gap.
    if feature != "this_channel__days_since" and row.value(feature) != 0:
        return None  # recent touches only ever argue against another one
    days = row.value("this_channel__days_since") + row.lapse.days
    if _missing(days) or days < MIN_GAP_DAYS:
        return None
    return f"no {words.one} in {_span(days)}", (_CHANNEL_GAP, _GAP)


def _topic_sentence(row: _Row) -> _Said:
    topic = _pretty(row.topic)
    if row.missed_any_contact():
        # Contacted since the snapshot, on a topic the live history does not say: it
        # may have been this one ("engaged with the only piece on access" after a
        # visit about access).
        return None
    touches = row.value("this_topic__touches")
    if _missing(touches) or touches < 1:
        return f"has not seen {topic} content yet", (_TOPIC,)
    n = int(touches)
    prior = row.topic_prior()
    engaged = _engaged_count(row.value("this_topic__eng_rate"), touches, prior)
    if not _supports(engaged, n, prior):
        return None
    return _record("engaged with", engaged, n, f"piece on {topic}", f"pieces on {topic}"), (_TOPIC,)


def _can_speak(feature: str) -> bool:
    """Whether :func:`_sentence` can say anything for ``feature`` (else always None)."""
    if feature in ("action__topic", "action__channel") or feature in _ALL_HISTORY:
        return True
    if feature in _CHANNEL_RECORD or feature in _CHANNEL_RECENCY or feature in _TOPIC_RECORD:
        return True
    # Other action columns, and another channel's or topic's history, never do.
    return "__" not in feature


@dataclass(frozen=True)
class _Roles:
    """Per feature of a model: its rank group for reasons (0: the item's own action,
    channel or topic; 1: what describes the HCP; 2: never a reason), whether it is an
    HCP attribute (its value quoted), whether a categorical one (stored as a code,
    shown by name), and whether it is said as a trait of the HCP (:func:`_trait_of`:
    every feature outside the history and action columns). The flags are Python
    bools: the loop over an item's features reads them one at a time, where a NumPy
    element costs more."""

    group: np.ndarray
    attribute: tuple[bool, ...]
    categorical: tuple[bool, ...]
    trait: tuple[bool, ...]


# By the model's id (a model is no dict key), each entry dropped with its model: a
# model's features never change once it is fitted, and every request asked for them.
_ROLES: dict[int, _Roles] = {}


def _roles(model: ScoringModel) -> _Roles:
    """The :class:`_Roles` of ``model``'s features, worked out on its first use."""
    found = _ROLES.get(id(model))
    if found is None:
        names = model.feature_names
        attributes = set(model.space.hcp_feature_names)
        categorical = set(model.space.categorical_hcp_columns)
        found = _ROLES[id(model)] = _Roles(
            group=np.array(
                [
                    2 if not _can_speak(f) else 0 if f.startswith(("this_", "action__")) else 1
                    for f in names
                ],
                dtype=np.int64,
            ),
            attribute=tuple(f in attributes for f in names),
            categorical=tuple(f in categorical for f in names),
            trait=tuple("__" not in f for f in names),
        )
        weakref.finalize(model, _ROLES.pop, id(model), None)
    return found


def _sentence(feature: str, row: _Row, hcp_value: float | str) -> _Said:
    """What one feature with a positive contribution says for one item, if anything.

    Returns the sentence and the facts it states (see ``_CHANNEL`` and the others),
    or None. Only sentences that read as support are returned: a zero or
    below-average engagement record, a touch a few days ago, a zero baseline or a
    below-average engager is left out even when the model scored it up.
    """
    if feature in _CHANNEL_RECORD or feature in _CHANNEL_RECENCY:
        return _channel_sentence(feature, row)
    if feature in _TOPIC_RECORD:
        return _topic_sentence(row)
    # Without a measured uplift the model scores engagement: it says who engages,
    # not what a touch adds.
    engagement_only = row.model.uplift_source == PREFERENCE_X_VALUE
    if feature == "action__topic":
        moves = "engages" if engagement_only else "moves"
        return f"{_pretty(row.topic)} content {moves} HCPs like this one", ("topic_effect",)
    if feature == "action__channel":
        words = _words(row.channel).many
        if engagement_only:
            return f"HCPs like this one engage with {words}", ("channel_effect",)
        return f"{words} work for HCPs like this one", ("channel_effect",)
    if feature.startswith("action__"):
        return None
    if feature == "all__outcome_mean_unengaged":
        value = row.value(feature)
        if _missing(value) or value < 0.05:
            return None  # "writes about 0.0" is no reason
        period = _period(row.model.metadata.get("decision_period_days"))
        # The mean over decisions the HCP did not engage with, touched or not: not
        # "without any contact" (a much-visited HCP has few untouched periods).
        return f"writes about {value:.1f} {period} when not engaging with outreach", ("baseline",)
    if feature in ("all__eng_rate", "all__eng_excess"):
        # Engaged more often than the channels it was touched on would predict.
        excess = row.value("all__eng_excess")
        if _missing(excess) or excess <= 0:
            return None
        return "responds to outreach more than most HCPs", (_ENGAGER,)
    if feature == "all__days_since_touch":
        if row.contacted_since_snapshot():
            return None  # contacted since the snapshot: the gap is out of date
        days = row.value(feature) + row.lapse.days
        if _missing(days):
            return "never contacted before", _NEVER_CONTACTED
        if days < MIN_GAP_DAYS:
            return None
        return f"last contacted {_span(days)} ago", (_GAP,)
    if "__" in feature:  # another channel's or topic's history: not this item's story
        return None
    trait = _trait_of(feature, hcp_value)
    # An HCP attribute that raised this item's expected effect: what it says is that
    # the model expects more of the item for HCPs like this, not a fact to act on alone.
    return None if trait is None else (_like([trait]), (feature, _LIKE))


def _trait_of(feature: str, hcp_value: float | str) -> str | None:
    """What :func:`_sentence` says of a feature outside every history and action
    column (an HCP attribute), as one trait of :func:`_like`: "decile: 6"; None
    for a missing value."""
    if _missing(hcp_value) or hcp_value == "":
        return None
    shown = _number(hcp_value) if isinstance(hcp_value, float) else _pretty(hcp_value)
    return f"{_pretty(feature)}: {shown}"


def _like(traits: Sequence[str]) -> str:
    return f"expected to do more for HCPs like this one ({', '.join(traits)})"


def _trait(sentence: str) -> str:
    """The attribute of a sentence made by :func:`_like` from one trait."""
    return sentence[sentence.index("(") + 1 : -1]


def segment_sentence(model: ScoringModel, hcp_row: int, action: int) -> str | None:
    """The effect of the action's channel in the HCP's segment, measured against the
    untouched decisions chance chose (the holdout, and no-touch decisions logged with
    a propensity), when it is a reason to act (its 95% interval lies above 0)."""
    table = model.metadata.get("segment_uplift")
    column = model.metadata.get("segment_column")
    if not table or not column:
        return None
    segment = str(model.hcp_text(column)[hcp_row])
    channel = str(model.action_channel_name[action])
    found = table.get(f"{segment}|{channel}")
    if found is None:
        return None
    effect, low, high = found
    if low <= 0:
        # Indistinguishable from no effect, or measured harmful: either way no
        # reason to act, so say nothing rather than mislead.
        return None
    return (
        f"among {_pretty(segment)} HCPs, {_words(channel).many} measured {effect:+.2f} outcome "
        f"versus HCPs left untouched at random (95% CI {low:+.2f} to {high:+.2f})"
    )


# Added to the lead of an action no fitted touch was of (ActionEvidence.new): its
# estimate comes from what the model learned of its channel and topic.
NEW_CONTENT = (
    "new content not yet in the training data: estimated from its channel, topic and this HCP"
)


def explain(
    model: ScoringModel,
    X: np.ndarray,
    action_rows: np.ndarray,
    hcp_rows: np.ndarray,
    scores: Scores,
    lapses: Sequence[Lapse] | None = None,
) -> list[list[str]]:
    """Reasons for each of the ``n`` items scored by rows ``X`` (n, n_features).

    ``action_rows`` and ``hcp_rows`` (n,) say which action and HCP each row is;
    ``scores`` are the items' own (``ScoringModel.score_rows`` of the same rows;
    the uplift model's gains, leaves and row terms in them are reused, not worked out
    again).
    ``lapses`` (n,): what each item's snapshot misses at the decision (default: the
    decision is at the cut-off).
    One contributions call covers all items. Returns ``n`` lists of at least one
    sentence each: the expected value first (saying so of new content), then at
    most one sentence per fact, each from a feature that pushed the item's
    score up and phrased as support for it.
    """
    if len(action_rows) == 0:
        return []
    uplift, p_engage = scores.uplift, scores.p_engage
    if model.uplift_model is not None:
        contrib = model.uplift_model.contributions(
            X, p_engage, scores.gains, scores.paths, scores.terms
        )
    else:
        contrib = model.engagement.contributions(X)
    names = model.feature_names
    roles = _roles(model)
    attribute, categorical, trait = roles.attribute, roles.categorical, roles.trait
    segment_column = str(model.metadata.get("segment_column") or "")
    # Per item, the features that pushed its score up and can be a reason: the
    # item's own channel and topic history first (what a rep can act on), then what
    # describes the HCP; each in order of contribution (ties: in feature order).
    rank_group = np.where(contrib > 0, roles.group[None, :], 2)
    order = np.lexsort((-contrib, rank_group), axis=1)
    n_candidates = np.add.reduce(rank_group < 2, axis=1).tolist()
    # The items' feature values as Python floats, read one at a time below (the same
    # values: a NumPy element converted one by one costs several times more).
    values = np.asarray(X).tolist()
    hcps = np.asarray(hcp_rows).tolist()
    engagement_only = model.uplift_source == PREFERENCE_X_VALUE
    expected = (np.asarray(p_engage) if engagement_only else np.asarray(uplift)).tolist()
    out: list[list[str]] = []
    for i, a in enumerate(np.asarray(action_rows).tolist()):
        h = hcps[i]
        cost = float(model.action_cost[a])
        # No "; " inside: picks files join an item's reasons with it.
        levers = f", business levers: {model.lever_text[a]}" if model.lever_text[a] else ""
        if engagement_only:
            lead = (
                f"expected engagement {expected[i]:.0%} x value (no measured uplift yet, "
                f"cost {cost:.2f}{levers})"
            )
        else:
            lead = (
                f"expected {expected[i]:+.2f} outcome versus no contact, for a cost of {cost:.2f}"
            )
            if levers:
                lead += f" ({levers.removeprefix(', ')})"
        if model.evidence.new[a]:
            lead += f", {NEW_CONTENT}"
        # The lead is the fallback: every item has at least this one reason.
        reasons = [lead]
        stated: set[str] = set()
        segment = segment_sentence(model, h, a)
        if segment:
            reasons.append(segment)
            stated.update(("channel_effect", segment_column))
        row = _Row(model, values[i], a, AT_CUTOFF if lapses is None else lapses[i])
        budget = len(reasons) + MAX_REASONS
        # HCP attributes, said together in one sentence where the first one falls (its
        # place kept, the sentence made once all are known).
        traits: list[str] = []
        like_at = 0
        for j in order[i, : n_candidates[i]].tolist():
            if len(reasons) >= budget:
                break
            feature = names[j]
            if attribute[j] and model.hcp_sharing(feature)[h] < MIN_QUOTED_HCPS:
                continue  # a value few HCPs hold could point at this one: not quoted
            value = str(model.hcp_text(feature)[h]) if categorical[j] else values[i][j]
            if trait[j]:
                said_trait = _trait_of(feature, value)
                # Stated already: by the segment's sentence, or as the whole of the
                # attributes' sentence so far (the same words).
                if said_trait is None or feature in stated or ", ".join(traits) == said_trait:
                    continue
                stated.add(feature)
                if not traits:
                    like_at = len(reasons)
                    reasons.append("")
                traits.append(said_trait)
                continue
            said = _sentence(feature, row, value)
            if said is None:
                continue
            sentence, facts = said
            if not stated.isdisjoint(facts) or sentence in reasons:
                continue
            stated.update(facts)
            reasons.append(sentence)
        if traits:
            reasons[like_at] = _like(traits)
        out.append(reasons)
    return out
