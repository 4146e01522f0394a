"""What every adapter does first and last: read the file's columns, and validate."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from nextbest.contract import parse
from nextbest.contract.dataset import Dataset
from nextbest.contract.errors import ProblemLog
from nextbest.contract.files import (
    ROW_NUMBERS,
    index_as_columns,
    read_table,
    row_numbers,
    saved_index_names,
)
from nextbest.contract.validate import validate_catalog, validate_hcps, validate_interactions


def read_columns(
    path: Path, columns: Iterable[str], data_set: str
) -> tuple[pd.DataFrame, ProblemLog]:
    """The file's table (headers stripped of spaces) and a problem log for its cells;
    refused, naming each, when it lacks any of ``columns`` (of the ``data_set``).
    Columns saved as a Parquet index (``df.set_index("segment").to_parquet(...)``)
    are read as columns, as the contract's own files read theirs."""
    raw = read_table(path)
    raw = index_as_columns(raw, saved_index_names(raw))
    raw.columns = [str(name).strip() for name in raw.columns]
    log = ProblemLog(path.name, rows=row_numbers(raw))
    for column in columns:
        if column not in raw.columns:
            log.add(f"missing column of the {data_set} data set", column=column)
    log.raise_if_any()
    return raw, log


def zero_or_one(raw: pd.DataFrame, column: str, log: ProblemLog) -> np.ndarray:
    """``column`` as floats, each cell that is not 0 or 1 a problem in ``log`` (named by
    row, as written)."""
    values = parse.floats(raw[column]).values.to_numpy()
    log.add_rows(
        ~np.isin(values, (0.0, 1.0)),
        column,
        lambda i: f"{parse.shown(raw[column], i)} is not 0 or 1",
    )
    return values


def numbered_as(table: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
    """``table``, mapped one row per row of ``raw`` (from :func:`read_columns`) in the
    same order, with its rows numbered as the file numbers ``raw``'s: a problem the
    validators find in it names the file's row, blank lines and the further lines of
    a value written over several counted (see :func:`~nextbest.contract.files.row_numbers`),
    as the adapter's own checks do."""
    if ROW_NUMBERS in raw.attrs:
        table.attrs[ROW_NUMBERS] = raw.attrs[ROW_NUMBERS]
    return table


def validated(
    path: Path, hcps: pd.DataFrame, catalog: pd.DataFrame, interactions: pd.DataFrame
) -> Dataset:
    """The mapped tables through the same validators as files, so that an adapter
    cannot produce what a file could not; problems name the file and the table."""
    hcps = validate_hcps(hcps, file=f"{path.name} (as hcps)")
    catalog = validate_catalog(catalog, file=f"{path.name} (as catalog)")
    interactions = validate_interactions(
        interactions, file=f"{path.name} (as interactions)", hcps=hcps, catalog=catalog
    )
    return Dataset(hcps, catalog, interactions, source=path)
