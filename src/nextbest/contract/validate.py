"""Validate and normalise the three tables of the data contract.

Each ``validate_*`` function takes a raw frame (CSV text or typed Parquet columns,
see :mod:`nextbest.contract.parse`), checks every rule with vectorised operations,
collects up to ``MAX_PROBLEMS_PER_FILE`` problems, raises :class:`ContractError` if
there were any, and otherwise returns the normalised frame described in DESIGN.md.
Row numbers in problems are 1-based positions in ``raw`` (for a file: data rows,
header not counted).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from nextbest.contract import parse
from nextbest.contract.errors import ProblemLog
from nextbest.contract.files import index_as_columns, row_numbers, saved_index_names
from nextbest.contract.parse import Codes, Mask
from nextbest.contract.schema import (
    CONTENT_TYPES,
    DOTTED_THOUSAND,
    MAX_OUTCOME,
    OPTIONAL_CATALOG_COLUMNS,
    OPTIONAL_INTERACTION_COLUMNS,
    REFUSED_NULL_WORDS,
    REQUIRED_CATALOG_COLUMNS,
    REQUIRED_COLUMNS,
    REQUIRED_HCP_COLUMNS,
    REQUIRED_INTERACTION_COLUMNS,
    channel_spelling,
    consent_column,
    header_words,
    is_identifier_column,
    is_null_word,
    is_person_code_column,
    is_personal_column,
    is_unique_code_column,
    is_unique_text_column,
    normalise_specialties,
    reads_as_dotted_thousands,
)
from nextbest.limits import STORED_LENGTHS
from nextbest.yamlfile import near_hint

# consent_<channel> in any case, with '_', '-', '.' or a space after "consent".
_CONSENT_HEADER = re.compile(r"consent[_\-. ]+", re.IGNORECASE)
_BOOLEAN_HINT = "is not a boolean (use true/false, yes/no, y/n, t/f or 1/0)"
# For a cell a database wrote as its missing value ('NULL', '\\N'): see NULL_WORDS.
NULL_HINT = "write a missing value as an empty cell"
# "0,583": a decimal comma, as spreadsheets write numbers in many locales.
DECIMAL_COMMA = re.compile(r"-?\d+,\d+")
#: attrs key of a validated table: its columns read as decimals from text that looks
#: like thousands written with '.' ("1.234", "980"), each with the cells to quote
#: (see :func:`_dotted_thousands`), for notes.
DOTTED_THOUSANDS = "dotted_thousands"


def validate_hcps(raw: pd.DataFrame, *, file: str) -> pd.DataFrame:
    """Validate an hcps table; returns one row per HCP in input order.

    Output columns: ``hcp_id``, ``specialty``, ``territory_id`` (str), then the
    other input columns in input order: ``consent_<channel>`` (any case, the channel
    spelled as the catalog's are) as bool (empty = False: consent not known is no
    consent; ``attrs["consent_blanks"]`` counts them per column), everything else a feature
    (numeric or str, see :func:`parse.feature`; identifier-like columns such as
    ``zip`` stay str, leading zeros kept). Columns that name or reach a person
    (:func:`~nextbest.contract.schema.is_personal_column`: a name, e-mail, phone,
    address) are not read; ``attrs["personal_columns"]`` lists them. Nor are columns
    that identify an HCP: a code of a person or licence by its header (an NPI, a DEA
    or licence number: :func:`~nextbest.contract.schema.is_person_code_column`), text
    that is different for nearly every HCP (:func:`~nextbest.contract.schema.is_unique_text_column`:
    a name under another header, a date, an IP address, a code; a column read as
    numbers never is), integers nearly unique per HCP under a header ending in id or
    number (:func:`~nextbest.contract.schema.is_unique_code_column`);
    ``attrs["identifier_columns"]`` lists them.
    """
    log = ProblemLog(file, rows=row_numbers(raw))
    raw = _start(raw, REQUIRED_HCP_COLUMNS, log, rows_required=True, saved_index="refused")
    hcp_id = _required_text(raw, "hcp_id", log)
    _check_unique(hcp_id, "hcp_id", log, raw)
    _check_stored_length(hcp_id, "hcp_id", log)
    out: dict[str, pd.Series] = {
        "hcp_id": hcp_id.series(),
        "specialty": _required_text(raw, "specialty", log).series(),
        "territory_id": _required_text(raw, "territory_id", log).series(),
    }
    headers: dict[str, str] = {}  # consent column -> its header as written
    blanks: dict[str, int] = {}
    personal: list[str] = []
    identifiers: list[str] = []
    for column in _others(raw, REQUIRED_HCP_COLUMNS):
        if _read_consent(raw, column, log, out, headers, blanks):
            continue
        cells = raw[column].astype(str).str.strip()
        # Missing cells of a typed (Parquet) column are no value either, not "nan".
        sample = cells[cells.ne("") & raw[column].notna()].head(1000).tolist()
        if is_personal_column(column, sample):
            personal.append(column)  # not read: no feature, nothing stored
            continue
        feature = _extra(raw, column, log)
        # Read as numbers, uniqueness is no sign of an identifier (patients per week
        # are nearly unique too); as text it is, whatever the text looks like.
        text = not pd.api.types.is_numeric_dtype(feature)
        if (
            is_person_code_column(column)
            or (text and is_unique_text_column(sample))
            or is_unique_code_column(column, sample)
        ):
            identifiers.append(column)  # not read either: see these three
            continue
        out[column] = feature
    log.raise_if_any()
    frame = pd.DataFrame(out)
    frame.attrs["consent_headers"] = headers  # errors name the column as the file has it
    frame.attrs["consent_blanks"] = blanks
    frame.attrs["personal_columns"] = personal
    frame.attrs["identifier_columns"] = identifiers
    frame.attrs[DOTTED_THOUSANDS] = _dotted_thousands(raw, out)
    return frame


def validate_id_list(raw: pd.DataFrame, *, file: str) -> list[str]:
    """The HCP ids of a list with an ``hcp_id`` column (an erasure request), read as
    the ``hcps`` file reads its ids (stripped); in input order, each once. Other
    columns are ignored; a missing column, no rows or an empty cell is a
    :class:`ContractError` naming the file (and the row)."""
    log = ProblemLog(file, rows=row_numbers(raw))
    raw = _start(raw, ("hcp_id",), log, rows_required=True)
    hcp_id = _required_text(raw, "hcp_id", log)
    _check_stored_length(hcp_id, "hcp_id", log)
    log.raise_if_any()
    return list(dict.fromkeys(str(value) for value in hcp_id.series()))


def validate_territories(raw: pd.DataFrame, *, file: str) -> pd.DataFrame:
    """A territory alignment: which territory each HCP is in, as sales operations
    align them (``NEXTBEST_TERRITORIES_FILE``); one row per HCP in input order.

    Output columns: ``hcp_id``, ``territory_id`` (str, stripped as the ``hcps`` file
    reads them; matched exactly, case included). Other columns are ignored. An HCP
    listed twice in the same territory counts once; in two territories it is a
    :class:`ContractError` naming both rows and territories (not the HCP: the message
    reaches logs and the unauthenticated /readyz), as are a missing column, no rows
    and an empty cell.
    """
    log = ProblemLog(file, rows=row_numbers(raw))
    raw = _start(raw, ("hcp_id", "territory_id"), log, rows_required=True)
    hcp_id = _required_text(raw, "hcp_id", log)
    territory = _required_text(raw, "territory_id", log)
    hcp_codes = pd.Series(hcp_id.codes)
    again = hcp_codes.duplicated(keep="first").to_numpy()
    same_pair = pd.DataFrame({"h": hcp_id.codes, "t": territory.codes}).duplicated().to_numpy()

    def describe(i: int) -> str:
        first = int(np.argmax(hcp_id.codes == hcp_id.codes[i]))
        there = territory.uniques[territory.codes[first]]
        here = territory.uniques[territory.codes[i]]
        return (
            f"its HCP is in territory {parse.quoted(here)} here but in "
            f"{parse.quoted(there)} in row {log.rows(first)}: an HCP is in one territory"
        )

    log.add_rows(again & ~same_pair & ~hcp_id.empty & ~territory.empty, "territory_id", describe)
    log.raise_if_any()
    frame = pd.DataFrame({"hcp_id": hcp_id.series(), "territory_id": territory.series()})
    return frame[~again].reset_index(drop=True)


def validate_send_list(raw: pd.DataFrame, *, file: str) -> pd.DataFrame:
    """Validate a send list, the HCPs to pick for; returns one row per HCP in input order.

    Only ``hcp_id`` is required. Output columns: ``hcp_id``, ``specialty`` when the
    file has one (str, '' where a cell is empty: the served model's applies), and
    its ``consent_<channel>`` columns read as :func:`validate_hcps` reads them;
    other columns are left out. An index pandas saved under a name is read as the
    column it was (see :func:`_start`).
    """
    log = ProblemLog(file, rows=row_numbers(raw))
    # Its consent saved as the index (set_index("consent_email")) would be lost, and
    # its HCPs would take the model's: read as the column it was.
    raw = _start(
        raw, ("hcp_id",), log, optional=("specialty",), rows_required=True, saved_index="read"
    )
    hcp_id = _required_text(raw, "hcp_id", log)
    _check_unique(hcp_id, "hcp_id", log, raw)
    _check_stored_length(hcp_id, "hcp_id", log)
    out: dict[str, pd.Series] = {"hcp_id": hcp_id.series()}
    if "specialty" in raw.columns:  # an empty cell: the served model's
        out["specialty"] = _text(raw, "specialty", log).series()
    headers: dict[str, str] = {}
    blanks: dict[str, int] = {}
    ignored = [c for c in _others(raw, out) if not _read_consent(raw, c, log, out, headers, blanks)]
    log.raise_if_any()
    frame = pd.DataFrame(out)
    frame.attrs["consent_headers"] = headers
    frame.attrs["consent_blanks"] = blanks
    # Checked against the catalog's channels all the same: "Email Consent" left out
    # unread would send e-mail to everyone on the list.
    frame.attrs["ignored_columns"] = ignored
    return frame


def _read_consent(
    raw: pd.DataFrame,
    column: str,
    log: ProblemLog,
    out: dict[str, pd.Series],
    headers: dict[str, str],
    blanks: dict[str, int],
) -> bool:
    """Read ``column`` into ``out`` as a consent column if it is one; whether it was.

    An empty cell is no consent (consent not known must not be taken as given); how
    many there were goes into ``blanks``, for validate to say.
    """
    consent = _CONSENT_HEADER.match(column)
    if consent is None:
        return False
    # Spelled as catalog channels are ('Consent_Email', 'consent-email' ->
    # consent_email): a consent column that matched no channel would be
    # silently ignored, and opted-out HCPs contacted.
    name = consent_column(channel_spelling(column[consent.end() :]))
    if name in out:
        log.add(f"a second consent column for the channel of '{name}'", column=column)
    parsed = parse.booleans(raw[column], default=False)
    log.add_rows(parsed.bad, column, lambda i: _not_a_boolean(raw[column], i))
    out[name] = parsed.values
    headers[name] = column
    if parsed.missing.any():
        blanks[name] = int(parsed.missing.sum())
    return True


def validate_catalog(raw: pd.DataFrame, *, file: str) -> pd.DataFrame:
    """Validate a catalog table; returns one row per action in input order.

    Output columns: ``action_id``, ``channel`` (lower-case, ``-`` and spaces as
    ``_``: 'Rep Visit' is ``rep_visit``), ``content_id``,
    ``topic``, ``content_type`` (one of CONTENT_TYPES), ``approved_from``,
    ``approved_until`` (naive UTC datetime64[ns]; NaT = open-ended),
    ``specialties`` (normalised ``;``-list, '' = everyone), ``cost`` (float64 >= 0,
    empty or absent = 0), then extra columns, which training does not read. An
    index pandas saved under a name is read as the column it was (see :func:`_start`).
    """
    log = ProblemLog(file, rows=row_numbers(raw))
    # Its columns are read by their header: a column saved as the index
    # (set_index("Specialties")) is checked as that column would be, not dropped so
    # that content for one specialty went to every specialty.
    raw = _start(
        raw,
        REQUIRED_CATALOG_COLUMNS,
        log,
        optional=OPTIONAL_CATALOG_COLUMNS,
        rows_required=True,
        saved_index="read",
    )
    n = len(raw)
    action_id = _required_text(raw, "action_id", log)
    _check_unique(action_id, "action_id", log, raw)
    _check_stored_length(action_id, "action_id", log)
    channel = _required_text(raw, "channel", log).map(channel_spelling)
    _check_stored_length(channel, "channel", log)
    content_id = _required_text(raw, "content_id", log)
    _check_stored_length(content_id, "content_id", log)
    content_type = _required_text(raw, "content_type", log).map(str.lower)
    log.add_rows(
        content_type.where(lambda u: (u != "") & ~np.isin(u, CONTENT_TYPES)),
        "content_type",
        lambda i: _not_one_of(parse.shown(raw["content_type"], i), content_type, i, CONTENT_TYPES),
    )

    approved_from = _timestamp(raw, "approved_from", log, required=True)
    if "approved_until" in raw.columns:
        approved_until = _timestamp(raw, "approved_until", log, required=False)
    else:  # every approval open-ended
        approved_until = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
    log.add_rows(
        (approved_until < approved_from).to_numpy(),
        "approved_until",
        lambda i: (
            f"{parse.moment(approved_until.to_numpy()[i])} is before approved_from "
            f"{parse.moment(approved_from.to_numpy()[i])}"
        ),
    )

    if "specialties" in raw.columns:
        specialties = parse.codes(raw["specialties"]).map(normalise_specialties).series()
    else:
        specialties = pd.Series([""] * n, dtype=object)

    if "cost" in raw.columns:
        cost = _float(raw, "cost", log).fillna(0.0)
        values = cost.to_numpy()
        log.add_rows(
            ~np.isfinite(values) | (values < 0),
            "cost",
            lambda i: f"{parse.number(values[i])} is not a finite number >= 0",
        )
    else:
        cost = pd.Series(np.zeros(n), dtype="float64")

    out: dict[str, pd.Series] = {
        "action_id": action_id.series(),
        "channel": channel.series(),
        "content_id": content_id.series(),
        "topic": _required_text(raw, "topic", log).series(),
        "content_type": content_type.series(),
        "approved_from": approved_from,
        "approved_until": approved_until,
        "specialties": specialties,
        "cost": cost,
    }
    for column in _others(raw, (*REQUIRED_CATALOG_COLUMNS, *OPTIONAL_CATALOG_COLUMNS)):
        out[column] = _extra(raw, column)
    log.raise_if_any()
    frame = pd.DataFrame(out)
    frame.attrs[DOTTED_THOUSANDS] = _dotted_thousands(raw, out)
    return frame


def check_interactions_alone(raw: pd.DataFrame, *, file: str) -> None:
    """Raise :class:`ContractError` for what is wrong in an interactions table that
    no other file is needed to see (a column missing, a time or number that does
    not read), while the hcps or catalog file is refused: the problems of every
    file are said in one run. Its ids are not looked up, its channels not matched:
    :func:`validate_interactions` does that with the valid files."""
    _interactions(raw, file=file, hcps=None, catalog=None)


def validate_interactions(
    raw: pd.DataFrame, *, file: str, hcps: pd.DataFrame, catalog: pd.DataFrame
) -> pd.DataFrame:
    """Validate an interactions table against validated ``hcps`` and ``catalog``.

    Output columns: ``hcp_id`` (str), ``timestamp`` (naive UTC datetime64[ns]),
    ``action_id`` (str, None for a no-touch row), ``channel`` and ``content_id``
    (from the catalog, None for no-touch), ``engaged`` (int8 0/1), ``outcome`` and
    ``propensity`` (float64, NaN when absent), ``holdout`` (bool),
    ``recommendation_id`` (str, None when empty; only when the table has the
    column; one longer than the recommendation log keeps names no logged decision
    and is refused), then extra columns as features. Rows are stably sorted by (hcp_id,
    timestamp), index reset.
    An empty table (header only) is valid. ``channel``/``content_id`` given on a row
    with an action must match the catalog (channel case-insensitively); on a no-touch
    row they are not checked and the output holds None.
    """
    frame = _interactions(raw, file=file, hcps=hcps, catalog=catalog)
    assert frame is not None  # with both files, a table or an error
    return frame


def _interactions(
    raw: pd.DataFrame, *, file: str, hcps: pd.DataFrame | None, catalog: pd.DataFrame | None
) -> pd.DataFrame | None:
    """:func:`validate_interactions`; without ``hcps`` or ``catalog`` (refused), only
    the checks that need neither, and no table (see :func:`check_interactions_alone`)."""
    log = ProblemLog(file, rows=row_numbers(raw))
    raw = _start(
        raw,
        REQUIRED_INTERACTION_COLUMNS,
        log,
        optional=OPTIONAL_INTERACTION_COLUMNS,
        rows_required=False,
    )

    hcp_id = _required_text(raw, "hcp_id", log)
    if hcps is None or catalog is None:
        action = _text(raw, "action_id", log)
        _timestamp(raw, "timestamp", log, required=True)
        _cells_of_their_own(raw, action, log)
        log.raise_if_any()
        return None
    hcp_index = pd.Index(hcps["hcp_id"])
    # Look-ups run on distinct values (few) and are broadcast to rows (many).
    hcp_position = hcp_id.broadcast(hcp_index.get_indexer(hcp_id.uniques))
    hcp_twins = LookAlikes(hcp_index)
    unknown_hcp = (hcp_position < 0) & ~hcp_id.empty
    hcp_scientific = _scientific(hcp_id, unknown_hcp, "hcp_id", log)
    log.add_rows(
        unknown_hcp,
        "hcp_id",
        lambda i: (
            _unknown("hcp_id", hcp_id.uniques[hcp_id.codes[i]], hcp_index, "hcps", hcp_twins)
            + (f", {_SCIENTIFIC_SAID}" if hcp_scientific[i] else "")
        ),
    )
    timestamp = _timestamp(raw, "timestamp", log, required=True)

    action = _text(raw, "action_id", log)
    no_touch = action.empty
    action_position = action.broadcast(pd.Index(catalog["action_id"]).get_indexer(action.uniques))
    known = action_position >= 0
    unknown_action = ~no_touch & ~known
    action_index = pd.Index(catalog["action_id"])
    action_twins = LookAlikes(action_index)
    action_scientific = _scientific(action, unknown_action, "action_id", log)
    log.add_rows(
        unknown_action,
        "action_id",
        lambda i: (
            _unknown(
                "action_id", action.uniques[action.codes[i]], action_index, "catalog", action_twins
            )
            + (f", {_SCIENTIFIC_SAID}" if action_scientific[i] else "")
        ),
    )
    # 'NULL' for a no-touch row is said per row, and an id a spreadsheet rewrote has its
    # own hint; this one is about deleted catalog rows.
    deleted = (
        unknown_action
        & ~action_scientific
        & ~action.where(lambda u: np.array([is_null_word(v) for v in u]))
    )
    if deleted.any():
        log.hint(_unknown_actions_hint(action, deleted), column="action_id")
    action_ids = action.uniques.copy()
    action_ids[action_ids == ""] = None
    filled: dict[str, npt.NDArray[np.object_]] = {}
    for column in ("channel", "content_id"):
        in_catalog = catalog[column].to_numpy(dtype=object)
        if column in raw.columns:
            given = _text(raw, column, log)
            if column == "channel":
                given = given.map(channel_spelling)
            # Compare codes, not strings: where does each catalog value sit among
            # the distinct given values (-1 if nowhere, which never matches)?
            catalog_code = pd.Index(given.uniques).get_indexer(pd.Index(in_catalog))
            expected = np.where(known, catalog_code.take(np.maximum(action_position, 0)), -1)
            mismatch = known & ~given.empty & (given.codes != expected)
            log.add_rows(
                mismatch,
                column,
                _mismatch_message(raw, column, in_catalog, action, action_position),
            )
        # Position -1 (no-touch) picks the appended None.
        filled[column] = np.concatenate([in_catalog, np.array([None], dtype=object)])

    own = _cells_of_their_own(raw, action, log)
    engaged, outcome, propensity, holdout = own.engaged, own.outcome, own.propensity, own.holdout
    recommendation, extras = own.recommendation, own.extras
    log.raise_if_any()

    order = _sort_order(hcp_index, hcp_position, timestamp.to_numpy().view("int64"))

    def ordered(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return values if order is None else values.take(order)

    # Reorder the cheap representation (codes, numbers) before materialising strings;
    # taking whole object columns afterwards costs seconds at 5 million rows.
    catalog_row = ordered(action_position)
    columns: dict[str, npt.NDArray[Any]] = {
        "hcp_id": hcp_id.uniques.take(ordered(hcp_id.codes)),
        "timestamp": ordered(timestamp.to_numpy()),
        "action_id": action_ids.take(ordered(action.codes)),
        "channel": filled["channel"].take(catalog_row),
        "content_id": filled["content_id"].take(catalog_row),
        "engaged": ordered(engaged.to_numpy()),
        "outcome": ordered(outcome.to_numpy()),
        "propensity": ordered(propensity.to_numpy()),
        "holdout": ordered(holdout.to_numpy()),
    }
    if recommendation is not None:
        recommendation_ids = recommendation.uniques.copy()
        recommendation_ids[recommendation_ids == ""] = None
        columns["recommendation_id"] = recommendation_ids.take(ordered(recommendation.codes))
    columns.update((column, ordered(values.to_numpy())) for column, values in extras.items())
    # As Series of their own dtype: a frame built from object arrays looks through
    # each for times to convert, 200 MB more at the peak of 5 million rows.
    frame = pd.DataFrame(
        {
            column: pd.Series(values, dtype=values.dtype, copy=False)
            for column, values in columns.items()
        },
        copy=False,
    )
    frame.attrs[DOTTED_THOUSANDS] = _dotted_thousands(raw, {"outcome": outcome, **extras})
    return frame


# -- helpers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _OwnCells:
    """The interactions columns read without the other files; each shape (n_rows,)."""

    engaged: pd.Series
    outcome: pd.Series
    propensity: pd.Series
    holdout: pd.Series
    recommendation: Codes | None
    extras: dict[str, pd.Series]


def _cells_of_their_own(raw: pd.DataFrame, action: Codes, log: ProblemLog) -> _OwnCells:
    """Read and check the interactions columns that need neither the hcps nor the
    catalog (``engaged`` to the extra columns), problems to ``log``; ``action`` is
    the ``action_id`` column (empty: a no-touch row)."""
    n = len(raw)
    no_touch = action.empty
    engaged = _engaged(raw, no_touch, log)
    outcome = _float(raw, "outcome", log) if "outcome" in raw.columns else _nan(n)
    log.add_rows(
        np.isinf(outcome.to_numpy()),
        "outcome",
        lambda i: f"{parse.number(outcome.to_numpy()[i])} is not finite",
    )
    # As a feedback event's value is refused: retrain sums the two into one mean.
    log.add_rows(
        np.isfinite(outcome.to_numpy()) & (np.abs(outcome.to_numpy()) > MAX_OUTCOME),
        "outcome",
        lambda i: (
            f"{parse.number(outcome.to_numpy()[i])} is beyond the limit of "
            f"{MAX_OUTCOME:,.0f} either way: no outcome of one decision is that large in "
            "any business unit (a wrong unit, or a placeholder?), and summed with others "
            "it would swamp every mean"
        ),
    )
    propensity = _float(raw, "propensity", log) if "propensity" in raw.columns else _nan(n)
    p = propensity.to_numpy()
    log.add_rows(
        ~np.isnan(p) & ~((p > 0) & (p <= 1)),
        "propensity",
        lambda i: f"{parse.number(p[i])} is not in (0, 1]",
    )
    if "holdout" in raw.columns:
        holdout = _boolean(raw, "holdout", log, default=False)
        log.add_rows(
            holdout.to_numpy() & ~no_touch,
            "holdout",
            lambda i: (
                f"holdout is true but action_id is {parse.quoted(action.uniques[action.codes[i]])} "
                "(a holdout row must be a no-touch row, action_id empty)"
            ),
        )
    else:
        holdout = pd.Series(np.zeros(n, dtype=bool))

    recommendation = None
    if "recommendation_id" in raw.columns:
        recommendation = _text(raw, "recommendation_id", log)
        _check_stored_length(
            recommendation, "recommendation_id", log, advice=_NAMES_NO_LOGGED_DECISION
        )

    extras = {
        column: _extra(raw, column)
        for column in _others(raw, (*REQUIRED_INTERACTION_COLUMNS, *OPTIONAL_INTERACTION_COLUMNS))
    }
    return _OwnCells(engaged, outcome, propensity, holdout, recommendation, extras)


def _mismatch_message(
    raw: pd.DataFrame,
    column: str,
    in_catalog: npt.NDArray[np.object_],
    action: Codes,
    action_position: npt.NDArray[np.intp],
) -> Callable[[int], str]:
    def describe(i: int) -> str:
        return (
            f"{parse.shown(raw[column], i)} does not match the catalog {column} "
            f"{parse.quoted(in_catalog[action_position[i]])} of action "
            f"{parse.quoted(action.uniques[action.codes[i]])}"
        )

    return describe


def _sort_order(
    hcp_index: pd.Index, hcp_position: npt.NDArray[np.intp], nanoseconds: npt.NDArray[np.int64]
) -> npt.NDArray[np.intp] | None:
    """Stable order of rows by (hcp_id, timestamp), or None if already in that order.

    Sorts integer keys rather than strings: the rank of each row's hcp_id among the
    (unique) hcps ids, then nanoseconds.
    """
    hcp_rank = np.empty(len(hcp_index), dtype=np.int64)
    hcp_rank[hcp_index.argsort()] = np.arange(len(hcp_index))
    rank = hcp_rank.take(hcp_position)
    step = np.diff(rank)
    if bool(np.all((step > 0) | ((step == 0) & (np.diff(nanoseconds) >= 0)))):
        return None  # exports are often sorted already: skip reordering every column
    # One int64 key per row, (hcp rank, rank of its time among the distinct times), sorted
    # unstably (a stable argsort, timsort, takes twice as long as numpy's quicksort: two
    # of them took 1.5 s at 5 million rows); rows that tie, the same HCP at the same
    # time, are then put back in file order. The key stays below (hcps x rows).
    by_time = np.argsort(nanoseconds)
    in_time_order = nanoseconds.take(by_time)
    time_rank = np.empty(len(nanoseconds), dtype=np.int64)
    new_time = np.insert(in_time_order[1:] != in_time_order[:-1], 0, False)
    time_rank[by_time] = np.cumsum(new_time)
    key = rank * (int(time_rank.max()) + 1) + time_rank
    order = np.argsort(key)
    in_key_order = key.take(order)
    tie = in_key_order[1:] == in_key_order[:-1]
    if tie.any():
        slots = np.flatnonzero(np.append(tie, False) | np.insert(tie, 0, False))
        rows = order.take(slots)
        order[slots] = rows.take(np.lexsort((rows, key.take(rows))))
    return order


def _start(
    raw: pd.DataFrame,
    required: Iterable[str],
    log: ProblemLog,
    *,
    optional: Iterable[str] = (),
    rows_required: bool,
    saved_index: Literal["left_out", "refused", "read"] = "left_out",
) -> pd.DataFrame:
    """Strip column names, check required columns and (maybe) that rows exist.

    An index pandas saved with the table is read as the column it names when that is
    one of ``required`` or ``optional`` (``hcp_id`` set as the index), or spells one
    otherwise (``Outcome``: then refused as that header is, below). One under
    another name is, as ``saved_index`` says: ``left_out``; ``refused``, naming it,
    in a table whose every other column is an attribute (hcps: left out, its values
    would be lost, and read, row numbers saved under a name would be taken for one);
    ``read`` as the column it was in a table that reads its columns by their
    header only (a send list's consent columns: the others are left out all the
    same, row numbers among them; the catalog's: a contract column spelled
    otherwise is refused, the others named as not read). Row numbers saved as a
    range are no column in any case
    (:func:`~nextbest.contract.files.saved_index_names`).

    A header that spells a column of the contract (``required`` or ``optional``)
    otherwise ('HCP_ID', 'Territory ID', 'approvedUntil', 'Specialties') is refused,
    naming the column meant: a required one would be missing, and an optional one
    would be read as an extra column while its field falls back to its default
    (``specialties`` empty: content for one specialty shown to every specialty).
    """
    required = tuple(required)
    known = (*required, *optional)
    # A shallow copy: renaming or re-indexing in place must not touch the caller's
    # frame, and a deep copy costs seconds at millions of rows. An index pandas wrote
    # to Parquet is no column, unless it is named for one (hcp_id as the index).
    raw = raw.copy(deep=False)
    saved = saved_index_names(raw)
    # One spelling a column of the contract otherwise ('Outcome') is read, to be
    # refused below as that header is: left out, its field took the default unsaid.
    spellings = {column_spelling(column) for column in known}
    misspelt = [name for name in saved if column_spelling(name) in spellings]
    raw = index_as_columns(raw, (*known, *(saved if saved_index == "read" else misspelt)))
    if saved_index == "refused":
        # Left in the index it is no column, and the table reads every column:
        # its values would be lost without a word.
        for name in saved_index_names(raw):
            log.add(
                "is the table's index as pandas saved it (to_parquet without index=False), "
                "not a column, and would be lost: write it as a column, "
                "df.reset_index().to_parquet(path, index=False)",
                column=name,
            )
    raw.columns = pd.Index([str(name).strip() for name in raw.columns], dtype=object)
    raw.index = pd.RangeIndex(len(raw))
    raw = without_unnamed_columns(raw, log)
    seen: set[str] = set()
    for name in raw.columns:
        if name in seen:
            log.add("duplicate column", column=name)
        seen.add(name)
    if any(column not in seen for column in required):
        # The wrong file given (the catalog saved as hcps.csv): said as such, not only
        # as each of this table's columns missing.
        for table, columns in REQUIRED_COLUMNS.items():
            if set(columns) != set(required) and seen.issuperset(columns):
                log.add(
                    f"has every required column of {_a_file(table)} "
                    f"({', '.join(columns)}) and not those of {_table_said(required)}: "
                    f"the {table} given in its place? Give each table its own file "
                    "(docs/data.md)"
                )
    # 'HCP_ID', 'Territory ID', 'territory-id': the column meant, spelled otherwise.
    meant_by = {column_spelling(column): column for column in known}
    otherwise: dict[str, list[str]] = {}
    for name in raw.columns:
        meant = meant_by.get(column_spelling(name))
        if meant is not None and name != meant:
            otherwise.setdefault(meant, []).append(name)
    for meant in known:
        for there in otherwise.get(meant, []):
            hint = (
                f"there is '{there}': column names are lower-case, words joined by '_'; "
                f"rename it to '{meant}'"
            )
            if meant in seen:
                log.add(f"written twice, once as '{there}' ({hint} or drop it)", column=meant)
            elif meant in required:
                log.add(f"missing required column ({hint})", column=meant)
            else:
                log.add(
                    f"optional column written otherwise: it would be read as an extra "
                    f"column and {meant} left at its default ({hint})",
                    column=meant,
                )
        if meant in required and meant not in seen and meant not in otherwise:
            log.add("missing required column", column=meant)
    if rows_required and len(raw) == 0:
        log.add("no data rows (the table must not be empty)")
    # Without its columns nothing else can be checked meaningfully.
    log.raise_if_any()
    return raw


def _table_said(required: tuple[str, ...]) -> str:
    """'an hcps file' for the columns a table of :data:`REQUIRED_COLUMNS` requires, else
    what else needs them ('a file of hcp_id, territory_id': a territory alignment)."""
    for table, columns in REQUIRED_COLUMNS.items():
        if set(columns) == set(required):
            return _a_file(table)
    return f"a file of {', '.join(required)}"


def _a_file(table: str) -> str:
    """'an hcps file', 'a catalog file', 'an interactions file'."""
    return f"{'an' if table[0] in 'aeiouh' else 'a'} {table} file"


def column_spelling(name: str) -> str:
    """A header as the contract spells its columns: its words (see
    :func:`~nextbest.contract.schema.header_words`) lower-case and joined by '_'
    ('HCP_ID', 'Territory ID', 'approved-until', 'approvedUntil' -> hcp_id,
    territory_id, approved_until)."""
    return "_".join(header_words(name))


def without_unnamed_columns(raw: pd.DataFrame, log: ProblemLog) -> pd.DataFrame:
    """``raw`` without the columns a CSV header left unnamed (pandas calls them
    "Unnamed: 9"): a spreadsheet's trailing separator adds one without a value,
    nothing to read. A value in one is logged with its row: it would become a
    feature called "Unnamed: 9"."""
    unnamed = [name for name in raw.columns if re.fullmatch(r"Unnamed: \d+", str(name))]
    for name in unnamed:
        values = pd.Series(raw[name])
        log.add_rows(
            values.astype(str).str.strip().ne("").to_numpy(),
            None,
            _unnamed_value(values, int(str(name).split()[-1]) + 1),
        )
    # Only when there are any: drop() copies every column, hundreds of MB at millions of rows.
    return raw.drop(columns=unnamed) if unnamed else raw


def _unnamed_value(values: pd.Series, number: int) -> Callable[[int], str]:
    def describe(i: int) -> str:
        return (
            f"column {number} has no name in the header but holds {parse.shown(values, i)}: "
            "name it there, or remove the value"
        )

    return describe


def _others(raw: pd.DataFrame, known: Iterable[str]) -> list[str]:
    skip = set(known)
    return [str(name) for name in raw.columns if name not in skip]


def refuse_typed_text(raw: pd.DataFrame, column: str, log: ProblemLog) -> None:
    """Log what a typed (Parquet) ``column`` of text, ids above all, would be read as
    otherwise than it was written: true/false values (a boolean column), read as the
    text 'True' and 'False'; whole numbers a column of floats holds rounded (from
    2**53 up in float64: 123456789012345678 is 123456789012345680 there, an id no
    system wrote), each by its row. A CSV file's cells are text: nothing to log."""
    values = raw[column]
    if _true_false(values):
        log.add(
            "is a column of true/false values (a boolean column), which would be read as "
            "the text 'True' and 'False': write it as a column of text (ids as text or "
            "integers)",
            column=column,
        )
        return
    rounded = rounded_by_floats(values)
    if not rounded.any():
        return
    typed: Any = values.dtype  # Float32 (pandas' nullable floats) is float32 to numpy
    kind = np.dtype(getattr(typed, "numpy_dtype", typed))
    exact = int(np.finfo(kind).nmant) + 1  # float64: 53 bits of whole numbers held exactly
    log.add_rows(
        rounded,
        column,
        lambda i: (
            f"{parse.shown(values, i)} is read from a column of floats ({kind}), which holds "
            f"no whole number from 2**{exact} ({2**exact:,}) up exactly: the digits written "
            "may have been others"
        ),
    )
    log.hint(
        f"write {column} as text or as integers (int64), not as floats: a float column "
        "rounds long numeric ids, so that they name no HCP or action, or another one",
        column=column,
    )


def rounded_by_floats(values: pd.Series) -> npt.NDArray[np.bool_]:
    """The rows (a mask, shape (n,)) of a typed column of floats that hold a number
    from where the float holds no whole number exactly up (2**53 in float64, 2**24 in
    float32): the id written may have been another (:func:`refuse_typed_text`). All
    False for a column of any other type."""
    if not pd.api.types.is_float_dtype(values.dtype):
        return np.zeros(len(values), dtype=bool)
    typed: Any = values.dtype  # Float32 (pandas' nullable floats) is float32 to numpy
    kind = np.dtype(getattr(typed, "numpy_dtype", typed))
    exact = int(np.finfo(kind).nmant) + 1  # float64: 53 bits of whole numbers held exactly
    numbers = values.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        return np.asarray(~(np.abs(numbers) < 2.0**exact) & ~np.isnan(numbers), dtype=bool)


def _true_false(values: pd.Series) -> bool:
    """Whether ``values`` are of a boolean column: typed bools (nullable ones are
    Python bools beside None), or categories of them."""
    kind = values.dtype
    if isinstance(kind, pd.CategoricalDtype):
        categories = kind.categories
        return len(categories) > 0 and isinstance(categories[0], bool | np.bool_)
    if pd.api.types.is_bool_dtype(kind):
        return True
    if not pd.api.types.is_object_dtype(kind) or values.empty or isinstance(values.iat[0], str):
        return False  # a CSV file's text: the first cell says so without a scan
    present = values.notna().to_numpy()
    return bool(present.any()) and isinstance(values.iat[int(present.argmax())], bool | np.bool_)


def _text(raw: pd.DataFrame, column: str, log: ProblemLog) -> Codes:
    """The cells of ``column`` as text :class:`Codes`, a typed column that would not be
    read as written logged (:func:`refuse_typed_text`)."""
    refuse_typed_text(raw, column, log)
    return parse.codes(raw[column])


def _required_text(raw: pd.DataFrame, column: str, log: ProblemLog) -> Codes:
    cells = _text(raw, column, log)
    log.add_rows(cells.empty, column, lambda _: "empty value")
    # 'NULL', '#N/A': a missing value as a database or a spreadsheet writes one, which
    # read as text made an HCP's specialty or territory '#N/A'.
    log.add_rows(
        cells.where(lambda uniques: np.isin(np.char.lower(uniques.astype(str)), _REFUSED)),
        column,
        lambda i: (
            f"{parse.shown(raw[column], i)} is how a database or a spreadsheet writes a "
            f"missing value; {column} needs a value"
        ),
    )
    return cells


_REFUSED = np.array(sorted(REFUSED_NULL_WORDS))


def _not_one_of(shown: str, cells: Codes, i: int, words: Sequence[str]) -> str:
    """``'Promo' is not one of promotional, medical (did you mean 'promotional'?)``:
    row ``i`` of ``cells`` (read as the column reads it) refused from a closed set of
    ``words``, naming the word it is near, if any (:func:`near_word`)."""
    return f"{shown} is not one of {', '.join(words)}" + near_hint(
        str(cells.uniques[cells.codes[i]]), words
    )


def _check_unique(cells: Codes, column: str, log: ProblemLog, raw: pd.DataFrame) -> None:
    """Refuse the rows of ``column`` that repeat an earlier row's value, but for those
    a float column rounded (:func:`rounded_by_floats`), refused already: that two
    ids rounded to one is no second fault (it was said again as a duplicate)."""
    repeated = pd.Series(cells.codes).duplicated(keep="first").to_numpy() & ~cells.empty
    repeated &= ~rounded_by_floats(raw[column])
    scientific = _scientific(cells, repeated, column, log)

    def describe(i: int) -> str:
        first = log.rows(int(np.argmax(cells.codes == cells.codes[i])))
        value = parse.quoted(cells.uniques[cells.codes[i]])
        said = f"duplicate {column} {value} (first in row {first})"
        return f"{said}, {_SCIENTIFIC_SAID}" if scientific[i] else said

    log.add_rows(repeated, column, describe)


# Why a history's recommendation_id longer than the log keeps is refused: the ids are
# the service's, none of them that long, so shortening it would name nothing either.
_NAMES_NO_LOGGED_DECISION = (
    "all the recommendation log keeps, and no recommendation the service answers with is "
    "longer: it names no logged decision; give the id the touch was made under as the "
    "service answered it, or leave the cell empty for a touch made under none"
)


def _check_stored_length(
    cells: Codes,
    column: str,
    log: ProblemLog,
    *,
    advice: str = (
        "all the recommendation log and the feedback store keep; shorten it, here and "
        "wherever it is named"
    ),
) -> None:
    """Refuse the values of ``column`` longer than the recommendation log and the
    feedback store keep of it (:data:`~nextbest.limits.STORED_LENGTHS`), quoting each
    shortened, then ``advice`` (why the limit, what to do): PostgreSQL refuses to
    store such a value (answers naming it would be served but not logged) where
    SQLite stores it whole, and a copy cut short would name nothing (retraining,
    erasure and the gate join on these ids)."""
    limit = STORED_LENGTHS[column]
    lengths = np.fromiter(map(len, cells.uniques), dtype=np.intp, count=len(cells.uniques))

    def describe(i: int) -> str:
        value = parse.quoted(cells.uniques[cells.codes[i]], at_most=parse.QUOTED_AT_MOST)
        return f"{value} is too long: at most {limit} characters, {advice}"

    log.add_rows(cells.broadcast(lengths > limit), column, describe)


# A number as a spreadsheet shows one too long for its cell: '1.2E+05', '1,23457E+11'.
_SCIENTIFIC = re.compile(r"[+-]?\d+(?:[.,]\d+)?E[+-]\d+", re.IGNORECASE)
_SCIENTIFIC_SAID = "an id in scientific notation (see the hint)"


def _scientific(cells: Codes, rows: Mask, column: str, log: ProblemLog) -> Mask:
    """Which of ``rows`` hold an id in scientific notation, as a spreadsheet rewrites
    long numeric ids (123456 and 124999 both become '1.2E+05'); the hint on what to
    do is logged once when any does."""
    found = rows & cells.where(
        lambda uniques: np.array([bool(_SCIENTIFIC.fullmatch(u)) for u in uniques], dtype=bool)
    )
    if found.any():
        log.hint(
            f"ids in scientific notation ({parse.quoted(cells.uniques[cells.codes[found][0]])}):"
            " a spreadsheet rewrote long numeric ids as rounded numbers, so that distinct ids "
            "may have become one and none is the id it was: format the id column as text "
            "before exporting (or export from the source system)",
            column=column,
        )
    return found


def _boolean(raw: pd.DataFrame, column: str, log: ProblemLog, *, default: bool) -> pd.Series:
    parsed = parse.booleans(raw[column], default=default)
    log.add_rows(parsed.bad, column, lambda i: _not_a_boolean(raw[column], i))
    return parsed.values


def _not_a_number(values: pd.Series, position: int) -> str:
    said = f"{parse.shown(values, position)} is not a number"
    value = values.iat[position]
    if isinstance(value, str) and DECIMAL_COMMA.fullmatch(value.strip()):
        said += " (write decimals with '.')"
    return said + _null_hint(values, position)


def _not_a_boolean(values: pd.Series, position: int) -> str:
    return f"{parse.shown(values, position)} {_BOOLEAN_HINT}{_null_hint(values, position)}"


def _not_a_flag(values: pd.Series, position: int) -> str:
    return (
        f"{parse.shown(values, position)} is not 0 or 1 (use 1/0, true/false, yes/no, y/n "
        f"or t/f){_null_hint(values, position)}"
    )


def _null_hint(values: pd.Series, position: int) -> str:
    """' (write a missing value as an empty cell)' for a cell written 'NULL', '\\N',
    'NaN' and the like, else ''."""
    return f" ({NULL_HINT})" if is_null_word(values.iat[position]) else ""


def _float(raw: pd.DataFrame, column: str, log: ProblemLog) -> pd.Series:
    parsed = parse.floats(raw[column])
    log.add_rows(parsed.bad, column, lambda i: _not_a_number(raw[column], i))
    if parsed.bad.any():
        _decimal_comma_hint(raw[column], parsed.bad, column, log)
    return parsed.values


def _decimal_comma_hint(values: pd.Series, bad: Mask, column: str, log: ProblemLog) -> None:
    """Say once per column how many of its ``bad`` cells are decimals written with a
    comma, and how to export them: a locale's export writes every number so, and
    the problems shown (the first of the file) may all be another column's."""
    cells = parse.codes(values)
    comma = cells.where(
        lambda uniques: np.array([bool(DECIMAL_COMMA.fullmatch(u)) for u in uniques], dtype=bool)
    )
    found = bad & comma
    if found.any():
        example = parse.quoted(cells.uniques[cells.codes[found][0]])
        log.hint(
            f"{int(found.sum()):,} cells written with a decimal comma ({example}): export "
            "the file with '.' as the decimal mark (a spreadsheet set to a locale that "
            "writes ',' also separates the columns with ';'), or replace ',' by '.' in "
            "this column",
            column=column,
        )


class LookAlikes:
    """Known ids by the form a spreadsheet or a typed column turns them into (case,
    leading zeros, a trailing '.0'), built on first use."""

    def __init__(self, known: pd.Index) -> None:
        self._known = known
        self._by_form: dict[str, str] | None = None

    @staticmethod
    def form(value: str) -> str:
        return _TRAILING_ZERO_DECIMALS.sub("", value.strip()).casefold().lstrip("0") or "0"

    def of(self, value: str) -> str | None:
        if self._by_form is None:
            self._by_form = {}
            for known in map(str, self._known):
                self._by_form.setdefault(self.form(known), known)
        twin = self._by_form.get(self.form(value))
        return twin if twin != value else None


_TRAILING_ZERO_DECIMALS = re.compile(r"\.0+$")


def _unknown(
    column: str, value: str, known: pd.Index, table: str, look_alikes: LookAlikes | None = None
) -> str:
    """``unknown hcp_id 'X' (not in hcps)``, saying so when the id differs from a known
    one only in how its accented letters are encoded (Unicode NFC against NFD: the
    two look the same on screen, and ids are compared exactly), or in case, leading
    zeros or a trailing '.0' (``look_alikes``: what a spreadsheet makes of ids)."""
    said = f"unknown {column} {parse.quoted(value)} (not in {table})"
    if column == "action_id" and is_null_word(value):
        said += f"; {NULL_HINT}: an empty action_id is a decision to not touch"
    twin = look_alikes.of(value) if look_alikes is not None else None
    if twin is not None:
        return (
            f"{said}; {table} has {parse.quoted(twin)}, which differs only in case, leading "
            "zeros or a trailing '.0' (what a spreadsheet or a number column makes of ids): "
            "ids are compared exactly, so keep them as text in both files"
        )
    if value.isascii():  # plain ASCII has one encoding: no twin to look for
        return said
    composed = unicodedata.normalize("NFC", value)
    twin = next(
        (
            k
            for k in map(str, known)
            if not k.isascii() and unicodedata.normalize("NFC", k) == composed
        ),
        None,
    )
    if twin is not None:
        said += (
            f"; it looks like {parse.quoted(twin)} there, but its accented letters are encoded "
            "differently (Unicode normalisation): export both files from one system, or "
            "normalise both to NFC"
        )
    return said


def _unknown_actions_hint(action: Codes, unknown: Mask) -> str:
    """What to do about interactions naming actions the catalog lacks, said once: most
    often content taken out of use whose catalog row was deleted."""
    counts = np.bincount(action.codes[unknown], minlength=len(action.uniques))
    named = np.flatnonzero(counts)
    ids = [str(action.uniques[code]) for code in named[np.argsort(-counts[named], kind="stable")]]
    listed = ", ".join(ids[:5]) + (f" and {len(ids) - 5:,} more" if len(ids) > 5 else "")
    rows = int(counts.sum())
    return (
        f"{rows:,} row{'s' if rows != 1 else ''} name "
        f"{'an action_id' if len(ids) == 1 else f'{len(ids):,} action_ids'} not in the "
        f"catalog ({listed}): keep the catalog row of every action the interactions name, so its "
        "history stays readable; for content taken out of use, put its row back and "
        "withdraw it by setting its approved_until in the past, or by listing it under "
        "withdrawn_actions in the serving rules (training/rules.yaml)"
    )


def _timestamp(raw: pd.DataFrame, column: str, log: ProblemLog, *, required: bool) -> pd.Series:
    parsed = parse.timestamps(raw[column])
    log.add_rows(parsed.bad, column, lambda i: _not_a_time(raw[column], i))
    if required:
        log.add_rows(parsed.missing, column, lambda _: "empty value")
    return parsed.values


# A spreadsheet stores a date as days since 1899-12-30 and, in a column not formatted
# as a date, exports that number: 2026-06-04 14:51 is 46177.619201. 20000 to 80000
# are the years 1954 to 2119, the span of a history or a catalog.
_SERIAL_DAYS = (20_000.0, 80_000.0)
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d*)?")
# Seconds since 1970 from 2000-01-01 to 2100-01-01: what a database, an event stream
# or a Parquet column of integers holds for a time (an epoch), or milliseconds so.
_EPOCH_SECONDS = (946_684_800.0, 4_102_444_800.0)


def _not_a_time(values: pd.Series, position: int) -> str:
    value = values.iat[position]
    partial = parse.partial_date(value)
    if partial:
        return parse.no_day_said(parse.shown(values, position), partial)
    said = (
        f"{parse.shown(values, position)} is not an ISO 8601 date or date-time (within 1677-2262)"
    )
    if is_null_word(value):
        return f"{said} ({NULL_HINT})"
    beyond = parse.out_of_range(value)
    if beyond:
        return f"{said}: {beyond}"
    if _serial_day(value):
        return (
            f"{said}: it looks like a spreadsheet's serial day number: format the column as a "
            f"date before exporting, so that it is written as {parse.TIME_EXAMPLES}"
        )
    if epoch := _since_1970(value):
        return (
            f"{said}: it looks like {epoch}: the contract reads a time only as written "
            f"in ISO 8601, as {parse.TIME_EXAMPLES}"
        )
    if isinstance(value, str | int | float | np.number) and not isinstance(value, bool | np.bool_):
        return f"{said}: write it as {parse.TIME_EXAMPLES}"
    return said  # a typed value of another kind: its spelling is not the problem


def _serial_day(value: object) -> bool:
    """Whether a cell is a plain number in the range of a spreadsheet's serial days."""
    number = _plain_number(value)
    return number is not None and _SERIAL_DAYS[0] <= number < _SERIAL_DAYS[1]


def _since_1970(value: object) -> str:
    """'seconds since 1970 (2026-06-04T10:45:26)' (or milliseconds) for a cell that is
    a plain number in the range of such a count from 2000 to 2100, else ''."""
    number = _plain_number(value)
    if number is None:
        return ""
    for unit, per_second in (("seconds", 1.0), ("milliseconds", 1000.0)):
        if _EPOCH_SECONDS[0] <= number / per_second < _EPOCH_SECONDS[1]:
            moment = pd.Timestamp(number / per_second, unit="s").floor("s")
            return f"{unit} since 1970 ({moment.isoformat()})"
    return ""


def _plain_number(value: object) -> float | None:
    """A cell that is a plain number (digits, a '.'; or a typed number) as a float."""
    if isinstance(value, str):
        return float(value) if _PLAIN_NUMBER.fullmatch(value.strip()) else None
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    ):
        return float(value)
    return None


def _engaged(raw: pd.DataFrame, no_touch: Mask, log: ProblemLog) -> pd.Series:
    parsed = parse.floats(raw["engaged"])
    values = parsed.values.to_numpy()
    bad = parsed.bad
    if bad.any():
        # CRM and e-mail exports write the flag True/False or Y/N: the spellings
        # holdout and consent columns take, read as 1/0.
        flags = parse.booleans(raw["engaged"], default=False)
        spelled = bad & ~flags.bad & ~flags.missing
        values = np.where(spelled, flags.values.to_numpy(dtype="float64"), values)
        bad = bad & ~spelled
    log.add_rows(bad, "engaged", lambda i: _not_a_flag(raw["engaged"], i))
    log.add_rows(parsed.missing & ~no_touch, "engaged", lambda _: "empty value (0 or 1 expected)")
    present = ~parsed.missing & ~bad
    log.add_rows(
        present & (values != 0) & (values != 1),
        "engaged",
        lambda i: f"{parse.number(values[i])} is not 0 or 1",
    )
    log.add_rows(
        no_touch & (values == 1),
        "engaged",
        lambda _: "engaged is 1 on a no-touch row (action_id empty)",
    )
    ok = present & ((values == 0) | (values == 1))
    return pd.Series(np.where(ok, values, 0).astype(np.int8))


def _extra(raw: pd.DataFrame, column: str, log: ProblemLog | None = None) -> pd.Series:
    """An extra column as a feature; one named like an id or code stays text. With
    ``log`` (a column the model reads: an hcps attribute), an infinite number ('inf'
    in a CSV, a float column's inf) is logged with its row: no model learns from it,
    and an empty cell is the missing value."""
    feature = parse.feature(raw[column], identifier=is_identifier_column(column))
    if log is not None and pd.api.types.is_float_dtype(feature.dtype):
        values = feature.to_numpy()
        log.add_rows(
            np.isinf(values),
            column,
            lambda i: (
                f"{parse.number(values[i])} is not a finite number: write a number, or "
                "leave the cell empty for a missing value"
            ),
        )
    return feature


def _dotted_thousands(raw: pd.DataFrame, read: Mapping[str, pd.Series]) -> dict[str, list[str]]:
    """The columns of ``read`` (parsed from ``raw``) read as decimals from text whose
    cells look like thousands written with '.' (see
    :func:`~nextbest.contract.schema.reads_as_dotted_thousands`), each with up to two
    of its dotted cells and one without a '.', as the file writes them. Columns typed
    as numbers in ``raw`` (Parquet) are left out: no text says how they were written."""
    found: dict[str, list[str]] = {}
    for column, values in read.items():
        if (
            column not in raw.columns
            or not pd.api.types.is_float_dtype(values.dtype)
            or not _may_be_dotted_thousands(values.to_numpy(dtype="float64"))
            or pd.api.types.is_numeric_dtype(raw[column].dtype)
        ):
            continue
        cells = [str(cell) for cell in parse.codes(raw[column]).uniques if cell != ""]
        if reads_as_dotted_thousands(cells):
            dotted = [cell for cell in cells if DOTTED_THOUSAND.fullmatch(cell)]
            plain = next(cell for cell in cells if not DOTTED_THOUSAND.fullmatch(cell))
            found[column] = [*dotted[:2], plain]
    return found


def _may_be_dotted_thousands(numbers: npt.NDArray[np.float64]) -> bool:
    """What the numbers of a column of dotted thousands are (a fraction of at least 1,
    and a whole number): most columns of floats are not, and their text (millions of
    cells in interactions) is not read again."""
    finite = numbers[np.isfinite(numbers)]
    whole = finite == np.round(finite)
    return bool(whole.any()) and bool((~whole & (np.abs(finite) >= 1)).any())


def _nan(n: int) -> pd.Series:
    return pd.Series(np.full(n, np.nan), dtype="float64")
