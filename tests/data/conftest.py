"""A small valid data set, as raw string tables, that tests mutate one cell at a time."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

Tables = dict[str, pd.DataFrame]
WriteTables = Callable[..., Path]


def _frame(text: str) -> pd.DataFrame:
    """A string table from CSV text, read the way the contract reads CSV."""
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


@pytest.fixture
def tables() -> Tables:
    """Valid raw tables exactly as a CSV would give them (every cell a str).

    Interactions rows 2 and 5 share (H1, 2024-03-01) to exercise the stable sort;
    row 3 is a holdout no-touch row with a +02:00 offset.
    """
    hcps = _frame(
        "hcp_id,specialty,territory_id,region,decile,consent_email,consent_rep_visit\n"
        "H1,Oncology,T1,north,3,true,yes\n"
        "H2,cardiology,T1,south,7,,no\n"
        "H3,oncology,T2,north,10,0,Y\n"
    )
    catalog = _frame(
        "action_id,channel,content_id,topic,content_type,approved_from,approved_until,"
        "specialties,cost\n"
        "A1,email,C1,efficacy,promotional,2024-01-01,,Oncology; cardiology,0\n"
        "A2,rep_visit,C2,safety,medical,2024-01-01,2025-12-31,,150.5\n"
        "A3, Email ,C3,dosing,Medical,2024-02-01T00:00:00Z,,oncology;;,\n"
    )
    interactions = _frame(
        "hcp_id,timestamp,action_id,channel,content_id,engaged,outcome,propensity,holdout\n"
        "H2,2024-03-02T09:00:00,A1,email,C1,1,2.5,0.5,false\n"
        "H1,2024-03-01,A2,,,0,0,0.25,\n"
        "H1,2024-03-01T12:00:00+02:00,,,,,1.0,0.25,true\n"
        "H3,2024-03-05,A3,EMAIL,C3,0,,0.5,false\n"
        "H1,2024-03-01,A1,,,1,3,0.25,false\n"
    )
    return {"hcps": hcps, "catalog": catalog, "interactions": interactions}


@pytest.fixture
def write_tables(tmp_path: Path) -> WriteTables:
    """Write raw tables to a fresh directory as CSV (or Parquet) and return it."""

    def write(tables: Tables, fmt: str = "csv", name: str = "data") -> Path:
        out = tmp_path / name
        out.mkdir()
        for table, frame in tables.items():
            path = out / f"{table}.{fmt}"
            if fmt == "csv":
                frame.to_csv(path, index=False)
            else:
                frame.to_parquet(path, index=False)
        return out

    return write
