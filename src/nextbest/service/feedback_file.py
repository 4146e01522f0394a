"""Feedback events from a file (CSV or Parquet): outcome feeds, e-mail platform exports.

Each row is one event with the fields of ``POST /v1/feedback``; rows are read and
checked as the endpoint reads a batch's events and stored through the same code
(idempotent by ``event_id``, committed in batches of ``MAX_FEEDBACK_BATCH``), so a
file sent twice stores nothing twice, and a bad row is rejected alone, by its row
number, while the others are stored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pandas.api.types import is_datetime64_any_dtype

from nextbest.contract import parse
from nextbest.contract.errors import ContractError, Problem, ProblemLog
from nextbest.contract.files import (
    index_as_columns,
    read_table,
    row_numbers,
    saved_index_names,
)
from nextbest.contract.validate import refuse_typed_text, without_unnamed_columns
from nextbest.learning.scoring import ScoringModel
from nextbest.service.events import MAX_FEEDBACK_BATCH, FeedbackEventCreate, parse_event
from nextbest.service.feedback import ingest_feedback
from nextbest.service.requester import file_requester
from nextbest.settings import Settings
from nextbest.storage.db import store_session
from nextbest.storage.repository import FeedbackRecord
from nextbest.yamlfile import near_hint

COLUMNS = tuple(FeedbackEventCreate.model_fields)
REQUIRED = ("event_id", "event_type", "hcp_id")
# The fields an event takes as text: ids, names and codes.
TEXT_COLUMNS = tuple(c for c in COLUMNS if c not in ("occurred_at", "value"))
# The columns ``nextbest feedback --rejected`` adds: a fixed rejected file is sent as is.
REJECTED_COLUMNS = ("row", "rejected_because")
# The columns of a `nextbest picks` file that no event has. A send file returned with
# its events added (event_id, event_type) is told once what to keep, rather than each
# of them refused as an unknown column, and told of its `reason` column too: each pick's
# explanation, which, left in, was read as each event's reason (a row refused when it
# was longer than the 256 characters stored, the others stored with it).
PICKS_ONLY_COLUMNS: tuple[str, ...] = ("rank", "content_id", "score", "expected_uplift")
PICKS_ONLY_COLUMNS += ("p_engage", "model_version", "propensity", "explored")


@dataclass
class FileFeedback:
    """What became of a file's events; rows are numbered from 1 after the header, as
    the file numbers them (see :func:`~nextbest.contract.files.row_numbers`)."""

    rows: int = 0
    accepted: int = 0
    duplicates: int = 0  # already stored (a file sent again), or twice in the file
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # row, event_id, why
    # Stored contacts that count in the all-channel budget only (row, event_id, why).
    uncounted: list[tuple[int, str, str]] = field(default_factory=list)


def read_events(path: Path) -> pd.DataFrame:
    """The file's rows, its columns checked: ContractError naming the file otherwise.

    The columns a ``--rejected`` file adds (``row``, ``rejected_because``) are
    dropped, so that file, fixed, can be sent again as it is. An index pandas saved
    under a field's name is read as that field; under another name it is row labels
    and left out, but one of times (``events.set_index("timestamp")``) or named for a
    field otherwise (``Value``) is refused: left out, the events' times were lost
    without a word, each stored at its arrival.
    Spaces around a header's names are dropped, as the data files drop them.
    Ids in a column typed as numbers (a Parquet ``hcp_id`` of integers, or of floats
    for its nulls) are read as the text they stand for (``7``, not ``7.0``), as a CSV
    file gives them; a float32 ``value`` as the decimal written (0.1, not
    0.10000000149011612). A text column of true/false values, or of floats too large
    to hold a whole number exactly (2**53 and up), is refused with the file
    (:func:`~nextbest.contract.validate.refuse_typed_text`).
    """
    # A NUL in a Parquet text value is each event's to refuse, or an opt-out's to
    # leave out (see nextbest.service.events), as the endpoint does.
    frame = index_as_columns(read_table(path, nul_refused=False), COLUMNS)
    log = ProblemLog(path.name, rows=row_numbers(frame))
    for name in saved_index_names(frame):
        _refuse_lost_index(frame, name, log)
    frame = without_unnamed_columns(frame, log)  # a trailing separator's empty column
    log.raise_if_any()
    # Spaces around a name (a header written by hand, 'event_id, event_type') are no
    # part of it, as in the data files: ' event_type' was refused as an unknown column.
    # (Names alike but for them are refused by read_table, as a name written twice.)
    frame.columns = pd.Index([str(name).strip() for name in frame.columns], dtype=object)
    frame = frame.drop(columns=[c for c in REJECTED_COLUMNS if c in frame.columns])
    unknown = [c for c in frame.columns if c not in COLUMNS]
    missing = [c for c in REQUIRED if c not in frame.columns]
    of_picks = [c for c in unknown if c in PICKS_ONLY_COLUMNS]
    unknown = [c for c in unknown if c not in PICKS_ONLY_COLUMNS]
    problems: list[Problem] = []
    if of_picks:
        problems.append(
            Problem(path.name, None, None, _a_picks_file(of_picks, "reason" in frame.columns))
        )
    known = ", ".join(COLUMNS)
    problems += [
        Problem(
            path.name, None, c, f"unknown column{near_hint(c.lower(), COLUMNS)}; known: {known}"
        )
        for c in unknown
    ]
    problems += [Problem(path.name, None, c, "missing required column") for c in missing]
    if problems:
        raise ContractError(problems)
    # A boolean id column, or one of floats that rounded long ids: every event of the
    # file would name what no system wrote, so the file is refused, not its rows.
    for column in TEXT_COLUMNS:
        if column in frame.columns:
            refuse_typed_text(frame, column, log)
    log.raise_if_any()
    for column in TEXT_COLUMNS:
        if column in frame.columns and pd.api.types.is_numeric_dtype(frame[column].dtype):
            frame[column] = parse.text(frame[column]).to_numpy()
    if "value" in frame.columns and pd.api.types.is_float_dtype(frame["value"].dtype):
        frame["value"] = parse.as_float64(frame["value"])  # float32 read as written
    return frame


def _a_picks_file(columns: list[str], with_reason: bool) -> str:
    """What to say of a file holding ``columns`` of a picks file (``with_reason``: and
    a ``reason`` column, the picks' explanations)."""
    said = (
        f"column{'s' if len(columns) > 1 else ''} {', '.join(repr(c) for c in columns)} "
        f"{'are' if len(columns) > 1 else 'is'} of a `nextbest picks` file, not of "
        "events: a feedback file has one event per row, with the columns "
        f"{', '.join(COLUMNS)}; drop the picks' own columns"
    )
    if with_reason:
        said += (
            " and its reason column (each pick's explanation, which would be read as "
            "each event's reason)"
        )
    return (
        said + ", and keep each pick's hcp_id, recommendation_id, action_id and channel "
        "beside the event's event_id, event_type and occurred_at"
    )


def _refuse_lost_index(frame: pd.DataFrame, name: str, log: ProblemLog) -> None:
    """Log index level ``name`` of ``frame`` (one pandas saved under a name that is no
    field) when it holds what an event would lose with it: times, or a field's values
    under its name spelled otherwise; row labels (``rename_axis("n")``) are left out."""
    saved = "is the index pandas saved (to_parquet without index=False)"
    hint = near_hint(name.strip().lower(), COLUMNS)
    if hint:
        log.add(
            f"{saved}, named for a field otherwise{hint}, and would be lost: name it as "
            "the field, or write it as a column",
            column=name,
        )
    elif is_datetime64_any_dtype(frame.index.get_level_values(name).dtype):
        log.add(
            f"{saved}, holding times, and would be lost: if they are when the events "
            "happened, name it occurred_at (or write it as that column); else write the "
            "file with index=False",
            column=name,
        )


def _cell(value: Any) -> Any:
    """A cell as the endpoint would get it in JSON: empty or missing is absent."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


def ingest_events(
    settings: Settings,
    frame: pd.DataFrame,
    *,
    model: ScoringModel | None,
    challenger: ScoringModel | None = None,
    progress: Callable[[int], None] | None = None,
    dismiss_reasons: Collection[str] | None = None,
) -> FileFeedback:
    """Store the events of ``frame`` (from :func:`read_events`) in the feedback store
    ``settings`` names.

    With the served ``model``, events about HCPs or actions it does not know are
    rejected, as the endpoint rejects them (an HCP its ``challenger`` knows is known:
    :func:`~nextbest.service.feedback.ingest_feedback`), and with ``dismiss_reasons`` (the rules
    file's codes) dismissals and snoozes with another reason. ``progress`` is called
    with the rows done after each committed batch.
    """
    out = FileFeedback(rows=len(frame))
    received_at = datetime.now(UTC)
    rows = frame.to_dict(orient="records")
    numbers = row_numbers(frame)
    with store_session(settings.resolved_database_url) as session:
        for start in range(0, len(rows), MAX_FEEDBACK_BATCH):
            records: list[FeedbackRecord] = []
            position_of: list[int] = []  # 0-based position of each record in the frame
            for offset, raw in enumerate(rows[start : start + MAX_FEEDBACK_BATCH]):
                event = parse_event(
                    {str(k): cell for k, v in raw.items() if (cell := _cell(v)) is not None}
                )
                if isinstance(event, FeedbackEventCreate):
                    records.append(event.record(received_at))
                    position_of.append(start + offset)
                else:
                    out.rejected.append((numbers(start + offset), event.event_id, event.message))
            if records:
                result = ingest_feedback(
                    session,
                    events=records,
                    model=model,
                    challenger=challenger,
                    dismiss_reasons=dismiss_reasons,
                    requester=file_requester("feedback"),
                )
                out.accepted += len(result.accepted)
                out.duplicates += len(result.duplicates)
                out.rejected += [
                    (numbers(position_of[i]), eid, why) for i, eid, why in result.rejected
                ]
                out.uncounted += [
                    (numbers(position_of[i]), eid, why) for i, eid, why in result.uncounted
                ]
            if progress is not None:
                progress(min(MAX_FEEDBACK_BATCH, len(rows) - start))
    out.rejected.sort()
    return out
