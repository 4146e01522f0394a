"""Logged decisions as bandit evidence: what was served, with which probability, for what.

Shared by the uplift report, retraining and the off-policy gate. A logged decision is
one served answer (``recommendations`` row) and the feedback that came back for it;
its *action* is the rank-1 item (``None`` for a holdout or an empty answer).

Probability of the logged choice. A served rank-1 item carries the propensity it
was served with. A no-action answer (holdout or empty) carries ``p_no_action``, the
probability the serving policy had of answering with no action, as it computed it
when answering: the live rules (caps, cool-downs, dismissals, opt-outs) and a send
list's consent that had emptied the greedy list are in it. Answers logged before
migration 0004 have none; theirs is rebuilt: under epsilon-greedy with holdout
rate ``h``, a request with ``n`` eligible candidates gets no action with
probability ``h + (1 - h) * [(1 - epsilon) if greedy is empty else 0]`` (``1`` when
``n = 0``). For an empty non-holdout answer the greedy list was empty; for a
holdout answer it is known only by re-scoring with the model that served it
(:func:`serving_greedy_empty`), which sees none of those live rules, so a holdout
answer they had emptied gets ``h``, too small.

Under a random split. With a challenger answering a share of the HCPs
(``NEXTBEST_CHALLENGER_SHARE``), a draw per HCP chose which version answered, and
the answer logs the version it could have chosen instead and the probability it had
of choosing the one that answered (``split_with``, ``split_share``). The probability
the decision's action had of being served is then the mixture of both versions'
(:func:`split_probability`): on an HCP the champion answered, the challenger's own
choice is served with about ``share x (1 - epsilon)``, not ``epsilon / n``, and an
estimator valuing the challenger with it is not left to a few terms weighted
``n / epsilon``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from nextbest import registry
from nextbest.contract.schema import REP_CHANNELS_FILTER, filter_channels
from nextbest.learning.scoring import ScoringModel, utc_timestamp
from nextbest.policy.exploration import EpsilonGreedy
from nextbest.service.picks import picks_frame
from nextbest.settings import Settings
from nextbest.storage.db import store_session
from nextbest.storage.repository import contacts_between, logged_decisions

NO_ACTION = -1


def reserved_for_gate(recommendation_ids: Iterable[str], share: float) -> np.ndarray:
    """``(n,)`` bool: the decisions reserved for off-policy evaluation.

    A fixed ``share`` of logged decisions, chosen by a hash of the recommendation id
    (stable across runs and processes), is never trained on: a challenger evaluated
    on the very outcomes it learned from would look better than it is.
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"the share reserved for the gate must be in [0, 1), got {share}")
    digests = (
        int.from_bytes(hashlib.blake2b(str(rid).encode(), digest_size=8).digest(), "big")
        for rid in recommendation_ids
    )
    return np.fromiter((d / 2**64 < share for d in digests), dtype=bool)


def load_decisions(
    session: Session,
    *,
    since: datetime | None = None,
    model_version: str | None = None,
    with_outcome: bool = True,
    hcp_outcome_events: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Logged decisions with serving details (``logged_decisions(details=True)``).

    ``with_outcome`` keeps only decisions with at least one ``outcome`` event: a
    decision whose result never came back says nothing about value.
    ``hcp_outcome_events``: the outcome events sent by HCP, if the caller read them
    already (see :func:`~nextbest.storage.repository.logged_decisions`).
    """
    frame = logged_decisions(
        session,
        since=since,
        model_version=model_version,
        details=True,
        hcp_outcome_events=hcp_outcome_events,
    )
    return with_outcome_only(frame) if with_outcome else frame


def with_outcome_only(decisions: pd.DataFrame) -> pd.DataFrame:
    """The decisions of ``decisions`` (a ``load_decisions`` frame) with at least one
    ``outcome`` event, renumbered from 0, its ``attrs`` kept: what
    ``load_decisions(with_outcome=True)`` returns, without reading the log again."""
    kept = decisions[np.isfinite(decisions["outcome"].to_numpy(dtype=np.float64))]
    kept = kept.reset_index(drop=True)
    kept.attrs.update(decisions.attrs)  # outcomes_by_hcp: what the report tells
    return kept


def logged_no_action(decisions: pd.DataFrame) -> np.ndarray:
    """``(n,)`` float: the logged ``p_no_action`` of each decision, NaN where the
    answer was logged without it (before migration 0004, or a frame without the
    column)."""
    if "p_no_action" not in decisions:
        return np.full(len(decisions), np.nan)
    return pd.to_numeric(decisions["p_no_action"]).to_numpy(dtype=np.float64, na_value=np.nan)


def needs_rescoring(decisions: pd.DataFrame) -> np.ndarray:
    """``(n,)`` bool: the holdout answers logged without ``p_no_action``, whose
    probability of no action only re-scoring can recover (:func:`serving_greedy_empty`)."""
    holdout = decisions["holdout"].to_numpy(dtype=bool)
    return holdout & np.isnan(logged_no_action(decisions))


def no_action_probability(decisions: pd.DataFrame, greedy_empty: np.ndarray | None) -> np.ndarray:
    """Probability, per decision, that the serving policy answered with no action.

    The logged ``p_no_action`` wherever there is one. Otherwise it is rebuilt from
    ``holdout``, ``n_candidates``, ``epsilon``, ``holdout_rate`` and ``action_id``
    (which ``decisions`` needs): ``greedy_empty`` ``(n,)`` bool says whether the
    serving model's greedy list was empty; None assumes it was not for holdout
    answers (then the probability of a holdout answer is its lower bound, the
    holdout rate).
    """
    h = decisions["holdout_rate"].to_numpy(dtype=np.float64)
    eps = decisions["epsilon"].to_numpy(dtype=np.float64)
    n = decisions["n_candidates"].to_numpy(dtype=np.int64)
    holdout = decisions["holdout"].to_numpy(dtype=bool)
    empty_answer = decisions["action_id"].isna().to_numpy() & ~holdout
    empty = empty_answer if greedy_empty is None else (np.asarray(greedy_empty) | empty_answer)
    rebuilt = h + (1.0 - h) * np.where(n == 0, 1.0, (1.0 - eps) * empty)
    logged = logged_no_action(decisions)
    p = np.where(np.isnan(logged), rebuilt, logged)
    return np.clip(p, 1e-12, 1.0)


def serving_greedy_empty(
    decisions: pd.DataFrame,
    load_model: Callable[[str], ScoringModel | None],
    contacts: pd.DataFrame | None = None,
) -> tuple[np.ndarray, int]:
    """Whether the model that served each holdout answer logged without
    ``p_no_action`` (before migration 0004) had an empty greedy list.

    A holdout answer hides what the serving model would have served; for those
    answers it is found by re-scoring the decision with that model (``model_version``
    of the decision, loaded by ``load_model``, which returns None for a version it
    cannot load). The re-scoring replays the model's own eligibility, not the live
    rules of the time. A holdout answer logged with its ``p_no_action`` needs none
    of this, and no model is loaded for it. ``contacts``: as :func:`greedy_actions`
    takes them, to re-score with the history each model served that day with.

    Returns:
        ``(greedy_empty, n_unresolved)``: ``(n,)`` bool, True for a re-scored holdout
        answer whose serving model's greedy list was empty (False for every other
        row, which :func:`no_action_probability` does not need it for), and the
        number of holdout answers that needed re-scoring but whose serving model
        could not be loaded (they keep the lower bound, the holdout rate).
    """
    out = np.zeros(len(decisions), dtype=bool)
    wanted = needs_rescoring(decisions)
    if not wanted.any():
        return out, 0
    unresolved = 0
    rows = np.flatnonzero(wanted)
    versions = decisions["model_version"].astype(str).to_numpy()[rows]
    for version in dict.fromkeys(versions):
        index = rows[versions == version]
        model = load_model(version)
        if model is None:
            unresolved += len(index)
            continue
        actions = greedy_actions(model, decisions.iloc[index].reset_index(drop=True), contacts)
        out[index] = np.array([a is None for a in actions], dtype=bool)
    return out, unresolved


def version_loader(
    settings: Settings, known: dict[str, ScoringModel] | None = None
) -> Callable[[str], ScoringModel | None]:
    """Load registered versions by number, each once; None for one that cannot be loaded.

    ``known`` seeds the cache with models the caller already holds.
    """
    from mlflow.exceptions import MlflowException

    cache: dict[str, ScoringModel | None] = dict(known or {})

    def load(version: str) -> ScoringModel | None:
        if version not in cache:
            try:
                cache[version] = registry.load_version(settings, version)
            except (MlflowException, OSError, registry.ArtifactsUnreadableError):
                cache[version] = None
        return cache[version]

    return load


def greedy_actions(
    model: ScoringModel, decisions: pd.DataFrame, contacts: pd.DataFrame | None = None
) -> np.ndarray:
    """The action ``model`` would serve first at each decision (no exploration).

    Returns ``(n,)`` object: an ``action_id``, or None when nothing is worth its
    cost or the HCP is unknown to the model. Decisions are scored in groups of
    (purpose, channel filter, day) with the same eligibility rules as the API
    (consent, specialty, approval window, purpose); rules that need live contact
    history are not replayed.

    ``contacts`` (every HCP's contacts since the model's cut-off, as
    :func:`~nextbest.storage.contacts_between` reads them: with each one's action and
    engagement, so that its records move as the server's did) replays the model as a
    server moving its history on each day
    (``NEXTBEST_FRESH_HISTORY``) served it: each decision is scored with the history
    moved to the start (00:00 UTC) of the UTC day it was served (``timestamp``; its
    eligibility stays that of the day decided for), moved once per day
    (:meth:`~nextbest.learning.scoring.ScoringModel.advanced`) by the contacts the
    store held at that moment when ``contacts`` say when each was reported
    (:func:`known_by`). A decision served on
    the day of the model's :attr:`~nextbest.learning.scoring.ScoringModel.features_as_of`
    or before is scored with the history as it is. None, or a model that cannot
    advance: every decision with the history as it is.
    """
    out = np.full(len(decisions), None, dtype=object)
    if not len(decisions):
        return out
    # Replayed on the day each answer was decided for (a plan for tomorrow, served
    # today, on tomorrow's approval windows), else the day it was served.
    when = decisions["decided_for"] if "decided_for" in decisions else decisions["timestamp"]
    day = pd.to_datetime(when).dt.normalize()
    purpose = decisions.get("purpose", "promotional")
    channel = (
        decisions["channel_filter"].astype(object).where(decisions["channel_filter"].notna(), "")
        if "channel_filter" in decisions
        else ""
    )
    as_is = utc_timestamp(model.features_as_of)
    history: pd.Series | pd.Timestamp = as_is
    if contacts is not None and model.advances:
        # The day a server moving its history each morning served it with.
        served = pd.to_datetime(decisions["timestamp"], utc=True).dt.normalize()
        history = served.where(served > as_is, as_is)
    keys = pd.DataFrame(
        {"purpose": purpose, "channel": channel, "day": day, "history": history},
        index=decisions.index,
    )
    moved = {as_is: model}
    served_channels = set(model.catalog["channel"].astype(str))
    # Positions, not index labels: callers pass slices of a larger frame.
    groups = keys.groupby(["purpose", "channel", "day", "history"], sort=False).indices
    for key, rows in groups.items():
        group_purpose, group_channel, group_day, group_history = cast(
            tuple[str, str, pd.Timestamp, pd.Timestamp], key
        )
        if (
            group_channel
            and group_channel != REP_CHANNELS_FILTER
            and filter_channels(group_channel) is None
            and group_channel not in served_channels
        ):
            # Limited to a channel this model's catalog lacks (a channel-bound key's,
            # or one withdrawn since): it would serve nothing there.
            continue
        scoring = moved.get(group_history)
        if scoring is None:
            assert contacts is not None  # other days only with them
            scoring = moved[group_history] = model.advanced(
                group_history, known_by(contacts, group_history)
            )
        hcp_ids = decisions["hcp_id"].to_numpy()[rows]
        picks = picks_frame(
            scoring,
            hcp_ids=list(dict.fromkeys(hcp_ids)),
            k=1,
            channel=str(group_channel) or None,
            purpose=str(group_purpose),
            on=pd.Timestamp(group_day).to_pydatetime(),
            skip_unknown=True,
        )
        best = dict(zip(picks["hcp_id"], picks["action_id"], strict=True))
        out[rows] = [best.get(h) for h in hcp_ids]
    return out


def split_versions(decisions: pd.DataFrame) -> list[str]:
    """The versions the logged random splits of ``decisions`` (a ``load_decisions``
    frame) could have chosen instead of the one that answered (see
    :func:`split_probability`), in the order first met."""
    if "split_with" not in decisions:
        return []
    return [str(v) for v in dict.fromkeys(decisions["split_with"].dropna())]


@dataclass(frozen=True)
class SplitProbability:
    """What :func:`split_probability` found: ``pscore`` ``(n,)``, the probability of
    each logged action; ``mixed``, the decisions valued with both versions' (a
    random split chose who answered); ``unmixed``, those a split chose whose other
    version could not be loaded, left with the answering version's own."""

    pscore: np.ndarray
    mixed: int
    unmixed: int


def split_probability(
    decisions: pd.DataFrame,
    action: np.ndarray,
    pscore: np.ndarray,
    vocabulary: pd.Index,
    greedy_of: Callable[[str, np.ndarray], tuple[np.ndarray, pd.Index] | None],
) -> SplitProbability:
    """The probability each logged decision's action had of being served, counting
    the random split that chose the answering version.

    ``action`` ``(n,)``: the logged action codes in ``vocabulary`` (``NO_ACTION`` for
    none); ``pscore`` ``(n,)``: their probability under the version that answered.
    Where a draw per HCP chose between that version and ``split_with`` (probability
    ``split_share`` of the answering one), and the answer was drawn epsilon-greedily,
    the probability is ``q * pscore + (1 - q) * p_other``, ``p_other`` the other
    version's: ``(1 - h) * (epsilon / n + (1 - epsilon) * [its greedy choice])`` for
    an action its catalog lists (0 for one it lacks), ``h + (1 - h) * (1 - epsilon) *
    [its greedy list empty]`` for no action (1 with no candidate), with the answer's
    holdout rate ``h``, epsilon and number of candidates ``n`` (the same rules, so
    the same candidates where the two catalogs agree). The holdout draw is the
    HCP's whichever version answers. A split is random over HCPs, so the mixture is the probability
    the action had before the draw, and an estimator dividing by it stays unbiased
    over the draws.

    ``greedy_of(version, rows)``: the other version's greedy first choice at the
    decisions at positions ``rows`` (codes in ``vocabulary``, ``NO_ACTION`` for
    none, any other negative code for an action ``vocabulary`` lacks) and the
    action ids its catalog lists; None when that version cannot be loaded (those
    decisions keep ``pscore``). Its greedy choice is replayed without the live rules
    (:func:`greedy_actions`): where caps moved its real choice, ``p_other`` is off.
    Softmax answers keep ``pscore`` (the other version's scores are not replayed).
    """
    out = np.asarray(pscore, dtype=np.float64).copy()
    versions = split_versions(decisions)
    if not versions:
        return SplitProbability(out, 0, 0)
    other = decisions["split_with"].to_numpy(dtype=object)
    share = pd.to_numeric(decisions["split_share"]).to_numpy(dtype=np.float64, na_value=np.nan)
    epsilon_greedy = decisions["policy"].to_numpy(dtype=object) == EpsilonGreedy.name
    drawn = np.isfinite(share) & epsilon_greedy
    h = decisions["holdout_rate"].to_numpy(dtype=np.float64)
    eps = decisions["epsilon"].to_numpy(dtype=np.float64)
    n = decisions["n_candidates"].to_numpy(dtype=np.int64)
    mixed = unmixed = 0
    for version in versions:
        rows = np.flatnonzero(drawn & (other == version))
        if not len(rows):
            continue
        found = greedy_of(version, rows)
        if found is None:
            unmixed += len(rows)
            continue
        greedy, listed = found
        a, keep = action[rows], 1.0 - h[rows]
        offered = vocabulary.isin(listed)[np.where(a == NO_ACTION, 0, a)]
        chosen = (1.0 - eps[rows]) * (greedy == a) + eps[rows] / np.maximum(n[rows], 1)
        nothing = np.where(
            n[rows] == 0, 1.0, h[rows] + keep * (1.0 - eps[rows]) * (greedy == NO_ACTION)
        )
        p_other = np.where(a == NO_ACTION, nothing, keep * chosen * offered)
        q = share[rows]
        out[rows] = q * out[rows] + (1.0 - q) * p_other
        mixed += len(rows)
    return SplitProbability(np.clip(out, 1e-12, 1.0), mixed, unmixed)


def known_by(contacts: pd.DataFrame, moment: pd.Timestamp) -> pd.DataFrame:
    """``contacts`` as a server reading the store at ``moment`` had them: those reported
    before it (``reported_at``), engaged only by an engagement reported before it
    (``engagement_reported_at``), as :func:`~nextbest.storage.contacts_between` reads
    them with ``reported``. A feed that reports yesterday's sends this morning, after
    the server moved its history at midnight, moved that day's scores by none of
    them. Contacts without their reported times: all of them, as they are."""
    if "reported_at" not in contacts:
        return contacts
    known = contacts[contacts["reported_at"] < moment]
    late = known["engagement_reported_at"] >= moment
    return known.assign(engaged_at=known["engaged_at"].where(~late)) if late.any() else known


def action_codes(
    action_ids: Iterable[object], vocabulary: pd.Index, *, unlisted: int | None = None
) -> np.ndarray:
    """Integer codes of ``action_ids`` in ``vocabulary``; ``-1`` for None (no action).

    ``unlisted``: the code of an action ``vocabulary`` lacks (below ``-1``).

    Raises:
        ValueError: an action is neither None nor in the vocabulary, without ``unlisted``.
    """
    values = [
        None if a is None or (isinstance(a, float) and np.isnan(a)) else a for a in action_ids
    ]
    known = [a for a in values if a is not None]
    codes = vocabulary.get_indexer(pd.Index(known, dtype=object))
    if unlisted is not None:
        codes = np.where(codes < 0, unlisted, codes)
    elif (codes < 0).any():
        missing = sorted({str(a) for a, c in zip(known, codes, strict=True) if c < 0})[:5]
        raise ValueError(f"actions not in the catalog: {', '.join(missing)}")
    out = np.full(len(values), NO_ACTION, dtype=np.int64)
    mask = np.array([a is not None for a in values], dtype=bool)
    out[mask] = codes
    return out


def replay_contacts(
    settings: Settings,
    models: Sequence[ScoringModel],
    decisions: pd.DataFrame,
    load_model: Callable[[str], ScoringModel | None] | None = None,
) -> pd.DataFrame | None:
    """The contacts to replay ``models`` with, as the server serves them (the gate's
    and the uplift report's replay).

    With ``fresh_history`` on (``NEXTBEST_FRESH_HISTORY``), a server moves its model's
    history on to each day by the store's contacts since the cut-off: every HCP's
    contacts from the earliest cut-off of the models that can move (``models``, and
    the versions ``load_model`` loads to re-score the holdout answers of
    ``decisions`` logged without their probability of no action) to the end of the
    newest decision's UTC day (``contacts_between`` on the settings' store), for
    :func:`~nextbest.loop.evidence.greedy_actions`, with when each was reported. None
    when the setting is off, or
    no such model can move (artifacts from before snapshots kept their recent
    touches): they are replayed with their snapshots' history.
    """
    if not settings.fresh_history or not len(decisions):
        return None
    replayed = list(models)
    if load_model is not None:
        rescored = decisions.loc[needs_rescoring(decisions), "model_version"].astype(str)
        replayed += [m for m in map(load_model, dict.fromkeys(rescored)) if m is not None]
    cut_offs = pd.to_datetime([m.as_of for m in replayed if m.advances], utc=True)
    if not len(cut_offs):
        return None
    served = pd.to_datetime(decisions["timestamp"], utc=True)
    end = served.max().normalize() + pd.Timedelta(days=1)
    with store_session(settings.resolved_database_url) as session:
        return contacts_between(
            session,
            start=cut_offs.min().to_pydatetime(),
            end=end.to_pydatetime(),
            reported=True,  # each day moved by what the store held then (known_by)
        )
