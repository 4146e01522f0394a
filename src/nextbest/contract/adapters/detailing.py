"""A physician panel of monthly rep details and new prescriptions as a contract data set.

The file holds one row per physician and month (183 physicians x 24 months in the
original): ``Physician`` (a number), ``Date`` (month index from 1), ``NewPrescription``
(the physician's new prescriptions of the brand in that month), ``Samples`` (samples
left that month), ``Details`` (rep visits that month), ``CompetitorNew`` (new
prescriptions of competing brands that month), ``MedicalCPI`` and ``DRG`` (two price
indices, one value per month for everyone) and ``Psych`` (1 for a psychiatrist).

It is observational: reps chose whom to visit, nothing was randomized and no
probability of the choice was recorded. The interactions therefore carry no
``propensity`` and no ``holdout``, and any difference in prescriptions between
visited and unvisited months mixes the effect of the visit with the reasons the
rep chose that physician that month. Its origin (a marketing-analytics course) is
not verified: realistic in shape, not ground truth.

Source: see /work/shared/data/README.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from nextbest.contract import parse
from nextbest.contract.adapters.base import read_columns, validated, zero_or_one
from nextbest.contract.dataset import Dataset
from nextbest.contract.errors import ProblemLog

COLUMNS: Final = (
    "Physician",
    "Date",
    "NewPrescription",
    "Samples",
    "Details",
    "CompetitorNew",
    "MedicalCPI",
    "DRG",
    "Psych",
)
#: The one action: a rep's promotional detail, whatever the number of visits in a month.
DETAIL_ACTION: Final = "detail_visit"
CHANNEL: Final = "rep_visit"
TERRITORY: Final = "T001"
#: Month 1 of the panel unless told otherwise: the file gives month indices, not dates.
START: Final = pd.Timestamp("2020-01-01")
#: The monthly counts (Details, Samples, CompetitorNew) are not kept beyond what the
#: contract's columns say of them: no part of nextbest reads another interaction
#: column (`validate` would name them as not read), and measured over the month the
#: decision opens, as features at its start they would leak what happened after it.


def load_detailing(path: Path | str, *, start: pd.Timestamp | str = START) -> Dataset:
    """Map the physician detailing panel into a validated :class:`Dataset`.

    Mapping, and why:

    - hcps: one row per physician, ``hcp_id`` ``P001``... by the ``Physician``
      number (zero-padded to at least 3 digits), ``specialty`` 'psychiatry' where
      ``Psych`` is 1 else 'other', and one ``territory_id`` (``T001``) for all, as the
      file names no territories. ``Psych`` must be 0 or 1 and the same in every
      month of a physician. No other column is an attribute: ``NewPrescription``,
      ``Samples``, ``Details`` and ``CompetitorNew`` vary by physician and month,
      and ``MedicalCPI`` and ``DRG`` vary by month but are one value for everyone
      in a month (price indices, not physicians' traits); they are left out.
    - catalog: one action, ``detail_visit`` on channel ``rep_visit`` (content
      ``detail``, promotional, approved from a month before ``start``, open-ended,
      for every specialty, cost 0 as the file gives none).
    - Samples are not a second action. Almost every month with samples also had
      a visit (reps leave samples when they call), so samples are part of how a
      visit went, decided during it, not a separate decision taken before it;
      an action "visit with samples" would split the visits by a quantity the file
      does not say was planned. Nor are they a feature: they are counted over the
      month the decision opens. They are the sign of engagement (below) and are
      kept as the interaction column ``samples``, which training does not read.
    - interactions: one decision per physician and month, at the month's first
      day (``Date`` 1 is the month of ``start``, later months added as calendar
      months). A month with ``Details`` > 0 is a touch with ``detail_visit``; a
      month with none is a no-touch row, ``engaged`` empty. ``engaged`` is 1 for a
      visited month in which the physician took samples, else 0: the contract's
      engagement is the HCP taking the touch up, and the file records only visits
      that were held, so a held visit says nothing of the physician's response
      (engagement would be 1 on every touch, which training refuses: it learns
      engagement from 0s and 1s); samples accepted are the one response it
      records (about a third of visited months). Several visits in one month are
      one decision: the file does not date them within the month, and one outcome
      per month could not be shared between them.
      ``outcome`` is ``NewPrescription`` of the *same* month: the decision is
      dated at the month's start, so that month is the window that follows it
      (the contract's outcome), and no month is lost at the end of the panel.
      Effects that carry over into later months are not credited to the visit.
      No ``propensity`` and no ``holdout``: the visits were not randomized (see
      the module docstring). The counts of visits, samples and competitors'
      prescriptions are not kept as columns: the data set holds the contract's
      columns only, so that `validate` reads all of it once written out.

    Args:
        path: the CSV (columns listed in ``COLUMNS``), 4,392 rows for the original.
        start: the first day of a month, the date of month 1 (default 2020-01-01).

    Returns:
        The data set: hcps (n_physicians rows), catalog (1 row), interactions
        (one row per physician-month, sorted by hcp_id and timestamp).

    Raises:
        ValueError: ``start`` is not the first day of a month (at midnight).
        ContractError: the file is unreadable, lacks columns, or has bad values
            (naming file, 1-based data row and column).
    """
    start = pd.Timestamp(start)
    if start != start.normalize() or start.day != 1 or start.tzinfo is not None:
        raise ValueError(
            f"start must be the first day of a month (naive, at midnight); got {start}"
        )
    path = Path(path)
    raw, log = read_columns(path, COLUMNS, "detailing")

    physician = _counts(raw, "Physician", log, least=1)
    month = _counts(raw, "Date", log, least=1)
    details = _counts(raw, "Details", log, least=0)
    samples = _counts(raw, "Samples", log, least=0)
    _counts(raw, "CompetitorNew", log, least=0)  # checked as the panel's; not kept
    prescriptions = _counts(raw, "NewPrescription", log, least=0)
    psych_values = zero_or_one(raw, "Psych", log)
    log.raise_if_any()

    frame = pd.DataFrame({"physician": physician, "month": month, "psych": psych_values})
    again = frame.duplicated(["physician", "month"]).to_numpy()
    log.add_rows(
        again,
        "Date",
        lambda i: f"month {month[i]} of physician {physician[i]} again (one row per month)",
    )
    # A physician's specialty is one value: the first row of each physician decides.
    first_row = frame.groupby("physician").cumcount().to_numpy() == 0
    first_psych = (
        frame["physician"]
        .map(frame.loc[first_row].set_index("physician")["psych"])
        .to_numpy(dtype="float64")
    )
    first_at = (
        frame["physician"]
        .map(pd.Series(np.flatnonzero(first_row), index=frame.loc[first_row, "physician"]))
        .to_numpy(dtype="int64")
    )
    changed = psych_values != first_psych
    log.add_rows(
        changed,
        "Psych",
        lambda i: (
            f"{parse.number(psych_values[i])} but {parse.number(first_psych[i])} in row "
            f"{log.rows(int(first_at[i]))} for physician {physician[i]}: Psych must not "
            "change over time (it sets the specialty)"
        ),
    )
    log.raise_if_any()

    width = max(3, len(str(int(physician.max())))) if len(physician) else 3
    physicians = frame.loc[first_row].sort_values("physician")
    hcps = pd.DataFrame(
        {
            "hcp_id": [f"P{number:0{width}d}" for number in physicians["physician"]],
            "specialty": np.where(physicians["psych"] == 1, "psychiatry", "other"),
            "territory_id": TERRITORY,
        }
    )
    catalog = pd.DataFrame(
        {
            "action_id": [DETAIL_ACTION],
            "channel": CHANNEL,
            "content_id": "detail",
            "topic": "detail",
            "content_type": "promotional",
            "approved_from": start - pd.DateOffset(months=1),
            "approved_until": pd.NaT,
            "specialties": "",
            "cost": 0.0,
        }
    )
    first_days = {m: start + pd.DateOffset(months=int(m) - 1) for m in np.unique(month)}
    touched = details > 0
    interactions = pd.DataFrame(
        {
            "hcp_id": [f"P{number:0{width}d}" for number in physician],
            "timestamp": pd.to_datetime(pd.Series(month).map(first_days)),
            "action_id": [DETAIL_ACTION if visit else None for visit in touched],
            "engaged": np.where(touched, (samples > 0).astype("float64"), np.nan),
            "outcome": prescriptions.astype("float64"),
        }
    )
    return validated(path, hcps, catalog, interactions)


def _counts(raw: pd.DataFrame, column: str, log: ProblemLog, *, least: int) -> np.ndarray:
    """``column`` as int64 counts, each a whole number >= ``least``; problems go to
    ``log`` (and their cells read 0 until it is raised)."""
    parsed = parse.floats(raw[column])
    values = parsed.values.to_numpy()
    log.add_rows(parsed.missing, column, lambda _: "empty value (a whole number expected)")
    log.add_rows(parsed.bad, column, lambda i: f"{parse.shown(raw[column], i)} is not a number")
    present = ~parsed.missing & ~parsed.bad
    wrong = present & ~(np.isfinite(values) & (values == np.round(values)) & (values >= least))
    log.add_rows(
        wrong,
        column,
        lambda i: f"{parse.number(values[i])} is not a whole number >= {least}",
    )
    return np.where(present & ~wrong, values, 0).astype(np.int64)
