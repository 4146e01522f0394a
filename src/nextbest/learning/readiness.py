"""What training will make of a data set, said before it runs: the decisions it fits
(the evaluation slice left out, as training leaves it out), whether it would stop, how
many outcomes the uplift model gets, rows it counts twice or leaves out. Each function
returns notes, one line of text each, for ``validate`` to print."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from nextbest.contract.dataset import Dataset
from nextbest.learning.scoring import ActionEvidence
from nextbest.learning.train import (
    FUTURE_SLACK,
    MIN_ROWS_PER_ARM,
    before_evaluation_slice,
    engagement_problem,
    fitted_decisions,
    touches_per_action,
)

# What validate says of a header-only interactions file (train then has nothing to fit).
NO_INTERACTIONS = "no interactions: nothing to learn from"


def why_training_stops(
    interactions: pd.DataFrame,
    eval_fraction: float,
    catalog: pd.DataFrame | None,
    *,
    fit: TrainingFit | None = None,
) -> str | None:
    """Why ``train`` would refuse these interactions before fitting anything, counted
    as training counts them, or None. ``fit``: :func:`fitted_by_training` of the same
    arguments, when already made."""
    if len(interactions) == 0:
        return NO_INTERACTIONS
    before, _ = fitted_by_training(interactions, eval_fraction, catalog) if fit is None else fit
    fitted = interactions["action_id"].notna() & before
    return engagement_problem(interactions.loc[fitted, "engaged"].to_numpy(), eval_fraction)


def interaction_notes(interactions: pd.DataFrame, catalog: pd.DataFrame | None = None) -> list[str]:
    """Rows that repeat another exactly (a file exported twice, or appended to itself,
    counts each touch twice in every feature, record and reason), touches made
    outside their content's approval window (a catalog's dates gone wrong, or
    content sent when it should not have been), rows dated after now (training leaves
    them out) and outcomes shared by several decisions (:func:`shared_outcome_notes`).
    ``interactions`` sorted by (hcp_id, timestamp), as a :class:`Dataset` holds them."""
    notes = []
    if catalog is not None and len(interactions):
        # Each touch's catalog row by position, its dates taken from two arrays: a
        # frame reindexed by 5 million ids took seconds.
        row = pd.Index(catalog["action_id"]).get_indexer(interactions["action_id"])
        touched = np.flatnonzero(interactions["action_id"].notna().to_numpy() & (row >= 0))
        at = interactions["timestamp"].to_numpy()[touched]
        rows = row[touched]
        outside = (at < catalog["approved_from"].to_numpy()[rows]) | (
            at > catalog["approved_until"].to_numpy()[rows]
        )
        if outside.any():
            example = interactions.iloc[touched[np.argmax(outside)]]
            notes.append(
                f"{int(outside.sum()):,} touches fall outside their action's approval window "
                f"(e.g. action {example['action_id']} on {example['timestamp']:%Y-%m-%d}): "
                "learned from as they are; check the catalog's approved_from / approved_until"
            )
    if len(interactions):
        now = datetime.now(UTC).replace(tzinfo=None)
        future = interactions[interactions["timestamp"] > now + FUTURE_SLACK]
        if len(future):
            example = future.iloc[0]
            notes.append(
                f"{len(future):,} interaction{'s are' if len(future) > 1 else ' is'} dated "
                f"after now (e.g. HCP "
                f"{example['hcp_id']} on {example['timestamp']:%Y-%m-%d}; a mistyped year?): "
                "training leaves them out and learns from history up to now"
            )
    # Both notes are about rows sharing an HCP and a time with another: the few such
    # rows are compared whole, not every row of a history of millions (seconds each).
    sharing = interactions[_sharing_hcp_and_time(interactions)]
    repeated = sharing.duplicated(keep="first")
    notes.extend(shared_outcome_notes(sharing[~repeated]))
    if not repeated.any():
        return notes
    first = sharing[repeated].iloc[0]
    action = "no touch" if first["action_id"] is None else f"action {first['action_id']}"
    notes.append(
        f"{int(repeated.sum()):,} interactions repeat another row exactly (same HCP, time, "
        f"action and values; e.g. HCP {first['hcp_id']} at {first['timestamp']}, {action}): "
        "each counts as a decision of its own; drop them if the export doubled them"
    )
    return notes


def _sharing_hcp_and_time(interactions: pd.DataFrame) -> npt.NDArray[np.bool_]:
    """Rows whose (hcp_id, timestamp) another row has too, shape (n,). The rows are
    sorted by (hcp_id, timestamp), as a :class:`Dataset` holds them, so such rows are
    neighbours: comparing each with the next takes a tenth of what hashing every pair
    took (2.4 s at 5 million rows)."""
    times = interactions["timestamp"].to_numpy().view(np.int64)  # NaT equals NaT here
    same_time = np.flatnonzero(times[1:] == times[:-1])
    hcp_ids = interactions["hcp_id"].to_numpy()
    same = same_time[hcp_ids.take(same_time + 1) == hcp_ids.take(same_time)]
    sharing = np.zeros(len(interactions), dtype=bool)
    sharing[same] = True
    sharing[same + 1] = True
    return sharing


def shared_outcome_notes(interactions: pd.DataFrame) -> list[str]:
    """Decisions of one HCP at one time that all carry the same outcome: monthly data
    (several touches dated the 1st, the month's NRx on each) credits every touch with
    the whole of the HCP's outcome, and the uplift model counts it once per row."""
    # Zero shared by chance is common in counts, and counting it twice adds nothing.
    known = interactions[interactions["outcome"].notna() & (interactions["outcome"] != 0)]
    if known.empty:
        return []
    same = known.groupby(["hcp_id", "timestamp"], sort=False)["outcome"].agg(["size", "nunique"])
    shared = same[(same["size"] > 1) & (same["nunique"] == 1)]
    if shared.empty:
        return []
    (hcp_id, at), rows = shared.index[0], int(shared["size"].iloc[0])
    return [
        f"{len(shared):,} (HCP, time) pair{'s' if len(shared) > 1 else ''} with several "
        f"decisions that all carry the same outcome (e.g. HCP {hcp_id} at {at}: {rows} "
        "rows): if that is the HCP's total for "
        "the period (e.g. a month's NRx), each decision is credited with all of it and "
        "the uplift model counts it once per row; give it to one row (the others empty) or "
        "split it between them"
    ]


class TrainingFit(NamedTuple):
    """Which interactions training fits (bool, shape (n,), the frame's index) and each
    one's catalog row (int64, shape (n,); -1: no touch, or no catalog)."""

    fitted: pd.Series
    action_rows: npt.NDArray[np.int64]


def fitted_by_training(
    interactions: pd.DataFrame, eval_fraction: float, catalog: pd.DataFrame | None = None
) -> TrainingFit:
    """Which interactions training fits, decided as training decides it (whole
    seconds; by position when time cannot tell; with ``catalog``, a thin channel's
    pilot in the evaluation slice fitted, see ``fitted_decisions``), and each one's
    catalog row (-1: no touch, or no ``catalog``). Over a second at 5 million rows:
    made once by ``validate`` and given to each function here that needs it."""
    seconds = interactions["timestamp"].to_numpy().astype("datetime64[s]").astype(np.int64)
    order = np.argsort(seconds, kind="stable")
    if catalog is None:
        action_rows = np.full(len(interactions), -1, dtype=np.int64)
        in_fit, _, _ = before_evaluation_slice(seconds[order], eval_fraction)
    else:
        action_rows = pd.Index(catalog["action_id"]).get_indexer(interactions["action_id"])
        in_fit, _, _ = fitted_decisions(seconds[order], action_rows[order], catalog, eval_fraction)
    fitted = np.empty(len(interactions), dtype=bool)
    fitted[order] = in_fit
    return TrainingFit(pd.Series(fitted, index=interactions.index), action_rows)


def evidence_notes(
    dataset: Dataset, eval_fraction: float, *, fit: TrainingFit | None = None
) -> list[str]:
    """The catalog's actions training will not score, and its new content (the notes
    ``train`` prints), from the decisions training will fit (``fit``, as in
    :func:`why_training_stops`, of the dataset's interactions and catalog)."""
    catalog = dataset.catalog
    fitted, action_rows = (
        fitted_by_training(dataset.interactions, eval_fraction, catalog) if fit is None else fit
    )
    touches = touches_per_action(action_rows[fitted.to_numpy()], len(catalog))
    return ActionEvidence.of(catalog, touches).notes(catalog)


def what_training_gets(
    interactions: pd.DataFrame,
    eval_fraction: float = 0.1,
    catalog: pd.DataFrame | None = None,
    *,
    fit: TrainingFit | None = None,
) -> list[str]:
    """What the interactions give the learners: time span, touches, outcomes,
    propensities, and the rows naming a ``recommendation_id`` (when the column is there).
    ``fit``: as in :func:`why_training_stops`."""
    n = len(interactions)
    if n == 0:
        return [NO_INTERACTIONS]

    def share(k: int) -> str:
        return f"{k:,} ({k / n:.0%})"

    touched = interactions["action_id"].notna()
    n_touched = int(touched.sum())
    engaged = int(interactions.loc[touched, "engaged"].sum())
    lines = [
        f"from {interactions['timestamp'].min():%Y-%m-%d} to "
        f"{interactions['timestamp'].max():%Y-%m-%d}; touched {share(n_touched)}, engaged on "
        f"{engaged:,} of them; holdout {share(int(interactions['holdout'].sum()))}"
    ]
    known = interactions["outcome"].notna()
    untouched_known, touched_known = int((known & ~touched).sum()), int((known & touched).sum())
    fraction = eval_fraction
    before, _ = fitted_by_training(interactions, fraction, catalog) if fit is None else fit
    fit_seen = interactions.loc[touched & before, "engaged"].unique().tolist()
    stops = len(fit_seen) == 1
    if stops:
        lines.append(
            f"every touched interaction before the evaluation slice has engaged = "
            f"{fit_seen[0]}: training stops, engagement is learned from both 0s and 1s"
        )
    # As training counts them: an untouched row compares only when chance chose it.
    chance = interactions["holdout"] | interactions["propensity"].notna()
    fit_untouched = int((known & ~touched & before & chance).sum())
    fit_observational = int((known & ~touched & before & ~chance).sum())
    fit_touched = int((known & touched & before).sum())
    if fit_untouched >= MIN_ROWS_PER_ARM and fit_touched >= MIN_ROWS_PER_ARM:
        verdict = "enough for the uplift model"
    elif stops:  # said above: there is no training to fall back
        verdict = "too few for the uplift model"
    else:
        verdict = "too few for the uplift model: training falls back to preference x value"
    observational = (
        f"; {fit_observational:,} more untouched ones are neither holdout nor logged with a "
        "propensity, so they cannot measure what a touch adds and are not counted"
        if fit_observational
        else ""
    )
    lines.append(
        f"outcomes on {untouched_known:,} untouched and {touched_known:,} touched "
        f"interactions; before the evaluation slice (the newest {fraction:.0%}), "
        f"{fit_untouched:,} untouched (holdout or logged with a propensity) and "
        f"{fit_touched:,} touched{observational}: {verdict} (it needs {MIN_ROWS_PER_ARM} of "
        "each there)"
    )
    logged = int(interactions["propensity"].notna().sum())
    if logged == n or not logged:
        unweighted = ""  # none at all: the controls line above already says what follows
    else:
        unweighted = (
            "; the uplift model leaves rows without one unweighted (no correction for the "
            "logging policy's bias there)"
        )
    lines.append(f"propensities on {share(logged)}{unweighted}")
    if "recommendation_id" in interactions:
        # The service's own sends exported back: retrain learns them from the log.
        named = int(interactions["recommendation_id"].notna().sum())
        lines.append(
            f"recommendation_id on {share(named)}: retrain leaves out those naming a "
            "decision it learns from the recommendation log (docs/loop.md, Retraining)"
        )
    return lines
