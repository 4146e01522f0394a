"""Column parsers shared by the validators.

A column arrives in one of two shapes: from CSV every cell is a ``str`` ('' when
empty), most often as a categorical of them; from Parquet (or an adapter) cells
have native types with nulls, and strings may come as categoricals. Each parser
accepts either and returns the normalised values plus boolean masks (numpy arrays
over 0-based positions) of cells that were empty or unparseable, so the validators
can report row numbers without looping over rows.

Text is handled as :class:`Codes` (distinct values + one code per row): columns
such as ``hcp_id`` or ``engaged`` have far fewer distinct values than rows, so
stripping, parsing and look-ups run once per distinct value and are broadcast back.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.types import (
    is_bool_dtype,
    is_datetime64_any_dtype,
    is_float_dtype,
    is_integer_dtype,
    is_numeric_dtype,
)
from pydantic_core import PydanticCustomError

from nextbest.contract.schema import FALSE_WORDS, TRUE_WORDS

Mask = npt.NDArray[np.bool_]

# A leading zero before another digit, or 16+ digits: an identifier, not a number.
_IDENTIFIER_PATTERN = re.compile(r"[+-]?(?:0\d|\d{16})")


@dataclass(frozen=True)
class Codes:
    """A text column as distinct values plus a code per row.

    ``uniques`` (object array of distinct stripped ``str``, '' standing for empty or
    null) and ``codes`` (int32 array, shape (n,), indexes into ``uniques``: half
    the memory of intp, 20 MB less per text column of 5 million rows).
    """

    codes: npt.NDArray[np.int32]
    uniques: npt.NDArray[np.object_]

    def __len__(self) -> int:
        return len(self.codes)

    def series(self) -> pd.Series:
        """The cells as an object Series of ``str``, shape (n,)."""
        return pd.Series(self.uniques.take(self.codes), dtype=object)

    def broadcast(self, per_unique: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Spread an array aligned with ``uniques`` to one value per row."""
        return per_unique.take(self.codes)

    def where(self, per_unique: Callable[[npt.NDArray[np.object_]], Mask]) -> Mask:
        """Row mask from a predicate evaluated on the distinct values only."""
        return self.broadcast(np.asarray(per_unique(self.uniques), dtype=bool))

    @property
    def empty(self) -> Mask:
        """Rows whose cell is empty (or null)."""
        return self.where(lambda uniques: uniques == "")

    def map(self, func: Callable[[str], str]) -> Codes:
        """Apply ``func`` to each distinct value (e.g. ``str.lower``), merging equal results."""
        return _dedupe(self.codes, np.array([func(str(u)) for u in self.uniques], dtype=object))


def _dedupe(codes: npt.NDArray[np.int32], uniques: npt.NDArray[np.object_]) -> Codes:
    """Codes over ``uniques`` that may repeat or go unused -> compact, distinct Codes."""
    merged_codes, merged = pd.factorize(uniques)
    row_codes = np.asarray(merged_codes, dtype=np.int32).take(codes)
    merged = np.asarray(merged, dtype=object)
    used = np.zeros(len(merged), dtype=bool)
    used[row_codes] = True
    if not used.all():
        # Unused values (e.g. unused categories) would skew checks made per value.
        renumber = (np.cumsum(used) - 1).astype(np.int32)
        row_codes = renumber.take(row_codes)
        merged = merged[used]
    return Codes(row_codes, merged)


def codes(values: pd.Series) -> Codes:
    """Read any column as text :class:`Codes`: cells ``str()``-ed and stripped.

    Whole floats read as integers ("123", not "123.0"): a numeric id column stored
    as float because it has nulls names the same ids as an integer one. (From 2**53
    up a float holds no id exactly: the data contract refuses those, see
    :func:`nextbest.contract.validate.refuse_typed_text`; read as written out in full,
    not in scientific notation, that refusal is what they are said with.)
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        raw_codes = np.array(values.cat.codes.to_numpy(), dtype=np.int32)  # a copy: set below
        distinct: Any = values.cat.categories
    else:
        factorized, distinct = pd.factorize(values, use_na_sentinel=True)
        raw_codes = np.asarray(factorized, dtype=np.int32)
    distinct = pd.Series(distinct)
    if is_float_dtype(distinct.dtype):
        numbers = distinct.to_numpy(dtype="float64", na_value=np.nan)
        if _whole(numbers):
            distinct = distinct.astype("Int64")
        elif _whole(numbers, exactly=False):  # rounded past 2**53: written out all the same
            distinct = pd.Series([None if np.isnan(x) else number(x) for x in numbers])
    strings = distinct.astype(object).astype("string").str.strip().fillna("")
    # Nulls (code -1) become one extra distinct value, ''.
    uniques = np.append(strings.to_numpy(dtype=object), "").astype(object)
    raw_codes[raw_codes < 0] = len(uniques) - 1
    return _dedupe(raw_codes, uniques)


def text(values: pd.Series) -> pd.Series:
    """Cells as stripped ``str`` (object dtype) with ``''`` for missing; shape (n,)."""
    return codes(values).series()


@dataclass(frozen=True)
class Parsed:
    """Result of parsing one column.

    ``values`` has the target dtype (NaN/NaT/default where ``missing`` or ``bad``);
    ``missing`` marks empty cells, ``bad`` non-empty cells that could not be parsed.
    """

    values: pd.Series
    missing: Mask
    bad: Mask


# How many characters of a value a message quotes, when it may be long (a value sent
# or read in a file: a message does not send back a megabyte).
QUOTED_AT_MOST = 40


def quoted(value: str, *, at_most: int | None = None) -> str:
    """``value`` in single quotes as the file holds it (``'\\N'`` shows as '\\N', not
    repr's doubled backslash); repr only for what would not print (a tab, a
    control character). With ``at_most``, a longer value is cut there and its length
    said: a message does not send back a megabyte that was sent."""
    shown = value if at_most is None or len(value) <= at_most else value[:at_most]
    said = f"'{shown}'" if shown.isprintable() else repr(shown)
    return said if shown is value else f"{said}... ({len(value):,} characters)"


# Control characters: C0 (a tab, a line break, NUL), DEL and C1. No id a data file or
# a CRM holds has one inside it: a paste or an export gone wrong, an id matching none.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_NAMES = {
    "\x00": "a NUL character",
    "\t": "a tab",
    "\n": "a line break",
    "\r": "a carriage return",
}


def why_no_id(value: str, what: str) -> str | None:
    """Why ``value``, an id as sent (``what`` it is: 'an HCP id'), can name nothing;
    None when it can. Blank (white space alone, dropped around an id: refused in
    pydantic's words as "at least 1 character", of a value that has some), or
    holding a control character within it, said with its place (counted from 1 in
    the value as sent). An empty value is left to the field's own length check."""
    stripped = value.strip()
    if value and not stripped:
        return (
            f"{what} is blank ({len(value)} character{'s' if len(value) > 1 else ''} of "
            "white space and nothing else): send the id"
        )
    found = _CONTROL_CHARACTER.search(stripped)
    if found is None:
        return None
    character = found.group()
    position = len(value) - len(value.lstrip()) + found.start() + 1
    name = _CONTROL_NAMES.get(character, "a control character")
    return (
        f"{what} holds {name} (\\u{ord(character):04x}) at character {position} of "
        f"{quoted(value, at_most=QUOTED_AT_MOST)}: no id has one (a paste or an export "
        "gone wrong?); remove it"
    )


def refuse_no_id(value: object, what: str) -> object:
    """``value`` as it is, unless it is text that :func:`why_no_id` refuses: then a
    pydantic error saying why, as ``string_too_short`` when blank (its ``ctx`` as
    pydantic's), ``control_character`` when it holds one."""
    if not isinstance(value, str):
        return value
    why = why_no_id(value, what)
    if why is None:
        return value
    if not value.strip():
        raise PydanticCustomError("string_too_short", why, {"min_length": 1})
    raise PydanticCustomError("control_character", why)


class KnownIds(Collection[str]):
    """The ids of a served model, for an exact membership test (a dict lookup, as
    before: ``id in known``, or ``known(id)``) and, when refusing one it does not hold,
    :func:`spelled_alike`'s lookup of the id meant in any case.

    Built once per model load: ``exact`` is the model's own id mapping (kept, not
    copied). Only the ids in mixed case (``a0B5e00000AbCdEfGH``, a CRM's) are indexed
    by their case-folded spelling, as an all upper or all lower case id is found by
    trying the id sent in that case; by the folded spelling's hash, sorted, each
    match checked (16 bytes an id where a dict of folded spellings took 98: 98 MB
    for a million ids in each serving worker). A folded spelling two ids share
    names neither."""

    __slots__ = ("_exact", "_hashes", "_mixed")

    def __init__(self, exact: Mapping[str, object]) -> None:
        self._exact = exact
        mixed = [i for i in exact if i != i.upper() and i != i.lower()]
        hashes = np.fromiter((hash(i.casefold()) for i in mixed), np.int64, len(mixed))
        order = np.argsort(hashes, kind="stable")
        self._hashes = hashes[order]
        self._mixed = np.array(mixed, dtype=object)[order]

    def __contains__(self, hcp_id: object) -> bool:
        return hcp_id in self._exact

    def __call__(self, hcp_id: str) -> bool:
        return hcp_id in self._exact

    def __iter__(self) -> Iterator[str]:
        return iter(self._exact)

    def __len__(self) -> int:
        return len(self._exact)

    def in_another_case(self, hcp_id: str) -> str | None:
        """The mixed-case id that ``hcp_id`` is in another case; None when there is none
        (or two are)."""
        if not len(self._hashes):
            return None
        folded = hcp_id.casefold()
        key = hash(folded)
        start = int(np.searchsorted(self._hashes, key, side="left"))
        stop = int(np.searchsorted(self._hashes, key, side="right"))
        alike = [str(i) for i in self._mixed[start:stop] if str(i).casefold() == folded]
        return alike[0] if len(alike) == 1 and alike[0] != hcp_id else None


def spelled_alike(hcp_id: str, is_known: Callable[[str], bool] | KnownIds) -> str | None:
    """The id ``is_known`` knows that ``hcp_id`` is in another case (a CRM or a
    spreadsheet that changed the case of the ids it holds); None when there is none.
    An id in upper or lower case is found by trying ``hcp_id`` in that case; one in
    mixed case only in a :class:`KnownIds` (its case-folded index). A few lookups, no
    scan: an unknown id costs no more than a known one."""
    for candidate in (hcp_id.upper(), hcp_id.lower()):
        if candidate != hcp_id and is_known(candidate):
            return candidate
    return is_known.in_another_case(hcp_id) if isinstance(is_known, KnownIds) else None


def said_in_another_case(meant: str) -> str:
    """What a refusal of an unknown id (an HCP's, a rep key's name, a recommendation's)
    adds when ``meant`` is the same id in another case (:func:`spelled_alike`)."""
    return f" (ids are compared exactly, case included: did you mean {quoted(meant)}?)"


def shown(values: pd.Series, position: int) -> str:
    """The raw cell at ``position`` as it should appear in a message."""
    value = values.iat[position]
    if isinstance(value, str):
        return quoted(value.strip())
    if isinstance(value, float | np.floating):
        return number(float(value))
    return str(value)


def moment(value: np.datetime64) -> str:
    """ISO 8601 spelling of a timestamp for messages, as precise as needed."""
    return str(np.datetime_as_string(value, unit="auto"))


def number(value: float) -> str:
    """Shortest exact spelling of a float for messages (``1.5``, ``0``, ``-2``)."""
    return str(np.format_float_positional(value, trim="-"))


def _numeric(values: pd.Series) -> bool:
    return is_numeric_dtype(values.dtype) and not is_bool_dtype(values.dtype)


def as_float64(values: pd.Series) -> npt.NDArray[np.float64]:
    """A numeric column as float64, shape (n,), NaN for null. A float32 (or float16)
    value becomes the float64 of the decimal it was written as, the shortest that
    reads back to it: 0.1 stored as float32 is 0.1, not 0.10000000149011612, which a
    plain cast gives (and a CSV of the same data does not)."""
    narrow = str(values.dtype).lower()
    if is_float_dtype(values.dtype) and narrow in ("float32", "float16"):
        # Spelled in its own width: a float16 0.1 spelled as a float32 is 0.099975586.
        return values.to_numpy(dtype=narrow, na_value=np.nan).astype(str).astype("float64")
    return values.to_numpy(dtype="float64", na_value=np.nan)


def floats(values: pd.Series) -> Parsed:
    """Parse numbers to float64. Only an empty cell is missing ('NA', 'nan' are bad).
    Typed float32 values are read as written (see :func:`as_float64`)."""
    n = len(values)
    if _numeric(values) or (is_bool_dtype(values.dtype) and not values.hasnans):
        result = pd.Series(as_float64(values), copy=False)
        return Parsed(result, result.isna().to_numpy(), np.zeros(n, dtype=bool))
    cells = codes(values)
    empty = cells.uniques == ""
    per_unique, bad = _numbers(cells.uniques, empty)
    return Parsed(
        pd.Series(cells.broadcast(per_unique.to_numpy(dtype="float64", na_value=np.nan))),
        cells.broadcast(empty),
        cells.broadcast(bad),
    )


def _numbers(strings: npt.NDArray[np.object_], empty: Mask) -> tuple[pd.Series, Mask]:
    """Parse non-empty ``strings`` as numbers: (int64 or float64 Series, bad mask).

    pd.to_numeric finds the failures fast, but its float parser can be one ulp off
    (0.04180205746705827 -> 0.0418020574670582), which would break CSV round trips;
    floats are therefore re-read with Python's exact conversion.
    """
    cells = pd.Series(strings, dtype=object).where(~empty)
    fast: Any = pd.to_numeric(cells, errors="coerce")
    bad = fast.isna().to_numpy() & ~empty
    if is_integer_dtype(fast.dtype):
        return fast, bad
    try:
        exact = cells.where(~bad).astype("float64")
    except (TypeError, ValueError):  # pragma: no cover - to_numeric accepted what float() does not
        exact = fast.astype("float64")
    return exact, bad


def booleans(values: pd.Series, *, default: bool) -> Parsed:
    """Parse true/false, yes/no, y/n, t/f, 1/0 (any case) to bool; empty -> ``default``."""
    n = len(values)
    if is_bool_dtype(values.dtype) and not values.hasnans:
        return Parsed(
            pd.Series(values.to_numpy(dtype=bool)), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        )
    if _numeric(values):
        parsed = floats(values)
        numbers = parsed.values.to_numpy()
        bad = ~parsed.missing & (numbers != 0) & (numbers != 1)
        result = np.where(parsed.missing, default, numbers == 1)
        return Parsed(pd.Series(result, dtype=bool), parsed.missing, bad)
    cells = codes(values)
    words = [str(u).lower() for u in cells.uniques]
    is_true = np.array([word in TRUE_WORDS for word in words], dtype=bool)
    is_false = np.array([word in FALSE_WORDS for word in words], dtype=bool)
    is_empty = np.array([word == "" for word in words], dtype=bool)
    return Parsed(
        pd.Series(cells.broadcast(is_true | (is_empty & default)), dtype=bool),
        cells.broadcast(is_empty),
        cells.broadcast(~(is_true | is_false | is_empty)),
    )


def timestamps(values: pd.Series) -> Parsed:
    """Parse ISO 8601 dates / date-times to naive UTC ``datetime64[ns]``.

    Offsets ('Z', '+02:00') and tz-aware columns are converted to UTC and the zone
    dropped; naive values are taken as UTC already. Non-ISO spellings such as
    '01/02/2024' are rejected rather than guessed (day-first or month-first?), and
    so are dates without a day ('2024', '2024-03': see :func:`partial_date`).
    """
    if is_datetime64_any_dtype(values.dtype):
        stamps = values
        if isinstance(stamps.dtype, pd.DatetimeTZDtype):
            stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
        try:
            # pandas' astype checks bounds; numpy's would silently wrap year 3000 around.
            result = stamps.astype("datetime64[ns]")
        except (pd.errors.OutOfBoundsDatetime, OverflowError):
            # Report out-of-range values cell by cell, as text parsing does.
            return _timestamps_from_text(values)
        return Parsed(result, result.isna().to_numpy(), np.zeros(len(values), dtype=bool))
    return _timestamps_from_text(values)


# A cell that names its UTC offset: "Z", a "+" anywhere (no date or time has one), or
# a "-" after the time separator ("2026-11-30T08:00:00-05:00"; a date's own dashes
# come before it).
_OFFSET_PATTERN = r"[zZ+]|[T ][^-]*-"


def _names_offset(strings: npt.NDArray[np.object_]) -> Mask:
    """Which cells carry a UTC offset (see ``_OFFSET_PATTERN``), vectorised in Arrow."""
    found = pc.match_substring_regex(pa.array(strings, type=pa.string()), _OFFSET_PATTERN)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


def _iso_utc(text: pd.Series) -> pd.Series:
    # format="ISO8601" parses each cell on its own, so date-only and date-time cells
    # may mix; inferring one format from the first cell would reject the others.
    stamps = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    # pandas moves a time by its offset without checking that the result stays in range:
    # '2262-04-11T23:47:16-01:00' wraps around to 1677-09-21. What wrapped lies within
    # an offset (under a day) of an end of the range, so only cells that near an end
    # are read again, one by one, where the move is checked.
    local = stamps.dt.tz_localize(None)
    near_end = (local < pd.Timestamp.min + _DAY) | (local > pd.Timestamp.max - _DAY)
    for position in np.flatnonzero(near_end.to_numpy()).tolist():
        if utc_instant(str(text.iat[position])) != stamps.iat[position]:
            stamps.iat[position] = pd.NaT
    return stamps


_DAY = pd.Timedelta(days=1)
# A date, first of any ISO 8601 spelling (pd.Timestamp reads other shapes too).
_STARTS_AS_DATE = re.compile(r"\s*[+-]?\d{4}-\d{1,2}-\d{1,2}")


def utc_instant(value: object) -> pd.Timestamp | None:
    """The UTC instant an ISO 8601 date or date-time cell names, at a resolution wide
    enough for any year (a time without an offset is UTC), or None if it names none.
    One cell at a time: for the few the column-wide parse cannot hold. A typed cell
    (a ``pd.Timestamp`` of a Parquet column in microseconds) is taken as it is."""
    if isinstance(value, pd.Timestamp):
        stamp = value
    elif isinstance(value, str) and _STARTS_AS_DATE.match(value) is not None:
        try:
            with warnings.catch_warnings():
                # A zone pandas does not know ('CEST') is dropped with a FutureWarning,
                # printed to the person running validate; a later pandas refuses it.
                warnings.simplefilter("error", FutureWarning)
                stamp = pd.Timestamp(value.strip())
        except (ValueError, OverflowError, FutureWarning):  # OutOfBoundsDatetime: a ValueError
            return None
    else:
        return None
    return stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")


def out_of_range(value: object) -> str:
    """Why a cell that is an ISO 8601 date or date-time is refused when the instant it
    names in UTC lies outside the times a ``datetime64[ns]`` holds (1677-09-21 to
    2262-04-11), e.g. 'in UTC it is 2262-04-12T00:47:16, later than ... the last time
    that can be held'; '' for any other cell."""
    instant = utc_instant(value)
    if instant is None:
        return ""
    if instant > pd.Timestamp.max.tz_localize("UTC"):
        bound, side = pd.Timestamp.max, "later than the last"
    elif instant < pd.Timestamp.min.tz_localize("UTC"):
        bound, side = pd.Timestamp.min, "earlier than the first"
    else:
        return ""
    end = f"{side} time that can be held, {moment(bound.to_datetime64())}"
    if isinstance(value, pd.Timestamp):
        offset = value.tzinfo is not None
    else:
        offset = bool(_names_offset(np.array([value], dtype=object))[0])
    if offset:
        return f"in UTC it is {moment(instant.tz_localize(None).to_datetime64())}, {end}"
    return f"it is {end}"


# A year alone ("2024") or a year and month ("2024-03", "2024-3"): ISO 8601 allows
# them, and pandas reads them as the first day of the period, silently.
_PARTIAL_DATE = re.compile(r"[+-]?(\d{4})(?:-(\d{1,2}))?")


def partial_date(value: object) -> str:
    """'a year alone' or 'a year and month' for a cell that names no day (``'2024'``,
    ``'2024-03'``, a number 2024 of a typed column), else ''."""
    if isinstance(value, bool | np.bool_):
        return ""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        value = int(value)  # an integer column with nulls, read as floats
    if not isinstance(value, str | int | np.integer):
        return ""
    found = _PARTIAL_DATE.fullmatch(str(value).strip())
    if found is None:
        return ""
    return "a year and month" if found.group(2) else "a year alone"


# Times as a message asks for them, spelled so that day and month cannot be taken for
# each other.
TIME_EXAMPLES = "2026-11-30 or 2026-11-30T08:00:00+00:00"


def no_day_said(said: str, partial: str) -> str:
    """Why a cell or field that names no day (``partial``: what :func:`partial_date`
    says of it, ``said``: the value as a message quotes it) is refused, the same
    words wherever a time is read (the data files, feedback events)."""
    period = "month" if "month" in partial else "year"
    return (
        f"{said} is {partial}, not a date: it would be read as the first day of the "
        f"{period}; write the full date, as {TIME_EXAMPLES}"
    )


def _partial_dates(strings: npt.NDArray[np.object_]) -> Mask:
    """Which (stripped) cells are dates without a day (see :func:`partial_date`),
    vectorised in Arrow: a history has about as many distinct times as rows."""
    pattern = f"^{_PARTIAL_DATE.pattern}$"
    found = pc.match_substring_regex(pa.array(strings, type=pa.string()), pattern)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


def _timestamps_from_text(values: pd.Series) -> Parsed:
    cells = codes(values)
    empty = cells.uniques == ""
    text = pd.Series(cells.uniques).where(~empty)
    offset = _names_offset(cells.uniques) & ~empty
    if offset.any() and (~offset & ~empty).any():
        # Cells with and without an offset, parsed together, give a cell without one
        # the offset of the cell before it (pandas 2.3): "23:30+09:00" then "23:30"
        # read both as 14:30 UTC. Each kind is parsed on its own; no offset is UTC.
        stamps = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
        stamps[offset] = _iso_utc(text[offset])
        stamps[~offset] = _iso_utc(text[~offset])
    else:
        stamps = _iso_utc(text)
    per_unique = stamps.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    per_unique[_partial_dates(cells.uniques)] = np.datetime64("NaT")
    bad = np.isnat(per_unique) & ~empty
    return Parsed(
        pd.Series(cells.broadcast(per_unique), dtype="datetime64[ns]"),
        cells.broadcast(empty),
        cells.broadcast(bad),
    )


def feature(values: pd.Series, *, identifier: bool = False) -> pd.Series:
    """Normalise a free attribute column: numbers stay numbers, anything else is str.

    Integers become int64, other numbers float64, bools int64 0/1 (so that a CSV
    round trip gives the same dtype back). A text column whose non-empty cells all
    parse as numbers becomes numeric (float64 if any cell is empty, int64 if all are
    integers), unless a cell reads as an identifier (a leading zero as in "02134",
    or more digits than a float keeps); otherwise, and always when ``identifier``
    (the column's name says it is one, see :func:`schema.is_identifier_column`), it
    is stripped ``str`` with ``''`` for missing, leading zeros kept.
    """
    if identifier:
        return codes(values).series()
    if is_bool_dtype(values.dtype) and not values.hasnans:
        return pd.Series(values.to_numpy(dtype="int64"))
    if _numeric(values):
        if is_integer_dtype(values.dtype) and not values.hasnans:
            return pd.Series(values.to_numpy(dtype="int64"))
        return pd.Series(as_float64(values))
    cells = codes(values)
    empty = cells.uniques == ""
    if _identifier_like(cells.uniques).any():
        return cells.series()
    converted, bad = _numbers(cells.uniques, empty)
    if bad.any():
        return cells.series()
    if is_integer_dtype(converted.dtype):
        return pd.Series(cells.broadcast(converted.to_numpy(dtype="int64")))
    return pd.Series(cells.broadcast(converted.to_numpy(dtype="float64", na_value=np.nan)))


def _identifier_like(strings: npt.NDArray[np.object_]) -> Mask:
    """Cells that are digits but not a quantity: a leading zero ("02134", "-007"; "0"
    and "0.5" are numbers) or 16+ digits in a row (an id a float64 would round)."""
    if len(strings) == 0:
        return np.zeros(0, dtype=bool)
    found = pd.Series(strings, dtype=object).str.match(_IDENTIFIER_PATTERN)
    return found.to_numpy(dtype=bool, na_value=False)


def _whole(numbers: npt.NDArray[np.float64], *, exactly: bool = True) -> bool:
    """Whether every non-NaN value is an integer a float64 holds exactly (not
    ``exactly``: an integer, from 2**53 up the one the float rounded another to)."""
    present = numbers[~np.isnan(numbers)]
    return bool(np.all(np.isfinite(present) & (present == np.round(present)))) and (
        not exactly or bool(np.all(np.abs(present) < 2.0**53))
    )
