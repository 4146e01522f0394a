"""What a data set's files say beyond keeping the contract: columns left unread, numbers
read as text, personal data, catalog values no HCP matches, channels without consent
columns, territories spelled two ways, empty rows skipped. Each function returns notes,
one line of text each, for ``validate`` and ``train`` to print (and a run to keep in its
notes.txt); none of them refuses the data."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from nextbest.contract.dataset import Dataset
from nextbest.contract.files import EMPTY_ROWS
from nextbest.contract.parse import number, quoted
from nextbest.contract.schema import (
    CONSENT_PREFIX,
    GROUPED_NUMBER,
    NULL_WORDS,
    NUMBER_SHAPED,
    OPTIONAL_CATALOG_COLUMNS,
    OPTIONAL_INTERACTION_COLUMNS,
    REP_CHANNEL_PREFIX,
    REQUIRED_CATALOG_COLUMNS,
    REQUIRED_HCP_COLUMNS,
    REQUIRED_INTERACTION_COLUMNS,
    TABLES,
    allowed_specialties,
    consent_column,
    is_identifier_column,
    is_rep_channel,
    specialty_spelling,
    ungrouped,
)
from nextbest.contract.validate import DECIMAL_COMMA, DOTTED_THOUSANDS, LookAlikes
from nextbest.yamlfile import near_word


def consent_blank_notes(dataset: Dataset) -> list[str]:
    """One note per hcps consent column with empty cells, how many: each is read as
    no consent."""
    blanks = dataset.hcps.attrs.get("consent_blanks", {})
    return [
        f"{column}: {n:,} empty cells, read as no consent (consent not known is not given)"
        for column, n in blanks.items()
    ]


def data_notes(dataset: Dataset) -> list[str]:
    """What validate notes about the data that train and retrain say too, and keep in
    the run (notes.txt in MLflow)."""
    return [
        *empty_row_notes(dataset),
        *personal_notes(dataset),
        *consent_notes(dataset.hcps, dataset.catalog),
        *territory_notes(dataset.hcps),
        *look_alike_id_notes(dataset),
        *catalog_notes(dataset),
        *text_number_notes(dataset),
    ]


def consent_notes(hcps: pd.DataFrame, catalog: pd.DataFrame) -> list[str]:
    """One note per catalog channel the hcps file has no ``consent_<channel>`` column
    for while it has one for another channel: every HCP then counts as consenting to
    it (the contract's default), which for a channel added to the catalog after the
    consent columns were set up (SMS) means contacting everyone. Nothing when the
    file has no consent column at all: the default is then plainly relied on."""
    given = sorted(
        str(column)[len(CONSENT_PREFIX) :]
        for column in hcps.columns
        if str(column).startswith(CONSENT_PREFIX)
    )
    if not given:
        return []
    notes = []
    for channel, actions in catalog.groupby("channel", sort=True)["action_id"]:
        if channel in given:
            continue
        ids = [str(action) for action in actions]
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5:,} more" if len(ids) > 5 else "")
        column = consent_column(str(channel))
        notes.append(
            f"hcps: no {column} column, so every HCP counts as consenting to {channel} "
            f"(catalog action{'s' if len(ids) > 1 else ''} {shown}), while the file has "
            f"consent columns for {', '.join(given)}: add {column} if {channel} needs consent"
        )
    return notes


def empty_row_notes(dataset: Dataset) -> list[str]:
    """One note per table whose file ended in rows with every cell empty (a
    spreadsheet's blank rows, saved as ',,,,'), which were skipped."""
    notes = []
    for name in TABLES:
        rows = getattr(dataset, name).attrs.get(EMPTY_ROWS)
        if rows is not None:
            first, last = rows
            n = last - first + 1
            notes.append(
                f"{name}: skipped {n:,} empty row{'s' if n > 1 else ''} at the end of the file "
                f"({f'rows {first:,}-{last:,}' if n > 1 else f'row {first:,}'}: every cell "
                "empty, as a spreadsheet saves blank rows)"
            )
    return notes


def territory_notes(hcps: pd.DataFrame) -> list[str]:
    """Notes on ``territory_id`` spellings that look like one territory written two
    ways (``T005`` and ``t005``, ``T 001`` and ``T001``) or like several territories in
    one cell (``T001;T002``). Territories are matched exactly: each such spelling is a
    territory of its own, and its HCPs are in no rep's plan but a key naming it."""
    counts = hcps["territory_id"].astype(str).value_counts()
    alike: dict[str, list[str]] = {}
    for territory in counts.index:
        alike.setdefault(re.sub(r"[\s_.\-]", "", territory).casefold(), []).append(territory)
    groups = [spellings for spellings in alike.values() if len(spellings) > 1]
    notes = []
    if groups:
        shown = "; ".join(
            " and ".join(f"{t!r} ({counts[t]:,} HCP{'s' if counts[t] > 1 else ''})" for t in g)
            for g in groups[:5]
        ) + (f"; and {len(groups) - 5:,} more" if len(groups) > 5 else "")
        notes.append(
            f"hcps: territory_id spellings that differ only in case, spaces or punctuation: "
            f"{shown}. Territories are matched exactly, so each is a territory of its own "
            "and a rep key names only one: write each territory one way"
        )
    listed = [t for t in counts.index if re.search(r"[;,|]", t)]
    if listed:
        shown = ", ".join(map(repr, listed[:5])) + (
            f" and {len(listed) - 5:,} more" if len(listed) > 5 else ""
        )
        notes.append(
            f"hcps: territory_id {shown} hold{'s' if len(listed) == 1 else ''} a ';', ',' or "
            "'|': an HCP is in one territory, and such a value is a territory of its own"
        )
    return notes


def look_alike_id_notes(dataset: Dataset) -> list[str]:
    """Notes on ids of the hcps or catalog file that differ only in case, leading
    zeros or a trailing '.0' (``H1`` and ``h1``, ``007`` and ``7.0``), as two systems
    or a spreadsheet write one id: compared exactly, each is an HCP (an action) of
    its own, its history split between them."""
    notes = []
    for table, frame, column, kind in (
        ("hcps", dataset.hcps, "hcp_id", "an HCP"),
        ("catalog", dataset.catalog, "action_id", "an action"),
    ):
        alike: dict[str, list[str]] = {}
        for value in map(str, frame[column]):
            alike.setdefault(LookAlikes.form(value), []).append(value)
        groups = [ids for ids in alike.values() if len(ids) > 1]
        if not groups:
            continue
        shown = "; ".join(" and ".join(map(quoted, ids)) for ids in groups[:5]) + (
            f"; and {len(groups) - 5:,} more" if len(groups) > 5 else ""
        )
        notes.append(
            f"{table}: {column} values that differ only in case, leading zeros or a "
            f"trailing '.0': {shown}. Ids are compared exactly, so each is {kind} of its "
            "own: if they are one, write its id one way in every file"
        )
    return notes


# At most this many cells that are no number in a column of numbers are taken for
# mistakes (a '-' typed for a missing value) and noted; more are a column of text.
STRAY_CELLS = 3


def text_number_notes(dataset: Dataset) -> list[str]:
    """Extra columns read as text whose values are numbers: written with thousands
    separators ("4,512,345", "1.234,56", "1 234 567"), with a decimal comma ("0,5"), or
    numbers but for cells a database wrote as its missing value ('NULL', '\\N', 'NaN').
    The model then treats each value as a category of its own. Thousands are decided
    by the whole column, as schema decides it is numbers (half its cells shaped as
    one): "1,234" is a thousand if another cell has thousands ("4,512,345"), a decimal
    comma otherwise. And columns read as decimals whose text looks like thousands
    written with '.' ("1.234", "2.500" beside "980": see
    :func:`~nextbest.contract.schema.reads_as_dotted_thousands`), extra or not (an
    ``outcome``, a ``cost``): each such value is read a thousand times too small."""
    contract = {
        "hcps": set(REQUIRED_HCP_COLUMNS),
        "catalog": {*REQUIRED_CATALOG_COLUMNS, *OPTIONAL_CATALOG_COLUMNS},
        "interactions": {*REQUIRED_INTERACTION_COLUMNS, *OPTIONAL_INTERACTION_COLUMNS},
    }
    notes = []
    for table, known in contract.items():
        frame = getattr(dataset, table)
        for column, cells in frame.attrs.get(DOTTED_THOUSANDS, {}).items():
            *dotted, plain = cells
            read = ", ".join(f"{quoted(c, at_most=20)} as {number(float(c))}" for c in dotted)
            whole = dotted[0].replace(".", "")
            notes.append(
                f"{table} column '{column}' is read as decimals ({read}), but looks like "
                f"whole numbers written with '.' between thousands (3 digits after every "
                f"'.', and {quoted(plain, at_most=20)} without one): if so, export them "
                f"without thousands separators ('{whole}'), for {whole} to be read; if they "
                "are decimals, nothing to do"
            )
        for column in frame.columns:
            if column in known or frame[column].dtype != object:
                continue
            # Each distinct cell once, in the file's order, with how many cells hold it
            # (millions of rows in interactions, a few distinct values in most columns).
            codes, uniques = pd.factorize(frame[column])
            counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
            values = pd.Series(uniques, dtype=object).astype(str).str.strip()
            written = (values != "").to_numpy()
            values, counts = values[written], counts[written]
            total = int(counts.sum())
            if not total:
                continue
            share = counts / total  # of the column's cells, per distinct cell
            # "1.234" alone is a decimal or a thousand: another cell has to say which.
            grouped = values.str.fullmatch(GROUPED_NUMBER) & ~values.str.fullmatch(
                r"-?\d{1,3}[.,]\d{3}"
            )
            if grouped.any() and share[values.str.fullmatch(NUMBER_SHAPED).to_numpy()].sum() >= 0.5:
                example = values[grouped].iloc[0]
                plain = ungrouped(example)
                notes.append(
                    f"{table} column '{column}' is read as text: its values are numbers "
                    f"written with thousands separators (e.g. '{example}'); write them "
                    f"without, and decimals with '.' ('{plain}'), for it to be a number"
                )
                continue
            if share[values.str.fullmatch(DECIMAL_COMMA).to_numpy()].sum() >= 0.5:
                notes.append(
                    f"{table} column '{column}' is read as text: its values are numbers "
                    f"written with a decimal comma (e.g. '{values.iloc[0]}'); write decimals "
                    "with '.' for it to be a number"
                )
                continue
            # Numbers but for a few cells: a database's missing value ('NULL'), or a
            # spreadsheet's ('-', 'n.a.'), or one number written otherwise ('12,5').
            stray = pd.to_numeric(values, errors="coerce").isna()
            n = int(counts[stray.to_numpy()].sum())
            if (
                not n
                or n == total
                or is_identifier_column(str(column))
                or not (values[stray].str.lower().isin(NULL_WORDS).all() or n <= STRAY_CELLS)
            ):
                continue
            words = ", ".join(f"'{word}'" for word in values[stray].tolist()[:3])
            notes.append(
                f"{table} column '{column}' is read as text: its values are numbers but for "
                f"{n:,} cell{'s' if n > 1 else ''} written {words}, which make every value "
                "a category of its own; write a missing value as an empty cell (and decimals "
                "with '.') for it to be a number"
            )
    return notes


def personal_notes(dataset: Dataset) -> list[str]:
    """The hcps columns left unread as personal data (a name, e-mail, phone, address)."""
    personal = dataset.hcps.attrs.get("personal_columns", [])
    identifiers = dataset.hcps.attrs.get("identifier_columns", [])
    notes = []
    if personal:
        notes.append(
            f"hcps columns {', '.join(personal)} look like personal data (a name, e-mail, "
            "phone or address): not read, neither features nor stored in models"
        )
    if identifiers:
        notes.append(
            f"hcps columns {', '.join(identifiers)} identify an HCP (a code of a person or "
            "licence such as an NPI by its header, or text different for nearly every HCP: "
            "a name, a date, an address or a code, not a trait HCPs share): not read, "
            "neither features (nothing to learn that carries to another HCP) nor stored "
            "in models"
        )
    return notes


def catalog_notes(dataset: Dataset) -> list[str]:
    """Catalog values that are valid but can never match: a specialty no HCP has (a
    typo such as 'cardiolgy' leaves its action ineligible for everyone, silently)."""
    have = {specialty_spelling(str(s)) for s in dataset.hcps["specialty"]}
    notes = []
    for action_id, cell in zip(
        dataset.catalog["action_id"], dataset.catalog["specialties"], strict=True
    ):
        wanted = allowed_specialties("" if cell is None else str(cell))
        unknown = sorted(wanted - have)
        if not unknown:
            continue
        if len(unknown) == len(wanted):
            what = "no HCP has any of them: the action is never eligible"
        else:
            what = "no HCP has them"
        notes.append(f"catalog action '{action_id}': specialties {', '.join(unknown)}: {what}")
    notes += unread_column_notes(dataset)
    for channel in sorted(set(dataset.catalog["channel"])):
        words = set(re.split(r"[^a-z0-9]+", str(channel).lower()))
        if not is_rep_channel(str(channel)) and words & _FIELD_FORCE_WORDS:
            notes.append(
                f"catalog channel '{channel}' reads like one reps deliver, but only channels "
                f"named {REP_CHANNEL_PREFIX}... are rep channels (rep call plans, rep keys): "
                f"name it {REP_CHANNEL_PREFIX}{channel} if reps deliver it"
            )
    return notes


def unread_column_notes(dataset: Dataset) -> list[str]:
    """Columns of the catalog and the interactions beyond the contract's: kept, but no
    feature is made of them (unlike the hcps file's), so a field renamed in an export
    (``unit_cost`` for ``cost``) leaves its default in force, unsaid."""
    notes = []
    for table, contract in (
        ("catalog", (*REQUIRED_CATALOG_COLUMNS, *OPTIONAL_CATALOG_COLUMNS)),
        ("interactions", (*REQUIRED_INTERACTION_COLUMNS, *OPTIONAL_INTERACTION_COLUMNS)),
    ):
        unread = [str(c) for c in getattr(dataset, table).columns if c not in contract]
        if not unread:
            continue
        named = []
        for column in unread:
            # Among all of them: a missing optional column is there, at its default.
            near = near_word(column.lower(), contract, words=True)
            named.append(column if near is None else f"{column} (did you mean {near}?)")
        notes.append(
            f"{table} column{'s' if len(unread) > 1 else ''} not read: {', '.join(named)}; "
            f"only the data contract's columns of {table} are used (docs/data.md)"
        )
    return notes


# Words of a channel's name that say a sales force delivers it ('f2f', 'field_visit').
_FIELD_FORCE_WORDS = frozenset({"f2f", "visit", "visits", "detail", "detailing", "rep", "reps"})
