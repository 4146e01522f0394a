"""Retrain with feedback: history plus logged recommendations joined with their outcomes.

Which logged decisions join the training data: those with at least one ``outcome``
feedback event (a decision whose result never came back would teach the model a
zero outcome that did not happen). Each becomes an ``interactions`` row:
``action_id`` = the rank-1 item served (none for a holdout or empty answer),
``engaged`` = any engagement event came back, ``outcome`` = the sum of its outcome
values, ``propensity`` = the probability the serving policy had of that choice
(rank-1 propensity; for a no-action answer the probability of answering with no
action, as logged; a holdout answer logged before it was recorded gets it by
re-scoring with the serving version, whether its greedy list was empty; the
holdout rate, its lower bound, only when that version cannot be loaded), ``holdout`` =
the randomized-control flag. Rows for HCPs that are not in the history's ``hcps``
file are left out and counted, and so is the share of decisions reserved for the
off-policy gate (``evaluation_share`` in ``training/gate.yaml``).

A history re-exported from the CRM after the service's sends lists them again.
Those rows that name the ``recommendation_id`` they were sent under are left out of
the history (:func:`logged_in_history`): the logged decision is learned instead, with
its propensity (or kept for the gate). Without ids they cannot be told from the CRM's
own touches for sure; :func:`history_repeats` counts the touches that look like them
and the run warns.

A feed that sends outcomes but no engagement events (a weekly NRx feed) leaves
every touched decision at ``engaged`` = 0, which teaches the engagement model that
nobody engages. :func:`missing_engagement` finds the channels where that happened
(far fewer engaged touches than the history's rate allows) and the run says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import binom
from sqlalchemy.orm import Session

from nextbest import registry
from nextbest.contract import Dataset
from nextbest.contract.validate import validate_interactions
from nextbest.learning.config import TrainConfig
from nextbest.learning.scoring import ScoringModel
from nextbest.learning.train import Progress, TrainResult, train
from nextbest.loop.evidence import (
    load_decisions,
    needs_rescoring,
    no_action_probability,
    replay_contacts,
    reserved_for_gate,
    serving_greedy_empty,
    version_loader,
)
from nextbest.loop.gate import SHARE_TAG, GateConfig
from nextbest.registry import ModelVersionInfo, TrainingCode
from nextbest.settings import Settings, without_password
from nextbest.storage.db import store_session
from nextbest.storage.repository import OUTCOME_WINDOW, count_logged_decisions, decision_times
from nextbest.wording import plural

if TYPE_CHECKING:
    from distributed import Client

# A channel's engagement in the feedback is taken as unreported when its touched
# decisions engaged at less than this share of the history's rate on the channel...
ENGAGEMENT_SHORTFALL_RATIO = 0.5
# ...and so few engaged touches had this small a probability at the history's rate.
ENGAGEMENT_SHORTFALL_P = 1e-3


@dataclass(frozen=True)
class FeedbackRows:
    """Logged decisions turned into contract ``interactions`` rows."""

    interactions: pd.DataFrame
    n_logged: int
    n_unknown_hcp: int
    n_holdout: int
    n_reserved: int = 0
    n_holdout_unresolved: int = 0
    n_unknown_action: int = 0  # served an action the catalog no longer lists
    # The first few HCPs of those decisions the hcps file does not hold, sorted.
    unknown_hcp_ids: tuple[str, ...] = ()
    # Every decision joined or reserved for the gate: ``recommendation_id``, ``hcp_id``,
    # ``action_id`` (None for no action) and ``at``, when it took effect (naive UTC).
    logged: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)


def feedback_note(feedback: FeedbackRows) -> str:
    """What retrain says of the logged decisions it used: those that joined the
    history, those kept apart; a count of none is left unsaid."""
    n = len(feedback.interactions)
    if n:
        joined = (
            f"{plural(n, 'logged decision')} with outcomes joined the history and "
            f"{'was fitted' if n == 1 else 'were all fitted'}"
        )
    else:
        joined = "no logged decision with an outcome joined the history"
    if feedback.n_holdout:
        joined += f", {feedback.n_holdout:,} of them from the holdout"
    apart = []
    if feedback.n_reserved:
        more = " more" if n else ""
        were = "was" if feedback.n_reserved == 1 else "were"
        apart.append(f"{feedback.n_reserved:,}{more} {were} reserved for the gate")
    if feedback.n_unknown_hcp:
        were = "was" if feedback.n_unknown_hcp == 1 else "were"
        apart.append(f"{feedback.n_unknown_hcp:,} for HCPs not in the hcps file {were} left out")
    said = [joined, " and ".join(apart)] if apart else [joined]
    return "; ".join([*said, "the evaluation slice is the newest of the history"])


def feedback_interactions(
    decisions: pd.DataFrame, dataset: Dataset, *, greedy_empty: np.ndarray | None = None
) -> FeedbackRows:
    """Contract rows from logged decisions that have an outcome (``load_decisions``).

    A no-action answer's propensity is its logged ``p_no_action``. For a holdout
    answer logged without it, ``greedy_empty`` ``(n,)`` bool
    (:func:`~nextbest.loop.evidence.serving_greedy_empty`) says whether the serving
    version's greedy list was empty; None takes the holdout rate, a lower bound.
    """
    known = decisions["hcp_id"].isin(set(dataset.hcps["hcp_id"]))
    # Content retired from the catalog since it was served has no attributes to learn
    # from: left out and counted, like decisions of HCPs no longer in hcps.
    listed = decisions["action_id"].isna() | decisions["action_id"].isin(
        set(dataset.catalog["action_id"])
    )
    unknown_hcp = ~known
    known &= listed
    kept = decisions[known].reset_index(drop=True)
    no_action = kept["action_id"].isna().to_numpy()
    kept_empty = None if greedy_empty is None else np.asarray(greedy_empty)[known.to_numpy()]
    propensity = np.where(
        no_action,
        no_action_probability(kept, kept_empty),
        kept["propensity"].to_numpy(dtype=np.float64),
    )
    raw = pd.DataFrame(
        {
            "hcp_id": kept["hcp_id"].astype(str),
            "timestamp": pd.to_datetime(kept["timestamp"]).dt.strftime("%Y-%m-%dT%H:%M:%S.%f"),
            "action_id": kept["action_id"].astype(object).where(~no_action, ""),
            # A no-action answer has nothing to engage with: an open or a visit
            # reported for a held-out HCP (stored, and warned of) was some other
            # contact, and the contract refuses engaged = 1 on a no-touch row.
            "engaged": kept["engaged"].astype("int64").where(~no_action, 0),
            "outcome": kept["outcome"].astype("float64"),
            "propensity": propensity,
            "holdout": kept["holdout"].astype(bool),
            "recommendation_id": kept["recommendation_id"].astype(str),
        }
    )
    rows = validate_interactions(
        raw, file="logged decisions", hcps=dataset.hcps, catalog=dataset.catalog
    )
    return FeedbackRows(
        interactions=rows,
        n_logged=len(decisions),
        n_unknown_hcp=int(unknown_hcp.sum()),
        n_holdout=int(kept["holdout"].sum()),
        n_unknown_action=int((~unknown_hcp & ~listed).sum()),
        unknown_hcp_ids=tuple(
            sorted(decisions.loc[unknown_hcp, "hcp_id"].astype(str).unique())[:3]
        ),
    )


def with_feedback(dataset: Dataset, rows: pd.DataFrame) -> Dataset:
    """``dataset`` with ``rows`` appended to its interactions, in contract order."""
    columns = list(dataset.interactions.columns)
    extra = rows.reindex(columns=columns)
    combined = pd.concat([dataset.interactions, extra], ignore_index=True)
    combined = combined.sort_values(["hcp_id", "timestamp"], kind="stable").reset_index(drop=True)
    return Dataset(dataset.hcps, dataset.catalog, combined, source=dataset.source)


@dataclass(frozen=True)
class EngagementShortfall:
    """A channel whose touched logged decisions engaged implausibly rarely."""

    channel: str
    n_touched: int
    n_engaged: int
    history_rate: float

    def describe(self) -> str:
        return (
            f"{self.channel}: {self.n_engaged:,} of {self.n_touched:,} touched logged "
            f"decisions had an engagement event ({self.n_engaged / self.n_touched:.1%}), "
            f"the history's rate is {self.history_rate:.1%}"
        )


def missing_engagement(feedback: pd.DataFrame, history: pd.DataFrame) -> list[EngagementShortfall]:
    """Channels whose engagement events did not come back with the outcomes.

    ``feedback`` and ``history`` are contract ``interactions`` rows. A channel is
    named when its touched feedback rows engaged at under
    ``ENGAGEMENT_SHORTFALL_RATIO`` of the history's rate on that channel and, at
    that rate, so few engaged touches (or fewer) had a binomial probability under
    ``ENGAGEMENT_SHORTFALL_P``: a serving policy that targets differently moves the
    rate, it does not cut it to a fraction.
    """
    out = []
    touched = history[history["action_id"].notna()]
    rates = touched.groupby("channel", observed=True)["engaged"].mean()
    fed = feedback[feedback["action_id"].notna()]
    for channel, engaged in fed.groupby("channel", observed=True)["engaged"]:
        p = float(rates.get(channel, 0.0))
        n, k = len(engaged), int(engaged.sum())
        short = p > 0 and k < ENGAGEMENT_SHORTFALL_RATIO * p * n
        if short and float(binom.cdf(k, n, p)) < ENGAGEMENT_SHORTFALL_P:
            out.append(EngagementShortfall(str(channel), n, k, p))
    return out


def engagement_warning(shortfalls: list[EngagementShortfall]) -> str:
    """What a run with ``shortfalls`` says: its first note, and the command's last line."""
    return (
        "WARNING: the feedback carries outcomes but hardly any engagement events: "
        + "; ".join(s.describe() for s in shortfalls)
        + ". Every such decision was learned as not engaged, so this challenger "
        "underestimates engagement on those channels and will serve them less. Send "
        "the engagement events (opened, clicked, attended, accepted, completed) with "
        "their recommendation_id for these decisions, then retrain; until then do not "
        "promote it without reading the gate"
    )


class HistoryOnlyError(ValueError):
    """Nothing logged to learn from: the new version would be a model of the history
    alone."""


class OtherDataError(ValueError):
    """Most logged decisions are for HCPs the data does not hold: the recommendation
    log and ``--data`` are of different worlds."""


def refuse_other_data(settings: Settings, dataset: Dataset, feedback: FeedbackRows) -> None:
    """Raise :class:`OtherDataError` when more than half of the logged decisions to
    learn from are for HCPs not in ``dataset``'s hcps file: a models directory (and
    its log) of another world, or the wrong ``--data``. Trained all the same, the
    challenger would not know most HCPs it was served to, and the gate would refuse it."""
    n, unknown = feedback.n_logged, feedback.n_unknown_hcp
    if not n or unknown * 2 <= n:
        return
    source = f" of {dataset.source}" if dataset.source is not None else ""
    named = ", ".join(feedback.unknown_hcp_ids)
    raise OtherDataError(
        f"{unknown:,} of the {n:,} logged decisions with an outcome to learn from "
        f"({unknown / n:.0%}) are for HCPs not in the hcps file{source} (which holds "
        f"{plural(len(dataset.hcps), 'HCP')}; logged, not in it: {named}, ...): the "
        f"recommendation log ({without_password(settings.resolved_database_url)}) was "
        "served from other data than this. Give --data the data this models directory's "
        "champion was trained on, or point NEXTBEST_MODELS_DIR "
        f"({settings.resolved_models_dir}) and NEXTBEST_DATABASE_URL at this data's own; "
        "nothing was trained"
    )


def _nothing_logged(settings: Settings, *, since: datetime | None, served: int) -> str:
    """What the recommendation log lacks, ``served``: the answers it holds (at or
    after ``since``)."""
    store = without_password(settings.resolved_database_url)
    when = f"--since {since.isoformat()}: " if since is not None else ""
    then = " since then" if since is not None else ""
    lacks = f"{when}the recommendation log ({store}) holds no logged decision with an outcome{then}"
    if not served:
        return f"{lacks}: no decision was served{then}"
    return (
        f"{lacks}: {served:,} decision{'s were' if served != 1 else ' was'} served{then}, "
        "and no outcome came back for any of them"
    )


@dataclass
class RetrainResult:
    result: TrainResult
    feedback: FeedbackRows
    version: str
    run_id: str | None
    warnings: list[str] = dataclasses.field(default_factory=list)
    # Asked for alias champion and not given it: why (ModelVersionInfo.not_champion).
    not_champion: str | None = None
    # What registering it said (the code that trained it, where its source patch is).
    registered: ModelVersionInfo | None = None


def read_feedback_rows(
    session: Session,
    dataset: Dataset,
    *,
    since: datetime | None,
    reserved_share: float = 0.0,
    load_model: Callable[[str], ScoringModel | None] | None = None,
    settings: Settings | None = None,
) -> FeedbackRows:
    """Logged decisions with an outcome (at or after ``since``) as contract rows,
    without the share reserved for the gate.

    Holdout answers carry their logged probability of no action. ``load_model`` (a
    version number -> its model, or None) lets those logged without it (before
    schema revision 0004) carry theirs, re-scored; without it they get the holdout
    rate. ``settings``: with ``fresh_history`` on, they are re-scored on the history
    their version was served with that day (:func:`replay_contacts`).
    """
    decisions = load_decisions(session, since=since)
    reserved = reserved_for_gate(decisions["recommendation_id"], reserved_share)
    train_rows = decisions[~reserved].reset_index(drop=True)
    if load_model is not None:
        contacts = (
            None if settings is None else replay_contacts(settings, [], train_rows, load_model)
        )
        greedy_empty, unresolved = serving_greedy_empty(train_rows, load_model, contacts)
    else:
        greedy_empty, unresolved = None, int(needs_rescoring(train_rows).sum())
    rows = feedback_interactions(train_rows, dataset, greedy_empty=greedy_empty)
    kept = train_rows["recommendation_id"].isin(set(rows.interactions["recommendation_id"]))
    both = pd.concat([train_rows[kept.to_numpy()], decisions[reserved]], ignore_index=True)
    decided = both["decided_for"] if "decided_for" in both else both["timestamp"]
    logged = pd.DataFrame(
        {
            "recommendation_id": both["recommendation_id"].astype(str),
            "hcp_id": both["hcp_id"].astype(str),
            "action_id": both["action_id"].astype(object),
            "at": decision_times(both["timestamp"], decided).dt.tz_localize(None),
        }
    )
    return dataclasses.replace(
        rows, n_reserved=int(reserved.sum()), n_holdout_unresolved=unresolved, logged=logged
    )


def logged_in_history(history: pd.DataFrame, logged: pd.DataFrame) -> np.ndarray:
    """``(n,)`` bool: the rows of ``history`` (contract ``interactions``) that name, in
    their ``recommendation_id``, a decision of ``logged`` (:class:`FeedbackRows`): the
    service's own sends, exported back from the CRM. The log has the decision with
    the probability it was served with (and keeps the gate's share from training),
    so the history's copy is the one left out."""
    if "recommendation_id" not in history or not len(logged):
        return np.zeros(len(history), dtype=bool)
    named = history["recommendation_id"]
    return (named.notna() & named.isin(set(logged["recommendation_id"]))).to_numpy()


def history_repeats(history: pd.DataFrame, logged: pd.DataFrame) -> np.ndarray:
    """``(n,)`` bool: touches of ``history`` without a ``recommendation_id`` that look
    like a logged decision's send: the same HCP and action as a touched decision of
    ``logged``, at or after it took effect (on its day, for a history that gives days
    only) and within the outcome window after it.

    Not proof: the CRM may have touched the HCP with the same content on its own. So
    these are counted and warned of, never dropped; only an id tells for sure.
    """
    out = np.zeros(len(history), dtype=bool)
    sends = logged[logged["action_id"].notna()] if len(logged) else logged
    touch = history["action_id"].notna().to_numpy()
    if "recommendation_id" in history:
        touch &= history["recommendation_id"].isna().to_numpy()
    if not len(sends) or not touch.any():
        return out
    stamps = pd.to_datetime(history["timestamp"])[touch]
    # A date written without a time (midnight) may be the day of a decision made later
    # that day: it is looked up as of the end of its day. A touch with a time is looked
    # up as of that time, so of the same HCP and action's decisions it finds the latest
    # made by then (looked up by day, two decisions on one day were a tie that the
    # sort's order broke, and a send after the earlier one could find the later).
    dated = stamps == stamps.dt.normalize()
    end_of_day = stamps.dt.normalize() + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
    rows = pd.DataFrame(
        {
            "row": np.flatnonzero(touch),
            "hcp_id": history["hcp_id"].astype(str).to_numpy()[touch],
            "action_id": history["action_id"].astype(str).to_numpy()[touch],
            "t": stamps.to_numpy(),
            "key": stamps.where(~dated, end_of_day).to_numpy(),
        }
    )
    decisions = pd.DataFrame(
        {
            "hcp_id": sends["hcp_id"].astype(str).to_numpy(),
            "action_id": sends["action_id"].astype(str).to_numpy(),
            "key": pd.to_datetime(sends["at"]).to_numpy(),
        }
    )
    decisions["at"] = decisions["key"]
    found = pd.merge_asof(
        rows.sort_values("key", kind="stable"),
        decisions.sort_values("key", kind="stable"),
        on="key",
        by=["hcp_id", "action_id"],
        direction="backward",
        tolerance=pd.Timedelta(OUTCOME_WINDOW) + pd.Timedelta(days=1),
    )
    t = found["t"]
    at = found["at"]
    on_its_day = (t == t.dt.normalize()) & (t.dt.normalize() == at.dt.normalize())
    after = at.notna() & ((t >= at) | on_its_day) & (t <= at + pd.Timedelta(OUTCOME_WINDOW))
    out[found["row"].to_numpy()] = after.to_numpy()
    return out


def repeats_warning(history: pd.DataFrame, repeats: np.ndarray) -> str:
    """What a run says of the ``repeats`` (:func:`history_repeats`) in ``history``."""
    first = history[repeats].head(3)
    examples = ", ".join(
        f"{h} {a} at {pd.Timestamp(t):%Y-%m-%d %H:%M}"
        for h, a, t in zip(first["hcp_id"], first["action_id"], first["timestamp"], strict=True)
    )
    if repeats.sum() > len(first):
        examples += ", ..."
    days = OUTCOME_WINDOW / pd.Timedelta(days=1)
    return (
        f"WARNING: {int(repeats.sum()):,} touches of the history repeat the HCP and action "
        f"of a logged decision in the {days:g} days after it ({examples}). If the "
        "history was exported after the service's sends, these are those sends, learned "
        "twice: once from the log with their propensity, once from the history without "
        "it. Nothing was dropped: without a recommendation_id the history cannot tell "
        "them from the CRM's own touches. Export the history with the recommendation_id "
        "each send was made under (docs/data.md), or as of the first logged decision, "
        "then retrain"
    )


def retrain(
    settings: Settings,
    *,
    dataset: Dataset,
    config: TrainConfig,
    since: datetime | None = None,
    alias: str = "challenger",
    reserved_share: float | None = None,
    gate: GateConfig | None = None,
    progress: Progress | None = None,
    client: Client | None = None,
    data_notes: Sequence[str] = (),
    allow_history_only: bool = False,
    code: TrainingCode | None = None,
) -> RetrainResult:
    """Train on history + logged feedback and register the model with ``alias``.

    ``reserved_share`` of the logged decisions is left for the gate (default 0.3): the
    ``evaluation_share`` of ``gate``, the gate config evaluate is to read, when given,
    whose file the run keeps under ``config/`` and whose settings are its ``gate.*``
    parameters. With a Dask ``client`` the training runs on its
    cluster. ``data_notes``, what was noted of ``dataset`` when it was read, are the
    run's notes too. ``code``: the code that trains, as the caller read it when its
    work began (:func:`registry.training_code`); read here, first, when not given.

    Raises:
        HistoryOnlyError: the log holds no decision with an outcome (at or after
            ``since``), so there is nothing but the history to learn from, and
            ``allow_history_only`` is not set; nothing is trained or registered.
    """
    if gate is None:
        gate = GateConfig(evaluation_share=0.3 if reserved_share is None else reserved_share)
    elif reserved_share is not None and reserved_share != gate.evaluation_share:
        raise ValueError(
            f"reserved_share {reserved_share:g} is not the evaluation_share "
            f"{gate.evaluation_share:g} of gate config {gate.source}: give one of them"
        )
    reserved_share = gate.evaluation_share
    code = code or registry.training_code()
    if progress is not None:
        progress("feedback")
    with store_session(settings.resolved_database_url) as session:
        feedback = read_feedback_rows(
            session,
            dataset,
            since=since,
            reserved_share=reserved_share,
            load_model=version_loader(settings),
            settings=settings,
        )
    refuse_other_data(settings, dataset, feedback)  # before training: the gate would refuse it
    history_only = None
    if not feedback.n_logged and not feedback.n_reserved:
        with store_session(settings.resolved_database_url) as session:
            served = count_logged_decisions(session, since=since)
        history_only = _nothing_logged(settings, since=since, served=served)
        if not allow_history_only:
            raise HistoryOnlyError(
                f"{history_only}, so the new version would be a model of the history "
                f"alone, as `nextbest train` makes, registered as '{alias}': "
                + (
                    "give an earlier --since, or leave it out to use all the feedback"
                    if since is not None
                    else "serve (the API, or `nextbest picks --log`) and send the outcome "
                    "feedback (`nextbest feedback FILE`, POST /v1/feedback) with each "
                    "decision's recommendation_id, then retrain"
                )
                + "; --allow-history-only registers it anyway"
            )
    # The service's own sends, exported back in the history: learned from the log.
    twice = logged_in_history(dataset.interactions, feedback.logged)
    if twice.any():
        kept = dataset.interactions[~twice].reset_index(drop=True)
        dataset = Dataset(dataset.hcps, dataset.catalog, kept, source=dataset.source)
    repeats = history_repeats(dataset.interactions, feedback.logged)
    combined = with_feedback(dataset, feedback.interactions)
    history = dataset.interactions["timestamp"]
    # The logged decisions are learned from, all of them: the evaluation slice is the
    # history's newest, as the champion's was (the gate judges on the reserved share).
    fit_from = history.max() + pd.Timedelta(seconds=1) if len(history) else None
    result = train(
        combined, config=config, progress=progress, client=client, fit_from=fit_from, code=code
    )
    shortfalls = missing_engagement(feedback.interactions, dataset.interactions)
    warnings = [engagement_warning(shortfalls)] if shortfalls else []
    if repeats.any():
        warnings.append(repeats_warning(dataset.interactions, repeats))
    result.notes[:0] = warnings
    if history_only is not None:
        # One note: feedback_note would only say again that no logged decision joined.
        result.notes.append(
            f"--allow-history-only: {history_only}; this version learned from the history "
            "in the data directory alone, and its evaluation slice is the newest of that "
            "history"
        )
    else:
        result.notes.append(feedback_note(feedback))
    if twice.any():
        result.notes.append(
            f"{plural(int(twice.sum()), 'row')} of the history "
            f"{'names' if twice.sum() == 1 else 'name'} the recommendation_id of a "
            "logged decision (the service's own sends, exported back from the CRM) and "
            "were left out: each is learned once, from the recommendation log, with the "
            "probability it was served with (or kept for the gate)"
        )
    if reserved_share == 0:
        result.notes.append(
            "evaluation_share 0 (gate config): every logged decision with an outcome was "
            "trained on and none is reserved for the gate, so `evaluate` and `promote` "
            "cannot judge this version (only `promote --force --reason TEXT` promotes it)"
        )
    if feedback.n_unknown_action:
        result.notes.append(
            f"{feedback.n_unknown_action:,} logged decisions served actions the catalog no "
            "longer lists and were left out: to keep learning from retired content, keep "
            "it in the catalog with an approved_until in the past"
        )
    if feedback.n_holdout_unresolved:
        result.notes.append(
            f"{feedback.n_holdout_unresolved:,} holdout rows, logged without their "
            "probability of no action (before schema revision 0004), were served by "
            "versions that could not be loaded: their propensity is the holdout rate, a "
            "lower bound"
        )
    result.notes.extend(data_notes)
    if progress is not None:
        progress("register")
    info = registry.log_training_run(
        result,
        settings,
        alias=alias,
        extra_params={
            "feedback_rows": len(feedback.interactions),
            "feedback_holdout_rows": feedback.n_holdout,
            "feedback_reserved_for_gate": feedback.n_reserved,
            "feedback_since": str(since) if since else "all",
            # History rows naming a logged decision, left out (learned from the log),
            # and touches without an id that look like logged sends, kept.
            "history_rows_logged": int(twice.sum()),
            "history_repeats_logged": int(repeats.sum()),
            # The gate config the share was read from (its file kept under config/).
            **gate.as_params(),
        },
        extra_tags={
            # What evaluate checks its gate config against (gate.check_evaluation_share).
            SHARE_TAG: f"{reserved_share:g}",
            "feedback_engagement_missing": ",".join(s.channel for s in shortfalls) or "none",
        },
    )
    return RetrainResult(
        result=result,
        feedback=feedback,
        version=info.version,
        run_id=info.run_id,
        warnings=warnings,
        not_champion=info.not_champion,
        registered=info,
    )
